//! What every body reader of both dialects shares: the declared body ([`BodyHead`]), the
//! limits a read is held to ([`BodyLimit`], [`ReadLimits`]) and the pace every body must
//! keep ([`BodyPace`], enforced by [`Paced`]).
//!
//! Each dialect reads its own bodies (`webapi::body`, `gms::body`, the e-mail stream in
//! `email`); none of them may parse the headers again or pick its limits elsewhere. The pace
//! is not theirs to apply: `layers` wraps every request body in [`Paced`] before routing, so
//! no reader (present or future) can forget it. A reader only recognises the error
//! ([`too_slow`]) and answers it in its dialect's shape.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::HeaderValue;
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// A route's own body limit, in bytes, as a request extension: add it to a route with
/// `.layer(axum::Extension(BodyLimit(n)))`. Body readers honour it; without it a JSON body
/// gets `server.max_body_bytes`.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// The read limits of a request body that has no route limit of its own (an axum sub-state
/// of the gateway). Its pace is [`Paced`]'s.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    /// `server.max_body_bytes`.
    pub max_body_bytes: usize,
}

/// The pace every request body must keep, whatever its route and size: a slow client may
/// take its time within `grace`, after which it must keep sending at least `min_rate`,
/// and no body may take longer than `max`. A JSON chat body (64 KiB) is done long before
/// the grace ends; an upload of megabytes on a slow line goes on as long as it moves; a
/// client that trickles a byte now and then to hold a connection gets 408 at the grace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyPace {
    /// `limits.body_read_timeout_ms`: the grace, and the window the rate is measured over.
    pub grace: Duration,
    /// `limits.body_min_bytes_per_sec`: past the grace, each window must carry at least
    /// this many bytes per second; 0 means the whole body must arrive within the grace.
    pub min_rate: u32,
    /// `limits.body_read_max_ms`: no body takes longer, however fast it moves.
    pub max: Duration,
}

/// Why a body was cut off: it did not keep [`BodyPace`]. The body's error, which readers
/// find with [`too_slow`] and answer with 408.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyTooSlow {
    /// Not all there within the grace (no minimum rate configured), or within the cap.
    #[error("the body did not arrive within {0} ms")]
    Deadline(u64),
    /// Past the grace, a window carried fewer bytes than the minimum rate asks for.
    #[error("the body arrived too slowly: {got} bytes in {window_ms} ms, at least {min_rate} bytes/s are needed")]
    Rate {
        got: u64,
        window_ms: u64,
        min_rate: u32,
    },
}

/// The [`BodyTooSlow`] anywhere in an error's chain (the body readers wrap body errors in
/// their own: `Limited`, axum, multer).
pub fn too_slow(error: &(dyn std::error::Error + 'static)) -> Option<BodyTooSlow> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(slow) = e.downcast_ref::<BodyTooSlow>() {
            return Some(slow.clone());
        }
        current = e.source();
    }
    None
}

pin_project_lite::pin_project! {
    /// A request body held to a [`BodyPace`]. Its clock starts when the body is wrapped (the
    /// head has been read) and runs whether or not the reader is polling, so a handler that
    /// reads slowly on purpose does not stretch a client's allowance either.
    pub struct Paced {
        inner: Body,
        pace: BodyPace,
        started: Instant,
        // The next check: the end of the grace, then of each window, then the cap. Held in
        // place (the body is boxed by `Body::new` anyway), not in a box of its own.
        #[pin]
        check: Sleep,
        // Bytes read so far, and at the start of the current window.
        read: u64,
        read_at_window: u64,
        // The body ended or failed: nothing more to judge.
        done: bool,
    }
}

impl Paced {
    pub fn new(inner: Body, pace: BodyPace) -> Paced {
        let started = Instant::now();
        Paced {
            inner,
            pace,
            started,
            check: tokio::time::sleep_until(started + pace.grace.min(pace.max)),
            read: 0,
            read_at_window: 0,
            done: false,
        }
    }

    /// [`Paced::judge`], and the body's end when it fell behind.
    fn judged(mut self: Pin<&mut Self>) -> Option<axum::Error> {
        let slow = self.as_mut().judge().err()?;
        *self.project().done = true;
        Some(axum::Error::new(slow))
    }

    /// The check that is due now: the error when the body fell behind, or the next check.
    fn judge(self: Pin<&mut Self>) -> Result<(), BodyTooSlow> {
        let this = self.project();
        let now = Instant::now();
        let elapsed = now - *this.started;
        if elapsed >= this.pace.max || this.pace.min_rate == 0 {
            let limit = if this.pace.min_rate == 0 {
                this.pace.grace.min(this.pace.max)
            } else {
                this.pace.max
            };
            return Err(BodyTooSlow::Deadline(limit.as_millis() as u64));
        }
        // The first window is the grace itself; each later one is as long.
        let window = this.pace.grace;
        let got = *this.read - *this.read_at_window;
        let needed = u64::from(this.pace.min_rate).saturating_mul(window.as_millis() as u64) / 1000;
        if got < needed {
            return Err(BodyTooSlow::Rate {
                got,
                window_ms: window.as_millis() as u64,
                min_rate: this.pace.min_rate,
            });
        }
        *this.read_at_window = *this.read;
        let next = (this.check.deadline() + window).min(*this.started + this.pace.max);
        this.check.reset(next);
        Ok(())
    }
}

impl hyper::body::Body for Paced {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        // Every check that is due is judged before the body is read, as the clock says: the
        // timer is registered only when the body has to be waited for (below), so a body that
        // has arrived whole (nearly every one) never touches the timer wheel (issue 17).
        while Instant::now() >= self.check.deadline() {
            if let Some(slow) = self.as_mut().judged() {
                return Poll::Ready(Some(Err(slow)));
            }
        }
        let this = self.as_mut().project();
        match Pin::new(this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.read = this.read.saturating_add(data.len() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                *this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                *this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                // Waiting for the client: wake at the next check too.
                while self.as_mut().project().check.poll(cx).is_ready() {
                    if let Some(slow) = self.as_mut().judged() {
                        return Poll::Ready(Some(Err(slow)));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What a request's headers say of its body. Every body reader starts here.
/// Built without copying the header (issue 17): the content type is the request's own
/// header value, shared.
pub(crate) struct BodyHead {
    /// `Content-Type` as sent, when present and text.
    content_type: Option<HeaderValue>,
    /// `Content-Length`, when present and a number.
    pub length: Option<u64>,
}

impl BodyHead {
    pub fn of(req: &Request) -> BodyHead {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .filter(|v| v.to_str().is_ok())
            .cloned();
        let length = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        BodyHead {
            content_type,
            length,
        }
    }

    /// `Content-Type` as sent (empty when absent or not text), for error messages.
    pub fn raw_type(&self) -> &str {
        self.content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Its media type, lower case, without parameters (empty when absent); copied only when
    /// it was not lower case already.
    pub fn media_type(&self) -> Cow<'_, str> {
        let essence = self.raw_type().split(';').next().unwrap_or("").trim();
        if essence.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(essence.to_ascii_lowercase())
        } else {
            Cow::Borrowed(essence)
        }
    }

    /// The content type for an error message, bounded.
    pub fn shown_type(&self) -> String {
        self.raw_type().chars().take(100).collect()
    }
}

/// Whether a form field's name holds a character a multipart part header cannot carry (an
/// ASCII control other than tab). The form-encoded readers refuse such a name too, so a body
/// gets the same answer in either encoding.
pub(crate) fn has_control(name: &str) -> bool {
    name.chars().any(|c| c.is_ascii_control() && c != '\t')
}
