//! E-mail operations: list the dead letters and requeue them.
//!
//! A self-contained router fragment behind the admin token (off without one, like the
//! instance endpoints: a requeue sends mail). It goes through the running e-mail service, so
//! requeued e-mails are scheduled at once by the deliverer of this process; it never touches
//! spool files itself.

use std::sync::Arc;

use axum::extract::State;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde_json::json;

use crate::edge::Failure;
use crate::error::Error;
use crate::Gateway;

/// `GET /admin/emails/dead`, `POST /admin/emails/dead/requeue`, behind the token.
pub fn routes(gw: Arc<Gateway>) -> axum::Router {
    axum::Router::new()
        .route("/admin/emails/dead", get(list_dead))
        .route("/admin/emails/dead/requeue", post(requeue_dead))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&gw),
            super::instances::require_token,
        ))
        .with_state(gw)
}

/// The dead letters, oldest first: `{"dead": [{"interactionId", "reason", "acceptedAtMs"}]}`.
async fn list_dead(State(gw): State<Arc<Gateway>>) -> Response {
    match gw.email().dead_letters().await {
        Ok(dead) => {
            let dead: Vec<_> = dead
                .into_iter()
                .map(|d| {
                    json!({
                        "interactionId": d.id.as_str(),
                        "reason": d.reason,
                        "acceptedAtMs": d.accepted_at_ms,
                    })
                })
                .collect();
            Json(json!({ "dead": dead })).into_response()
        }
        Err(e) => spool_error(e),
    }
}

/// Moves every dead letter back into the queue: `{"requeued": n, "failed": m}`, the
/// requeued ids in `interactionIds`.
async fn requeue_dead(State(gw): State<Arc<Gateway>>) -> Response {
    match gw.email().requeue_dead().await {
        Ok(requeued) => {
            tracing::info!(
                requeued = requeued.ids.len(),
                failed = requeued.failed,
                "admin: dead letters requeued"
            );
            let ids: Vec<&str> = requeued.ids.iter().map(|id| id.as_str()).collect();
            Json(json!({
                "requeued": ids.len(),
                "failed": requeued.failed,
                "interactionIds": ids,
            }))
            .into_response()
        }
        Err(e) => spool_error(e),
    }
}

/// The spool's `dead/` could not be read: the operator's to fix on the host.
fn spool_error(e: std::io::Error) -> Response {
    tracing::error!(error = %e, "admin: could not read the e-mail dead-letter folder");
    Failure::from(Error::AdminEmailSpool(e)).into_response()
}
