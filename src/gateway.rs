//! The running gateway's shared state, built once from a [`Config`].
//!
//! Owns the construction of adapters from instance configs (the only code that names the
//! concrete backend crates), the current router table, and the running e-mail side (spool and
//! deliverer).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use backend_api::ChatBackend;
use backend_email::EmailService;
use backend_mock::{Engine, MockBackend};
use backend_tcp::TcpBackend;

use crate::config::{Config, InstanceConfig, InstanceKind};
use crate::credentials::Credentials;
use crate::router::{Instance, Router};

/// Everything a request needs, shared by all requests.
pub struct Gateway {
    pub config: Arc<Config>,
    pub credentials: Credentials,
    /// Replaced whole on reload, so a request sees one consistent table.
    router: ArcSwap<Router>,
    pub(crate) request_timeout: Duration,
    /// The e-mail spool and the handle of its deliverer.
    email: EmailService,
}

/// Why a gateway could not be built from a valid configuration (the environment refused
/// something: a spool folder that cannot be created, say).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

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
        // The deliverer runs as long as the runtime: stopping it early gains nothing, since
        // whatever it has not delivered stays in the spool for the next start.
        let (email, _deliverer) =
            EmailService::start(&config.email, std::future::pending()).map_err(StartError)?;
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
        let mut instances = Vec::with_capacity(config.chat.instances.len());
        for inst in &config.chat.instances {
            let backend = match given.iter().position(|(alias, _)| *alias == inst.alias) {
                Some(i) => given.swap_remove(i).1,
                None => build_backend(inst, &config)?,
            };
            instances.push(Instance {
                alias: Arc::from(inst.alias.as_str()),
                backend,
                weight: inst.weight,
                tenants: inst.tenants.clone(),
            });
        }
        let router = Router::new(instances, config.chat.placement);
        Ok(Arc::new(Gateway {
            request_timeout: Duration::from_millis(config.server.request_timeout_ms),
            config: Arc::new(config),
            credentials,
            router: ArcSwap::from_pointee(router),
            email,
        }))
    }

    /// The e-mail side: where `POST /api/v2/emails` puts what it receives.
    pub fn email(&self) -> &EmailService {
        &self.email
    }

    /// The current router table.
    pub fn router(&self) -> arc_swap::Guard<Arc<Router>> {
        self.router.load()
    }
}

/// The adapter for one configured instance.
fn build_backend(
    inst: &InstanceConfig,
    config: &Config,
) -> Result<Arc<dyn ChatBackend>, StartError> {
    Ok(match inst.kind {
        InstanceKind::Mock => {
            let engine = Engine::new(config.mock.behaviour());
            engine.spawn_sweeper(Duration::from_secs(1));
            Arc::new(MockBackend::new(engine))
        }
        InstanceKind::Tcp => {
            // Validation made sure a tcp instance has an address.
            let address = inst.address.as_deref().unwrap_or_default();
            Arc::new(TcpBackend::new(config.tcp.adapter_config(address)))
        }
        InstanceKind::Http => {
            let http = inst.http.as_ref().expect("validated: kind http has [http]");
            // Validation accepted the config, so only the TLS stack can fail here.
            let backend = backend_http::HttpBackend::new(http.adapter_config()).map_err(|e| {
                StartError(format!(
                    "chat.instances `{}`: cannot build the HTTP client: {e}",
                    inst.alias
                ))
            })?;
            Arc::new(backend)
        }
    })
}
