//! What the server does for each call: the engine for the chat behaviour, then the store, then
//! the answer.
//!
//! Owns the rule that makes restore possible: with a store, a call is applied to a copy of the
//! chat, saved over the version this instance holds (fencing), and only then made live and
//! acknowledged; a refused save means the chat moved, and the stale copy is dropped. It must
//! not touch sockets or frames (the connection does) and must not re-implement chat behaviour
//! (the shared `Engine` does).

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backend_api::{Action, BackendError, ChatRef, Refresh};
use chat_engine::Engine;
use chat_protocol::{
    transcript_from_position, Answer, Call, ErrorCode, Restored, Status, WireError,
};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};

/// Lock stripes for saving chats: see [`Server::save_locks`].
const SAVE_STRIPES: usize = 64;

/// What [`Server::at_once`] did with a call.
pub enum AtOnce {
    /// Answered on the caller's task.
    Answered(Result<Answer, WireError>),
    /// The call may wait: run it with [`Server::handle`] on a task of its own.
    MayWait(Call),
}

/// One server instance's state, shared by every connection.
pub struct Server {
    alias: String,
    engine: Arc<Engine>,
    store: Option<Store>,
    /// Two refreshes of one chat finish in the engine in order, but their saves could reach
    /// Redis in the other order and leave the older state saved. Holding the chat's stripe
    /// from the engine call until its save is written keeps saves in engine order; striping
    /// (by chat id hash) avoids a lock table that would need cleaning up.
    save_locks: Box<[Mutex<()>]>,
    hasher: RandomState,
    /// Open client connections, for status.
    connections: AtomicU64,
    /// Set on SIGTERM: no new chats or restores, and status says not accepting.
    shutting_down: AtomicBool,
    /// Cancelled on SIGTERM: held watches answer at once.
    stop_watches: CancellationToken,
    /// The longest a watch is held (`max_watch_wait_ms`).
    max_watch_wait: Duration,
}

impl Server {
    pub fn new(
        alias: String,
        engine: Arc<Engine>,
        store: Option<Store>,
        max_watch_wait: Duration,
    ) -> Server {
        Server {
            alias,
            engine,
            store,
            save_locks: (0..SAVE_STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
            connections: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            stop_watches: CancellationToken::new(),
            max_watch_wait,
        }
    }

    pub fn alias(&self) -> &str {
        &self.alias
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.stop_watches.cancel();
    }

    /// Counts a connection for as long as the guard lives.
    pub fn connection_opened(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(Arc::clone(self))
    }

    pub fn status(&self) -> Status {
        let mut load = self.engine.load();
        load.accepting &= !self.shutting_down.load(Ordering::Acquire);
        Status {
            alias: self.alias.clone(),
            load: load.into(),
            chats: self.engine.len() as u64,
            connections: self.connections.load(Ordering::Relaxed),
            store: self.store.is_some(),
        }
    }

    /// Answers a call that cannot wait, at once, on the caller's task; hands the call back
    /// ([`AtOnce::MayWait`]) when it may wait (a held watch; with a store, every call but `status`, since
    /// each writes or reads the store), and the caller runs it with [`Server::handle`] on a
    /// task of its own. Without a store the engine's calls only take its short locks, so the
    /// connection answers them inline: no task spawned, no hop to a writer.
    pub fn at_once(&self, call: Call) -> AtOnce {
        if let Some(refusal) = self.refused_while_stopping(&call) {
            return AtOnce::Answered(Err(refusal));
        }
        match call {
            Call::Status {} => AtOnce::Answered(Ok(Answer::Status(self.status()))),
            Call::Watch { .. } => AtOnce::MayWait(call),
            call if self.store.is_some() => AtOnce::MayWait(call),
            Call::LoginJoin(new_chat) => AtOnce::Answered(
                self.engine
                    .create(new_chat.into())
                    .map(|created| Answer::Created(created.into()))
                    .map_err(WireError::from),
            ),
            Call::Refresh {
                chat,
                action,
                transcript_position,
                details,
            } => AtOnce::Answered(self.refresh_in_memory(
                &chat.into(),
                action.into(),
                transcript_position,
                details,
            )),
            Call::Logout {
                chat,
                transcript_position,
            } => AtOnce::Answered(self.refresh_in_memory(
                &chat.into(),
                Action::Complete,
                transcript_position,
                false,
            )),
            Call::Restore { .. } => AtOnce::Answered(Err(no_store_to_restore_from())),
        }
    }

    /// New chats and restores are refused once the server is stopping.
    fn refused_while_stopping(&self, call: &Call) -> Option<WireError> {
        let starts_something = matches!(call, Call::LoginJoin(_) | Call::Restore { .. });
        (starts_something && self.shutting_down.load(Ordering::Acquire)).then(|| {
            WireError::new(
                ErrorCode::ShuttingDown,
                format!("chat server {} is shutting down", self.alias),
            )
        })
    }

    /// Runs one call to its answer.
    pub async fn handle(&self, call: Call) -> Result<Answer, WireError> {
        if let Some(refusal) = self.refused_while_stopping(&call) {
            return Err(refusal);
        }
        match call {
            Call::LoginJoin(new_chat) => {
                let created = self.engine.create(new_chat.into())?;
                let chat_id = &created.chat.chat_id;
                if let Some(store) = &self.store {
                    let mut record = self
                        .engine
                        .snapshot(chat_id)
                        .ok_or(BackendError::UnknownChat)?;
                    record.version = 1;
                    if let Err(e) = store.save(&record, 0).await {
                        // Nobody will learn this chat's credentials: do not leave it behind.
                        self.engine.discard(chat_id);
                        return Err(store_failed(e));
                    }
                    self.engine.publish(record);
                }
                Ok(Answer::Created(created.into()))
            }
            Call::Refresh {
                chat,
                action,
                transcript_position,
                details,
            } => {
                self.refresh(&chat.into(), action.into(), transcript_position, details)
                    .await
            }
            Call::Logout {
                chat,
                transcript_position,
            } => {
                self.refresh(&chat.into(), Action::Complete, transcript_position, false)
                    .await
            }
            Call::Status {} => Ok(Answer::Status(self.status())),
            Call::Restore { chat } => self.restore(&chat.into()).await,
            Call::Watch {
                chat,
                transcript_position,
                wait_ms,
            } => {
                let wait = Duration::from_millis(wait_ms).min(self.max_watch_wait);
                self.watch(&chat.into(), transcript_position, wait).await
            }
        }
    }

    /// A held watch (protocol version 3): (a) one normal refresh with `poll` from the
    /// position, which with a store is the fenced save (it detects a chat that moved, and
    /// counts as the customer's activity); answered when it has events, the chat ended, or
    /// the position is past the end; else (b) a wait for the chat's bell, its next scheduled
    /// event's due time, the end of `wait`, or shutdown; then (a) once more. Answered with the
    /// last (empty) update when the wait is over or the server shuts down.
    async fn watch(
        &self,
        chat: &ChatRef,
        transcript_position: u64,
        wait: Duration,
    ) -> Result<Answer, WireError> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let answer = self
                .refresh(chat, Action::Poll, transcript_position, false)
                .await?;
            let Answer::Update(update) = &answer else {
                return Ok(answer);
            };
            let over = tokio::time::Instant::now() >= until || self.stop_watches.is_cancelled();
            if !update.messages.is_empty()
                || update.chat_ended
                || update.next_position < transcript_position
                || over
            {
                return Ok(answer);
            }
            let seen = update.next_position;
            tokio::select! {
                _ = self.stop_watches.cancelled() => return Ok(answer),
                _ = self.engine.wait_for_change(&chat.chat_id, seen, until) => {}
            }
        }
    }

    async fn refresh(
        &self,
        chat: &ChatRef,
        action: Action,
        transcript_position: u64,
        details: bool,
    ) -> Result<Answer, WireError> {
        let Some(store) = &self.store else {
            return self.refresh_in_memory(chat, action, transcript_position, details);
        };
        let request = Refresh {
            action,
            transcript: transcript_from_position(transcript_position),
            details,
        };
        let _in_order = self.save_lock(&chat.chat_id).await;
        // Applied to a copy, saved, and only then made live and answered: a failed save
        // leaves the chat as it was.
        let (update, record) = match self.engine.refresh_copy(chat, request) {
            Err(BackendError::UnknownChat) => return Err(self.not_here(store, chat).await),
            other => other?,
        };
        let held = record.version - 1;
        match store.save(&record, held).await {
            Ok(()) => {
                self.engine.publish(record);
                Ok(Answer::Update(update.into()))
            }
            Err(StoreError::Newer { stored }) => {
                // Another instance carried the chat on while this one was frozen or cut
                // off: this copy is stale. Drop it, so the next restore here loads the
                // store's; the gateway restores the chat and runs the request again.
                self.engine.discard(&chat.chat_id);
                tracing::warn!(chat_id = %chat.chat_id, alias = %self.alias, held, %stored,
                    "save refused: the chat moved; local copy dropped");
                Err(WireError::from(BackendError::Moved(format!(
                    "chat server {} held version {held}, the store has {stored}",
                    self.alias
                ))))
            }
            Err(e) => Err(store_failed(e)),
        }
    }

    /// A refresh without a store: the engine's call alone, which never waits.
    fn refresh_in_memory(
        &self,
        chat: &ChatRef,
        action: Action,
        transcript_position: u64,
        details: bool,
    ) -> Result<Answer, WireError> {
        let request = Refresh {
            action,
            transcript: transcript_from_position(transcript_position),
            details,
        };
        Ok(Answer::Update(self.engine.refresh(chat, request)?.into()))
    }

    /// The answer for a chat this instance does not hold: `moved` when the store has it (it
    /// lives on elsewhere, or this instance dropped a stale copy), so the gateway restores it
    /// instead of telling the client it is gone; else `unknownChat`.
    async fn not_here(&self, store: &Store, chat: &ChatRef) -> WireError {
        match store.load(&chat.chat_id).await {
            Ok(Some(record)) => match record.check_credentials(chat) {
                Ok(()) => WireError::from(BackendError::Moved(format!(
                    "chat server {} does not hold the chat; the store does",
                    self.alias
                ))),
                Err(e) => e.into(),
            },
            Ok(None) => BackendError::UnknownChat.into(),
            Err(e) => store_failed(e),
        }
    }

    /// The lock stripe of a chat: held from the engine call until its save is written.
    async fn save_lock(&self, chat_id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = self.hasher.hash_one(chat_id) as usize % SAVE_STRIPES;
        self.save_locks[stripe].lock().await
    }

    /// Takes over a chat from the store. Always loads the store's record, which replaces any
    /// copy here (the store's is never older: a copy here is made live only once saved). A
    /// chat the store does not have (it lost its data) is served from a copy here if any.
    async fn restore(&self, chat: &ChatRef) -> Result<Answer, WireError> {
        let Some(store) = &self.store else {
            return Err(no_store_to_restore_from());
        };
        // Two restores of one chat at once, or a restore and a save, must not interleave.
        let _one_at_a_time = self.save_lock(&chat.chat_id).await;
        match store.load(&chat.chat_id).await.map_err(store_failed)? {
            Some(record) => {
                record.check_credentials(chat)?;
                let version = record.version;
                self.engine.adopt(record)?;
                tracing::info!(chat_id = %chat.chat_id, alias = %self.alias, version,
                    "chat restored from the store");
            }
            None if self.engine.snapshot(&chat.chat_id).is_some() => {}
            None => return Err(BackendError::UnknownChat.into()),
        }
        let record = self
            .engine
            .snapshot(&chat.chat_id)
            .ok_or(BackendError::UnknownChat)?;
        record.check_credentials(chat)?;
        Ok(Answer::Restored(Restored {
            alias: self.alias.clone(),
            next_position: record.next_position(),
            chat_ended: record.is_ended(),
        }))
    }
}

fn no_store_to_restore_from() -> WireError {
    WireError::new(
        ErrorCode::Unsupported,
        "restore needs a shared store (--store)",
    )
}

/// The call failed because the store did: nothing was applied (the engine's copy was dropped
/// unsaved), so the client may retry here at once.
fn store_failed(error: StoreError) -> WireError {
    tracing::warn!(%error, "shared store failed");
    WireError::new(ErrorCode::StoreUnavailable, error.to_string())
}

/// Decrements the connection count when dropped.
pub struct ConnectionGuard(Arc<Server>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}
