//! The front of the middleware: one hand-written `tower` service doing, in this order, what
//! were seven `from_fn` layers and tower-http's `TraceLayer` — the client address, the request
//! id (task-local for adapters, on the reply), `X-Content-Type-Options: nosniff`, the tracing
//! span and access log, the request metrics, the body's pace and the per-request limits —
//! with one unboxed future ([`FrontFuture`]) instead of a boxed future and a cloned boxed
//! service per layer.
//!
//! Owns only the sequencing and the per-request bookkeeping; each rule stays where it was
//! (`limits::resolve_client`, `limits::per_request`, `body::Paced`, `layers::access_log`,
//! `layers::record`). Must not change what a request or reply carries: `layers` documents the
//! behaviour, and tests/edge.rs, tests/hostile.rs, tests/ops.rs hold it. Nothing is built
//! for the span when it is disabled (the field values are formatted lazily, by the span
//! itself), and nothing is formatted into a `String` on the way.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request};
use axum::http::header::X_CONTENT_TYPE_OPTIONS;
use axum::http::HeaderValue;
use axum::response::Response;
use backend_api::request_id::{scoped, Scoped};

use hyper::body::Body as _;

use super::{access_log, record, RequestId, X_REQUEST_ID};
use crate::edge::body::{BodyPace, Paced};
use crate::edge::limits::{self, Cidr, ClientAddress, Guards};
use crate::telemetry::route_label;

/// What the front needs, shared by every route's copy of the service.
pub struct Front {
    pub trusted: Arc<[Cidr]>,
    pub pace: BodyPace,
    pub guards: Arc<Guards>,
}

/// The layer (see the module doc).
#[derive(Clone)]
pub struct FrontLayer(pub Arc<Front>);

impl<S> tower::Layer<S> for FrontLayer {
    type Service = FrontService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        FrontService {
            inner,
            front: Arc::clone(&self.0),
        }
    }
}

/// The service of [`FrontLayer`].
#[derive(Clone)]
pub struct FrontService<S> {
    inner: S,
    front: Arc<Front>,
}

impl<S> tower::Service<Request> for FrontService<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = FrontFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let started = Instant::now();
        limits::resolve_client(&mut req, &self.front.trusted);
        let (id, header) = request_id(&req);
        req.extensions_mut().insert(RequestId(Arc::clone(&id)));
        let span = {
            let client = req.extensions().get::<ClientAddress>().map(|c| c.0);
            // The values are `Display` wrappers: a disabled span formats none of them.
            tracing::info_span!(
                "request",
                request_id = %id,
                client = %OptionalDisplay(client),
                method = %req.method(),
                path = %req.uri().path(),
                query = %super::RedactedQuery(req.uri().query()),
            )
        };
        let route = route_label(
            req.extensions()
                .get::<MatchedPath>()
                .map(MatchedPath::as_str),
        );
        // The limits' refusals log (sampled) inside the request's span, as before.
        let state = {
            let _entered = span.enter();
            if !req.body().is_end_stream() {
                let pace = self.front.pace;
                req = req.map(|body| Body::new(Paced::new(body, pace)));
            }
            match limits::per_request(&self.front.guards, &req) {
                Some(refusal) => State::Refused {
                    response: Some(refusal),
                },
                None => State::Called {
                    inner: scoped(id, self.inner.call(req)),
                },
            }
        };
        FrontFuture {
            state,
            header,
            span,
            route,
            started,
        }
    }
}

/// A client's id is kept when it is short printable ASCII (it goes into logs and to
/// backends); otherwise a new one is made. With it, its reply header (the client's own value,
/// or the new id's bytes shared).
fn request_id(req: &Request) -> (Arc<str>, Option<HeaderValue>) {
    let given = req.headers().get(X_REQUEST_ID).filter(|v| {
        let v = v.as_bytes();
        !v.is_empty() && v.len() <= 128 && v.iter().all(|b| b.is_ascii_graphic())
    });
    match given {
        // Printable ASCII: `to_str` cannot fail, and the header value is reused as it is.
        Some(value) => (
            Arc::from(value.to_str().unwrap_or_default()),
            Some(value.clone()),
        ),
        None => {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
            let header =
                HeaderValue::from_maybe_shared(Bytes::copy_from_slice(text.as_bytes())).ok();
            (Arc::from(&*text), header)
        }
    }
}

/// A field that may be absent: empty when it is.
struct OptionalDisplay<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OptionalDisplay<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => Ok(()),
        }
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        // Refused by the per-request limits: the routes never see it.
        Refused { response: Option<Response> },
        Called { #[pin] inner: Scoped<F> },
    }
}

pin_project_lite::pin_project! {
    /// The future of [`FrontService`]: the inner service's, polled inside the request's span
    /// and request-id scope, then the reply's bookkeeping.
    pub struct FrontFuture<F> {
        #[pin]
        state: State<F>,
        header: Option<HeaderValue>,
        span: tracing::Span,
        route: &'static str,
        started: Instant,
    }
}

impl<F, E> Future for FrontFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut response = match this.state.project() {
            StateProj::Refused { response } => response
                .take()
                .expect("a FrontFuture is not polled after it finished"),
            StateProj::Called { inner } => ready!(inner.poll(cx))?,
        };
        let latency = this.started.elapsed();
        record(&response, this.route, latency);
        access_log(&response, latency);
        let headers = response.headers_mut();
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if let Some(value) = this.header.take() {
            headers.insert(X_REQUEST_ID, value);
        }
        Poll::Ready(Ok(response))
    }
}
