//! A connection to the master a set of Redis Sentinels names, found again after a failover.
//!
//! Owns asking the Sentinels where the master is, the one multiplexed connection to it, and
//! forgetting that connection when a call on it fails (the master died, was demoted, or the
//! link broke), so the next call asks the Sentinels again. It must not retry a command (the
//! store's caller decides what a failure means) and must not wait longer than the store's
//! connect timeout for a rediscovery.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, RedisError};
use tokio::sync::Mutex;

use super::StoreError;

/// The Sentinels, the master's name, and the connection to the master found last.
#[derive(Clone)]
pub struct SentinelConnection {
    inner: Arc<Inner>,
}

struct Inner {
    client: Mutex<SentinelClient>,
    /// The connection in use and its generation: a failure forgets it only if no newer one
    /// replaced it meanwhile. Held while (re)discovering, so concurrent calls share one
    /// discovery instead of each asking the Sentinels.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    config: AsyncConnectionConfig,
    connect_timeout: Duration,
}

impl SentinelConnection {
    /// Nothing is contacted yet: [`SentinelConnection::get`] discovers the master.
    pub fn new(
        sentinels: &[String],
        master: &str,
        node: Option<redis::ConnectionInfo>,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<SentinelConnection, RedisError> {
        let sentinels: Vec<String> = sentinels.iter().map(|s| format!("redis://{s}")).collect();
        let node = SentinelNodeConnectionInfo {
            tls_mode: None,
            redis_connection_info: node.map(|info| info.redis),
        };
        let client = SentinelClient::build(
            sentinels,
            master.to_owned(),
            Some(node),
            SentinelServerType::Master,
        )?;
        Ok(SentinelConnection {
            inner: Arc::new(Inner {
                client: Mutex::new(client),
                current: Mutex::new(None),
                generation: AtomicU64::new(0),
                config: AsyncConnectionConfig::new()
                    .set_connection_timeout(connect_timeout)
                    .set_response_timeout(timeout),
                connect_timeout,
            }),
        })
    }

    /// The connection to the master, discovered through the Sentinels if there is none: one
    /// attempt (Sentinels asked in order, the master's role checked, a connection opened),
    /// bounded by the connect timeout. Says whether the connection is new (`true`) or the
    /// one in use (which may have broken since its last call).
    pub async fn get(&self) -> Result<(u64, MultiplexedConnection, bool), StoreError> {
        let mut current = self.inner.current.lock().await;
        if let Some((generation, connection)) = &*current {
            return Ok((*generation, connection.clone(), false));
        }
        let discover = async {
            let client = self.inner.client.lock().await.async_get_client().await?;
            client
                .get_multiplexed_async_connection_with_config(&self.inner.config)
                .await
        };
        let timeout = self.inner.connect_timeout;
        let connection = tokio::time::timeout(timeout, discover)
            .await
            .map_err(|_| StoreError::Timeout(timeout))??;
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *current = Some((generation, connection.clone()));
        Ok((generation, connection, true))
    }

    /// A call on connection `generation` failed: the next call asks the Sentinels again
    /// (cheap, and the only way to follow a master that moved without breaking the link,
    /// e.g. one demoted to a replica that answers `READONLY`).
    pub async fn forget(&self, generation: u64) {
        let mut current = self.inner.current.lock().await;
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }
}
