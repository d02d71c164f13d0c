//! The `[cors]` section, and the origin patterns tenants list in `cors_origins`, parsed
//! once when the configuration is read.
//!
//! Owns the pattern syntax (`https://shop.example.com`, `https://*.example.com`, `*`) and
//! the preflight cache age; it must not know tenants or the rest of the configuration.

use std::str::FromStr;
use std::time::Duration;

use config_types::secs;
use serde::Deserialize;

/// Cross-origin requests. The allowed origins are the tenants' `cors_origins`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// How long a browser may cache a preflight answer.
    #[serde(rename = "max_age_secs", deserialize_with = "secs")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            max_age: Duration::from_secs(600),
        }
    }
}

/// One allowed page origin, as a tenant lists it in `cors_origins`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Origin {
    /// `*`: any origin (only when listed).
    Any,
    /// `scheme://host[:port]`, matched exactly.
    Exact(String),
    /// `scheme://*.suffix[:port]`: any sub-domain of `suffix`. Held as `scheme://` and
    /// `.suffix[:port]`, the parts an origin must start and end with.
    Wildcard { scheme: String, suffix: String },
}

impl FromStr for Origin {
    type Err = String;

    /// Checks one pattern; the error says what is wrong with it.
    fn from_str(pattern: &str) -> Result<Origin, String> {
        if pattern == "*" {
            return Ok(Origin::Any);
        }
        let Some((scheme, rest)) = pattern.split_once("://") else {
            return Err(format!(
                "`{pattern}`: an origin is scheme://host[:port], or *"
            ));
        };
        if scheme != "http" && scheme != "https" {
            return Err(format!("`{pattern}`: the scheme must be http or https"));
        }
        let host = rest.strip_prefix("*.").unwrap_or(rest);
        let (host, port) = match host.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        };
        let host_ok = !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !host_ok || host.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "`{pattern}`: the host must be lowercase DNS labels, optionally after `*.` (no path)"
            ));
        }
        if port.is_some_and(|p| p.parse::<u16>().is_err()) {
            return Err(format!("`{pattern}`: the port must be a number"));
        }
        Ok(match rest.strip_prefix('*') {
            Some(suffix) => Origin::Wildcard {
                scheme: format!("{scheme}://"),
                suffix: suffix.to_owned(),
            },
            None => Origin::Exact(pattern.to_owned()),
        })
    }
}

impl TryFrom<String> for Origin {
    type Error = String;

    fn try_from(pattern: String) -> Result<Origin, String> {
        pattern.parse()
    }
}
