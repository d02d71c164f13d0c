//! Reading a JSON request body: content-type leniency and the size limit.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::Failure;
use crate::error::Error;
use crate::Gateway;

/// A route's own body limit, in bytes, as a request extension: add it to a route with
/// `.layer(axum::Extension(BodyLimit(n)))`. Body readers honour it; without it a JSON body
/// gets `server.max_body_bytes`.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// A chat request's raw body: within the size limit and of an acceptable content type. It is
/// parsed as JSON by `operation`, which names the fields.
pub struct JsonBody(pub Bytes);

impl FromRequest<Arc<Gateway>> for JsonBody {
    type Rejection = Failure;

    async fn from_request(req: Request, gw: &Arc<Gateway>) -> Result<Self, Failure> {
        let head = BodyHead::of(&req);
        let form = check_content_type(&head)?;
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(gw.config.server.max_body_bytes, |l| l.0);
        // Refuse an announced oversize body before reading any of it.
        if head.length.is_some_and(|n| n > limit as u64) {
            return Err(Error::BodyTooLarge(limit).into());
        }
        // A whole-body deadline: a client trickling bytes cannot hold the request open.
        let deadline = gw.config.limits.body_read_timeout;
        let read = tokio::time::timeout(deadline, Limited::new(req.into_body(), limit).collect());
        let Ok(read) = read.await else {
            return Err(Error::BodyTimeout(deadline.as_millis() as u64).into());
        };
        match read {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                if form && bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                    return Err(Error::UnsupportedMediaType(
                        "application/x-www-form-urlencoded".into(),
                    )
                    .into());
                }
                Ok(JsonBody(bytes))
            }
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                Err(Error::BodyTooLarge(limit).into())
            }
            Err(e) => Err(Error::MalformedJson(format!("the body could not be read: {e}")).into()),
        }
    }
}

/// What a request's headers say of its body. Every body reader starts here.
pub(super) struct BodyHead {
    /// `Content-Type` as sent (empty when absent or not text), for error messages.
    pub raw_type: String,
    /// Its media type, lower case, without parameters (empty when absent).
    pub media_type: String,
    /// `Content-Length`, when present and a number.
    pub length: Option<u64>,
}

impl BodyHead {
    pub fn of(req: &Request) -> BodyHead {
        let raw_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let media_type = raw_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let length = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        BodyHead {
            raw_type,
            media_type,
            length,
        }
    }

    /// The content type for an error message, bounded.
    pub fn shown_type(&self) -> String {
        self.raw_type.chars().take(100).collect()
    }
}

/// Browsers that avoid a CORS preflight send `text/plain`; some clients send none; old
/// jQuery widgets send a JSON string labelled as a form (returns true then: the body must
/// still be a JSON object). Anything else (multipart, XML, binary) is refused.
fn check_content_type(head: &BodyHead) -> Result<bool, Error> {
    let essence = &head.media_type;
    let ok = essence.is_empty()
        || essence == "application/json"
        || essence == "text/plain"
        || essence == "text/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if essence == "application/x-www-form-urlencoded" {
        Ok(true)
    } else if ok {
        Ok(false)
    } else {
        Err(Error::UnsupportedMediaType(head.shown_type()))
    }
}
