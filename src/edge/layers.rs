//! The middleware every route gets, present and future, in one place.
//!
//! From the outside in: the client address (`limits::resolve_client`: the TCP peer, or
//! the client a trusted proxy forwarded for; in the access log and keying every limit),
//! the request id (taken from `x-request-id` or made, returned, in the
//! request's tracing span and task-local for adapters) and `X-Content-Type-Options:
//! nosniff` on every reply, the tracing span and access log, the request metrics, the
//! body's pace (`body::Paced` around every request body), the per-request limits (before
//! CORS, so preflights and refused origins count against them), CORS; after routing, the
//! limits on new chats and per chat.
//!
//! The access log has one INFO line per request served, but refusals (limits, 429, 503) are
//! logged at debug and sampled (`telemetry::sample`): a flood of them costs O(1) lines a
//! second, and is counted in `gateway_refusals_total` / `gateway_http_requests_total`.
//! A new route is covered by adding it to the router that [`apply`] wraps; a route whose
//! path carries a chat id names that parameter `chat_id` to get the per-chat limits.
//! Handlers must not repeat any of this.
//!
//! All of it up to the per-request limits is one hand-written service (`front`, issue 17):
//! `from_fn` boxed each layer's future and cloned a boxed service per layer per request.

mod front;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::Request;
use axum::http::header::X_CONTENT_TYPE_OPTIONS;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::Response;
use axum::Router;
use metrics::{Counter, Histogram};
use tower::ServiceBuilder;

use super::error::Outcome;
use super::{cors, error, limits};
use crate::telemetry::sample::{sampled, Sample};
use crate::telemetry::{Handles, HTTP_DURATION, HTTP_REQUESTS};
use crate::Gateway;

pub use front::{FrontLayer, FrontService};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the request being served, as a request extension for handlers.
#[derive(Clone, Debug)]
pub struct RequestId(pub Arc<str>);

/// The operation a handler ran (`RequestChat`, `SendMessage`…), left on its response for
/// the request metrics.
#[derive(Clone, Copy, Debug)]
pub struct OperationName(pub &'static str);

/// Wraps the public routes in the shared stack: after routing, the per-chat limits (a route
/// layer, hand-written like the rest); around every route one stack (one boxed service per route, not one per layer):
/// `front` (client address, request id, nosniff, span and access log, metrics, pace,
/// per-request limits), CORS when origins are configured, and the reply status setting.
pub fn apply(routes: Router, gw: &Arc<Gateway>) -> Router {
    let origins = gw.config.tenants.iter().flat_map(|t| {
        let headers = &t.cors_allowed_headers[..];
        t.cors_origins.iter().map(move |o| (o, headers))
    });
    let cors = cors::layers(origins, &gw.config.cors);
    let guards = limits::Guards::with_origins(
        &gw.config.limits,
        cors.as_ref().map(|(origins, _)| Arc::clone(origins)),
    );
    let routes = routes.route_layer(limits::PerChatLayer(Arc::clone(&guards)));
    let statuses = error::ReplyStatusLayer(Arc::new(error::ReplyStatuses::of(&gw.config)));
    let front = FrontLayer(Arc::new(front::Front {
        trusted: gw.config.limits.trusted_proxies.clone().into(),
        pace: gw.config.limits.body_pace(),
        guards,
    }));
    match cors {
        Some((origins, cors)) => routes.layer(
            ServiceBuilder::new()
                .layer(front)
                .layer(from_fn_with_state(origins, cors::refuse_other_origins))
                .layer(cors)
                .layer(statuses),
        ),
        None => routes.layer(ServiceBuilder::new().layer(front).layer(statuses)),
    }
}

/// Query parameters whose values are credentials: the access log shows them as
/// `[REDACTED]` (an event stream's `streamToken`, see `edge::push`).
const SECRET_PARAMS: [&str; 1] = ["streamToken"];

/// The query as the access log shows it: each credential parameter's value replaced.
/// Written straight into the log line (no `String` is built).
struct RedactedQuery<'a>(Option<&'a str>);

impl std::fmt::Display for RedactedQuery<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(query) = self.0 else {
            return Ok(());
        };
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                f.write_str("&")?;
            }
            match pair.split_once('=') {
                Some((key, _)) if SECRET_PARAMS.iter().any(|s| key.eq_ignore_ascii_case(s)) => {
                    write!(f, "{key}=[REDACTED]")?
                }
                _ => f.write_str(pair)?,
            }
        }
        Ok(())
    }
}

/// Every reply says its content type is what it claims: a browser must never sniff a JSON
/// reply carrying a customer's text into HTML. The admin listener's replies get it too.
pub async fn nosniff(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    response
        .headers_mut()
        .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// The access log: INFO for a request served or refused for its content, debug for a
/// refusal that a flood produces (a limit's, codes 400–449, or any retryable one: 429,
/// 503), with at most one INFO line a second per code saying how many it stands for.
fn access_log(response: &Response, latency: Duration) {
    let status = response.status().as_u16();
    let latency_ms = latency.as_secs_f64() * 1000.0;
    let flood_prone = response
        .extensions()
        .get::<Outcome>()
        .filter(|o| o.status_code == 1 || (400..450).contains(&o.code));
    match flood_prone {
        None => tracing::info!(status, latency_ms, "finished processing request"),
        Some(outcome) => {
            tracing::debug!(status, code = outcome.code, latency_ms, "request refused");
            if let Some(suppressed) = sampled(Sample::Code(outcome.code)) {
                tracing::info!(
                    status,
                    code = outcome.code,
                    suppressed,
                    "request refused (one line per code per second; `suppressed` more since the last)"
                );
            }
        }
    }
}

/// Route, operation, statusCode, HTTP status.
type RequestLabels = (&'static str, &'static str, u8, u16);

/// Counts and times every request by route, operation and statusCode.
fn record(response: &Response, route: &'static str, latency: Duration) {
    let operation = response
        .extensions()
        .get::<OperationName>()
        .map_or("none", |o| o.0);
    let status = response.status();
    let status_code: u8 = match response.extensions().get::<Outcome>() {
        Some(o) => o.status_code,
        None if status.is_success() => 0,
        None if status == StatusCode::SERVICE_UNAVAILABLE
            || status == StatusCode::TOO_MANY_REQUESTS =>
        {
            1
        }
        None => 2,
    };
    static REQUESTS: OnceLock<Handles<RequestLabels, Counter>> = OnceLock::new();
    static DURATIONS: OnceLock<Handles<&str, Histogram>> = OnceLock::new();
    REQUESTS
        .get_or_init(Handles::new)
        .get((route, operation, status_code, status.as_u16()), || {
            metrics::counter!(
                HTTP_REQUESTS,
                "route" => route,
                "operation" => operation,
                "status_code" => status_code.to_string(),
                "http_status" => status.as_u16().to_string(),
            )
        })
        .increment(1);
    DURATIONS
        .get_or_init(Handles::new)
        .get(
            route,
            || metrics::histogram!(HTTP_DURATION, "route" => route),
        )
        .record(latency.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_log_never_shows_a_stream_token() {
        let redacted = |q| RedactedQuery(q).to_string();
        assert_eq!(redacted(None), "");
        assert_eq!(
            redacted(Some("streamToken=abc.DEF&transcriptPosition=3")),
            "streamToken=[REDACTED]&transcriptPosition=3"
        );
        assert_eq!(
            redacted(Some("x=1&streamtoken=abc")),
            "x=1&streamtoken=[REDACTED]"
        );
        assert_eq!(redacted(Some("a&&b=")), "a&&b=");
    }
}
