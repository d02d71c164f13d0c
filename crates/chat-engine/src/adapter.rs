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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Behaviour;
    use backend_api::{Action, ParticipantType};
    use std::time::Instant;

    fn send(backend: &MockBackend, chat: &ChatRef, text: &str) {
        let request = Refresh {
            action: Action::SendMessage {
                text: text.into(),
                message_type: None,
            },
            transcript: Transcript::None,
            details: false,
        };
        backend.engine.refresh(chat, request).unwrap();
    }

    /// A watch answers when the event happens, whether another request appends it or it is
    /// the simulated agent's reply falling due, and reads the chat exactly twice (before and
    /// after its wait): no polling. A polling watch (every 500 ms) would read it 5 times in
    /// the agent's 2 s.
    #[tokio::test]
    async fn a_watch_wakes_on_an_appended_event_and_on_a_due_reply_without_polling() {
        let engine = Engine::new(Behaviour {
            agent_join_delay: Duration::ZERO,
            agent_reply_delay: Duration::from_millis(2000),
            ..Behaviour::default()
        });
        let backend = MockBackend::new(Arc::clone(&engine));
        let chat = backend.create(NewChat {
            tenant_name: "Environment".into(),
            nickname: "Ann".into(),
            endpoint: "default".into(),
            ..NewChat::default()
        });
        let chat = chat.await.unwrap().chat;
        // The agent's join is due at once: the first read materialises it.
        let poll = Refresh {
            action: Action::Poll,
            transcript: Transcript::From(1),
            details: false,
        };
        let from = backend.refresh(&chat, poll).await.unwrap().next_position;

        // 1. Another request appends an event while the watch waits.
        let watcher = {
            let (backend, chat) = (backend.clone(), chat.clone());
            tokio::spawn(async move {
                let update = backend.watch(&chat, from, Duration::from_secs(30)).await;
                (update, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let reads_before = engine.requests_seen();
        let sent_at = Instant::now();
        send(&backend, &chat, "hello");
        let (update, answered_at) = watcher.await.unwrap();
        let update = update.unwrap();
        assert_eq!(update.messages.first().map(|e| e.index), Some(from));
        assert_eq!(update.messages[0].text.as_deref(), Some("hello"));
        // The send, and the watch's one read after it woke.
        assert_eq!(engine.requests_seen() - reads_before, 2);
        println!(
            "watch woken by an appended event after {:?}",
            answered_at - sent_at
        );

        // 2. The agent's reply falls due 2 s after the message: nobody else reads the chat.
        let from = update.next_position;
        let reads_before = engine.requests_seen();
        let started = Instant::now();
        let update = backend
            .watch(&chat, from, Duration::from_secs(30))
            .await
            .unwrap();
        let waited = started.elapsed();
        assert_eq!(update.messages.len(), 1, "{update:?}");
        assert_eq!(update.messages[0].from.kind, ParticipantType::Agent);
        assert_eq!(update.messages[0].index, from);
        assert_eq!(engine.requests_seen() - reads_before, 2, "the watch polled");
        assert!(waited >= Duration::from_millis(1500), "{waited:?}");
        println!("watch woken by the agent's reply due in 2 s after {waited:?}");

        // 3. Nothing happens: answered empty when the wait is over, after two reads.
        let from = update.next_position;
        let reads_before = engine.requests_seen();
        let update = backend
            .watch(&chat, from, Duration::from_millis(1200))
            .await
            .unwrap();
        assert!(update.messages.is_empty());
        assert_eq!(update.next_position, from);
        assert_eq!(engine.requests_seen() - reads_before, 2, "the watch polled");

        // 4. A position past the end, and an ended chat, answer at once.
        let past = backend
            .watch(&chat, from + 5, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(past.next_position, from);
        let watcher = {
            let (backend, chat) = (backend.clone(), chat.clone());
            tokio::spawn(async move { backend.watch(&chat, from, Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let complete = Refresh {
            action: Action::Complete,
            transcript: Transcript::None,
            details: false,
        };
        backend.refresh(&chat, complete).await.unwrap();
        assert!(watcher.await.unwrap().unwrap().chat_ended);
    }

    /// A held watch is the customer's presence: a watch longer than the disconnect timeout
    /// keeps the chat open (it reads the chat halfway to the timeout), where the same wait
    /// without a watch ends it.
    #[tokio::test]
    async fn a_held_watch_keeps_its_chat_from_ending_as_idle() {
        let engine = Engine::new(Behaviour {
            agent_join_delay: Duration::ZERO,
            disconnect_timeout: Duration::from_millis(1000),
            ..Behaviour::default()
        });
        engine.spawn_sweeper(Duration::from_millis(50));
        let backend = MockBackend::new(Arc::clone(&engine));
        let new_chat = || NewChat {
            tenant_name: "Environment".into(),
            nickname: "Ann".into(),
            endpoint: "default".into(),
            ..NewChat::default()
        };
        let watched = backend.create(new_chat()).await.unwrap().chat;
        let idle = backend.create(new_chat()).await.unwrap().chat;
        let poll = || Refresh {
            action: backend_api::Action::Poll,
            transcript: Transcript::From(1),
            details: false,
        };
        let from = backend
            .refresh(&watched, poll())
            .await
            .unwrap()
            .next_position;
        let reads_before = engine.requests_seen();
        let update = backend
            .watch(&watched, from, Duration::from_millis(2500))
            .await
            .unwrap();
        assert!(!update.chat_ended, "the chat ended under a held watch");
        let reads = engine.requests_seen() - reads_before;
        // A read about every half second (the keep-alive), not a poll every few ms.
        assert!((4..=8).contains(&reads), "{reads} reads");
        assert!(
            backend.refresh(&idle, poll()).await.unwrap().chat_ended,
            "the unwatched chat did not end: the test proves nothing"
        );
    }

    /// A watcher of a chat that is discarded (the chat server's stale copy dropped) wakes
    /// and hears that the chat is not here.
    #[tokio::test]
    async fn a_discarded_chat_wakes_its_watchers() {
        let engine = Engine::new(Behaviour::default());
        let backend = MockBackend::new(Arc::clone(&engine));
        let created = backend
            .create(NewChat {
                tenant_name: "Environment".into(),
                nickname: "Ann".into(),
                endpoint: "default".into(),
                ..NewChat::default()
            })
            .await
            .unwrap();
        let watcher = {
            let (backend, chat) = (backend.clone(), created.chat.clone());
            let from = created.next_position;
            tokio::spawn(async move { backend.watch(&chat, from, Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        engine.discard(&created.chat.chat_id);
        let answer = tokio::time::timeout(Duration::from_secs(10), watcher)
            .await
            .expect("the watcher was not woken")
            .unwrap();
        assert_eq!(answer.unwrap_err(), BackendError::UnknownChat);
    }
}
