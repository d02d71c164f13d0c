//! Error replies: codes, retryability, and the one conversion from and to the adapter error.
//!
//! Owns the mapping between [`BackendError`] and the wire, in both directions, so the server and
//! the adapter agree by construction. It must not invent retry policy: `retryable` is the Web
//! API's statusCode 1 (true) or 2 (false), decided here once per code.

use backend_api::BackendError;
use serde::{Deserialize, Serialize};

/// Why a call or a handshake failed. Serialised as its camelCase name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ErrorCode {
    /// Session limit reached or too many calls in flight: nothing was done. Retryable.
    Overloaded,
    /// The server is shutting down and takes no new calls: nothing was done. Retryable.
    ShuttingDown,
    /// Something the server depends on failed. Retryable. (Since the store got its own code,
    /// a v1 server sends this only for an interrupted call it could not classify.)
    Unavailable,
    /// The shared store failed (down, slow): nothing was applied, nothing acknowledged; the
    /// chat is as before the call. Retryable, on the same server.
    StoreUnavailable,
    /// This server no longer holds the chat: another server saved a newer version of it, so
    /// this one refused to overwrite it, dropped its copy and applied nothing. Retryable,
    /// after restoring the chat (on any server).
    Moved,
    /// No such chat on this server (never existed, expired, or not restored here). Final.
    UnknownChat,
    /// The chat has ended; writes are refused. Final.
    ChatEnded,
    /// userId or secureKey do not match the chat. Final.
    BadCredentials,
    /// The call is invalid; `field` names the culprit where known. Final.
    Rejected,
    /// The server does not offer the call (an unknown call, or restore without a store). Final.
    Unsupported,
    /// Handshake only: the server does not speak the client's protocol version. Final.
    VersionMismatch,
    /// Handshake only (version 2): the client did not prove it holds the server's shared
    /// secret (no proof, a wrong one, or a version-1 hello to a server that needs one). The
    /// server closes the connection. Final: the same secret fails again.
    AuthFailed,
    /// A text of the call is longer than the server accepts; `field` names it, `limit` says
    /// how many bytes are accepted. Nothing was done. Final.
    TooLong,
    /// The chat's transcript is at its size limit: calls that add events are refused; the
    /// chat can still be read and completed. Nothing was done. Final.
    TranscriptFull,
    /// The reply to this call would not fit in one frame. Said about this call only: the
    /// connection stays open. Final (the same call would build the same reply).
    ReplyTooLarge,
    /// A code this build does not know (sent by a newer peer): trust `retryable`.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The retryability each known code has on the wire.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Overloaded
                | ErrorCode::ShuttingDown
                | ErrorCode::Unavailable
                | ErrorCode::StoreUnavailable
                | ErrorCode::Moved
        )
    }
}

/// An error reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireError {
    pub code: ErrorCode,
    /// true: statusCode 1 (try again later, maybe elsewhere); false: statusCode 2.
    pub retryable: bool,
    /// For people reading logs; never parsed.
    pub message: String,
    /// `rejected`: the request field at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// `chatEnded`: the transcript position to read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_position: Option<u64>,
    /// `tooLong`: the most bytes the field may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> WireError {
        WireError {
            code,
            retryable: code.retryable(),
            message: message.into(),
            field: None,
            next_position: None,
            limit: None,
        }
    }

    /// The adapter error this reply means, for a reply to the call named `call`.
    pub fn into_backend_error(self, call: &'static str) -> BackendError {
        match self.code {
            ErrorCode::Overloaded | ErrorCode::ShuttingDown => {
                BackendError::Overloaded(self.message)
            }
            ErrorCode::Unavailable => BackendError::Interrupted(self.message),
            ErrorCode::StoreUnavailable => BackendError::StoreUnavailable(self.message),
            ErrorCode::Moved => BackendError::Moved(self.message),
            ErrorCode::UnknownChat => BackendError::UnknownChat,
            ErrorCode::ChatEnded => BackendError::ChatEnded {
                next_position: self.next_position.unwrap_or(0),
            },
            ErrorCode::BadCredentials => BackendError::BadCredentials,
            ErrorCode::Rejected => BackendError::Rejected {
                field: self.field,
                message: self.message,
            },
            ErrorCode::Unsupported => BackendError::Unsupported(call),
            ErrorCode::VersionMismatch | ErrorCode::AuthFailed => {
                BackendError::Unreachable(self.message)
            }
            ErrorCode::TooLong => BackendError::TooLong {
                field: self.field.unwrap_or_default(),
                limit: self.limit.unwrap_or(0),
            },
            ErrorCode::TranscriptFull => BackendError::TranscriptFull(self.message),
            ErrorCode::ReplyTooLarge => BackendError::TooLarge(self.message),
            // A newer server's code: its retryable flag is all we can trust. Retryable maps to
            // Interrupted (not Unreachable) because the call may have had an effect.
            ErrorCode::Unknown if self.retryable => BackendError::Interrupted(self.message),
            ErrorCode::Unknown => BackendError::Rejected {
                field: self.field,
                message: self.message,
            },
        }
    }
}

impl From<BackendError> for WireError {
    fn from(error: BackendError) -> WireError {
        let message = error.to_string();
        match error {
            BackendError::Overloaded(_) => WireError::new(ErrorCode::Overloaded, message),
            BackendError::Unreachable(_) | BackendError::Interrupted(_) => {
                WireError::new(ErrorCode::Unavailable, message)
            }
            BackendError::StoreUnavailable(_) => {
                WireError::new(ErrorCode::StoreUnavailable, message)
            }
            BackendError::Moved(_) => WireError::new(ErrorCode::Moved, message),
            BackendError::UnknownChat => WireError::new(ErrorCode::UnknownChat, message),
            BackendError::ChatEnded { next_position } => WireError {
                next_position: Some(next_position),
                ..WireError::new(ErrorCode::ChatEnded, message)
            },
            BackendError::BadCredentials => WireError::new(ErrorCode::BadCredentials, message),
            BackendError::Rejected { field, message } => WireError {
                field,
                ..WireError::new(ErrorCode::Rejected, message)
            },
            BackendError::Unsupported(_) => WireError::new(ErrorCode::Unsupported, message),
            BackendError::TooLong { field, limit } => WireError {
                field: Some(field),
                limit: Some(limit),
                ..WireError::new(ErrorCode::TooLong, message)
            },
            BackendError::TranscriptFull(_) => WireError::new(ErrorCode::TranscriptFull, message),
            BackendError::TooLarge(_) => WireError::new(ErrorCode::ReplyTooLarge, message),
            // Neither arises in a chat server (no remote behind it, no file calls in the
            // protocol); mapped by their retryability so a future use stays truthful.
            BackendError::Remote { status_code: 1, .. } => {
                WireError::new(ErrorCode::Unavailable, message)
            }
            BackendError::Remote { .. } | BackendError::File(_) => {
                WireError::new(ErrorCode::Rejected, message)
            }
        }
    }
}
