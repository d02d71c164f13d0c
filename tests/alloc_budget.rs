//! The request path's allocation budget (issue 17): a SendMessage and a Get Messages through
//! the whole application in process (`app`: every layer, the operation, the embedded mock),
//! counted by a counting global allocator. The count is deterministic (the request runs to
//! its end in one poll on this thread, no sockets), so a change that puts back a boxed layer,
//! a per-key `String` in the parse or a copied header fails here rather than only showing in
//! a benchmark. The budgets leave room above today's counts; `docs/benchmarks.md` ("Issue 17:
//! the request path") has the figures, and `bench/src/bin/alloc-count.rs` measures them as
//! `bench/run.sh` configures the gateway.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use axum::body::Body;
use axum::http::Request;
use futures::FutureExt;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn count() {
    let _ = ON.try_with(|on| {
        if on.get() {
            ALLOCS.with(|a| a.set(a.get() + 1));
        }
    });
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Most allocations a SendMessage on an open chat may make (146 before issue 17, 57 after).
const SEND_MESSAGE_BUDGET: u64 = 72;
/// Most allocations a Get Messages may make (142 before issue 17, 54 after).
const GET_MESSAGES_BUDGET: u64 = 70;

/// Runs one request to its end in one poll on this thread; its allocations when `counted`.
fn run(app: &axum::Router, path: &str, body: String, counted: bool) -> (u64, Value) {
    let mut req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    // What the server puts on every accepted request.
    req.extensions_mut().insert(axum::extract::ConnectInfo(
        "127.0.0.1:40000".parse::<std::net::SocketAddr>().unwrap(),
    ));
    let app = app.clone();
    ALLOCS.with(|a| a.set(0));
    ON.with(|on| on.set(counted));
    let reply = async move {
        let reply = app.oneshot(req).await.unwrap();
        reply.into_body().collect().await.unwrap().to_bytes()
    }
    .now_or_never();
    ON.with(|on| on.set(false));
    let reply = reply.expect("a request on the mock finishes in one poll");
    (
        ALLOCS.with(Cell::get),
        serde_json::from_slice(&reply).unwrap(),
    )
}

#[test]
fn send_message_and_get_messages_stay_within_their_allocation_budgets() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = rt.enter();
    // The recorder the binary installs: metrics cost what they cost there.
    webapi_gateway::telemetry::handle();
    let gw = common::gateway().in_process();
    let (_, chat) = run(
        &gw.app,
        "/api/v2/chats",
        r#"{"tenantName":"Environment","nickname":"budget"}"#.into(),
        false,
    );
    assert_eq!(chat["statusCode"], 0, "{chat}");
    let creds = format!(
        r#""userId":"{}","secureKey":"{}","alias":"{}","tenantName":"Environment""#,
        chat["userId"].as_str().unwrap(),
        chat["secureKey"].as_str().unwrap(),
        chat["alias"].as_str().unwrap(),
    );
    let path = format!("/api/v2/chats/{}", chat["chatId"].as_str().unwrap());
    let messages = format!("{path}/messages");
    let mut next = 1;
    let (mut send, mut get) = (Vec::new(), Vec::new());
    // The first round warms what is made once (metric handles, interned route labels).
    for round in 0..6 {
        let body = format!(r#"{{"operationName":"SendMessage",{creds},"text":"message {round}"}}"#);
        let (n, reply) = run(&gw.app, &path, body, round > 0);
        assert_eq!(reply["statusCode"], 0, "{reply}");
        send.push(n);
        let body = format!(r#"{{{creds},"transcriptPosition":{next}}}"#);
        let (n, reply) = run(&gw.app, &messages, body, round > 0);
        assert_eq!(reply["statusCode"], 0, "{reply}");
        next = reply["nextPosition"].as_u64().unwrap();
        get.push(n);
    }
    println!("allocations per request (round 0 warms up, uncounted): SendMessage {send:?}, Get Messages {get:?}");
    let (send, get) = (&send[1..], &get[1..]);
    assert!(
        send.iter().all(|&n| n <= SEND_MESSAGE_BUDGET),
        "SendMessage allocated {send:?}, budget {SEND_MESSAGE_BUDGET}"
    );
    assert!(
        get.iter().all(|&n| n <= GET_MESSAGES_BUDGET),
        "Get Messages allocated {get:?}, budget {GET_MESSAGES_BUDGET}"
    );
}
