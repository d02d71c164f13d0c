//! The shared store: chats saved to Redis so another instance can restore them.
//!
//! Owns the key layout (`chat:{chatId}` → the chat's `ChatRecord` as JSON, expiring once the
//! chat could no longer be used) and the bound on how long a store operation may take. It must
//! not decide what a failed save means for the client: the dispatcher does.

use std::time::Duration;

use chat_engine::ChatRecord;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use thiserror::Error;

/// A Redis connection shared by every connection task. `ConnectionManager` multiplexes one
/// connection and reconnects by itself, so the store needs no pool of its own.
#[derive(Clone)]
pub struct Store {
    redis: ConnectionManager,
    /// How long a saved chat is kept after its last save: the disconnect timeout (after which
    /// the chat has ended anyway) plus the retention of an ended chat. Every accepted event
    /// saves again, so an active chat never expires.
    ttl: Duration,
    /// Bound on one store operation, so a stalled Redis fails calls instead of hanging them.
    timeout: Duration,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("saved chat is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
}

fn key(chat_id: &str) -> String {
    format!("chat:{chat_id}")
}

impl Store {
    /// Connects once; later failures are retried by the connection manager.
    pub async fn connect(url: &str, ttl: Duration, timeout: Duration) -> Result<Store, StoreError> {
        let client = redis::Client::open(url)?;
        let redis = tokio::time::timeout(timeout, ConnectionManager::new(client))
            .await
            .map_err(|_| StoreError::Timeout(timeout))??;
        Ok(Store {
            redis,
            ttl,
            timeout,
        })
    }

    /// Saves a chat's record, already serialised (the caller serialises under the chat's lock
    /// so it saves exactly the state it acknowledges).
    pub async fn save(&self, chat_id: &str, record_json: String) -> Result<(), StoreError> {
        let mut redis = self.redis.clone();
        let ttl_ms = self.ttl.as_millis() as u64;
        let op = redis.pset_ex::<_, _, ()>(key(chat_id), record_json, ttl_ms);
        tokio::time::timeout(self.timeout, op)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))??;
        Ok(())
    }

    /// The saved record of a chat, if the store has one.
    pub async fn load(&self, chat_id: &str) -> Result<Option<ChatRecord>, StoreError> {
        let mut redis = self.redis.clone();
        let op = redis.get::<_, Option<String>>(key(chat_id));
        let json = tokio::time::timeout(self.timeout, op)
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))??;
        Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
    }
}
