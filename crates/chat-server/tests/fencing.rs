//! Fencing and store outages across real processes (a private Redis, chat-server processes,
//! the TCP adapter): a frozen instance that wakes never overwrites the newer record another
//! instance saved; a chat restored onto an instance holding an older copy is served from the
//! store; while Redis is down nothing is half-applied and calls fail with the store's own
//! retryable error, and service returns within seconds of Redis returning.

mod support;

use std::time::{Duration, Instant};

use backend_api::{BackendError, ChatBackend, ChatRef, NewChat};
use backend_tcp::{TcpBackend, TcpConfig};
use support::{connected, poll, say, PATIENCE};
use testkit::{eventually, ChatServer, Redis};

/// An adapter that gives up on a call after `request_timeout`.
fn adapter_waiting(server: &ChatServer, request_timeout: Duration) -> TcpBackend {
    TcpBackend::new(TcpConfig {
        status_interval: Duration::from_millis(100),
        backoff_max: Duration::from_millis(200),
        request_timeout,
        ..TcpConfig::new(server.addr.to_string())
    })
}

/// Gives up soon, so calls to a frozen instance end quickly.
fn adapter(server: &ChatServer) -> TcpBackend {
    adapter_waiting(server, Duration::from_millis(500))
}

fn new_chat() -> NewChat {
    NewChat {
        tenant_name: "Environment".into(),
        nickname: "Ann".into(),
        endpoint: "default".into(),
        ..NewChat::default()
    }
}

/// The customer's messages in a chat's transcript, in order.
async fn customer_says(backend: &TcpBackend, chat: &ChatRef) -> Vec<String> {
    let update = backend.refresh(chat, poll()).await.unwrap();
    let indexes: Vec<u64> = update.messages.iter().map(|e| e.index).collect();
    assert_eq!(indexes, (1..update.next_position).collect::<Vec<_>>());
    update
        .messages
        .iter()
        .filter(|e| {
            e.kind == backend_api::EventType::Message
                && e.from.kind == backend_api::ParticipantType::Client
        })
        .map(|e| e.text.as_deref().unwrap_or_default().to_owned())
        .collect()
}

fn two_servers(redis: &Redis) -> (ChatServer, ChatServer) {
    let bin = env!("CARGO_BIN_EXE_chat-server");
    let first = ChatServer::builder(bin)
        .alias("117")
        .store(&redis.url())
        .start();
    let second = ChatServer::builder(bin)
        .alias("118")
        .store(&redis.url())
        .start();
    (first, second)
}

#[tokio::test]
async fn a_frozen_instance_that_wakes_never_overwrites_the_newer_record() {
    let redis = Redis::start();
    let (mut first, second) = two_servers(&redis);
    let to_first = adapter(&first);
    let to_second = adapter(&second);
    connected(&to_first).await;
    connected(&to_second).await;
    let chat = to_first.create(new_chat()).await.unwrap().chat;
    to_first.refresh(&chat, say("before")).await.unwrap();

    first.pause();
    // Requests sent to the frozen instance queue in its socket; the adapter gives up on them
    // (statusCode 1: the client does not count them as acknowledged).
    for text in ["queued 1", "queued 2"] {
        let error = to_first.refresh(&chat, say(text)).await.unwrap_err();
        assert!(error.retryable(), "{error:?}");
    }
    // The chat moves: the second instance restores it and carries it on.
    to_second.restore(&chat).await.unwrap();
    for text in ["after move 1", "after move 2"] {
        to_second.refresh(&chat, say(text)).await.unwrap();
    }

    first.resume();
    // The woken instance runs what queued, and every save of its stale copy is refused: it
    // drops the copy. Whatever reaches it now is refused (moved, or unknown once dropped).
    let refusal = eventually("the woken instance refuses", PATIENCE, || async {
        match to_first.refresh(&chat, poll()).await {
            Err(e @ (BackendError::Moved(_) | BackendError::UnknownChat)) => Some(e),
            _ => None,
        }
    })
    .await;
    println!("the woken instance answered: {refusal:?}");
    // Its stale copy is gone; the chat is still in the store, so the answer stays "moved"
    // (restore it), never "unknown chat".
    assert!(matches!(
        to_first.refresh(&chat, poll()).await,
        Err(BackendError::Moved(_))
    ));

    // The store kept the newer record: nothing acknowledged is lost. (A queued message may
    // be there only if the instance saved it before it froze, its answer lost: at most once,
    // before the move.)
    let expected = ["before", "after move 1", "after move 2"];
    let acknowledged = |says: Vec<String>| {
        let queued: Vec<&String> = says.iter().filter(|t| t.starts_with("queued")).collect();
        assert!(queued.len() <= 1, "{says:?}");
        says.iter()
            .filter(|t| !t.starts_with("queued"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let in_store = customer_says(&to_second, &chat).await;
    assert_eq!(acknowledged(in_store.clone()), expected);
    // Restoring onto the woken instance loads that newer record.
    to_first.restore(&chat).await.unwrap();
    assert_eq!(customer_says(&to_first, &chat).await, in_store);
}

#[tokio::test]
async fn a_chat_restored_onto_an_instance_with_an_older_copy_is_served_from_the_store() {
    let redis = Redis::start();
    let (first, second) = two_servers(&redis);
    let to_first = adapter(&first);
    let to_second = adapter(&second);
    connected(&to_first).await;
    connected(&to_second).await;
    let chat = to_first.create(new_chat()).await.unwrap().chat;
    to_first.refresh(&chat, say("on the first")).await.unwrap();
    // Moved to the second (the first still holds its copy), carried on there...
    to_second.restore(&chat).await.unwrap();
    to_second
        .refresh(&chat, say("on the second"))
        .await
        .unwrap();
    // ...and moved back: the first serves the store's record, not its older copy.
    let restored = to_first.restore_chat(&chat).await.unwrap();
    let expected = ["on the first", "on the second"];
    assert_eq!(customer_says(&to_first, &chat).await, expected);
    // (The agent may have answered since: the chat only grows.)
    assert!(restored.next_position <= to_first.refresh(&chat, poll()).await.unwrap().next_position);
    // The second's copy is older now: its next save is refused and it lets the chat go.
    assert!(matches!(
        to_second.refresh(&chat, say("stale")).await,
        Err(BackendError::Moved(_))
    ));
    assert_eq!(customer_says(&to_first, &chat).await, expected);
}

#[tokio::test]
async fn while_redis_is_down_nothing_is_half_applied_and_service_returns_within_seconds() {
    let mut redis = Redis::start();
    let server = ChatServer::builder(env!("CARGO_BIN_EXE_chat-server"))
        .store(&redis.url())
        .start();
    // Patient enough to hear the store's own answer (the store timeout is 2 s).
    let backend = adapter_waiting(&server, Duration::from_secs(10));
    connected(&backend).await;
    let chat = backend.create(new_chat()).await.unwrap().chat;
    backend.refresh(&chat, say("before")).await.unwrap();

    redis.stop();
    // Each call fails with the store's own error, retryable, and applies nothing.
    for _ in 0..3 {
        for request in [say("during the outage"), poll()] {
            let asked = Instant::now();
            let error = backend.refresh(&chat, request).await.unwrap_err();
            println!("a call failed after {:?} with {error}", asked.elapsed());
            assert!(
                matches!(error, BackendError::StoreUnavailable(_)),
                "{error:?}"
            );
            assert!(error.retryable() && !error.never_arrived());
        }
    }
    assert!(matches!(
        backend.create(new_chat()).await,
        Err(BackendError::StoreUnavailable(_))
    ));

    let back = Instant::now();
    redis.restart();
    eventually("the chat works again", Duration::from_secs(30), || async {
        backend.refresh(&chat, poll()).await.ok()
    })
    .await;
    let seconds = back.elapsed().as_secs_f64();
    println!("service returned {seconds:.2} s after Redis restarted");
    // The restarted Redis is empty; the instance saves its copy again with the next call.
    backend.refresh(&chat, say("after")).await.unwrap();
    assert_eq!(customer_says(&backend, &chat).await, ["before", "after"]);
    let status = backend.status().await.unwrap();
    assert_eq!(status.load.active, 1, "the refused new chat was not kept");
}
