//! One connection to a chat server: the handshake, then requests written by their callers
//! and replies routed back to them by request id.
//!
//! A caller encodes its request straight into the connection's one write buffer and, when
//! nobody is writing, writes the buffer to the socket itself (without waiting: a write the
//! socket cannot take at once is finished by the connection's future); requests that arrive
//! while a write is under way join the next write, so no task stands between a caller and
//! the socket and requests ready together go out in one write. The connection's future reads
//! replies and hands each to its caller through a oneshot.
//!
//! Owns the table of requests waiting for a reply and the promise that when the connection
//! ends every waiting caller hears about it at once. It must not reconnect (the pool does) or
//! decide what a failure means to the client (the adapter does).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use chat_protocol::auth::{self, Role};
use chat_protocol::{
    codec, decode, encode, encode_frame, DecodeError, ErrorCode, Hello, HelloReply, Proof, Reply,
    Request, RequestId, Welcome, PROTOCOL_V1, PROTOCOL_V2, PROTOCOL_VERSION,
};
use config_types::Secret;
use futures::{SinkExt, StreamExt};
use parking_lot::{Mutex, MutexGuard};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};
use tokio_util::codec::{Framed, FramedRead, LengthDelimitedCodec};

type Frames = Framed<TcpStream, LengthDelimitedCodec>;

/// Why a connection could not be made: what an `Unreachable` error reports until one is up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("handshake with {address}: {source}")]
    Handshake {
        address: String,
        source: std::io::Error,
    },
    #[error("{address} closed the connection in the handshake")]
    ClosedInHandshake { address: String },
    #[error("{address} refused the handshake: {message} (speaks {supported:?})")]
    Refused {
        address: String,
        message: String,
        supported: Vec<u16>,
    },
    #[error("{address} broke the handshake: {source}")]
    BadHandshake {
        address: String,
        source: DecodeError,
    },
    #[error("no handshake with {address} within {limit:?}")]
    Timeout { address: String, limit: Duration },
    /// The shared secret did not match, one way or the other: no request can go there until
    /// the configuration is fixed, so the instance stays down (and says why).
    #[error("{address} failed the shared-secret handshake: {why}")]
    Auth { address: String, why: AuthFailure },
}

/// How the shared-secret handshake failed (`tcp.secret` against the chat server's
/// `--secret-file`).
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error("the chat server needs the shared secret and tcp.secret is not set")]
    SecretRequired,
    #[error("the chat server refused this gateway's proof: tcp.secret is not its secret ({0})")]
    ProofRefused(String),
    #[error("tcp.secret is set but the chat server did not ask for it (it has no --secret-file, or it is not the server expected); not trusted")]
    NotAsked,
    #[error("the chat server's proof is wrong: it does not hold tcp.secret; not trusted")]
    ServerProofWrong,
    #[error("the chat server sent {0} where the handshake expected welcome or refused")]
    Unexpected(&'static str),
}

impl ConnectError {
    /// A handshake that cannot succeed until someone changes a secret.
    pub fn is_auth(&self) -> bool {
        matches!(self, ConnectError::Auth { .. })
    }
}

/// Why a live connection ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkEnded {
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error("closed by the server")]
    ClosedByServer,
    #[error("bad frame from the server: {0}")]
    BadFrame(std::io::Error),
    #[error("server broke the protocol: {0}")]
    BrokenProtocol(DecodeError),
    #[error("{TIMEOUTS_BEFORE_ABANDONING} requests in a row got no answer")]
    Unresponsive,
}

/// The shared half of a live connection, used by callers.
pub struct Link {
    /// The socket's sending side, written by whoever owns the outbox's write.
    socket: OwnedWriteHalf,
    /// Requests encoded and not yet written, and who is writing them.
    outbox: Mutex<Outbox>,
    /// Hands the outbox's write to the connection's future: the socket took only part of it,
    /// or it failed.
    handed_over: Notify,
    /// Callers waiting for a reply, each with the count of replies the link had received when
    /// its request was queued. `None` once the connection has ended, so a caller that
    /// registers late learns at once that its request cannot be sent.
    pending: Mutex<Option<HashMap<RequestId, Waiter>>>,
    /// Replies received on this connection so far.
    replies: AtomicU64,
    next_id: AtomicU64,
    /// Requests timed out in a row, reset by any reply. A server host that vanished without
    /// closing the connection shows only this way (TCP would take many minutes to notice).
    timeouts_in_a_row: AtomicU32,
    /// Wakes the connection's future to close it.
    abandon: Notify,
    /// The protocol version the handshake settled on: `watch` needs 3.
    version: u16,
}

/// A caller waiting for its reply, and the count of replies the link had received when its
/// request was queued.
type Waiter = (oneshot::Sender<Reply>, u64);

/// After this many requests in a row time out, the connection is dropped and made again.
const TIMEOUTS_BEFORE_ABANDONING: u32 = 3;

/// The frames waiting to be written, in order, and the one writer of them at a time.
struct Outbox {
    buf: BytesMut,
    /// The buffer of the last write, emptied, kept for the next one: no allocation per write.
    spare: BytesMut,
    writer: Writer,
    /// Why the socket's sending side failed; the connection's future ends with it.
    failed: Option<std::io::Error>,
}

/// Who writes the outbox now. Only one does, so frames are never interleaved.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    Nobody,
    /// A caller, without waiting: it hands over what the socket does not take at once.
    Caller,
    /// The connection's future, which waits for the socket to take more.
    Connection,
}

/// How one caller's turn at writing the outbox ended.
enum Wrote {
    /// Everything is written; the outbox has no writer.
    All,
    /// The socket took less than the whole: the connection's future writes the rest.
    HandedOver,
}

/// The largest write buffer kept for the next write once emptied.
const KEEP_BUFFER: usize = 64 * 1024;

/// Rounds one caller writes (what others appended meanwhile) before handing the rest over,
/// so a caller never writes for everyone else for long.
const CALLER_ROUNDS: usize = 4;

/// Why a request could not be sent at all (it certainly never arrived).
pub enum NotSent {
    /// The connection is closed.
    Closed,
    /// The request is over the frame bound (`bytes` long): the codec would refuse it and the
    /// connection every chat shares would close. Only this request fails.
    TooLarge { bytes: usize },
}

impl Link {
    /// Sends a request built from its id: encoded into the outbox and, when nobody is
    /// writing, written to the socket by this caller, never waiting for the socket. When
    /// other requests are waiting for replies on this connection (the link is busy), the
    /// caller first yields once to its runtime, so that requests made meanwhile by the
    /// other tasks ready now join the same write. The receiver gets the reply, or an error
    /// when the connection ends first.
    pub async fn send(
        &self,
        request: impl FnOnce(RequestId) -> Request,
    ) -> Result<(RequestId, oneshot::Receiver<Reply>), NotSent> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = request(id);
        // Waiting before it can be written, so its reply always finds it.
        let (tx, rx) = oneshot::channel();
        let replies = self.replies.load(Ordering::Acquire);
        let busy = match self.pending.lock().as_mut() {
            Some(pending) => {
                pending.insert(id, (tx, replies));
                pending.len() > 1
            }
            None => return Err(NotSent::Closed),
        };
        {
            let mut outbox = self.outbox.lock();
            if outbox.failed.is_some() {
                drop(outbox);
                self.forget(id);
                return Err(NotSent::Closed);
            }
            if let Err(bytes) = encode_frame(&request, &mut outbox.buf) {
                drop(outbox);
                self.forget(id);
                return Err(NotSent::TooLarge { bytes });
            }
            if outbox.writer != Writer::Nobody {
                return Ok((id, rx));
            }
            outbox.writer = Writer::Caller;
        }
        let mut turn = WritingTurn(Some(self));
        if busy {
            tokio::task::yield_now().await;
        }
        turn.0 = None;
        if let Wrote::HandedOver = self.write_out(self.outbox.lock(), CALLER_ROUNDS) {
            self.handed_over.notify_one();
        }
        Ok((id, rx))
    }

    /// Writes the outbox as far as the socket takes it without waiting, for at most `rounds`
    /// rounds (each writes what was appended during the last), the lock released while the
    /// socket is written. The caller is the outbox's writer; it stays the writer (as the
    /// connection's future) when this hands over.
    fn write_out<'a>(&'a self, mut outbox: MutexGuard<'a, Outbox>, rounds: usize) -> Wrote {
        for _ in 0..rounds {
            if outbox.buf.is_empty() {
                outbox.writer = Writer::Nobody;
                return Wrote::All;
            }
            let spare = std::mem::take(&mut outbox.spare);
            let mut chunk = std::mem::replace(&mut outbox.buf, spare);
            drop(outbox);
            let written = write_now(&self.socket, &mut chunk);
            outbox = self.outbox.lock();
            match written {
                // A buffer grown by a burst of large requests is not kept for the next write.
                Ok(()) if chunk.is_empty() && chunk.capacity() <= KEEP_BUFFER => {
                    outbox.spare = chunk
                }
                Ok(()) if chunk.is_empty() => {}
                Ok(()) => {
                    // The socket is full: the rest goes first, before what others appended.
                    chunk.extend_from_slice(&outbox.buf);
                    outbox.buf.clear();
                    let appended = std::mem::replace(&mut outbox.buf, chunk);
                    outbox.spare = appended;
                    break;
                }
                Err(e) => {
                    outbox.failed = Some(e);
                    outbox.buf.clear();
                    break;
                }
            }
        }
        if outbox.buf.is_empty() && outbox.failed.is_none() {
            outbox.writer = Writer::Nobody;
            return Wrote::All;
        }
        outbox.writer = Writer::Connection;
        Wrote::HandedOver
    }

    /// Stops waiting for a request (its caller gave up); a late reply is then dropped.
    pub fn forget(&self, id: RequestId) {
        if let Some(pending) = self.pending.lock().as_mut() {
            pending.remove(&id);
        }
    }

    /// A request on this link timed out: forgets it, and closes the link when the server
    /// seems gone: after [`TIMEOUTS_BEFORE_ABANDONING`] timeouts in a row, or at once when
    /// nothing at all came back on the link while the request waited. The path may then be
    /// cut, with the request still queued in this host's kernel; closed (with an RST, see
    /// `handshake`), the connection can no longer deliver it when the path heals, long after
    /// its caller was told it failed and the chat moved on.
    pub fn timed_out(&self, id: RequestId) {
        let sent_after = self
            .pending
            .lock()
            .as_mut()
            .and_then(|pending| pending.remove(&id))
            .map(|(_, replies)| replies);
        let silent = sent_after.is_some_and(|r| r == self.replies.load(Ordering::Acquire));
        let in_a_row = self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row >= TIMEOUTS_BEFORE_ABANDONING || silent {
            self.abandon.notify_one();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.pending.lock().is_none()
    }

    /// The protocol version both ends speak on this connection.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Ends the link: every waiting caller's receiver fails now.
    fn close(&self) {
        self.pending.lock().take();
    }
}

/// A caller's turn at writing the outbox, while it yields: a caller dropped then (its request
/// abandoned) hands the write over to the connection's future, so the outbox never keeps a
/// writer that is gone.
struct WritingTurn<'a>(Option<&'a Link>);

impl Drop for WritingTurn<'_> {
    fn drop(&mut self) {
        if let Some(link) = self.0 {
            link.outbox.lock().writer = Writer::Connection;
            link.handed_over.notify_one();
        }
    }
}

/// Writes as much of `chunk` as the socket takes now, advancing past what it took; stops
/// without an error when the socket would block.
fn write_now(socket: &OwnedWriteHalf, chunk: &mut BytesMut) -> std::io::Result<()> {
    while !chunk.is_empty() {
        match socket.try_write(chunk) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => chunk.advance(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A connected, greeted socket, not yet serving requests.
pub struct Greeted {
    frames: Frames,
    pub welcome: Welcome,
}

/// Connects and completes the handshake within `limit`: with `secret`, the version-2
/// challenge and response (`chat_protocol::auth`), and the server's proof checked in turn.
/// It says version 3 first; a server that refuses it for its version (a release before
/// `watch`) is connected to again with the highest version its refusal lists that this end
/// speaks (with a secret, at least 2), and is then served without `watch`.
pub async fn connect(
    address: &str,
    peer_name: &str,
    secret: Option<&Secret>,
    limit: Duration,
) -> Result<Greeted, ConnectError> {
    let attempts = async {
        match handshake(address, peer_name, secret, PROTOCOL_VERSION).await {
            Err(ConnectError::Refused { supported, .. })
                if fallback(&supported, secret.is_some()).is_some() =>
            {
                let version = fallback(&supported, secret.is_some()).unwrap_or(PROTOCOL_V1);
                tracing::info!(
                    address,
                    version,
                    "the chat server speaks an older protocol: no watch, polled instead"
                );
                handshake(address, peer_name, secret, version).await
            }
            other => other,
        }
    };
    tokio::time::timeout(limit, attempts)
        .await
        .unwrap_or_else(|_| {
            Err(ConnectError::Timeout {
                address: address.to_owned(),
                limit,
            })
        })
}

/// The version to say again after a refusal listing `supported`: the highest older one this
/// end speaks (with a secret, one that proves it: 2).
fn fallback(supported: &[u16], with_secret: bool) -> Option<u16> {
    if supported.contains(&PROTOCOL_VERSION) {
        return None;
    }
    let lowest = if with_secret {
        PROTOCOL_V2
    } else {
        PROTOCOL_V1
    };
    supported
        .iter()
        .copied()
        .filter(|v| (lowest..PROTOCOL_VERSION).contains(v))
        .max()
}

/// One connection and handshake saying `version`.
async fn handshake(
    address: &str,
    peer_name: &str,
    secret: Option<&Secret>,
    version: u16,
) -> Result<Greeted, ConnectError> {
    let owned_address = || address.to_owned();
    let auth_failed = |why| ConnectError::Auth {
        address: address.to_owned(),
        why,
    };
    let attempt = async {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|source| ConnectError::Connect {
                address: owned_address(),
                source,
            })?;
        // Requests are small and each waits for its reply: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        // When this connection is closed (abandoned as unresponsive, or its adapter dropped),
        // requests still queued in the kernel are discarded (an RST, not a FIN after them):
        // their callers were already told they failed, and a cut path that heals must not
        // deliver them late, after the chat moved on (`tests/partitions.rs`, the split).
        let _ = stream.set_zero_linger();
        let mut frames = Framed::new(stream, codec());
        // Version 1 has no nonce; from version 2 a client with a secret sends one.
        let client_nonce = secret
            .filter(|_| version > PROTOCOL_V1)
            .map(|_| auth::nonce());
        let hello = Hello {
            version,
            peer: peer_name.to_owned(),
            nonce: client_nonce.clone(),
        };
        send(&mut frames, encode(&hello), address).await?;
        let challenge = match receive(&mut frames, address).await? {
            HelloReply::Welcome(_) if secret.is_some() => {
                return Err(auth_failed(AuthFailure::NotAsked))
            }
            HelloReply::Welcome(welcome) => return Ok(Greeted { frames, welcome }),
            HelloReply::Refused(refused)
                if secret.is_none() && refused.error.code == ErrorCode::AuthFailed =>
            {
                return Err(auth_failed(AuthFailure::SecretRequired))
            }
            HelloReply::Refused(refused) => return Err(refusal(address, refused)),
            HelloReply::Challenge(challenge) => challenge,
        };
        let Some(secret) = secret else {
            return Err(auth_failed(AuthFailure::SecretRequired));
        };
        let key = secret.expose().as_bytes();
        let client_nonce = client_nonce.unwrap_or_default();
        let proof = Proof {
            proof: auth::proof(key, Role::Client, &challenge.nonce, &client_nonce),
        };
        send(&mut frames, encode(&proof), address).await?;
        match receive(&mut frames, address).await? {
            HelloReply::Welcome(welcome) => {
                let proven = welcome.proof.as_deref().is_some_and(|p| {
                    auth::verify(key, Role::Server, &challenge.nonce, &client_nonce, p)
                });
                if !proven {
                    return Err(auth_failed(AuthFailure::ServerProofWrong));
                }
                Ok(Greeted { frames, welcome })
            }
            HelloReply::Refused(refused) => Err(refusal(address, refused)),
            HelloReply::Challenge(_) => {
                Err(auth_failed(AuthFailure::Unexpected("a second challenge")))
            }
        }
    };
    attempt.await
}

async fn send(frames: &mut Frames, frame: Bytes, address: &str) -> Result<(), ConnectError> {
    frames
        .send(frame)
        .await
        .map_err(|source| ConnectError::Handshake {
            address: address.to_owned(),
            source,
        })
}

/// The server's next handshake frame.
async fn receive(frames: &mut Frames, address: &str) -> Result<HelloReply, ConnectError> {
    let frame = match frames.next().await {
        Some(Ok(frame)) => frame,
        Some(Err(source)) => {
            return Err(ConnectError::Handshake {
                address: address.to_owned(),
                source,
            })
        }
        None => {
            return Err(ConnectError::ClosedInHandshake {
                address: address.to_owned(),
            })
        }
    };
    decode::<HelloReply>(&frame).map_err(|source| ConnectError::BadHandshake {
        address: address.to_owned(),
        source,
    })
}

/// A `refused` in the handshake: the secret's, or the version's.
fn refusal(address: &str, refused: chat_protocol::Refused) -> ConnectError {
    if refused.error.code == ErrorCode::AuthFailed {
        return ConnectError::Auth {
            address: address.to_owned(),
            why: AuthFailure::ProofRefused(refused.error.message),
        };
    }
    ConnectError::Refused {
        address: address.to_owned(),
        message: refused.error.message,
        supported: refused.supported_versions,
    }
}

impl Greeted {
    /// Starts serving: returns the link for callers and a future that runs the connection
    /// (reads replies, finishes writes handed over to it) until it fails, resolving to the
    /// reason. Dropping the future fails every waiting caller.
    pub fn serve(
        self,
    ) -> (
        std::sync::Arc<Link>,
        impl std::future::Future<Output = LinkEnded>,
    ) {
        let version = self.welcome.version;
        let parts = self.frames.into_parts();
        let (read_half, socket) = parts.io.into_split();
        let mut replies = FramedRead::new(read_half, codec());
        // Anything the server sent right after its welcome was read with it.
        replies.read_buffer_mut().extend_from_slice(&parts.read_buf);
        let link = std::sync::Arc::new(Link {
            socket,
            outbox: Mutex::new(Outbox {
                buf: BytesMut::new(),
                spare: BytesMut::new(),
                writer: Writer::Nobody,
                failed: None,
            }),
            handed_over: Notify::new(),
            pending: Mutex::new(Some(HashMap::new())),
            replies: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            timeouts_in_a_row: AtomicU32::new(0),
            abandon: Notify::new(),
            version,
        });
        let running = {
            let link = std::sync::Arc::clone(&link);
            async move {
                let _close = CloseOnDrop(&link);
                tokio::select! {
                    reason = write_loop(&link) => reason,
                    reason = read_loop(replies, &link) => reason,
                    _ = link.abandon.notified() => LinkEnded::Unresponsive,
                }
            }
        };
        (link, running)
    }
}

struct CloseOnDrop<'a>(&'a Link);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Finishes the writes callers hand over: waits until the socket takes more, and writes
/// until the outbox is empty (callers write again from then on) or the socket fails.
async fn write_loop(link: &Link) -> LinkEnded {
    loop {
        link.handed_over.notified().await;
        loop {
            {
                let outbox = link.outbox.lock();
                if outbox.writer != Writer::Connection {
                    break;
                }
                if let Some(e) = &outbox.failed {
                    // The failure stays in the outbox: a request made from now on is refused
                    // as never sent.
                    return LinkEnded::Write(std::io::Error::new(e.kind(), e.to_string()));
                }
            }
            if let Err(e) = link.socket.writable().await {
                return LinkEnded::Write(e);
            }
            let outbox = link.outbox.lock();
            if let Wrote::All = link.write_out(outbox, usize::MAX) {
                break;
            }
        }
    }
}

async fn read_loop(
    mut stream: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    link: &Link,
) -> LinkEnded {
    loop {
        let frame = match stream.next().await {
            None => return LinkEnded::ClosedByServer,
            Some(Err(e)) => return LinkEnded::BadFrame(e),
            Some(Ok(frame)) => frame,
        };
        let reply: Reply = match decode(&frame) {
            Ok(reply) => reply,
            Err(e) => return LinkEnded::BrokenProtocol(e),
        };
        link.timeouts_in_a_row.store(0, Ordering::Relaxed);
        link.replies.fetch_add(1, Ordering::AcqRel);
        let waiter = link
            .pending
            .lock()
            .as_mut()
            .and_then(|pending| pending.remove(&reply.id))
            .map(|(waiter, _)| waiter);
        match waiter {
            // The caller may have given up in between; its reply is dropped.
            Some(waiter) => drop(waiter.send(reply)),
            None => tracing::debug!(id = reply.id, "reply after its request timed out"),
        }
    }
}
