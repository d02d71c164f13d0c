//! The one place where errors become Web API error replies, and where their HTTP status
//! is chosen (`rest` or `ok`, per dialect and GMS service: [`ReplyStatus`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::wire::json;
use crate::error::Error;
use crate::telemetry::sample::{self, Sample};
use backend_api::BackendError;

/// A refused request: the error, and the chat it was about when there was one.
#[derive(Debug)]
pub struct Failure {
    pub error: Error,
    pub chat_id: Option<String>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            error,
            chat_id: None,
        }
    }
}

impl Failure {
    pub fn on_chat(error: Error, chat_id: &str) -> Failure {
        Failure {
            error,
            chat_id: Some(chat_id.to_owned()),
        }
    }
}

/// Both dialects' error reply body (the GMS shape states `chatEnded` always).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    status_code: u8,
    errors: [ErrorItem; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_ended: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_position: Option<u64>,
}

#[derive(Debug, Serialize)]
struct ErrorItem {
    code: u16,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    advice: Option<&'static str>,
}

/// A refused request of the GMS dialect: the same error, statusCode and codes, in the GMS
/// reply shape (every GMS reply carries `chatEnded`).
#[derive(Debug)]
pub struct GmsFailure(pub Failure);

impl From<Error> for GmsFailure {
    fn from(error: Error) -> GmsFailure {
        GmsFailure(Failure::from(error))
    }
}

impl GmsFailure {
    pub fn on_chat(error: Error, chat_id: &str) -> GmsFailure {
        GmsFailure(Failure::on_chat(error, chat_id))
    }
}

impl IntoResponse for GmsFailure {
    fn into_response(self) -> Response {
        self.0.render(true)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        self.render(false)
    }
}

impl Failure {
    /// Both dialects' error reply: `gms` always states `chatEnded`, as GMS replies do.
    fn render(self, gms: bool) -> Response {
        let (wire, reply) = self.body(gms);
        let mut response = json(wire.http, &reply);
        response.extensions_mut().insert(Outcome {
            status_code: wire.status_code,
            code: wire.code,
        });
        // Ours (the MAC) or the backend's own check: both are a wrong key for this chat.
        if matches!(
            self.error,
            Error::BadCredentials | Error::Backend(BackendError::BadCredentials)
        ) {
            response.extensions_mut().insert(BadCredentials);
        }
        response
    }

    /// The GMS error shape as a value to put inside another reply: the CometD dialect sends
    /// it as the `data` of a message on the chat's channel (statusCode 1 or 2, `errors`,
    /// `chatEnded`, the chat id).
    pub fn gms_body(self) -> ErrorBody {
        self.body(true).1
    }

    /// The error's wire form and its reply body, logged as every refusal is.
    fn body(&self, gms: bool) -> (crate::error::Wire, ErrorBody) {
        let wire = self.error.wire();
        let message = self.error.client_message();
        // Limits (codes 400-449) refuse floods: counted in metrics, not logged one by one.
        // A retryable failure (a backend down, every instance full) can come as a flood too:
        // its cause is worth a WARN, but one a second per code, not one per request.
        if wire.status_code == 1 && wire.code < 400 {
            match sample::sampled(Sample::Code(wire.code)) {
                // The cause (a backend's own words) is for operators only.
                Some(suppressed) => tracing::warn!(
                    code = wire.code,
                    cause = %self.error,
                    suppressed,
                    "request failed, retryable"
                ),
                None => {
                    tracing::debug!(code = wire.code, cause = %self.error, "request failed, retryable")
                }
            }
        } else {
            tracing::debug!(code = wire.code, cause = %self.error, "request refused");
        }
        let (chat_ended, next_position) = match &self.error {
            Error::Backend(BackendError::ChatEnded { next_position }) => {
                (Some(true), Some(*next_position))
            }
            Error::Backend(BackendError::Remote {
                chat_ended: true, ..
            }) => (Some(true), None),
            _ if gms => (Some(false), None),
            _ => (None, None),
        };
        let reply = ErrorBody {
            status_code: wire.status_code,
            errors: [ErrorItem {
                code: wire.code,
                message,
                advice: wire.advice,
            }],
            chat_id: self.chat_id.clone(),
            chat_ended,
            next_position,
        };
        (wire, reply)
    }
}

/// A refusal in the Bayeux `error` form, `"code::message"` (the CometD dialect's refusals
/// of a whole Bayeux message: a held connect past its limits), with the code of the
/// gateway's table. Counted and logged by the caller's metrics, like the limits'.
pub fn bayeux_error(error: &Error) -> String {
    let wire = error.wire();
    tracing::debug!(code = wire.code, cause = %error, "bayeux message refused");
    format!("{}::{}", wire.code, error.client_message())
}

impl Failure {
    /// The error reply's JSON alone, in either dialect's shape, for a refusal that ends an
    /// open event stream (`event: error`) instead of answering a request.
    pub fn json_body(&self, gms: bool) -> String {
        serde_json::to_string(&self.body(gms).1).unwrap_or_else(|_| {
            r#"{"statusCode":2,"errors":[{"code":399,"message":"reply could not be encoded"}]}"#
                .to_owned()
        })
    }
}

/// Whether the client should send the same request again later (statusCode 1): what an
/// event stream waits out by itself instead of ending.
pub fn retryable(error: &Error) -> bool {
    error.wire().status_code == 1
}

/// What a refusal said, left on the response for the request metrics (the layers see the
/// response, not its JSON).
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// The Web API statusCode (1 or 2).
    pub status_code: u8,
    /// The error code.
    pub code: u16,
}

/// Left on a response that refused a request for bad credentials (the MAC did not check),
/// for the bad-credentials throttle in `limits`.
#[derive(Clone, Copy, Debug)]
pub struct BadCredentials;

/// The HTTP status of the replies that carry statusCode 1 or 2.
///
/// Whatever the setting, a reply whose request may have reached the chat server (code 302,
/// and 303 when the deadline passed with a backend request in flight) never has a status
/// that HTTP libraries resend by themselves (429, 502, 503, 504): `rest` answers it 500,
/// `ok` 200. So no setting turns a SendMessage that may have arrived into an automatic
/// resend. See docs/errors.md, "HTTP status".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyStatus {
    /// The REST status of the error table (400, 401, 404, 409, 500, 503…).
    #[default]
    Rest,
    /// 200 for every reply the dialect answers with a statusCode, except the refusals made
    /// before the request is read ([`keeps_its_status`]).
    Ok,
}

/// Refusals that keep their HTTP status under `ok`: the limits' (codes 400–449: rate,
/// header size, body pace, connections, origin), the body size cap (111) and the routing
/// ones (120 no such route, 121 wrong method). They are made before the dialect reads the
/// request, a client's HTTP stack is right to see them as transport failures, and resending
/// them is always safe: nothing reached a chat server.
pub fn keeps_its_status(code: u16) -> bool {
    matches!(code, 111 | 120 | 121 | 400..=449)
}

/// Each dialect's [`ReplyStatus`], and the GMS services' own.
#[derive(Clone, Debug, Default)]
pub struct ReplyStatuses {
    pub webapi: ReplyStatus,
    pub gms: ReplyStatus,
    pub gms_services: HashMap<String, ReplyStatus>,
}

impl ReplyStatuses {
    pub fn of(config: &crate::Config) -> ReplyStatuses {
        ReplyStatuses {
            webapi: config.webapi.reply_status,
            gms: config.gms.reply_status,
            gms_services: config
                .gms
                .services
                .iter()
                .filter_map(|s| Some((s.name.clone(), s.reply_status?)))
                .collect(),
        }
    }

    /// The setting of the request at `path`: its GMS service's, else its dialect's.
    fn for_path(&self, path: &str) -> ReplyStatus {
        match path.strip_prefix("/genesys/") {
            Some(rest) => {
                let service = rest
                    .strip_prefix("2/chat/")
                    .and_then(|r| r.split('/').next());
                service
                    .and_then(|s| self.gms_services.get(s))
                    .copied()
                    .unwrap_or(self.gms)
            }
            None => self.webapi,
        }
    }
}

/// A layer around the routes: under `ok`, a refusal ([`Outcome`] on the response) that the
/// dialect made gets HTTP 200; its body is unchanged. Inside CORS and the per-request limits,
/// whose own refusals keep their status. Hand-written (no boxed future per request).
#[derive(Clone)]
pub struct ReplyStatusLayer(pub Arc<ReplyStatuses>);

impl<S> tower::Layer<S> for ReplyStatusLayer {
    type Service = ReplyStatusService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ReplyStatusService {
            inner,
            statuses: Arc::clone(&self.0),
        }
    }
}

/// The service of [`ReplyStatusLayer`].
#[derive(Clone)]
pub struct ReplyStatusService<S> {
    inner: S,
    statuses: Arc<ReplyStatuses>,
}

impl<S> tower::Service<Request> for ReplyStatusService<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ReplyStatusFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let ok = self.statuses.for_path(req.uri().path()) == ReplyStatus::Ok;
        ReplyStatusFuture {
            inner: self.inner.call(req),
            ok,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`ReplyStatusService`].
    pub struct ReplyStatusFuture<F> {
        #[pin]
        inner: F,
        ok: bool,
    }
}

impl<F, E> Future for ReplyStatusFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if *this.ok {
            if let Some(outcome) = response.extensions().get::<Outcome>() {
                if !keeps_its_status(outcome.code) {
                    *response.status_mut() = StatusCode::OK;
                }
            }
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gms_service_setting_wins_over_its_dialect() {
        let statuses = ReplyStatuses {
            webapi: ReplyStatus::Rest,
            gms: ReplyStatus::Ok,
            gms_services: HashMap::from([("rest-svc".to_string(), ReplyStatus::Rest)]),
        };
        assert_eq!(statuses.for_path("/api/v2/chats/x"), ReplyStatus::Rest);
        assert_eq!(
            statuses.for_path("/genesys/2/chat/w/1/send"),
            ReplyStatus::Ok
        );
        assert_eq!(
            statuses.for_path("/genesys/2/chat/rest-svc"),
            ReplyStatus::Rest
        );
        assert_eq!(
            statuses.for_path("/genesys/2/chat/rest-svc/1/send"),
            ReplyStatus::Rest
        );
        assert_eq!(statuses.for_path("/genesys/2/email/x"), ReplyStatus::Ok);
    }
}
