//! The `[gms]` section: the GMS dialect's service names, their tenants and API keys, and
//! its upload bound.
//!
//! Owns these keys, their defaults and their local validation. Whether a named tenant
//! exists is asked of the caller (the config module knows the tenants); this module must
//! not know the rest of the configuration.

use std::collections::{BTreeMap, HashSet};

use config_types::{Invalid, Secret};
use serde::Deserialize;

use crate::edge::error::ReplyStatus;

/// The GMS dialect front end.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
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
    pub tenant_api_keys: BTreeMap<String, Secret>,
    /// The HTTP status of replies with statusCode 1 or 2 on every service that sets none:
    /// `rest` (400, 401, 404, 409, 503…; the default) or `ok` (200, for widgets that treat
    /// any other status as a transport failure). Refusals made before the request is read
    /// keep their status either way (docs/errors.md).
    pub reply_status: ReplyStatus,
}

impl Default for GmsConfig {
    fn default() -> Self {
        GmsConfig {
            services: Vec::new(),
            max_upload_bytes: 1024 * 1024,
            tenant_api_keys: BTreeMap::new(),
            reply_status: ReplyStatus::default(),
        }
    }
}

/// One GMS service name.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
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
    pub api_key: Option<Secret>,
    /// This service's `reply_status`, over `gms.reply_status`.
    #[serde(default)]
    pub reply_status: Option<ReplyStatus>,
}

impl GmsConfig {
    pub fn service(&self, name: &str) -> Option<&GmsServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The API key a service's requests must carry, if any: its own, else its tenant's.
    pub fn api_key<'a>(&'a self, service: &'a GmsServiceConfig) -> Option<&'a str> {
        service
            .api_key
            .as_ref()
            .or_else(|| self.tenant_api_keys.get(&service.tenant))
            .map(Secret::expose)
    }

    /// Checks what types alone cannot; `is_tenant` says whether a tenant name is
    /// configured. The key is relative to `[gms]`.
    pub fn validate(&self, is_tenant: impl Fn(&str) -> bool) -> Result<(), Invalid> {
        if self.max_upload_bytes < 256 {
            return Err(Invalid::new("max_upload_bytes", "must be at least 256"));
        }
        for (tenant, key) in &self.tenant_api_keys {
            let name = format!("tenant_api_keys.{tenant}");
            if !is_tenant(tenant) {
                return Err(Invalid::new(name, "unknown tenant"));
            }
            if key.len() < 16 {
                return Err(Invalid::new(name, "must be at least 16 characters"));
            }
        }
        let mut names = HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let key = |f: &str| format!("services[{i}].{f}");
            if s.name.is_empty() || s.name.contains('/') {
                return Err(Invalid::new(key("name"), "one non-empty path segment"));
            }
            if !names.insert(s.name.as_str()) {
                return Err(Invalid::new(key("name"), "duplicate service name"));
            }
            if !is_tenant(&s.tenant) {
                let why = format!("unknown tenant `{}`", s.tenant);
                return Err(Invalid::new(key("tenant"), why));
            }
            if s.endpoint.as_deref() == Some("") {
                let why = "must not be empty (leave it out instead)";
                return Err(Invalid::new(key("endpoint"), why));
            }
            if s.api_key.as_ref().is_some_and(|k| k.len() < 16) {
                return Err(Invalid::new(
                    key("api_key"),
                    "must be at least 16 characters",
                ));
            }
        }
        Ok(())
    }
}
