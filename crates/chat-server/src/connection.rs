//! One client connection: handshake, then many calls at once, each answered by request id.
//!
//! Owns the connection's defences: the handshake and idle timeouts, the frame size bound (in
//! the codec for what it reads; a reply over it becomes that call's `replyTooLarge` error,
//! never a closed connection), the bound on calls in flight and, apart from it, the bound on
//! held watches (version 3), the write timeout for peers that do not read, and
//! closing the connection — only this one — with a logged reason when the peer breaks the
//! protocol. It must not know what a call does: [`Server::handle`] does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_protocol::auth::{self, Role};
use chat_protocol::{
    codec, decode, encode, Call, Challenge, DecodeError, ErrorCode, Hello, HelloReply, Proof,
    Refused, Reply, Request, RequestId, Welcome, WireError, MAX_FRAME_LENGTH, PROTOCOL_V1,
    PROTOCOL_V2, PROTOCOL_VERSION, WATCH_SINCE,
};
use config_types::Secret;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dispatch::Server;

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

    let (mut sink, mut frames) = framed.split();
    // Replies from the call tasks to the one writer. Its capacity and the in-flight permits
    // are the same bound, so a call task never waits here for long.
    let (replies, mut outgoing) = mpsc::channel::<Bytes>(limits.max_in_flight);
    let write_timeout = limits.write_timeout;
    let mut writer = tokio::spawn(async move {
        while let Some(first) = outgoing.recv().await {
            // Queue every reply already waiting, then flush once: under load one write
            // carries many replies instead of one syscall each.
            let batch = async {
                sink.feed(first).await?;
                while let Ok(frame) = outgoing.try_recv() {
                    sink.feed(frame).await?;
                }
                sink.flush().await
            };
            match tokio::time::timeout(write_timeout, batch).await {
                Err(_) => return Err(Close::WriteTimeout(write_timeout)),
                Ok(Err(e)) => return Err(Close::Write(e)),
                Ok(Ok(())) => {}
            }
        }
        Ok(())
    });
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    // Held watches wait for events, not for work: their own bound, so they never take the
    // permits normal calls need.
    let watches = Arc::new(Semaphore::new(limits.max_watches));
    let calls = TaskTracker::new();

    let ended = loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            written = &mut writer => {
                // The writer only stops early on a write failure.
                break match written {
                    Ok(Err(reason)) => Err(reason),
                    _ => Ok(()),
                };
            }
            next = tokio::time::timeout(limits.idle_timeout, frames.next()) => next,
        };
        let frame = match next {
            // A peer holding watches is waiting for their answers, not idle.
            Err(_) if watches.available_permits() < limits.max_watches => continue,
            Err(_) => break Err(Close::Idle(limits.idle_timeout)),
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(Close::Frame(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        let request: Request = match decode(&frame) {
            Ok(request) => request,
            Err(e) => match decode::<JustTheId>(&frame) {
                Ok(JustTheId { id }) => {
                    let error =
                        WireError::new(ErrorCode::Unsupported, format!("unknown call: {e}"));
                    if replies
                        .send(encode(&Reply::error(id, error)))
                        .await
                        .is_err()
                    {
                        break Ok(());
                    }
                    continue;
                }
                Err(_) => break Err(Close::BadRequest(e)),
            },
        };
        let permit = if let Call::Watch { .. } = request.call {
            let refusal = if version < WATCH_SINCE {
                Some(WireError::new(
                    ErrorCode::Unsupported,
                    format!("watch needs protocol version {WATCH_SINCE}; this connection speaks {version}"),
                ))
            } else {
                None
            };
            match (refusal, Arc::clone(&watches).try_acquire_owned()) {
                (None, Ok(permit)) => permit,
                (refusal, _) => {
                    let error = refusal.unwrap_or_else(|| {
                        WireError::new(
                            ErrorCode::Overloaded,
                            format!(
                                "{} watches already held on this connection",
                                limits.max_watches
                            ),
                        )
                    });
                    if replies
                        .send(encode(&Reply::error(request.id, error)))
                        .await
                        .is_err()
                    {
                        break Ok(());
                    }
                    continue;
                }
            }
        } else {
            // Backpressure: at the bound, stop reading until a call finishes.
            let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                break Ok(());
            };
            permit
        };
        let server = Arc::clone(server);
        let replies = replies.clone();
        let span = tracing::debug_span!("call", id = request.id, trace_id = request.trace_id);
        calls.spawn(tracing::Instrument::instrument(
            async move {
                let reply = match server.handle(request.call).await {
                    Ok(answer) => Reply::ok(request.id, answer),
                    Err(error) => Reply::error(request.id, error),
                };
                let frame = within_the_frame_bound(request.id, encode(&reply));
                // The writer is gone only when the connection is closing; the reply is lost with it.
                let _ = replies.send(frame).await;
                drop(permit);
            },
            span,
        ));
    };

    match ended {
        Ok(()) => {
            // Peer finished or the server shuts down: let calls in flight answer.
            calls.close();
            let _ = tokio::time::timeout(limits.shutdown_grace, calls.wait()).await;
            drop(replies);
            if !writer.is_finished() {
                let _ = tokio::time::timeout(limits.write_timeout, &mut writer).await;
            }
            writer.abort();
            Ok(())
        }
        Err(reason) => {
            // A peer that broke the protocol gets nothing more.
            writer.abort();
            Err(reason)
        }
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
    tracing::warn!(
        id,
        bytes = frame.len(),
        "reply over the frame bound: answered with replyTooLarge"
    );
    let error = WireError::new(
        ErrorCode::ReplyTooLarge,
        format!(
            "the reply would be {} bytes, over the {MAX_FRAME_LENGTH}-byte frame bound",
            frame.len()
        ),
    );
    encode(&Reply::error(id, error))
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
