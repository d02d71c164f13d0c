//! The Web API v2 dialect: `/api/v2/chats…` (JSON bodies) and `/api/v2/emails` (multipart).
//!
//! Owns its routes, the handlers (body → operation → run → reply), reading and parsing its
//! JSON bodies (`body`, `parse`) and its reply shapes (`wire`). Chat handlers take only
//! [`Chats`], the e-mail handler only the e-mail intake's state. Errors are rendered by
//! `edge::error`. Knows nothing about backends.

pub(crate) mod body;
mod config;
pub mod parse;
pub mod wire;

pub use self::config::WebApiConfig;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use self::body::JsonBody;
use self::parse::operation_name;
use self::wire::{chat_state, ChatReply, CreatedReply, EmailAccepted};
use super::email::Emails;
use super::layers::OperationName;
use super::wire::{json, Events};
use super::Failure;
use crate::operation::{self, Chats, OnChat};

pub use parse::{parse_chat_operation, parse_get_messages, parse_request_chat};

/// The route that starts a chat (`POST`), for the per-address limit on new chats
/// (`limits`); the same path as its `.route` below, which names it as a literal so the
/// OpenAPI check can read it (`hostile::the_sixth_immediate_chat_start_…` fails if they
/// part).
pub const REQUEST_CHAT_ROUTE: &str = "/api/v2/chats";

/// The Web API routes (merged into the public application by `edge::routes`).
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Chats: axum::extract::FromRef<S>,
    Emails: axum::extract::FromRef<S>,
    super::body::ReadLimits: axum::extract::FromRef<S>,
{
    Router::new()
        .route("/api/v2/chats", post(request_chat))
        .route("/api/v2/chats/{chat_id}", post(chat_operation))
        .route("/api/v2/chats/{chat_id}/messages", post(messages))
        // Reads its body as a stream with its own limit (email.max_size), not through the
        // chat routes' JsonBody.
        .route("/api/v2/emails", post(send_email))
}

/// `POST /api/v2/chats`: Request Chat.
async fn request_chat(State(chats): State<Chats>, JsonBody(body): JsonBody) -> Response {
    tagged("RequestChat", create(&chats, &body).await)
}

/// Leaves the operation's name on the reply for the request metrics.
fn tagged(name: &'static str, result: Result<Response, Failure>) -> Response {
    let mut response = result.into_response();
    response.extensions_mut().insert(OperationName(name));
    response
}

async fn create(chats: &Chats, body: &[u8]) -> Result<Response, Failure> {
    let request = parse_request_chat(body)?;
    let c = operation::request_chat(chats, request).await?;
    Ok(json(
        StatusCode::OK,
        &CreatedReply {
            path: format!("/api/v2/chats/{}", c.chat_id),
            chat_id: &c.chat_id,
            user_id: &c.user_id,
            secure_key: &c.secure_key,
            alias: &c.alias,
            tenant_name: &c.tenant_name,
            messages: Events::web_api(&c.messages),
            chat_ended: false,
            next_position: c.next_position,
            status_code: 0,
            stream_token: &c.stream_token,
        },
    ))
}

/// `POST /api/v2/chats/{chatId}`: every operation named by `operationName`.
async fn chat_operation(
    State(chats): State<Chats>,
    Path(chat_id): Path<String>,
    JsonBody(body): JsonBody,
) -> Response {
    match parse_chat_operation(&body) {
        Ok(request) => tagged(
            operation_name(&request.operation),
            run(&chats, &chat_id, request, false).await,
        ),
        Err(e) => tagged("invalid", Err(Failure::on_chat(e, &chat_id))),
    }
}

/// `POST /api/v2/chats/{chatId}/messages`: Get Messages.
async fn messages(
    State(chats): State<Chats>,
    Path(chat_id): Path<String>,
    JsonBody(body): JsonBody,
) -> Response {
    let result = match parse_get_messages(&body) {
        Ok(request) => run(&chats, &chat_id, request, true).await,
        Err(e) => Err(Failure::on_chat(e, &chat_id)),
    };
    tagged("GetMessages", result)
}

/// Runs a request on a chat; only Get Messages shows the transcript in its reply.
async fn run(
    chats: &Chats,
    chat_id: &str,
    request: OnChat,
    wants_messages: bool,
) -> Result<Response, Failure> {
    let reply = operation::on_chat(chats, chat_id, request)
        .await
        .map_err(|e| Failure::on_chat(e, chat_id))?;
    let update = &reply.update;
    let creds = &reply.credentials;
    let details = update.details.as_ref();
    Ok(json(
        StatusCode::OK,
        &ChatReply {
            status_code: 0,
            alias: &reply.alias,
            secure_key: &creds.secure_key,
            user_id: &creds.user_id,
            tenant_name: &creds.tenant_name,
            chat_id,
            chat_ended: update.chat_ended,
            next_position: update.next_position,
            messages: wants_messages.then(|| Events::web_api(&update.messages)),
            state: details.map(|d| chat_state(d.state)),
            participants: details.map(|d| &d.participants[..]),
            user_data: details.map(|d| &d.user_data),
            read_position: details.and_then(|d| d.read_position),
            stream_token: &reply.stream_token,
        },
    ))
}

/// `POST /api/v2/emails`: Send Email. Receives one e-mail and answers its interactionId.
async fn send_email(
    State(emails): State<Emails>,
    req: Request,
) -> Result<Json<EmailAccepted>, Failure> {
    let id = emails.accept(req, None).await?;
    Ok(Json(EmailAccepted {
        interaction_id: id.to_string(),
    }))
}
