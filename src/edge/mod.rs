//! The HTTP edge: the route table, one folder per dialect, and what both dialects share.
//!
//! Owns everything that knows HTTP and the wire shapes. Each dialect lives in its own folder
//! with its routes, body parsing and reply shapes: `webapi` (the Web API v2, JSON), `gms`
//! (GMS Chat API v2, forms and multipart) and `cometd` (GMS's CometD: Bayeux long-polling). Shared by both: the middleware (`layers`,
//! `limits`, `cors`), `health`, the one conversion of errors into replies (`error`), body
//! reading helpers (`body`), the e-mail stream into the intake (`email`), the JSON reply
//! and transcript shapes (`wire`) and the event streams of both dialects (`push`). The chat
//! widget's files and the demo page at `/` are `widget`'s. It knows nothing about backends:
//! it hands typed operations to `operation` and renders what comes back. Every route takes an optional
//! trailing slash ([`optional_trailing_slash`], before routing).

pub mod body;
pub mod cometd;
pub mod cors;
pub mod email;
pub mod error;
pub mod gms;
pub mod health;
pub mod layers;
pub mod limits;
pub mod push;
pub mod webapi;
pub mod widget;
pub mod wire;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::Uri;
use axum::routing::get;
use axum::Router;
use tower::ServiceExt;

use crate::error::Error;
use crate::Gateway;
pub use error::{Failure, GmsFailure};
pub use gms::{GmsConfig, GmsServiceConfig};

/// The public route table. A route whose path carries a chat id names it `chat_id` (see
/// `limits::CHAT_ID_PARAM`); the shared middleware is added around it by `layers::apply`.
pub fn routes(gw: Arc<Gateway>) -> Router {
    let widget = &gw.config.widget;
    let router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(webapi::routes())
        .merge(push::routes())
        .merge(gms::routes())
        .merge(cometd::routes())
        .merge(widget::routes(widget, gw.config.widget_tenant()));
    // The demo page: `/` is served by nothing else.
    let router = if widget.enabled && widget.demo_page {
        router.route("/", get(widget::demo_page(widget)))
    } else {
        router
    };
    router
        .fallback(|| async { Failure::from(Error::NotFound) })
        .method_not_allowed_fallback(|| async { Failure::from(Error::MethodNotAllowed) })
        .with_state(gw)
}

/// Every route of the application with an optional trailing slash: `/genesys/2/chat/svc/`
/// is routed as `/genesys/2/chat/svc` (a Python GMS bot posts Request Chat so). One
/// mechanism for all routes: the path loses one trailing slash before routing, so the route
/// matched, its limits and its metrics label are the ones without it. Only one: `//` at the
/// end is still an unknown path.
pub fn optional_trailing_slash(app: Router) -> Router {
    Router::new().fallback_service(app.map_request(trim_trailing_slash))
}

fn trim_trailing_slash(mut req: Request) -> Request {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') && !path.ends_with("//") {
        let trimmed = &path[..path.len() - 1];
        let path_and_query = match req.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = path_and_query.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trimmed(uri: &str) -> String {
        let req = Request::builder()
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        trim_trailing_slash(req).uri().to_string()
    }

    #[test]
    fn one_trailing_slash_goes_before_routing() {
        assert_eq!(trimmed("/genesys/2/chat/svc/"), "/genesys/2/chat/svc");
        assert_eq!(trimmed("/api/v2/chats/?x=1"), "/api/v2/chats?x=1");
        assert_eq!(trimmed("/api/v2/chats"), "/api/v2/chats");
        assert_eq!(trimmed("/"), "/");
        assert_eq!(trimmed("/api/v2/chats//"), "/api/v2/chats//");
        assert_eq!(
            trimmed("http://gw.example/healthz/"),
            "http://gw.example/healthz"
        );
    }
}
