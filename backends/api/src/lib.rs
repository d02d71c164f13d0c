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
pub mod request_id;

pub use chat::*;
pub use error::BackendError;

use async_trait::async_trait;

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

    /// Takes over a chat whose instance died, from the shared store, keeping its ids and
    /// transcript. Instances without a shared store answer [`BackendError::Unsupported`].
    async fn restore(&self, chat: &ChatRef) -> Result<(), BackendError> {
        let _ = chat;
        Err(BackendError::Unsupported("restore"))
    }

    /// What this instance last said about its load. Never does I/O: the router calls it on
    /// every new chat.
    fn load(&self) -> Load;
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
