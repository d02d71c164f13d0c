//! The push benchmark's client (`bench/push.sh` runs it): opens chats on a gateway, one
//! Server-Sent Events stream each, and measures how long an agent's message takes to reach the
//! stream.
//!
//! `push-bench latency URL CHATS SECONDS RATE`: sends RATE customer messages a second, spread
//! over the chats, for SECONDS; the simulated agent answers each; every stream records the
//! delay from the agent message's `utcTime` to its arrival. Prints one JSON line: streams,
//! messages sent, agent messages received, p50/p99/max in ms, and every index checked once
//! (`gaps`, `duplicates`).
//!
//! `push-bench idle URL CHATS SECONDS`: opens the chats and streams, prints `ready`, then holds
//! them open for SECONDS (the script measures the gateway meanwhile) and prints the count of
//! heartbeats seen.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::Mutex;

#[derive(Clone)]
struct Chat {
    id: String,
    user: String,
    key: String,
    alias: String,
    token: String,
}

#[derive(Default)]
struct Seen {
    latencies_ms: Vec<u64>,
    gaps: u64,
    duplicates: u64,
    heartbeats: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn open_chat(http: &reqwest::Client, base: &str) -> Chat {
    loop {
        let reply: Value = http
            .post(format!("{base}/api/v2/chats"))
            .json(&json!({"tenantName": "Environment", "nickname": "bench"}))
            .send()
            .await
            .expect("Request Chat")
            .json()
            .await
            .expect("Request Chat reply");
        if reply["statusCode"] != 0 {
            eprintln!("Request Chat refused, again in 100 ms: {reply}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let s = |k: &str| reply[k].as_str().unwrap_or_default().to_owned();
        let token = s("streamToken");
        assert!(!token.is_empty(), "the reply has no streamToken: {reply}");
        return Chat {
            id: s("chatId"),
            user: s("userId"),
            key: s("secureKey"),
            alias: s("alias"),
            token,
        };
    }
}

/// Reads one chat's stream until `stop`, checking each index once and timing agent messages.
async fn follow(
    http: reqwest::Client,
    base: String,
    chat: Chat,
    seen: Arc<Mutex<Seen>>,
    opened: Arc<AtomicU64>,
) {
    let url = format!(
        "{base}/api/v2/chats/{}/events?streamToken={}",
        chat.id, chat.token
    );
    let resp = http.get(url).send().await.expect("stream request");
    assert_eq!(resp.status(), 200, "stream refused: {}", resp.status());
    opened.fetch_add(1, Ordering::Relaxed);
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut indexes = BTreeSet::new();
    let mut next = 1u64;
    while let Some(Ok(bytes)) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if block.starts_with(':') {
                seen.lock().await.heartbeats += 1;
                continue;
            }
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            let Ok(data) = serde_json::from_str::<Value>(data.trim()) else {
                continue;
            };
            let arrived = now_ms();
            let mut s = seen.lock().await;
            for m in data["messages"].as_array().into_iter().flatten() {
                let index = m["index"].as_u64().unwrap_or(0);
                if !indexes.insert(index) {
                    s.duplicates += 1;
                }
                if index > next {
                    s.gaps += index - next;
                }
                next = next.max(index + 1);
                if m["type"] == "Message" && m["from"]["type"] == "Agent" {
                    let at = m["utcTime"].as_u64().unwrap_or(arrived);
                    s.latencies_ms.push(arrived.saturating_sub(at));
                }
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "push-bench latency URL CHATS SECONDS RATE | push-bench idle URL CHATS SECONDS";
    let mode = args.get(1).expect(usage).clone();
    let base = args.get(2).expect(usage).trim_end_matches('/').to_owned();
    let chats: usize = args.get(3).expect(usage).parse().expect(usage);
    let seconds: u64 = args.get(4).expect(usage).parse().expect(usage);
    let rate: u64 = args.get(5).map_or(0, |r| r.parse().expect(usage));

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let mut open = Vec::with_capacity(chats);
    let batch = 32;
    for start in (0..chats).step_by(batch) {
        let n = batch.min(chats - start);
        let made = futures::future::join_all((0..n).map(|_| open_chat(&http, &base))).await;
        open.extend(made);
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let opened = Arc::new(AtomicU64::new(0));
    // Streams each on their own connection (as browsers would hold them).
    for chat in &open {
        let stream_client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        tokio::spawn(follow(
            stream_client,
            base.clone(),
            chat.clone(),
            Arc::clone(&seen),
            Arc::clone(&opened),
        ));
    }
    while opened.load(Ordering::Relaxed) < chats as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the agent's join and greeting events of every chat pass.
    tokio::time::sleep(Duration::from_secs(3)).await;
    seen.lock().await.latencies_ms.clear();

    if mode == "idle" {
        println!("ready");
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let s = seen.lock().await;
        println!(
            "{}",
            json!({"streams": chats, "heartbeats": s.heartbeats, "gaps": s.gaps, "duplicates": s.duplicates})
        );
        return;
    }

    let sent = Arc::new(AtomicU64::new(0));
    let every = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut tick = tokio::time::interval(every);
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut n = 0usize;
    while tokio::time::Instant::now() < end {
        tick.tick().await;
        let chat = open[n % open.len()].clone();
        n += 1;
        let http = http.clone();
        let base = base.clone();
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let body = json!({"operationName": "SendMessage", "userId": chat.user,
                "secureKey": chat.key, "alias": chat.alias, "tenantName": "Environment",
                "text": format!("question {n}")});
            let reply: Value = http
                .post(format!("{base}/api/v2/chats/{}", chat.id))
                .json(&body)
                .send()
                .await
                .expect("SendMessage")
                .json()
                .await
                .expect("SendMessage reply");
            if reply["statusCode"] == 0 {
                sent.fetch_add(1, Ordering::Relaxed);
            } else {
                eprintln!("SendMessage refused: {reply}");
            }
        });
    }
    // The last answers arrive after the agent's reply delay.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut s = seen.lock().await;
    s.latencies_ms.sort_unstable();
    let pct = |p: f64| {
        let v = &s.latencies_ms;
        if v.is_empty() {
            0
        } else {
            v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
        }
    };
    println!(
        "{}",
        json!({"streams": chats, "sent": sent.load(Ordering::Relaxed),
            "agent_messages": s.latencies_ms.len(), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "max_ms": s.latencies_ms.last().copied().unwrap_or(0),
            "gaps": s.gaps, "duplicates": s.duplicates})
    );
}
