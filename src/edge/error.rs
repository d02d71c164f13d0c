//! The one place where errors become Web API error replies.

use axum::response::{IntoResponse, Response};
use serde::Serialize;

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

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorReply<'a> {
    status_code: u8,
    errors: [ErrorItem<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_ended: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_position: Option<u64>,
}

#[derive(Serialize)]
struct ErrorItem<'a> {
    code: u16,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    advice: Option<&'a str>,
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
        let reply = ErrorReply {
            status_code: wire.status_code,
            errors: [ErrorItem {
                code: wire.code,
                message: &message,
                advice: wire.advice,
            }],
            chat_id: self.chat_id.as_deref(),
            chat_ended,
            next_position,
        };
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
