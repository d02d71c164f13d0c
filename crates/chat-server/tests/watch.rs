//! Events at the source over real processes: a `watch` (protocol version 3) held by a
//! `chat-server` is answered when the event happens — another connection's message, the
//! simulated agent's reply falling due — with and without a Redis store; at shutdown at
//! once; with an error promptly when the server is killed, after which the chat restored on
//! another server is watched on from the same position with nothing missing or doubled. A
//! peer that speaks version 2 is served by polling, and the held-watch bounds refuse
//! retryably while normal calls pass. Figures (wake-up latencies) are printed, not asserted.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_api::{
    Action, BackendError, ChatBackend, ChatRef, ChatUpdate, NewChat, ParticipantType, Refresh,
    Transcript,
};
use backend_tcp::{TcpBackend, TcpConfig};
use chat_protocol::{
    codec, decode, encode, Call, ErrorCode, Hello, HelloReply, Refused, Reply, Request, WireError,
    PROTOCOL_V2,
};
use futures::{SinkExt, StreamExt};
use support::{connected, poll, say, PATIENCE};
use testkit::{ChatServer, Redis};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

const BIN: &str = env!("CARGO_BIN_EXE_chat-server");
/// Long enough that an answer before it is the event's doing, not the wait running out.
const LONG_WAIT: Duration = Duration::from_secs(30);

fn adapter(address: String) -> TcpBackend {
    TcpBackend::new(TcpConfig {
        status_interval: Duration::from_millis(200),
        backoff_max: Duration::from_millis(200),
        ..TcpConfig::new(address)
    })
}

fn new_chat() -> NewChat {
    NewChat {
        tenant_name: "Environment".into(),
        nickname: "Ann".into(),
        endpoint: "default".into(),
        ..NewChat::default()
    }
}

fn read_from(position: u64) -> Refresh {
    Refresh {
        action: Action::Poll,
        transcript: Transcript::From(position),
        details: false,
    }
}

/// A watch on its own task, with when it was answered.
fn spawn_watch(
    backend: &Arc<TcpBackend>,
    chat: &ChatRef,
    from: u64,
    wait: Duration,
) -> tokio::task::JoinHandle<(Result<ChatUpdate, BackendError>, Instant)> {
    let (backend, chat) = (Arc::clone(backend), chat.clone());
    tokio::spawn(async move {
        let answer = backend.watch(&chat, from, wait).await;
        (answer, Instant::now())
    })
}

/// The held watch's answer and when it came, within `PATIENCE`.
async fn answer_of(
    watch: tokio::task::JoinHandle<(Result<ChatUpdate, BackendError>, Instant)>,
) -> (Result<ChatUpdate, BackendError>, Instant) {
    tokio::time::timeout(PATIENCE, watch)
        .await
        .expect("the watch answered in time")
        .expect("the watch task ran")
}

/// Both scenarios of "answered when the event happens" on one server: a message sent on
/// another connection, then the agent's reply falling due.
async fn answered_when_the_event_happens(server: &ChatServer, what: &str) {
    let watcher = Arc::new(adapter(server.addr.to_string()));
    let sender = adapter(server.addr.to_string());
    connected(&watcher).await;
    connected(&sender).await;
    let created = sender.create(new_chat()).await.unwrap();
    let chat = created.chat;
    // The agent joins at once (the fixture's delay is 0): read past the join first.
    let from = sender.refresh(&chat, poll()).await.unwrap().next_position;

    let watch = spawn_watch(&watcher, &chat, from, LONG_WAIT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!watch.is_finished(), "the watch did not wait");
    let sent_at = Instant::now();
    sender.refresh(&chat, say("hello")).await.unwrap();
    let (answer, answered_at) = answer_of(watch).await;
    let update = answer.unwrap();
    assert_eq!(update.messages[0].index, from);
    assert_eq!(update.messages[0].text.as_deref(), Some("hello"));
    println!(
        "{what}: watch answered {:?} after another connection's message",
        answered_at - sent_at
    );

    // The agent answers 1.5 s after the message: nobody but the watch reads the chat.
    let from = update.next_position;
    let started = Instant::now();
    let update = tokio::time::timeout(PATIENCE, watcher.watch(&chat, from, LONG_WAIT))
        .await
        .expect("the watch was not answered")
        .unwrap();
    let waited = started.elapsed();
    let reply = update.messages.first().expect("an event");
    assert_eq!(
        (reply.index, reply.from.kind),
        (from, ParticipantType::Agent)
    );
    println!("{what}: watch answered by the agent's reply (due 1.5 s after the message) after {waited:?}");
}

#[tokio::test]
async fn a_held_watch_is_answered_by_another_connections_message_and_by_the_agent() {
    let server = ChatServer::builder(BIN)
        .arg("--agent-reply-delay-ms", "1500")
        .start();
    answered_when_the_event_happens(&server, "in memory").await;
}

#[tokio::test]
async fn a_held_watch_is_answered_when_the_event_happens_with_a_redis_store() {
    let redis = Redis::start();
    let server = ChatServer::builder(BIN)
        .store(&redis.url())
        .arg("--agent-reply-delay-ms", "1500")
        .start();
    answered_when_the_event_happens(&server, "with Redis").await;
}

#[tokio::test]
async fn a_held_watch_is_answered_at_shutdown_at_once() {
    let mut server = ChatServer::builder(BIN)
        .arg("--shutdown-grace-ms", "20000")
        .start();
    let backend = Arc::new(adapter(server.addr.to_string()));
    connected(&backend).await;
    let chat = backend.create(new_chat()).await.unwrap().chat;
    let from = backend.refresh(&chat, poll()).await.unwrap().next_position;
    let watch = spawn_watch(&backend, &chat, from, LONG_WAIT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let exited = tokio::task::spawn_blocking(move || server.terminate(PATIENCE))
        .await
        .unwrap();
    let (answer, answered_at) = answer_of(watch).await;
    let update = answer.unwrap();
    assert!(update.messages.is_empty(), "{update:?}");
    assert_eq!(update.next_position, from);
    assert!(exited, "the server did not exit 0 within {PATIENCE:?}");
    let shutdown = asked.elapsed();
    // The grace is 20 s: a server that waited for the watch would take that long.
    assert!(shutdown < Duration::from_secs(10), "{shutdown:?}");
    println!(
        "shutdown: watch answered {:?} after SIGTERM, process gone after {shutdown:?}",
        answered_at - asked
    );
}

#[tokio::test]
async fn kill_9_during_a_watch_fails_it_promptly_and_the_restored_chat_is_watched_on_without_gap() {
    let redis = Redis::start();
    let mut first = ChatServer::builder(BIN)
        .alias("117")
        .store(&redis.url())
        .arg("--agent-reply-delay-ms", "500")
        .start();
    let second = ChatServer::builder(BIN)
        .alias("118")
        .store(&redis.url())
        .arg("--agent-reply-delay-ms", "500")
        .start();
    let to_first = Arc::new(adapter(first.addr.to_string()));
    let to_second = Arc::new(adapter(second.addr.to_string()));
    connected(&to_first).await;
    connected(&to_second).await;
    let chat = to_first.create(new_chat()).await.unwrap().chat;
    to_first.refresh(&chat, say("before")).await.unwrap();
    // Read up to the agent's reply: the watcher has seen everything so far.
    let seen = testkit::eventually("the agent's reply", PATIENCE, || async {
        let update = to_first.refresh(&chat, poll()).await.unwrap();
        let last = update.messages.last()?;
        (last.from.kind == ParticipantType::Agent && last.text.as_deref() != Some("before"))
            .then_some(update)
    })
    .await;
    let from = seen.next_position;

    let watch = spawn_watch(&to_first, &chat, from, LONG_WAIT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    first.kill9();
    let (answer, failed_at) = answer_of(watch).await;
    let error = answer.unwrap_err();
    assert!(
        matches!(
            error,
            BackendError::Interrupted(_) | BackendError::Unreachable(_)
        ),
        "{error:?}"
    );
    assert!(error.retryable());
    println!(
        "kill -9: the held watch failed {:?} after the kill ({error})",
        failed_at - killed_at
    );

    // The gateway's move: restore on the second server, then watch again from the same
    // position there.
    to_second.restore(&chat).await.unwrap();
    let watch = spawn_watch(&to_second, &chat, from, LONG_WAIT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!watch.is_finished(), "nothing new, yet the watch answered");
    to_second.refresh(&chat, say("after")).await.unwrap();
    let (answer, _) = answer_of(watch).await;
    let update = answer.unwrap();
    let indexes: Vec<u64> = update.messages.iter().map(|e| e.index).collect();
    assert_eq!(indexes[0], from, "a gap or a repeat at the failover");
    assert_eq!(
        indexes,
        (from..from + indexes.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(update.messages[0].text.as_deref(), Some("after"));
    // Everything the chat holds, read once, shows each message once.
    let all = to_second.refresh(&chat, poll()).await.unwrap();
    let count = |text: &str| {
        all.messages
            .iter()
            .filter(|e| e.text.as_deref() == Some(text))
            .count()
    };
    assert_eq!((count("before"), count("after")), (1, 1));
    assert_eq!(&all.messages[..from as usize - 1], &seen.messages[..]);
}

/// A stand-in for a chat server of the release before `watch`: it refuses a version-3 hello
/// as such a server does (listing 1 and 2), and relays a connection that says 1 or 2 to the
/// real server, counting the calls it relays by name.
async fn version_2_stub(real: std::net::SocketAddr) -> (String, Arc<CallCounts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let counts = Arc::new(CallCounts::default());
    let counted = Arc::clone(&counts);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let counts = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut client = Framed::new(stream, codec());
                let Some(Ok(frame)) = client.next().await else {
                    return;
                };
                let hello: Hello = decode(&frame).unwrap();
                if hello.version > PROTOCOL_V2 {
                    counts.refused_v3.fetch_add(1, Ordering::SeqCst);
                    let refused = HelloReply::Refused(Refused {
                        error: WireError::new(
                            ErrorCode::VersionMismatch,
                            format!(
                                "protocol version {} not supported, this server speaks [1, 2]",
                                hello.version
                            ),
                        ),
                        supported_versions: vec![1, 2],
                    });
                    let _ = client.send(encode(&refused)).await;
                    return;
                }
                let upstream = TcpStream::connect(real).await.unwrap();
                let mut server = Framed::new(upstream, codec());
                server.send(frame.freeze()).await.unwrap();
                loop {
                    tokio::select! {
                        frame = client.next() => {
                            let Some(Ok(frame)) = frame else { return };
                            if let Ok(request) = decode::<Request>(&frame) {
                                counts.count(&request.call);
                            }
                            if server.send(frame.freeze()).await.is_err() { return }
                        }
                        frame = server.next() => {
                            let Some(Ok(frame)) = frame else { return };
                            if client.send(frame.freeze()).await.is_err() { return }
                        }
                    }
                }
            });
        }
    });
    (address, counts)
}

#[derive(Default)]
struct CallCounts {
    refused_v3: AtomicUsize,
    refreshes: AtomicUsize,
    watches: AtomicUsize,
}

impl CallCounts {
    fn count(&self, call: &Call) {
        match call {
            Call::Refresh { .. } => self.refreshes.fetch_add(1, Ordering::SeqCst),
            Call::Watch { .. } => self.watches.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
    }
}

#[tokio::test]
async fn a_server_without_version_3_is_watched_by_polling() {
    let server = ChatServer::builder(BIN)
        .arg("--agent-reply-delay-ms", "60000")
        .start();
    let (stub, counts) = version_2_stub(server.addr).await;
    let backend = Arc::new(adapter(stub));
    connected(&backend).await;
    assert!(counts.refused_v3.load(Ordering::SeqCst) >= 1, "no v3 hello");
    let chat = backend.create(new_chat()).await.unwrap().chat;
    let from = backend.refresh(&chat, poll()).await.unwrap().next_position;
    let reads_before = counts.refreshes.load(Ordering::SeqCst);
    let watch = spawn_watch(&backend, &chat, from, LONG_WAIT);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let sent_at = Instant::now();
    backend.refresh(&chat, say("polled")).await.unwrap();
    let (answer, answered_at) = answer_of(watch).await;
    let update = answer.unwrap();
    assert_eq!(update.messages[0].index, from);
    assert_eq!(update.messages[0].text.as_deref(), Some("polled"));
    assert_eq!(
        counts.watches.load(Ordering::SeqCst),
        0,
        "a watch reached a v2 peer"
    );
    let reads = counts.refreshes.load(Ordering::SeqCst) - reads_before - 1;
    assert!(
        reads >= 3,
        "the watch read the chat {reads} times: it did not poll"
    );
    println!(
        "v2 peer: watch polled {reads} times, answered {:?} after the message",
        answered_at - sent_at
    );
}

async fn call(
    framed: &mut Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
    id: u64,
    call: Call,
) -> Result<chat_protocol::Answer, WireError> {
    let frame = encode(&Request {
        id,
        call,
        trace_id: None,
    });
    framed.send(frame).await.unwrap();
    let reply: Reply = decode(&framed.next().await.unwrap().unwrap()).unwrap();
    reply.into_result().unwrap()
}

#[tokio::test]
async fn a_version_2_connection_is_served_as_before_and_refused_a_watch() {
    let server = ChatServer::builder(BIN).start();
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let mut framed = Framed::new(stream, codec());
    let hello = Hello {
        version: PROTOCOL_V2,
        peer: "an older gateway".into(),
        nonce: None,
    };
    framed.send(encode(&hello)).await.unwrap();
    let HelloReply::Welcome(welcome) = decode(&framed.next().await.unwrap().unwrap()).unwrap()
    else {
        panic!("a v2 hello was refused")
    };
    assert_eq!(welcome.version, PROTOCOL_V2);
    let created = call(&mut framed, 1, Call::LoginJoin(new_chat().into()))
        .await
        .unwrap();
    let chat_protocol::Answer::Created(created) = created else {
        panic!("{created:?}")
    };
    let refused = call(
        &mut framed,
        2,
        Call::Watch {
            chat: created.chat.clone(),
            transcript_position: 1,
            wait_ms: 1000,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code, ErrorCode::Unsupported, "{refused:?}");
    let refresh = Call::Refresh {
        chat: created.chat,
        action: chat_protocol::chat::Action::Poll,
        transcript_position: 1,
        details: false,
    };
    assert!(
        call(&mut framed, 3, refresh).await.is_ok(),
        "the connection went on"
    );
}

#[tokio::test]
async fn past_the_held_watch_bounds_watches_are_refused_retryably_and_normal_calls_pass() {
    let server = ChatServer::builder(BIN)
        .arg("--max-watches-per-connection", "2")
        .arg("--max-in-flight-per-connection", "2")
        .start();
    // One connection, so the server's per-connection bound is the one met.
    let backend = Arc::new(TcpBackend::new(TcpConfig {
        connections: 1,
        ..TcpConfig::new(server.addr.to_string())
    }));
    connected(&backend).await;
    let chat = backend.create(new_chat()).await.unwrap().chat;
    let from = backend.refresh(&chat, poll()).await.unwrap().next_position;
    let held: Vec<_> = (0..2)
        .map(|_| spawn_watch(&backend, &chat, from, LONG_WAIT))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = backend.watch(&chat, from, LONG_WAIT).await.unwrap_err();
    assert!(
        matches!(refused, BackendError::Overloaded(_)),
        "{refused:?}"
    );
    assert!(refused.retryable() && refused.never_arrived());
    // Normal calls pass, more of them than the in-flight bound, while both watches are held.
    for _ in 0..5 {
        backend.refresh(&chat, read_from(from)).await.unwrap();
    }
    assert!(held.iter().all(|w| !w.is_finished()));
    // The adapter's own bound (tcp.max_watches) refuses before the server is asked.
    let bounded = Arc::new(TcpBackend::new(TcpConfig {
        max_watches: std::num::NonZeroUsize::new(1).unwrap(),
        ..TcpConfig::new(server.addr.to_string())
    }));
    connected(&bounded).await;
    let one = spawn_watch(&bounded, &chat, from, LONG_WAIT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = bounded.watch(&chat, from, LONG_WAIT).await.unwrap_err();
    assert!(
        matches!(refused, BackendError::Overloaded(_)),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("watches"), "{refused}");
    // A message answers every held watch.
    backend.refresh(&chat, say("to all")).await.unwrap();
    for watch in held.into_iter().chain([one]) {
        let (answer, _) = answer_of(watch).await;
        assert_eq!(answer.unwrap().messages[0].text.as_deref(), Some("to all"));
    }
}
