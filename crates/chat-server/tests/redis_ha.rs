//! The store on replicated Redis, against real processes: chats talk through a chat server
//! saving to a Sentinel-managed master, and to a Redis Cluster, while a Redis master is
//! killed with SIGKILL and a replica takes over. Every message acknowledged to a client is
//! in the transcript afterwards (read back by restoring each chat on another chat server),
//! none twice, and a stale save is still refused (fencing) after the failover. Also: the
//! latency cost of `store_replicas_ack` (WAIT for a replica) measured and printed.
//!
//! Counters and recovery times are printed (`cargo test --test redis_ha -- --nocapture`);
//! the bounds asserted are generous "it happened" bounds, never timings.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backend_api::{
    Action, BackendError, ChatBackend, ChatRef, EventType, NewChat, ParticipantType, Refresh,
    Transcript,
};
use backend_tcp::{TcpBackend, TcpConfig};
use support::{connected, poll, say, PATIENCE};
use testkit::redis_ha::{redis_cli, RedisCluster, RedisSentinel, ReplicatedRedis};
use testkit::{eventually, ChatServer};

/// The longest the chats wait, after a master is killed, for every one of them to be saved
/// again (a failover takes a few seconds: the master judged down after 1 s, an election, a
/// promotion).
const RECOVERY_WITHIN: Duration = Duration::from_secs(40);

fn adapter(server: &ChatServer) -> TcpBackend {
    TcpBackend::new(TcpConfig {
        status_interval: Duration::from_millis(100),
        backoff_max: Duration::from_millis(200),
        request_timeout: Duration::from_secs(4),
        ..TcpConfig::new(server.addr.to_string())
    })
}

/// A chat server saving to `url`, acknowledging a save once one replica has it.
fn server(alias: &str, url: &str) -> ChatServer {
    ChatServer::builder(env!("CARGO_BIN_EXE_chat-server"))
        .alias(alias)
        .store(url)
        .arg("--store-replicas-ack", "1")
        .arg("--store-replicas-ack-timeout-ms", "1000")
        .arg("--store-timeout-ms", "2000")
        .arg("--store-connect-timeout-ms", "500")
        .start()
}

fn new_chat(n: usize) -> NewChat {
    NewChat {
        tenant_name: "Environment".into(),
        nickname: format!("customer {n}"),
        endpoint: "default".into(),
        ..NewChat::default()
    }
}

/// A customer's message, answered without the transcript (replies stay small).
fn send(text: &str) -> Refresh {
    Refresh {
        action: Action::SendMessage {
            text: text.into(),
            message_type: None,
        },
        transcript: Transcript::None,
        details: false,
    }
}

/// The customer's messages in the whole transcript, page after page.
async fn customer_says(backend: &TcpBackend, chat: &ChatRef) -> Vec<String> {
    let mut says = Vec::new();
    let mut from = 1;
    loop {
        let mut read = poll();
        read.transcript = Transcript::From(from);
        let update = backend.refresh(chat, read).await.unwrap();
        says.extend(
            update
                .messages
                .iter()
                .filter(|e| e.kind == EventType::Message && e.from.kind == ParticipantType::Client)
                .map(|e| e.text.as_deref().unwrap_or_default().to_owned()),
        );
        if update.messages.is_empty() || update.next_position <= from {
            return says;
        }
        from = update.next_position;
    }
}

/// When the master was killed, shared with the talking chats.
type KilledAt = Arc<Mutex<Option<Instant>>>;

/// What one talking chat saw.
#[derive(Default)]
struct Talk {
    /// Texts answered without an error, in order.
    acknowledged: Vec<String>,
    /// Calls that failed after the kill (each retried).
    failed_after_kill: usize,
    /// Acknowledged after it had failed since the kill: when service came back for it.
    recovered_at: Option<Instant>,
    /// Acknowledged after recovering.
    acknowledged_after_recovery: usize,
}

/// One customer: sends a numbered message every 50 ms; a message that fails (statusCode 1)
/// is sent again, as the Web API's clients do; a `moved` answer (the chat server dropped a
/// copy the store no longer holds) is met as the gateway meets it: restore, then send again.
async fn talk(
    backend: Arc<TcpBackend>,
    chat: ChatRef,
    n: usize,
    stop: Arc<AtomicBool>,
    killed_at: KilledAt,
    talk: Arc<Mutex<Talk>>,
) {
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let text = format!("chat {n} message {i}");
        loop {
            match backend.refresh(&chat, send(&text)).await {
                Ok(_) => {
                    let mut talk = talk.lock().unwrap();
                    talk.acknowledged.push(text);
                    if talk.recovered_at.is_some() {
                        talk.acknowledged_after_recovery += 1;
                    } else if talk.failed_after_kill > 0 {
                        talk.recovered_at = Some(Instant::now());
                    }
                    break;
                }
                Err(e) => {
                    assert!(
                        e.retryable() || matches!(e, BackendError::Moved(_)),
                        "{e:?}"
                    );
                    assert!(
                        killed_at.lock().unwrap().is_some(),
                        "a call failed before any fault: {e:?}"
                    );
                    talk.lock().unwrap().failed_after_kill += 1;
                    if matches!(e, BackendError::Moved(_)) {
                        let _ = backend.restore(&chat).await;
                    }
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The counters of one failover run.
struct Outcome {
    acknowledged: usize,
    acknowledged_then_missing: usize,
    duplicates: usize,
    chats_that_failed: usize,
    /// Seconds from the kill to the first, and to the last, chat saved again.
    first_recovery: f64,
    last_recovery: f64,
}

/// `chats` chats talk through chat server A (`url`, WAIT 1) while `kill` kills a Redis
/// master (and waits for the failover); then every chat is restored on chat server B and
/// its transcript checked against what was acknowledged. Ends with the fencing check: a
/// save of A's stale copy of a chat B carried on is refused.
async fn chats_talk_through_a_failover(
    url: &str,
    chats: usize,
    kill: impl FnOnce(&[ChatRef]),
) -> Outcome {
    let first = server("117", url);
    let second = server("118", url);
    let to_first = Arc::new(adapter(&first));
    let to_second = adapter(&second);
    connected(&to_first).await;
    connected(&to_second).await;

    let mut refs = Vec::new();
    for n in 0..chats {
        refs.push(to_first.create(new_chat(n)).await.unwrap().chat);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at: KilledAt = Arc::default();
    let talks: Vec<Arc<Mutex<Talk>>> = (0..chats).map(|_| Arc::default()).collect();
    let tasks: Vec<_> = refs
        .iter()
        .enumerate()
        .map(|(n, chat)| {
            tokio::spawn(talk(
                to_first.clone(),
                chat.clone(),
                n,
                stop.clone(),
                killed_at.clone(),
                talks[n].clone(),
            ))
        })
        .collect();
    eventually("every chat talking", PATIENCE, || async {
        talks
            .iter()
            .all(|t| t.lock().unwrap().acknowledged.len() >= 3)
            .then_some(())
    })
    .await;

    let kill_started = Instant::now();
    *killed_at.lock().unwrap() = Some(kill_started);
    tokio::task::block_in_place(|| kill(&refs));
    println!(
        "the store reported the failover done {:.2} s after the kill",
        kill_started.elapsed().as_secs_f64()
    );
    // Service is back for every chat that failed, and each has been saved a few times since.
    let recovered = || {
        talks.iter().all(|t| {
            let t = t.lock().unwrap();
            t.failed_after_kill == 0 || t.acknowledged_after_recovery >= 3
        })
    };
    while !recovered() {
        if kill_started.elapsed() > RECOVERY_WITHIN {
            let log = first.log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "timed out waiting for every chat saved again after the failover; \
                 the chat server's last log lines, newest first:\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }

    let mut outcome = Outcome {
        acknowledged: 0,
        acknowledged_then_missing: 0,
        duplicates: 0,
        chats_that_failed: 0,
        first_recovery: f64::MAX,
        last_recovery: 0.0,
    };
    for (chat, talk) in refs.iter().zip(&talks) {
        let talk = std::mem::take(&mut *talk.lock().unwrap());
        outcome.acknowledged += talk.acknowledged.len();
        if let Some(at) = talk.recovered_at {
            outcome.chats_that_failed += 1;
            let seconds = at.duration_since(kill_started).as_secs_f64();
            outcome.first_recovery = outcome.first_recovery.min(seconds);
            outcome.last_recovery = outcome.last_recovery.max(seconds);
        }
        to_second.restore(chat).await.unwrap();
        let says = customer_says(&to_second, chat).await;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for text in &says {
            *seen.entry(text).or_default() += 1;
        }
        outcome.duplicates += seen.values().filter(|&&n| n > 1).count();
        outcome.acknowledged_then_missing += talk
            .acknowledged
            .iter()
            .filter(|t| !seen.contains_key(t.as_str()))
            .count();
        // Acknowledged messages are in the transcript in the order they were sent.
        let order: Vec<&String> = says
            .iter()
            .filter(|t| talk.acknowledged.contains(t))
            .collect();
        assert!(
            order.into_iter().eq(talk.acknowledged.iter()),
            "chat {}: {says:?}",
            chat.chat_id
        );
    }

    // Fencing on the failed-over store: B carries chat 0 on; A's copy is stale, and its save
    // is refused (moved), nothing written.
    let chat = &refs[0];
    to_second
        .refresh(chat, say("carried on by B"))
        .await
        .unwrap();
    let refused = to_first.refresh(chat, send("stale save by A")).await;
    assert!(
        matches!(refused, Err(BackendError::Moved(_))),
        "{refused:?}"
    );
    let says = customer_says(&to_second, chat).await;
    assert!(says.iter().any(|t| t == "carried on by B"), "{says:?}");
    assert!(!says.iter().any(|t| t == "stale save by A"), "{says:?}");
    outcome
}

fn report(topology: &str, outcome: &Outcome, started: Instant) {
    println!(
        "{topology}: acknowledged {}, acknowledged-then-missing {}, duplicates {}, \
         chats that saw the failover {}, recovery {:.2} s (first chat saved again) to {:.2} s \
         (last), test wall time {:.1} s",
        outcome.acknowledged,
        outcome.acknowledged_then_missing,
        outcome.duplicates,
        outcome.chats_that_failed,
        outcome.first_recovery,
        outcome.last_recovery,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(outcome.acknowledged_then_missing, 0);
    assert_eq!(outcome.duplicates, 0);
    assert!(
        outcome.chats_that_failed > 0,
        "no chat noticed the master's death: the failover was not exercised"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_promotes_a_replica_while_chats_talk_and_nothing_acknowledged_is_lost() {
    let started = Instant::now();
    let mut redis = tokio::task::block_in_place(RedisSentinel::start);
    let url = redis.url();
    let outcome = chats_talk_through_a_failover(&url, 4, |chats| {
        // One Redis has no slots: the key is the chat id without a hash tag.
        let key = format!("chat:{}", chats[0].chat_id);
        let master = redis.master_port();
        assert_eq!(
            redis_cli(master, &["HEXISTS", &key, "record"]).as_deref(),
            Some("1")
        );
        let killed = Instant::now();
        let old = redis.kill_master();
        let new = redis.wait_for_new_master(old);
        println!(
            "sentinel: master {old} killed, {new} promoted after {:.2} s",
            killed.elapsed().as_secs_f64()
        );
        // With WAIT 1 the new master needs a replica before saves count again: the old one
        // restarted, as its supervisor would, rejoins as a replica.
        redis.restart(old);
        println!("sentinel: {old} back as a replica of {new}");
    })
    .await;
    report("sentinel", &outcome, started);
    assert_eq!(
        outcome.chats_that_failed, 4,
        "every chat is on the one master"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_survives_a_master_failure_while_chats_talk_and_nothing_acknowledged_is_lost() {
    let started = Instant::now();
    let mut redis = tokio::task::block_in_place(RedisCluster::start);
    let url = redis.url();
    let outcome = chats_talk_through_a_failover(&url, 9, |chats| {
        // Every key of a chat is under its hash tag: one slot, on one master.
        let key = format!("chat:{{{}}}", chats[0].chat_id);
        assert_eq!(
            redis.cli(&["HEXISTS", &key, "record"]).as_deref(),
            Some("1")
        );
        let master = redis.master_of(&key);
        let killed = Instant::now();
        redis.kill(master);
        redis.wait_for_failover(master);
        println!(
            "cluster: master {master} (holding chat 0) killed, its replica promoted after {:.2} s",
            killed.elapsed().as_secs_f64()
        );
        // With WAIT 1 the promoted master needs a replica before saves count again.
        redis.restart(master);
        println!("cluster: {master} back as a replica");
    })
    .await;
    report("cluster", &outcome, started);
}

/// Sends `count` messages over `chats` chats, `concurrency` at a time; returns each call's
/// latency.
async fn send_many(
    backend: &TcpBackend,
    chats: &[ChatRef],
    count: usize,
    concurrency: usize,
) -> Vec<Duration> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let latencies = Mutex::new(Vec::with_capacity(count));
    let worker = |w: usize| {
        let (next, latencies) = (&next, &latencies);
        async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                // Worker w owns chats w, w + concurrency, ...: one call at a time per chat.
                let mine: Vec<&ChatRef> = chats.iter().skip(w).step_by(concurrency).collect();
                let chat = mine[i % mine.len()];
                let begun = Instant::now();
                backend
                    .refresh(chat, send(&format!("bench {i}")))
                    .await
                    .unwrap();
                latencies.lock().unwrap().push(begun.elapsed());
            }
        }
    };
    futures::future::join_all((0..concurrency).map(worker)).await;
    latencies.into_inner().unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at].as_secs_f64() * 1000.0
}

/// The price of `store_replicas_ack = 1`: a master with one replica, two chat servers (WAIT 0
/// and WAIT 1); SendMessage calls one at a time (latency) and 16 at a time (saves per second).
/// Asserts that the WAIT 1 server did send one WAIT per save and the WAIT 0 server none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cost_of_waiting_for_one_replica_is_measured() {
    let started = Instant::now();
    let redis = tokio::task::block_in_place(|| ReplicatedRedis::start(1));
    let port: u16 = redis
        .master_url()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let waits = || {
        let stats = redis_cli(port, &["INFO", "commandstats"]).unwrap_or_default();
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
            .and_then(|l| l.split(',').next()?.parse::<usize>().ok())
            .unwrap_or(0)
    };
    const SEQUENTIAL: usize = 400;
    const PARALLEL: usize = 800;
    for ack in ["0", "1"] {
        // The previous round's burst of saves may have left the replica behind (or made the
        // master drop and resync it): measure WAIT against a replica that is caught up.
        tokio::task::block_in_place(|| redis.wait_in_sync());
        let server = ChatServer::builder(env!("CARGO_BIN_EXE_chat-server"))
            .store(&redis.master_url())
            .arg("--store-replicas-ack", ack)
            .arg("--max-transcript-events", "100000")
            .arg("--max-transcript-bytes", "67108864")
            .start();
        let backend = adapter(&server);
        connected(&backend).await;
        let mut chats = Vec::new();
        for n in 0..16 {
            chats.push(backend.create(new_chat(n)).await.unwrap().chat);
        }
        let waits_before = waits();
        let mut one_at_a_time = send_many(&backend, &chats, SEQUENTIAL, 1).await;
        one_at_a_time.sort();
        let begun = Instant::now();
        let sixteen = send_many(&backend, &chats, PARALLEL, 16).await;
        let per_second = sixteen.len() as f64 / begun.elapsed().as_secs_f64();
        let waited = waits() - waits_before;
        println!(
            "store_replicas_ack = {ack}: one at a time p50 {:.2} ms, p99 {:.2} ms ({SEQUENTIAL} \
             SendMessage calls); 16 at a time {per_second:.0} saves/s ({PARALLEL} calls); \
             WAIT commands {waited}",
            percentile(&one_at_a_time, 0.50),
            percentile(&one_at_a_time, 0.99),
        );
        // Every call saved once; each save of the WAIT 1 server waited (the agent's replies
        // are saved with the customer's next call, never on their own).
        let expected = if ack == "1" { SEQUENTIAL + PARALLEL } else { 0 };
        assert_eq!(waited, expected);
    }
    println!("wall time {:.1} s", started.elapsed().as_secs_f64());
}
