//! The HTTP edge: routes, request bodies and the Web API JSON reply shapes.
//!
//! Owns everything that knows HTTP and the wire JSON: the route table, reading and limiting
//! bodies, content types, the reply shapes and the one conversion of errors into the Web API
//! error reply (`error`); the GMS dialect's routes and shapes are in `gms`. It knows nothing about backends: it hands typed operations to
//! `operation` and renders what comes back.

pub mod body;
mod chat;
pub mod cors;
mod email;
pub mod error;
mod gms;
pub mod health;
pub mod layers;
pub mod limits;
pub mod wire;

use std::sync::Arc;

use axum::routing::{get, post};
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
        .route("/api/v2/chats", post(chat::request_chat))
        .route("/api/v2/chats/{chat_id}", post(chat::operation))
        .route("/api/v2/chats/{chat_id}/messages", post(chat::messages))
        // Reads its body as a stream with its own limit (email.max_size), not through the
        // chat routes' JsonBody.
        .route("/api/v2/emails", post(email::send_email))
        .merge(gms::routes())
        .fallback(|| async { Failure::from(Error::NotFound) })
        .method_not_allowed_fallback(|| async { Failure::from(Error::MethodNotAllowed) })
        .with_state(gw)
}
