//! The running gateway's shared state, built once from a [`Config`].
//!
//! Owns the construction of adapters from instance configs (the only code that names the
//! concrete backend crates), each instance's active health check (a task per instance), the
//! current router table and its replacement on reload, and the running e-mail side (spool
//! and deliverer). It composes the narrow states the handlers take (`FromRef`): the chat
//! operations' [`Chats`], the e-mail intake's [`Emails`], the GMS service table, the open
//! event streams ([`Streams`]), the CometD dialect's state ([`Cometd`]), readiness and the
//! body read limits; a public edge handler takes one of those, not the whole gateway.

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::FromRef;
use backend_api::{BackendError, ChatBackend};
use backend_tcp::TcpBackend;
use chat_engine::{Engine, MockBackend};
use email::EmailService;

use crate::config::{ChatConfig, Config, HealthConfig, InstanceConfig, InstanceKind};
use crate::credentials::Credentials;
use crate::edge::body::ReadLimits;
use crate::edge::cometd::Cometd;
use crate::edge::email::Emails;
use crate::edge::gms::Services;
use crate::edge::health::Readiness;
use crate::edge::push::Streams;
use crate::operation::Chats;
use crate::router::{Health, Instance, Router};
use crate::telemetry::MeteredBackend;

/// Everything a request needs, shared by all requests.
pub struct Gateway {
    pub config: Arc<Config>,
    /// Replaced whole on reload, so a request sees one consistent table. [`Chats`] and
    /// [`Readiness`] share this handle.
    router: Arc<ArcSwap<Router>>,
    /// The `[chat]` section the current table was built from; held while a reload runs, so
    /// two reloads never interleave.
    applied: tokio::sync::Mutex<ChatConfig>,
    /// What the chat operations read.
    chats: Chats,
    /// The e-mail spool and the handle of its deliverer, with the tenants e-mails may name.
    email: Emails,
    /// The GMS dialect's services.
    gms: Services,
    /// The open event streams and their caps (`[push]`).
    streams: Streams,
    /// The CometD dialect's state: its config, seals and held connects.
    cometd: Cometd,
    /// Cancelled when shutdown starts: background work (the e-mail deliverer) watches it
    /// and heads for a safe point.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Background work that shutdown waits for (within `server.shutdown_deadline_ms`).
    pub tasks: tokio_util::task::TaskTracker,
}

/// Why a gateway could not be built from a valid configuration (the environment refused
/// something: a spool folder that cannot be created, say).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The e-mail side could not start: its spool folder or its backend.
    #[error("{0}")]
    Email(#[from] email::StartError),
    /// An HTTP instance's adapter could not be built (its TLS stack).
    #[error("chat.instances `{alias}`: {error}")]
    HttpBackend {
        alias: String,
        error: backend_http::BuildError,
    },
}

impl Gateway {
    /// Builds adapters and the router, opens the e-mail spool and starts its deliverer. Must
    /// run inside a tokio runtime: mock instances start their expiry sweep, tcp instances
    /// their connection and status tasks, and the deliverer is a task.
    pub fn new(config: Config) -> Result<Arc<Gateway>, StartError> {
        Self::with_backends(config, Vec::new())
    }

    /// Like [`Gateway::new`], with the adapters of some aliases given rather than built from
    /// config (tests hold on to them to see what reached a backend).
    pub fn with_backends(
        config: Config,
        mut given: Vec<(String, Arc<dyn ChatBackend>)>,
    ) -> Result<Arc<Gateway>, StartError> {
        // On shutdown the deliverer finishes the delivery under way and stops; whatever it
        // has not delivered stays in the spool for the next start.
        let shutdown = tokio_util::sync::CancellationToken::new();
        let tasks = tokio_util::task::TaskTracker::new();
        let (email, deliverer) =
            EmailService::start(&config.email, shutdown.clone().cancelled_owned())
                .map_err(StartError::Email)?;
        tasks.spawn(async move {
            let _ = deliverer.await;
        });
        let credentials = match &config.credentials.secret {
            Some(secret) => Credentials::rotating(
                secret.expose().as_bytes(),
                &config
                    .credentials
                    .previous_secrets
                    .iter()
                    .map(|s| s.expose().as_bytes())
                    .collect::<Vec<_>>(),
            ),
            None => {
                tracing::warn!(
                    "credentials.secret is not set: using a random per-process secret; chats \
                     will not survive a restart or move between replicas"
                );
                Credentials::random()
            }
        };
        let mut instances = Vec::with_capacity(config.chat.instances.len());
        for inst in &config.chat.instances {
            let backend = MeteredBackend::wrap(
                &inst.alias,
                match given.iter().position(|(alias, _)| *alias == inst.alias) {
                    Some(i) => given.swap_remove(i).1,
                    None => build_backend(inst, &config)?,
                },
            );
            instances.push(start_instance(inst, backend, &config.chat.health));
        }
        let router = Router::from_shared(instances, config.chat.placement, None);
        let router = Arc::new(ArcSwap::from_pointee(router));
        let cometd = Cometd::new(
            config.cometd.clone(),
            credentials.tokens().clone(),
            shutdown.clone(),
        );
        let chats = Chats::new(
            config.tenants.clone(),
            credentials,
            Arc::clone(&router),
            config.server.request_timeout,
        )
        .with_stream_token_ttl(config.push.token_ttl);
        let streams = Streams::new(config.push.clone(), shutdown.clone());
        let tenants = config.tenants.iter().map(|t| t.name.clone()).collect();
        Ok(Arc::new(Gateway {
            applied: tokio::sync::Mutex::new(config.chat.clone()),
            chats,
            email: Emails::new(email, tenants, config.limits.max_tracked_keys),
            gms: Services::new(config.gms.clone()),
            streams,
            cometd,
            config: Arc::new(config),
            router,
            shutdown,
            tasks,
        }))
    }

    /// Applies a new, validated configuration's `[chat]` section: instances whose kind,
    /// address and `http` settings are unchanged are kept (adapter, health, and their admin
    /// state unless the file changed it), others are built, removed ones retired. In-flight
    /// requests keep the table they started with. Everything outside `[chat]` (and
    /// `[chat.health]`) needs a restart: it is named in the log and ignored.
    pub async fn reload(&self, new: Config) -> Result<(), StartError> {
        let mut applied = self.applied.lock().await;
        for (key, changed) in restart_only_changes(&self.config, &new) {
            if changed {
                tracing::warn!(key, "changed in the config file; needs a restart, ignored");
            }
        }
        let old_router = self.router.load_full();
        let mut instances = Vec::with_capacity(new.chat.instances.len());
        let (mut kept, mut added) = (0, 0);
        for inst in &new.chat.instances {
            let before = applied.instances.iter().find(|o| o.alias == inst.alias);
            let current = old_router.get(&inst.alias);
            match (before, current) {
                (Some(before), Some(current)) if same_backend(before, inst) => {
                    let instance = current.reconfigured(inst.weight, inst.tenants.clone());
                    if before.state != inst.state {
                        instance.set_state(inst.state);
                    }
                    instances.push(Arc::new(instance));
                    kept += 1;
                }
                _ => {
                    let backend =
                        MeteredBackend::wrap(&inst.alias, build_backend(inst, &self.config)?);
                    instances.push(start_instance(inst, backend, &self.config.chat.health));
                    added += 1;
                }
            }
        }
        let router = Router::from_shared(instances, new.chat.placement, Some(&old_router));
        let removed = old_router
            .instances()
            .iter()
            .filter(|i| router.get(&i.alias).is_none())
            .count();
        self.router.store(Arc::new(router));
        let mut chat = new.chat;
        // Health settings are fixed at start-up: keep what the checkers run with.
        chat.health = self.config.chat.health.clone();
        *applied = chat;
        tracing::info!(kept, added, removed, "instance list reloaded");
        Ok(())
    }

    /// The configuration of an instance of the current table.
    pub async fn instance_config(&self, alias: &str) -> Option<InstanceConfig> {
        let applied = self.applied.lock().await;
        applied.instances.iter().find(|i| i.alias == alias).cloned()
    }

    /// The e-mail side: where `POST /api/v2/emails` puts what it receives.
    pub fn email(&self) -> &EmailService {
        self.email.service()
    }

    /// What the chat operations read (tests run operations on it directly).
    pub fn chats(&self) -> &Chats {
        &self.chats
    }

    /// Whether the gateway should get new traffic (see [`Readiness::check`]).
    pub fn readiness(&self) -> Result<(), String> {
        self.readiness_state().check()
    }

    fn readiness_state(&self) -> Readiness {
        Readiness::new(self.shutdown.clone(), Arc::clone(&self.router))
    }

    /// The current router table. A request holds the table it started with to its end.
    pub fn router(&self) -> Arc<Router> {
        self.router.load_full()
    }
}

impl FromRef<Arc<Gateway>> for Chats {
    fn from_ref(gw: &Arc<Gateway>) -> Chats {
        gw.chats.clone()
    }
}

impl FromRef<Arc<Gateway>> for Emails {
    fn from_ref(gw: &Arc<Gateway>) -> Emails {
        gw.email.clone()
    }
}

impl FromRef<Arc<Gateway>> for Services {
    fn from_ref(gw: &Arc<Gateway>) -> Services {
        gw.gms.clone()
    }
}

impl FromRef<Arc<Gateway>> for Streams {
    fn from_ref(gw: &Arc<Gateway>) -> Streams {
        gw.streams.clone()
    }
}

impl FromRef<Arc<Gateway>> for Cometd {
    fn from_ref(gw: &Arc<Gateway>) -> Cometd {
        gw.cometd.clone()
    }
}

impl FromRef<Arc<Gateway>> for Readiness {
    fn from_ref(gw: &Arc<Gateway>) -> Readiness {
        gw.readiness_state()
    }
}

impl FromRef<Arc<Gateway>> for ReadLimits {
    fn from_ref(gw: &Arc<Gateway>) -> ReadLimits {
        ReadLimits {
            max_body_bytes: gw.config.server.max_body_bytes,
        }
    }
}

/// The router's instance for a config entry, with its health checker running.
fn start_instance(
    inst: &InstanceConfig,
    backend: Arc<dyn ChatBackend>,
    health: &HealthConfig,
) -> Arc<Instance> {
    let instance = Arc::new(Instance::new(
        &inst.alias,
        backend,
        inst.weight,
        inst.tenants.clone(),
        inst.state,
        Health::new(&inst.alias, health),
    ));
    spawn_checker(&instance, health.clone());
    instance
}

/// The active health check of one instance: its `check` call every `interval`. The task
/// holds the instance weakly and ends once no table holds it (a reload removed it).
fn spawn_checker(instance: &Arc<Instance>, config: HealthConfig) {
    let backend: Weak<dyn ChatBackend> = Arc::downgrade(&instance.backend);
    let health = Arc::downgrade(&instance.health);
    let (interval, timeout) = (config.interval, config.timeout);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (Some(backend), Some(health)) = (backend.upgrade(), health.upgrade()) else {
                return;
            };
            match tokio::time::timeout(timeout, backend.check()).await {
                Ok(Ok(_)) => health.check_passed(),
                // Our own in-flight bound: says nothing about the instance.
                Ok(Err(BackendError::Overloaded(_))) => {}
                Ok(Err(e)) => health.check_failed(&e.to_string()),
                Err(_) => health.check_failed("status check timed out"),
            }
        }
    });
}

/// Whether a reloaded entry can keep the running adapter: same kind, with the same address
/// or `http` table.
fn same_backend(old: &InstanceConfig, new: &InstanceConfig) -> bool {
    old.kind == new.kind
}

/// The sections a reload cannot apply, and whether the new file changed each. Values are
/// never logged (the secrets are among them).
fn restart_only_changes(old: &Config, new: &Config) -> Vec<(&'static str, bool)> {
    vec![
        ("server", old.server != new.server),
        ("credentials", old.credentials != new.credentials),
        ("tenants", old.tenants != new.tenants),
        ("chat.health", old.chat.health != new.chat.health),
        ("mock", old.mock != new.mock),
        ("tcp", old.tcp != new.tcp),
        ("gms", old.gms != new.gms),
        ("push", old.push != new.push),
        ("cometd", old.cometd != new.cometd),
        ("admin", old.admin != new.admin),
        ("log", old.log != new.log),
        ("email", old.email != new.email),
    ]
}

/// The adapter for one configured instance.
fn build_backend(
    inst: &InstanceConfig,
    config: &Config,
) -> Result<Arc<dyn ChatBackend>, StartError> {
    Ok(match &inst.kind {
        InstanceKind::Mock => {
            let engine = Engine::new(config.mock.clone());
            engine.spawn_sweeper(Duration::from_secs(1));
            Arc::new(MockBackend::new(engine))
        }
        InstanceKind::Tcp { address } => Arc::new(TcpBackend::new(backend_tcp::TcpConfig {
            address: address.clone(),
            peer_name: format!("webapi-gateway {}", env!("CARGO_PKG_VERSION")),
            ..config.tcp.clone()
        })),
        InstanceKind::Http(http) => {
            // Validation accepted the table, so only the TLS stack can fail here.
            let backend =
                backend_http::HttpBackend::new(http.as_ref().clone()).map_err(|error| {
                    StartError::HttpBackend {
                        alias: inst.alias.clone(),
                        error,
                    }
                })?;
            Arc::new(backend)
        }
    })
}
