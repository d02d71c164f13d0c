//! Every message of the protocol, as the spec's field tables describe them.
//!
//! Owns the shapes only: which message follows which, and what a server does with one, is
//! up to the two ends (and written down in the spec).

use crate::chat::{Action, ChatCreated, ChatRef, ChatUpdate, Load, NewChat};
use serde::{Deserialize, Serialize};

use crate::WireError;

/// Chosen by the client, unique among its requests in flight on one connection; the reply
/// carries it back so one connection can carry many chats at once.
pub type RequestId = u64;

/// The first frame on a connection, from the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    /// The protocol version the client speaks.
    pub version: u16,
    /// Who the client is (for the server's log), e.g. `webapi-gateway@host`.
    pub peer: String,
    /// Version 2: the client's nonce (64 hex digits), which the server's proof in
    /// [`Welcome::proof`] covers, so a client holding the secret knows it reached a server
    /// holding it too. Absent in version 1, and from a client without a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// The server's answer to [`Hello`]: the second frame on a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HelloReply {
    Welcome(Welcome),
    /// The server closes the connection after sending it.
    Refused(Refused),
    /// Version 2, from a server with a shared secret: prove you hold it. The client answers
    /// with a [`Proof`], then the server sends `welcome` or `refused` (`authFailed`).
    Challenge(Challenge),
}

/// The server's nonce, fresh for each connection: the client's proof covers it, so a proof
/// seen on the wire is worth nothing on another connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Challenge {
    /// 64 hex digits (32 bytes from the OS CSPRNG).
    pub nonce: String,
}

/// The client's answer to a [`Challenge`]: the third frame on a version-2 connection to a
/// server with a secret. See `auth` for what it is computed over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Proof {
    /// HMAC-SHA256 under the shared secret, 64 lower-case hex digits.
    pub proof: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    /// The version both ends now speak.
    pub version: u16,
    /// The server instance's alias: what the Web API reports as `alias`.
    pub alias: String,
    /// The largest frame payload the server accepts.
    pub max_frame_length: u64,
    /// The server's status at the moment of the handshake.
    pub status: Status,
    /// Version 2, after a challenge: the server's proof that it holds the shared secret too,
    /// over both nonces (64 hex digits). A client that sent a nonce checks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    pub error: WireError,
    /// The versions the server would have accepted.
    pub supported_versions: Vec<u16>,
}

/// One call from the client, after the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub id: RequestId,
    pub call: Call,
    /// The id of the client request that caused this call (the gateway's `x-request-id`),
    /// for following one request across logs. Optional; servers only log it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// What a client can ask. Externally tagged: `{"refresh": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Call {
    /// The flex flow's login and join in one round trip: the gateway always does both together,
    /// and a login without a join would leave a user nobody can see. Answered by
    /// [`Answer::Created`].
    LoginJoin(NewChat),
    /// One action on a chat and the transcript from a position. Answered by [`Answer::Update`].
    #[serde(rename_all = "camelCase")]
    Refresh {
        chat: ChatRef,
        /// `{"action": "sendMessage", "text": ...}` flattened into the call.
        #[serde(flatten)]
        action: Action,
        /// 0: no events; n ≥ 1: the events whose index is at least n.
        transcript_position: u64,
        /// Add the chat's state, participants and user data to the answer.
        #[serde(default)]
        details: bool,
    },
    /// The customer leaves and the chat ends. Answered by [`Answer::Update`].
    #[serde(rename_all = "camelCase")]
    Logout {
        chat: ChatRef,
        transcript_position: u64,
    },
    /// The server's load. Answered by [`Answer::Status`].
    Status {},
    /// Take over a chat whose server died, from the shared store. Answered by
    /// [`Answer::Restored`].
    Restore { chat: ChatRef },
    /// Version 3: the long poll. Held by the server until the chat has an event at or after
    /// `transcript_position`, has ended, or `wait_ms` (capped by the server) has passed, then
    /// answered by [`Answer::Update`] as a `refresh` with `poll` from that position would be
    /// (empty when the wait ran out, or when the server shuts down). Changes nothing but what
    /// a poll changes, so a client may send it again anywhere.
    #[serde(rename_all = "camelCase")]
    Watch {
        chat: ChatRef,
        transcript_position: u64,
        wait_ms: u64,
    },
}

impl Call {
    /// The call's name as on the wire, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Call::LoginJoin(_) => "loginJoin",
            Call::Refresh { .. } => "refresh",
            Call::Logout { .. } => "logout",
            Call::Status {} => "status",
            Call::Restore { .. } => "restore",
            Call::Watch { .. } => "watch",
        }
    }
}

/// The server's answer to one [`Request`]: exactly one of `ok` and `error` is present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    pub id: RequestId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Answer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

impl Reply {
    pub fn ok(id: RequestId, answer: Answer) -> Reply {
        Reply {
            id,
            ok: Some(answer),
            error: None,
        }
    }

    pub fn error(id: RequestId, error: WireError) -> Reply {
        Reply {
            id,
            ok: None,
            error: Some(error),
        }
    }

    /// The outcome, or `None` when the reply breaks the protocol (neither or both present).
    pub fn into_result(self) -> Option<Result<Answer, WireError>> {
        match (self.ok, self.error) {
            (Some(answer), None) => Some(Ok(answer)),
            (None, Some(error)) => Some(Err(error)),
            _ => None,
        }
    }
}

/// A successful answer. Externally tagged: `{"update": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Answer {
    Created(ChatCreated),
    Update(ChatUpdate),
    Restored(Restored),
    Status(Status),
}

/// The answer to a restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Restored {
    /// The alias of the server that now hosts the chat.
    pub alias: String,
    pub next_position: u64,
    pub chat_ended: bool,
}

/// A server's load and state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub alias: String,
    /// Open chats, the session limit, and whether new chats are taken. `accepting` is false at
    /// the session limit and while the server shuts down.
    pub load: Load,
    /// Chats held, ended ones still readable included.
    pub chats: u64,
    /// Client connections open.
    pub connections: u64,
    /// Whether chats are saved to a shared store (and so can be restored elsewhere).
    pub store: bool,
}
