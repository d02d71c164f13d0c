//! `/healthz` and `/readyz`: what a load balancer or orchestrator probes.
//!
//! Owns the readiness verdict ([`Readiness`]: shutdown and the router table, nothing else).
//! Must not call a backend: it reads cached health and load figures only.

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

    /// Whether the gateway should get new traffic: not shutting down, and some instance
    /// takes new chats (ready, up, accepting). The error says why not.
    pub fn check(&self) -> Result<(), String> {
        if self.shutdown.is_cancelled() {
            return Err("shutting down".into());
        }
        let router = self.router.load();
        if router.instances().iter().any(|i| i.takes_new_chats()) {
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
            "no chat server instance takes new chats: {}",
            states.join(", ")
        ))
    }
}

/// The process is up and serving HTTP.
pub async fn healthz() -> Response {
    json(StatusCode::OK, &json!({"status": "ok"}))
}

/// The gateway should get new traffic: config loaded (it is, once serving), not shutting
/// down, and some chat instance accepts new chats. 503 with the reason otherwise.
pub async fn readyz(State(readiness): State<Readiness>) -> Result<Response, Failure> {
    readiness
        .check()
        .map_err(|why| Failure::from(Error::NotReady(why)))?;
    Ok(json(StatusCode::OK, &json!({"status": "ready"})))
}
