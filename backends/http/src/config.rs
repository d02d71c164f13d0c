//! What an HTTP (GMS) instance needs to know: the `[chat.instances.http]` table of a
//! `kind = "http"` instance in the gateway's configuration.
//!
//! Owns the table's keys, defaults and validation; the gateway's config module loads it.

use std::collections::BTreeMap;
use std::time::Duration;

use config_types::{millis, nonzero, Invalid, Secret};
use serde::Deserialize;

/// One GMS cluster. Plain data; [`HttpConfig::validate`] says what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The API the remote speaks: `gms` (GMS Chat API v2, the default) or `webapi` (a Web
    /// API Server's Chat API v2, `/api/v2/chats…`: another Web API Server, or another
    /// gateway, behind this one).
    #[serde(default)]
    pub dialect: Dialect,
    /// Where GMS listens, e.g. `https://gms.example.com:8443` (a path prefix is kept);
    /// `/genesys/2/chat/…` is appended.
    pub base_url: String,
    /// The GMS chat service of chats whose tenant / endpoint `services` does not name.
    #[serde(default = "default_service")]
    pub service: String,
    /// Service per `"tenant/endpoint"` or per `"tenant"`; the more precise key wins.
    #[serde(default)]
    pub services: BTreeMap<String, String>,
    /// Header carrying `api_key` (for an API gateway in front of GMS).
    #[serde(default = "default_api_key_header")]
    pub api_key_header: String,
    /// Sent in `api_key_header` on every request when set. Never logged.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Bound on establishing a connection.
    #[serde(
        rename = "connect_timeout_ms",
        deserialize_with = "millis",
        default = "default_connect_timeout"
    )]
    pub connect_timeout: Duration,
    /// Bound on a whole request, connection included; keep it below the gateway's
    /// `server.request_timeout_ms` so GMS's slowness is reported as such.
    #[serde(
        rename = "request_timeout_ms",
        deserialize_with = "millis",
        default = "default_request_timeout"
    )]
    pub request_timeout: Duration,
    /// How often a held watch (an open SSE stream or CometD connect of a chat on this
    /// instance, `ChatBackend::watch`) reads the chat from the remote while it waits: GMS
    /// pushes nothing to the gateway, so the gateway polls it on the browser's behalf, one
    /// read per open stream per interval. Default 1000, at least 100. A shorter interval
    /// brings events sooner and costs GMS more requests.
    #[serde(
        rename = "watch_poll_ms",
        deserialize_with = "millis",
        default = "default_watch_poll"
    )]
    pub watch_poll: Duration,
}

/// The shortest `watch_poll_ms` accepted.
pub const MIN_WATCH_POLL: Duration = Duration::from_millis(100);

/// The API an `http` instance speaks to its remote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// GMS Chat API v2: `/genesys/2/chat/{service}/…`, form-encoded.
    #[default]
    Gms,
    /// Web API v2: `/api/v2/chats…`, JSON. The chat's tenant is sent as `tenantName`;
    /// `service` and `services` are not used. No file transfer (the Web API has none).
    Webapi,
}

fn default_service() -> String {
    "customer-support".into()
}
fn default_api_key_header() -> String {
    "x-api-key".into()
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(8)
}
fn default_watch_poll() -> Duration {
    Duration::from_millis(1000)
}

impl HttpConfig {
    /// Defaults for a GMS at `base_url`.
    pub fn new(base_url: impl Into<String>) -> HttpConfig {
        HttpConfig {
            dialect: Dialect::default(),
            base_url: base_url.into(),
            service: default_service(),
            services: BTreeMap::new(),
            api_key_header: default_api_key_header(),
            api_key: None,
            connect_timeout: default_connect_timeout(),
            request_timeout: default_request_timeout(),
            watch_poll: default_watch_poll(),
        }
    }

    /// Checks what types cannot; the error names the key (`base_url`, `api_key_header`…).
    pub fn validate(&self) -> Result<(), Invalid> {
        let url = reqwest::Url::parse(&self.base_url)
            .map_err(|e| Invalid::new("base_url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(Invalid::new(
                "base_url",
                "must be an http:// or https:// URL",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Invalid::new("base_url", "must have no query or fragment"));
        }
        for s in std::iter::once(&self.service).chain(self.services.values()) {
            if s.is_empty() || s.contains('/') {
                return Err(Invalid::new(
                    "service",
                    format!("`{s}`: a service name is one path segment"),
                ));
            }
        }
        if let Some(value) = &self.api_key {
            let header = &self.api_key_header;
            if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                let why = format!("`{header}` is not a header name");
                return Err(Invalid::new("api_key_header", why));
            }
            if reqwest::header::HeaderValue::from_str(value.expose()).is_err() || value.is_empty() {
                return Err(Invalid::new("api_key", "must be a non-empty header value"));
            }
        }
        if self.watch_poll < MIN_WATCH_POLL {
            return Err(Invalid::new(
                "watch_poll_ms",
                format!("must be at least {}", MIN_WATCH_POLL.as_millis()),
            ));
        }
        nonzero("connect_timeout_ms", self.connect_timeout)?;
        nonzero("request_timeout_ms", self.request_timeout)
    }

    /// The GMS service for a new chat of `tenant` on `endpoint`.
    pub fn service_for(&self, tenant: &str, endpoint: &str) -> &str {
        self.services
            .get(&format!("{tenant}/{endpoint}"))
            .or_else(|| self.services.get(tenant))
            .unwrap_or(&self.service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_poll_defaults_to_a_second_and_refuses_below_100_ms() {
        let read = |json| serde_json::from_value::<HttpConfig>(json).unwrap();
        let config = read(serde_json::json!({"base_url": "http://gms:8080"}));
        assert_eq!(config.watch_poll, Duration::from_millis(1000));
        assert_eq!(config.validate(), Ok(()));
        let fast = read(serde_json::json!({"base_url": "http://gms:8080", "watch_poll_ms": 99}));
        assert_eq!(fast.validate().unwrap_err().key, "watch_poll_ms");
        let ok = read(serde_json::json!({"base_url": "http://gms:8080", "watch_poll_ms": 100}));
        assert_eq!(
            (ok.validate(), ok.watch_poll),
            (Ok(()), Duration::from_millis(100))
        );
    }
}
