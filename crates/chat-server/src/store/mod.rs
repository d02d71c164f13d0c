//! The shared store: chats saved to Redis so another instance can restore them.
//!
//! Owns the key layout (one key per chat, `chat:<chatId>`, and on a Redis Cluster
//! `chat:{<chatId>}`, the chat id as the key's hash tag, so that every key of one chat lives
//! in one slot; a hash: `version`, the number of saves, and `record`, the chat's
//! `ChatRecord` as JSON; expiring once the chat could no longer be used), the fencing rule
//! (a save succeeds only over the version its saver holds, checked and written by one Lua
//! script, `EVAL`, in one round trip), the replication a save waits for before it counts
//! (`WAIT`), the topology the store URL names (one server, Sentinel, Cluster: `topology`,
//! `sentinel`), and the bounds on how long a store operation and a reconnect may take. It
//! must not decide what a failed save means for the client: the dispatcher does.

mod sentinel;
mod topology;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chat_engine::ChatRecord;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use thiserror::Error;

use sentinel::SentinelConnection;
pub use topology::Topology;

/// Compare and set: writes `record` as version `ARGV[1] + 1` only if the stored version is
/// `ARGV[1]`. A missing key is accepted too: a new chat, or a store that lost its data
/// (restarted without persistence), where the saver's copy is the best there is. Returns the
/// stored version when it refuses. It touches only `KEYS[1]`, so on a cluster it runs on the
/// master of that key's slot.
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
    /// Bound on one connection attempt (a Redis host that drops packets instead of refusing),
    /// and on finding the master again through Sentinel.
    pub connect_timeout: Duration,
    /// Replicas that must have a save (`WAIT`) before it counts as saved; 0: the master's
    /// answer is enough.
    pub replicas_ack: u32,
    /// How long a save waits for those replicas; fewer in time and the save fails.
    pub replicas_ack_timeout: Duration,
}

/// A connection to whichever topology the URL names. Each one multiplexes and reconnects
/// (or rediscovers) by itself; more than one is kept only for `WAIT` ([`WAIT_CONNECTIONS`]).
#[derive(Clone)]
enum Redis {
    Single(ConnectionManager),
    Sentinel(SentinelConnection),
    Cluster(ClusterConnection),
}

/// Connections a store keeps when saves wait for replicas. Redis holds back every later
/// command of a connection blocked in `WAIT` until the replicas answer, so on one
/// connection saves would go one master-to-replica round trip at a time; this many go side
/// by side. (Without `WAIT` one multiplexed connection pipelines everything.)
const WAIT_CONNECTIONS: usize = 8;

/// The shared store, cloned into every connection task.
#[derive(Clone)]
pub struct Store {
    /// One connection (or cluster connection) per entry, used in turn.
    pool: Arc<[Redis]>,
    next: Arc<AtomicUsize>,
    settings: StoreSettings,
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store error: {0}")]
    Redis(#[from] RedisError),
    #[error("store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("saved chat is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// Another instance saved the chat since this one's copy (fencing): nothing was written.
    #[error("a newer version ({stored}) of the chat was saved by another instance")]
    Newer { stored: String },
    /// The master wrote the save but fewer replicas than `store_replicas_ack` confirmed it in
    /// time: a failover now could lose it, so it is not acknowledged.
    #[error("the save reached {acked} of the {wanted} replicas required within {timeout:?}")]
    NotReplicated {
        acked: i64,
        wanted: u32,
        timeout: Duration,
    },
    #[error("the store URL is not valid: {0}")]
    Url(&'static str),
}

/// One store call's connection, whichever the topology.
enum Conn {
    Single(ConnectionManager),
    Master(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    /// The chat's key on this topology.
    fn key(&self, chat_id: &str) -> String {
        key(chat_id, matches!(self, Conn::Cluster(_)))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Master(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Master(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Master(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The chat's key. On a cluster the chat id is its hash tag: any key a chat ever has beside
/// this one must carry the same tag, so that one script can touch them all. On one Redis
/// and on Sentinel there are no slots, and the key stays as chat servers before clusters
/// wrote it, so that during a rolling upgrade every version reads every chat.
fn key(chat_id: &str, cluster: bool) -> String {
    if cluster {
        format!("chat:{{{chat_id}}}")
    } else {
        format!("chat:{chat_id}")
    }
}

impl Store {
    /// Connects once (on Sentinel: finds the master); after a failure each topology
    /// reconnects on a later call, one attempt bounded by `connect_timeout`.
    pub async fn connect(url: &str, settings: StoreSettings) -> Result<Store, StoreError> {
        let topology = Topology::parse(url).map_err(StoreError::Url)?;
        let connections = if settings.replicas_ack > 0 {
            WAIT_CONNECTIONS
        } else {
            1
        };
        let mut pool = Vec::with_capacity(connections);
        for _ in 0..connections {
            pool.push(Self::connect_one(&topology, &settings).await?);
        }
        Ok(Store {
            pool: pool.into(),
            next: Arc::default(),
            settings,
        })
    }

    async fn connect_one(
        topology: &Topology,
        settings: &StoreSettings,
    ) -> Result<Redis, StoreError> {
        let timeout = settings.timeout.max(settings.connect_timeout);
        Ok(match topology {
            Topology::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                // The defaults (6 retries, delays from 1 s multiplied by 100 each time, no
                // cap) made one reconnect outlast a 10 s Redis outage by minutes, every call
                // waiting on it. Here a reconnect is a single attempt bounded by
                // `connect_timeout`: while Redis is away each call fails at once (statusCode
                // 1), and the first call after it returns reconnects. The pace of attempts is
                // the pace of calls, never more than one at a time (calls share the
                // reconnect in progress).
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(settings.connect_timeout)
                    .set_response_timeout(settings.timeout)
                    .set_number_of_retries(0);
                let manager = ConnectionManager::new_with_config(client, config);
                Redis::Single(
                    tokio::time::timeout(timeout, manager)
                        .await
                        .map_err(|_| StoreError::Timeout(timeout))??,
                )
            }
            Topology::Sentinel {
                sentinels,
                master,
                node,
            } => {
                let node = node
                    .as_deref()
                    .map(Topology::node_info)
                    .transpose()
                    .map_err(StoreError::Url)?;
                let connection = SentinelConnection::new(
                    sentinels,
                    master,
                    node,
                    settings.timeout,
                    settings.connect_timeout,
                )?;
                connection.get().await?;
                Redis::Sentinel(connection)
            }
            Topology::Cluster { nodes } => {
                // The cluster connection follows MOVED / ASK and refreshes its slot map
                // after a failover by itself, retrying a command a few times, quickly; every
                // store call stays bounded by `timeout` around it.
                let client = redis::cluster::ClusterClient::builder(nodes.clone())
                    .connection_timeout(settings.connect_timeout)
                    .response_timeout(settings.timeout)
                    .retries(16)
                    .min_retry_wait(10)
                    .max_retry_wait(250)
                    .build()?;
                Redis::Cluster(
                    tokio::time::timeout(timeout, client.get_async_connection())
                        .await
                        .map_err(|_| StoreError::Timeout(timeout))??,
                )
            }
        })
    }

    /// Runs `op` on the topology's connection within the store timeout. On Sentinel a
    /// failure (of any kind: a dead master, a demoted one answering `READONLY`, a timeout)
    /// forgets the connection, so the next call asks the Sentinels where the master is now;
    /// and when the connection in use turns out broken (the master it led to died since its
    /// last call), `op` runs once more on a master found afresh, within the same bound. A
    /// save run twice is safe: the second run of one already written is refused by the
    /// version check (the chat is reported moved, and restored), never written twice.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let timeout = self.settings.timeout;
        let bounded = async {
            let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
            match &self.pool[turn] {
                Redis::Single(manager) => op(Conn::Single(manager.clone())).await,
                Redis::Cluster(cluster) => op(Conn::Cluster(cluster.clone())).await,
                Redis::Sentinel(sentinel) => {
                    let mut attempts = 0;
                    loop {
                        attempts += 1;
                        let (generation, connection, fresh) = sentinel.get().await?;
                        let result = op(Conn::Master(connection)).await;
                        let Err(error) = &result else { return result };
                        if matches!(error, StoreError::Newer { .. }) {
                            return result;
                        }
                        sentinel.forget(generation).await;
                        let broken = matches!(error, StoreError::Redis(e)
                            if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal());
                        if fresh || !broken || attempts > 1 {
                            return result;
                        }
                    }
                }
            }
        };
        tokio::time::timeout(timeout, bounded)
            .await
            .map_err(|_| StoreError::Timeout(timeout))?
    }

    /// Saves a chat's record as version `held + 1`, only if the store still holds version
    /// `held` (or nothing): else [`StoreError::Newer`] and nothing is written. With
    /// `replicas_ack` above 0 the save counts only once that many replicas have it
    /// ([`StoreError::NotReplicated`] otherwise: written on the master, not acknowledged).
    pub async fn save(&self, record: &ChatRecord, held: u64) -> Result<(), StoreError> {
        let json = serde_json::to_string(record)?;
        let ttl_ms = self.settings.ttl.as_millis() as u64;
        let wanted = self.settings.replicas_ack;
        let ack_timeout = self.settings.replicas_ack_timeout;
        let json = &json;
        let (saved, stored) = self
            .run(|mut conn: Conn| async move {
                let redis = &mut conn;
                // EVAL: the script is a few hundred bytes, and sending it with each save
                // spares the NOSCRIPT dance of EVALSHA after Redis restarts or fails over.
                let mut eval = redis::cmd("EVAL");
                eval.arg(SAVE_IF_VERSION)
                    .arg(1)
                    .arg(redis.key(&record.chat_id))
                    .arg(held)
                    .arg(json)
                    .arg(ttl_ms);
                if wanted == 0 {
                    return Ok(eval.query_async::<(u8, String)>(redis).await?);
                }
                // One round trip on the connection that wrote (WAIT counts the replicas that
                // have this connection's writes); on a cluster the pipeline goes to the
                // master of the key's slot.
                let mut pipe = redis::pipe();
                pipe.add_command(eval)
                    .cmd("WAIT")
                    .arg(wanted)
                    .arg(ack_timeout.as_millis() as u64);
                let ((saved, stored), acked) =
                    pipe.query_async::<((u8, String), i64)>(redis).await?;
                if saved == 1 && acked < i64::from(wanted) {
                    return Err(StoreError::NotReplicated {
                        acked,
                        wanted,
                        timeout: ack_timeout,
                    });
                }
                Ok((saved, stored))
            })
            .await?;
        if saved == 1 {
            Ok(())
        } else {
            Err(StoreError::Newer { stored })
        }
    }

    /// The saved record of a chat, if the store has one, with its version.
    pub async fn load(&self, chat_id: &str) -> Result<Option<ChatRecord>, StoreError> {
        let found = self
            .run(|mut redis: Conn| async move {
                let mut hmget = redis::cmd("HMGET");
                hmget.arg(redis.key(chat_id)).arg("version").arg("record");
                Ok(hmget
                    .query_async::<(Option<u64>, Option<String>)>(&mut redis)
                    .await?)
            })
            .await?;
        let (version, Some(json)) = found else {
            return Ok(None);
        };
        let mut record: ChatRecord = serde_json::from_str(&json)?;
        record.version = version.unwrap_or(0);
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    use super::key;

    #[test]
    fn a_chat_has_one_key_tagged_with_its_id_on_a_cluster() {
        assert_eq!(key("Ab12", true), "chat:{Ab12}");
        assert_eq!(key("Ab12", false), "chat:Ab12");
    }
}
