//! The official CometD JavaScript client (npm `cometd`, in `tests/clients/node_modules`) in a
//! real Chromium chats over `/genesys/cometd` through a round-robin proxy that sends each
//! request to the other of two gateway replicas (no affinity), over two chat servers
//! sharing Redis, one of which is killed (-9) mid-chat. The page is served from its own
//! origin (credentialed cross-origin XHRs and cookies). It never polls: every event comes
//! through the client's held `/meta/connect`. Every transcript index is counted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::Mutex;
use serde_json::Value;

use super::browser::{here, page, page_result, require_parts, run_node, serve_origin};
use crate::common::cluster::{all_accepting, Cluster, FAST};
use crate::common::gateway;

const PAGE: &str = include_str!("widget/cometd.html");
const SERVICE: &str = "widget";
const MESSAGES: usize = 4;

fn cometd_module() -> PathBuf {
    here().join("node_modules/cometd")
}

/// Serves the page and the `cometd` module's files on its own port: another origin than
/// the proxy's.
async fn serve_page() -> String {
    assert!(
        cometd_module().join("cometd.js").is_file(),
        "this test needs the npm package cometd in {}, which is not installed here: run \
         `npm ci` in tests/clients",
        cometd_module().display()
    );
    serve_origin(page(PAGE).route(
        "/cometd/{file}",
        get(|Path(file): Path<String>| async move {
            let ok = file.ends_with(".js") && !file.contains("..") && !file.contains('/');
            match std::fs::read(cometd_module().join(&file)) {
                Ok(bytes) if ok => {
                    ([(header::CONTENT_TYPE, "text/javascript")], bytes).into_response()
                }
                _ => StatusCode::NOT_FOUND.into_response(),
            }
        }),
    ))
    .await
}

/// A load balancer without affinity: request n goes to replica n mod 2. It records each
/// request's path and replica, the chat's first alias, and when the page's first message
/// went through.
struct Proxy {
    bases: Vec<String>,
    turn: AtomicUsize,
    http: reqwest::Client,
    log: Mutex<Vec<(String, usize)>>,
    first_alias: Mutex<Option<String>>,
    first_message: tokio::sync::Notify,
    messages_seen: AtomicUsize,
}

const HOP_BY_HOP: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
];

async fn forward(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    let n = proxy.turn.fetch_add(1, Ordering::SeqCst) % proxy.bases.len();
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/".to_owned(), |p| p.to_string());
    proxy.log.lock().push((path.clone(), n));
    let mut out = proxy
        .http
        .request(parts.method.clone(), format!("{}{path}", proxy.bases[n]));
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            out = out.header(name, value);
        }
    }
    let sends_message = String::from_utf8_lossy(&bytes).contains("\"sendMessage\"");
    let Ok(resp) = out.body(bytes).send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap_or_default();
    if let Ok(Value::Array(replies)) = serde_json::from_slice::<Value>(&body) {
        let alias = replies
            .iter()
            .find_map(|m| m.pointer("/data/alias").and_then(Value::as_str));
        if let Some(alias) = alias {
            proxy
                .first_alias
                .lock()
                .get_or_insert_with(|| alias.to_owned());
        }
    }
    if sends_message && proxy.messages_seen.fetch_add(1, Ordering::SeqCst) == 0 {
        proxy.first_message.notify_one();
    }
    let mut response = (status, body).into_response();
    for (name, value) in &headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

async fn serve_proxy(proxy: Arc<Proxy>) -> String {
    serve_origin(axum::Router::new().fallback(forward).with_state(proxy)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_cometd_client_chats_across_alternating_replicas_and_a_kill_9() {
    require_parts();
    let page = serve_page().await;
    let mut cluster = Cluster::start(&["1", "2"]);
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let gw = gateway()
            .aliases(&[])
            .cors_origins(&[&page])
            .toml(&cluster.instances(&[]))
            .toml(FAST)
            .toml(&format!(
                "[[gms.services]]\nname = \"{SERVICE}\"\ntenant = \"Environment\"\n"
            ))
            .start()
            .await;
        all_accepting(&gw).await;
        replicas.push(gw);
    }
    let proxy = Arc::new(Proxy {
        bases: replicas.iter().map(|g| g.base.clone()).collect(),
        turn: AtomicUsize::new(0),
        http: reqwest::Client::new(),
        log: Mutex::new(Vec::new()),
        first_alias: Mutex::new(None),
        first_message: tokio::sync::Notify::new(),
        messages_seen: AtomicUsize::new(0),
    });
    let base = serve_proxy(Arc::clone(&proxy)).await;

    let mut browser = run_node(
        "cometd.mjs",
        vec![
            format!("{page}/"),
            base.clone(),
            SERVICE.into(),
            MESSAGES.to_string(),
        ],
    );
    // Once the page's first message went through, the chat server holding the chat dies.
    let early = tokio::select! {
        _ = proxy.first_message.notified() => None,
        done = &mut browser => Some(done.unwrap()),
        _ = tokio::time::sleep(Duration::from_secs(60)) => panic!("the page sent no message: {:?}", proxy.log.lock()),
    };
    if let Some(output) = early {
        panic!(
            "the page ended before its first message: {} {}\n{:?}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            proxy.log.lock()
        );
    }
    let victim = proxy.first_alias.lock().clone().expect("the chat's alias");
    cluster.server(&victim).kill9();
    let killed = Instant::now();

    let output = browser.await.unwrap();
    println!("the page finished {:?} after the kill", killed.elapsed());
    let seen = page_result(&output);

    assert_eq!(seen["transport"], "long-polling", "{seen:#}");
    assert_eq!(seen["chatEnded"], true, "{seen:#}");
    assert_eq!(seen["consoleErrors"], serde_json::json!([]), "{seen:#}");
    // Every index once, from 1, no gap.
    let indexes = seen["indexes"].as_object().expect("indexes");
    let mut counted: Vec<(u64, u64)> = indexes
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), v.as_u64().unwrap()))
        .collect();
    counted.sort();
    let doubled: Vec<_> = counted.iter().filter(|(_, n)| *n != 1).collect();
    assert!(
        doubled.is_empty(),
        "sent more than once: {doubled:?} {seen:#}"
    );
    let last = counted.last().expect("events").0;
    assert_eq!(counted.len() as u64, last, "a gap in {counted:?}");
    let customer: Vec<String> = (1..=MESSAGES)
        .map(|i| format!("browser message {i}"))
        .collect();
    assert_eq!(
        seen["customerTexts"],
        serde_json::json!(customer),
        "{seen:#}"
    );
    assert!(
        seen["agentTexts"].as_array().unwrap().len() > MESSAGES,
        "the greeting and an answer per message: {seen:#}"
    );
    let aliases: Vec<&str> = seen["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        aliases.iter().any(|a| *a != victim),
        "the chat moved off {victim}, and the page was told: {seen:#}"
    );
    // No affinity, and no polling: only CometD requests, alternating over both replicas,
    // held connects on both.
    let log = proxy.log.lock();
    assert!(
        log.iter()
            .all(|(path, _)| path.starts_with("/genesys/cometd")),
        "{log:?}"
    );
    for replica in 0..2 {
        let connects = log
            .iter()
            .filter(|(path, n)| *n == replica && path.ends_with("/connect"))
            .count();
        assert!(connects > 0, "replica {replica} held no connect: {log:?}");
    }
    println!(
        "{} requests over 2 replicas; {} events, each once; statusCode 1 retries: {}",
        log.len(),
        counted.len(),
        seen["retries"]
    );
}
