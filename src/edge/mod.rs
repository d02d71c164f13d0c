//! The HTTP edge: the route table, one folder per dialect, and what both dialects share.
//!
//! Owns everything that knows HTTP and the wire shapes. Each dialect lives in its own folder
//! with its routes, body parsing and reply shapes: `webapi` (the Web API v2, JSON) and `gms`
//! (GMS Chat API v2, forms and multipart). Shared by both: the middleware (`layers`,
//! `limits`, `cors`), `health`, the one conversion of errors into replies (`error`), body
//! reading helpers (`body`), the e-mail stream into the intake (`email`) and the JSON reply
//! and transcript shapes (`wire`). It knows nothing about backends: it hands typed
//! operations to `operation` and renders what comes back.

pub mod body;
pub mod cors;
pub mod email;
pub mod error;
pub mod gms;
pub mod health;
pub mod layers;
pub mod limits;
pub mod webapi;
pub mod wire;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::error::Error;
use crate::Gateway;
pub use error::{Failure, GmsFailure};
pub use gms::{GmsConfig, GmsServiceConfig};

/// The public route table. A route whose path carries a chat id names it `chat_id` (see
/// `limits::CHAT_ID_PARAM`); the shared middleware is added around it by `layers::apply`.
pub fn routes(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(webapi::routes())
        .merge(gms::routes())
        .fallback(|| async { Failure::from(Error::NotFound) })
        .method_not_allowed_fallback(|| async { Failure::from(Error::MethodNotAllowed) })
        .with_state(gw)
}
