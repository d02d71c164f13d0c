//! The running gateway's shared state, built once from a [`Config`].
//!
//! Owns the construction of adapters from instance configs (the only code that names the
//! concrete backend crates) and the current router table.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use backend_api::ChatBackend;
use backend_mock::{Engine, MockBackend};

use crate::config::{Config, InstanceConfig, InstanceKind};
use crate::credentials::Credentials;
use crate::router::{Instance, Router};
use crate::telemetry::MeteredBackend;

/// Everything a request needs, shared by all requests.
pub struct Gateway {
    pub config: Arc<Config>,
    pub credentials: Credentials,
    /// Replaced whole on reload, so a request sees one consistent table.
    router: ArcSwap<Router>,
    pub(crate) request_timeout: Duration,
    /// Cancelled when shutdown starts: background work (the e-mail deliverer) watches it
    /// and heads for a safe point.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Background work that shutdown waits for (within `server.shutdown_deadline_ms`).
    pub tasks: tokio_util::task::TaskTracker,
}

impl Gateway {
    /// Builds adapters and the router. Must run inside a tokio runtime: mock instances start
    /// their expiry sweep.
    pub fn new(config: Config) -> Arc<Gateway> {
        Self::with_backends(config, Vec::new())
    }

    /// Like [`Gateway::new`], with the adapters of some aliases given rather than built from
    /// config (tests hold on to them to see what reached a backend).
    pub fn with_backends(
        config: Config,
        mut given: Vec<(String, Arc<dyn ChatBackend>)>,
    ) -> Arc<Gateway> {
        let credentials = match &config.credentials.secret {
            Some(secret) => Credentials::new(secret.as_bytes()),
            None => {
                tracing::warn!(
                    "credentials.secret is not set: using a random per-process secret; chats \
                     will not survive a restart or move between replicas"
                );
                Credentials::random()
            }
        };
        let instances = config
            .chat
            .instances
            .iter()
            .map(|inst| Instance {
                alias: Arc::from(inst.alias.as_str()),
                backend: MeteredBackend::wrap(
                    &inst.alias,
                    match given.iter().position(|(alias, _)| *alias == inst.alias) {
                        Some(i) => given.swap_remove(i).1,
                        None => build_backend(inst, &config),
                    },
                ),
                weight: inst.weight,
                tenants: inst.tenants.clone(),
            })
            .collect();
        let router = Router::new(instances, config.chat.placement);
        Arc::new(Gateway {
            request_timeout: Duration::from_millis(config.server.request_timeout_ms),
            config: Arc::new(config),
            credentials,
            router: ArcSwap::from_pointee(router),
            shutdown: Default::default(),
            tasks: Default::default(),
        })
    }

    /// Whether the gateway should get new traffic: not shutting down, and some instance
    /// accepts new chats. The error says why not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.shutdown.is_cancelled() {
            return Err("shutting down".into());
        }
        let router = self.router();
        if router
            .instances()
            .iter()
            .any(|i| i.backend.load().accepting)
        {
            return Ok(());
        }
        let states: Vec<String> = router
            .instances()
            .iter()
            .map(|i| {
                let load = i.backend.load();
                format!("{} ({}/{} chats)", i.alias, load.active, load.limit)
            })
            .collect();
        Err(format!(
            "no chat server instance accepts new chats: {}",
            states.join(", ")
        ))
    }

    /// The current router table.
    pub fn router(&self) -> arc_swap::Guard<Arc<Router>> {
        self.router.load()
    }
}

/// The adapter for one configured instance.
fn build_backend(inst: &InstanceConfig, config: &Config) -> Arc<dyn ChatBackend> {
    match inst.kind {
        InstanceKind::Mock => {
            let engine = Engine::new(config.mock.behaviour());
            engine.spawn_sweeper(Duration::from_secs(1));
            Arc::new(MockBackend::new(engine))
        }
    }
}
