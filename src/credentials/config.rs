//! The `[credentials]` section: the MAC secret that seals chat credentials.
//!
//! Owns the keys (the current secret, and the previous ones a rotation still accepts) and
//! their local validation; it must not make the random fallback (that is
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
    /// Secrets of a rotation in progress: keys and tokens sealed under any of them still
    /// open, while everything new is sealed under `secret`. Put the old secret here when
    /// `secret` changes, and remove it once the longest-lived chat and token sealed under it
    /// are over (docs/credentials.md, "Rotating the secret"). Each at least 32 characters;
    /// needs `secret`. Never logged.
    pub previous_secrets: Vec<Secret>,
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
        if !self.previous_secrets.is_empty() && self.secret.is_none() {
            return Err(Invalid::new(
                "previous_secrets",
                "needs `secret` (the one new keys are sealed under)",
            ));
        }
        if let Some(i) = self.previous_secrets.iter().position(|s| s.len() < 32) {
            return Err(Invalid::new(
                format!("previous_secrets[{i}]"),
                "must be at least 32 characters",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_secrets_are_checked_and_named() {
        let long = "0123456789abcdef0123456789abcdef";
        let ok = CredentialsConfig {
            secret: Some(long.into()),
            previous_secrets: vec![long.into()],
        };
        assert_eq!(ok.validate(), Ok(()));
        let short = CredentialsConfig {
            previous_secrets: vec![long.into(), "short".into()],
            ..ok.clone()
        };
        assert_eq!(short.validate().unwrap_err().key, "previous_secrets[1]");
        let alone = CredentialsConfig { secret: None, ..ok };
        assert_eq!(alone.validate().unwrap_err().key, "previous_secrets");
        assert!(!format!("{short:?}").contains(long), "never printed");
    }
}
