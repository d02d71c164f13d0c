//! [`MockBackend`]: the embedded engine behind the adapter trait.

use std::sync::Arc;

use async_trait::async_trait;
use backend_api::{
    BackendError, ChatBackend, ChatCreated, ChatRef, ChatUpdate, Load, NewChat, Refresh,
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

    fn load(&self) -> Load {
        self.engine.load()
    }
}
