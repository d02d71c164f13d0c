//! Configuration: one TOML file plus `GATEWAY__SECTION__KEY` environment overrides, read
//! once into typed sections and validated once at load.
//!
//! Owns loading, the composition of the sections into [`Config`], the tenant list, and the
//! rules that involve more than one section. Each section's type, defaults and local rules
//! belong to the code that uses it (`server`, `credentials`, `admin`, `edge::limits`,
//! `edge::cors`, `edge::gms`, `edge::push`, `edge::cometd`, `edge::widget`, `router`,
//! `telemetry`, and the `backend-tcp`, `backend-http`,
//! `chat-engine` and `email` crates); `chat` here reads the instance list. It must not start
//! anything: the rest of the gateway receives a [`Config`] that is already known to be good.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use config_types::Invalid;
use serde::Deserialize;

mod chat;
pub use crate::router::{AdminState, HealthConfig, Placement};
pub use crate::telemetry::{LogConfig, LogFormat};
pub use chat::{ChatConfig, InstanceConfig, InstanceKind};

use crate::admin::AdminConfig;
use crate::credentials::CredentialsConfig;
use crate::edge::cometd::CometdConfig;
use crate::edge::cors::{AllowedHeader, CorsConfig, Origin};
use crate::edge::limits::LimitsConfig;
use crate::edge::push::PushConfig;
use crate::edge::widget::WidgetConfig;
use crate::edge::GmsConfig;
use crate::server::ServerConfig;

/// The environment prefix: `GATEWAY__SERVER__LISTEN` overrides `server.listen`.
pub const ENV_PREFIX: &str = "GATEWAY";

/// Why a configuration was refused. Every message names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named on the command line does not exist.
    #[error("config file {} not found", .0.display())]
    NotFound(PathBuf),
    /// The text is not TOML, or a value has the wrong type or an unknown key.
    #[error("{origin}: {}", dotted(.error))]
    Read {
        /// The file (or `config` for a string).
        origin: String,
        error: config::ConfigError,
    },
    /// A value read fine but breaks a rule (a range, a reference to a tenant…).
    #[error("{0}")]
    Invalid(#[from] Invalid),
}

/// The whole gateway configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The public HTTP listener.
    #[serde(default)]
    pub server: ServerConfig,
    /// How chat credentials handed to clients are protected.
    #[serde(default)]
    pub credentials: CredentialsConfig,
    /// Tenants the gateway serves. A request naming another tenant is refused.
    pub tenants: Vec<TenantConfig>,
    /// Chat server instances and placement.
    pub chat: ChatConfig,
    /// Behaviour of embedded mock instances (`kind = "mock"`).
    #[serde(default)]
    pub mock: chat_engine::Behaviour,
    /// Connections to standalone chat servers (`kind = "tcp"`); `address` and `peer_name`
    /// are filled in per instance.
    #[serde(default)]
    pub tcp: backend_tcp::TcpConfig,
    /// The Web API v2 dialect front end (`/api/v2/…`).
    #[serde(default)]
    pub webapi: crate::edge::webapi::WebApiConfig,
    /// The GMS dialect front end (`/genesys/2/…`): service names and their tenants.
    #[serde(default)]
    pub gms: GmsConfig,
    /// The GMS CometD dialect (`/genesys/cometd`): the held connect and its bounds, the
    /// cookies.
    #[serde(default)]
    pub cometd: CometdConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// `POST /api/v2/emails`: limits, the spool, delivery and the e-mail backend.
    #[serde(default)]
    pub email: email::EmailConfig,
    /// The admin listener: metrics, health, instance list and states, off the public port.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Limits against abuse: connections, header size and timeouts, rate limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Cross-origin requests from web widgets (the allowed origins are per tenant).
    #[serde(default)]
    pub cors: CorsConfig,
    /// The event streams (Server-Sent Events): heartbeats, token lifetime, caps.
    #[serde(default)]
    pub push: PushConfig,
    /// The chat widget the gateway serves, and the demo page at `/` (docs/widget.md).
    #[serde(default)]
    pub widget: WidgetConfig,
}

/// One tenant.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The `tenantName` clients send (matched exactly).
    pub name: String,
    /// The endpoint (queue) of chats that name none.
    #[serde(default = "default_endpoint")]
    pub default_endpoint: String,
    /// Web origins whose pages may call the gateway (CORS): `https://shop.example.com`,
    /// `https://*.example.com` (any sub-domain), or `*` (any origin, only when listed).
    #[serde(default)]
    pub cors_origins: Vec<Origin>,
    /// Request headers this tenant's pages (its `cors_origins`) may send cross-origin: the
    /// preflight's `Access-Control-Allow-Headers`. By default the headers GMS and Web API
    /// clients send (`edge::cors::DEFAULT_ALLOWED_HEADERS`).
    #[serde(default = "crate::edge::cors::default_allowed_headers")]
    pub cors_allowed_headers: Vec<AllowedHeader>,
}

fn default_endpoint() -> String {
    "default".into()
}

impl Config {
    /// Reads `path` (TOML) and the `GATEWAY__…` environment, then validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment (tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::NotFound(path.to_owned()));
        }
        let file = config::File::from(path).format(config::FileFormat::Toml);
        Self::read(file, path.display().to_string(), env)
    }

    /// A configuration from TOML text, without the process environment.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::from_toml_str_with_env(text, std::iter::empty())
    }

    /// Like [`Config::from_toml_str`] with an explicit environment (tests).
    pub fn from_toml_str_with_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = config::File::from_str(text, config::FileFormat::Toml);
        Self::read(text, "config".into(), env)
    }

    fn read(
        source: impl config::Source + Send + Sync + 'static,
        origin: String,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        let read = config::Config::builder()
            .add_source(source)
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("mock.agent_replies")
                    .with_list_parse_key("email.file_types")
                    .with_list_parse_key("email.mailboxes")
                    .with_list_parse_key("limits.trusted_proxies")
                    .with_list_parse_key("credentials.previous_secrets")
                    .source(Some(env)),
            )
            .build()
            .and_then(|raw| raw.try_deserialize::<Config>());
        let config = read.map_err(|error| ConfigError::Read { origin, error })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot: each section's own rules, then those across
    /// sections. Each message names the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        let within = |section: &'static str| move |e: Invalid| e.within(section);
        self.server.validate().map_err(within("server"))?;
        self.admin.validate().map_err(within("admin"))?;
        let (server, admin) = (&self.server, &self.admin);
        if admin.enabled && admin.listen == server.listen && server.listen.port() != 0 {
            return Err(Invalid::new(
                "admin.listen",
                "must differ from server.listen",
            ));
        }
        self.limits.validate().map_err(within("limits"))?;
        if self.limits.idle_timeout <= server.request_timeout {
            let why = "must be greater than server.request_timeout_ms";
            return Err(Invalid::new("limits.idle_timeout_ms", why));
        }
        self.push.validate().map_err(within("push"))?;
        if self.push.heartbeat >= self.limits.idle_timeout {
            let why = "must be less than limits.idle_timeout_ms (a stream would be cut as idle)";
            return Err(Invalid::new("push.heartbeat_secs", why));
        }
        self.credentials.validate().map_err(within("credentials"))?;
        self.validate_tenants()?;
        self.chat.validate()?;
        for (i, inst) in self.chat.instances.iter().enumerate() {
            if let Some(t) = inst.tenants.iter().find(|t| self.tenant(t).is_none()) {
                let key = format!("chat.instances[{i}].tenants");
                return Err(Invalid::new(key, format!("unknown tenant `{t}`")));
            }
        }
        self.tcp.validate().map_err(within("tcp"))?;
        if self.tcp.request_timeout > server.request_timeout {
            let why = "must be at most server.request_timeout_ms";
            return Err(Invalid::new("tcp.request_timeout_ms", why));
        }
        let is_tenant = |name: &str| self.tenant(name).is_some();
        self.gms.validate(is_tenant).map_err(within("gms"))?;
        self.cometd.validate().map_err(within("cometd"))?;
        // A held connect sends no byte until it answers: the idle timeout must outlast it.
        let held = self.cometd.connect_timeout + std::time::Duration::from_secs(5);
        if held > self.limits.idle_timeout {
            let why = "must be at least 5000 below limits.idle_timeout_ms (a held connect sends nothing until it answers)";
            return Err(Invalid::new("cometd.connect_timeout_ms", why));
        }
        self.mock.validate().map_err(within("mock"))?;
        self.validate_widget()?;
        // Its keys are full (`email.…`) already.
        self.email.validate()
    }

    fn validate_tenants(&self) -> Result<(), Invalid> {
        if self.tenants.is_empty() {
            return Err(Invalid::new("tenants", "at least one tenant is required"));
        }
        let mut names = HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            if t.name.is_empty() {
                return Err(Invalid::new(
                    format!("tenants[{i}].name"),
                    "must not be empty",
                ));
            }
            if !names.insert(t.name.as_str()) {
                let key = format!("tenants[{i}].name");
                return Err(Invalid::new(key, "duplicate tenant name"));
            }
        }
        Ok(())
    }

    /// The widget's rules across sections: its tenant exists, its file service is a GMS
    /// service of that tenant that asks no API key (the widget runs in a public page, where
    /// a key would be no secret), its mailbox is on the e-mail allow-list.
    fn validate_widget(&self) -> Result<(), Invalid> {
        let w = &self.widget;
        w.validate().map_err(|e| e.within("widget"))?;
        if let Some(t) = &w.tenant {
            if self.tenant(t).is_none() {
                return Err(Invalid::new(
                    "widget.tenant",
                    format!("unknown tenant `{t}`"),
                ));
            }
        }
        if let Some(name) = &w.file_service {
            let Some(service) = self.gms.service(name) else {
                let why = format!("`{name}` is not one of gms.services");
                return Err(Invalid::new("widget.file_service", why));
            };
            if service.tenant != self.widget_tenant() {
                let why = format!("`{name}` serves another tenant than the widget's");
                return Err(Invalid::new("widget.file_service", why));
            }
            if self.gms.api_key(service).is_some() {
                let why = format!(
                    "`{name}` requires an API key, which a public page cannot keep secret: \
                     name a service without one"
                );
                return Err(Invalid::new("widget.file_service", why));
            }
        }
        if let Some(mailbox) = &w.mailbox {
            if !self.email.mailbox_policy().allows(mailbox) {
                let why = "must be one of the e-mail mailboxes (email.mailbox, the backend's \
                           default_mailbox, email.mailboxes)";
                return Err(Invalid::new("widget.mailbox", why));
            }
        }
        Ok(())
    }

    /// The tenant the widget names: `widget.tenant`, or the first tenant.
    pub fn widget_tenant(&self) -> &str {
        match &self.widget.tenant {
            Some(t) => t,
            None => self.tenants.first().map_or("", |t| t.name.as_str()),
        }
    }

    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.name == name)
    }
}

/// The `config` crate's message with its key written as the operator writes it: it says
/// `tenants[0]cors_origins[1]` for `tenants[0].cors_origins[1]`, and names the list again
/// after a refusal of the instance list that named the entry's key already.
fn dotted(error: &config::ConfigError) -> String {
    let text = error.to_string();
    let Some((message, key)) = text.rsplit_once(" for key `") else {
        return text;
    };
    let (key, rest) = key.split_once('`').unwrap_or((key, ""));
    if message.starts_with(key) {
        return message.to_owned();
    }
    let mut dotted = String::new();
    let mut previous = ' ';
    for c in key.chars() {
        if previous == ']' && !matches!(c, '[' | '.') {
            dotted.push('.');
        }
        dotted.push(c);
        previous = c;
    }
    format!("{message} for key `{dotted}`{rest}")
}

#[cfg(test)]
mod tests;
