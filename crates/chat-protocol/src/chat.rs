//! The chat values the protocol carries, as protocol v1 spells them on the wire.
//!
//! These mirror the adapter boundary's domain types (`backend_api`) field for field, but they
//! are the protocol's own: their serde attributes are the wire format, pinned by
//! `tests/protocol_v1.rs`, so a refactor of `backend-api` cannot change what a chat server
//! reads or writes. It must not hold behaviour: `convert` turns them into domain values and
//! back (the field-less enums convert here, declared by one macro with their conversions).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Declares a wire enum whose variants carry nothing, with its `From` conversions to and from
/// the domain enum of the same name and variants: one list of variants, so the two cannot
/// disagree without failing to compile.
macro_rules! unit_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name {
            $($variant,)+
        }

        impl From<backend_api::$name> for $name {
            fn from(value: backend_api::$name) -> $name {
                match value {
                    $(backend_api::$name::$variant => $name::$variant,)+
                }
            }
        }

        impl From<$name> for backend_api::$name {
            fn from(value: $name) -> backend_api::$name {
                match value {
                    $($name::$variant => backend_api::$name::$variant,)+
                }
            }
        }
    };
}

/// User data: string keys to string values, sorted.
pub type UserData = BTreeMap<String, String>;

unit_enum!(ParticipantType {
    Client,
    Agent,
    Supervisor,
    External,
    System,
});

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    pub nickname: Arc<str>,
    pub participant_id: u32,
    #[serde(rename = "type")]
    pub kind: ParticipantType,
}

unit_enum!(EventType {
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
});

/// One transcript entry.
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
    #[serde(default, skip_serializing_if = "UserData::is_empty")]
    pub user_data: UserData,
}

unit_enum!(ChatState {
    WaitingForAgent,
    Chatting,
    Idle,
});

/// The `loginJoin` call's body. Absent optional fields are written as `null`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewChat {
    pub tenant_name: String,
    pub nickname: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email_address: Option<String>,
    pub subject: Option<String>,
    pub endpoint: String,
    pub user_data: UserData,
}

/// The server's own credentials for a chat, sent with every call on it.
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

/// The `created` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatCreated {
    pub chat: ChatRef,
    pub messages: Vec<Event>,
    pub next_position: u64,
}

/// The action of a `refresh` call, flattened into it: `"action": "sendMessage", "text": ...`.
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
    /// An addition to v1 (issue 14): `{"action":"readReceipt","readPosition":5}`. A server
    /// that predates it refuses the call as malformed; nothing else changes on the wire.
    #[serde(rename_all = "camelCase")]
    ReadReceipt {
        read_position: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatDetails {
    pub state: ChatState,
    pub participants: Vec<Participant>,
    pub user_data: UserData,
    /// An addition to v1 (issue 14): the customer's read marker, absent until its first read
    /// receipt (and so absent from every answer an older peer sees or sends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_position: Option<u64>,
}

/// The `update` answer. `details` is written as `null` when absent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatUpdate {
    pub messages: Vec<Event>,
    pub next_position: u64,
    pub chat_ended: bool,
    pub details: Option<ChatDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_key: Option<String>,
}

/// A server's load, in `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    pub active: u64,
    pub limit: u64,
    pub accepting: bool,
}
