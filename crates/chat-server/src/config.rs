//! The server's configuration: command line, environment and an optional TOML file, merged once
//! at start and validated there.
//!
//! Precedence, highest first: a flag, its environment variable, the file named by `--config`,
//! the default. Owns parsing and validation only; it must not start anything.

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::time::Duration;

use chat_engine::Behaviour;
use chat_protocol::auth::MIN_SECRET_BYTES;
use clap::Parser;
use config_types::Secret;
use serde::Deserialize;
use thiserror::Error;

/// Everything a running server needs. Plain data, valid once built by [`Config::load`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (`host:port`; port 0 picks a free one, printed at start).
    pub listen: String,
    /// This instance's alias: reported to clients, and what the Web API shows as `alias`.
    pub alias: String,
    /// Shared store URL: `redis://host:port[/db]` (one server; `rediss://` for TLS),
    /// `redis+sentinel://host:port,host:port/master[/db]` (the master a set of Sentinels
    /// names) or `redis+cluster://host:port,host:port,...` (a Redis Cluster). Without one
    /// chats live in memory only and `restore` is unsupported.
    pub store: Option<String>,
    /// Most client connections at once; more are closed as soon as accepted.
    pub max_connections: usize,
    /// Most calls in flight on one connection; past it the server stops reading that
    /// connection until one finishes (backpressure through TCP).
    pub max_in_flight_per_connection: usize,
    /// Most `watch` calls (protocol version 3, the long poll) held at once on one
    /// connection. Held watches have their own bound, apart from
    /// `max_in_flight_per_connection`, so thousands of open streams never hold up normal
    /// calls; past it a watch is answered at once with `overloaded` (retryable).
    pub max_watches_per_connection: usize,
    /// The longest a `watch` is held, whatever `waitMs` it asks for.
    pub max_watch_wait: Duration,
    /// A new connection must complete the handshake within this.
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long, and holds no `watch`, is closed.
    /// Clients keep an idle connection open by calling `status`.
    pub idle_timeout: Duration,
    /// A reply that cannot be written within this (a peer that does not read) closes the
    /// connection.
    pub write_timeout: Duration,
    /// A store operation that takes longer fails the call with `storeUnavailable` (also
    /// Redis's response timeout).
    pub store_timeout: Duration,
    /// One attempt to (re)connect to the store is given up after this. A reconnect is one
    /// attempt, made by the first call after the connection broke: while Redis is away
    /// calls fail at once, and the first call after it is back reconnects.
    pub store_connect_timeout: Duration,
    /// Replicas that must confirm a save (Redis `WAIT`) before the call is acknowledged;
    /// fewer within `store_replicas_ack_timeout` and the call fails (`storeUnavailable`,
    /// retryable, not acknowledged). 0 (the default): the master's answer is enough; 1 is
    /// recommended with Sentinel or Cluster, so an acknowledged save survives a failover.
    pub store_replicas_ack: u32,
    /// How long a save waits for `store_replicas_ack` replicas (default 500 ms); less than
    /// `store_timeout`.
    pub store_replicas_ack_timeout: Duration,
    /// On SIGTERM, how long calls in flight get to finish before the process exits.
    pub shutdown_grace: Duration,
    /// How the hosted chats behave (greeting, agent, timeouts, session limit).
    pub behaviour: Behaviour,
    /// The secret shared with the gateways, read from `secret_file`: every connection must
    /// prove it holds it in the handshake (protocol version 2) before any call. Never logged.
    pub secret: Option<Secret>,
    /// A rotation's previous secret, read from `previous_secret_file`: a peer proving either
    /// this or `secret` is served (and answered under the one it proved), so gateways can
    /// move to the new secret one at a time. Never logged.
    pub previous_secret: Option<Secret>,
    /// Serve without a secret on an address other than loopback (a private network the
    /// operator vouches for). Without it such a server refuses to start.
    pub allow_no_secret: bool,
}

/// Command-line flags, each also settable from the environment.
#[derive(Debug, Default, Parser)]
// A repeated flag overrides the earlier one, so wrappers can append overrides.
#[command(
    name = "chat-server",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("GIT_VERSION"), ")"),
    about = "A chat server speaking the chat-server protocol",
    args_override_self = true
)]
pub struct Args {
    /// TOML file with any of the settings below (snake_case names).
    #[arg(long, env = "CHAT_SERVER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:7117.
    #[arg(long, env = "CHAT_SERVER_LISTEN")]
    pub listen: Option<String>,
    /// This instance's alias, e.g. 117.
    #[arg(long, env = "CHAT_SERVER_ALIAS")]
    pub alias: Option<String>,
    /// Shared store: redis://host:6379, redis+sentinel://host:26379,host:26379/mymaster or
    /// redis+cluster://host:7000,host:7001,host:7002.
    #[arg(long, env = "CHAT_SERVER_STORE")]
    pub store: Option<String>,
    #[arg(long, env = "CHAT_SERVER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    #[arg(long, env = "CHAT_SERVER_MAX_IN_FLIGHT_PER_CONNECTION")]
    pub max_in_flight_per_connection: Option<usize>,
    /// Most `watch` calls held at once per connection (default 20000).
    #[arg(long, env = "CHAT_SERVER_MAX_WATCHES_PER_CONNECTION")]
    pub max_watches_per_connection: Option<usize>,
    /// The longest a `watch` is held, in ms (default 60000).
    #[arg(long, env = "CHAT_SERVER_MAX_WATCH_WAIT_MS")]
    pub max_watch_wait_ms: Option<u64>,
    #[arg(long, env = "CHAT_SERVER_HANDSHAKE_TIMEOUT_MS")]
    pub handshake_timeout_ms: Option<u64>,
    #[arg(long, env = "CHAT_SERVER_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    #[arg(long, env = "CHAT_SERVER_WRITE_TIMEOUT_MS")]
    pub write_timeout_ms: Option<u64>,
    #[arg(long, env = "CHAT_SERVER_STORE_TIMEOUT_MS")]
    pub store_timeout_ms: Option<u64>,
    #[arg(long, env = "CHAT_SERVER_STORE_CONNECT_TIMEOUT_MS")]
    pub store_connect_timeout_ms: Option<u64>,
    /// Replicas that must confirm a save before it is acknowledged (Redis WAIT; default 0).
    #[arg(long, env = "CHAT_SERVER_STORE_REPLICAS_ACK")]
    pub store_replicas_ack: Option<u32>,
    /// How long a save waits for those replicas, in ms (default 500).
    #[arg(long, env = "CHAT_SERVER_STORE_REPLICAS_ACK_TIMEOUT_MS")]
    pub store_replicas_ack_timeout_ms: Option<u64>,
    #[arg(long, env = "CHAT_SERVER_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Most open chats; past it new chats are refused (retryable). At least 1.
    #[arg(long, env = "CHAT_SERVER_SESSION_LIMIT", value_parser = at_least_one)]
    pub session_limit: Option<NonZeroU64>,
    #[arg(long, env = "CHAT_SERVER_AGENT_JOIN_DELAY_MS")]
    pub agent_join_delay_ms: Option<u64>,
    #[arg(long, env = "CHAT_SERVER_AGENT_REPLY_DELAY_MS")]
    pub agent_reply_delay_ms: Option<u64>,
    /// A customer silent for this long is removed and the chat ends.
    #[arg(long, env = "CHAT_SERVER_DISCONNECT_TIMEOUT_MS")]
    pub disconnect_timeout_ms: Option<u64>,
    /// How long an ended chat stays readable.
    #[arg(long, env = "CHAT_SERVER_ENDED_RETENTION_MS")]
    pub ended_retention_ms: Option<u64>,
    /// Longest text the customer may send in one call, in bytes (at most 65536).
    #[arg(long, env = "CHAT_SERVER_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Most events one chat's transcript holds.
    #[arg(long, env = "CHAT_SERVER_MAX_TRANSCRIPT_EVENTS")]
    pub max_transcript_events: Option<u64>,
    /// Most bytes of content one chat's transcript holds.
    #[arg(long, env = "CHAT_SERVER_MAX_TRANSCRIPT_BYTES")]
    pub max_transcript_bytes: Option<usize>,
    /// A message repeating the customer's latest one within this is a retry, shown once
    /// (0: off).
    #[arg(long, env = "CHAT_SERVER_DUPLICATE_WINDOW_MS")]
    pub duplicate_window_ms: Option<u64>,
    /// File holding the secret shared with the gateways (their `tcp.secret`), at least 32
    /// bytes; surrounding whitespace is ignored. A file, so the secret never shows in `ps`.
    #[arg(long, env = "CHAT_SERVER_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// File holding the previous shared secret during a rotation: gateways proving it are
    /// still served until it is removed. Same rules as `secret_file`; needs it.
    #[arg(long, env = "CHAT_SERVER_PREVIOUS_SECRET_FILE")]
    pub previous_secret_file: Option<PathBuf>,
    /// Serve without a secret on a non-loopback address (a private network only).
    #[arg(long, env = "CHAT_SERVER_ALLOW_NO_SECRET")]
    pub allow_no_secret: bool,
}

/// The file's shape: the flags' names, snake_case, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    alias: Option<String>,
    store: Option<String>,
    max_connections: Option<usize>,
    max_in_flight_per_connection: Option<usize>,
    max_watches_per_connection: Option<usize>,
    max_watch_wait_ms: Option<u64>,
    handshake_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    write_timeout_ms: Option<u64>,
    store_timeout_ms: Option<u64>,
    store_connect_timeout_ms: Option<u64>,
    store_replicas_ack: Option<u32>,
    store_replicas_ack_timeout_ms: Option<u64>,
    shutdown_grace_ms: Option<u64>,
    /// Refused at 0 by serde, the error naming the key's line.
    session_limit: Option<NonZeroU64>,
    agent_join_delay_ms: Option<u64>,
    agent_reply_delay_ms: Option<u64>,
    disconnect_timeout_ms: Option<u64>,
    ended_retention_ms: Option<u64>,
    max_message_bytes: Option<usize>,
    max_transcript_events: Option<u64>,
    max_transcript_bytes: Option<usize>,
    duplicate_window_ms: Option<u64>,
    secret_file: Option<PathBuf>,
    previous_secret_file: Option<PathBuf>,
    allow_no_secret: Option<bool>,
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("missing setting: {0} (flag, environment or config file)")]
    Missing(&'static str),
    /// A chat behaviour setting the engine refuses (`chat_engine::Behaviour::validate`).
    #[error("invalid setting {}: {}", .0.key, .0.reason)]
    Behaviour(#[from] config_types::Invalid),
    #[error("invalid setting {name}: {reason}")]
    Invalid {
        name: &'static str,
        reason: &'static str,
    },
}

impl Config {
    /// Merges flags and environment (already in `args`) over the file over the defaults.
    pub fn load(args: Args) -> Result<Config, ConfigError> {
        let file = match &args.config {
            None => File::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source: Box::new(source),
                })?
            }
        };
        let ms = |flag: Option<u64>, file: Option<u64>, default: u64| {
            Duration::from_millis(flag.or(file).unwrap_or(default))
        };
        let defaults = Behaviour::default();
        let behaviour = Behaviour {
            session_limit: args
                .session_limit
                .or(file.session_limit)
                .unwrap_or(defaults.session_limit),
            agent_join_delay: args
                .agent_join_delay_ms
                .or(file.agent_join_delay_ms)
                .map_or(defaults.agent_join_delay, Duration::from_millis),
            agent_reply_delay: args
                .agent_reply_delay_ms
                .or(file.agent_reply_delay_ms)
                .map_or(defaults.agent_reply_delay, Duration::from_millis),
            disconnect_timeout: args
                .disconnect_timeout_ms
                .or(file.disconnect_timeout_ms)
                .map_or(defaults.disconnect_timeout, Duration::from_millis),
            ended_retention: args
                .ended_retention_ms
                .or(file.ended_retention_ms)
                .map_or(defaults.ended_retention, Duration::from_millis),
            max_message_bytes: args
                .max_message_bytes
                .or(file.max_message_bytes)
                .unwrap_or(defaults.max_message_bytes),
            max_transcript_events: args
                .max_transcript_events
                .or(file.max_transcript_events)
                .unwrap_or(defaults.max_transcript_events),
            max_transcript_bytes: args
                .max_transcript_bytes
                .or(file.max_transcript_bytes)
                .unwrap_or(defaults.max_transcript_bytes),
            duplicate_window: args
                .duplicate_window_ms
                .or(file.duplicate_window_ms)
                .map_or(defaults.duplicate_window, Duration::from_millis),
            ..defaults
        };
        let config = Config {
            listen: args
                .listen
                .or(file.listen)
                .ok_or(ConfigError::Missing("listen"))?,
            alias: args
                .alias
                .or(file.alias)
                .ok_or(ConfigError::Missing("alias"))?,
            store: args.store.or(file.store),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(1024),
            max_in_flight_per_connection: args
                .max_in_flight_per_connection
                .or(file.max_in_flight_per_connection)
                .unwrap_or(256),
            max_watches_per_connection: args
                .max_watches_per_connection
                .or(file.max_watches_per_connection)
                .unwrap_or(20_000),
            max_watch_wait: ms(args.max_watch_wait_ms, file.max_watch_wait_ms, 60_000),
            handshake_timeout: ms(args.handshake_timeout_ms, file.handshake_timeout_ms, 5_000),
            idle_timeout: ms(args.idle_timeout_ms, file.idle_timeout_ms, 60_000),
            write_timeout: ms(args.write_timeout_ms, file.write_timeout_ms, 10_000),
            store_timeout: ms(args.store_timeout_ms, file.store_timeout_ms, 2_000),
            store_connect_timeout: ms(
                args.store_connect_timeout_ms,
                file.store_connect_timeout_ms,
                1_000,
            ),
            store_replicas_ack: args
                .store_replicas_ack
                .or(file.store_replicas_ack)
                .unwrap_or(0),
            store_replicas_ack_timeout: ms(
                args.store_replicas_ack_timeout_ms,
                file.store_replicas_ack_timeout_ms,
                500,
            ),
            shutdown_grace: ms(args.shutdown_grace_ms, file.shutdown_grace_ms, 5_000),
            behaviour,
            secret: match args.secret_file.or(file.secret_file) {
                None => None,
                Some(path) => Some(read_secret(path, "secret_file")?),
            },
            previous_secret: match args.previous_secret_file.or(file.previous_secret_file) {
                None => None,
                Some(path) => Some(read_secret(path, "previous_secret_file")?),
            },
            allow_no_secret: args.allow_no_secret || file.allow_no_secret.unwrap_or(false),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, reason| Err(ConfigError::Invalid { name, reason });
        if self.alias.is_empty() {
            return invalid("alias", "must not be empty");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.max_in_flight_per_connection == 0 {
            return invalid("max_in_flight_per_connection", "must be at least 1");
        }
        if self.max_watches_per_connection == 0 {
            return invalid("max_watches_per_connection", "must be at least 1");
        }
        // The engine's own rules (sizes, files): one list, the engine's.
        self.behaviour.validate()?;
        for (name, value) in [
            ("handshake_timeout_ms", self.handshake_timeout),
            ("idle_timeout_ms", self.idle_timeout),
            ("write_timeout_ms", self.write_timeout),
            ("store_timeout_ms", self.store_timeout),
            ("store_connect_timeout_ms", self.store_connect_timeout),
            (
                "store_replicas_ack_timeout_ms",
                self.store_replicas_ack_timeout,
            ),
            ("disconnect_timeout_ms", self.behaviour.disconnect_timeout),
            ("max_watch_wait_ms", self.max_watch_wait),
        ] {
            if value.is_zero() {
                return invalid(name, "must be more than 0");
            }
        }
        if self.previous_secret.is_some() && self.secret.is_none() {
            return invalid(
                "previous_secret_file",
                "needs secret_file (the secret of the rotation's end)",
            );
        }
        if let Some(store) = &self.store {
            if let Err(reason) = crate::store::Topology::parse(store) {
                return invalid("store", reason);
            }
        }
        if self.store_replicas_ack > 0 && self.store_replicas_ack_timeout >= self.store_timeout {
            return invalid(
                "store_replicas_ack_timeout_ms",
                "must be less than store_timeout_ms (a save waiting for replicas must end before the store call times out)",
            );
        }
        Ok(())
    }
}

/// The secret in `path`, without surrounding whitespace (a trailing newline), refused when
/// shorter than the protocol's minimum.
fn read_secret(path: PathBuf, name: &'static str) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).map_or(0, |m| m.permissions().mode());
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777),
                "the secret file is readable by other users: make it readable by this server's user only (chmod 600)");
        }
    }
    let secret = Secret::from(text.trim());
    if secret.len() < MIN_SECRET_BYTES {
        return Err(ConfigError::Invalid {
            name,
            reason: "the secret must be at least 32 bytes (use e.g. `openssl rand -hex 32`)",
        });
    }
    Ok(secret)
}

/// The secrets a peer may prove, as the handshake check takes them: the current one, then a
/// rotation's previous one.
pub(crate) fn accepted_secrets<'s>(
    secret: &'s Secret,
    previous: Option<&'s Secret>,
) -> Vec<&'s [u8]> {
    std::iter::once(secret)
        .chain(previous)
        .map(|s| s.expose().as_bytes())
        .collect()
}

/// Parses a count that must not be 0 (`--session-limit`); clap names the flag in the error.
fn at_least_one(value: &str) -> Result<NonZeroU64, String> {
    let n: u64 = value.parse().map_err(|e| format!("{e}"))?;
    NonZeroU64::new(n).ok_or_else(|| "must be at least 1".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("chat-server-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7117\"\nalias = \"117\"\nsession_limit = 5\n",
        )
        .unwrap();
        let config = Config::load(Args {
            config: Some(path.clone()),
            alias: Some("118".into()),
            ..Args::default()
        })
        .unwrap();
        assert_eq!(config.alias, "118");
        assert_eq!(config.listen, "127.0.0.1:7117");
        assert_eq!(config.behaviour.session_limit.get(), 5);
        assert_eq!(config.idle_timeout, Duration::from_secs(60));
        assert_eq!(config.behaviour.max_message_bytes, 16 * 1024);
        assert!(matches!(
            Config::load(Args {
                config: Some(path.clone()),
                max_message_bytes: Some(70_000),
                ..Args::default()
            }),
            Err(ConfigError::Behaviour(config_types::Invalid { ref key, .. })) if key == "max_message_bytes"
        ));
        std::fs::write(&path, "alias = \"117\"\nbogus = 1\n").unwrap();
        assert!(matches!(
            Config::load(Args {
                config: Some(path),
                ..Args::default()
            }),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            Config::load(Args::default()),
            Err(ConfigError::Missing("listen"))
        ));
    }

    #[test]
    fn the_secret_is_read_from_its_file_and_a_short_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("chat-server-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        let args = |path: &PathBuf| Args {
            listen: Some("127.0.0.1:0".into()),
            alias: Some("117".into()),
            secret_file: Some(path.clone()),
            ..Args::default()
        };
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        let config = Config::load(args(&path)).unwrap();
        assert_eq!(
            config.secret.as_ref().map(Secret::expose),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
        std::fs::write(&path, "too short\n").unwrap();
        let e = Config::load(args(&path)).unwrap_err();
        assert!(e.to_string().contains("secret_file"), "{e}");
        let e = Config::load(args(&dir.join("missing"))).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_zero_session_limit_is_refused_naming_the_flag_or_key() {
        let e = Args::try_parse_from(["chat-server", "--session-limit", "0"]).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("--session-limit") && e.contains("must be at least 1"),
            "{e}"
        );
        let args = Args::try_parse_from(["chat-server", "--session-limit", "3"]).unwrap();
        assert_eq!(args.session_limit, NonZeroU64::new(3));

        let dir = std::env::temp_dir().join(format!("chat-server-limit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7117\"\nalias = \"117\"\nsession_limit = 0\n",
        )
        .unwrap();
        let e = Config::load(Args {
            config: Some(path),
            ..Args::default()
        })
        .unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("session_limit"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
