//! The `[admin]` section: whether the admin listener runs, where, and its bearer token.
//!
//! Owns these keys, their defaults and their local validation; that the admin listener
//! must not share `server.listen` is the config module's (it involves two sections).

use std::net::SocketAddr;

use config_types::{Invalid, Secret};
use serde::Deserialize;

/// The admin listener: `/metrics`, `/healthz`, `/readyz`, and the instance endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Whether the admin listener runs. Without it, `/metrics` is served on the public
    /// listener when `token` is set (behind it), and not at all otherwise.
    pub enabled: bool,
    /// Address and port of the admin listener; keep it off the internet. Anything but a
    /// loopback address needs `token`.
    pub listen: SocketAddr,
    /// When set, admin requests other than `/healthz` and `/readyz` must carry
    /// `Authorization: Bearer <token>` (at least 16 characters). The instance endpoints
    /// (which change routing) refuse every request while it is unset. Never logged.
    pub token: Option<Secret>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            token: None,
        }
    }
}

impl AdminConfig {
    /// Checks what types alone cannot; the key is relative to `[admin]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(Invalid::new("token", "must be at least 16 characters"));
        }
        // Without a token /metrics is open to whoever reaches the listener: only loopback
        // may be that trusting.
        if self.enabled && self.token.is_none() && !self.listen.ip().is_loopback() {
            return Err(Invalid::new(
                "token",
                "must be set when admin.listen is not a loopback address (/metrics and the instance endpoints would be open to the network)",
            ));
        }
        Ok(())
    }
}
