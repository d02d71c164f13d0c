//! The one error type of the adapter boundary.

use thiserror::Error;

/// What went wrong in a backend. Whether the client may retry travels with the error
/// ([`BackendError::retryable`]); nobody above the adapter re-derives it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BackendError {
    /// The instance could not be reached and the request cannot have arrived (connection
    /// refused, no connection to send on). Safe to run again elsewhere.
    #[error("chat server unreachable: {0}")]
    Unreachable(String),
    /// The request may or may not have reached the instance (timeout, connection lost after
    /// sending). Retryable by the client, never by the gateway for non-idempotent actions.
    #[error("chat server did not answer: {0}")]
    Interrupted(String),
    /// The instance is full or too busy (session limit, in-flight bound).
    #[error("chat server overloaded: {0}")]
    Overloaded(String),
    /// The instance's shared store failed (down, slow): nothing was applied or acknowledged.
    /// Every instance shares the store, so this says nothing about the instance's health and
    /// is no reason to move the chat; the client retries.
    #[error("chat server's store unavailable: {0}")]
    StoreUnavailable(String),
    /// The instance no longer holds the chat: another instance saved a newer version of it
    /// (the chat moved while this one was frozen or cut off), so this one's save was refused
    /// and nothing was applied. The chat may be restored elsewhere and the request run there.
    #[error("chat moved away from this chat server: {0}")]
    Moved(String),
    /// The instance does not know the chat (never existed, expired, or was lost).
    #[error("unknown chat")]
    UnknownChat,
    /// The chat exists but has ended: writes are refused.
    #[error("chat has ended")]
    ChatEnded { next_position: u64 },
    /// The backend refused the credentials.
    #[error("invalid credentials")]
    BadCredentials,
    /// The backend rejected the request as invalid; `field` names the culprit where known.
    #[error("rejected: {message}")]
    Rejected {
        field: Option<String>,
        message: String,
    },
    /// A remote chat service (GMS) answered statusCode 1 or 2 with its own error, passed
    /// through as it came. The request arrived there.
    #[error("remote error {code} (statusCode {status_code}): {message}")]
    Remote {
        /// GMS statusCode: 1 retry later, 2 give up.
        status_code: u8,
        /// The remote error code, as sent.
        code: u16,
        message: String,
        /// The remote said the chat has ended.
        chat_ended: bool,
    },
    /// A file operation broke the chat's file-transfer rules.
    #[error("file refused: {0}")]
    File(#[from] crate::FileRefusal),
    /// The backend does not offer the operation.
    #[error("operation not supported by this backend: {0}")]
    Unsupported(&'static str),
    /// A field of the request is longer than the chat accepts (`limit` bytes); nothing was
    /// applied. `field` is the client's name for it (`message`, `nickname`, `userData`…).
    #[error("field `{field}` is longer than {limit} bytes")]
    TooLong { field: String, limit: u64 },
    /// The chat's transcript is at its size limit: actions that add events are refused; the
    /// chat can still be read and completed.
    #[error("the chat's transcript is full ({0})")]
    TranscriptFull(String),
    /// The request or its reply would not fit in one frame to or from the backend. Said about
    /// this request only: its connection, and every other chat, carry on. Not retryable, and
    /// never a reason to move the chat (another instance would build the same reply).
    #[error("too large for one frame: {0}")]
    TooLarge(String),
}

impl BackendError {
    /// Web API statusCode semantics: true means statusCode 1 (retry later), false 2.
    pub fn retryable(&self) -> bool {
        match self {
            BackendError::Unreachable(_)
            | BackendError::Interrupted(_)
            | BackendError::Overloaded(_)
            | BackendError::StoreUnavailable(_)
            | BackendError::Moved(_)
            | BackendError::File(crate::FileRefusal::NoRoom(_)) => true,
            BackendError::Remote { status_code, .. } => *status_code == 1,
            _ => false,
        }
    }

    /// True when the request certainly never reached the instance, so even a
    /// non-idempotent action may be sent again somewhere else. (`Moved` reached it but was
    /// not applied: the operation layer moves it by its own rule.)
    pub fn never_arrived(&self) -> bool {
        matches!(
            self,
            BackendError::Unreachable(_) | BackendError::Overloaded(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_errors_keep_their_status_code() {
        let remote = |status_code| BackendError::Remote {
            status_code,
            code: 1,
            message: "m".into(),
            chat_ended: false,
        };
        assert!(remote(1).retryable());
        assert!(!remote(2).retryable());
        // It reached the remote: never sent again by the gateway.
        assert!(!remote(1).never_arrived());
        // Store failures and moves: statusCode 1; they reached the instance.
        for e in [
            BackendError::StoreUnavailable("down".into()),
            BackendError::Moved("newer".into()),
        ] {
            assert!(e.retryable() && !e.never_arrived(), "{e:?}");
        }
        let file = BackendError::from(crate::FileRefusal::TooMany(3));
        assert!(!file.retryable() && !file.never_arrived());
        let full = BackendError::from(crate::FileRefusal::NoRoom(1 << 28));
        assert!(full.retryable() && !full.never_arrived());
        for size in [
            BackendError::TooLong {
                field: "message".into(),
                limit: 16,
            },
            BackendError::TranscriptFull("2000 events".into()),
            BackendError::TooLarge("reply of 2 MB".into()),
        ] {
            assert!(!size.retryable() && !size.never_arrived(), "{size:?}");
        }
    }
}
