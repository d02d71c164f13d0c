//! Reading a GMS request body: form-encoded or multipart, within `gms.max_upload_bytes`
//! (its pace is the edge's, `body::Paced`: a body cut off for it is answered 408 here).
//! The fields are turned into operations by `parse`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRef, FromRequest, Multipart, Request};
use axum::http::StatusCode;
use backend_api::NewFile;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::parse::FormFields;
use super::Services;
use crate::edge::body::{has_control, too_slow, BodyHead};
use crate::edge::error::GmsFailure;
use crate::error::Error;

/// A GMS body: its text fields, plus the multipart part `file` when there is one. A query
/// string's fields come first (GET downloads carry the credentials there).
pub struct GmsBody {
    pub fields: FormFields,
    pub file: Option<NewFile>,
}

impl<S> FromRequest<S> for GmsBody
where
    Services: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = GmsFailure;

    async fn from_request(req: Request, state: &S) -> Result<Self, GmsFailure> {
        let limit = Services::from_ref(state).max_upload_bytes();
        let mut fields = FormFields(
            req.uri()
                .query()
                .map(|q| parse_pairs(q.as_bytes()))
                .unwrap_or_default(),
        );
        let head = BodyHead::of(&req);
        if head.length.is_some_and(|n| n > limit as u64) {
            return Err(Error::BodyTooLarge(limit).into());
        }
        let essence = head.media_type();
        let essence = &*essence;
        if essence == "multipart/form-data" {
            let req = req.map(|b| Body::new(Limited::new(b, limit)));
            let mut multipart = Multipart::from_request(req, state)
                .await
                .map_err(|e| Error::MalformedForm(e.body_text()))?;
            // Each part is read whole (a chat file is bounded by the limit above).
            let mut file = None;
            loop {
                let field = match multipart.next_field().await {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return Err(multipart_error(&e, limit).into()),
                };
                let name = field.name().unwrap_or("").to_owned();
                if name == "file" && file.is_none() {
                    let file_name = field
                        .file_name()
                        .map(base_name)
                        .filter(|n| !n.is_empty())
                        .ok_or(Error::MissingField("file"))?;
                    let content_type = field.content_type().map(str::to_owned);
                    let bytes = field
                        .bytes()
                        .await
                        .map_err(|e| multipart_error(&e, limit))?;
                    file = Some(NewFile {
                        name: file_name,
                        content_type,
                        description: None,
                        bytes: Arc::from(&bytes[..]),
                    });
                } else {
                    let text = field.text().await.map_err(|e| multipart_error(&e, limit))?;
                    fields.0.push((name, text));
                }
            }
            check_names(&fields)?;
            if let Some(f) = &mut file {
                f.description = fields.get("userData[file-description]").map(str::to_owned);
            }
            return Ok(GmsBody { fields, file });
        }
        // GMS clients send forms; some send none at all (a GET, an empty POST).
        if !(essence.is_empty()
            || essence == "application/x-www-form-urlencoded"
            || essence == "text/plain")
        {
            return Err(Error::GmsUnsupportedMediaType(head.shown_type()).into());
        }
        match Limited::new(req.into_body(), limit).collect().await {
            Ok(collected) => {
                fields.0.extend(parse_pairs(&collected.to_bytes()));
                check_names(&fields)?;
                Ok(GmsBody { fields, file: None })
            }
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                Err(Error::BodyTooLarge(limit).into())
            }
            Err(e) => match too_slow(&*e) {
                Some(slow) => Err(Error::BodyTimeout(slow).into()),
                None => {
                    Err(Error::MalformedForm(format!("the body could not be read: {e}")).into())
                }
            },
        }
    }
}

/// A field name with a control character (other than tab) is refused in every encoding, as
/// a multipart part header carrying one cannot be read at all: the same body means the same
/// answer whether it was form-encoded or multipart (and such a name could only end up as a
/// user-data key nobody can display).
fn check_names(fields: &FormFields) -> Result<(), Error> {
    match fields.0.iter().find(|(k, _)| has_control(k)) {
        Some((k, _)) => Err(Error::MalformedForm(format!(
            "the field name {k:?} contains a control character"
        ))),
        None => Ok(()),
    }
}

fn parse_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn multipart_error(e: &axum::extract::multipart::MultipartError, limit: usize) -> Error {
    if let Some(slow) = too_slow(e) {
        Error::BodyTimeout(slow)
    } else if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::BodyTooLarge(limit)
    } else {
        Error::MalformedForm(e.body_text())
    }
}

/// A client's file name without any path it carried.
fn base_name(name: &str) -> String {
    name.rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .trim()
        .to_owned()
}
