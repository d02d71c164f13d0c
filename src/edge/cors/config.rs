//! The `[cors]` section, and the origin patterns tenants list in `cors_origins`, parsed
//! once when the configuration is read.
//!
//! Owns the pattern syntax (`https://shop.example.com`, `https://*.example.com`, `*`), the
//! request header names a tenant's pages may send (`cors_allowed_headers`, and its default)
//! and the preflight cache age; it must not know tenants or the rest of the configuration.

use std::str::FromStr;
use std::time::Duration;

use axum::http::HeaderName;
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

/// The request headers GMS and Web API clients send from a page, allowed by default to every
/// tenant's origins: `authorization` and `contactcenterid` (GMS client libraries), the API
/// key headers `apikey` / `x-api-key`, `x-requested-with` (jQuery), `content-type` for JSON
/// and form bodies, `gms_user`, and `x-request-id`.
pub const DEFAULT_ALLOWED_HEADERS: [&str; 8] = [
    "authorization",
    "contactcenterid",
    "apikey",
    "x-api-key",
    "x-requested-with",
    "content-type",
    "gms_user",
    "x-request-id",
];

/// [`DEFAULT_ALLOWED_HEADERS`], as a tenant's `cors_allowed_headers` default.
pub fn default_allowed_headers() -> Vec<AllowedHeader> {
    DEFAULT_ALLOWED_HEADERS
        .iter()
        .map(|h| AllowedHeader(HeaderName::from_static(h)))
        .collect()
}

/// A request header name a tenant's pages may send cross-origin (one entry of
/// `cors_allowed_headers`): an HTTP header name, in any case (held lower-cased); not `*`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AllowedHeader(pub HeaderName);

impl FromStr for AllowedHeader {
    type Err = String;

    fn from_str(name: &str) -> Result<AllowedHeader, String> {
        if name == "*" {
            return Err("`*`: list the header names (a wildcard is not allowed)".into());
        }
        HeaderName::from_bytes(name.as_bytes())
            .map(AllowedHeader)
            .map_err(|_| format!("`{name}` is not an HTTP header name"))
    }
}

impl TryFrom<String> for AllowedHeader {
    type Error = String;

    fn try_from(name: String) -> Result<AllowedHeader, String> {
        name.parse()
    }
}
