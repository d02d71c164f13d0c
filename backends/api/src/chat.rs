//! Chats, participants, transcript events and the actions on a chat.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// User data attached to an interaction: string keys to string values, kept sorted so
/// replies are stable.
pub type UserData = BTreeMap<String, String>;

/// Kinds of chat participant, as the Web API names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParticipantType {
    Client,
    Agent,
    Supervisor,
    External,
    System,
}

/// One party of a chat, as shown in events and in GetChat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    pub nickname: Arc<str>,
    pub participant_id: u32,
    #[serde(rename = "type")]
    pub kind: ParticipantType,
}

/// Transcript event types. Backends record the precise kind (`PushUrl`, `NicknameUpdated`);
/// the Web API dialect shows both as `Notice`, the GMS dialect as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    ParticipantJoined,
    ParticipantLeft,
    Message,
    TypingStarted,
    TypingStopped,
    Notice,
    CustomNotice,
    IdleAlert,
    IdleClose,
    PushUrl,
    NicknameUpdated,
    FileUploaded,
    FileDeleted,
}

/// One transcript entry. `index` starts at 1 and grows by one per event, without gaps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub index: u64,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub from: Participant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_type: Option<Arc<str>>,
    pub utc_time: u64,
    /// Event attributes: e.g. the `file-id`, `file-name`, `file-size` of `FileUploaded`.
    #[serde(default, skip_serializing_if = "UserData::is_empty")]
    pub user_data: UserData,
}

/// State of a chat as GetChat reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatState {
    WaitingForAgent,
    Chatting,
    Idle,
}

/// A customer's request for a new chat (login + join).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewChat {
    pub tenant_name: String,
    pub nickname: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email_address: Option<String>,
    pub subject: Option<String>,
    /// The queue the chat is routed to.
    pub endpoint: String,
    pub user_data: UserData,
}

/// The backend's own credentials for a chat: what the chat server checks on every request.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatRef {
    pub chat_id: String,
    pub user_id: String,
    pub secure_key: String,
}

/// Leaves the secure key out: it is a credential, and a `Debug` line can reach a log.
impl std::fmt::Debug for ChatRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatRef")
            .field("chat_id", &self.chat_id)
            .field("user_id", &self.user_id)
            .field("secure_key", &"[REDACTED]")
            .finish()
    }
}

/// The reply to [`crate::ChatBackend::create`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatCreated {
    pub chat: ChatRef,
    pub messages: Vec<Event>,
    pub next_position: u64,
}

/// What the customer does on an existing chat. `Poll` does nothing but refresh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    Poll,
    #[serde(rename_all = "camelCase")]
    SendMessage {
        text: String,
        message_type: Option<String>,
    },
    StartTyping {
        text: Option<String>,
    },
    StopTyping {
        text: Option<String>,
    },
    UpdateNickname {
        nickname: String,
    },
    PushUrl {
        url: String,
    },
    UpdateUserData {
        data: UserData,
        text: Option<String>,
    },
    CustomNotice {
        text: String,
    },
    Complete,
    /// The customer has read the transcript up to this index (GMS `readReceipt`). Recorded
    /// as the chat's read marker ([`ChatDetails::read_position`]); adds no event, so a
    /// client acknowledging what it reads never makes more to read.
    #[serde(rename_all = "camelCase")]
    ReadReceipt {
        position: u64,
    },
}

impl Action {
    /// Whether the action ends or changes the chat (refused once the chat has ended). A read
    /// receipt is not: a customer may still read what the agent wrote before it left.
    pub fn is_write(&self) -> bool {
        !matches!(self, Action::Poll | Action::ReadReceipt { .. })
    }

    /// Whether running the action twice differs from running it once. Such actions are never
    /// retried once they may have reached a backend.
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self,
            Action::Poll
                | Action::StartTyping { .. }
                | Action::StopTyping { .. }
                | Action::Complete
                | Action::UpdateUserData { .. }
                | Action::ReadReceipt { .. }
        )
    }
}

/// Which part of the transcript a refresh wants back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transcript {
    /// No events (the reply still carries `next_position`).
    None,
    /// Events whose index is at least this (1 = everything).
    From(u64),
}

/// One request on an existing chat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refresh {
    pub action: Action,
    pub transcript: Transcript,
    /// Ask for the chat's state and participants too (GetChat).
    pub details: bool,
}

/// A chat's state and participants, for GetChat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatDetails {
    pub state: ChatState,
    pub participants: Vec<Participant>,
    pub user_data: UserData,
    /// The customer's read marker: the highest transcript index its read receipts
    /// acknowledged, `None` before the first one (or where the backend keeps none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_position: Option<u64>,
}

/// The reply to a refresh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatUpdate {
    pub messages: Vec<Event>,
    /// The index to ask for next: one past the last event.
    pub next_position: u64,
    pub chat_ended: bool,
    pub details: Option<ChatDetails>,
    /// The backend's new key for the chat, when it changed (a GMS cluster moved the chat to
    /// another node: the remote alias is part of the HTTP adapter's key). The gateway seals
    /// it and hands it to the client in place of the old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_key: Option<String>,
}
