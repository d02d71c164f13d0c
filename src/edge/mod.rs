//! The HTTP edge: routes, request bodies and the Web API JSON reply shapes.
//!
//! Owns everything that knows HTTP and the wire JSON: the route table, reading and limiting
//! bodies, content types, the reply shapes and the one conversion of errors into the Web API
//! error reply (`error`); the GMS dialect's routes and shapes are in `gms`. It knows nothing about backends: it hands typed operations to
//! `operation` and renders what comes back.

mod body;
mod chat;
mod email;
pub mod error;
mod gms;
pub mod wire;

use std::sync::Arc;

use axum::routing::post;
use axum::Router;

use crate::error::Error;
use crate::Gateway;
pub use error::{Failure, GmsFailure};

/// The public HTTP application.
pub fn routes(gw: Arc<Gateway>) -> Router {
    Router::new()
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
