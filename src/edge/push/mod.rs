//! Server-Sent Events: `GET /api/v2/chats/{chatId}/events` and, in the GMS dialect,
//! `GET /genesys/2/chat/{serviceName}/{chatId}/events` (see `docs/push.md`).
//!
//! Owns the stream (a task per open stream that waits on the chat through
//! `operation::watch` and writes SSE frames into the response body: `retry:` first, one
//! event per transcript event with `id:` its index, `: keep-alive` comments, `event: reset`,
//! `event: error`), the stream token at the edge (read from `?streamToken=`; sealing and
//! opening it is `operation`'s, which owns credentials), where a stream starts (the later of
//! `Last-Event-ID` + 1 and `?transcriptPosition=`), its headers, its end at the chat's end
//! and at shutdown (`Gateway::shutdown`), and the caps on open streams ([`Streams`]: global,
//! and per client address as `limits::client_key` counts it). Each event's `data:` has the
//! shape of its dialect's Get Messages reply (`wire`) and never carries `secureKey`.
//!
//! It must not know backends: a stream is a series of watches, each checked, routed and
//! moved like any request, so a chat that fails over is followed by the alias each reply
//! names. Errors are `Error`s rendered by `edge::error`.

mod config;
mod wire;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRef, Path, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use backend_api::Event;
use hyper::body::Frame;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub use self::config::{PushConfig, MAX_HEARTBEAT};
use self::wire::{GmsEvent, Reset, WebApiEvent, RESET_MESSAGE};
use super::error::retryable;
use super::gms::Services;
use super::layers::OperationName;
use super::limits::client_key;
use super::wire::{Dialect, Events};
use super::Failure;
use crate::error::Error;
use crate::operation::{self, ChatReply, Chats, ClientCredentials};
use crate::telemetry::OPEN_STREAMS;

/// The heartbeat comment: no `id:`, so it never moves the browser's last event id.
const HEARTBEAT: &[u8] = b": keep-alive\n\n";
/// Frames a stream may have written that the client has not read yet.
const BUFFERED_FRAMES: usize = 16;
/// The retry backoff inside a stream after a retryable fault.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The open streams of one gateway and their caps (an axum sub-state of the gateway).
#[derive(Clone)]
pub struct Streams(Arc<Inner>);

struct Inner {
    config: PushConfig,
    open: AtomicUsize,
    /// Open streams per client address; only addresses with one are remembered, so the
    /// map is bounded by `push.max_streams`.
    per_address: Mutex<HashMap<IpAddr, u32>>,
    /// Cancelled when the gateway shuts down: every stream ends.
    shutdown: CancellationToken,
}

/// One open stream's place under the caps, given back when the stream ends.
struct Permit {
    of: Arc<Inner>,
    ip: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.of.open.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(OPEN_STREAMS).decrement(1.0);
        if let Some(ip) = self.ip {
            let mut per = self.of.per_address.lock();
            if let Some(n) = per.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&ip);
                }
            }
        }
    }
}

impl Streams {
    pub fn new(config: PushConfig, shutdown: CancellationToken) -> Streams {
        Streams(Arc::new(Inner {
            config,
            open: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
            shutdown,
        }))
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::Acquire)
    }

    /// A place for one more stream from `ip`, or the cap it would pass.
    fn admit(&self, ip: Option<IpAddr>) -> Result<Permit, Error> {
        let config = &self.0.config;
        let mut per = self.0.per_address.lock();
        let ip = ip.filter(|_| config.max_streams_per_ip > 0);
        if let Some(ip) = ip {
            if per.get(&ip).copied().unwrap_or(0) >= config.max_streams_per_ip {
                return Err(Error::TooManyStreamsFromClient);
            }
        }
        if self.0.open.fetch_add(1, Ordering::AcqRel) >= config.max_streams {
            self.0.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::TooManyStreams);
        }
        if let Some(ip) = ip {
            *per.entry(ip).or_insert(0) += 1;
        }
        metrics::gauge!(OPEN_STREAMS).increment(1.0);
        Ok(Permit {
            of: Arc::clone(&self.0),
            ip,
        })
    }
}

/// Both dialects' stream routes (merged into the public application by `edge::routes`). The
/// GMS one is a GET beside the dialect's `POST …/{chatId}/{op}`, so no GMS operation is
/// named `events`.
pub fn routes<S>() -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
    Chats: FromRef<S>,
    Streams: FromRef<S>,
    Services: FromRef<S>,
{
    axum::Router::new()
        .route("/api/v2/chats/{chat_id}/events", axum::routing::get(webapi))
        .route(
            "/genesys/2/chat/{service}/{chat_id}/events",
            axum::routing::get(gms),
        )
}

/// `GET /api/v2/chats/{chatId}/events?streamToken=…[&transcriptPosition=…]`.
async fn webapi(
    State(chats): State<Chats>,
    State(streams): State<Streams>,
    Path(chat_id): Path<String>,
    req: Request,
) -> Response {
    let head = Head::of(&req);
    drop(req);
    let result = open(&chats, &streams, &chat_id, None, head, Dialect::WebApi).await;
    tagged(result.unwrap_or_else(|e| Failure::on_chat(e, &chat_id).into_response()))
}

/// `GET /genesys/2/chat/{serviceName}/{chatId}/events?streamToken=…`: the GMS dialect's
/// stream. The token was minted for a reply that passed the service's API key check, and
/// it names the tenant: the service must be that tenant's. (`EventSource` sends no headers,
/// so no API key is asked for here.)
async fn gms(
    State(chats): State<Chats>,
    State(streams): State<Streams>,
    State(services): State<Services>,
    Path((service, chat_id)): Path<(String, String)>,
    req: Request,
) -> Response {
    let head = Head::of(&req);
    drop(req);
    let result = match services.tenant_of(&service) {
        Ok(tenant) => {
            let tenant = tenant.to_owned();
            open(
                &chats,
                &streams,
                &chat_id,
                Some(&tenant),
                head,
                Dialect::Gms,
            )
            .await
        }
        Err(e) => Err(e),
    };
    let response =
        result.unwrap_or_else(|e| super::GmsFailure::on_chat(e, &chat_id).into_response());
    tagged(response)
}

fn tagged(mut response: Response) -> Response {
    response
        .extensions_mut()
        .insert(OperationName("StreamEvents"));
    response
}

/// What a stream request says (read before anything waits: a request is not `Sync`).
struct Head {
    asked: Result<Asked, Error>,
    client: Option<IpAddr>,
}

impl Head {
    fn of(req: &Request) -> Head {
        Head {
            asked: asked(req),
            client: client_key(req),
        }
    }
}

/// What the URL and headers of a stream request say.
#[derive(Debug, PartialEq, Eq)]
struct Asked {
    token: String,
    /// The later of `Last-Event-ID` + 1 and `transcriptPosition`; 1 when neither is given.
    from: u64,
}

/// A position as the document states it: a decimal integer without a sign or leading zeros
/// that fits `u64`.
fn position(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

fn asked(req: &Request) -> Result<Asked, Error> {
    let mut token = None;
    let mut transcript = None;
    for (key, value) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match &*key {
            "streamToken" => token = Some(value.into_owned()),
            "transcriptPosition" => {
                transcript = Some(position(&value).ok_or(Error::InvalidValue {
                    field: "transcriptPosition",
                    reason: "must be a whole number from 0".into(),
                })?)
            }
            _ => {}
        }
    }
    let last_event = match req.headers().get(HeaderName::from_static("last-event-id")) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(position)
                .ok_or(Error::InvalidValue {
                    field: "Last-Event-ID",
                    reason: "must be the id of an event of this stream".into(),
                })?,
        ),
    };
    let token = token.ok_or(Error::MissingField("streamToken"))?;
    let from = [
        last_event.map(|id| id.saturating_add(1)),
        transcript,
        Some(1),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(1);
    Ok(Asked { token, from })
}

/// Checks the request, the token and the caps, reads the chat once at the asked position,
/// and answers: an error reply, 204 when the chat has ended with nothing after the
/// position, else the stream.
async fn open(
    chats: &Chats,
    streams: &Streams,
    chat_id: &str,
    gms_tenant: Option<&str>,
    head: Head,
    dialect: Dialect,
) -> Result<Response, Error> {
    if !streams.0.config.enabled {
        return Err(Error::NotFound);
    }
    if streams.0.shutdown.is_cancelled() {
        // The client retries on another replica.
        return Err(Error::NotReady("shutting down".into()));
    }
    let asked = head.asked?;
    let creds = operation::open_stream_token(chats, chat_id, &asked.token)
        .filter(|c| gms_tenant.is_none_or(|t| t == c.tenant_name))
        .ok_or(Error::BadStreamToken)?;
    let permit = streams.admit(head.client)?;
    // A first read without waiting: a refusal (unknown or removed chat) is the reply's
    // status, and an ended chat with nothing more answers 204, which stops `EventSource`.
    let first = operation::watch(chats, chat_id, creds.clone(), asked.from, Duration::ZERO).await;
    let first = match first {
        Ok(reply) => {
            let update = &reply.update;
            if update.chat_ended && update.messages.is_empty() && update.next_position >= asked.from
            {
                return Ok(StatusCode::NO_CONTENT.into_response());
            }
            Some(Ok(reply))
        }
        // A fault the stream waits out by itself (a chat server down or busy, a move under
        // way, a deadline passed: statusCode 1): the client sees only a delay.
        Err(e) if retryable(&e) => Some(Err(e)),
        Err(e) => return Err(e),
    };
    let (tx, rx) = mpsc::channel(BUFFERED_FRAMES);
    let stream = Stream {
        chats: chats.clone(),
        chat_id: chat_id.to_owned(),
        creds,
        next: asked.from,
        dialect,
        config: streams.0.config.clone(),
        shutdown: streams.0.shutdown.clone(),
        tx,
    };
    tracing::debug!(chat_id, from = asked.from, "event stream opened");
    tokio::spawn(stream.run(first, permit));
    let mut response = Body::new(EventBody { rx }).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

/// The response body: the frames the stream's task writes, until it ends.
struct EventBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|frame| frame.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// One open stream: where it is in the chat and with which credentials.
struct Stream {
    chats: Chats,
    chat_id: String,
    /// The token's credentials; the alias (and a changed key) of each reply replace them.
    creds: ClientCredentials,
    /// The next transcript index to send.
    next: u64,
    dialect: Dialect,
    config: PushConfig,
    shutdown: CancellationToken,
    tx: mpsc::Sender<Bytes>,
}

/// Why a stream stops.
struct Closed;

impl Stream {
    async fn run(mut self, first: Option<Result<ChatReply, Error>>, permit: Permit) {
        self.pump(first).await;
        drop(permit);
        tracing::debug!(chat_id = %self.chat_id, "event stream closed");
    }

    /// Sends the stream until it ends. Held for as long as the stream is open, so it keeps
    /// its state small (an open stream's memory is mostly this future): the stream by
    /// reference, and the futures it waits on pinned in place rather than moved into the
    /// heartbeat loop.
    async fn pump(&mut self, first: Option<Result<ChatReply, Error>>) {
        let start = Instant::now() + self.config.heartbeat;
        let mut heartbeat = tokio::time::interval_at(start, self.config.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let retry = format!("retry: {}\n\n", self.config.retry.as_millis());
        if self.send(retry.into_bytes()).await.is_err() {
            return;
        }
        let mut pending = first;
        let mut backoff = BACKOFF_MIN;
        loop {
            let result = match pending.take() {
                Some(result) => result,
                None => {
                    let watch = pin!(operation::watch(
                        &self.chats,
                        &self.chat_id,
                        self.creds.clone(),
                        self.next,
                        self.config.watch,
                    ));
                    match self.beside_heartbeats(&mut heartbeat, watch).await {
                        Ok(result) => result,
                        Err(Closed) => return,
                    }
                }
            };
            let outcome = match result {
                Ok(reply) => {
                    backoff = BACKOFF_MIN;
                    self.deliver(reply).await
                }
                Err(e) if retryable(&e) => {
                    tracing::debug!(chat_id = %self.chat_id, error = %e, "event stream waits out a fault");
                    let pause = pin!(tokio::time::sleep(backoff));
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    self.beside_heartbeats(&mut heartbeat, pause).await
                }
                Err(e) => {
                    let body =
                        Failure::on_chat(e, &self.chat_id).json_body(self.dialect == Dialect::Gms);
                    let _ = self
                        .send(format!("event: error\ndata: {body}\n\n").into_bytes())
                        .await;
                    return;
                }
            };
            if outcome.is_err() {
                return;
            }
        }
    }

    /// Sends what a watch answered; `Err` when the stream is over (the chat ended and
    /// everything was sent, or the client left).
    async fn deliver(&mut self, reply: ChatReply) -> Result<(), Closed> {
        let ChatReply {
            alias,
            credentials,
            update,
            ..
        } = reply;
        // Failover: the chat lives where the reply says (and a moved GMS chat has a new key).
        self.creds = credentials;
        self.creds.alias = alias.to_string();
        if update.next_position < self.next {
            let reset = Reset {
                status_code: 0,
                chat_id: &self.chat_id,
                transcript_position: self.next,
                transcript_end: update.next_position,
                next_position: 1,
                message: RESET_MESSAGE,
            };
            let data = serde_json::to_string(&reset).expect("a plain struct encodes");
            // `id: 0`: a reconnect after the reset asks from 1.
            self.send(format!("event: reset\nid: 0\ndata: {data}\n\n").into_bytes())
                .await?;
            self.next = 1;
            return Ok(());
        }
        let fresh: Vec<&Event> = update
            .messages
            .iter()
            .filter(|e| e.index >= self.next)
            .collect();
        for (i, event) in fresh.iter().enumerate() {
            let last = i + 1 == fresh.len();
            let frame = self.event_frame(event, update.chat_ended && last);
            self.send(frame).await?;
            self.next = event.index + 1;
        }
        if update.chat_ended && fresh.is_empty() {
            // Everything up to the end was sent: the stream is over.
            return Err(Closed);
        }
        Ok(())
    }

    fn event_frame(&self, event: &Event, chat_ended: bool) -> Vec<u8> {
        let one = std::slice::from_ref(event);
        let creds = &self.creds;
        let data = match self.dialect {
            Dialect::WebApi => serde_json::to_string(&WebApiEvent {
                status_code: 0,
                alias: &creds.alias,
                user_id: &creds.user_id,
                tenant_name: &creds.tenant_name,
                chat_id: &self.chat_id,
                chat_ended,
                next_position: event.index + 1,
                messages: Events::web_api(one),
            }),
            Dialect::Gms => serde_json::to_string(&GmsEvent {
                status_code: 0,
                alias: &creds.alias,
                user_id: &creds.user_id,
                chat_id: &self.chat_id,
                chat_ended,
                next_position: event.index + 1,
                messages: Events::gms(one),
            }),
        }
        .expect("a plain struct encodes");
        format!("id: {}\ndata: {data}\n\n", event.index).into_bytes()
    }

    async fn send(&self, frame: Vec<u8>) -> Result<(), Closed> {
        self.tx.send(Bytes::from(frame)).await.map_err(|_| Closed)
    }

    /// Runs `work` while sending heartbeats; `Err` when the client left or the gateway is
    /// shutting down.
    async fn beside_heartbeats<F: Future>(
        &self,
        heartbeat: &mut tokio::time::Interval,
        mut work: Pin<&mut F>,
    ) -> Result<F::Output, Closed> {
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Err(Closed),
                () = self.tx.closed() => return Err(Closed),
                output = &mut work => return Ok(output),
                _ = heartbeat.tick() => self.send(HEARTBEAT.to_vec()).await?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, last_event_id: Option<&str>) -> Request {
        let mut builder = Request::builder().uri(uri);
        if let Some(id) = last_event_id {
            builder = builder.header("last-event-id", id);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[test]
    fn the_later_of_last_event_id_and_transcript_position_wins() {
        let from = |uri: &str, id: Option<&str>| asked(&request(uri, id)).map(|a| a.from);
        assert_eq!(from("/e?streamToken=t", None).unwrap(), 1);
        assert_eq!(
            from("/e?streamToken=t&transcriptPosition=5", None).unwrap(),
            5
        );
        assert_eq!(from("/e?streamToken=t", Some("7")).unwrap(), 8);
        assert_eq!(
            from("/e?streamToken=t&transcriptPosition=5", Some("7")).unwrap(),
            8
        );
        assert_eq!(
            from("/e?streamToken=t&transcriptPosition=9", Some("7")).unwrap(),
            9
        );
        assert_eq!(
            from("/e?streamToken=t&transcriptPosition=0", Some("0")).unwrap(),
            1
        );
        assert!(from("/e?streamToken=t&transcriptPosition=-1", None).is_err());
        assert!(from("/e?streamToken=t&transcriptPosition=01", None).is_err());
        assert!(from("/e?streamToken=t", Some("x")).is_err());
        assert!(matches!(
            from("/e", None),
            Err(Error::MissingField("streamToken"))
        ));
    }

    #[test]
    fn the_caps_count_open_streams_and_give_them_back() {
        let streams = Streams::new(
            PushConfig {
                max_streams: 3,
                max_streams_per_ip: 2,
                ..PushConfig::default()
            },
            CancellationToken::new(),
        );
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        let a1 = streams.admit(a).unwrap();
        let _a2 = streams.admit(a).unwrap();
        assert!(matches!(
            streams.admit(a),
            Err(Error::TooManyStreamsFromClient)
        ));
        let _b1 = streams.admit(b).unwrap();
        assert!(matches!(streams.admit(b), Err(Error::TooManyStreams)));
        drop(a1);
        assert_eq!(streams.open(), 2);
        let _b2 = streams.admit(b).unwrap();
        assert_eq!(streams.0.per_address.lock().len(), 2);
    }
}
