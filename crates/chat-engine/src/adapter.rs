//! [`MockBackend`]: the embedded engine behind the adapter trait.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backend_api::{
    BackendError, ChatBackend, ChatCreated, ChatRef, ChatUpdate, FileContent, FileLimits, Load,
    NewChat, NewFile, Refresh, Transcript,
};

use crate::Engine;

/// An in-process chat instance. Requests never leave the process, so it never answers
/// statusCode 1 except at its session limit. Its chats live in this process only: another
/// gateway replica's mock has other chats, and its `watch` hears only this process's events.
#[derive(Clone)]
pub struct MockBackend {
    engine: Arc<Engine>,
}

impl MockBackend {
    pub fn new(engine: Arc<Engine>) -> MockBackend {
        MockBackend { engine }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }
}

#[async_trait]
impl ChatBackend for MockBackend {
    async fn create(&self, chat: NewChat) -> Result<ChatCreated, BackendError> {
        self.engine.create(chat)
    }

    async fn refresh(&self, chat: &ChatRef, request: Refresh) -> Result<ChatUpdate, BackendError> {
        self.engine.refresh(chat, request)
    }

    /// Answers when the event happens: one read, then a wait on the chat's bell or its next
    /// scheduled event's due time (`Engine::wait_for_change`), then one read again. No
    /// polling: a chat nothing happens to is read once at the start and once at the end.
    async fn watch(
        &self,
        chat: &ChatRef,
        from: u64,
        wait: Duration,
    ) -> Result<ChatUpdate, BackendError> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let read = Refresh {
                action: backend_api::Action::Poll,
                transcript: Transcript::From(from),
                details: false,
            };
            let update = self.engine.refresh(chat, read)?;
            if !update.messages.is_empty()
                || update.chat_ended
                || update.next_position < from
                || tokio::time::Instant::now() >= until
            {
                return Ok(update);
            }
            self.engine
                .wait_for_change(&chat.chat_id, update.next_position, until)
                .await;
        }
    }

    async fn file_limits(&self, chat: &ChatRef) -> Result<FileLimits, BackendError> {
        self.engine.file_limits(chat)
    }

    async fn upload_file(&self, chat: &ChatRef, file: NewFile) -> Result<String, BackendError> {
        self.engine.upload_file(chat, file)
    }

    async fn download_file(
        &self,
        chat: &ChatRef,
        file_id: &str,
    ) -> Result<FileContent, BackendError> {
        self.engine.download_file(chat, file_id)
    }

    async fn delete_file(&self, chat: &ChatRef, file_id: &str) -> Result<(), BackendError> {
        self.engine.delete_file(chat, file_id)
    }

    fn load(&self) -> Load {
        self.engine.load()
    }
}
