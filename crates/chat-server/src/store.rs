//! The shared store: chats saved to Redis so another instance can restore them.
//!
//! Owns the key layout (`chat:{chatId}`, a hash: `version`, the number of saves, and
//! `record`, the chat's `ChatRecord` as JSON; expiring once the chat could no longer be used),
//! the fencing rule (a save succeeds only over the version its saver holds, checked and
//! written by one Lua script, `EVAL`, in one round trip), and the bounds on how long a store operation
//! and a reconnect may take. It must not decide what a failed save means for the client: the
//! dispatcher does.

use std::time::Duration;

use chat_engine::ChatRecord;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use thiserror::Error;

/// Compare and set: writes `record` as version `ARGV[1] + 1` only if the stored version is
/// `ARGV[1]`. A missing key is accepted too: a new chat, or a store that lost its data
/// (restarted without persistence), where the saver's copy is the best there is. Returns the
/// stored version when it refuses.
const SAVE_IF_VERSION: &str = r"
local stored = redis.call('HGET', KEYS[1], 'version')
if stored and stored ~= ARGV[1] then
  return {0, stored}
end
redis.call('HSET', KEYS[1], 'version', tostring(tonumber(ARGV[1]) + 1), 'record', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, ''}
";

/// How the store connects and how long it waits: see the chat server's `store_*` settings.
#[derive(Clone, Debug)]
pub struct StoreSettings {
    /// How long a saved chat is kept after its last save: the disconnect timeout (after which
    /// the chat has ended anyway) plus the retention of an ended chat. Every accepted event
    /// saves again, so an active chat never expires.
    pub ttl: Duration,
    /// Bound on one store operation (and Redis's own response timeout), so a stalled Redis
    /// fails calls instead of hanging them.
    pub timeout: Duration,
    /// Bound on one connection attempt (a Redis host that drops packets instead of refusing).
    pub connect_timeout: Duration,
}

/// A Redis connection shared by every connection task. `ConnectionManager` multiplexes one
/// connection and reconnects by itself, so the store needs no pool of its own.
#[derive(Clone)]
pub struct Store {
    redis: ConnectionManager,
    settings: StoreSettings,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("saved chat is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// Another instance saved the chat since this one's copy (fencing): nothing was written.
    #[error("a newer version ({stored}) of the chat was saved by another instance")]
    Newer { stored: String },
}

fn key(chat_id: &str) -> String {
    format!("chat:{chat_id}")
}

impl Store {
    /// Connects once; after a failure the connection manager reconnects on the next call,
    /// one attempt bounded by `connect_timeout`.
    pub async fn connect(url: &str, settings: StoreSettings) -> Result<Store, StoreError> {
        let client = redis::Client::open(url)?;
        // The defaults (6 retries, delays from 1 s multiplied by 100 each time, no cap) made
        // one reconnect outlast a 10 s Redis outage by minutes, every call waiting on it.
        // Here a reconnect is a single attempt bounded by `connect_timeout`: while Redis is
        // away each call fails at once (statusCode 1), and the first call after it returns
        // reconnects. The pace of attempts is the pace of calls, never more than one at a
        // time (calls share the reconnect in progress).
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(settings.connect_timeout)
            .set_response_timeout(settings.timeout)
            .set_number_of_retries(0);
        let timeout = settings.timeout.max(settings.connect_timeout);
        let redis =
            tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, config))
                .await
                .map_err(|_| StoreError::Timeout(timeout))??;
        Ok(Store { redis, settings })
    }

    /// Saves a chat's record as version `held + 1`, only if the store still holds version
    /// `held` (or nothing): else [`StoreError::Newer`] and nothing is written.
    pub async fn save(&self, record: &ChatRecord, held: u64) -> Result<(), StoreError> {
        let json = serde_json::to_string(record)?;
        let mut redis = self.redis.clone();
        let ttl_ms = self.settings.ttl.as_millis() as u64;
        // EVAL: the script is a few hundred bytes, and sending it with each save spares the
        // NOSCRIPT dance of EVALSHA after Redis restarts.
        let mut eval = redis::cmd("EVAL");
        eval.arg(SAVE_IF_VERSION)
            .arg(1)
            .arg(key(&record.chat_id))
            .arg(held)
            .arg(json)
            .arg(ttl_ms);
        let op = eval.query_async::<(u8, String)>(&mut redis);
        let timeout = self.settings.timeout;
        let (saved, stored) = tokio::time::timeout(timeout, op)
            .await
            .map_err(|_| StoreError::Timeout(timeout))??;
        if saved == 1 {
            Ok(())
        } else {
            Err(StoreError::Newer { stored })
        }
    }

    /// The saved record of a chat, if the store has one, with its version.
    pub async fn load(&self, chat_id: &str) -> Result<Option<ChatRecord>, StoreError> {
        let mut redis = self.redis.clone();
        let mut hmget = redis::cmd("HMGET");
        hmget.arg(key(chat_id)).arg("version").arg("record");
        let op = hmget.query_async::<(Option<u64>, Option<String>)>(&mut redis);
        let timeout = self.settings.timeout;
        let (version, json) = tokio::time::timeout(timeout, op)
            .await
            .map_err(|_| StoreError::Timeout(timeout))??;
        let Some(json) = json else { return Ok(None) };
        let mut record: ChatRecord = serde_json::from_str(&json)?;
        record.version = version.unwrap_or(0);
        Ok(Some(record))
    }
}
