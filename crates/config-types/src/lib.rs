//! Value types shared by every crate that owns a section of the gateway's configuration.
//!
//! Each section (`[tcp]` in `backend-tcp`, `[mock]` in `chat-engine`, `[email]` in `email`,
//! the gateway's own) is a plain `Deserialize` struct in the crate that uses it; this crate
//! holds only what they all need to read one: durations written as `_ms` / `_secs`
//! integers, secrets that cannot be printed, and [`Invalid`], the refusal that names the
//! key. It must not know any section, and must not read files or the environment.

use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use subtle::ConstantTimeEq;

/// Reads a `…_ms` key: a whole number of milliseconds.
pub fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

/// Reads a `…_secs` key: a whole number of seconds.
pub fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

/// A configured secret (a MAC key, a token, an API key, a password). Its `Debug` prints
/// `[REDACTED]`, so a derived `Debug` of a config never shows it; the value is reached only
/// through [`Secret::expose`] where it is used. Equality (a reload comparing sections) runs
/// in constant time.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Its length in bytes (validation: a secret shorter than a bound is refused).
    pub fn len(&self) -> usize {
        self.expose().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(SecretString::from(value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        bool::from(self.expose().as_bytes().ct_eq(other.expose().as_bytes()))
    }
}

impl Eq for Secret {}

/// A configuration value refused by a section's validation: the key (as the operator writes
/// it, relative to the section until [`Invalid::within`] places it) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub key: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Invalid {
        Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The same refusal with its key inside `section` (`connections` → `tcp.connections`).
    pub fn within(self, section: &str) -> Invalid {
        Invalid {
            key: format!("{section}.{}", self.key),
            ..self
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for Invalid {}

/// Refuses a zero duration under `key`.
pub fn nonzero(key: &str, value: Duration) -> Result<(), Invalid> {
    if value.is_zero() {
        return Err(Invalid::new(key, "must be greater than 0"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_never_printed() {
        let s = Secret::from("hunter2-hunter2-hunter2");
        assert_eq!(format!("{s:?}"), "[REDACTED]");
        assert_eq!(s.expose(), "hunter2-hunter2-hunter2");
        assert_eq!(s, Secret::from("hunter2-hunter2-hunter2"));
        assert_ne!(s, Secret::from("hunter2"));
    }
}
