//! webapi-gateway: the Genesys Web API Server REST API (Chat API v2, Email API) in front of
//! pluggable chat and e-mail backends.
//!
//! # Layout
//! A request travels down this list, and each step lives in one module:
//! - `edge`: HTTP; one folder per dialect (`edge::webapi`, `edge::gms`: routes, body parsing,
//!   reply shapes) and what both share (middleware, errors → replies, body reading);
//! - `operation`: the typed operation both dialects parse to (`NewChat`, `OnChat`), and the
//!   code that runs it on the narrow `Chats` state;
//! - `credentials`: the sealed `secureKey` scheme, checked before anything reaches a backend;
//! - `router`: alias → chat server instance, and placement of new chats (no I/O);
//! - the adapters: `backends/` (`backend-api` holds their trait; `tcp`, `http`) and the
//!   embedded mock beside its engine in `crates/chat-engine`, all built in `gateway`;
//! - for Send Email (either dialect), `edge::email` streams the body into `email`, which
//!   applies the intake rules, spools the e-mail durably and delivers it in the background.
//!
//! Beside the path: `config` (loading; it composes the sections each module owns), `error` (the error type and code table),
//! `server` (listeners, connection limits, shutdown), `telemetry` (metrics), `reload`
//! (SIGHUP and config file changes → a new router table), `admin` (the admin listener:
//! metrics, health, instance list and states). The middleware every route gets is in
//! `edge::layers`.

pub mod admin;
pub mod config;
pub mod credentials;
pub mod edge;
pub mod error;
mod gateway;
pub mod operation;
pub mod reload;
pub mod router;
pub mod server;
pub mod telemetry;

pub use config::Config;
pub use gateway::{Gateway, StartError};

use std::sync::Arc;

/// The whole public HTTP application for a gateway (used by the server and by tests): the
/// routes inside the shared middleware stack.
pub fn app(gw: Arc<Gateway>) -> axum::Router {
    let routes = edge::routes(Arc::clone(&gw));
    // Without an admin listener, its token-protected routes (/metrics) are served here, and
    // only behind a token: the public listener never serves them open.
    let routes = if gw.config.admin.enabled || gw.config.admin.token.is_none() {
        routes
    } else {
        routes.merge(admin::protected(Arc::clone(&gw)).with_state(Arc::clone(&gw)))
    };
    edge::optional_trailing_slash(edge::layers::apply(routes, &gw))
}
