//! Instance management: list the chat server instances with their state, health and load,
//! and set an instance's admin state (`ready`, `drain`, `maint`).
//!
//! A self-contained router fragment behind the admin token check. A state set here lives in
//! this gateway process only: other replicas and a restart go by their config file (see
//! `docs/failover.md`). It reads the router and never calls a backend.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::edge::Failure;
use crate::error::Error;
use crate::router::AdminState;
use crate::router::{HealthState, Instance};
use crate::Gateway;

/// `GET /admin/instances`, `PUT|POST /admin/instances/{alias}/state`, behind the token.
pub fn routes(gw: Arc<Gateway>) -> axum::Router {
    axum::Router::new()
        .route("/admin/instances", get(list))
        .route(
            "/admin/instances/{alias}/state",
            put(set_state).post(set_state),
        )
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&gw),
            require_token,
        ))
        .with_state(gw)
}

/// One instance as the operator sees it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct View {
    alias: String,
    kind: Option<&'static str>,
    address: Option<String>,
    weight: u32,
    state: AdminState,
    health: HealthState,
    active_chats: u64,
    limit: u64,
    /// Active chats relative to weight: what placement compares.
    load: f64,
    accepting: bool,
    /// Its open chats reached its session limit: new chats go elsewhere, its own are still
    /// served (the gateway stays ready; `gateway_instance_full` in the metrics).
    full: bool,
    /// Whether a new chat could be placed there now.
    takes_new_chats: bool,
}

async fn view(gw: &Gateway, instance: &Instance) -> View {
    let config = gw.instance_config(&instance.alias).await;
    let load = instance.backend.load();
    let state = instance.state();
    let health = instance.health.state();
    View {
        alias: instance.alias.to_string(),
        kind: config.as_ref().map(|c| c.kind.name()),
        address: config.and_then(|c| c.kind.address().map(str::to_owned)),
        weight: instance.weight,
        state,
        health,
        active_chats: load.active,
        limit: load.limit,
        load: load.active as f64 / f64::from(instance.weight),
        accepting: load.accepting,
        full: crate::telemetry::is_full(&load),
        takes_new_chats: state == AdminState::Ready
            && health == HealthState::Healthy
            && load.accepting,
    }
}

async fn list(State(gw): State<Arc<Gateway>>) -> Response {
    let router = gw.router();
    let mut instances = Vec::with_capacity(router.instances().len());
    for instance in router.instances() {
        instances.push(view(&gw, instance).await);
    }
    Json(serde_json::json!({ "instances": instances })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetState {
    state: AdminState,
}

async fn set_state(
    State(gw): State<Arc<Gateway>>,
    Path(alias): Path<String>,
    body: Result<Json<SetState>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(SetState { state }) = match body {
        Ok(body) => body,
        Err(e) => {
            return Failure::from(Error::BadAdminState(e.to_string())).into_response();
        }
    };
    let router = gw.router();
    let Some(instance) = router.get(&alias) else {
        return Failure::from(Error::UnknownInstance(alias)).into_response();
    };
    instance.set_state(state);
    Json(view(&gw, instance).await).into_response()
}

/// Every instance request carries `Authorization: Bearer <admin.token>`; without a token
/// configured the endpoints are off (unlike `/metrics`: they change routing).
pub(super) async fn require_token(
    State(gw): State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Response {
    let checked = match gw.config.admin.token.as_ref() {
        None => Err(Error::AdminOff),
        Some(token) => super::check_token(token.expose(), request.headers()),
    };
    match checked {
        Ok(()) => next.run(request).await,
        Err(error) => Failure::from(error).into_response(),
    }
}
