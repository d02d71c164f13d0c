//! [`TcpBackend`]: one chat-server instance behind the `ChatBackend` trait.
//!
//! Owns the request's life from the gateway's side: the bound on requests in flight (and,
//! apart from it, on held watches), the timeout, and the one mapping of every way a request can end to a `BackendError` (and so to
//! statusCode 1 or 2). It must not retry anything: a caller that may retry decides from
//! `retryable()` / `never_arrived()`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backend_api::{
    watch_by_polling, Action, BackendError, ChatBackend, ChatCreated, ChatRef, ChatUpdate, Load,
    NewChat, Refresh, WATCH_POLL_EVERY,
};
use chat_protocol::{position_of, Answer, Call, Request, Restored, MAX_FRAME_LENGTH, WATCH_SINCE};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::link::{Link, NotSent};
use crate::pool::Pool;
use crate::TcpConfig;

/// A chat-server instance reached over TCP. Creating one starts its connection and status
/// tasks (so it must be created inside a Tokio runtime); dropping it stops them.
pub struct TcpBackend {
    config: TcpConfig,
    pool: Arc<Pool>,
    /// Permits for requests in flight: `try_acquire` so a full instance answers at once with
    /// statusCode 1 instead of building a queue the client would time out in.
    in_flight: Arc<Semaphore>,
    /// Permits for held watches (`max_watches`): apart from `in_flight`, so thousands of open
    /// streams never starve normal requests.
    watches: Semaphore,
    /// Stops the pool's and the poller's tasks when the backend goes away.
    stop: CancellationToken,
}

impl TcpBackend {
    pub fn new(config: TcpConfig) -> TcpBackend {
        let stop = CancellationToken::new();
        let pool = Pool::start(&config, &stop);
        let backend = TcpBackend {
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.get())),
            watches: Semaphore::new(config.max_watches.get()),
            config,
            pool,
            stop,
        };
        backend.spawn_status_poller();
        backend
    }

    /// The alias the instance announced (in its handshake or latest status), if it was ever
    /// reached. The gateway reports its configured alias; a mismatch is worth a warning.
    pub fn server_alias(&self) -> Option<String> {
        self.pool.status().map(|s| s.alias)
    }

    /// Whether at least one connection is up.
    pub fn is_connected(&self) -> bool {
        self.pool.is_connected()
    }

    /// Asks the instance for its status now (the poller does this periodically).
    pub async fn status(&self) -> Result<chat_protocol::Status, BackendError> {
        match call(&self.pool, &self.in_flight, &self.config, Call::Status {}).await? {
            Answer::Status(status) => {
                self.pool.record_status(status.clone());
                Ok(status)
            }
            other => Err(unexpected("status", &other)),
        }
    }

    /// `restore` with the server's full answer: the alias that now hosts the chat and where
    /// its transcript ends.
    pub async fn restore_chat(&self, chat: &ChatRef) -> Result<Restored, BackendError> {
        let call_ = Call::Restore {
            chat: chat.clone().into(),
        };
        match call(&self.pool, &self.in_flight, &self.config, call_).await? {
            Answer::Restored(restored) => {
                tracing::info!(chat_id = %chat.chat_id, alias = %restored.alias, "chat restored");
                Ok(restored)
            }
            other => Err(unexpected("restore", &other)),
        }
    }

    fn spawn_status_poller(&self) {
        let pool = Arc::clone(&self.pool);
        let in_flight = Arc::clone(&self.in_flight);
        let config = self.config.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            // The handshake brought a status already: the first poll is one interval later.
            let first = tokio::time::Instant::now() + config.status_interval;
            let mut tick = tokio::time::interval_at(first, config.status_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if !pool.is_connected() {
                    continue;
                }
                match call(&pool, &in_flight, &config, Call::Status {}).await {
                    Ok(Answer::Status(status)) => pool.record_status(status),
                    Ok(other) => tracing::warn!(answer = ?other, "unexpected answer to status"),
                    // Overloaded here is our own in-flight bound: says nothing about the server.
                    Err(BackendError::Overloaded(_)) => {}
                    Err(error) => {
                        tracing::debug!(%error, address = %config.address, "status failed");
                        pool.mark_unresponsive();
                    }
                }
            }
        });
    }
}

impl Drop for TcpBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Sends one call and waits for its answer, turning every failure into the right error.
async fn call(
    pool: &Pool,
    in_flight: &Semaphore,
    config: &TcpConfig,
    call: Call,
) -> Result<Answer, BackendError> {
    let Ok(_permit) = in_flight.try_acquire() else {
        return Err(BackendError::Overloaded(format!(
            "{} requests already in flight to {}",
            config.max_in_flight, config.address
        )));
    };
    let link = pick(pool, config).await?;
    call_on(&link, config, call, config.request_timeout).await
}

/// A live connection; waits for the first one while the pool is just starting.
async fn pick(pool: &Pool, config: &TcpConfig) -> Result<Arc<Link>, BackendError> {
    match pool.pick() {
        Ok(link) => Ok(link),
        Err(_) => {
            // Just started: the first connection may be on its way.
            pool.settled(config.connect_timeout).await;
            pool.pick()
                .map_err(|e| BackendError::Unreachable(e.to_string()))
        }
    }
}

/// Sends one call on `link` and waits at most `timeout` for its answer.
async fn call_on(
    link: &Link,
    config: &TcpConfig,
    call: Call,
    timeout: Duration,
) -> Result<Answer, BackendError> {
    let name = call.name();
    let trace_id = backend_api::request_id::current().map(|id| id.to_string());
    let sent = link.send(|id| Request { id, call, trace_id }).await;
    let (id, reply) = match sent {
        Ok(sent) => sent,
        Err(NotSent::TooLarge { bytes }) => {
            return Err(BackendError::TooLarge(format!(
                "a {name} request of {bytes} bytes, over the {MAX_FRAME_LENGTH}-byte frame bound"
            )))
        }
        // The connection ended before the frame was queued: it never left this process.
        Err(NotSent::Closed) => {
            return Err(BackendError::Unreachable(format!(
                "connection to {} closed",
                config.address
            )))
        }
    };
    let reply = match tokio::time::timeout(timeout, reply).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(_)) => {
            return Err(BackendError::Interrupted(format!(
                "connection to {} lost while waiting for {name}",
                config.address
            )))
        }
        Err(_) => {
            link.timed_out(id);
            return Err(BackendError::Interrupted(format!(
                "{} did not answer {name} within {timeout:?}",
                config.address
            )));
        }
    };
    match reply.into_result() {
        Some(Ok(answer)) => Ok(answer),
        Some(Err(error)) => Err(error.into_backend_error(name)),
        None => Err(BackendError::Interrupted(format!(
            "{} sent a reply with neither answer nor error",
            config.address
        ))),
    }
}

/// The server answered with the wrong kind of answer: it broke the protocol, so what it did is
/// unknown.
fn unexpected(call: &str, answer: &Answer) -> BackendError {
    BackendError::Interrupted(format!("unexpected answer to {call}: {answer:?}"))
}

#[async_trait]
impl ChatBackend for TcpBackend {
    async fn create(&self, chat: NewChat) -> Result<ChatCreated, BackendError> {
        let call_ = Call::LoginJoin(chat.into());
        match call(&self.pool, &self.in_flight, &self.config, call_).await? {
            Answer::Created(created) => {
                // Counted at once, not at the next status poll: placement between polls
                // would otherwise see a stale figure and pile chats on this instance.
                self.pool.note_created();
                Ok(created.into())
            }
            other => Err(unexpected("loginJoin", &other)),
        }
    }

    async fn refresh(&self, chat: &ChatRef, request: Refresh) -> Result<ChatUpdate, BackendError> {
        let chat = chat.clone().into();
        let transcript_position = position_of(request.transcript);
        // Complete is the flex flow's logout; logout answers without details, so a request
        // that wants them stays a refresh.
        let call_ = match request.action {
            Action::Complete if !request.details => Call::Logout {
                chat,
                transcript_position,
            },
            action => Call::Refresh {
                chat,
                action: action.into(),
                transcript_position,
                details: request.details,
            },
        };
        let name = call_.name();
        match call(&self.pool, &self.in_flight, &self.config, call_).await? {
            Answer::Update(update) => Ok(update.into()),
            other => Err(unexpected(name, &other)),
        }
    }

    /// Protocol version 3's `watch`, held by the chat server until the event happens (or
    /// `wait` is over), with a timeout of `wait` plus the request timeout, under its own
    /// bound (`max_watches`; past it `Overloaded`, statusCode 1). Towards a chat server that
    /// speaks an older version it polls like the trait's default.
    async fn watch(
        &self,
        chat: &ChatRef,
        from: u64,
        wait: Duration,
    ) -> Result<ChatUpdate, BackendError> {
        let link = pick(&self.pool, &self.config).await?;
        if link.version() < WATCH_SINCE {
            drop(link);
            return watch_by_polling(self, chat, from, wait, WATCH_POLL_EVERY).await;
        }
        let Ok(_permit) = self.watches.try_acquire() else {
            return Err(BackendError::Overloaded(format!(
                "{} watches already held on {}",
                self.config.max_watches, self.config.address
            )));
        };
        let call_ = Call::Watch {
            chat: chat.clone().into(),
            transcript_position: from,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        let timeout = wait + self.config.request_timeout;
        match call_on(&link, &self.config, call_, timeout).await? {
            Answer::Update(update) => Ok(update.into()),
            other => Err(unexpected("watch", &other)),
        }
    }

    async fn restore(&self, chat: &ChatRef) -> Result<(), BackendError> {
        self.restore_chat(chat).await.map(drop)
    }

    /// The protocol's `status` call: alive when it answers, with its load.
    async fn check(&self) -> Result<Load, BackendError> {
        self.status().await?;
        Ok(self.load())
    }

    /// The last status the instance reported; not accepting while no connection is up.
    fn load(&self) -> Load {
        let connected = self.pool.is_connected();
        match self.pool.status() {
            Some(status) => Load {
                accepting: status.load.accepting && connected,
                ..status.load.into()
            },
            None => Load {
                active: 0,
                limit: 0,
                accepting: false,
            },
        }
    }
}
