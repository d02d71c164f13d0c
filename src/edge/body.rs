//! What every body reader of both dialects shares: the declared body ([`BodyHead`]) and
//! the limits a read is held to ([`BodyLimit`], [`ReadLimits`]).
//!
//! Each dialect reads its own bodies (`webapi::body`, `gms::body`, the e-mail stream in
//! `email`); none of them may parse the headers again or pick its limits elsewhere.

use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};

/// A route's own body limit, in bytes, as a request extension: add it to a route with
/// `.layer(axum::Extension(BodyLimit(n)))`. Body readers honour it; without it a JSON body
/// gets `server.max_body_bytes`.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// The read limits of a request body that has no route limit of its own (an axum sub-state
/// of the gateway).
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    /// `server.max_body_bytes`.
    pub max_body_bytes: usize,
    /// `limits.body_read_timeout_ms`: the whole body must arrive within it.
    pub body_read_timeout: std::time::Duration,
}

/// What a request's headers say of its body. Every body reader starts here.
pub(crate) struct BodyHead {
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

/// Whether a form field's name holds a character a multipart part header cannot carry (an
/// ASCII control other than tab). The form-encoded readers refuse such a name too, so a body
/// gets the same answer in either encoding.
pub(crate) fn has_control(name: &str) -> bool {
    name.chars().any(|c| c.is_ascii_control() && c != '\t')
}
