//! Metrics: the process-wide Prometheus recorder, the metric names, and the metering wrapper
//! around every chat adapter.
//!
//! Owns what is counted and under which names (listed in `docs/operations.md`). It renders the
//! text format for the admin listener; it must not serve HTTP itself or decide anything about
//! a request. Request metrics are recorded by the edge's layer stack, backend metrics by
//! [`MeteredBackend`], gauges (open chats, health) are read from the adapters' cached
//! `load()` when scraped.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use backend_api::{
    BackendError, ChatBackend, ChatCreated, ChatRef, ChatUpdate, FileContent, FileLimits, Load,
    NewChat, NewFile, Refresh,
};
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::RwLock;

use crate::Gateway;

mod config;
pub mod sample;
pub use config::{LogConfig, LogFormat};

pub const HTTP_REQUESTS: &str = "gateway_http_requests_total";
pub const HTTP_DURATION: &str = "gateway_http_request_duration_seconds";
pub const REFUSALS: &str = "gateway_refusals_total";
pub const OPEN_CONNECTIONS: &str = "gateway_open_connections";
pub const OPEN_STREAMS: &str = "gateway_open_streams";
pub const COMETD_HELD_CONNECTS: &str = "gateway_cometd_held_connects";
pub const BACKEND_REQUESTS: &str = "gateway_backend_requests_total";
pub const BACKEND_ERRORS: &str = "gateway_backend_errors_total";
pub const BACKEND_DURATION: &str = "gateway_backend_request_duration_seconds";
pub const BACKEND_UP: &str = "gateway_backend_accepting";
pub const OPEN_CHATS: &str = "gateway_open_chats";
pub const CHAT_LIMIT: &str = "gateway_chat_session_limit";
pub const INSTANCE_FULL: &str = "gateway_instance_full";
/// E-mail metrics: set by the deliverer (`email`), described and registered at zero
/// here so they show before the first e-mail.
pub const EMAIL_SPOOL_DEPTH: &str = email::SPOOL_DEPTH_METRIC;
pub const EMAIL_DELIVERY_FAILURES: &str = email::DELIVERY_FAILURES_METRIC;

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide recorder, installed on first use. Several gateways in one process
/// (tests) share it, as they share the process.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("static, non-empty buckets")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        // A histogram keeps every sample (16 bytes, in blocks of 64) until upkeep folds them
        // into its buckets, and only a scrape ran it: unscraped, two histograms per request
        // grew by 1.3 MB a second at 40k requests a second, and the first scrape had millions
        // of samples to fold. Folded every UPKEEP_EVERY on a thread of its own instead
        // (issue 17), off the runtime's workers.
        let upkeep = handle.clone();
        let started = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "the metrics upkeep thread did not start; histograms are folded at each scrape only");
        }
        handle
    })
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route, operation, statusCode and HTTP status"
    );
    describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "time to answer a request, by route"
    );
    describe_counter!(
        REFUSALS,
        "requests or connections refused by a limit, by reason"
    );
    describe_gauge!(OPEN_CONNECTIONS, "open client connections");
    describe_gauge!(OPEN_STREAMS, "open event streams (SSE)");
    describe_gauge!(
        COMETD_HELD_CONNECTS,
        "CometD /meta/connect requests held open"
    );
    describe_counter!(
        BACKEND_REQUESTS,
        "calls to chat adapters, by alias and call"
    );
    describe_counter!(
        BACKEND_ERRORS,
        "failed calls to chat adapters, by alias, call and kind"
    );
    describe_histogram!(
        BACKEND_DURATION,
        metrics::Unit::Seconds,
        "duration of calls to chat adapters, by alias"
    );
    describe_gauge!(
        BACKEND_UP,
        "1 when the instance accepts new chats, by alias"
    );
    describe_gauge!(OPEN_CHATS, "open chats, by alias");
    describe_gauge!(CHAT_LIMIT, "session limit, by alias");
    describe_gauge!(
        INSTANCE_FULL,
        "1 when the instance has as many open chats as its session limit, by alias (new chats go elsewhere; its chats are still served)"
    );
    describe_gauge!(EMAIL_SPOOL_DEPTH, "e-mails in the spool awaiting delivery");
    describe_counter!(EMAIL_DELIVERY_FAILURES, "failed e-mail delivery attempts");
    gauge!(EMAIL_SPOOL_DEPTH).set(0.0);
    counter!(EMAIL_DELIVERY_FAILURES).absolute(0);
}

/// The Prometheus text for a scrape: gauges read from the adapters first.
pub fn render(gw: &Gateway) -> String {
    let handle = handle();
    for instance in gw.router().instances() {
        let alias = instance.alias.to_string();
        let load = instance.backend.load();
        gauge!(OPEN_CHATS, "alias" => alias.clone()).set(load.active as f64);
        gauge!(CHAT_LIMIT, "alias" => alias.clone()).set(load.limit as f64);
        gauge!(INSTANCE_FULL, "alias" => alias.clone()).set(if is_full(&load) { 1.0 } else { 0.0 });
        gauge!(BACKEND_UP, "alias" => alias).set(if load.accepting { 1.0 } else { 0.0 });
    }
    handle.run_upkeep();
    handle.render()
}

/// Whether an instance has no room for a new chat: its open chats reached its session limit.
pub fn is_full(load: &Load) -> bool {
    load.limit > 0 && load.active >= load.limit
}

/// Metric handles resolved once per label set. The `metrics` macros build, hash and look up
/// a key on every call; on the request path that costs more than the request's own work, so
/// each label set is resolved the first time it is seen and its handle reused. Label sets
/// are few (routes, operations, status codes, calls, error kinds), so the table stays small.
pub struct Handles<K, H> {
    map: RwLock<HashMap<K, H>>,
}

impl<K: Hash + Eq + Copy, H: Clone> Handles<K, H> {
    pub fn new() -> Self {
        Handles {
            map: RwLock::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: K, make: impl FnOnce() -> H) -> H {
        if let Some(h) = self.map.read().get(&key) {
            return h.clone();
        }
        self.map.write().entry(key).or_insert_with(make).clone()
    }
}

impl<K: Hash + Eq + Copy, H: Clone> Default for Handles<K, H> {
    fn default() -> Self {
        Self::new()
    }
}

/// A `&'static str` for a route template (an axum `MatchedPath`), so it can label metrics
/// without an allocation per request. Route templates are a fixed, small set; anything else
/// is not interned.
pub fn route_label(route: Option<&str>) -> &'static str {
    static ROUTES: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    const MAX_ROUTES: usize = 256;
    let Some(route) = route else {
        return "unmatched";
    };
    let routes = ROUTES.get_or_init(Default::default);
    if let Some(r) = routes.read().get(route) {
        return r;
    }
    let mut routes = routes.write();
    if let Some(r) = routes.get(route) {
        return r;
    }
    if routes.len() >= MAX_ROUTES {
        return "other";
    }
    let interned: &'static str = Box::leak(route.to_owned().into_boxed_str());
    routes.insert(interned);
    interned
}

/// Counts and times every call to one instance's adapter.
pub struct MeteredBackend {
    alias: Arc<str>,
    inner: Arc<dyn ChatBackend>,
    calls: Handles<&'static str, (Counter, Histogram)>,
    errors: Handles<(&'static str, &'static str), Counter>,
}

impl MeteredBackend {
    pub fn wrap(alias: &str, inner: Arc<dyn ChatBackend>) -> Arc<dyn ChatBackend> {
        handle();
        Arc::new(MeteredBackend {
            alias: Arc::from(alias),
            inner,
            calls: Handles::new(),
            errors: Handles::new(),
        })
    }

    fn record<T>(&self, call: &'static str, started: Instant, result: &Result<T, BackendError>) {
        let (requests, duration) = self.calls.get(call, || {
            let alias = self.alias.to_string();
            (
                counter!(BACKEND_REQUESTS, "alias" => alias.clone(), "call" => call),
                histogram!(BACKEND_DURATION, "alias" => alias, "call" => call),
            )
        });
        requests.increment(1);
        duration.record(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            let kind = error_kind(e);
            self.errors
                .get((call, kind), || {
                    let alias = self.alias.to_string();
                    counter!(BACKEND_ERRORS, "alias" => alias, "call" => call, "kind" => kind)
                })
                .increment(1);
        }
    }
}

fn error_kind(e: &BackendError) -> &'static str {
    match e {
        BackendError::Unreachable(_) => "unreachable",
        BackendError::Interrupted(_) => "interrupted",
        BackendError::Overloaded(_) => "overloaded",
        BackendError::StoreUnavailable(_) => "store_unavailable",
        BackendError::Moved(_) => "moved",
        BackendError::UnknownChat => "unknown_chat",
        BackendError::ChatEnded { .. } => "chat_ended",
        BackendError::BadCredentials => "bad_credentials",
        BackendError::Rejected { .. } => "rejected",
        BackendError::Unsupported(_) => "unsupported",
        BackendError::Remote { .. } => "remote",
        BackendError::File(_) => "file",
        BackendError::TooLong { .. } => "too_long",
        BackendError::TranscriptFull(_) => "transcript_full",
        BackendError::TooLarge(_) => "too_large",
    }
}

#[async_trait]
impl ChatBackend for MeteredBackend {
    async fn create(&self, chat: NewChat) -> Result<ChatCreated, BackendError> {
        let started = Instant::now();
        let result = self.inner.create(chat).await;
        self.record("create", started, &result);
        result
    }

    async fn refresh(&self, chat: &ChatRef, request: Refresh) -> Result<ChatUpdate, BackendError> {
        let started = Instant::now();
        let result = self.inner.refresh(chat, request).await;
        self.record("refresh", started, &result);
        result
    }

    /// Forwarded, so an adapter's own watch (events at the source) is the one that runs,
    /// not the trait's polling default around it. Its duration is mostly the wait.
    async fn watch(
        &self,
        chat: &ChatRef,
        from: u64,
        wait: std::time::Duration,
    ) -> Result<ChatUpdate, BackendError> {
        let started = Instant::now();
        let result = self.inner.watch(chat, from, wait).await;
        self.record("watch", started, &result);
        result
    }

    async fn restore(&self, chat: &ChatRef) -> Result<(), BackendError> {
        let started = Instant::now();
        let result = self.inner.restore(chat).await;
        self.record("restore", started, &result);
        result
    }

    async fn file_limits(&self, chat: &ChatRef) -> Result<FileLimits, BackendError> {
        let started = Instant::now();
        let result = self.inner.file_limits(chat).await;
        self.record("file_limits", started, &result);
        result
    }

    async fn upload_file(&self, chat: &ChatRef, file: NewFile) -> Result<String, BackendError> {
        let started = Instant::now();
        let result = self.inner.upload_file(chat, file).await;
        self.record("upload_file", started, &result);
        result
    }

    async fn download_file(
        &self,
        chat: &ChatRef,
        file_id: &str,
    ) -> Result<FileContent, BackendError> {
        let started = Instant::now();
        let result = self.inner.download_file(chat, file_id).await;
        self.record("download_file", started, &result);
        result
    }

    async fn delete_file(&self, chat: &ChatRef, file_id: &str) -> Result<(), BackendError> {
        let started = Instant::now();
        let result = self.inner.delete_file(chat, file_id).await;
        self.record("delete_file", started, &result);
        result
    }

    async fn check(&self) -> Result<Load, BackendError> {
        let started = Instant::now();
        let result = self.inner.check().await;
        self.record("check", started, &result);
        result
    }

    fn load(&self) -> Load {
        self.inner.load()
    }
}
