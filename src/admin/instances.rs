//! Instance management: list the chat server instances with their state, health and load,
//! and set an instance's admin state (`ready`, `drain`, `maint`).
//!
//! A self-contained router fragment with its own bearer-token check. A state set here lives in
//! this gateway process only: other replicas and a restart go by their config file (see
//! `docs/failover.md`). It reads the router and never calls a backend.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Json;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

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
            let why =
                format!("the body must be {{\"state\": \"ready\" | \"drain\" | \"maint\"}}: {e}");
            return refuse(StatusCode::BAD_REQUEST, &why);
        }
    };
    let router = gw.router();
    let Some(instance) = router.get(&alias) else {
        return refuse(StatusCode::NOT_FOUND, &format!("unknown alias `{alias}`"));
    };
    instance.set_state(state);
    Json(view(&gw, instance).await).into_response()
}

/// Every admin request carries `Authorization: Bearer <admin.token>`.
async fn require_token(State(gw): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let Some(token) = gw.config.admin.token.as_ref().map(|t| t.expose()) else {
        return refuse(
            StatusCode::FORBIDDEN,
            "admin.token is not set: the instance endpoints are off",
        );
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        next.run(request).await
    } else {
        refuse(StatusCode::UNAUTHORIZED, "a valid admin token is required")
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}
