//! Chat API v2 handlers: body → operation → run → reply.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::body::JsonBody;
use super::layers::OperationName;
use super::wire::{chat_state, json, ChatReply, CreatedReply, Events};
use super::Failure;
use crate::operation::{self, ChatOperation, OnChat};
use crate::Gateway;

/// `POST /api/v2/chats`: Request Chat.
pub async fn request_chat(State(gw): State<Arc<Gateway>>, JsonBody(body): JsonBody) -> Response {
    tagged("RequestChat", create(&gw, &body).await)
}

/// Leaves the operation's name on the reply for the request metrics.
fn tagged(name: &'static str, result: Result<Response, Failure>) -> Response {
    let mut response = result.into_response();
    response.extensions_mut().insert(OperationName(name));
    response
}

async fn create(gw: &Gateway, body: &[u8]) -> Result<Response, Failure> {
    let request = operation::parse_request_chat(body)?;
    let c = operation::request_chat(gw, request).await?;
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
        },
    ))
}

/// `POST /api/v2/chats/{chatId}`: every operation named by `operationName`.
pub async fn operation(
    State(gw): State<Arc<Gateway>>,
    Path(chat_id): Path<String>,
    JsonBody(body): JsonBody,
) -> Response {
    match operation::parse_chat_operation(&body) {
        Ok(request) => tagged(request.operation.name(), run(&gw, &chat_id, request).await),
        Err(e) => tagged("invalid", Err(Failure::on_chat(e, &chat_id))),
    }
}

/// `POST /api/v2/chats/{chatId}/messages`: Get Messages.
pub async fn messages(
    State(gw): State<Arc<Gateway>>,
    Path(chat_id): Path<String>,
    JsonBody(body): JsonBody,
) -> Response {
    let result = match operation::parse_get_messages(&body) {
        Ok(request) => run(&gw, &chat_id, request).await,
        Err(e) => Err(Failure::on_chat(e, &chat_id)),
    };
    tagged("GetMessages", result)
}

async fn run(gw: &Gateway, chat_id: &str, request: OnChat) -> Result<Response, Failure> {
    let wants_messages = matches!(request.operation, ChatOperation::GetMessages(_));
    let reply = operation::on_chat(gw, chat_id, request)
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
        },
    ))
}
