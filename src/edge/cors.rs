//! Cross-origin requests from web widgets: which page origins may call the gateway.
//!
//! Owns the origin patterns (`https://shop.example.com`, `https://*.example.com`, `*`) and
//! the two layers that apply them: a refusal of requests from other origins (403, the JSON
//! error shape) and tower-http's CORS layer, which answers allowed preflights itself, so a
//! preflight never reaches a handler or a backend. A preflight names no tenant, so the
//! allow-list is the union of every tenant's `cors_origins`. It must not look at bodies.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::{HeaderName, ORIGIN};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::Failure;
use crate::config::Config;
use crate::error::Error;

/// The headers widgets send.
const ALLOWED_HEADERS: [&str; 5] = [
    "content-type",
    "apikey",
    "x-api-key",
    "gms_user",
    "x-request-id",
];

/// Checks one configured origin pattern; the error says what is wrong with it.
pub fn check_origin_pattern(pattern: &str) -> Result<(), String> {
    if pattern == "*" {
        return Ok(());
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
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !host_ok || host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "`{pattern}`: the host must be lowercase DNS labels, optionally after `*.` (no path)"
        ));
    }
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err(format!("`{pattern}`: the port must be a number"));
    }
    Ok(())
}

/// The allowed origins.
#[derive(Debug, Default)]
pub struct Origins {
    any: bool,
    exact: HashSet<String>,
    /// `(scheme://, .suffix[:port])` of each `scheme://*.suffix` pattern.
    wildcard: Vec<(String, String)>,
}

impl Origins {
    /// The union of every tenant's `cors_origins` (validated at load).
    pub fn from_config(config: &Config) -> Origins {
        let mut origins = Origins::default();
        for pattern in config.tenants.iter().flat_map(|t| &t.cors_origins) {
            if pattern == "*" {
                origins.any = true;
            } else if let Some((scheme, rest)) = pattern.split_once("://*") {
                origins
                    .wildcard
                    .push((format!("{scheme}://"), rest.to_owned()));
            } else {
                origins.exact.insert(pattern.clone());
            }
        }
        origins
    }

    pub fn is_empty(&self) -> bool {
        !self.any && self.exact.is_empty() && self.wildcard.is_empty()
    }

    pub fn allows(&self, origin: &str) -> bool {
        if self.any || self.exact.contains(origin) {
            return true;
        }
        self.wildcard.iter().any(|(scheme, suffix)| {
            origin
                .strip_prefix(scheme.as_str())
                .and_then(|rest| rest.strip_suffix(suffix.as_str()))
                .is_some_and(|sub| {
                    !sub.is_empty()
                        && sub.split('.').all(|l| {
                            !l.is_empty()
                                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        })
                })
        })
    }
}

/// The CORS layers, or `None` when no tenant lists an origin (then no CORS headers are sent
/// and browsers keep their same-origin rule).
pub fn layers(config: &Config) -> Option<(Arc<Origins>, CorsLayer)> {
    let origins = Arc::new(Origins::from_config(config));
    if origins.is_empty() {
        return None;
    }
    let allowed = Arc::clone(&origins);
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin.to_str().is_ok_and(|o| allowed.allows(o))
        }))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
        .expose_headers([HeaderName::from_static("x-request-id")])
        .max_age(Duration::from_secs(config.cors.max_age_secs));
    Some((origins, cors))
}

/// Refuses a request (preflight or not) whose `Origin` is not allowed. Requests without an
/// `Origin` (servers, curl) are not cross-origin and pass.
pub async fn refuse_other_origins(
    State(origins): State<Arc<Origins>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(origin) = req.headers().get(ORIGIN) {
        let text = origin.to_str().unwrap_or("");
        if !origins.allows(text) {
            metrics::counter!(crate::telemetry::REFUSALS, "reason" => "origin").increment(1);
            let shown: String = text.chars().take(100).collect();
            return Failure::from(Error::OriginNotAllowed(shown)).into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(patterns: &[&str]) -> Origins {
        let mut o = Origins::default();
        for p in patterns {
            check_origin_pattern(p).unwrap();
            if *p == "*" {
                o.any = true;
            } else if let Some((s, r)) = p.split_once("://*") {
                o.wildcard.push((format!("{s}://"), r.to_owned()));
            } else {
                o.exact.insert(p.to_string());
            }
        }
        o
    }

    #[test]
    fn patterns() {
        for bad in [
            "example.com",
            "ftp://example.com",
            "https://example.com/",
            "https://Example.com",
            "https://*.",
            "https://a.*.com",
            "https://example.com:port",
        ] {
            assert!(check_origin_pattern(bad).is_err(), "{bad}");
        }
        let o = origins(&["https://shop.example.com", "https://*.widgets.net:8443"]);
        assert!(o.allows("https://shop.example.com"));
        assert!(!o.allows("http://shop.example.com"));
        assert!(!o.allows("https://shop.example.com.evil.net"));
        assert!(o.allows("https://a.widgets.net:8443"));
        assert!(o.allows("https://a.b.widgets.net:8443"));
        assert!(!o.allows("https://widgets.net:8443"));
        assert!(!o.allows("https://a.widgets.net"));
        assert!(!o.allows("https://evil.com/.widgets.net:8443"));
        assert!(!o.allows("null"));
        assert!(origins(&["*"]).allows("null"));
    }
}
