//! `alloc-count`: allocations and bytes per request through the whole gateway application
//! (`webapi_gateway::app`, every layer, configured as `bench/run.sh` configures it: the
//! repository's `gateway.toml`, per-address and per-chat rate limits lifted, log level
//! `warn`), driven in process with `tower::ServiceExt::oneshot` on the embedded mock.
//!
//! Owns the counting global allocator and nothing else: it measures, it changes no gateway
//! behaviour. Counts are deterministic (no sockets, one thread): they are the measure the
//! request path is optimised against (`docs/benchmarks.md`, "Issue 17: the request path").
//! Each request is built before counting starts (hyper's parsing of the request is not the
//! gateway's cost) and counted from the call until its reply body has been read.
//!
//! `cargo run --release -p gateway-bench --bin alloc-count [-- ROUNDS]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use futures::FutureExt;
use http_body_util::BodyExt;
use tower::ServiceExt;
use webapi_gateway::{Config, Gateway};

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the allocator runs during thread teardown too.
    let _ = ON.try_with(|on| {
        if on.get() {
            ALLOCS.with(|a| a.set(a.get() + 1));
            BYTES.with(|b| b.set(b.get() + size as u64));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SECRET: &str = "bench-secret-0123456789abcdef0123456789";
const TEXT: &str = "Hello, I have a question about my order";

/// A chat as `bench/open_chats.py` records it.
struct Chat {
    id: String,
    user: String,
    key: String,
    alias: String,
    next: u64,
}

fn post(path: &str, body: String) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("host", "127.0.0.1:8080")
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(Body::from(body))
        .unwrap();
    // What `server` puts on every accepted request.
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    req
}

/// Runs one request; with `count`, returns (allocations, bytes) it cost, and its reply.
async fn run(app: &axum::Router, req: Request<Body>, count: bool) -> ((u64, u64), Vec<u8>) {
    let app = app.clone();
    ALLOCS.with(|a| a.set(0));
    BYTES.with(|b| b.set(0));
    ON.with(|on| on.set(count));
    let call = async move {
        let response = app.oneshot(req).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        drop(parts);
        bytes
    };
    // Polled once in place: on the mock nothing waits, so this is the whole request on this
    // thread, with no runtime task in between.
    let bytes = match call.now_or_never() {
        Some(bytes) => bytes,
        None => panic!("a request on the mock waited: the count would include other tasks"),
    };
    ON.with(|on| on.set(false));
    let counted = (ALLOCS.with(Cell::get), BYTES.with(Cell::get));
    (counted, bytes.to_vec())
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("a JSON reply")
}

fn request_chat() -> Request<Body> {
    post(
        "/api/v2/chats",
        r#"{"tenantName":"Environment","nickname":"bench","subject":"order","userData":{"orderId":"1234"}}"#.into(),
    )
}

fn creds(c: &Chat) -> String {
    format!(
        r#""userId":"{}","secureKey":"{}","alias":"{}","tenantName":"Environment""#,
        c.user, c.key, c.alias
    )
}

fn send_message(c: &Chat) -> Request<Body> {
    post(
        &format!("/api/v2/chats/{}", c.id),
        format!(
            r#"{{"operationName":"SendMessage",{},"text":"{TEXT}"}}"#,
            creds(c)
        ),
    )
}

fn get_messages(c: &Chat) -> Request<Body> {
    post(
        &format!("/api/v2/chats/{}/messages", c.id),
        format!(r#"{{{},"transcriptPosition":{}}}"#, creds(c), c.next),
    )
}

fn main() {
    let rounds: u64 = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("ROUNDS is a number"))
        .unwrap_or(500);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let spool = std::env::temp_dir().join(format!("alloc-count-{}", std::process::id()));
    let toml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../gateway.toml"))
        .expect("gateway.toml");
    let env = [
        ("GATEWAY__ADMIN__LISTEN", "127.0.0.1:0".to_string()),
        ("GATEWAY__LIMITS__PER_IP_PER_SECOND", "0".into()),
        ("GATEWAY__LIMITS__PER_CHAT_PER_SECOND", "0".into()),
        ("GATEWAY__LIMITS__CHAT_STARTS_PER_IP_PER_SECOND", "0".into()),
        ("GATEWAY__LIMITS__MAX_CONNECTIONS_PER_IP", "0".into()),
        ("GATEWAY__LIMITS__MAX_CONNECTIONS", "20000".into()),
        ("GATEWAY__EMAIL__SPOOL_DIR", spool.display().to_string()),
        ("GATEWAY__CREDENTIALS__SECRET", SECRET.into()),
        ("GATEWAY__MOCK__SESSION_LIMIT", "1000000".into()),
        ("GATEWAY__MOCK__DISCONNECT_TIMEOUT_SECS", "3600".into()),
        ("GATEWAY__LOG__LEVEL", "warn".into()),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let config = Config::from_toml_str_with_env(&toml, env).expect("the bench configuration");
    let _guard = rt.enter();
    // The Prometheus recorder the binary installs, so metrics cost what they cost there.
    webapi_gateway::telemetry::handle();
    let gateway = Gateway::new(config).expect("the gateway starts");
    let app = webapi_gateway::app(Arc::clone(&gateway));

    rt.block_on(async {
        // Open chats (uncounted), then warm every path once per chat: metric handles,
        // per-label caches and first-use statics are not per-request costs.
        let mut chats = Vec::new();
        for _ in 0..64 {
            let (_, reply) = run(&app, request_chat(), false).await;
            let r = json(&reply);
            assert_eq!(r["statusCode"], 0, "Request Chat: {r}");
            chats.push(Chat {
                id: r["chatId"].as_str().unwrap().into(),
                user: r["userId"].as_str().unwrap().into(),
                key: r["secureKey"].as_str().unwrap().into(),
                alias: r["alias"].as_str().unwrap().into(),
                next: 1,
            });
        }
        let mut totals = [(0u64, 0u64); 3];
        for round in 0..=rounds {
            let count = round > 0;
            let c = &mut chats[(round % 64) as usize];
            let ((a, b), reply) = run(&app, send_message(c), count).await;
            let r = json(&reply);
            assert_eq!(r["statusCode"], 0, "SendMessage: {r}");
            totals[0].0 += a;
            totals[0].1 += b;
            let ((a, b), reply) = run(&app, get_messages(c), count).await;
            let r = json(&reply);
            assert_eq!(r["statusCode"], 0, "Get Messages: {r}");
            if let Some(next) = r["nextPosition"].as_u64() {
                c.next = next;
            }
            totals[1].0 += a;
            totals[1].1 += b;
            let ((a, b), reply) = run(&app, request_chat(), count).await;
            assert_eq!(json(&reply)["statusCode"], 0);
            totals[2].0 += a;
            totals[2].1 += b;
        }
        println!("requests counted: {rounds} of each, after one warm-up round");
        println!("{:<14} {:>12} {:>14}", "request", "allocs/req", "bytes/req");
        for (name, (a, b)) in ["SendMessage", "Get Messages", "Request Chat"]
            .iter()
            .zip(totals)
        {
            println!(
                "{:<14} {:>12.1} {:>14.0}",
                name,
                a as f64 / rounds as f64,
                b as f64 / rounds as f64
            );
        }
    });
    let _ = std::fs::remove_dir_all(&spool);
}
