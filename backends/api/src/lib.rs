//! The vocabulary every backend adapter speaks.
//!
//! This crate owns the domain types of a chat (participants, transcript events, the actions a
//! customer can take), the [`ChatBackend`] trait that every chat adapter implements (embedded
//! mock, TCP chat server, GMS over HTTP), and [`BackendError`], the one error type that crosses
//! the adapter boundary.
//!
//! It must not know anything about HTTP, JSON request shapes of the Web API, credentials MACs or
//! routing: those belong to the gateway. Serde derives exist so adapters that cross a network
//! can put these types on the wire; the Web API edge builds its own reply shapes from them.

mod chat;
mod error;
mod file;
pub mod request_id;
mod url;

pub use chat::*;
pub use error::BackendError;
pub use file::{FileContent, FileLimits, FileRefusal, NewFile};
pub use url::{check_push_url, MAX_PUSH_URL_CHARS, PUSH_URL_PATTERN};

use std::time::Duration;

use async_trait::async_trait;

/// How often the default [`ChatBackend::watch`] reads the chat while it waits.
pub const WATCH_POLL_EVERY: Duration = Duration::from_millis(500);

/// A chat server instance as the gateway sees it.
///
/// One value per configured instance (alias). Every method is one request to that instance;
/// implementations are cheap to share (`Arc<dyn ChatBackend>`) and safe to call concurrently.
#[async_trait]
pub trait ChatBackend: Send + Sync + 'static {
    /// Starts a chat: the customer logs in and joins. Replies with the backend's own
    /// credentials for the chat and the transcript so far.
    async fn create(&self, chat: NewChat) -> Result<ChatCreated, BackendError>;

    /// Runs one action on an existing chat and returns the transcript from the requested
    /// position (the flex protocol's "refresh").
    async fn refresh(&self, chat: &ChatRef, request: Refresh) -> Result<ChatUpdate, BackendError>;

    /// Waits for the chat's transcript to reach `from` (the push channels' long poll, see
    /// `docs/push.md`). Answers as a Get Messages from `from` would, as soon as that has an
    /// event or the chat has ended; at once when `from` is past the transcript's end
    /// (`next_position < from`: the caller's position is not this chat's); else after
    /// `wait`, with no events. It changes nothing but what a poll changes (the customer's
    /// activity), so it may be sent again anywhere.
    ///
    /// The default reads the chat every [`WATCH_POLL_EVERY`] ([`watch_by_polling`]);
    /// adapters with events at the source override it and answer when the event happens.
    async fn watch(
        &self,
        chat: &ChatRef,
        from: u64,
        wait: Duration,
    ) -> Result<ChatUpdate, BackendError> {
        watch_by_polling(self, chat, from, wait, WATCH_POLL_EVERY).await
    }

    /// Takes over a chat whose instance died, from the shared store, keeping its ids and
    /// transcript. Instances without a shared store answer [`BackendError::Unsupported`].
    async fn restore(&self, chat: &ChatRef) -> Result<(), BackendError> {
        let _ = chat;
        Err(BackendError::Unsupported("restore"))
    }

    /// The file-transfer rules of a chat and what it has used of them.
    async fn file_limits(&self, chat: &ChatRef) -> Result<FileLimits, BackendError> {
        let _ = chat;
        Err(BackendError::Unsupported("file transfer"))
    }

    /// Stores a file the customer uploads (a `FileUploaded` event records it) and returns
    /// its id.
    async fn upload_file(&self, chat: &ChatRef, file: NewFile) -> Result<String, BackendError> {
        let _ = (chat, file);
        Err(BackendError::Unsupported("file transfer"))
    }

    /// A file of the chat, by id.
    async fn download_file(
        &self,
        chat: &ChatRef,
        file_id: &str,
    ) -> Result<FileContent, BackendError> {
        let _ = (chat, file_id);
        Err(BackendError::Unsupported("file transfer"))
    }

    /// Deletes a file of the chat (a `FileDeleted` event records it).
    async fn delete_file(&self, chat: &ChatRef, file_id: &str) -> Result<(), BackendError> {
        let _ = (chat, file_id);
        Err(BackendError::Unsupported("file transfer"))
    }

    /// Asks the instance whether it is alive and what its load is: the gateway's active health
    /// check. The default reports the cached [`ChatBackend::load`] (an in-process backend is
    /// as alive as the gateway); adapters that cross a network make a real call.
    async fn check(&self) -> Result<Load, BackendError> {
        Ok(self.load())
    }

    /// What this instance last said about its load. Never does I/O: the router calls it on
    /// every new chat.
    fn load(&self) -> Load;
}

/// [`ChatBackend::watch`] by reading the chat every `every` until it has an event from
/// `from`, has ended, `from` is past its end, or `wait` is over: the trait's default (every
/// [`WATCH_POLL_EVERY`]), and what an adapter without events at the source uses with its own
/// interval (the `http` adapter's `watch_poll_ms`, the `tcp` adapter towards a chat server
/// without protocol version 3).
pub async fn watch_by_polling<B: ChatBackend + ?Sized>(
    backend: &B,
    chat: &ChatRef,
    from: u64,
    wait: Duration,
    every: Duration,
) -> Result<ChatUpdate, BackendError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let read = Refresh {
            action: Action::Poll,
            transcript: Transcript::From(from),
            details: false,
        };
        let update = backend.refresh(chat, read).await?;
        let now = tokio::time::Instant::now();
        if !update.messages.is_empty()
            || update.chat_ended
            || update.next_position < from
            || now + every >= deadline
        {
            return Ok(update);
        }
        tokio::time::sleep(every).await;
    }
}

/// An instance's load as last known: used to place new chats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Load {
    /// Chats open on the instance.
    pub active: u64,
    /// The most chats it takes (its session limit).
    pub limit: u64,
    /// False when the instance refuses new chats (full, or shutting down).
    pub accepting: bool,
}
