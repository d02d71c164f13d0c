//! One accepted connection from its first byte to its close: the TLS handshake (bounded by
//! `server.tls.handshake_timeout_ms`), the protocol (HTTP/2 when ALPN chose `h2` or, with
//! `server.h2c`, when a cleartext client opens with the HTTP/2 preface; HTTP/1.1 otherwise),
//! the parking of idle HTTP/1.1 keep-alive connections, and the graceful close on shutdown.
//!
//! Owns the HTTP/1.1 and HTTP/2 settings and the parking decision. Admission (the caps) is
//! `server`'s and happens before; this module must not know about routes or caps.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::park::{IdleTimeout, Rewind, Serve};
use crate::edge::limits::LimitsConfig;

/// Streams one HTTP/2 connection may have open at once.
pub const H2_MAX_STREAMS: u32 = 128;
/// HTTP/2 flow-control credit per stream and per connection (bytes a peer may send ahead).
pub const H2_STREAM_WINDOW: u32 = 256 * 1024;
pub const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Bytes queued for sending per stream at most.
pub const H2_SEND_BUFFER: usize = 256 * 1024;
/// A PING when an HTTP/2 connection has been silent this long; no answer within
/// [`H2_PING_TIMEOUT`] closes it (a dead peer).
pub const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
pub const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The first bytes of every HTTP/2 connection (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How one listener serves its connections.
pub struct Listener {
    /// TLS, with the handshake's time limit; cleartext when `None`.
    pub tls: Option<(TlsAcceptor, Duration)>,
    /// Cleartext HTTP/2 with prior knowledge.
    pub h2c: bool,
    /// Park idle HTTP/1.1 cleartext connections after this long; never when `None`.
    pub park: Option<Duration>,
}

/// The protocol settings every connection shares, and the shutdown signal.
pub struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    idle: Duration,
    header_read: Duration,
    pub shutdown: CancellationToken,
}

impl Protocols {
    pub fn new(limits: &LimitsConfig) -> Protocols {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            // The edge refuses heads over max_header_bytes with a JSON 431; this is the hard
            // cap past which hyper refuses them itself, before they are even parsed.
            .max_buf_size((limits.max_header_bytes * 2).max(8192))
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .max_send_buf_size(H2_SEND_BUFFER)
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT);
        Protocols {
            http1,
            http2,
            idle: limits.idle_timeout,
            header_read: limits.header_read_timeout,
            shutdown: CancellationToken::new(),
        }
    }

    /// Serves `stream` until it closes, the idle timeout passes, or shutdown closes it.
    pub async fn serve(&self, stream: TcpStream, listener: &Listener, service: Serve) {
        let io = IdleTimeout::new(stream, self.idle, Arc::clone(&service.activity));
        // The task spawned per connection is as large as the largest state of this future,
        // and stays so while the connection is parked: the protocols' large states (the TLS
        // session, hyper's HTTP/1.1 and HTTP/2 connections) are boxed, so that a parked
        // connection's task holds little more than its socket.
        if let Some((acceptor, within)) = &listener.tls {
            Box::pin(self.serve_tls(io, acceptor, *within, service)).await;
            return;
        }
        let mut io = io;
        let mut prefix = Bytes::new();
        if listener.h2c {
            let sniffed = tokio::select! {
                r = tokio::time::timeout(self.header_read, sniff(&mut io)) => r,
                () = self.shutdown.cancelled() => return,
            };
            match sniffed {
                Ok(Ok((bytes, true))) => {
                    Box::pin(self.drive_h2(Rewind::new(bytes, io), service)).await;
                    return;
                }
                Ok(Ok((bytes, false))) => prefix = bytes,
                Ok(Err(_)) | Err(_) => return,
            }
        }
        self.serve_h1_parking(Rewind::new(prefix, io), service, listener.park)
            .await;
    }

    /// TLS: the handshake (bounded by `within`, and by shutdown), then HTTP/2 when ALPN chose
    /// it, HTTP/1.1 otherwise (not parked: see docs/tls.md).
    async fn serve_tls(
        &self,
        io: IdleTimeout<TcpStream>,
        acceptor: &TlsAcceptor,
        within: Duration,
        service: Serve,
    ) {
        let remote = service.remote;
        let handshake = tokio::select! {
            r = tokio::time::timeout(within, acceptor.accept(io)) => r,
            () = self.shutdown.cancelled() => return,
        };
        let tls = match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%remote, "TLS handshake timed out");
                return;
            }
        };
        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            self.drive_h2(tls, service).await;
        } else {
            let _ = self.drive_h1(tls, service, None, false).await;
        }
    }

    /// HTTP/1.1 over cleartext, parked whenever it idles for `park`: hyper's connection
    /// ends (writing nothing), the socket waits for its next byte holding no buffer, and a
    /// fresh hyper connection first reads whatever the last one had read but not used.
    async fn serve_h1_parking(
        &self,
        mut io: Rewind<IdleTimeout<TcpStream>>,
        service: Serve,
        park: Option<Duration>,
    ) {
        loop {
            // A connection resumed with bytes already read (a head cut by the parking) is not
            // parked again before it has served a request: hyper's header-read timeout must
            // not restart for ever on a client trickling a head.
            let resumed = !io.prefix().is_empty();
            let Some((rewind, unread)) =
                Box::pin(self.drive_h1(io, service.clone(), park, resumed)).await
            else {
                return;
            };
            let (rest, mut socket) = rewind.into_parts();
            // An empty `Bytes` from hyper can still own its whole 8 KiB read buffer: keep
            // only bytes, never an empty buffer, across the parking.
            let prefix = match (rest.is_empty(), unread.is_empty()) {
                (true, true) => Bytes::new(),
                (true, false) => unread,
                (false, true) => rest,
                (false, false) => Bytes::from([&rest[..], &unread[..]].concat()),
            };
            tracing::debug!(remote = %service.remote, unread = prefix.len(), "connection parked");
            super::park::parked();
            if prefix.is_empty() {
                // Kept as long as hyper keeps an idle keep-alive connection: the header-read
                // timeout from its last byte (and never past the idle timeout).
                let kept = tokio::time::sleep_until(service.activity.last() + self.header_read);
                tokio::select! {
                    r = socket.readable() => if r.is_err() { return },
                    () = kept => return,
                    () = self.shutdown.cancelled() => return,
                }
            }
            io = Rewind::new(prefix, socket);
        }
    }

    /// One hyper HTTP/1.1 connection. `Some((io, unread bytes))` when it was parked; `None`
    /// when the connection is over (closed, failed, or shut down).
    ///
    /// Parking a connection that has answered a request asks hyper to shut it down
    /// gracefully: it is idle in hyper's sense (its last response written out), so it ends
    /// without writing a byte. One that has not started a request yet (hyper would answer
    /// its first request with `Connection: close` after a graceful shutdown) has written
    /// nothing and is taken apart directly.
    async fn drive_h1<I>(
        &self,
        io: I,
        service: Serve,
        park: Option<Duration>,
        resumed: bool,
    ) -> Option<(I, Bytes)>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::clone(&service.activity);
        let remote = service.remote;
        let calls_before = activity.calls();
        let mut conn = self.http1.serve_connection(TokioIo::new(io), service);
        let (mut closing, mut parking) = (false, false);
        let tick = tokio::time::sleep(park.unwrap_or(self.idle));
        tokio::pin!(tick);
        let ended = loop {
            tokio::select! {
                r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break r,
                () = self.shutdown.cancelled(), if !closing => {
                    std::pin::Pin::new(&mut conn).graceful_shutdown();
                    closing = true;
                }
                () = activity.refused.notified(), if !closing => {
                    std::pin::Pin::new(&mut conn).graceful_shutdown();
                    closing = true;
                }
                () = &mut tick, if park.is_some() && !closing => {
                    let delay = park.unwrap_or_default();
                    match activity.parkable(delay, Instant::now()) {
                        Ok(()) if activity.calls() == calls_before => {
                            if resumed {
                                tick.as_mut().reset(Instant::now() + delay);
                                continue;
                            }
                            let parts = conn.into_parts();
                            return Some((parts.io.into_inner(), parts.read_buf));
                        }
                        // Nothing in flight and nothing written for the delay: hyper's last
                        // response is out and it is idle, so it closes writing nothing.
                        Ok(()) => {
                            std::pin::Pin::new(&mut conn).graceful_shutdown();
                            (closing, parking) = (true, true);
                        }
                        Err(again) => tick.as_mut().reset(again),
                    }
                }
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%remote, error = %e, "connection ended with an error");
            return None;
        }
        let parts = conn.into_parts();
        let mut io = parts.io.into_inner();
        if parking && !self.shutdown.is_cancelled() && activity.in_flight() == 0 {
            return Some((io, parts.read_buf));
        }
        let _ = io.shutdown().await;
        None
    }

    /// One hyper HTTP/2 connection, until it closes; shutdown sends GOAWAY and lets open
    /// streams finish, and so does a connection left without streams (see below).
    async fn drive_h2<I>(&self, io: I, service: Serve)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::clone(&service.activity);
        let remote = service.remote;
        let conn = self.http2.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut closing = false;
        // PINGs keep bytes moving, so the idle timeout alone would never close an HTTP/2
        // connection: one with no stream open and none opened for a whole header-read
        // timeout is closed (GOAWAY) as an idle keep-alive HTTP/1.1 connection would be.
        let mut calls = activity.calls();
        let tick = tokio::time::sleep(self.header_read);
        tokio::pin!(tick);
        loop {
            tokio::select! {
                () = &mut tick, if !closing => {
                    let now = activity.calls();
                    if activity.in_flight() == 0 && now == calls {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    } else {
                        calls = now;
                        tick.as_mut().reset(Instant::now() + self.header_read);
                    }
                }
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%remote, error = %e, "HTTP/2 connection ended with an error");
                    }
                    return;
                }
                () = self.shutdown.cancelled(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = activity.refused.notified(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Reads until the bytes either are the HTTP/2 preface (`true`) or cannot be (`false`);
/// returns what was read, for the protocol's connection to read again.
async fn sniff<S: AsyncRead + Unpin>(io: &mut S) -> io::Result<(Bytes, bool)> {
    let mut buf = [0u8; PREFACE.len()];
    let mut len = 0;
    loop {
        let n = io.read(&mut buf[len..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        len += n;
        if buf[..len] != PREFACE[..len] {
            return Ok((Bytes::copy_from_slice(&buf[..len]), false));
        }
        if len == PREFACE.len() {
            return Ok((Bytes::copy_from_slice(&buf), true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::park::Route;

    /// What a parked connection costs is mostly its task, whose size is fixed at spawn by
    /// the largest state of `serve`: the protocols' states must stay boxed.
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, remote) = listener.accept().await.unwrap();
        let protocols = Protocols::new(&LimitsConfig::default());
        let conf = Listener {
            tls: None,
            h2c: true,
            park: Some(Duration::from_secs(1)),
        };
        let service = Serve {
            route: Route::App(axum::Router::new()),
            remote,
            activity: super::super::park::Activity::new(),
        };
        let serving = protocols.serve(stream, &conf, service);
        let size = std::mem::size_of_val(&serving);
        println!("connection future: {size} bytes");
        assert!(size <= 2048, "the connection future grew to {size} bytes");
        drop((serving, client));
    }
}
