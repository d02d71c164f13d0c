//! Cross-origin requests from web widgets: which page origins may call the gateway.
//!
//! Owns the origin patterns (`https://shop.example.com`, `https://*.example.com`, `*`) and
//! the two layers that apply them: a refusal of requests from other origins (403, the JSON
//! error shape) and tower-http's CORS layer, which answers allowed preflights itself, so a
//! preflight never reaches a handler or a backend. A preflight names no tenant, so the
//! allow-list is the union of every tenant's `cors_origins`. It must not look at bodies.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{HeaderName, ORIGIN};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::Failure;
use crate::error::Error;

mod config;
pub use config::{CorsConfig, Origin};

/// The headers widgets send.
const ALLOWED_HEADERS: [&str; 5] = [
    "content-type",
    "apikey",
    "x-api-key",
    "gms_user",
    "x-request-id",
];

/// The allowed origins.
#[derive(Debug, Default)]
pub struct Origins {
    any: bool,
    exact: HashSet<String>,
    /// `(scheme://, .suffix[:port])` of each `scheme://*.suffix` pattern.
    wildcard: Vec<(String, String)>,
}

impl Origins {
    /// The union of the given patterns (every tenant's `cors_origins`).
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a Origin>) -> Origins {
        let mut origins = Origins::default();
        for pattern in patterns {
            match pattern {
                Origin::Any => origins.any = true,
                Origin::Exact(origin) => {
                    origins.exact.insert(origin.clone());
                }
                Origin::Wildcard { scheme, suffix } => {
                    origins.wildcard.push((scheme.clone(), suffix.clone()))
                }
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
pub fn layers<'a>(
    patterns: impl IntoIterator<Item = &'a Origin>,
    config: &CorsConfig,
) -> Option<(Arc<Origins>, CorsLayer)> {
    let origins = Arc::new(Origins::new(patterns));
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
        .max_age(config.max_age);
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
        let parsed: Vec<Origin> = patterns.iter().map(|p| p.parse().unwrap()).collect();
        Origins::new(&parsed)
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
            assert!(bad.parse::<Origin>().is_err(), "{bad}");
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
