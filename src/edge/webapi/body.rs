//! Reading a Web API chat request's body: content-type leniency and the size limit (its
//! pace is the edge's, `body::Paced`). The JSON itself is parsed by `parse`.

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, Request};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::edge::body::{too_slow, BodyHead, BodyLimit, ReadLimits};
use crate::edge::Failure;
use crate::error::Error;

/// A chat request's raw body: within the size limit and of an acceptable content type. It is
/// parsed as JSON by `parse`, which names the fields.
pub struct JsonBody(pub Bytes);

impl<S> FromRequest<S> for JsonBody
where
    ReadLimits: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Failure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Failure> {
        let limits = ReadLimits::from_ref(state);
        let head = BodyHead::of(&req);
        let form = check_content_type(&head)?;
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(limits.max_body_bytes, |l| l.0);
        // Refuse an announced oversize body before reading any of it.
        if head.length.is_some_and(|n| n > limit as u64) {
            return Err(Error::BodyTooLarge(limit).into());
        }
        // A client trickling bytes is cut off by the body's pace (`layers` wraps it).
        match Limited::new(req.into_body(), limit).collect().await {
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
            Err(e) => match too_slow(&*e) {
                Some(slow) => Err(Error::BodyTimeout(slow).into()),
                None => {
                    Err(Error::MalformedJson(format!("the body could not be read: {e}")).into())
                }
            },
        }
    }
}

/// Browsers that avoid a CORS preflight send `text/plain`; some clients send none; old
/// jQuery widgets send a JSON string labelled as a form (returns true then: the body must
/// still be a JSON object). Anything else (multipart, XML, binary) is refused.
fn check_content_type(head: &BodyHead) -> Result<bool, Error> {
    let essence = head.media_type();
    let essence = &*essence;
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
