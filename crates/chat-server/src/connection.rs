//! One client connection: handshake, then many calls at once, each answered by request id.
//!
//! Owns the connection's defences: the handshake and idle timeouts, the frame size bound (in
//! the codec for what it reads; a reply over it becomes that call's `replyTooLarge` error,
//! never a closed connection), the bound on calls in flight and, apart from it, the bound on
//! held watches (version 3), the write timeout for peers that do not read, and
//! closing the connection — only this one — with a logged reason when the peer breaks the
//! protocol. One task per connection reads requests, answers the calls that cannot wait
//! inline and writes every reply, many in one write; only calls that may wait run on tasks
//! of their own. It must not know what a call does, nor which calls may wait:
//! [`Server::at_once`] and [`Server::handle`] do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chat_protocol::auth::{self, Role};
use chat_protocol::{
    codec, decode, encode, encode_frame, put_frame, Answer, Call, Challenge, DecodeError,
    ErrorCode, Hello, HelloReply, Proof, Refused, Reply, Request, RequestId, Welcome, WireError,
    MAX_FRAME_LENGTH, PROTOCOL_V1, PROTOCOL_V2, PROTOCOL_VERSION, WATCH_SINCE,
};
use config_types::Secret;
use futures::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dispatch::{AtOnce, Server};

/// The per-connection limits, from the config.
#[derive(Clone, Debug)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub max_in_flight: usize,
    /// Watches held at once; apart from `max_in_flight` (`max_watches_per_connection`).
    pub max_watches: usize,
    pub shutdown_grace: Duration,
    /// The shared secret every peer must prove in the handshake; `None` takes any peer
    /// (allowed on loopback only, or with `--allow-no-secret`).
    pub secret: Option<Secret>,
    /// A rotation's previous secret, accepted besides `secret` (`previous_secret_file`).
    pub previous_secret: Option<Secret>,
}

/// Why a connection was closed by the server.
#[derive(Debug, Error)]
enum Close {
    #[error("no hello within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("peer closed before the handshake")]
    ClosedBeforeHello,
    #[error("bad frame: {0}")]
    Frame(std::io::Error),
    #[error("bad hello: {0}")]
    BadHello(DecodeError),
    #[error("peer speaks protocol version {0}")]
    VersionMismatch(u16),
    #[error("authentication failed: {0}")]
    AuthFailed(&'static str),
    #[error("bad proof frame: {0}")]
    BadProof(DecodeError),
    #[error("bad request frame: {0}")]
    BadRequest(DecodeError),
    #[error("nothing received for {0:?}")]
    Idle(Duration),
    #[error("peer does not read its replies (write blocked for {0:?})")]
    WriteTimeout(Duration),
    #[error("write failed: {0}")]
    Write(std::io::Error),
}

/// Serves one connection to its end and logs why it ended.
pub async fn serve(
    server: Arc<Server>,
    limits: Limits,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _counted = server.connection_opened();
    // Replies are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    match run(&server, &limits, stream, peer, &shutdown).await {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        // Port probes and health checks connect and leave: not worth a warning.
        Err(reason @ Close::ClosedBeforeHello) => {
            tracing::debug!(%peer, %reason, "closing connection")
        }
        Err(reason) => tracing::warn!(%peer, %reason, "closing connection"),
    }
}

/// A frame that is not a valid request but still says which request it was: the peer gets an
/// error reply for that id instead of losing the connection (a newer client's unknown call).
#[derive(Deserialize)]
struct JustTheId {
    id: RequestId,
}

async fn run(
    server: &Arc<Server>,
    limits: &Limits,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<(), Close> {
    let mut framed = Framed::new(stream, codec());
    // The whole handshake (hello, and with a secret the proof) within one bound.
    let deadline = tokio::time::Instant::now() + limits.handshake_timeout;

    let hello: Hello = match tokio::time::timeout_at(deadline, framed.next()).await {
        Err(_) => return Err(Close::HandshakeTimeout(limits.handshake_timeout)),
        Ok(None) => return Err(Close::ClosedBeforeHello),
        Ok(Some(Err(e))) => return Err(Close::Frame(e)),
        Ok(Some(Ok(frame))) => decode(&frame).map_err(Close::BadHello)?,
    };
    // Version 1 has no authentication: only a server without a secret speaks it. Version 3
    // is version 2 plus `watch`: the same handshake.
    let supported = match limits.secret {
        Some(_) => vec![PROTOCOL_V2, PROTOCOL_VERSION],
        None => vec![PROTOCOL_V1, PROTOCOL_V2, PROTOCOL_VERSION],
    };
    if !supported.contains(&hello.version) {
        let (code, close, message) = if hello.version == PROTOCOL_V1 {
            (
                ErrorCode::AuthFailed,
                Close::AuthFailed("a version-1 hello: this server needs the shared secret"),
                "this server needs the shared secret: protocol version 2 or 3".to_owned(),
            )
        } else {
            (
                ErrorCode::VersionMismatch,
                Close::VersionMismatch(hello.version),
                format!(
                    "protocol version {} not supported, this server speaks {supported:?}",
                    hello.version
                ),
            )
        };
        refuse(&mut framed, limits, code, message, supported).await;
        return Err(close);
    }
    let proof = match &limits.secret {
        None => None,
        Some(secret) => Some(authenticate(&mut framed, limits, deadline, secret, &hello).await?),
    };
    let welcome = HelloReply::Welcome(Welcome {
        version: hello.version,
        alias: server.alias().to_owned(),
        max_frame_length: MAX_FRAME_LENGTH as u64,
        status: server.status(),
        proof,
    });
    send_bounded(&mut framed, encode(&welcome), limits.write_timeout).await?;
    tracing::debug!(%peer, client = %hello.peer, version = hello.version, "handshake done");
    let version = hello.version;

    // From here this task alone reads requests and writes replies. A call that cannot wait
    // is answered inline, its reply encoded straight into the write buffer; a call that may
    // wait (a held watch, a store write) runs on a task of its own and hands its reply back
    // through `done`, with its permit. Whatever is ready together goes out in one write.
    // `done` holds at most one reply per call task, and call tasks are bounded by the
    // in-flight and watch permits, so the channel needs no bound of its own.
    let (done_tx, mut done) = mpsc::unbounded_channel::<Done>();
    let mut calls = Calls {
        server,
        version,
        max_watches: limits.max_watches,
        in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
        // Held watches wait for events, not for work: their own bound, so they never take
        // the permits normal calls need.
        watches: Arc::new(Semaphore::new(limits.max_watches)),
        tasks: TaskTracker::new(),
        done: done_tx,
        spare: None,
    };
    calls.spare = Arc::clone(&calls.in_flight).try_acquire_owned().ok();
    let mut idle_until = Instant::now() + limits.idle_timeout;

    let ended = 'serve: loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(()),
            Some(finished) = done.recv() => finished.put(framed.write_buffer_mut()),
            // Backpressure: at the in-flight bound the connection is not read until a call
            // task finishes and gives its permit back.
            permit = Arc::clone(&calls.in_flight).acquire_owned(), if calls.spare.is_none() => {
                calls.spare = permit.ok();
            }
            next = tokio::time::timeout_at(idle_until, framed.next()), if calls.spare.is_some() => {
                match next {
                    // A peer holding watches is waiting for their answers, not idle.
                    Err(_) if calls.holds_watches() => {
                        idle_until = Instant::now() + limits.idle_timeout;
                    }
                    Err(_) => break Err(Close::Idle(limits.idle_timeout)),
                    Ok(None) => break Ok(()),
                    Ok(Some(Err(e))) => break Err(Close::Frame(e)),
                    Ok(Some(Ok(frame))) => {
                        idle_until = Instant::now() + limits.idle_timeout;
                        if let Err(reason) = calls.take(&frame, framed.write_buffer_mut()) {
                            break Err(reason);
                        }
                    }
                }
            }
        }
        // Every request already received and every reply already finished joins this write,
        // up to a bound on the buffer.
        let mut peer_finished = false;
        while framed.write_buffer().len() < FLUSH_AT {
            if let Ok(finished) = done.try_recv() {
                finished.put(framed.write_buffer_mut());
                continue;
            }
            if calls.spare.is_none() {
                break;
            }
            match framed.next().now_or_never() {
                None => break,
                Some(None) => {
                    peer_finished = true;
                    break;
                }
                Some(Some(Err(e))) => break 'serve Err(Close::Frame(e)),
                Some(Some(Ok(frame))) => {
                    idle_until = Instant::now() + limits.idle_timeout;
                    if let Err(reason) = calls.take(&frame, framed.write_buffer_mut()) {
                        break 'serve Err(reason);
                    }
                }
            }
        }
        if let Err(reason) = flush_bounded(&mut framed, limits.write_timeout).await {
            break Err(reason);
        }
        if peer_finished {
            break Ok(());
        }
    };

    match ended {
        Ok(()) => {
            // Peer finished or the server shuts down: let calls in flight answer, each reply
            // written as it comes, within the grace.
            calls.tasks.close();
            let grace = tokio::time::sleep(limits.shutdown_grace);
            tokio::pin!(grace);
            loop {
                tokio::select! {
                    _ = calls.tasks.wait() => break,
                    _ = &mut grace => break,
                    Some(finished) = done.recv() => {
                        finished.put(framed.write_buffer_mut());
                        if flush_bounded(&mut framed, limits.write_timeout).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            while let Ok(finished) = done.try_recv() {
                finished.put(framed.write_buffer_mut());
            }
            let _ = flush_bounded(&mut framed, limits.write_timeout).await;
            Ok(())
        }
        // A peer that broke the protocol gets nothing more.
        Err(reason) => Err(reason),
    }
}

/// Replies waiting in the write buffer are written once it holds this much, even when more
/// requests are ready to be answered first.
const FLUSH_AT: usize = 64 * 1024;

/// A call task's reply, with the permit it held until the reply is in the write buffer.
struct Done {
    frame: Bytes,
    _permit: OwnedSemaphorePermit,
}

impl Done {
    fn put(self, out: &mut BytesMut) {
        put_frame(&self.frame, out);
    }
}

/// One connection's calls: answered inline, or handed to a task when they may wait.
struct Calls<'a> {
    server: &'a Arc<Server>,
    /// The protocol version the handshake settled on: `watch` needs 3.
    version: u16,
    max_watches: usize,
    in_flight: Arc<Semaphore>,
    watches: Arc<Semaphore>,
    tasks: TaskTracker,
    done: mpsc::UnboundedSender<Done>,
    /// The in-flight permit the next call task takes. The connection is read only while it
    /// holds one, so at the bound it stops reading (TCP backpressure) until a task finishes.
    spare: Option<OwnedSemaphorePermit>,
}

impl Calls<'_> {
    fn holds_watches(&self) -> bool {
        self.watches.available_permits() < self.max_watches
    }

    /// Takes one request frame: answered inline into `out` when it cannot wait, else started
    /// on its own task. Only a frame that says no request id breaks the connection.
    fn take(&mut self, frame: &[u8], out: &mut BytesMut) -> Result<(), Close> {
        let request: Request = match decode(frame) {
            Ok(request) => request,
            Err(e) => match decode::<JustTheId>(frame) {
                Ok(JustTheId { id }) => {
                    let error =
                        WireError::new(ErrorCode::Unsupported, format!("unknown call: {e}"));
                    reply_into(id, Err(error), out);
                    return Ok(());
                }
                Err(_) => return Err(Close::BadRequest(e)),
            },
        };
        let Request { id, call, trace_id } = request;
        let span = tracing::debug_span!("call", id, trace_id);
        if let Call::Watch { .. } = call {
            if self.version < WATCH_SINCE {
                let error = WireError::new(
                    ErrorCode::Unsupported,
                    format!(
                        "watch needs protocol version {WATCH_SINCE}; this connection speaks {}",
                        self.version
                    ),
                );
                reply_into(id, Err(error), out);
                return Ok(());
            }
            let Ok(permit) = Arc::clone(&self.watches).try_acquire_owned() else {
                let error = WireError::new(
                    ErrorCode::Overloaded,
                    format!(
                        "{} watches already held on this connection",
                        self.max_watches
                    ),
                );
                reply_into(id, Err(error), out);
                return Ok(());
            };
            self.spawn(id, call, permit, span);
            return Ok(());
        }
        let call = match span.in_scope(|| self.server.at_once(call)) {
            AtOnce::Answered(result) => {
                reply_into(id, result, out);
                return Ok(());
            }
            AtOnce::MayWait(call) => call,
        };
        // The connection is read only while a spare permit is held.
        let permit = self
            .spare
            .take()
            .expect("a request is read only with a spare permit");
        self.spare = Arc::clone(&self.in_flight).try_acquire_owned().ok();
        self.spawn(id, call, permit, span);
        Ok(())
    }

    fn spawn(&self, id: RequestId, call: Call, permit: OwnedSemaphorePermit, span: tracing::Span) {
        let server = Arc::clone(self.server);
        let done = self.done.clone();
        self.tasks.spawn(tracing::Instrument::instrument(
            async move {
                let reply = match server.handle(call).await {
                    Ok(answer) => Reply::ok(id, answer),
                    Err(error) => Reply::error(id, error),
                };
                let frame = within_the_frame_bound(id, encode(&reply));
                // The connection is gone only when it is closing; the reply is lost with it.
                let _ = done.send(Done {
                    frame,
                    _permit: permit,
                });
            },
            span,
        ));
    }
}

/// Encodes a reply straight into the write buffer; a reply over the frame bound becomes
/// that request's `replyTooLarge` error, so only this call fails.
fn reply_into(id: RequestId, result: Result<Answer, WireError>, out: &mut BytesMut) {
    let reply = match result {
        Ok(answer) => Reply::ok(id, answer),
        Err(error) => Reply::error(id, error),
    };
    if let Err(length) = encode_frame(&reply, out) {
        let error = too_large(id, length);
        encode_frame(&Reply::error(id, error), out).expect("an error reply is small");
    }
}

/// Writes the write buffer out, within the write timeout: a peer that does not read its
/// replies is closed.
async fn flush_bounded(
    framed: &mut Framed<TcpStream, LengthDelimitedCodec>,
    limit: Duration,
) -> Result<(), Close> {
    if framed.write_buffer().is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(limit, SinkExt::<Bytes>::flush(framed)).await {
        Err(_) => Err(Close::WriteTimeout(limit)),
        Ok(Err(e)) => Err(Close::Write(e)),
        Ok(Ok(())) => Ok(()),
    }
}

// A page of events (the engine's bound) and the rest of its reply fit in one frame, so a
// refresh's reply is never too large; `within_the_frame_bound` is the backstop for the rest.
const _: () = assert!(2 * chat_engine::PAGE_MAX_BYTES <= MAX_FRAME_LENGTH);

/// A reply frame, or, when it is over the frame bound, an error reply for the same request
/// id: the codec would refuse to write it and the writer would close the connection every
/// chat of this gateway shares. Only the call that built the reply fails.
fn within_the_frame_bound(id: RequestId, frame: Bytes) -> Bytes {
    if frame.len() <= MAX_FRAME_LENGTH {
        return frame;
    }
    encode(&Reply::error(id, too_large(id, frame.len())))
}

/// The error that replaces a reply of `length` bytes, over the frame bound.
fn too_large(id: RequestId, length: usize) -> WireError {
    tracing::warn!(
        id,
        bytes = length,
        "reply over the frame bound: answered with replyTooLarge"
    );
    WireError::new(
        ErrorCode::ReplyTooLarge,
        format!("the reply would be {length} bytes, over the {MAX_FRAME_LENGTH}-byte frame bound"),
    )
}

/// The challenge and the client's proof (`chat_protocol::auth`); returns the server's own
/// proof for the welcome. A peer without the secret is refused and closed: it never reaches
/// a call.
async fn authenticate(
    framed: &mut Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
    limits: &Limits,
    deadline: tokio::time::Instant,
    secret: &Secret,
    hello: &Hello,
) -> Result<String, Close> {
    let server_nonce = auth::nonce();
    let challenge = HelloReply::Challenge(Challenge {
        nonce: server_nonce.clone(),
    });
    send_bounded(framed, encode(&challenge), limits.write_timeout).await?;
    let proof: Proof = match tokio::time::timeout_at(deadline, framed.next()).await {
        Err(_) => return Err(Close::HandshakeTimeout(limits.handshake_timeout)),
        Ok(None) => return Err(Close::AuthFailed("closed without a proof")),
        Ok(Some(Err(e))) => return Err(Close::Frame(e)),
        Ok(Some(Ok(frame))) => decode(&frame).map_err(Close::BadProof)?,
    };
    let client_nonce = hello.nonce.as_deref().unwrap_or("");
    let secrets = crate::config::accepted_secrets(secret, limits.previous_secret.as_ref());
    let Some(key) = auth::verify_any(
        &secrets,
        Role::Client,
        &server_nonce,
        client_nonce,
        &proof.proof,
    ) else {
        refuse(
            framed,
            limits,
            ErrorCode::AuthFailed,
            "the proof does not match this server's shared secret".to_owned(),
            vec![PROTOCOL_V2, PROTOCOL_VERSION],
        )
        .await;
        return Err(Close::AuthFailed(
            "wrong proof: the peer does not hold the shared secret",
        ));
    };
    Ok(auth::proof(key, Role::Server, &server_nonce, client_nonce))
}

/// Tells the peer why the handshake failed. Best effort: the connection closes whether or
/// not the refusal gets through.
async fn refuse(
    framed: &mut Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
    limits: &Limits,
    code: ErrorCode,
    message: String,
    supported_versions: Vec<u16>,
) {
    let refusal = HelloReply::Refused(Refused {
        error: WireError::new(code, message),
        supported_versions,
    });
    let _ = tokio::time::timeout(limits.write_timeout, framed.send(encode(&refusal))).await;
}

async fn send_bounded(
    framed: &mut Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
    frame: Bytes,
    limit: Duration,
) -> Result<(), Close> {
    match tokio::time::timeout(limit, framed.send(frame)).await {
        Err(_) => Err(Close::WriteTimeout(limit)),
        Ok(Err(e)) => Err(Close::Write(e)),
        Ok(Ok(())) => Ok(()),
    }
}
