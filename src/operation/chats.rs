//! [`Chats`]: everything the chat operations read, and nothing else.
//!
//! Owns the request deadline and holds the tenants, the credentials scheme and a handle on
//! the current router table. Building one opens nothing and starts no task, so the rules in
//! `run` can be tested against scripted backends without a spool, a socket or a process. It
//! must not grow e-mail, HTTP or config-file concerns: those belong to the gateway that
//! composes it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use backend_api::BackendError;

use super::ClientCredentials;
use crate::config::TenantConfig;
use crate::credentials::{Claim, Credentials};
use crate::error::Error;
use crate::router::Router;

/// The shared state of the chat operations (an axum sub-state of the gateway). Cheap to
/// clone: handlers get their own copy per request.
#[derive(Clone)]
pub struct Chats {
    /// The tenants clients may name; fixed at start-up (a reload does not change them).
    tenants: Arc<[TenantConfig]>,
    credentials: Credentials,
    /// The gateway's current table: a reload replaces it whole, and each request loads it
    /// once and holds it to its end.
    router: Arc<ArcSwap<Router>>,
    /// Bounds every request, failover and second attempts included.
    request_timeout: Duration,
    /// How long a stream token minted for a reply opens a stream (`push.token_ttl_secs`).
    stream_token_ttl: Duration,
}

impl Chats {
    pub fn new(
        tenants: Vec<TenantConfig>,
        credentials: Credentials,
        router: Arc<ArcSwap<Router>>,
        request_timeout: Duration,
    ) -> Chats {
        Chats {
            tenants: tenants.into(),
            credentials,
            router,
            request_timeout,
            stream_token_ttl: Duration::from_secs(3600),
        }
    }

    /// The same, minting stream tokens valid for `ttl`.
    pub fn with_stream_token_ttl(mut self, ttl: Duration) -> Chats {
        self.stream_token_ttl = ttl;
        self
    }

    pub(super) fn stream_token_ttl(&self) -> Duration {
        self.stream_token_ttl
    }

    /// The configured tenant of that name.
    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.name == name)
    }

    pub(super) fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The backend's key inside the client's `secureKey`, once its MAC checks for this chat,
    /// user and tenant; [`Error::BadCredentials`] otherwise.
    pub(super) fn backend_key<'k>(
        &self,
        chat_id: &str,
        creds: &'k ClientCredentials,
    ) -> Result<std::borrow::Cow<'k, str>, Error> {
        let claim = Claim {
            chat_id,
            user_id: &creds.user_id,
            tenant_name: &creds.tenant_name,
        };
        self.credentials
            .open(claim, &creds.secure_key)
            .ok_or(Error::BadCredentials)
    }

    /// The current router table. A request holds the table it started with to its end.
    pub fn router(&self) -> Arc<Router> {
        self.router.load_full()
    }

    /// Bounds a backend call by the configured request timeout. A call cut off may have
    /// reached the backend, so it is `Interrupted`, never `Unreachable`.
    pub(super) async fn deadline<T>(
        &self,
        call: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, Error> {
        self.within(async { call.await.map_err(Error::Backend) })
            .await
    }

    /// Bounds a whole request (failover and second attempts included) by the configured
    /// request timeout.
    pub(super) async fn within<T>(
        &self,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        self.within_plus(Duration::ZERO, work).await
    }

    /// Bounds a request by the request timeout plus `extra` (the wait of a watch).
    pub(super) async fn within_plus<T>(
        &self,
        extra: Duration,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.request_timeout + extra, work).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout),
        }
    }
}
