//! The `[server]` section: the public listener, the request bound and the shutdown deadline.
//!
//! Owns these keys, their defaults and their local validation; rules that involve other
//! sections (the admin listener's address, `limits.idle_timeout_ms`) are the config
//! module's.

use std::net::SocketAddr;
use std::time::Duration;

use config_types::{millis, nonzero, Invalid};
use serde::Deserialize;

use super::tls::TlsConfig;

/// The public HTTP listener.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Largest accepted body of a chat request, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// How long a request may take end to end before it is answered with statusCode 1.
    #[serde(rename = "request_timeout_ms", deserialize_with = "millis")]
    pub request_timeout: Duration,
    /// On SIGTERM/Ctrl-C: how long in-flight requests and background work (the e-mail
    /// deliverer) get to finish before the process exits anyway.
    #[serde(rename = "shutdown_deadline_ms", deserialize_with = "millis")]
    pub shutdown_deadline: Duration,
    /// TLS on this listener (`[server.tls]`); plain HTTP when absent. With TLS, HTTP/2 is
    /// offered through ALPN next to HTTP/1.1.
    pub tls: Option<TlsConfig>,
    /// HTTP/2 over cleartext with prior knowledge (`h2c`), for a load balancer that speaks
    /// HTTP/2 to its backends; HTTP/1.1 is still served. Off by default.
    pub h2c: bool,
    /// An HTTP/1.1 keep-alive connection with no request in flight and no byte either way
    /// for this long is parked: hyper's buffers are freed and the socket waits for its next
    /// byte holding none (docs/tls.md). 0 turns parking off.
    #[serde(rename = "park_idle_ms", deserialize_with = "millis")]
    pub park_idle: Duration,
    /// Threads that serve requests; 0 (the default) is one per core. Set it below the cores
    /// when other busy processes share the machine (a chat server, a load balancer): a
    /// worker thread the kernel preempts holds its connections' requests for a whole time
    /// slice, which is what a request's tail latency then shows (docs/benchmarks.md).
    pub worker_threads: usize,
}

/// The most `worker_threads` accepted: far above any core count it would be sized to.
pub const MAX_WORKER_THREADS: usize = 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            shutdown_deadline: Duration::from_secs(10),
            tls: None,
            h2c: false,
            park_idle: Duration::from_secs(1),
            worker_threads: 0,
        }
    }
}

impl ServerConfig {
    /// Checks what types alone cannot; the key is relative to `[server]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.max_body_bytes < 256 {
            return Err(Invalid::new("max_body_bytes", "must be at least 256"));
        }
        nonzero("request_timeout_ms", self.request_timeout)?;
        if self.worker_threads > MAX_WORKER_THREADS {
            return Err(Invalid::new(
                "worker_threads",
                format!("must be at most {MAX_WORKER_THREADS} (0: one per core)"),
            ));
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        nonzero("shutdown_deadline_ms", self.shutdown_deadline)
    }
}
