//! The admin listener's application: `/metrics` (Prometheus text), `/healthz`, `/readyz`.
//!
//! Operator endpoints join as self-contained fragments (`instances`: the instance list and
//! admin states, which always need the token). Every route but the health probes is behind
//! `admin.token` when one is set. It must stay off
//! the public listener (unless the admin listener is disabled, when `/metrics` moves there)
//! and must not reach into request handling.

mod config;
pub mod emails;
pub mod instances;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use subtle::ConstantTimeEq;

use crate::edge::{health, Failure};
use crate::error::Error;
use crate::Gateway;

pub use config::AdminConfig;

/// The whole admin application.
pub fn app(gw: Arc<Gateway>) -> Router {
    protected(Arc::clone(&gw))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(|| async { Failure::from(Error::NotFound) })
        .with_state(Arc::clone(&gw))
        .merge(instances::routes(Arc::clone(&gw)))
        .merge(emails::routes(gw))
        .layer(axum::middleware::from_fn(crate::edge::layers::nosniff))
}

/// The routes behind the token; served on the public listener when there is no admin one.
pub fn protected(gw: Arc<Gateway>) -> Router<Arc<Gateway>> {
    Router::new()
        .route("/metrics", get(metrics))
        .route_layer(from_fn_with_state(gw, require_token))
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let mut response = (StatusCode::OK, crate::telemetry::render(&gw)).into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// `/metrics` needs the token when one is set, and is open otherwise.
async fn require_token(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    if let Some(token) = &gw.config.admin.token {
        if let Err(error) = check_token(token.expose(), req.headers()) {
            return Failure::from(error).into_response();
        }
    }
    next.run(req).await
}

/// The one admin token check: the request carries `Authorization: Bearer <token>` with the
/// configured token, compared in constant time.
pub(crate) fn check_token(configured: &str, headers: &HeaderMap) -> Result<(), Error> {
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(configured.as_bytes())) {
        Ok(())
    } else {
        Err(Error::AdminUnauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn only_the_configured_bearer_token_passes() {
        let token = "admin-token-0123456789";
        assert!(check_token(token, &headers(Some("Bearer admin-token-0123456789"))).is_ok());
        for refused in [
            None,
            Some("Bearer wrong"),
            Some("admin-token-0123456789"),
            Some("Basic admin-token-0123456789"),
        ] {
            let error = check_token(token, &headers(refused)).unwrap_err();
            assert!(matches!(error, Error::AdminUnauthorized), "{refused:?}");
        }
    }
}
