//! `/healthz` and `/readyz`: what a load balancer or orchestrator probes.
//!
//! Owns the readiness verdict ([`Readiness`]: shutdown and the router table, nothing else).
//! Must not call a backend: it reads cached health and load figures only.
//!
//! Readiness answers "should a load balancer send this gateway traffic", and the traffic
//! that matters most is the chats already running: so a gateway is ready while some
//! instance can serve chats (up, not in maint), even when every instance is full. Fullness
//! is capacity, not health: it is a metric (`gateway_instance_full`) and a field of
//! `/admin/instances`, and a new chat then gets 503/300. Were a full gateway unready, anyone
//! able to fill the sessions (anonymous clients can) would have every replica pulled and
//! the running chats cut off with them.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::wire::json;
use super::Failure;
use crate::error::Error;
use crate::router::Router;

/// What readiness reads: whether shutdown has begun, and the current router table.
#[derive(Clone)]
pub struct Readiness {
    shutdown: CancellationToken,
    router: Arc<ArcSwap<Router>>,
}

impl Readiness {
    pub fn new(shutdown: CancellationToken, router: Arc<ArcSwap<Router>>) -> Readiness {
        Readiness { shutdown, router }
    }

    /// Whether the gateway should get traffic: not shutting down, and some instance can
    /// serve chats (up, and in the ready or drain state), full or not. The error says why
    /// not.
    pub fn check(&self) -> Result<(), String> {
        if self.shutdown.is_cancelled() {
            return Err("shutting down".into());
        }
        let router = self.router.load();
        if router.instances().iter().any(|i| i.serves_its_chats()) {
            return Ok(());
        }
        let states: Vec<String> = router
            .instances()
            .iter()
            .map(|i| {
                let load = i.backend.load();
                format!(
                    "{} ({:?}, {}, {}/{} chats)",
                    i.alias,
                    i.state(),
                    if i.health.is_up() { "up" } else { "down" },
                    load.active,
                    load.limit
                )
            })
            .collect();
        Err(format!(
            "no chat server instance can serve chats: {}",
            states.join(", ")
        ))
    }
}

/// The process is up and serving HTTP.
pub async fn healthz() -> Response {
    json(StatusCode::OK, &json!({"status": "ok"}))
}

/// The gateway should get traffic: config loaded (it is, once serving), not shutting down,
/// and some chat instance can serve chats (up, not in maint; full or not). 503 with the
/// reason otherwise.
pub async fn readyz(State(readiness): State<Readiness>) -> Result<Response, Failure> {
    readiness
        .check()
        .map_err(|why| Failure::from(Error::NotReady(why)))?;
    Ok(json(StatusCode::OK, &json!({"status": "ready"})))
}
