//! The GMS CometD dialect (`/genesys/cometd`) over real sockets, with no affinity: a Bayeux
//! client whose every request goes to the next of two gateway replicas (same secret), its
//! cookies carried by hand. Counts every transcript index the client is sent: nothing
//! missing, nothing twice, across replicas, held connects and a chat server's kill -9.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, GatewayProcess, Scratch, FAST};
use common::{gateway, TestGateway};
use parking_lot::Mutex;
use serde_json::{json, Value};

const SERVICE: &str = "svc";
const PATIENCE: Duration = Duration::from_secs(30);

fn service_toml() -> String {
    format!("[[gms.services]]\nname = \"{SERVICE}\"\ntenant = \"Environment\"\n")
}

fn channel() -> String {
    format!("/service/chatV2/{SERVICE}")
}

/// Two in-process gateway replicas over the same embedded chat engines.
async fn two_replicas(extra: &str) -> (TestGateway, TestGateway) {
    let build = || {
        gateway()
            .behaviour(|b| {
                b.agent_join_delay = Duration::from_millis(0);
                b.agent_reply_delay = Duration::from_millis(300);
            })
            .toml(&service_toml())
            .toml(extra)
    };
    let a = build().start().await;
    let b = build().start_with(Some(a.engines.clone())).await;
    (a, b)
}

/// A Bayeux long-polling client that sends each request to the next base URL in turn and
/// keeps its cookies itself (a jar shared by concurrent requests, as a browser's is).
#[derive(Clone)]
struct Bayeux {
    http: reqwest::Client,
    bases: Vec<String>,
    turn: Arc<Mutex<usize>>,
    jar: Arc<Mutex<BTreeMap<String, String>>>,
    client_id: Arc<Mutex<String>>,
    next_id: Arc<Mutex<u64>>,
}

impl Bayeux {
    fn new(bases: &[&str]) -> Bayeux {
        Bayeux {
            http: reqwest::Client::new(),
            bases: bases.iter().map(|b| b.to_string()).collect(),
            turn: Arc::default(),
            jar: Arc::default(),
            client_id: Arc::default(),
            next_id: Arc::default(),
        }
    }

    /// A client of these replicas that has handshaken (on the first of them).
    async fn handshaken(bases: &[&str]) -> Bayeux {
        let bayeux = Bayeux::new(bases);
        bayeux.handshake().await;
        bayeux
    }

    fn id(&self) -> String {
        let mut n = self.next_id.lock();
        *n += 1;
        n.to_string()
    }

    fn client_id(&self) -> String {
        self.client_id.lock().clone()
    }

    /// Posts messages to the next replica; returns its HTTP status and reply array.
    async fn post(&self, meta: &str, messages: Value) -> (u16, Vec<Value>) {
        self.try_post(meta, messages)
            .await
            .expect("the gateway answers")
    }

    /// [`Bayeux::post`], or the transport error (a replica killed under the request).
    async fn try_post(&self, meta: &str, messages: Value) -> Result<(u16, Vec<Value>), String> {
        let base = {
            let mut turn = self.turn.lock();
            *turn += 1;
            self.bases[*turn % self.bases.len()].clone()
        };
        let cookie: String = self
            .jar
            .lock()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut req = self
            .http
            .post(format!("{base}/genesys/cometd/{meta}"))
            .header("content-type", "application/json;charset=UTF-8")
            .body(messages.to_string());
        if !cookie.is_empty() {
            req = req.header("cookie", cookie);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        // A reply cut off midway sets no cookie: read the whole body first.
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        for set in headers.get_all("set-cookie") {
            let text = set.to_str().unwrap();
            assert!(text.contains("HttpOnly") && text.contains("Path=/genesys/cometd"));
            let (pair, attrs) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let mut jar = self.jar.lock();
            if attrs.contains("Max-Age=0") {
                jar.remove(name);
            } else {
                jar.insert(name.to_owned(), value.to_owned());
            }
        }
        let body: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        let replies = body.as_array().cloned().unwrap_or_else(|| vec![body]);
        Ok((status, replies))
    }

    /// Handshake, then subscribe to the chat channel (as the Java SDK does, in a batch).
    async fn handshake(&self) {
        let (status, r) = self
            .post(
                "handshake",
                json!([{"channel": "/meta/handshake", "version": "1.0", "id": self.id(),
                        "supportedConnectionTypes": ["long-polling"]}]),
            )
            .await;
        assert_eq!(status, 200, "{r:?}");
        assert_eq!(r[0]["successful"], true, "{r:?}");
        assert_eq!(r[0]["supportedConnectionTypes"], json!(["long-polling"]));
        assert_eq!(r[0]["advice"]["reconnect"], "retry");
        *self.client_id.lock() = r[0]["clientId"].as_str().unwrap().to_owned();
        let (_, r) = self
            .post(
                "",
                json!([{"channel": "/meta/subscribe", "clientId": self.client_id(),
                        "subscription": channel(), "id": self.id()}]),
            )
            .await;
        assert_eq!(r[0]["successful"], true, "{r:?}");
    }

    /// Publishes on the chat channel; returns the result's `data`.
    async fn publish(&self, data: Value) -> Value {
        let id = self.id();
        let (status, r) = self
            .post(
                "",
                json!([{"channel": channel(), "clientId": self.client_id(), "data": data, "id": id}]),
            )
            .await;
        assert_eq!(status, 200, "{r:?}");
        let ack = r.iter().find(|m| m["id"] == json!(id)).expect("the ack");
        assert_eq!(ack["successful"], true, "{r:?}");
        r.iter()
            .find(|m| m["channel"] == json!(channel()) && m.get("data").is_some())
            .expect("the result on the channel")["data"]
            .clone()
    }

    /// One `/meta/connect`; returns the `data` of the messages it delivered and its reply.
    async fn connect(&self, timeout_ms: Option<u64>) -> (Vec<Value>, Value) {
        let mut message = json!({"channel": "/meta/connect", "clientId": self.client_id(),
                                 "connectionType": "long-polling", "id": self.id()});
        if let Some(t) = timeout_ms {
            message["advice"] = json!({"timeout": t});
        }
        let (status, r) = self.post("connect", json!([message])).await;
        assert_eq!(status, 200, "{r:?}");
        let reply = r
            .iter()
            .find(|m| m["channel"] == "/meta/connect")
            .expect("the connect reply")
            .clone();
        let data = r
            .iter()
            .filter(|m| m["channel"] == json!(channel()))
            .map(|m| m["data"].clone())
            .collect();
        (data, reply)
    }
}

/// Every event index the client was sent, per chat, with how many times.
#[derive(Default)]
struct Seen {
    counts: BTreeMap<u64, usize>,
    texts: Vec<(String, String)>,
    ended: bool,
}

impl Seen {
    fn take(&mut self, data: &Value) {
        assert_eq!(data["statusCode"], 0, "{data:#}");
        for m in data["messages"].as_array().expect("messages in every data") {
            let index = m["index"].as_u64().expect("index");
            *self.counts.entry(index).or_default() += 1;
            assert!(
                m["utcTime"].is_u64() && m["from"]["type"].is_string(),
                "{m}"
            );
            if m["type"] == "Message" {
                self.texts.push((
                    m["from"]["type"].as_str().unwrap().to_owned(),
                    m["text"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
        self.ended |= data["chatEnded"] == true;
    }

    /// Each index once, from 1 with no gap.
    #[track_caller]
    fn assert_whole(&self) {
        let doubled: Vec<_> = self.counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(doubled.is_empty(), "sent more than once: {doubled:?}");
        let last = *self.counts.keys().last().expect("some events");
        let missing: Vec<u64> = (1..=last)
            .filter(|i| !self.counts.contains_key(i))
            .collect();
        assert!(missing.is_empty(), "never sent: {missing:?}");
    }

    fn agent_texts(&self) -> usize {
        self.texts
            .iter()
            .filter(|(from, _)| from == "Agent")
            .count()
    }

    fn customer_texts(&self) -> Vec<&str> {
        self.texts
            .iter()
            .filter(|(from, _)| from == "Client")
            .map(|(_, t)| t.as_str())
            .collect()
    }
}

/// Connects until `done` holds, taking every delivered `data` into `seen`.
/// Starts a chat on the channel and connects until the agent's greeting has arrived: the
/// requestChat result (its `data`).
async fn greeted_chat(b: &Bayeux, seen: &Arc<Mutex<Seen>>, nickname: &str) -> Value {
    let created = b
        .publish(json!({"operation": "requestChat", "nickname": nickname}))
        .await;
    seen.lock().take(&created);
    connect_until(b, seen, "the agent's greeting", |s| s.agent_texts() >= 1).await;
    created
}

async fn connect_until(
    b: &Bayeux,
    seen: &Arc<Mutex<Seen>>,
    what: &str,
    done: impl Fn(&Seen) -> bool,
) {
    let deadline = Instant::now() + PATIENCE;
    while !done(&seen.lock()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        let (data, reply) = b.connect(None).await;
        assert_eq!(reply["successful"], true, "{reply}");
        let mut s = seen.lock();
        for d in &data {
            s.take(d);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_chat_over_two_alternating_replicas_sends_every_event_once() {
    let (a, b) = two_replicas("").await;
    let bayeux = Bayeux::handshaken(&[&a.base, &b.base]).await;
    // A first connect with no chat followed yet holds about a second, not the full timeout.
    let started = Instant::now();
    let (data, reply) = bayeux.connect(None).await;
    assert!(data.is_empty() && reply["successful"] == true, "{reply}");
    println!("an idle connect held {:?}", started.elapsed());

    let seen = Arc::new(Mutex::new(Seen::default()));
    let created = bayeux
        .publish(
            json!({"operation": "requestChat", "firstName": "Ann", "lastName": "Lee",
                        "subject": "cometd", "userData": {"Product": "TOL"}}),
        )
        .await;
    let token = created["secureKey"].as_str().unwrap().to_owned();
    assert!(
        created["chatId"].is_string() && created["alias"].is_string(),
        "{created:#}"
    );
    assert_eq!(created["monitored"], false);
    seen.lock().take(&created);

    for i in 0..4 {
        let text = format!("customer message {i}");
        let sent = bayeux
            .publish(json!({"operation": "sendMessage", "message": text, "secureKey": token}))
            .await;
        assert_eq!(sent["statusCode"], 0, "{sent:#}");
        assert_eq!(
            sent["messages"],
            json!([]),
            "a publish carries no events: the connect does"
        );
        // The greeting and one answer per message so far.
        let answers = i + 2;
        connect_until(&bayeux, &seen, "the agent's answer", |s| {
            s.agent_texts() >= answers && s.customer_texts().len() > i
        })
        .await;
    }
    for op in ["startTyping", "stopTyping"] {
        let r = bayeux
            .publish(json!({"operation": op, "secureKey": token}))
            .await;
        assert_eq!(r["statusCode"], 0, "{op}: {r:#}");
    }
    let r = bayeux
        .publish(json!({"operation": "updateNickname", "nickname": "Annie", "secureKey": token}))
        .await;
    assert_eq!(r["statusCode"], 0, "{r:#}");
    let r = bayeux
        .publish(json!({"operation": "customNotice", "message": "hello", "secureKey": token}))
        .await;
    assert_eq!(r["statusCode"], 0, "{r:#}");
    let r = bayeux
        .publish(
            json!({"operation": "pushUrl", "pushUrl": "https://example.com/a", "secureKey": token}),
        )
        .await;
    assert_eq!(r["statusCode"], 0, "{r:#}");
    let r = bayeux
        .publish(json!({"operation": "updateData", "userData": {"k": "v"}, "secureKey": token}))
        .await;
    assert_eq!(r["statusCode"], 0, "{r:#}");
    let r = bayeux
        .publish(
            json!({"operation": "pushUrl", "pushUrl": "javascript:alert(1)", "secureKey": token}),
        )
        .await;
    assert_eq!(
        r["statusCode"], 2,
        "a refusal in the GMS error shape: {r:#}"
    );
    assert_eq!(r["errors"][0]["code"], 104, "{r:#}");
    connect_until(&bayeux, &seen, "the notices", |s| {
        s.counts.len() >= 4 + 2 * 4 + 5
    })
    .await;

    let ended = bayeux
        .publish(json!({"operation": "disconnect", "secureKey": token}))
        .await;
    assert_eq!(ended["chatEnded"], true, "{ended:#}");
    // The chat left the cookie: the next connect follows nothing (an idle hold).
    let (data, _) = bayeux.connect(None).await;
    for d in &data {
        seen.lock().take(d);
    }
    let seen = seen.lock();
    seen.assert_whole();
    assert_eq!(
        seen.customer_texts(),
        (0..4)
            .map(|i| format!("customer message {i}"))
            .collect::<Vec<_>>()
    );
    println!("events sent once each: {}", seen.counts.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_connect_answers_when_the_agent_speaks_on_another_replica() {
    let (a, b) = two_replicas("[cometd]\nconnect_timeout_ms = 20000\n").await;
    let bayeux = Bayeux::handshaken(&[&a.base, &b.base]).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let created = greeted_chat(&bayeux, &seen, "held").await;
    let token = created["secureKey"].as_str().unwrap().to_owned();

    // A connect is held on one replica while the message is published on the other.
    let held = {
        let b = bayeux.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let got = b.connect(None).await;
            (got, started.elapsed())
        })
    };
    // The held connect is under way before the publish.
    tokio::task::yield_now().await;
    bayeux
        .publish(
            json!({"operation": "sendMessage", "message": "are you there?", "secureKey": token}),
        )
        .await;
    let ((data, reply), took) = held.await.unwrap();
    assert_eq!(reply["successful"], true);
    for d in &data {
        seen.lock().take(d);
    }
    println!("the held connect answered after {took:?} (hold 20 s)");
    assert!(
        took < Duration::from_secs(15),
        "it answered on the event: {took:?}"
    );
    connect_until(&bayeux, &seen, "the agent's answer", |s| {
        s.agent_texts() >= 2
    })
    .await;
    seen.lock().assert_whole();
}

#[tokio::test]
async fn a_forged_or_changed_client_id_gets_402_and_the_handshake_advice() {
    let (a, b) = two_replicas("").await;
    let bayeux = Bayeux::handshaken(&[&a.base, &b.base]).await;
    let real = bayeux.client_id();
    let mut changed = real.clone().into_bytes();
    changed[5] = if changed[5] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(changed).unwrap();
    for client_id in [changed.as_str(), "made-up", ""] {
        for message in [
            json!({"channel": "/meta/connect", "clientId": client_id, "connectionType": "long-polling", "id": "9"}),
            json!({"channel": channel(), "clientId": client_id, "data": {"operation": "requestChat", "nickname": "x"}, "id": "9"}),
            json!({"channel": "/meta/subscribe", "clientId": client_id, "subscription": channel(), "id": "9"}),
        ] {
            let (status, r) = bayeux.post("", json!([message])).await;
            assert_eq!(status, 200);
            assert_eq!(r.len(), 1, "{r:?}");
            assert_eq!(r[0]["successful"], false, "{r:?}");
            assert_eq!(r[0]["error"], "402::Unknown client", "{r:?}");
            assert_eq!(r[0]["advice"]["reconnect"], "handshake", "{r:?}");
            assert_eq!(r[0]["id"], "9");
        }
    }
    assert_eq!(a.backend_requests() + b.backend_requests(), 0);
    assert!(
        a.engines.iter().all(|(_, e)| e.is_empty()),
        "no chat was started"
    );
    // The real one still works, on either replica.
    let (_, reply) = bayeux.connect(Some(0)).await;
    assert_eq!(reply["successful"], true);
}

#[tokio::test]
async fn a_forged_secure_key_is_refused_before_any_backend() {
    let (a, b) = two_replicas("").await;
    let bayeux = Bayeux::handshaken(&[&a.base, &b.base]).await;
    let created = bayeux
        .publish(json!({"operation": "requestChat", "nickname": "victim"}))
        .await;
    let token = created["secureKey"].as_str().unwrap().to_owned();
    let before = a.backend_requests();
    let mut forged = token.clone().into_bytes();
    forged[30] = if forged[30] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    // The Web API / GMS key of the chat is no CometD key either.
    for key in [forged.as_str(), "0123456789ABCDEF", ""] {
        let r = bayeux
            .publish(json!({"operation": "sendMessage", "message": "x", "secureKey": key}))
            .await;
        assert_eq!(r["statusCode"], 2, "{r:#}");
        let code = r["errors"][0]["code"].as_u64().unwrap();
        assert!(code == 200 || code == 102, "{r:#}");
    }
    assert_eq!(
        a.backend_requests(),
        before,
        "nothing reached a chat server"
    );
    // An unknown service is refused at subscribe, an unknown operation in data.
    let (_, r) = bayeux
        .post(
            "",
            json!([{"channel": "/meta/subscribe", "clientId": bayeux.client_id(),
                    "subscription": "/service/chatV2/nope", "id": "1"}]),
        )
        .await;
    assert_eq!(r[0]["successful"], false);
    assert!(
        r[0]["error"].as_str().unwrap().starts_with("403::"),
        "{r:?}"
    );
    let r = bayeux
        .publish(json!({"operation": "dance", "secureKey": token}))
        .await;
    assert_eq!(
        (r["statusCode"].as_u64(), r["errors"][0]["code"].as_u64()),
        (Some(2), Some(105))
    );
}

#[tokio::test]
async fn held_connects_past_the_per_address_bound_are_refused_with_a_retry_advice() {
    let (a, b) = two_replicas(
        "[cometd]\nconnect_timeout_ms = 3000\nidle_connect_ms = 3000\nmax_connects_per_address = 1\n",
    )
    .await;
    let bayeux = Bayeux::new(&[&a.base, &a.base]);
    bayeux.handshake().await;
    // Two connects at once from one address: one is held (3 s), the other refused at once.
    let (first, second) = tokio::join!(bayeux.connect(None), bayeux.connect(None));
    let replies = [first.1, second.1];
    let refused: Vec<&Value> = replies
        .iter()
        .filter(|r| r["successful"] == false)
        .collect();
    assert_eq!(refused.len(), 1, "{replies:?}");
    assert!(
        refused[0]["error"].as_str().unwrap().starts_with("431::"),
        "{replies:?}"
    );
    assert_eq!(refused[0]["advice"]["reconnect"], "retry");
    // The other replica counts its own.
    let (_, reply) = Bayeux {
        bases: vec![b.base.clone()],
        ..bayeux.clone()
    }
    .connect(Some(0))
    .await;
    assert_eq!(reply["successful"], true);
}

/// What the Java SDK (net.balkonsky genesys chat api v2 sdk, over CometD long-polling)
/// sends and reads: a subscribe batched after the handshake, publishes of `operation`,
/// `message`, `secureKey` only, the secureKey taken from the first `data` that has one, and
/// `data.messages[].type/from/index/text/utcTime`, `data.chatEnded`, `data.statusCode` read
/// from every message on the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_sdk_balkonsky_chat_api_v2_runs_a_chat() {
    let (a, b) = two_replicas("").await;
    let bayeux = Bayeux::handshaken(&[&a.base, &b.base]).await;
    let mut secure_key: Option<String> = None;
    let mut all: Vec<Value> = Vec::new();
    fn take(all: &mut Vec<Value>, data: &Value, key: &mut Option<String>) {
        // The SDK iterates data.messages without a null check, and reads these fields.
        for m in data["messages"].as_array().expect("messages") {
            for field in ["type", "index", "utcTime"] {
                assert!(m.get(field).is_some(), "{field} in {m}");
            }
            assert!(m["from"]["nickname"].is_string() && m["from"]["participantId"].is_u64());
            all.push(m.clone());
        }
        assert!(
            data["chatEnded"].is_boolean() && data["statusCode"].is_u64(),
            "{data}"
        );
        if key.is_none() {
            *key = data["secureKey"].as_str().map(str::to_owned);
        }
    }
    let data = bayeux
        .publish(
            json!({"operation": "requestChat", "nickname": "sdk", "subject": "s",
                        "userData": {"a": "b"}}),
        )
        .await;
    take(&mut all, &data, &mut secure_key);
    let key = secure_key
        .clone()
        .expect("the first data carries the secureKey");
    let next = data["nextPosition"].as_u64().unwrap().to_string();
    for (op, message) in [
        ("sendMessage", "hi"),
        ("startTyping", "t"),
        ("stopTyping", "t"),
        ("customNotice", "n"),
    ] {
        let data = bayeux
            .publish(json!({"operation": op, "message": message, "secureKey": key}))
            .await;
        take(&mut all, &data, &mut secure_key);
    }
    let data = bayeux
        .publish(json!({"operation": "requestNotifications", "secureKey": key, "transcriptPosition": next}))
        .await;
    take(&mut all, &data, &mut secure_key);
    let deadline = Instant::now() + PATIENCE;
    while !all.iter().any(|m| {
        m["from"]["type"] == "Agent" && m["type"] == "Message" && m["index"].as_u64() > Some(4)
    }) {
        assert!(Instant::now() < deadline, "no agent answer: {all:#?}");
        let (data, _) = bayeux.connect(None).await;
        for d in &data {
            take(&mut all, d, &mut secure_key);
        }
    }
    let data = bayeux
        .publish(json!({"operation": "disconnect", "secureKey": key}))
        .await;
    take(&mut all, &data, &mut secure_key);
    assert_eq!(data["chatEnded"], true);
    let mut indexes: Vec<u64> = all.iter().map(|m| m["index"].as_u64().unwrap()).collect();
    indexes.sort();
    let unique: std::collections::BTreeSet<u64> = indexes.iter().copied().collect();
    assert_eq!(
        unique.len(),
        indexes.len(),
        "requestNotifications from where the client was: nothing twice"
    );
    assert_eq!(*unique.iter().next().unwrap(), 1);
    let (_, r) = bayeux
        .post(
            "disconnect",
            json!([{"channel": "/meta/disconnect", "clientId": bayeux.client_id(), "id": "x"}]),
        )
        .await;
    assert_eq!(r[0]["successful"], true);
    assert!(
        bayeux.jar.lock().is_empty(),
        "disconnect removes the cookies"
    );
}

/// A chat server holding the chat is killed (-9) mid-chat: the held connects carry on over
/// the chat's new instance (its alias in the data), nothing missing or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_chat_server_mid_chat_loses_and_doubles_nothing() {
    let mut cluster = Cluster::start(&["1", "2"]);
    let extra = service_toml();
    let a = cluster.gateway(&[], &extra).await;
    let b = cluster.gateway(&[], &extra).await;
    let bayeux = Bayeux::handshaken(&[&a.base, &b.base]).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let created = greeted_chat(&bayeux, &seen, "kill").await;
    let victim = created["alias"].as_str().unwrap().to_owned();
    let token = created["secureKey"].as_str().unwrap().to_owned();
    let mut aliases: HashMap<String, usize> = HashMap::new();
    let mut sent = 0;
    let mut killed_at = None;
    for i in 0..6 {
        if i == 3 {
            cluster.server(&victim).kill9();
            killed_at = Some(Instant::now());
        }
        let text = format!("m{i}");
        // A statusCode 1 reply may or may not have arrived: retried with the same text,
        // which the chat server's duplicate window shows once.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let r = bayeux
                .publish(json!({"operation": "sendMessage", "message": text, "secureKey": token}))
                .await;
            if r["statusCode"] == 0 {
                *aliases
                    .entry(r["alias"].as_str().unwrap().to_owned())
                    .or_default() += 1;
                break;
            }
            assert_eq!(r["statusCode"], 1, "{r:#}");
            assert!(Instant::now() < deadline, "never accepted: {r:#}");
        }
        sent += 1;
        let want = sent + 1;
        connect_until(&bayeux, &seen, "the agent's answer", |s| {
            s.agent_texts() >= want
        })
        .await;
        if let Some(t) = killed_at.take() {
            println!("service back after the kill in {:?}", t.elapsed());
        }
    }
    let seen = seen.lock();
    seen.assert_whole();
    assert_eq!(
        seen.customer_texts(),
        (0..6).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    assert!(
        aliases.keys().any(|a| *a != victim),
        "the chat moved off {victim}: {aliases:?}"
    );
}

/// GMS's file operations for a CometD chat: `POST /genesys/2/chat-ntf` with `operation` and
/// the CometD `secureKey` only (as the Java SDK sends them), on either replica.
#[tokio::test]
async fn file_operations_over_chat_ntf_take_the_cometd_secure_key() {
    let (a, b) = two_replicas("").await;
    let bayeux = Bayeux::handshaken(&[&a.base, &b.base]).await;
    let created = bayeux
        .publish(json!({"operation": "requestChat", "nickname": "files"}))
        .await;
    let token = created["secureKey"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let ntf = |base: &str| format!("{base}/genesys/2/chat-ntf");
    let limits: Value = http
        .post(ntf(&a.base))
        .form(&[("operation", "fileGetLimits"), ("secureKey", &token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(limits["statusCode"], 0, "{limits:#}");
    assert_eq!(limits["secureKey"], token.as_str());
    assert!(
        limits["messages"][0]["userData"]["upload-max-files"].is_string(),
        "{limits:#}"
    );
    let part = reqwest::multipart::Part::bytes(b"hello file".to_vec())
        .file_name("note.txt")
        .mime_str("text/plain")
        .unwrap();
    let form = reqwest::multipart::Form::new()
        .text("operation", "fileUpload")
        .text("secureKey", token.clone())
        .part("file", part);
    let uploaded: Value = http
        .post(ntf(&b.base))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(uploaded["statusCode"], 0, "{uploaded:#}");
    assert_eq!(uploaded["secureKey"], token.as_str());
    let file_id = uploaded["userData"]["file-id"].as_str().unwrap().to_owned();
    let download = http
        .post(ntf(&a.base))
        .form(&[
            ("operation", "fileDownload"),
            ("secureKey", &token),
            ("fileId", &file_id),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.bytes().await.unwrap().as_ref(), b"hello file");
    let deleted: Value = http
        .post(ntf(&b.base))
        .form(&[
            ("operation", "fileDelete"),
            ("secureKey", &token),
            ("fileId", &file_id),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deleted["statusCode"], 0, "{deleted:#}");
    // A forged key reaches no backend.
    let before = a.backend_requests();
    let refused = http
        .post(ntf(&a.base))
        .form(&[
            ("operation", "fileGetLimits"),
            ("secureKey", &token[..token.len() - 2]),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["errors"][0]["code"], 200, "{refused:#}");
    assert_eq!(a.backend_requests(), before);
}

/// A gateway killed (-9) while it holds a client's `/meta/connect`: the client's next
/// connect, on the other replica, delivers from the position its cookie kept — the events
/// of the cut connect included — each once. Two gateway processes over a chat server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_cut_by_a_killed_replica_is_delivered_by_the_other() {
    let cluster = Cluster::start(&["1"]);
    let scratch = Scratch::new("cometd-pair");
    let config = scratch.0.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[credentials]\nsecret = \"{}\"\n\
             [[tenants]]\nname = \"Environment\"\n{}{}{FAST}",
            common::SECRET,
            service_toml(),
            cluster.instances(&[]),
        ),
    )
    .unwrap();
    let start = |name: &str| {
        let dir = scratch.0.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        GatewayProcess::start(&config, &dir)
    };
    let (mut a, b) = (start("a"), start("b"));
    let on_b = Bayeux::new(&[&b.base]);
    let on_a = Bayeux {
        bases: vec![a.base.clone()],
        ..on_b.clone()
    };
    // The chat server takes chats once the replica's health checks see it.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let deadline = Instant::now() + PATIENCE;
    on_b.handshake().await;
    let created = loop {
        let r = on_b
            .publish(json!({"operation": "requestChat", "nickname": "cut"}))
            .await;
        if r["statusCode"] == 0 {
            break r;
        }
        assert!(Instant::now() < deadline, "no chat: {r:#}");
    };
    seen.lock().take(&created);
    let token = created["secureKey"].as_str().unwrap().to_owned();
    connect_until(&on_b, &seen, "the agent's greeting", |s| {
        s.agent_texts() >= 1
    })
    .await;

    // A connect held by replica A, which dies under it.
    let held = {
        let on_a = on_a.clone();
        tokio::spawn(async move {
            let message = json!([{"channel": "/meta/connect", "clientId": on_a.client_id(),
                                  "connectionType": "long-polling", "id": "held"}]);
            on_a.try_post("connect", message).await
        })
    };
    // Time for the request to reach A (the outcome below holds either way).
    tokio::time::sleep(Duration::from_millis(500)).await;
    on_b.publish(
        json!({"operation": "sendMessage", "message": "after the cut", "secureKey": token}),
    )
    .await;
    a.kill9();
    let cut = held.await.unwrap();
    if let Ok((_, replies)) = &cut {
        // A answered before it died: the client took those events.
        for m in replies.iter().filter(|m| m["channel"] == json!(channel())) {
            seen.lock().take(&m["data"]);
        }
    }
    println!(
        "the held connect on the killed replica: {}",
        if cut.is_ok() { "answered first" } else { "cut" }
    );
    connect_until(&on_b, &seen, "the agent's answer on B", |s| {
        s.agent_texts() >= 2
    })
    .await;
    let seen = seen.lock();
    seen.assert_whole();
    assert_eq!(seen.customer_texts(), ["after the cut"]);
}

/// Shutdown answers the connects a replica holds at once (the clients reconnect, to another
/// replica), instead of letting them run out the shutdown deadline.
#[tokio::test]
async fn shutdown_answers_held_connects_at_once() {
    let (a, _b) =
        two_replicas("[cometd]\nconnect_timeout_ms = 20000\nidle_connect_ms = 20000\n").await;
    let bayeux = Bayeux::new(&[&a.base]);
    bayeux.handshake().await;
    let mut held = {
        let b = bayeux.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let (_, reply) = b.connect(None).await;
            (reply, started.elapsed())
        })
    };
    // Held: it has not answered while the hold runs.
    let not_yet = tokio::time::timeout(Duration::from_millis(300), &mut held).await;
    assert!(not_yet.is_err(), "the connect was answered before shutdown");
    let cancelled = Instant::now();
    a.gateway.shutdown.cancel();
    let (reply, took) = held.await.unwrap();
    assert_eq!(reply["successful"], true, "{reply}");
    println!(
        "answered {:?} after shutdown began (held {took:?}, hold 20 s)",
        cancelled.elapsed()
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
}
