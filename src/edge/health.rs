//! `/healthz` and `/readyz`: what a load balancer or orchestrator probes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::wire::json;
use super::Failure;
use crate::error::Error;
use crate::Gateway;

/// The process is up and serving HTTP.
pub async fn healthz() -> Response {
    json(StatusCode::OK, &json!({"status": "ok"}))
}

/// The gateway should get new traffic: config loaded (it is, once serving), not shutting
/// down, and some chat instance accepts new chats. 503 with the reason otherwise.
pub async fn readyz(State(gw): State<Arc<Gateway>>) -> Result<Response, Failure> {
    gw.readiness()
        .map_err(|why| Failure::from(Error::NotReady(why)))?;
    Ok(json(StatusCode::OK, &json!({"status": "ready"})))
}
