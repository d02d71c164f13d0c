//! What a connection needs to be parked while idle: the byte-level wrapper that sees every
//! read and write ([`IdleTimeout`]: the idle timeout, and when the last byte moved), the
//! count of requests in flight ([`Serve`] counts from the call to the end of the response
//! body), and [`Rewind`], which hands bytes read before a parking (or while sniffing for
//! HTTP/2) back to the next HTTP connection first.
//!
//! Owns the facts a parking decision rests on ([`Activity::parkable`]), and giving the memory
//! parked connections freed back to the system ([`trim_after_parking`]: glibc keeps freed
//! buffers in its arenas otherwise). The decision and the connection loop are
//! `server::conn`'s. It must not know about routes.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tower::util::Oneshot;
use tower::ServiceExt;

use crate::edge::Failure;
use crate::error::Error;

/// One connection's activity, shared by its byte wrapper, its service and its loop.
#[derive(Debug, Default)]
pub struct Activity {
    /// When a byte last moved either way, in nanoseconds since [`epoch`].
    last: AtomicU64,
    /// The last write or flush could not complete (the peer is not reading).
    write_blocked: AtomicBool,
    /// Requests called and not yet answered to the end of their body.
    in_flight: AtomicUsize,
    /// Requests called on this connection so far.
    calls: AtomicU64,
    /// A refusal reply was produced (the connection is to be closed after it).
    pub refused: Notify,
}

/// The clock [`Activity`] counts from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        let activity = Activity::default();
        activity.touch(Instant::now());
        Arc::new(activity)
    }

    fn touch(&self, now: Instant) {
        self.last.store(since_epoch(now), Ordering::Relaxed);
    }

    /// Requests called so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Acquire)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// When a byte last moved either way.
    pub fn last(&self) -> Instant {
        epoch() + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }

    /// `Ok` when the connection may be parked now: nothing in flight, no write waiting, and
    /// no byte for `delay`; else `Err(when to look again)`.
    pub fn parkable(&self, delay: Duration, now: Instant) -> Result<(), Instant> {
        let due = self.last() + delay;
        if self.in_flight() > 0 || self.write_blocked.load(Ordering::Relaxed) {
            return Err(now + delay);
        }
        if due > now {
            return Err(due);
        }
        Ok(())
    }
}

/// A connection that is closed once no byte has moved either way for `timeout` while the
/// server waits on it; it also records each move in the connection's [`Activity`].
pub struct IdleTimeout<S> {
    inner: S,
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
    activity: Arc<Activity>,
}

impl<S> IdleTimeout<S> {
    pub fn new(inner: S, timeout: Duration, activity: Arc<Activity>) -> Self {
        IdleTimeout {
            inner,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            activity,
        }
    }

    /// Passes a ready result on (and restarts the clock), or fails a pending one whose
    /// clock has run out.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                let now = Instant::now();
                self.sleep.as_mut().reset(now + self.timeout);
                self.activity.touch(now);
                Poll::Ready(r)
            }
            Poll::Pending => {
                ready!(self.sleep.as_mut().poll(cx));
                Poll::Ready(Err(timed_out()))
            }
        }
    }

    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        self.activity
            .write_blocked
            .store(polled.is_pending(), Ordering::Relaxed);
        self.watch(cx, polled)
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle timeout")
}

impl IdleTimeout<TcpStream> {
    /// Parked: waits, holding no buffer, until the socket has a byte (or EOF) to read;
    /// `Err` when the idle timeout passes first.
    pub async fn readable(&mut self) -> io::Result<()> {
        tokio::select! {
            r = self.inner.readable() => r,
            () = self.sleep.as_mut() => Err(timed_out()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.watch(cx, polled)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch_write(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.activity
            .write_blocked
            .store(polled.is_pending(), Ordering::Relaxed);
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream whose first reads yield `prefix`: bytes already taken off the socket (by a
/// parked HTTP connection or the HTTP/2 sniff) that the next reader must see first.
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Rewind { prefix, inner }
    }

    /// What of the prefix was not read yet.
    pub fn prefix(&self) -> &Bytes {
        &self.prefix
    }

    /// The stream and what of the prefix was not read yet.
    pub fn into_parts(self) -> (Bytes, S) {
        (self.prefix, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix = self.prefix.slice(n..);
            // And what has arrived since, in the same read: hyper grows its read buffer
            // (to 16 KiB and more) when a head takes a second read.
            if self.prefix.is_empty() && buf.remaining() > 0 {
                let mut rest = buf.take(buf.remaining());
                if let Poll::Ready(Ok(())) = Pin::new(&mut self.inner).poll_read(cx, &mut rest) {
                    let more = rest.filled().len();
                    // SAFETY: `rest` is `buf`'s unfilled part; `more` bytes of it were filled.
                    unsafe { buf.assume_init(more) };
                    buf.advance(more);
                }
                // Pending or an error: the prefix is this read; an error comes again next.
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a connection's requests get: the app, or one refusal (a connection past a cap).
#[derive(Clone)]
pub enum Route {
    App(Router),
    Refuse(fn() -> Error),
}

/// The per-connection service: marks the client address for the app and counts requests in
/// flight in the connection's [`Activity`] until the response body ends or is dropped.
#[derive(Clone)]
pub struct Serve {
    pub route: Route,
    pub remote: SocketAddr,
    pub activity: Arc<Activity>,
}

/// One request in flight; its response body carries the count on to its end.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.calls.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for Serve {
    type Response = Response<Counted>;
    type Error = Infallible;
    type Future = Call;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Call {
        let guard = InFlight::enter(&self.activity);
        let state = match &self.route {
            Route::App(app) => {
                req.extensions_mut().insert(ConnectInfo(self.remote));
                State::App(app.clone().oneshot(req))
            }
            Route::Refuse(error) => {
                self.activity.refused.notify_one();
                State::Ready(Some(refusal(error())))
            }
        };
        Call {
            state,
            guard: Some(guard),
        }
    }
}

/// The one reply a connection past a cap gets; it asks an HTTP/1.1 client to close (hyper
/// leaves the hop header out over HTTP/2, where the connection loop sends GOAWAY instead).
fn refusal(error: Error) -> Response {
    let mut response: Response = Failure::from(error).into_response();
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    headers.insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    response
}

enum State {
    App(Oneshot<Router, hyper::Request<Incoming>>),
    Ready(Option<Response>),
}

/// [`Serve`]'s future: the app's response with the in-flight count moved into its body.
pub struct Call {
    state: State,
    guard: Option<InFlight>,
}

impl Future for Call {
    type Output = Result<Response<Counted>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let response = match &mut this.state {
            State::App(call) => match ready!(Pin::new(call).poll(cx)) {
                Ok(response) => response,
                Err(never) => match never {},
            },
            State::Ready(response) => response.take().expect("polled after completion"),
        };
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|body| Counted {
            body,
            _in_flight: guard,
        })))
    }
}

/// A response body that keeps its request counted as in flight until it ends or is dropped.
pub struct Counted {
    body: Body,
    _in_flight: Option<InFlight>,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self._in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Connections parked since the last [`trim_after_parking`] round.
static PARKED: AtomicU64 = AtomicU64::new(0);

/// Counts one parking for [`trim_after_parking`].
pub fn parked() {
    PARKED.fetch_add(1, Ordering::Relaxed);
}

/// How often [`trim_after_parking`] looks, and how many parkings (each freeing hyper's two
/// 8 KiB buffers) make a trim worth its walk over the allocator's free lists.
pub const TRIM_EVERY: Duration = Duration::from_secs(2);
pub const TRIM_AFTER_PARKED: u64 = 256;

/// Runs until aborted: every [`TRIM_EVERY`], when at least [`TRIM_AFTER_PARKED`] connections
/// were parked since the last look, asks glibc's allocator to give its free pages back to
/// the system (`malloc_trim`, on a blocking thread). Without it the buffers parked
/// connections freed stay resident: glibc returns memory only from the top of a heap, and
/// parked connections' small state sits between the freed buffers. Elsewhere (other
/// allocators return memory by themselves) it only counts.
pub async fn trim_after_parking() {
    loop {
        tokio::time::sleep(TRIM_EVERY).await;
        let parked = PARKED.swap(0, Ordering::Relaxed);
        if parked < TRIM_AFTER_PARKED {
            continue;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            let took = tokio::task::spawn_blocking(|| {
                let start = std::time::Instant::now();
                // SAFETY: malloc_trim only walks and releases the allocator's free memory;
                // it takes the arenas' locks like any malloc call.
                unsafe { libc::malloc_trim(0) };
                start.elapsed()
            })
            .await;
            if let Ok(took) = took {
                tracing::debug!(
                    parked,
                    took_us = took.as_micros() as u64,
                    "allocator trimmed after parking"
                );
            }
        }
        #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
        let _ = parked;
    }
}
