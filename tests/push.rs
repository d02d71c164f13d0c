//! The event streams (`GET …/events`, Server-Sent Events) over real sockets: what a stream
//! carries and in which shape, where it resumes, how it ends, the token, the caps, the
//! hygiene proxies need, shutdown; and, with chat-server processes sharing Redis, a stream
//! across a gateway replica change and a kill -9 of the chat server holding the chat.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, GatewayProcess, Scratch, FAST};
use common::gms::GmsClient;
use common::sse::{self, Frame, Sse};
use common::{eventually, gateway, Chat, Client, Reply, SECRET};
use serde_json::{json, Value};
use webapi_gateway::credentials::{Credentials, Purpose};
use webapi_gateway::operation::{stream_payload, ClientCredentials};

const WAIT: Duration = Duration::from_secs(10);
const PATIENCE: Duration = Duration::from_secs(60);

const GMS_SERVICES: &str = r#"
[[gms.services]]
name = "customer-support"
tenant = "Environment"
[[gms.services]]
name = "other-support"
tenant = "Other"
"#;

/// A chat started in the Web API dialect, with its stream token.
struct Started {
    chat: Chat,
    token: String,
}

async fn start_chat(c: &Client, nickname: &str) -> Started {
    let r = c
        .post(
            "/api/v2/chats",
            json!({"tenantName": "Environment", "nickname": nickname}),
        )
        .await;
    assert_eq!((r.http, r.status_code()), (200, 0), "{:#}", r.body);
    Started {
        chat: Chat::created(&r),
        token: token_of(&r),
    }
}

fn token_of(r: &Reply) -> String {
    r.body["streamToken"]
        .as_str()
        .unwrap_or_else(|| panic!("a streamToken in {:#}", r.body))
        .to_owned()
}

fn url(base: &str, chat_id: &str, token: &str, position: Option<u64>) -> String {
    let mut url = format!("{base}/api/v2/chats/{chat_id}/events?streamToken={token}");
    if let Some(p) = position {
        url.push_str(&format!("&transcriptPosition={p}"));
    }
    url
}

async fn open_stream(c: &Client, s: &Started, position: Option<u64>, last: Option<u64>) -> Sse {
    sse::open(
        &c.http,
        &url(&c.base, &s.chat.chat_id, &s.token, position),
        last,
    )
    .await
}

/// Sends a message, retrying statusCode 1 with a new text each time (so an attempt that
/// did arrive shows as an extra text, never as a doubled one); returns the acknowledged
/// text and keeps the newest alias.
async fn send_acked(c: &Client, chat: &mut Chat, label: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    for attempt in 1.. {
        let text = format!("{label}-a{attempt}");
        let r = c.op(chat, "SendMessage", json!({ "text": text })).await;
        match r.status_code() {
            0 => {
                chat.alias = r.alias();
                return text;
            }
            1 => assert!(
                Instant::now() < deadline,
                "no message acknowledged: {:#}",
                r.body
            ),
            _ => panic!("{:#}", r.body),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!()
}

/// Reads a stream to its end (or `within`), returning its messages by id; panics on a
/// doubled id.
async fn read_to_end(stream: &mut Sse, within: Duration) -> BTreeMap<u64, Value> {
    let deadline = Instant::now() + within;
    let mut seen = BTreeMap::new();
    while let Some(frame) = stream
        .next(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        collect(&mut seen, &frame);
    }
    seen
}

fn collect(seen: &mut BTreeMap<u64, Value>, frame: &Frame) {
    if let (None, Some(id)) = (frame.name(), frame.id()) {
        let data = frame.json();
        assert_eq!(data["messages"][0]["index"].as_u64(), Some(id), "{data}");
        assert!(seen.insert(id, data).is_none(), "event {id} sent twice");
    }
}

/// Ids run from 1 to the last without a gap.
#[track_caller]
fn assert_whole(seen: &BTreeMap<u64, Value>) {
    let ids: Vec<u64> = seen.keys().copied().collect();
    let expected: Vec<u64> = (1..=ids.len() as u64).collect();
    assert_eq!(ids, expected, "a gap in the stream");
}

fn texts_from_client(seen: &BTreeMap<u64, Value>) -> Vec<String> {
    seen.values()
        .map(|d| &d["messages"][0])
        .filter(|m| m["type"] == "Message" && m["from"]["type"] == "Client")
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

/// The secure key (and the backend key inside it) appears nowhere in what was read.
#[track_caller]
fn assert_no_secure_key(raw: &str, secure_key: &str) {
    let backend_key = &secure_key[..secure_key.len() - 32];
    assert!(!raw.contains(secure_key), "the secureKey was streamed");
    assert!(!raw.contains(backend_key), "the backend key was streamed");
    assert!(!raw.contains("secureKey"), "a secureKey field was streamed");
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test]
async fn events_arrive_in_order_with_ids_and_the_shape_of_get_messages() {
    let gw = gateway().start().await;
    let c = gw.client();
    let mut s = start_chat(&c, "Ann").await;
    let mut stream = open_stream(&c, &s, None, None).await;
    assert_eq!(stream.status, 200);
    assert_eq!(
        stream.next(WAIT).await,
        Some(Frame::Retry(1000)),
        "retry: first"
    );
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(send_acked(&c, &mut s.chat, &format!("m{i}")).await);
    }
    let mut seen = BTreeMap::new();
    while texts_from_client(&seen) != sent {
        let frame = stream.next_event(WAIT).await.expect("the stream goes on");
        collect(&mut seen, &frame);
    }
    assert_whole(&seen);
    // Each event is what Get Messages shows at its index, in a Get Messages reply's shape
    // less secureKey and streamToken.
    let r = c.messages(&s.chat, Some(1)).await;
    let mut reply_keys = keys(&r.body);
    reply_keys.retain(|k| k != "secureKey" && k != "streamToken");
    for (id, data) in &seen {
        assert_eq!(keys(data), reply_keys, "event {id}");
        assert_eq!(data["messages"], json!([r.messages()[*id as usize - 1]]));
        assert_eq!(data["nextPosition"].as_u64(), Some(id + 1));
        assert_eq!(data["statusCode"], 0);
        assert_eq!(data["chatEnded"], false);
        assert_eq!(data["chatId"], s.chat.chat_id.as_str());
        assert_eq!(data["alias"], s.chat.alias.as_str());
    }
    assert_no_secure_key(&stream.raw, &s.chat.secure_key);
}

#[tokio::test]
async fn the_gms_dialect_streams_its_refresh_shape_and_names_the_tokens_tenant() {
    let gw = gateway().toml(GMS_SERVICES).start().await;
    let g = GmsClient::new(&gw.base, "customer-support");
    let r = g.post("", &[("nickname", "Ann")]).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let token = token_of(&r);
    let chat_id = r.body["chatId"].as_str().unwrap().to_owned();
    let secure_key = r.body["secureKey"].as_str().unwrap().to_owned();
    let creds = [
        ("userId", r.body["userId"].as_str().unwrap()),
        ("secureKey", secure_key.as_str()),
        ("alias", r.body["alias"].as_str().unwrap()),
    ];
    let send = g
        .post(
            &format!("/{chat_id}/send"),
            &[creds[0], creds[1], creds[2], ("message", "hello")],
        )
        .await;
    assert_eq!(send.status_code(), 0, "{:#}", send.body);
    assert!(
        send.body["streamToken"].is_string(),
        "every chat reply has one"
    );

    let http = reqwest::Client::new();
    let stream_url = |service: &str, token: &str| {
        format!(
            "{}/genesys/2/chat/{service}/{chat_id}/events?streamToken={token}",
            gw.base
        )
    };
    let mut stream = sse::open(&http, &stream_url("customer-support", &token), None).await;
    assert_eq!(stream.status, 200);
    let mut seen = BTreeMap::new();
    while !texts_from_client(&seen).contains(&"hello".to_owned()) {
        collect(&mut seen, &stream.next_event(WAIT).await.expect("events"));
    }
    assert_whole(&seen);
    let refresh = g
        .post(
            &format!("/{chat_id}/refresh"),
            &[creds[0], creds[1], creds[2], ("transcriptPosition", "1")],
        )
        .await;
    let mut reply_keys = keys(&refresh.body);
    // `userData` is the chat's, not an event's: a stream leaves it to refresh (it is
    // optional in GMS replies).
    reply_keys.retain(|k| k != "secureKey" && k != "streamToken" && k != "userData");
    for (id, data) in &seen {
        assert_eq!(keys(data), reply_keys, "event {id}");
        assert_eq!(
            data["messages"],
            json!([refresh.messages()[*id as usize - 1]])
        );
    }
    assert_no_secure_key(&stream.raw, &secure_key);

    // The service must be the token's tenant's.
    let other = sse::open(&http, &stream_url("other-support", &token), None).await;
    assert_eq!(other.status, 401);
    let body = other.json().await;
    assert_eq!(body["errors"][0]["code"], 240);
    assert_eq!(body["chatEnded"], false, "the GMS error shape: {body}");
}

#[tokio::test]
async fn resuming_by_last_event_id_or_transcript_position_the_later_wins_with_no_gap_or_duplicate()
{
    let gw = gateway().start().await;
    let c = gw.client();
    let mut s = start_chat(&c, "Ann").await;
    for i in 0..4 {
        send_acked(&c, &mut s.chat, &format!("m{i}")).await;
    }
    let end = c.messages(&s.chat, Some(1)).await.body["nextPosition"]
        .as_u64()
        .unwrap();
    assert!(end > 8, "a transcript of {} events", end - 1);

    // A first connection reads three events and drops.
    let mut seen = BTreeMap::new();
    let mut first = open_stream(&c, &s, None, None).await;
    while seen.len() < 3 {
        collect(&mut seen, &first.next_event(WAIT).await.unwrap());
    }
    drop(first);
    // Last-Event-ID 3 beats an earlier transcriptPosition.
    let mut again = open_stream(&c, &s, Some(2), Some(3)).await;
    while seen.len() < (end - 1) as usize {
        collect(&mut seen, &again.next_event(WAIT).await.unwrap());
    }
    assert_whole(&seen);
    // A later transcriptPosition beats Last-Event-ID.
    let mut later = open_stream(&c, &s, Some(6), Some(3)).await;
    assert_eq!(later.next_event(WAIT).await.unwrap().id(), Some(6));
    let mut by_position = open_stream(&c, &s, Some(5), None).await;
    assert_eq!(by_position.next_event(WAIT).await.unwrap().id(), Some(5));
    let mut by_id = open_stream(&c, &s, None, Some(6)).await;
    assert_eq!(by_id.next_event(WAIT).await.unwrap().id(), Some(7));
}

#[tokio::test]
async fn a_position_past_the_chats_end_gets_a_reset_then_the_transcript_from_1() {
    let gw = gateway().start().await;
    let c = gw.client();
    let s = start_chat(&c, "Ann").await;
    let mut stream = open_stream(&c, &s, Some(1000), None).await;
    assert_eq!(stream.status, 200);
    let reset = stream.next_event(WAIT).await.unwrap();
    assert_eq!(reset.name(), Some("reset"));
    assert_eq!(
        reset.id(),
        Some(0),
        "a reconnect after the reset asks from 1"
    );
    let data = reset.json();
    assert_eq!(data["nextPosition"], 1);
    assert_eq!(data["transcriptPosition"], 1000);
    assert!(data["message"].as_str().unwrap().contains("from 1"));
    assert_eq!(stream.next_event(WAIT).await.unwrap().id(), Some(1));
    // The same through Last-Event-ID.
    let mut stream = open_stream(&c, &s, None, Some(999)).await;
    assert_eq!(stream.next_event(WAIT).await.unwrap().name(), Some("reset"));
}

#[tokio::test]
async fn the_end_of_the_chat_closes_the_stream_and_a_reconnect_gets_204() {
    let gw = gateway().start().await;
    let c = gw.client();
    let mut s = start_chat(&c, "Ann").await;
    send_acked(&c, &mut s.chat, "bye").await;
    let mut stream = open_stream(&c, &s, None, None).await;
    assert_eq!(stream.next(WAIT).await, Some(Frame::Retry(1000)));
    let r = c.op(&s.chat, "Complete", json!({})).await;
    assert_eq!(r.status_code(), 0);
    let seen = read_to_end(&mut stream, WAIT).await;
    assert!(stream.ended(), "the server ended the stream");
    assert_whole(&seen);
    let (last_id, last) = seen.last_key_value().unwrap();
    assert_eq!(last["chatEnded"], true, "{last}");
    assert_eq!(last["messages"][0]["type"], "ParticipantLeft");
    assert!(seen.values().rev().skip(1).all(|d| d["chatEnded"] == false));

    let reconnect = open_stream(&c, &s, None, Some(*last_id)).await;
    assert_eq!(reconnect.status, 204, "EventSource stops on 204");
    // From the start, an ended chat's stream sends everything and ends.
    let mut whole = open_stream(&c, &s, None, None).await;
    assert_eq!(whole.status, 200);
    assert_eq!(read_to_end(&mut whole, WAIT).await, seen);
}

/// A token as `operation` seals one, for tests that need one it would not hand out.
fn sealed(purpose: Purpose, chat: &Chat, chat_id: &str, ttl: Duration) -> String {
    let creds = ClientCredentials {
        user_id: chat.user_id.clone(),
        secure_key: chat.secure_key.clone(),
        alias: chat.alias.clone(),
        tenant_name: chat.tenant.clone(),
    };
    let payload = stream_payload(chat_id, &creds);
    Credentials::new(SECRET.as_bytes())
        .tokens()
        .seal(purpose, &payload, Some(ttl))
}

#[tokio::test]
async fn expired_forged_and_other_chats_tokens_get_401() {
    let gw = gateway().start().await;
    let c = gw.client();
    let a = start_chat(&c, "Ann").await;
    let b = start_chat(&c, "Bob").await;
    let get = |token: String| {
        let url = url(&c.base, &a.chat.chat_id, &token, None);
        let http = c.http.clone();
        async move { sse::open(&http, &url, None).await }
    };
    let long = Duration::from_secs(600);
    // The payload is right: a live token made the same way opens the stream.
    let good = get(sealed(Purpose::Stream, &a.chat, &a.chat.chat_id, long)).await;
    assert_eq!(good.status, 200);
    drop(good);

    let mut forged = a.token.clone().into_bytes();
    let i = forged.len() / 2;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let refused = [
        (
            "expired",
            sealed(Purpose::Stream, &a.chat, &a.chat.chat_id, Duration::ZERO),
        ),
        ("forged", String::from_utf8(forged).unwrap()),
        ("another chat's", b.token.clone()),
        (
            "for another chat id",
            sealed(Purpose::Stream, &a.chat, &b.chat.chat_id, long),
        ),
        (
            "another purpose's",
            sealed(Purpose::Chat, &a.chat, &a.chat.chat_id, long),
        ),
        ("empty", String::new()),
    ];
    for (what, token) in refused {
        let stream = get(token).await;
        assert_eq!(stream.status, 401, "{what} token");
        let body = stream.json().await;
        assert_eq!(body["errors"][0]["code"], 240, "{what}: {body}");
        assert_eq!(body["statusCode"], 2);
    }
    let no_token = sse::open(
        &c.http,
        &format!("{}/api/v2/chats/{}/events", c.base, a.chat.chat_id),
        None,
    )
    .await;
    assert_eq!(no_token.status, 400);
    assert_eq!(no_token.json().await["errors"][0]["code"], 102);
}

fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(ip))
        .build()
        .unwrap()
}

#[tokio::test]
async fn past_its_cap_an_address_gets_429_while_another_address_streams() {
    let gw = gateway()
        .toml("[push]\nmax_streams_per_ip = 2\nheartbeat_secs = 1")
        .start()
        .await;
    let c = gw.client();
    let s = start_chat(&c, "Ann").await;
    let url = url(&c.base, &s.chat.chat_id, &s.token, None);
    let one = client_from([127, 0, 0, 1]);
    let two = client_from([127, 0, 0, 2]);
    let first = sse::open(&one, &url, None).await;
    let second = sse::open(&one, &url, None).await;
    assert_eq!((first.status, second.status), (200, 200));
    let third = sse::open(&one, &url, None).await;
    assert_eq!(third.status, 429);
    let body = third.json().await;
    assert_eq!(
        (
            body["statusCode"].as_i64(),
            body["errors"][0]["code"].as_i64()
        ),
        (Some(1), Some(416))
    );
    let mut elsewhere = sse::open(&two, &url, None).await;
    assert_eq!(
        elsewhere.status, 200,
        "another address is not held to the first's cap"
    );
    assert!(elsewhere.next_event(WAIT).await.is_some());
    // A closed stream gives its place back.
    drop(first);
    eventually("a place given back", WAIT, || async {
        let s = sse::open(&one, &url, None).await;
        (s.status == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn past_the_global_cap_a_stream_gets_503_retryable() {
    let gw = gateway()
        .toml("[push]\nmax_streams = 2\nmax_streams_per_ip = 0")
        .start()
        .await;
    let c = gw.client();
    let s = start_chat(&c, "Ann").await;
    let url = url(&c.base, &s.chat.chat_id, &s.token, None);
    let a = sse::open(&client_from([127, 0, 0, 1]), &url, None).await;
    let b = sse::open(&client_from([127, 0, 0, 2]), &url, None).await;
    assert_eq!((a.status, b.status), (200, 200));
    let third = sse::open(&client_from([127, 0, 0, 3]), &url, None).await;
    assert_eq!(third.status, 503);
    let body = third.json().await;
    assert_eq!(
        (
            body["statusCode"].as_i64(),
            body["errors"][0]["code"].as_i64()
        ),
        (Some(1), Some(415))
    );
}

#[tokio::test]
async fn a_quiet_stream_gets_heartbeat_comments_without_an_id() {
    let gw = gateway().toml("[push]\nheartbeat_secs = 1").start().await;
    let c = gw.client();
    let s = start_chat(&c, "Ann").await;
    let end = c.messages(&s.chat, Some(1)).await.body["nextPosition"]
        .as_u64()
        .unwrap();
    // From the end: nothing to send, only heartbeats.
    let mut stream = open_stream(&c, &s, Some(end), None).await;
    let started = Instant::now();
    let mut heartbeats = 0;
    while heartbeats < 2 {
        match stream.next(WAIT).await.expect("the stream stays open") {
            Frame::Comment(c) => {
                assert_eq!(c, "keep-alive");
                heartbeats += 1;
            }
            Frame::Retry(_) => {}
            other => panic!("a quiet chat sent {other:?}"),
        }
    }
    println!("two heartbeats in {:?}", started.elapsed());
    assert!(stream.raw.contains("\n\n: keep-alive\n\n"));
    assert!(
        !stream.raw.contains("id:"),
        "a heartbeat carries no id: {}",
        stream.raw
    );
}

#[tokio::test]
async fn a_stream_has_the_headers_proxies_need_is_never_compressed_and_allows_its_origin() {
    let gw = gateway()
        .cors_origins(&["https://shop.example.com"])
        .toml("[push]\nretry_ms = 2500")
        .start()
        .await;
    let c = gw.client();
    let s = start_chat(&c, "Ann").await;
    let resp = c
        .http
        .get(url(&c.base, &s.chat.chat_id, &s.token, None))
        .header("accept-encoding", "gzip, deflate, br")
        .header("origin", "https://shop.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    let header = |name: &str| h.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(
        header("cache-control").as_deref(),
        Some("no-cache, no-transform")
    );
    assert_eq!(header("x-accel-buffering").as_deref(), Some("no"));
    assert_eq!(header("content-encoding"), None);
    assert_eq!(header("content-length"), None);
    assert_eq!(
        header("access-control-allow-origin").as_deref(),
        Some("https://shop.example.com")
    );
    assert_eq!(header("access-control-allow-credentials"), None);
    let mut resp = resp;
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"retry: 2500\n\n"), "{first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_open_streams_promptly() {
    let scratch = Scratch::new("push-shutdown");
    let config = scratch.0.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_deadline_ms = 30000\n\
             [credentials]\nsecret = \"{SECRET}\"\n[[tenants]]\nname = \"Environment\"\n\
             [[chat.instances]]\nalias = \"1\"\nkind = \"mock\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let mut gw = GatewayProcess::start(&config, &scratch.0);
    let c = Client {
        base: gw.base.clone(),
        http: reqwest::Client::new(),
    };
    let s = start_chat(&c, "Ann").await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = open_stream(&c, &s, None, None).await;
        assert_eq!(stream.status, 200);
        assert!(stream.next_event(WAIT).await.is_some());
        streams.push(stream);
    }
    let asked = Instant::now();
    gw.signal("TERM");
    for stream in &mut streams {
        read_to_end(stream, WAIT).await;
        assert!(
            stream.ended(),
            "closed by the server, not cut: {}",
            stream.raw
        );
    }
    let closed = asked.elapsed();
    eventually_exit(&mut gw).await;
    let exited = asked.elapsed();
    println!("streams closed {closed:?} and the process exited {exited:?} after SIGTERM");
    assert!(
        exited < Duration::from_secs(15),
        "the 30 s shutdown deadline was waited out: {exited:?}"
    );
}

async fn eventually_exit(gw: &mut GatewayProcess) {
    let deadline = Instant::now() + Duration::from_secs(25);
    while gw.is_running() {
        assert!(Instant::now() < deadline, "the gateway did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The config of a gateway process over the cluster.
fn cluster_config(cluster: &Cluster, scratch: &Scratch, extra: &str) -> std::path::PathBuf {
    let config = scratch.0.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[credentials]\nsecret = \"{SECRET}\"\n\
             [[tenants]]\nname = \"Environment\"\n{}{FAST}{extra}",
            cluster.instances(&[]),
        ),
    )
    .unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dropped_with_its_gateway_resumes_on_another_replica_without_gap_or_duplicate() {
    let cluster = Cluster::start(&["1", "2"]);
    let scratch = Scratch::new("push-replicas");
    let config = cluster_config(&cluster, &scratch, "");
    let start = |name: &str| {
        let dir = scratch.0.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        GatewayProcess::start(&config, &dir)
    };
    let client = |p: &GatewayProcess| Client {
        base: p.base.clone(),
        http: reqwest::Client::new(),
    };
    let mut one = start("one");
    let two = start("two");
    let (c1, c2) = (client(&one), client(&two));
    let started = eventually("a new chat", PATIENCE, || async {
        let r = c1
            .post(
                "/api/v2/chats",
                json!({"tenantName": "Environment", "nickname": "Ann"}),
            )
            .await;
        (r.status_code() == 0).then(|| Started {
            chat: Chat::created(&r),
            token: token_of(&r),
        })
    })
    .await;
    let mut chat = started.chat.clone();
    let mut sent = vec![send_acked(&c1, &mut chat, "before").await];
    let mut stream = open_stream(&c1, &started, None, None).await;
    let mut seen = BTreeMap::new();
    while texts_from_client(&seen) != sent {
        collect(&mut seen, &stream.next_event(WAIT).await.unwrap());
    }
    one.kill9();
    while let Some(frame) = stream.next(WAIT).await {
        collect(&mut seen, &frame);
    }
    assert!(stream.broken, "the stream on gateway 1 is gone");
    let last = *seen.keys().last().unwrap();
    let dropped = Instant::now();
    sent.push(send_acked(&c2, &mut chat, "after").await);
    let mut resumed = open_stream(&c2, &started, None, Some(last)).await;
    assert_eq!(resumed.status, 200);
    while texts_from_client(&seen) != sent {
        collect(&mut seen, &resumed.next_event(WAIT).await.unwrap());
    }
    println!(
        "resumed on gateway 2 {:?} after gateway 1 died",
        dropped.elapsed()
    );
    let r = c2.op(&chat, "Complete", json!({})).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    for frame in read_to_end(&mut resumed, PATIENCE).await.values() {
        let id = frame["messages"][0]["index"].as_u64().unwrap();
        assert!(
            seen.insert(id, frame.clone()).is_none(),
            "event {id} sent twice"
        );
    }
    assert_whole(&seen);
    let transcript = c2.messages(&chat, Some(1)).await;
    assert_eq!(
        seen.len(),
        transcript.messages().len(),
        "every event of the chat"
    );
    assert_no_secure_key(&(stream.raw + &resumed.raw), &chat.secure_key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_of_the_chat_server_holding_the_chat_mid_stream_loses_and_doubles_nothing() {
    let mut cluster = Cluster::start(&["1", "2", "3"]);
    let gw = cluster.gateway(&[], "[push]\nheartbeat_secs = 1\n").await;
    let c = gw.client();
    let mut s = start_chat(&c, "Ann").await;
    let victim = s.chat.alias.clone();
    let mut stream = open_stream(&c, &s, None, None).await;
    assert_eq!(stream.status, 200);
    let reader = tokio::spawn(async move {
        let seen = read_to_end(&mut stream, Duration::from_secs(120)).await;
        (seen, stream)
    });
    let mut sent = Vec::new();
    for i in 0..4 {
        sent.push(send_acked(&c, &mut s.chat, &format!("m{i}")).await);
    }
    cluster.server(&victim).kill9();
    let killed = Instant::now();
    for i in 4..8 {
        sent.push(send_acked(&c, &mut s.chat, &format!("m{i}")).await);
    }
    println!(
        "messages acknowledged again {:?} after the kill",
        killed.elapsed()
    );
    assert_ne!(s.chat.alias, victim, "the chat moved");
    eventually("the chat completed", PATIENCE, || async {
        let r = c.op(&s.chat, "Complete", json!({})).await;
        match r.status_code() {
            0 => Some(()),
            1 => None,
            _ => panic!("{:#}", r.body),
        }
    })
    .await;
    let (seen, stream) = reader.await.unwrap();
    assert!(
        stream.ended(),
        "the stream ended with the chat: {}",
        stream.raw
    );
    assert_whole(&seen);
    let transcript = c.messages(&s.chat, Some(1)).await;
    assert_eq!(
        seen.len(),
        transcript.messages().len(),
        "every event of the chat once"
    );
    for text in &sent {
        let n = texts_from_client(&seen)
            .iter()
            .filter(|t| *t == text)
            .count();
        assert_eq!(n, 1, "{text} streamed {n} times");
    }
    // The stream's own reads found the instance dead too, and moved the chat to the same
    // place as the sender did (the restore target is the chat id's, whoever moves it): its
    // data names the alias the customer's replies name.
    let last = seen.values().last().unwrap();
    assert_eq!(
        last["alias"],
        s.chat.alias.as_str(),
        "the data names the new alias"
    );
    assert_ne!(last["alias"], victim.as_str());
    assert_eq!(last["chatEnded"], true);
    assert_no_secure_key(&stream.raw, &s.chat.secure_key);
}

fn event(index: u64, text: &str) -> backend_api::Event {
    backend_api::Event {
        index,
        kind: backend_api::EventType::Message,
        from: backend_api::Participant {
            nickname: "Agent".into(),
            participant_id: 2,
            kind: backend_api::ParticipantType::Agent,
        },
        text: Some(text.into()),
        message_type: None,
        utc_time: 1,
        user_data: Default::default(),
    }
}

fn update(events: Vec<backend_api::Event>, next_position: u64) -> backend_api::ChatUpdate {
    backend_api::ChatUpdate {
        messages: events,
        next_position,
        chat_ended: false,
        details: None,
        secure_key: None,
    }
}

#[tokio::test]
async fn faults_are_waited_out_inside_the_stream_and_a_refusal_ends_it_with_event_error() {
    let backend = testkit::ScriptedBackend::new();
    let gw = gateway()
        .aliases(&["A"])
        .toml("[chat.health]\neject_after = 100\ninterval_ms = 3600000")
        .start_over(vec![(
            "A".into(),
            backend.clone() as std::sync::Arc<dyn backend_api::ChatBackend>,
        )])
        .await;
    let c = gw.client();
    let s = start_chat(&c, "Ann").await;
    let busy = || Err(backend_api::BackendError::Overloaded("busy".into()));
    backend
        .refresh
        .then(Ok(update(vec![event(1, "one"), event(2, "two")], 3)))
        .then(busy())
        .then(busy())
        .then(busy())
        .then(Ok(update(vec![event(3, "three")], 4)))
        .then(Err(backend_api::BackendError::UnknownChat));
    let mut stream = open_stream(&c, &s, None, None).await;
    assert_eq!(stream.status, 200);
    let mut frames = Vec::new();
    while let Some(frame) = stream.next(WAIT).await {
        frames.push(frame);
    }
    assert!(stream.ended(), "the server closed the stream");
    let events: Vec<&Frame> = frames
        .iter()
        .filter(|f| matches!(f, Frame::Event { .. }))
        .collect();
    let ids: Vec<Option<u64>> = events.iter().map(|f| f.id()).collect();
    assert_eq!(ids, [Some(1), Some(2), Some(3), None], "{frames:#?}");
    let error = events[3];
    assert_eq!(error.name(), Some("error"));
    let body = error.json();
    assert_eq!(body["statusCode"], 2);
    assert_eq!(
        body["errors"][0]["code"], 210,
        "the Web API error reply: {body}"
    );
    assert_eq!(body["chatId"], s.chat.chat_id.as_str());
    // The three busy answers were waited out: every read reached the backend.
    assert_eq!(backend.refreshes(), 6);
}

#[tokio::test]
async fn with_push_off_the_routes_answer_404_and_replies_still_carry_a_token() {
    let gw = gateway()
        .toml(GMS_SERVICES)
        .toml("[push]\nenabled = false")
        .start()
        .await;
    let c = gw.client();
    let s = start_chat(&c, "Ann").await;
    let stream = open_stream(&c, &s, None, None).await;
    assert_eq!(stream.status, 404);
    assert_eq!(stream.json().await["errors"][0]["code"], 120);
    let gms = sse::open(
        &c.http,
        &format!(
            "{}/genesys/2/chat/customer-support/{}/events?streamToken={}",
            c.base, s.chat.chat_id, s.token
        ),
        None,
    )
    .await;
    assert_eq!(gms.status, 404);
    assert_eq!(gms.json().await["chatEnded"], false, "the GMS error shape");
}
