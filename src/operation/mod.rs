//! Operations: what a request asks for, as a typed value parsed once from its JSON body,
//! and the one place that runs it (`run`: credentials check → router → adapter).
//!
//! Parsing knows the Web API's field names and rules (required fields, types, transcript
//! positions) but nothing of HTTP. Running knows the credentials scheme and the router but
//! no JSON.

mod files;
mod gms;
mod parse;
mod run;

pub use files::{delete_file, download_file, file_limits, upload_file, Served};
pub use gms::{gms_credentials, parse_gms_operation, parse_gms_request_chat, FormFields};
pub use parse::{parse_chat_operation, parse_get_messages, parse_request_chat};
pub use run::{on_chat, request_chat, ChatReply, Created};

use backend_api::{Action, Refresh, Transcript, UserData};

/// The four credentials every request inside a chat carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCredentials {
    pub user_id: String,
    pub secure_key: String,
    pub alias: String,
    pub tenant_name: String,
}

/// Request Chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestChat {
    pub tenant_name: String,
    pub nickname: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email_address: Option<String>,
    pub subject: Option<String>,
    pub endpoint: Option<String>,
    pub user_data: UserData,
}

/// What is asked of an existing chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatOperation {
    /// An action that changes the chat (SendMessage, typing, nickname, URL, user data,
    /// Complete).
    Act(Action),
    /// GetChat: state and participants.
    GetChat,
    /// Get Messages from a transcript position.
    GetMessages(Transcript),
    /// An action and the transcript from a position in the same reply, as the GMS dialect
    /// asks (every GMS operation may carry `transcriptPosition`).
    Refresh(Refresh),
}

impl ChatOperation {
    /// The Web API's name for it (`operationName`, or `GetMessages`), for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ChatOperation::GetChat => "GetChat",
            ChatOperation::GetMessages(_) => "GetMessages",
            ChatOperation::Refresh(_) => "Refresh",
            ChatOperation::Act(action) => match action {
                Action::Poll => "Poll",
                Action::SendMessage { .. } => "SendMessage",
                Action::StartTyping { .. } => "SendStartTypingNotification",
                Action::StopTyping { .. } => "SendStopTypingNotification",
                Action::UpdateNickname { .. } => "UpdateUserNickname",
                Action::PushUrl { .. } => "SendUrl",
                Action::UpdateUserData { .. } => "UpdateUserData",
                Action::CustomNotice { .. } => "CustomNotice",
                Action::Complete => "Complete",
            },
        }
    }
}

/// A request on an existing chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnChat {
    pub credentials: ClientCredentials,
    pub operation: ChatOperation,
}
