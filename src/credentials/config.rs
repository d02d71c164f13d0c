//! The `[credentials]` section: the MAC secret that seals chat credentials.
//!
//! Owns the key and its local validation; it must not make the random fallback (that is
//! `Credentials::random`, at start-up).

use config_types::{Invalid, Secret};
use serde::Deserialize;

/// How chat credentials handed to clients are protected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialsConfig {
    /// The MAC secret shared by every gateway replica (at least 32 characters). When absent a
    /// random one is made at start-up, and chats survive neither a restart nor a second
    /// replica. Never logged.
    pub secret: Option<Secret>,
}

impl CredentialsConfig {
    /// Checks what types alone cannot; the key is relative to `[credentials]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err(Invalid::new(
                "secret",
                "must be at least 32 characters (use e.g. `openssl rand -hex 32`)",
            ));
        }
        Ok(())
    }
}
