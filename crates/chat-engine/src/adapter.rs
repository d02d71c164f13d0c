//! [`MockBackend`]: the embedded engine behind the adapter trait.

use std::sync::Arc;

use async_trait::async_trait;
use backend_api::{
    BackendError, ChatBackend, ChatCreated, ChatRef, ChatUpdate, FileContent, FileLimits, Load,
    NewChat, NewFile, Refresh,
};

use crate::Engine;

/// An in-process chat instance. Requests never leave the process, so it never answers
/// statusCode 1 except at its session limit.
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
