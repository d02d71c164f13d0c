//! Cross-origin requests from web widgets: which page origins may call the gateway.
//!
//! Owns the origin patterns (`https://shop.example.com`, `https://*.example.com`, `*`) and
//! the two layers that apply them: a refusal of requests from other origins (403, the JSON
//! error shape) and tower-http's CORS layer, which answers allowed preflights itself, so a
//! preflight never reaches a handler or a backend. A preflight names no tenant, so the
//! allow-list is the union of every tenant's `cors_origins`; the request headers a
//! preflight allows are those of the tenants whose `cors_origins` take its origin (their
//! `cors_allowed_headers`). It must not look at bodies.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{
    HeaderName, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::Failure;
use crate::error::Error;

mod config;
pub use config::{
    default_allowed_headers, AllowedHeader, CorsConfig, Origin, DEFAULT_ALLOWED_HEADERS,
};

/// The allowed origins.
#[derive(Debug, Default)]
pub struct Origins {
    any: bool,
    exact: HashSet<String>,
    /// `(scheme://, .suffix[:port])` of each `scheme://*.suffix` pattern.
    wildcard: Vec<(String, String)>,
    /// Each pattern with the request headers its tenant's pages may send.
    headers: Vec<(Origin, Vec<HeaderName>)>,
}

impl Origins {
    /// The union of the given patterns, each allowing [`DEFAULT_ALLOWED_HEADERS`].
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a Origin>) -> Origins {
        let defaults = default_allowed_headers();
        Origins::with_headers(patterns.into_iter().map(|p| (p, &defaults[..])))
    }

    /// The union of the given patterns (every tenant's `cors_origins`), each with the request
    /// headers its tenant allows (`cors_allowed_headers`).
    pub fn with_headers<'a>(
        patterns: impl IntoIterator<Item = (&'a Origin, &'a [AllowedHeader])>,
    ) -> Origins {
        let mut origins = Origins::default();
        for (pattern, headers) in patterns {
            origins.headers.push((
                pattern.clone(),
                headers.iter().map(|h| h.0.clone()).collect(),
            ));
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
        self.wildcard
            .iter()
            .any(|(scheme, suffix)| sub_domain_of(origin, scheme, suffix))
    }

    /// The request headers a page of `origin` may send: those of every tenant whose
    /// `cors_origins` take it, in the order listed, each once.
    pub fn allowed_headers(&self, origin: &str) -> Vec<&HeaderName> {
        let mut names: Vec<&HeaderName> = Vec::new();
        for (pattern, headers) in &self.headers {
            let matches = match pattern {
                Origin::Any => true,
                Origin::Exact(exact) => exact == origin,
                Origin::Wildcard { scheme, suffix } => sub_domain_of(origin, scheme, suffix),
            };
            if matches {
                for h in headers {
                    if !names.contains(&h) {
                        names.push(h);
                    }
                }
            }
        }
        names
    }

    /// Every header any tenant allows.
    fn all_headers(&self) -> Vec<HeaderName> {
        let mut names: Vec<HeaderName> = Vec::new();
        for h in self.headers.iter().flat_map(|(_, h)| h) {
            if !names.contains(h) {
                names.push(h.clone());
            }
        }
        names
    }
}

/// `origin` is `scheme` + one or more DNS labels + `suffix` (`.example.com[:port]`).
fn sub_domain_of(origin: &str, scheme: &str, suffix: &str) -> bool {
    origin
        .strip_prefix(scheme)
        .and_then(|rest| rest.strip_suffix(suffix))
        .is_some_and(|sub| {
            !sub.is_empty()
                && sub.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        })
}

/// The CORS layers, or `None` when no tenant lists an origin (then no CORS headers are sent
/// and browsers keep their same-origin rule). `patterns`: every tenant's `cors_origins`,
/// each with that tenant's `cors_allowed_headers`.
pub fn layers<'a>(
    patterns: impl IntoIterator<Item = (&'a Origin, &'a [AllowedHeader])>,
    config: &CorsConfig,
) -> Option<(Arc<Origins>, CorsLayer)> {
    let origins = Arc::new(Origins::with_headers(patterns));
    if origins.is_empty() {
        return None;
    }
    let allowed = Arc::clone(&origins);
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin.to_str().is_ok_and(|o| allowed.allows(o))
        }))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        // Narrowed to the origin's own tenants' headers by `refuse_other_origins`.
        .allow_headers(origins.all_headers())
        .expose_headers([HeaderName::from_static("x-request-id")])
        .max_age(config.max_age);
    Some((origins, cors))
}

/// The routes whose cross-origin requests carry credentials (cookies): the CometD
/// dialect's, whose client sends every XHR with `withCredentials`.
pub const CREDENTIALED_PREFIX: &str = "/genesys/cometd";

/// Refuses a request (preflight or not) whose `Origin` is not allowed. Requests without an
/// `Origin` (servers, curl) are not cross-origin and pass. An allowed preflight's
/// `Access-Control-Allow-Headers` lists the headers of the tenants that take its origin.
pub async fn refuse_other_origins(
    State(origins): State<Arc<Origins>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(origin) = req.headers().get(ORIGIN) else {
        return next.run(req).await;
    };
    let text = origin.to_str().unwrap_or("").to_owned();
    if !origins.allows(&text) {
        metrics::counter!(crate::telemetry::REFUSALS, "reason" => "origin").increment(1);
        let shown: String = text.chars().take(100).collect();
        return Failure::from(Error::OriginNotAllowed(shown)).into_response();
    }
    let preflight = req.method() == Method::OPTIONS
        && req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD);
    let credentialed = req.uri().path().starts_with(CREDENTIALED_PREFIX);
    let mut response = next.run(req).await;
    // The CometD client sends its XHRs with credentials (its cookies): the allowed origin
    // (always the page's own, never `*`: the layer mirrors it) may read the reply.
    if credentialed
        && response
            .headers()
            .get(ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_some_and(|o| o.as_bytes() != b"*")
    {
        response.headers_mut().insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if preflight
        && response
            .headers()
            .contains_key(ACCESS_CONTROL_ALLOW_HEADERS)
    {
        let names: Vec<&str> = origins
            .allowed_headers(&text)
            .into_iter()
            .map(HeaderName::as_str)
            .collect();
        match HeaderValue::from_str(&names.join(",")) {
            Ok(v) if !names.is_empty() => {
                response
                    .headers_mut()
                    .insert(ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
            _ => {
                response.headers_mut().remove(ACCESS_CONTROL_ALLOW_HEADERS);
            }
        }
    }
    response
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

    #[test]
    fn each_origin_gets_the_headers_of_the_tenants_that_take_it() {
        let shop: Origin = "https://shop.example.com".parse().unwrap();
        let any_widget: Origin = "https://*.widgets.net".parse().unwrap();
        let custom: Vec<AllowedHeader> = ["X-Custom", "Authorization"]
            .iter()
            .map(|h| h.parse().unwrap())
            .collect();
        let defaults = default_allowed_headers();
        let o = Origins::with_headers([(&shop, &defaults[..]), (&any_widget, &custom[..])]);
        let names = |origin: &str| -> Vec<String> {
            o.allowed_headers(origin)
                .into_iter()
                .map(|h| h.as_str().to_owned())
                .collect()
        };
        assert_eq!(names("https://shop.example.com"), DEFAULT_ALLOWED_HEADERS);
        assert_eq!(
            names("https://a.widgets.net"),
            ["x-custom", "authorization"]
        );
        assert!(names("https://evil.example").is_empty());
        assert_eq!(o.all_headers().len(), DEFAULT_ALLOWED_HEADERS.len() + 1);
        for bad in ["*", "", "bad header", "x:y"] {
            assert!(bad.parse::<AllowedHeader>().is_err(), "{bad}");
        }
    }
}
