//! Configuration: plain structs, loaded once from a TOML file plus environment overrides,
//! validated once at load.
//!
//! Owns the file format, defaults and validation. It must not start anything: the rest of
//! the gateway receives a [`Config`] that is already known to be good.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

mod gms;
pub use gms::{GmsConfig, GmsServiceConfig, HttpInstanceConfig};

/// The environment prefix: `GATEWAY__SERVER__LISTEN` overrides `server.listen`.
pub const ENV_PREFIX: &str = "GATEWAY";

/// Why a configuration was refused. The message names the offending key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// The whole gateway configuration.
#[derive(Clone, Debug, Deserialize)]
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
    pub mock: MockConfig,
    /// Connections to standalone chat servers (`kind = "tcp"`).
    #[serde(default)]
    pub tcp: TcpSettings,
    /// The GMS dialect front end (`/genesys/2/…`): service names and their tenants.
    #[serde(default)]
    pub gms: GmsConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// `POST /api/v2/emails`: limits, the spool, delivery and the e-mail backend (the types
    /// live with the e-mail side, in `email`).
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
}

/// The public HTTP listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Largest accepted body of a chat request, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// How long a request may take end to end before it is answered with statusCode 1.
    pub request_timeout_ms: u64,
    /// On SIGTERM/Ctrl-C: how long in-flight requests and background work (the e-mail
    /// deliverer) get to finish before the process exits anyway.
    pub shutdown_deadline_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 64 * 1024,
            request_timeout_ms: 10_000,
            shutdown_deadline_ms: 10_000,
        }
    }
}

/// How chat credentials handed to clients are protected.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialsConfig {
    /// The MAC secret shared by every gateway replica (at least 32 characters). When absent a
    /// random one is made at start-up, and chats survive neither a restart nor a second
    /// replica. Never logged.
    pub secret: Option<String>,
}

/// One tenant.
#[derive(Clone, Debug, Deserialize)]
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
    pub cors_origins: Vec<String>,
}

fn default_endpoint() -> String {
    "default".into()
}

/// Chat server instances and placement.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// How new chats are spread over instances.
    #[serde(default)]
    pub placement: Placement,
    /// Active and passive health checks of the instances.
    #[serde(default)]
    pub health: HealthConfig,
    /// The chat server instances, each named by its alias.
    pub instances: Vec<InstanceConfig>,
}

/// Health checks: an instance takes new chats and keeps its chats only while healthy.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often each instance is asked for its status, in milliseconds.
    pub interval_ms: u64,
    /// Bound on one status call, in milliseconds; past it the check failed.
    pub timeout_ms: u64,
    /// Consecutive passed checks that bring a down instance back.
    pub rise: u32,
    /// Consecutive failed checks that take an instance down.
    pub fall: u32,
    /// Consecutive failed client requests (no answer) that eject an instance (passive check).
    pub eject_after: u32,
    /// How long an ejected instance is left alone, in milliseconds, before it is tried again.
    pub eject_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval_ms: 1000,
            timeout_ms: 1000,
            rise: 2,
            fall: 2,
            eject_after: 3,
            eject_ms: 10_000,
        }
    }
}

/// An instance's admin state, set by the operator (config or admin listener), separate from
/// its health.
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// Takes new chats and serves its chats.
    #[default]
    Ready,
    /// Takes no new chats; its chats continue there.
    Drain,
    /// Takes nothing: its chats move to other instances on their next request.
    Maint,
}

/// How new chats are spread over instances.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Pick two instances at random and use the one with less load relative to its weight.
    #[default]
    LeastLoaded,
    /// Take instances in turn.
    RoundRobin,
}

/// One chat server instance.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// The alias clients carry; unique.
    pub alias: String,
    /// Which adapter talks to it.
    pub kind: InstanceKind,
    /// Relative share of new chats (1 to 1000).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Tenants it serves; empty means all.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// `ready`, `drain` or `maint` at start-up (and after a reload that changes it).
    #[serde(default)]
    pub state: AdminState,
    /// `kind = "tcp"` only: the chat server's `host:port`.
    #[serde(default)]
    pub address: Option<String>,
    /// Where and how to reach GMS; required for `kind = "http"`, refused otherwise.
    #[serde(default)]
    pub http: Option<HttpInstanceConfig>,
}

fn default_weight() -> u32 {
    1
}

/// Which adapter talks to an instance.
#[derive(Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InstanceKind {
    /// The embedded chat engine, in this process.
    Mock,
    /// A GMS cluster over its Chat API v2 (`backend-http`).
    Http,
    /// A standalone `chat-server` process, over the chat-server protocol.
    Tcp,
}

/// How the gateway talks to `kind = "tcp"` instances (the same for each of them).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpSettings {
    /// Connections kept open to each instance; each carries many requests at once.
    pub connections: usize,
    /// Bound on connecting and the protocol handshake, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Bound on one request to a chat server, in milliseconds; past it statusCode 1. At most
    /// `server.request_timeout_ms`, so the more precise error wins.
    pub request_timeout_ms: u64,
    /// Most requests in flight to one instance; past it statusCode 1 at once.
    pub max_in_flight: usize,
    /// First reconnect delay after a failure, doubling up to `backoff_max_ms`.
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// How often each instance's load is asked for, in milliseconds.
    pub status_interval_ms: u64,
}

impl Default for TcpSettings {
    fn default() -> Self {
        let d = backend_tcp::TcpConfig::new("");
        TcpSettings {
            connections: d.connections,
            connect_timeout_ms: d.connect_timeout.as_millis() as u64,
            request_timeout_ms: d.request_timeout.as_millis() as u64,
            max_in_flight: d.max_in_flight,
            backoff_min_ms: d.backoff_min.as_millis() as u64,
            backoff_max_ms: d.backoff_max.as_millis() as u64,
            status_interval_ms: d.status_interval.as_millis() as u64,
        }
    }
}

impl TcpSettings {
    /// The adapter's settings for the instance at `address`.
    pub fn adapter_config(&self, address: &str) -> backend_tcp::TcpConfig {
        backend_tcp::TcpConfig {
            address: address.to_owned(),
            peer_name: format!("webapi-gateway {}", env!("CARGO_PKG_VERSION")),
            connections: self.connections,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            max_in_flight: self.max_in_flight,
            backoff_min: Duration::from_millis(self.backoff_min_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            status_interval: Duration::from_millis(self.status_interval_ms),
        }
    }
}

/// Behaviour of embedded mock instances.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockConfig {
    /// Nickname of the system party that greets every chat.
    pub system_nickname: String,
    /// What the system party says when the customer joins.
    pub greeting: String,
    /// Nickname of the simulated agent.
    pub agent_nickname: String,
    /// Milliseconds after the start of a chat when the agent joins.
    pub agent_join_delay_ms: u64,
    /// What the agent says on joining.
    pub agent_greeting: String,
    /// The agent's answers to customer messages, used in turn.
    pub agent_replies: Vec<String>,
    /// Milliseconds the agent takes to answer.
    pub agent_reply_delay_ms: u64,
    /// Seconds without a request after which the customer is removed and the chat ends.
    pub disconnect_timeout_secs: u64,
    /// Most open chats per instance; past it new chats get statusCode 1.
    pub session_limit: u64,
    /// Seconds an ended chat stays readable before it is forgotten.
    pub ended_retention_secs: u64,
    /// File-transfer rules (GMS dialect `file/…` operations).
    pub files: chat_engine::FileRules,
}

impl Default for MockConfig {
    fn default() -> Self {
        let b = chat_engine::Behaviour::default();
        MockConfig {
            system_nickname: b.system_nickname,
            greeting: b.greeting,
            agent_nickname: b.agent_nickname,
            agent_join_delay_ms: b.agent_join_delay.as_millis() as u64,
            agent_greeting: b.agent_greeting,
            agent_replies: b.agent_replies,
            agent_reply_delay_ms: b.agent_reply_delay.as_millis() as u64,
            disconnect_timeout_secs: b.disconnect_timeout.as_secs(),
            session_limit: b.session_limit,
            ended_retention_secs: b.ended_retention.as_secs(),
            files: chat_engine::FileRules::default(),
        }
    }
}

impl MockConfig {
    pub fn behaviour(&self) -> chat_engine::Behaviour {
        chat_engine::Behaviour {
            system_nickname: self.system_nickname.clone(),
            greeting: self.greeting.clone(),
            agent_nickname: self.agent_nickname.clone(),
            agent_join_delay: Duration::from_millis(self.agent_join_delay_ms),
            agent_greeting: self.agent_greeting.clone(),
            agent_replies: self.agent_replies.clone(),
            agent_reply_delay: Duration::from_millis(self.agent_reply_delay_ms),
            disconnect_timeout: Duration::from_secs(self.disconnect_timeout_secs),
            session_limit: self.session_limit,
            ended_retention: Duration::from_secs(self.ended_retention_secs),
            files: chat_engine::FileRules {
                file_types: self
                    .files
                    .file_types
                    .iter()
                    .map(|t| t.to_lowercase())
                    .collect(),
                ..self.files.clone()
            },
        }
    }
}

/// Logging.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `webapi_gateway=debug`; `RUST_LOG` wins when set.
    pub level: String,
    /// `text` (human-readable) or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// The admin listener: `/metrics`, `/healthz`, `/readyz`, and the instance endpoints.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Whether the admin listener runs. Without it, `/metrics` is served on the public
    /// listener (behind `token` when one is set).
    pub enabled: bool,
    /// Address and port of the admin listener; keep it off the internet.
    pub listen: SocketAddr,
    /// When set, admin requests other than `/healthz` and `/readyz` must carry
    /// `Authorization: Bearer <token>` (at least 16 characters). The instance endpoints
    /// (which change routing) refuse every request while it is unset. Never logged.
    pub token: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            token: None,
        }
    }
}

/// Limits against abuse. Every refusal is a Web API JSON error.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most open client connections; past it a new connection gets one 503 reply and is
    /// closed.
    pub max_connections: usize,
    /// Largest request head (request line and headers), in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Milliseconds a client has to send a whole request head once the gateway waits for
    /// one; this also bounds how long an idle keep-alive connection is kept.
    pub header_read_timeout_ms: u64,
    /// Milliseconds without a byte moving either way after which a connection is closed
    /// (a stalled body upload, a client that stops reading). Greater than
    /// `server.request_timeout_ms`.
    pub idle_timeout_ms: u64,
    /// Milliseconds a client has to send a whole JSON request body; past it 408. (A route
    /// with large bodies, e-mail, has its own rule.)
    pub body_read_timeout_ms: u64,
    /// Requests per second one client IP address may make (sustained); 0 turns it off.
    pub per_ip_per_second: u32,
    /// Requests one client IP address may make in a burst.
    pub per_ip_burst: u32,
    /// Requests per second on one chat from one client address (sustained); 0 turns it off.
    pub per_chat_per_second: u32,
    /// Requests on one chat in a burst.
    pub per_chat_burst: u32,
    /// Failed credential checks on one chat before further requests on it are refused.
    pub bad_credentials_burst: u32,
    /// Seconds for one failed-check allowance to come back (the throttle's period).
    pub bad_credentials_period_secs: u64,
    /// Most clients (addresses, chats) a rate limiter remembers at once. Quiet ones are
    /// forgotten; a new one that finds no room is judged as fresh and not remembered, while
    /// remembered ones stay limited.
    pub max_tracked_keys: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 10_000,
            max_header_bytes: 16 * 1024,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            body_read_timeout_ms: 10_000,
            per_ip_per_second: 50,
            per_ip_burst: 100,
            per_chat_per_second: 10,
            per_chat_burst: 20,
            bad_credentials_burst: 5,
            bad_credentials_period_secs: 60,
            max_tracked_keys: 100_000,
        }
    }
}

/// Cross-origin requests. The allowed origins are the tenants' `cors_origins`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Seconds a browser may cache a preflight answer.
    pub max_age_secs: u64,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig { max_age_secs: 600 }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
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
            return Err(ConfigError(format!(
                "config file {} not found",
                path.display()
            )));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("mock.agent_replies")
                    .with_list_parse_key("email.file_types")
                    .source(Some(env)),
            )
            .build()
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        let config: Config = raw
            .try_deserialize()
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot. Each message names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.server.max_body_bytes < 256 {
            return bad("server.max_body_bytes", "must be at least 256");
        }
        if self.server.request_timeout_ms == 0 {
            return bad("server.request_timeout_ms", "must be greater than 0");
        }
        if self.server.shutdown_deadline_ms == 0 {
            return bad("server.shutdown_deadline_ms", "must be greater than 0");
        }
        if let Some(token) = &self.admin.token {
            if token.len() < 16 {
                return bad("admin.token", "must be at least 16 characters");
            }
        }
        if self.admin.enabled
            && self.admin.listen == self.server.listen
            && self.server.listen.port() != 0
        {
            return bad("admin.listen", "must differ from server.listen");
        }
        let l = &self.limits;
        if l.max_connections == 0 {
            return bad("limits.max_connections", "must be greater than 0");
        }
        if !(1024..=1024 * 1024).contains(&l.max_header_bytes) {
            return bad(
                "limits.max_header_bytes",
                "must be between 1024 and 1048576",
            );
        }
        if l.header_read_timeout_ms == 0 {
            return bad("limits.header_read_timeout_ms", "must be greater than 0");
        }
        if l.idle_timeout_ms <= self.server.request_timeout_ms {
            return bad(
                "limits.idle_timeout_ms",
                "must be greater than server.request_timeout_ms",
            );
        }
        if l.body_read_timeout_ms == 0 {
            return bad("limits.body_read_timeout_ms", "must be greater than 0");
        }
        if l.per_ip_per_second > 0 && l.per_ip_burst == 0 {
            return bad("limits.per_ip_burst", "must be greater than 0");
        }
        if l.per_chat_per_second > 0 && l.per_chat_burst == 0 {
            return bad("limits.per_chat_burst", "must be greater than 0");
        }
        if l.bad_credentials_burst == 0 {
            return bad("limits.bad_credentials_burst", "must be greater than 0");
        }
        if l.bad_credentials_period_secs == 0 {
            return bad(
                "limits.bad_credentials_period_secs",
                "must be greater than 0",
            );
        }
        if l.max_tracked_keys < 100 {
            return bad("limits.max_tracked_keys", "must be at least 100");
        }
        if let Some(secret) = &self.credentials.secret {
            if secret.len() < 32 {
                return bad(
                    "credentials.secret",
                    "must be at least 32 characters (use e.g. `openssl rand -hex 32`)",
                );
            }
        }
        if self.tenants.is_empty() {
            return bad("tenants", "at least one tenant is required");
        }
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            if t.name.is_empty() {
                return bad(&format!("tenants[{i}].name"), "must not be empty");
            }
            if !names.insert(t.name.as_str()) {
                return bad(&format!("tenants[{i}].name"), "duplicate tenant name");
            }
            for origin in &t.cors_origins {
                if let Err(why) = crate::edge::cors::check_origin_pattern(origin) {
                    return bad(&format!("tenants[{i}].cors_origins"), &why);
                }
            }
        }
        if self.chat.instances.is_empty() {
            return bad("chat.instances", "at least one instance is required");
        }
        let mut aliases = std::collections::HashSet::new();
        for (i, inst) in self.chat.instances.iter().enumerate() {
            let key = |f: &str| format!("chat.instances[{i}].{f}");
            if inst.alias.is_empty()
                || inst.alias.len() > 64
                || !inst
                    .alias
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return bad(&key("alias"), "1 to 64 characters of [A-Za-z0-9_-]");
            }
            if !aliases.insert(inst.alias.as_str()) {
                return bad(&key("alias"), "duplicate alias");
            }
            if !(1..=1000).contains(&inst.weight) {
                return bad(&key("weight"), "must be between 1 and 1000");
            }
            for t in &inst.tenants {
                if !names.contains(t.as_str()) {
                    return bad(&key("tenants"), &format!("unknown tenant `{t}`"));
                }
            }
            match (inst.kind, &inst.address) {
                (InstanceKind::Tcp, None) => {
                    return bad(&key("address"), "required for kind = \"tcp\" (host:port)")
                }
                (InstanceKind::Tcp, Some(a))
                    if a.rsplit_once(':')
                        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) =>
                {
                    return bad(&key("address"), "must be host:port");
                }
                (InstanceKind::Tcp, Some(_)) | (_, None) => {}
                (_, Some(_)) => return bad(&key("address"), "only for kind = \"tcp\""),
            }
            match (inst.kind, &inst.http) {
                (InstanceKind::Http, None) => {
                    return bad(&key("http"), "required for kind = \"http\"")
                }
                (InstanceKind::Http, Some(http)) => {
                    if let Err((field, why)) = http.adapter_config().validate() {
                        return bad(&key(&format!("http.{field}")), &why);
                    }
                }
                (_, Some(_)) => return bad(&key("http"), "only for kind = \"http\""),
                (_, None) => {}
            }
        }
        let h = &self.chat.health;
        for (name, value) in [
            ("chat.health.interval_ms", h.interval_ms),
            ("chat.health.timeout_ms", h.timeout_ms),
            ("chat.health.rise", u64::from(h.rise)),
            ("chat.health.fall", u64::from(h.fall)),
            ("chat.health.eject_after", u64::from(h.eject_after)),
            ("chat.health.eject_ms", h.eject_ms),
        ] {
            if value == 0 {
                return bad(name, "must be greater than 0");
            }
        }
        let tcp = &self.tcp;
        if !(1..=64).contains(&tcp.connections) {
            return bad("tcp.connections", "must be between 1 and 64");
        }
        if tcp.max_in_flight == 0 {
            return bad("tcp.max_in_flight", "must be greater than 0");
        }
        for (name, value) in [
            ("tcp.connect_timeout_ms", tcp.connect_timeout_ms),
            ("tcp.request_timeout_ms", tcp.request_timeout_ms),
            ("tcp.backoff_min_ms", tcp.backoff_min_ms),
            ("tcp.status_interval_ms", tcp.status_interval_ms),
        ] {
            if value == 0 {
                return bad(name, "must be greater than 0");
            }
        }
        if tcp.backoff_max_ms < tcp.backoff_min_ms {
            return bad("tcp.backoff_max_ms", "must be at least tcp.backoff_min_ms");
        }
        if tcp.request_timeout_ms > self.server.request_timeout_ms {
            return bad(
                "tcp.request_timeout_ms",
                "must be at most server.request_timeout_ms",
            );
        }
        self.gms.validate(&self.tenants)?;
        if self.mock.files.max_file_size > self.mock.files.max_total_size {
            return bad(
                "mock.files.max_file_size",
                "must not exceed mock.files.max_total_size",
            );
        }
        if self.mock.disconnect_timeout_secs == 0 {
            return bad("mock.disconnect_timeout_secs", "must be greater than 0");
        }
        if self.mock.session_limit == 0 {
            return bad("mock.session_limit", "must be greater than 0");
        }
        // Its messages name the key (`email.…`) already.
        self.email.validate().map_err(ConfigError)?;
        Ok(())
    }

    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("gwcfg-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.toml");
        std::fs::write(&path, toml).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let result = Config::load_with_env(&path, env);
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    const MINIMAL: &str = r#"
        [[tenants]]
        name = "Environment"
        [[chat.instances]]
        alias = "117"
        kind = "mock"
    "#;

    #[test]
    fn repository_default_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml");
        let config = Config::load_with_env(&path, std::iter::empty()).unwrap();
        let aliases: Vec<_> = config.chat.instances.iter().map(|i| &i.alias[..]).collect();
        assert_eq!(aliases, ["117", "118"]);
        assert!(config.tenant("Environment").is_some());
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = load(
            MINIMAL,
            &[
                ("GATEWAY__SERVER__LISTEN", "127.0.0.1:9000"),
                ("GATEWAY__MOCK__SESSION_LIMIT", "5"),
                ("OTHER__SERVER__LISTEN", "1.2.3.4:1"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.mock.session_limit, 5);
    }

    #[test]
    fn errors_name_the_key() {
        let e = load(MINIMAL, &[("GATEWAY__SERVER__LISTEN", "nowhere")]).unwrap_err();
        assert!(e.to_string().contains("server.listen"), "{e}");
        let e = load(&format!("{MINIMAL}\n[server]\nlisten_typo = 1\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("listen_typo"), "{e}");
        let e = load(&MINIMAL.replace("\"mock\"", "\"smoke\""), &[]).unwrap_err();
        assert!(e.to_string().contains("kind"), "{e}");
        let e = load(
            &format!("{MINIMAL}\n[credentials]\nsecret = \"short\"\n"),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("credentials.secret"), "{e}");
        let tcp = |extra: &str| {
            format!("{MINIMAL}\n[[chat.instances]]\nalias = \"200\"\nkind = \"tcp\"\n{extra}")
        };
        let e = load(&tcp(""), &[]).unwrap_err();
        assert!(e.to_string().contains("chat.instances[1].address"), "{e}");
        let e = load(&tcp("address = \"nohost\"\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("chat.instances[1].address"), "{e}");
        let c = load(
            &tcp("address = \"chat1.example:7117\"\n[tcp]\nconnections = 3\n"),
            &[],
        )
        .unwrap();
        assert_eq!(c.chat.instances[1].kind, InstanceKind::Tcp);
        assert_eq!(c.tcp.adapter_config("a:1").connections, 3);
        let e = load(
            &tcp("address = \"h:1\"\n[tcp]\nrequest_timeout_ms = 60000\n"),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("tcp.request_timeout_ms"), "{e}");
        let e = load(&format!("{MINIMAL}address = \"h:1\"\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("chat.instances[0].address"), "{e}");
        for (env, key) in [
            ("GATEWAY__LIMITS__IDLE_TIMEOUT_MS", "limits.idle_timeout_ms"),
            ("GATEWAY__LIMITS__MAX_CONNECTIONS", "limits.max_connections"),
            (
                "GATEWAY__LIMITS__MAX_HEADER_BYTES",
                "limits.max_header_bytes",
            ),
            ("GATEWAY__ADMIN__TOKEN", "admin.token"),
            (
                "GATEWAY__SERVER__SHUTDOWN_DEADLINE_MS",
                "server.shutdown_deadline_ms",
            ),
        ] {
            let e = load(MINIMAL, &[(env, "0")]).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
        let cors = MINIMAL.replace(
            "name = \"Environment\"",
            "name = \"Environment\"\ncors_origins = [\"https://shop.example.com/\"]",
        );
        let e = load(&cors, &[]).unwrap_err();
        assert!(e.to_string().contains("tenants[0].cors_origins"), "{e}");
        let e = load(
            MINIMAL,
            &[
                ("GATEWAY__SERVER__LISTEN", "127.0.0.1:9000"),
                ("GATEWAY__ADMIN__LISTEN", "127.0.0.1:9000"),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().contains("admin.listen"), "{e}");
        let dup = format!("{MINIMAL}\n[[chat.instances]]\nalias = \"117\"\nkind = \"mock\"\n");
        let e = load(&dup, &[]).unwrap_err();
        assert!(e.to_string().contains("chat.instances[1].alias"), "{e}");
    }

    #[test]
    fn gms_http_and_file_sections() {
        let toml = format!(
            "{MINIMAL}\n[[chat.instances]]\nalias = \"gms\"\nkind = \"http\"\n\
             [chat.instances.http]\nbase_url = \"https://gms.example:8443/p\"\n\
             [chat.instances.http.services]\n\"Environment/sales\" = \"sales\"\n\
             [[gms.services]]\nname = \"customer-support\"\ntenant = \"Environment\"\n"
        );
        let c = load(&toml, &[("GATEWAY__MOCK__FILES__MAX_FILES", "2")]).unwrap();
        let http = c.chat.instances[1].http.as_ref().unwrap().adapter_config();
        assert_eq!(http.service_for("Environment", "sales"), "sales");
        assert_eq!(
            http.service_for("Environment", "default"),
            "customer-support"
        );
        assert_eq!(
            c.gms.service("customer-support").unwrap().tenant,
            "Environment"
        );
        assert_eq!(c.mock.behaviour().files.max_files, 2);
        let keyed = load(
            &format!("{toml}[gms.tenant_api_keys]\nEnvironment = \"0123456789abcdef\"\n"),
            &[],
        )
        .unwrap();
        let svc = keyed.gms.service("customer-support").unwrap();
        assert_eq!(keyed.gms.api_key(svc), Some("0123456789abcdef"));

        let cases = [
            (
                format!("{MINIMAL}\n[chat.health]\nrise = 0\n"),
                "chat.health.rise",
            ),
            (
                format!("{MINIMAL}\n[admin]\ntoken = \"short\"\n"),
                "admin.token",
            ),
            (format!("{MINIMAL}\nstate = \"sleeping\"\n"), "state"),
            (
                format!("{MINIMAL}\n[[chat.instances]]\nalias = \"g\"\nkind = \"http\"\n"),
                "chat.instances[1].http",
            ),
            (
                toml.replace("https://gms.example:8443/p", "gms.example"),
                "chat.instances[1].http.base_url",
            ),
            (
                format!("{MINIMAL}\n[chat.instances.http]\nbase_url = \"http://x\"\n"),
                "chat.instances[0].http",
            ),
            (
                toml.replace("tenant = \"Environment\"", "tenant = \"Nope\""),
                "gms.services[0].tenant",
            ),
            (
                format!("{toml}api_key = \"short\"\n"),
                "gms.services[0].api_key",
            ),
            (
                format!("{MINIMAL}\n[mock.files]\nmax_file_size = 10\nmax_total_size = 5\n"),
                "mock.files.max_file_size",
            ),
            (
                format!("{MINIMAL}\n[gms.tenant_api_keys]\nNope = \"0123456789abcdef\"\n"),
                "gms.tenant_api_keys.Nope",
            ),
        ];
        for (text, key) in cases {
            let e = load(&text, &[]).unwrap_err();
            assert!(e.to_string().contains(key), "{key} not named in: {e}");
        }
    }
}
