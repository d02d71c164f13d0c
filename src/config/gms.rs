//! Configuration of the GMS bridge: the GMS dialect front end (`[gms]`), HTTP (GMS)
//! instances (`[chat.instances.http]`) and the mock's file-transfer rules (`[mock.files]`).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, TenantConfig};

/// The GMS dialect front end.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GmsConfig {
    /// The service names GMS clients use (`/genesys/2/chat/{name}`), each mapped to a
    /// tenant. A request naming another service is refused.
    pub services: Vec<GmsServiceConfig>,
    /// Largest GMS request body in bytes, file uploads included (the per-chat file rules of
    /// the backend still apply).
    pub max_upload_bytes: usize,
    /// API key per tenant: requests to any service of that tenant must carry it in
    /// `apikey` or `x-api-key`, unless the service sets its own `api_key`. Never logged.
    pub tenant_api_keys: BTreeMap<String, String>,
}

impl Default for GmsConfig {
    fn default() -> Self {
        GmsConfig {
            services: Vec::new(),
            max_upload_bytes: 1024 * 1024,
            tenant_api_keys: BTreeMap::new(),
        }
    }
}

/// One GMS service name.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GmsServiceConfig {
    /// The `{serviceName}` of the URL (matched exactly).
    pub name: String,
    /// The tenant its chats belong to.
    pub tenant: String,
    /// The endpoint (queue) of its chats; the tenant's default endpoint when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// When set, every request to this service must carry this key in the `apikey` or
    /// `x-api-key` header (compared in constant time). Never logged.
    #[serde(default)]
    pub api_key: Option<String>,
}

impl GmsConfig {
    pub fn service(&self, name: &str) -> Option<&GmsServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The API key a service's requests must carry, if any: its own, else its tenant's.
    pub fn api_key<'a>(&'a self, service: &'a GmsServiceConfig) -> Option<&'a str> {
        service.api_key.as_deref().or_else(|| {
            self.tenant_api_keys
                .get(&service.tenant)
                .map(String::as_str)
        })
    }

    pub(super) fn validate(&self, tenants: &[TenantConfig]) -> Result<(), ConfigError> {
        let bad = |key: String, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.max_upload_bytes < 256 {
            return bad("gms.max_upload_bytes".into(), "must be at least 256");
        }
        for (tenant, key) in &self.tenant_api_keys {
            let name = format!("gms.tenant_api_keys.{tenant}");
            if !tenants.iter().any(|t| t.name == *tenant) {
                return bad(name, "unknown tenant");
            }
            if key.len() < 16 {
                return bad(name, "must be at least 16 characters");
            }
        }
        let mut names = HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let key = |f: &str| format!("gms.services[{i}].{f}");
            if s.name.is_empty() || s.name.contains('/') {
                return bad(key("name"), "one non-empty path segment");
            }
            if !names.insert(s.name.as_str()) {
                return bad(key("name"), "duplicate service name");
            }
            if !tenants.iter().any(|t| t.name == s.tenant) {
                return bad(key("tenant"), &format!("unknown tenant `{}`", s.tenant));
            }
            if s.endpoint.as_deref() == Some("") {
                return bad(key("endpoint"), "must not be empty (leave it out instead)");
            }
            if s.api_key.as_ref().is_some_and(|k| k.len() < 16) {
                return bad(key("api_key"), "must be at least 16 characters");
            }
        }
        Ok(())
    }
}

/// An HTTP (GMS) instance: `kind = "http"` with a `[chat.instances.http]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpInstanceConfig {
    /// Where GMS listens, e.g. `https://gms.example.com:8443`; `/genesys/2/chat/…` is
    /// appended (after any path prefix).
    pub base_url: String,
    /// The GMS chat service of chats that `services` does not place.
    #[serde(default = "default_service")]
    pub service: String,
    /// Service per `"tenant/endpoint"` or per `"tenant"` (the more precise key wins).
    #[serde(default)]
    pub services: BTreeMap<String, String>,
    /// Header carrying `api_key` (for an API gateway in front of GMS).
    #[serde(default = "default_api_key_header")]
    pub api_key_header: String,
    /// Sent in `api_key_header` on every request when set. Never logged.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Bound on connecting to GMS, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Bound on one GMS request, in milliseconds; keep it below `server.request_timeout_ms`
    /// so GMS's slowness is reported as such.
    #[serde(default = "default_http_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_service() -> String {
    "customer-support".into()
}
fn default_api_key_header() -> String {
    "x-api-key".into()
}
fn default_connect_timeout_ms() -> u64 {
    2_000
}
fn default_http_request_timeout_ms() -> u64 {
    8_000
}

impl HttpInstanceConfig {
    pub fn adapter_config(&self) -> backend_http::HttpConfig {
        backend_http::HttpConfig {
            base_url: self.base_url.clone(),
            service: self.service.clone(),
            services: self.services.clone(),
            api_key: self
                .api_key
                .as_ref()
                .map(|k| (self.api_key_header.clone(), k.clone())),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
        }
    }
}
