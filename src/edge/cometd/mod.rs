//! The GMS CometD dialect: Bayeux 1.0 over long-polling on `/genesys/cometd`, with the chat
//! service channel `/service/chatV2/{serviceName}` (docs/cometd.md).
//!
//! Owns the routes, the Bayeux meta channels (handshake, connect, subscribe, unsubscribe,
//! disconnect), the file operations GMS serves beside it (`ntf`: `/genesys/2/chat-ntf`),
//! the held `/meta/connect` and its bounds ([`Cometd`]: `[cometd]`, the held
//! connects' slots), and the reply array. No affinity: a client's `clientId`, the chats it
//! follows and its positions are sealed values it carries (`follow`), so any replica serves
//! any request; a replica keeps nothing per client. The chat operations are the GMS
//! dialect's (`service`, through `operation`); a connect watches each followed chat with
//! `operation::watch`. It must not keep client state between requests, nor call a backend
//! but through `operation`.

mod config;
mod follow;
mod ntf;
mod service;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequest, Request, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use self::config::{CometdConfig, SameSite};
use self::follow::{ClientId, Followed, Follows};
use self::service::{error_data, ChatData, CHANNEL_PREFIX};
use super::body::ReadLimits;
use super::error::{bayeux_error, Failure};
use super::gms::Services;
use super::layers::OperationName;
use super::limits::client_key;
use super::webapi::body::JsonBody;
use super::wire::json;
use crate::credentials::Tokens;
use crate::error::Error;
use crate::operation::{self, Chats};
use crate::telemetry::{COMETD_HELD_CONNECTS, REFUSALS};

/// Extra time a held connect is given past its hold, for the watches' last reads.
const CONNECT_GRACE: Duration = Duration::from_secs(2);

/// The CometD dialect's state (an axum sub-state of the gateway): `[cometd]`, the token
/// seals, the held connects' slots and the shutdown signal that releases them. Cheap to
/// clone.
#[derive(Clone)]
pub struct Cometd {
    config: Arc<CometdConfig>,
    tokens: Tokens,
    held: Arc<Held>,
    shutdown: CancellationToken,
}

impl Cometd {
    pub fn new(config: CometdConfig, tokens: Tokens, shutdown: CancellationToken) -> Cometd {
        Cometd {
            held: Arc::new(Held {
                global: Arc::new(Semaphore::new(config.max_connects)),
                per_address: Mutex::new(HashMap::new()),
                per_address_max: config.max_connects_per_address,
            }),
            config: Arc::new(config),
            tokens,
            shutdown,
        }
    }
}

/// The connects held open now: all together, and per client address.
struct Held {
    global: Arc<Semaphore>,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    per_address_max: usize,
}

/// One held connect's place; given back on drop.
struct Slot {
    _permit: OwnedSemaphorePermit,
    held: Arc<Held>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!(COMETD_HELD_CONNECTS).decrement(1.0);
        if let Some(ip) = self.ip {
            let mut map = self.held.per_address.lock();
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

impl Held {
    fn take(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Slot, Error> {
        let permit = Arc::clone(&self.global)
            .try_acquire_owned()
            .map_err(|_| Error::TooManyHeldConnects)?;
        if let Some(ip) = ip {
            let mut map = self.per_address.lock();
            let n = map.entry(ip).or_insert(0);
            if *n >= self.per_address_max {
                return Err(Error::TooManyHeldConnectsFromClient);
            }
            *n += 1;
        }
        metrics::gauge!(COMETD_HELD_CONNECTS).increment(1.0);
        Ok(Slot {
            _permit: permit,
            held: Arc::clone(self),
            ip,
        })
    }
}

/// The CometD routes (merged into the public application by `edge::routes`).
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Chats: FromRef<S>,
    Services: FromRef<S>,
    Cometd: FromRef<S>,
    ReadLimits: FromRef<S>,
{
    Router::new()
        .route("/genesys/cometd", post(bayeux))
        // The JS client appends the meta type (`appendMessageTypeToURL`): the same endpoint.
        .route("/genesys/cometd/handshake", post(bayeux))
        .route("/genesys/cometd/connect", post(bayeux))
        .route("/genesys/cometd/subscribe", post(bayeux))
        .route("/genesys/cometd/unsubscribe", post(bayeux))
        .route("/genesys/cometd/disconnect", post(bayeux))
        .route("/genesys/2/chat-ntf", post(ntf::chat_ntf))
        // GmsBody applies gms.max_upload_bytes itself.
        .layer(axum::extract::DefaultBodyLimit::disable())
}

/// `POST /genesys/cometd` (and `/genesys/cometd/{metaType}`): a JSON array (or one object)
/// of Bayeux messages; the reply is an array of replies, then the events a held connect
/// delivers and its reply.
async fn bayeux(
    State(chats): State<Chats>,
    State(services): State<Services>,
    State(cometd): State<Cometd>,
    State(limits): State<ReadLimits>,
    req: Request,
) -> Result<Response, Failure> {
    let ip = client_key(&req);
    let headers = req.headers().clone();
    let JsonBody(bytes) = JsonBody::from_request(req, &limits).await?;
    let messages = batch(&bytes, cometd.config.max_batch)?;
    let mut exchange = Exchange {
        chats: &chats,
        services: &services,
        cometd: &cometd,
        headers: &headers,
        client: None,
        follows: Follows::default(),
        replies: Vec::new(),
        cookies: Vec::new(),
        chats_changed: false,
    };
    let mut connect = None;
    for message in &messages {
        if message.get("channel").and_then(Value::as_str) == Some("/meta/connect") {
            // Answered last, after every other message of the batch (Bayeux).
            connect = Some(message);
            continue;
        }
        exchange.handle(message).await;
    }
    if let Some(message) = connect {
        exchange.connect(message, ip).await;
    }
    Ok(exchange.into_response())
}

/// The messages of a request body: an array of objects, or one object.
fn batch(bytes: &[u8], max: usize) -> Result<Vec<Value>, Error> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| Error::MalformedJson(e.to_string()))?;
    let messages = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err(Error::NotAnObject),
    };
    if messages.len() > max {
        return Err(Error::InvalidValue {
            field: "messages",
            reason: format!("at most {max} Bayeux messages in one request (cometd.max_batch)"),
        });
    }
    if messages.iter().any(|m| !m.is_object()) {
        return Err(Error::NotAnObject);
    }
    Ok(messages)
}

/// One request's work: the client it is for, what it follows, the replies so far.
struct Exchange<'r> {
    chats: &'r Chats,
    services: &'r Services,
    cometd: &'r Cometd,
    headers: &'r HeaderMap,
    /// The client of the request's messages (one per request) and its `clientId`.
    client: Option<(ClientId, String)>,
    follows: Follows,
    replies: Vec<Value>,
    cookies: Vec<axum::http::HeaderValue>,
    /// A publish changed the chats followed: their cookie is written.
    chats_changed: bool,
}

/// A reply to `message` on its channel: its `id` and the given fields.
fn reply_to(message: &Value, channel: &str, fields: Value) -> Value {
    let mut reply = json!({ "channel": channel });
    if let Some(id) = message.get("id") {
        reply["id"] = id.clone();
    }
    if let (Value::Object(r), Value::Object(f)) = (&mut reply, fields) {
        r.extend(f);
    }
    reply
}

impl Exchange<'_> {
    fn config(&self) -> &CometdConfig {
        &self.cometd.config
    }

    fn advice(&self) -> Value {
        json!({
            "reconnect": "retry",
            "interval": 0,
            "timeout": self.config().connect_timeout.as_millis() as u64,
        })
    }

    /// The client a message names, when its `clientId` opens; its cookies are read once.
    fn client_of(&mut self, message: &Value) -> Option<ClientId> {
        let given = message.get("clientId").and_then(Value::as_str)?;
        if let Some((client, id)) = &self.client {
            return (id == given).then_some(*client);
        }
        let client = ClientId::open(&self.cometd.tokens, given)?;
        self.follows = Follows::read(&self.cometd.tokens, &client, self.headers);
        self.client = Some((client, given.to_owned()));
        Some(client)
    }

    async fn handle(&mut self, message: &Value) {
        let Some(channel) = message.get("channel").and_then(Value::as_str) else {
            let error =
                json!({"successful": false, "error": "400::a Bayeux message needs a channel"});
            self.replies.push(reply_to(message, "", error));
            return;
        };
        if channel == "/meta/handshake" {
            let (_, client_id) = ClientId::new(&self.cometd.tokens);
            let fields = json!({
                "version": "1.0",
                "supportedConnectionTypes": ["long-polling"],
                "clientId": client_id,
                "successful": true,
                "advice": self.advice(),
            });
            self.replies.push(reply_to(message, channel, fields));
            return;
        }
        if self.client_of(message).is_none() {
            self.replies.push(unknown_client(message, channel));
            return;
        }
        let client_id = self.client.as_ref().map(|(_, id)| id.clone());
        match channel {
            "/meta/subscribe" | "/meta/unsubscribe" => {
                let subscription = message.get("subscription").cloned().unwrap_or(Value::Null);
                let refused = match (&subscription, channel) {
                    (_, "/meta/unsubscribe") => None,
                    (Value::String(s), _) => self.refuse_channel(s),
                    _ => Some("400::subscription must be one channel name".to_owned()),
                };
                let mut fields = json!({
                    "clientId": client_id,
                    "subscription": subscription,
                    "successful": refused.is_none(),
                });
                if let Some(error) = refused {
                    fields["error"] = error.into();
                }
                self.replies.push(reply_to(message, channel, fields));
            }
            "/meta/disconnect" => {
                if let Some((client, _)) = &self.client {
                    self.cookies
                        .extend(Follows::clear(client, &self.cometd.config));
                }
                self.follows = Follows::default();
                let fields = json!({"clientId": client_id, "successful": true});
                self.replies.push(reply_to(message, channel, fields));
            }
            _ if channel.starts_with(CHANNEL_PREFIX) => self.publish(message, channel).await,
            _ => {
                let fields = json!({
                    "successful": false,
                    "error": "403::only the chat service channel /service/chatV2/{serviceName} is served",
                });
                self.replies.push(reply_to(message, channel, fields));
            }
        }
    }

    /// Why a subscription is refused: an unknown service, or a missing API key.
    fn refuse_channel(&self, channel: &str) -> Option<String> {
        let Some(name) = channel.strip_prefix(CHANNEL_PREFIX) else {
            return Some(format!(
                "403::only {CHANNEL_PREFIX}{{serviceName}} channels are served"
            ));
        };
        match self.services.service(name, self.headers) {
            Ok(_) => None,
            Err(e) => Some(format!("403::{}", e.client_message())),
        }
    }

    /// A publish on the chat channel: its acknowledgement, then its result on the channel.
    async fn publish(&mut self, message: &Value, channel: &str) {
        let service = &channel[CHANNEL_PREFIX.len()..];
        let before = self.follows.chats.clone();
        let max_follow = self.config().max_follow;
        let data = service::publish(
            self.chats,
            self.services,
            self.headers,
            service,
            message.get("data"),
            &mut self.follows,
            max_follow,
        )
        .await;
        if self.follows.chats != before {
            self.chats_changed = true;
        }
        self.replies
            .push(reply_to(message, channel, json!({"successful": true})));
        self.replies.push(json!({"channel": channel, "data": data}));
    }

    /// `/meta/connect`: holds until a followed chat has new events (or ends), or the
    /// advised timeout passes; answers the events, each chat's as one message on its
    /// channel, then the connect's reply.
    async fn connect(&mut self, message: &Value, ip: Option<IpAddr>) {
        let channel = "/meta/connect";
        if self.client_of(message).is_none() {
            self.replies.push(unknown_client(message, channel));
            return;
        }
        let client_id = self.client.as_ref().map(|(_, id)| id.clone());
        // The client's own advice (0 on its first connect) shortens the hold.
        let asked = message
            .pointer("/advice/timeout")
            .and_then(Value::as_u64)
            .map(Duration::from_millis);
        let hold = asked.map_or(self.config().connect_timeout, |t| {
            t.min(self.config().connect_timeout)
        });
        let slot = match self.cometd.held.take(ip) {
            Ok(slot) => slot,
            Err(e) => {
                let reason = match e {
                    Error::TooManyHeldConnects => "cometd_connects",
                    _ => "cometd_connects_ip",
                };
                metrics::counter!(REFUSALS, "reason" => reason).increment(1);
                let fields = json!({
                    "clientId": client_id,
                    "successful": false,
                    "error": bayeux_error(&e),
                    "advice": {"reconnect": "retry", "interval": 2000},
                });
                self.replies.push(reply_to(message, channel, fields));
                return;
            }
        };
        self.deliver(hold).await;
        drop(slot);
        let fields = json!({
            "clientId": client_id,
            "successful": true,
            "advice": self.advice(),
        });
        self.replies.push(reply_to(message, channel, fields));
    }

    /// Watches every followed chat from its position, concurrently; answers as soon as one
    /// has something, with whatever the others have by then. Positions move only for what
    /// is answered.
    async fn deliver(&mut self, hold: Duration) {
        let started = tokio::time::Instant::now();
        let shutdown = self.cometd.shutdown.clone();
        let watched: Vec<(Followed, u64, Option<String>)> = self
            .follows
            .chats
            .iter()
            .filter_map(|chat| {
                let (from, ended, alias) = self.follows.position(chat);
                (!ended).then(|| (chat.clone(), from, alias.map(str::to_owned)))
            })
            .collect();
        if watched.is_empty() {
            let idle = hold.min(self.config().idle_connect);
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
                _ = shutdown.cancelled() => {}
            }
            self.write_positions();
            return;
        }
        // One task per chat, all aborted when the connect answers (a watch only reads).
        let mut watches = JoinSet::new();
        let request_id = backend_api::request_id::current();
        for (chat, from, alias) in watched {
            let chats = self.chats.clone();
            let watch = async move {
                let result = match operation::open_chat_token(&chats, &chat.token) {
                    Ok((chat_id, mut credentials)) => {
                        if let Some(alias) = alias {
                            credentials.alias = alias;
                        }
                        operation::watch(&chats, &chat_id, credentials, from, hold).await
                    }
                    Err(e) => Err(e),
                };
                (chat, from, result)
            };
            match &request_id {
                Some(id) => watches.spawn(backend_api::request_id::scope(Arc::clone(id), watch)),
                None => watches.spawn(watch),
            };
        }
        let deadline = tokio::time::sleep(hold + CONNECT_GRACE);
        tokio::pin!(deadline);
        let mut delivered = false;
        loop {
            tokio::select! {
                next = watches.join_next() => match next {
                    None => break,
                    Some(Err(_)) => {}
                    Some(Ok((chat, from, result))) => {
                        delivered |= self.answer(&chat, from, result);
                        if delivered {
                            // Whatever the other chats have at this moment goes too.
                            while let Some(Ok((chat, from, result))) = watches.try_join_next() {
                                self.answer(&chat, from, result);
                            }
                            break;
                        }
                    }
                },
                _ = &mut deadline => break,
                _ = shutdown.cancelled() => break,
            }
        }
        drop(watches);
        // Failures that answer at once (a chat server down, nowhere to move) must not turn
        // the long poll into a busy loop.
        let floor = self.config().idle_connect.min(hold);
        if !delivered && started.elapsed() < floor {
            tokio::select! {
                _ = tokio::time::sleep_until(started + floor) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        self.write_positions();
    }

    /// One watch's outcome: events (or the end, or a final error) become a message on the
    /// chat's channel and move its position; a retryable failure delivers nothing (the next
    /// connect watches from the same place). Says whether something was delivered.
    fn answer(
        &mut self,
        chat: &Followed,
        from: u64,
        result: Result<operation::ChatReply, Error>,
    ) -> bool {
        let channel = self.channel_of(chat);
        match result {
            Ok(reply) => {
                let update = &reply.update;
                let alias = reply.alias.to_string();
                if update.messages.is_empty() && !update.chat_ended {
                    if update.next_position < from {
                        // The position is past this chat's end: watch from its end.
                        self.follows
                            .advance(chat, update.next_position, false, &alias);
                    }
                    return false;
                }
                let credentials = operation::ClientCredentials {
                    alias: alias.clone(),
                    ..reply.credentials.clone()
                };
                let token = operation::seal_chat_token(self.chats, &chat.chat_id, &credentials)
                    .unwrap_or_else(|_| chat.token.clone());
                let data = ChatData::new(
                    &chat.chat_id,
                    &credentials,
                    &token,
                    &update.messages,
                    update.next_position,
                    update.chat_ended,
                );
                self.replies
                    .push(json!({"channel": channel, "data": data.to_value()}));
                self.follows
                    .advance(chat, update.next_position, update.chat_ended, &alias);
                true
            }
            Err(e) => {
                let body = error_data(e, Some(&chat.chat_id));
                if body.get("statusCode").and_then(Value::as_u64) == Some(1) {
                    return false;
                }
                // A final refusal (the chat is gone, its credentials are refused): said once,
                // and the chat is not watched again.
                self.replies.push(json!({"channel": channel, "data": body}));
                self.follows.advance(chat, from, true, "");
                true
            }
        }
    }

    /// The channel a followed chat's messages go on: its service's.
    fn channel_of(&self, chat: &Followed) -> String {
        format!("{CHANNEL_PREFIX}{}", chat.service)
    }

    fn write_positions(&mut self) {
        if let Some((client, _)) = &self.client {
            let cookie =
                self.follows
                    .positions_cookie(&self.cometd.tokens, client, &self.cometd.config);
            self.cookies.push(cookie);
        }
    }

    fn into_response(mut self) -> Response {
        self.cookies
            .extend(self.follows.stale_cookies(&self.cometd.config));
        if self.chats_changed {
            if let Some((client, _)) = &self.client {
                let cookie =
                    self.follows
                        .chats_cookie(&self.cometd.tokens, client, &self.cometd.config);
                self.cookies.insert(0, cookie);
            }
        }
        let mut response = json(StatusCode::OK, &self.replies);
        for cookie in self.cookies {
            response.headers_mut().append(SET_COOKIE, cookie);
        }
        response.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            "no-store".parse().expect("static"),
        );
        response.extensions_mut().insert(OperationName("Bayeux"));
        response
    }
}

/// The Bayeux answer to a `clientId` this gateway's secret did not seal: the client
/// handshakes again (the standard recovery).
fn unknown_client(message: &Value, channel: &str) -> Value {
    let fields = json!({
        "successful": false,
        "error": "402::Unknown client",
        "advice": {"reconnect": "handshake", "interval": 0},
    });
    reply_to(message, channel, fields)
}
