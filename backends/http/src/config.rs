//! What an HTTP (GMS) instance needs to know.

use std::collections::BTreeMap;
use std::time::Duration;

/// One GMS cluster. Plain data; [`HttpConfig::validate`] says what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Where GMS listens, e.g. `https://gms.example.com:8443` (a path prefix is kept).
    pub base_url: String,
    /// The GMS chat service of chats whose tenant / endpoint `services` does not name.
    pub service: String,
    /// Service per `"tenant/endpoint"` or per `"tenant"`; the more precise key wins.
    pub services: BTreeMap<String, String>,
    /// An API key header sent on every request (name, value), for an API gateway in front
    /// of GMS.
    pub api_key: Option<(String, String)>,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on a whole request, connection included.
    pub request_timeout: Duration,
}

impl HttpConfig {
    /// Checks what types cannot; the error names the field (`base_url`, `api_key_header`…).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let url = reqwest::Url::parse(&self.base_url)
            .map_err(|e| ("base_url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(("base_url", "must be an http:// or https:// URL".into()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(("base_url", "must have no query or fragment".into()));
        }
        for s in std::iter::once(&self.service).chain(self.services.values()) {
            if s.is_empty() || s.contains('/') {
                return Err((
                    "service",
                    format!("`{s}`: a service name is one path segment"),
                ));
            }
        }
        if let Some((name, value)) = &self.api_key {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(("api_key_header", format!("`{name}` is not a header name")));
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() || value.is_empty() {
                return Err(("api_key", "must be a non-empty header value".into()));
            }
        }
        if self.connect_timeout.is_zero() {
            return Err(("connect_timeout_ms", "must be greater than 0".into()));
        }
        if self.request_timeout.is_zero() {
            return Err(("request_timeout_ms", "must be greater than 0".into()));
        }
        Ok(())
    }

    /// The GMS service for a new chat of `tenant` on `endpoint`.
    pub fn service_for(&self, tenant: &str, endpoint: &str) -> &str {
        self.services
            .get(&format!("{tenant}/{endpoint}"))
            .or_else(|| self.services.get(tenant))
            .unwrap_or(&self.service)
    }
}
