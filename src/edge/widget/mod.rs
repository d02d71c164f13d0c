//! The chat widget the gateway serves: its files, its configuration and the demo page.
//!
//! Owns the widget's routes under `widget.path` (`widget.js`, `widget.css`, `config.json`,
//! and `demo.css`, the demo page's style),
//! the demo page's handler (routed at `/` by `edge::routes`), the files themselves (built
//! into the binary from `widget/` at the repository root: no build step, no CDN), their
//! content types, `Cache-Control` and `ETag`, and the demo page's Content-Security-Policy
//! (no inline script or style: the widget is a file). `config.json` is the `[widget]`
//! section as the widget reads it. It must not know chats, credentials or backends: the
//! widget is a client of the public Web API and GMS routes like any other, and the shared
//! middleware (`edge::layers`: `nosniff`, CORS, limits) covers these routes as it covers
//! every route.

mod config;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

pub use self::config::{
    OpenHours, PrechatField, Transport, WidgetColors, WidgetConfig, DEFAULT_PATH,
};
use super::Failure;
use crate::error::Error;

const SCRIPT: &[u8] = include_bytes!("../../../widget/widget.js");
const STYLE: &[u8] = include_bytes!("../../../widget/widget.css");
const DEMO: &str = include_str!("../../../widget/index.html");
const DEMO_STYLE: &[u8] = include_bytes!("../../../widget/demo.css");

/// The demo page's policy: its own files only, no inline script or style, no framing.
pub const DEMO_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The widget's files may be cached for this long, then revalidated by their `ETag`.
const ASSET_CACHE: &str = "public, max-age=300";

/// One file as served: bytes, content type, cache policy and entity tag.
#[derive(Clone)]
struct Served {
    bytes: Bytes,
    content_type: &'static str,
    cache: &'static str,
    etag: HeaderValue,
    csp: Option<&'static str>,
}

impl Served {
    fn new(bytes: Bytes, content_type: &'static str, cache: &'static str) -> Served {
        let mut h = DefaultHasher::new();
        bytes.hash(&mut h);
        let etag = HeaderValue::from_str(&format!("\"{:016x}\"", h.finish()))
            .unwrap_or(HeaderValue::from_static("\"0\""));
        Served {
            bytes,
            content_type,
            cache,
            etag,
            csp: None,
        }
    }

    fn reply(&self, headers: &HeaderMap) -> Response {
        let fresh = headers
            .get(IF_NONE_MATCH)
            .is_some_and(|tags| tags.as_bytes() == self.etag.as_bytes());
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            self.bytes.clone().into_response()
        };
        let h = response.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        h.insert(CACHE_CONTROL, HeaderValue::from_static(self.cache));
        h.insert(ETAG, self.etag.clone());
        // A page that isolates itself (COEP) may still load the widget from the gateway.
        h.insert(
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("cross-origin"),
        );
        if let Some(csp) = self.csp {
            h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
        }
        response
    }

    /// A handler answering this file.
    fn handler(
        self,
    ) -> impl Fn(HeaderMap) -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
        let served = Arc::new(self);
        move |headers: HeaderMap| std::future::ready(served.reply(&headers))
    }
}

/// `config.json`: the `[widget]` section as the widget reads it, with the tenant resolved.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClientConfig<'a> {
    tenant: &'a str,
    endpoint: Option<&'a str>,
    title: &'a str,
    intro: &'a str,
    colors: &'a WidgetColors,
    prechat_fields: &'a [PrechatField],
    transport: Transport,
    poll_interval_ms: u64,
    leave_message: bool,
    mailbox: Option<&'a str>,
    hours: Vec<OpenHours>,
    time_zone: &'a str,
    file_service: Option<&'a str>,
}

/// The widget's routes, to be merged into the public application: none when
/// `widget.enabled` is false. `tenant` is the tenant the widget names (`widget.tenant`, or
/// the first tenant). The routes are written relative to `widget.path` and nested there.
pub fn routes<S>(config: &WidgetConfig, tenant: &str) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    if !config.enabled {
        return Router::new();
    }
    let client = ClientConfig {
        tenant,
        endpoint: config.endpoint.as_deref(),
        title: &config.title,
        intro: &config.intro,
        colors: &config.colors,
        prechat_fields: &config.prechat_fields,
        transport: config.transport,
        poll_interval_ms: config.poll_interval_ms,
        leave_message: config.leave_message,
        mailbox: config.mailbox.as_deref(),
        // Checked when the configuration was read.
        hours: config
            .hours
            .iter()
            .filter_map(|h| config::parse_hours(h).ok())
            .collect(),
        time_zone: &config.time_zone,
        file_service: config.file_service.as_deref(),
    };
    let json = serde_json::to_vec(&client).unwrap_or_else(|_| b"{}".to_vec());
    let script = Served::new(
        Bytes::from_static(SCRIPT),
        "text/javascript; charset=utf-8",
        ASSET_CACHE,
    );
    let style = Served::new(
        Bytes::from_static(STYLE),
        "text/css; charset=utf-8",
        ASSET_CACHE,
    );
    let demo_style = Served::new(
        Bytes::from_static(DEMO_STYLE),
        "text/css; charset=utf-8",
        ASSET_CACHE,
    );
    let settings = Served::new(Bytes::from(json), "application/json", "no-cache");
    let files = Router::new()
        .route("/widget.js", get(script.handler()))
        .route("/widget.css", get(style.handler()))
        .route("/config.json", get(settings.handler()))
        .route("/demo.css", get(demo_style.handler()))
        // Nested, these routes would answer another method with the outer fallback (404).
        .method_not_allowed_fallback(|| async { Failure::from(Error::MethodNotAllowed) });
    match config.path.trim_end_matches('/') {
        "" => files,
        prefix => Router::new().nest(prefix, files),
    }
}

/// The demo page's handler (`GET /`): a page with the widget on it, under [`DEMO_CSP`].
/// Its script and style come from `widget.path`.
pub fn demo_page(
    config: &WidgetConfig,
) -> impl Fn(HeaderMap) -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
    let page = DEMO.replace(DEFAULT_PATH, &config.path);
    let mut served = Served::new(Bytes::from(page), "text/html; charset=utf-8", "no-cache");
    served.csp = Some(DEMO_CSP);
    served.handler()
}
