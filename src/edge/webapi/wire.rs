//! The Web API v2 reply shapes (Chat API and Send Email); the error reply is `edge::error`.

use backend_api::{ChatState, Participant};
use serde::Serialize;

use crate::edge::wire::Events;

pub fn chat_state(state: ChatState) -> &'static str {
    match state {
        ChatState::WaitingForAgent => "WaitingForAgent",
        ChatState::Chatting => "Chatting",
        ChatState::Idle => "Idle",
    }
}

/// Request Chat's reply.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedReply<'a> {
    pub chat_id: &'a str,
    pub path: String,
    pub user_id: &'a str,
    pub secure_key: &'a str,
    pub alias: &'a str,
    pub tenant_name: &'a str,
    pub messages: Events<'a>,
    pub chat_ended: bool,
    pub next_position: u64,
    pub status_code: u8,
    /// Opens the chat's event stream (`GET /api/v2/chats/{chatId}/events?streamToken=`).
    pub stream_token: &'a str,
}

/// The reply to every operation on an existing chat.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatReply<'a> {
    pub status_code: u8,
    pub alias: &'a str,
    pub secure_key: &'a str,
    pub user_id: &'a str,
    pub tenant_name: &'a str,
    pub chat_id: &'a str,
    pub chat_ended: bool,
    pub next_position: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Events<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participants: Option<&'a [Participant]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<&'a backend_api::UserData>,
    /// GetChat: the customer's read marker (its read receipts), once it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_position: Option<u64>,
    /// Opens the chat's event stream (`GET /api/v2/chats/{chatId}/events?streamToken=`).
    pub stream_token: &'a str,
}

/// Send Email's reply.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailAccepted {
    pub interaction_id: String,
}
