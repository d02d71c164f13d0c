//! The `[chat]` section: placement, health checks and the instance list, each instance
//! read into the adapter kind it names together with that kind's data.
//!
//! Owns the instance entry's keys and the rules local to one entry or to the list (alias
//! syntax and uniqueness, weight, what each kind requires). Whether an instance's tenants
//! exist is the config module's (it knows the tenants).

use std::collections::HashSet;

use config_types::Invalid;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use crate::router::{AdminState, HealthConfig, Placement};

/// Chat server instances and placement.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// How new chats are spread over instances.
    #[serde(default)]
    pub placement: Placement,
    /// Active and passive health checks of the instances.
    #[serde(default)]
    pub health: HealthConfig,
    /// The chat server instances, each named by its alias.
    #[serde(deserialize_with = "instances")]
    pub instances: Vec<InstanceConfig>,
}

impl ChatConfig {
    /// Checks what types alone cannot; keys are full (`chat.health.interval_ms`).
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.instances.is_empty() {
            return Err(Invalid::new(
                "chat.instances",
                "at least one instance is required",
            ));
        }
        self.health.validate().map_err(|e| e.within("chat.health"))
    }
}

/// One chat server instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceConfig {
    /// The alias clients carry; unique.
    pub alias: String,
    /// Which adapter talks to it, with what that adapter needs.
    pub kind: InstanceKind,
    /// Relative share of new chats (1 to 1000).
    pub weight: u32,
    /// Tenants it serves; empty means all.
    pub tenants: Vec<String>,
    /// `ready`, `drain` or `maint` at start-up (and after a reload that changes it).
    pub state: AdminState,
}

/// Which adapter talks to an instance (`kind = "…"`), carrying what that adapter needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceKind {
    /// The embedded chat engine, in this process (`[mock]` applies).
    Mock,
    /// A standalone `chat-server` process at `address` (`host:port`), over the chat-server
    /// protocol (`[tcp]` applies).
    Tcp { address: String },
    /// A GMS cluster over its Chat API v2: the instance's `[chat.instances.http]` table.
    Http(Box<backend_http::HttpConfig>),
}

impl InstanceKind {
    /// The `kind` as written in the file.
    pub fn name(&self) -> &'static str {
        match self {
            InstanceKind::Mock => "mock",
            InstanceKind::Tcp { .. } => "tcp",
            InstanceKind::Http(_) => "http",
        }
    }

    /// The chat server's `host:port` of a tcp instance.
    pub fn address(&self) -> Option<&str> {
        match self {
            InstanceKind::Tcp { address } => Some(address),
            _ => None,
        }
    }
}

/// The `kind` key.
#[derive(Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Mock,
    Http,
    Tcp,
}

/// One `[[chat.instances]]` entry as written: `kind` beside the keys of every kind.
/// (`#[serde(flatten)]` of a tagged enum would lose `deny_unknown_fields`, and its errors
/// could not name `chat.instances[i].address`.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    alias: String,
    kind: Kind,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    tenants: Vec<String>,
    #[serde(default)]
    state: AdminState,
    /// `kind = "tcp"` only.
    #[serde(default)]
    address: Option<String>,
    /// `kind = "http"` only.
    #[serde(default)]
    http: Option<backend_http::HttpConfig>,
}

fn default_weight() -> u32 {
    1
}

impl Entry {
    /// The typed instance; a refusal's key is relative to the entry.
    fn typed(self) -> Result<InstanceConfig, Invalid> {
        let alias_ok = (1..=64).contains(&self.alias.len())
            && (self.alias.bytes()).all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !alias_ok {
            return Err(Invalid::new("alias", "1 to 64 characters of [A-Za-z0-9_-]"));
        }
        if !(1..=1000).contains(&self.weight) {
            return Err(Invalid::new("weight", "must be between 1 and 1000"));
        }
        if self.kind != Kind::Tcp && self.address.is_some() {
            return Err(Invalid::new("address", "only for kind = \"tcp\""));
        }
        if self.kind != Kind::Http && self.http.is_some() {
            return Err(Invalid::new("http", "only for kind = \"http\""));
        }
        let kind = match (self.kind, self.address, self.http) {
            (Kind::Mock, ..) => InstanceKind::Mock,
            (Kind::Tcp, None, _) => {
                return Err(Invalid::new(
                    "address",
                    "required for kind = \"tcp\" (host:port)",
                ))
            }
            (Kind::Tcp, Some(address), _) => {
                let host_port = address.rsplit_once(':');
                if host_port.is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
                    return Err(Invalid::new("address", "must be host:port"));
                }
                InstanceKind::Tcp { address }
            }
            (Kind::Http, _, None) => {
                return Err(Invalid::new("http", "required for kind = \"http\""))
            }
            (Kind::Http, _, Some(http)) => {
                http.validate().map_err(|e| e.within("http"))?;
                InstanceKind::Http(Box::new(http))
            }
        };
        Ok(InstanceConfig {
            alias: self.alias,
            kind,
            weight: self.weight,
            tenants: self.tenants,
            state: self.state,
        })
    }
}

/// Reads the instance list. A refusal names the entry's key (`chat.instances[1].address`),
/// which a refusal raised inside one entry could not.
fn instances<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<InstanceConfig>, D::Error> {
    let mut aliases = HashSet::new();
    let typed = |(i, entry): (usize, Entry)| {
        let at = format!("chat.instances[{i}]");
        let instance = entry.typed().map_err(|e| e.within(&at))?;
        if !aliases.insert(instance.alias.clone()) {
            return Err(Invalid::new(format!("{at}.alias"), "duplicate alias"));
        }
        Ok(instance)
    };
    let entries = Vec::<Entry>::deserialize(d)?;
    entries
        .into_iter()
        .enumerate()
        .map(typed)
        .collect::<Result<_, Invalid>>()
        .map_err(D::Error::custom)
}
