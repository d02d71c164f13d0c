//! What an operator relies on and an attacker tries first: metrics, health and readiness,
//! request ids, CORS, and every limit, over real sockets.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU64;
use std::time::Duration;

use common::{eventually, gateway, Client, TestGateway};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LONG: Duration = Duration::from_secs(20);

/// Sums the samples of `name` whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(gw: &TestGateway) -> String {
    let resp = reqwest::get(format!("{}/metrics", gw.admin)).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

async fn get(url: &str) -> (u16, Value) {
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// A client whose connections come from another loopback address: "another client".
fn client_from(gw: &TestGateway, last: u8) -> Client {
    Client {
        base: gw.base.clone(),
        http: reqwest::Client::builder()
            .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
            .build()
            .unwrap(),
    }
}

fn addr(gw: &TestGateway) -> String {
    gw.base.trim_start_matches("http://").to_string()
}

/// Reads whatever the server sends until it closes the connection (or errs).
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn metrics_move_when_requests_happen() {
    let gw = gateway().start().await;
    let c = gw.client();
    let chat = c.request_chat("Ann").await;
    let before = scrape(&gw).await;
    let sent = |t: &str| {
        metric(
            t,
            "gateway_http_requests_total",
            &[
                ("route", "/api/v2/chats/{chat_id}"),
                ("operation", "SendMessage"),
                ("status_code", "0"),
            ],
        )
    };
    let calls = |t: &str| {
        metric(
            t,
            "gateway_backend_requests_total",
            &[("alias", &chat.alias), ("call", "refresh")],
        )
    };
    for _ in 0..3 {
        let r = c.op(&chat, "SendMessage", json!({"text": "hi"})).await;
        assert_eq!(r.status_code(), 0);
    }
    let bad = c
        .post(
            "/api/v2/chats",
            json!({"tenantName": "Nope", "nickname": "x"}),
        )
        .await;
    bad.assert_error(400, 2, 130);
    let after = scrape(&gw).await;
    assert!(sent(&after) - sent(&before) >= 3.0, "{after}");
    assert!(calls(&after) - calls(&before) >= 3.0, "{after}");
    assert!(
        metric(
            &after,
            "gateway_http_requests_total",
            &[
                ("operation", "RequestChat"),
                ("status_code", "2"),
                ("http_status", "400")
            ]
        ) >= 1.0
    );
    assert!(
        metric(
            &after,
            "gateway_http_request_duration_seconds_count",
            &[("route", "/api/v2/chats/{chat_id}")]
        ) >= 3.0
    );
    assert!(metric(&after, "gateway_open_chats", &[("alias", &chat.alias)]) >= 1.0);
    assert_eq!(
        metric(
            &after,
            "gateway_backend_accepting",
            &[("alias", &chat.alias)]
        ),
        1.0
    );
    for name in [
        "gateway_email_spool_depth",
        "gateway_email_delivery_failures_total",
    ] {
        assert!(after.contains(name), "{name} missing");
    }
}

#[tokio::test]
async fn admin_token_guards_metrics_but_not_health() {
    let gw = gateway()
        .env("GATEWAY__ADMIN__TOKEN", "0123456789abcdef-token")
        .start()
        .await;
    let (status, body) = get(&format!("{}/metrics", gw.admin)).await;
    assert_eq!(
        (status, body["errors"][0]["code"].as_i64()),
        (401, Some(203))
    );
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", gw.admin))
        .bearer_auth("0123456789abcdef-wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", gw.admin))
        .bearer_auth("0123456789abcdef-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("gateway_"));
    assert_eq!(get(&format!("{}/healthz", gw.admin)).await.0, 200);
    // The public listener has no /metrics while the admin listener runs.
    assert_eq!(get(&format!("{}/metrics", gw.base)).await.0, 404);
}

#[tokio::test]
async fn readiness_holds_while_chats_can_be_served_and_flips_when_none_can() {
    const TOKEN: &str = "0123456789abcdef-token";
    let gw = gateway()
        .behaviour(|b| b.session_limit = NonZeroU64::new(1).unwrap())
        .env("GATEWAY__ADMIN__TOKEN", TOKEN)
        .start()
        .await;
    let (status, body) = get(&format!("{}/healthz", gw.base)).await;
    assert_eq!((status, &body["status"]), (200, &json!("ok")));
    let (status, body) = get(&format!("{}/readyz", gw.base)).await;
    assert_eq!((status, &body["status"]), (200, &json!("ready")));
    let c = gw.client();
    let first = c.request_chat("a").await;
    let _second = c.request_chat("b").await;
    // Every instance full: new chats are refused, but the gateway stays ready, since the
    // chats it has must keep reaching it (issue 13: fullness is not unreadiness).
    c.post(
        "/api/v2/chats",
        json!({"tenantName": "Environment", "nickname": "c"}),
    )
    .await
    .assert_error(503, 1, 300);
    let (status, body) = get(&format!("{}/readyz", gw.base)).await;
    assert_eq!((status, &body["status"]), (200, &json!("ready")), "{body}");
    assert_eq!(c.messages(&first, None).await.status_code(), 0);
    // No instance can serve a chat (both in maint): not ready, and the reason names them.
    let admin = reqwest::Client::new();
    for alias in ["117", "118"] {
        let r = admin
            .put(format!("{}/admin/instances/{alias}/state", gw.admin))
            .bearer_auth(TOKEN)
            .json(&json!({"state": "maint"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let (status, body) = get(&format!("{}/readyz", gw.base)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["statusCode"], 1);
    assert_eq!(body["errors"][0]["code"], 305);
    let reason = body["errors"][0]["message"].as_str().unwrap();
    assert!(reason.contains("117") && reason.contains("118"), "{reason}");
    // Still alive.
    assert_eq!(get(&format!("{}/healthz", gw.base)).await.0, 200);
    // One instance back: ready again.
    admin
        .put(format!("{}/admin/instances/117/state", gw.admin))
        .bearer_auth(TOKEN)
        .json(&json!({"state": "ready"}))
        .send()
        .await
        .unwrap();
    eventually("ready again", LONG, || async {
        (get(&format!("{}/readyz", gw.base)).await.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn request_ids_are_taken_or_made_and_returned() {
    let gw = gateway().start().await;
    let url = format!("{}/api/v2/chats", gw.base);
    let body = r#"{"tenantName":"Environment","nickname":"n"}"#;
    let http = reqwest::Client::new();
    let resp = http
        .post(&url)
        .header("x-request-id", "abc-123")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    let resp = http.post(&url).body(body).send().await.unwrap();
    let made = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made.len(), 36, "{made}");
    // Refusals carry one too; an id that is too long is replaced.
    let resp = http
        .post(&url)
        .header("x-request-id", "x".repeat(500))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-request-id"].len(), 36);
}

#[tokio::test]
async fn cors_allows_listed_origins_and_refuses_others() {
    let gw = gateway()
        .cors_origins(&["https://shop.example.com", "https://*.widgets.example.net"])
        .start()
        .await;
    let http = reqwest::Client::new();
    let preflight = |origin: &str| {
        http.request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v2/chats/0001abc", gw.base),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-api-key,gms_user",
        )
        .send()
    };
    for origin in ["https://shop.example.com", "https://eu.widgets.example.net"] {
        let resp = preflight(origin).await.unwrap();
        assert_eq!(resp.status(), 200, "{origin}");
        let h = resp.headers();
        assert_eq!(h["access-control-allow-origin"], origin);
        let allowed = h["access-control-allow-headers"].to_str().unwrap();
        assert!(
            allowed.contains("x-api-key") && allowed.contains("gms_user"),
            "{allowed}"
        );
        assert!(h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST"));
    }
    for origin in [
        "https://evil.example.com",
        "https://widgets.example.net",
        "null",
    ] {
        let resp = preflight(origin).await.unwrap();
        assert_eq!(resp.status(), 403, "{origin}");
        assert!(resp.headers().get("access-control-allow-origin").is_none());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], 420);
    }
    // Preflights never reach a backend.
    assert_eq!(gw.backend_requests(), 0);
    // The real request: allowed with the header, refused from elsewhere.
    let body = r#"{"tenantName":"Environment","nickname":"n"}"#;
    let url = format!("{}/api/v2/chats", gw.base);
    let resp = http
        .post(&url)
        .header("origin", "https://shop.example.com")
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    let resp = http
        .post(&url)
        .header("origin", "https://evil.example.com")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // No Origin: not a browser's cross-origin request.
    let resp = http.post(&url).body(body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn large_headers_get_431_and_others_are_still_served() {
    let gw = gateway()
        .env("GATEWAY__LIMITS__MAX_HEADER_BYTES", "2048")
        .start()
        .await;
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v2/chats", gw.base))
        .header("x-filler", "a".repeat(3000))
        .body(r#"{"tenantName":"Environment","nickname":"n"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (
            body["statusCode"].as_i64(),
            body["errors"][0]["code"].as_i64()
        ),
        (Some(2), Some(410))
    );
    // Far past the limit, hyper refuses before parsing (still a 431).
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v2/chats", gw.base))
        .header("x-filler", "a".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    gw.client().request_chat("still here").await;
}

#[tokio::test]
async fn body_limit_refuses_and_others_are_still_served() {
    let gw = gateway()
        .env("GATEWAY__SERVER__MAX_BODY_BYTES", "1024")
        .start()
        .await;
    let c = gw.client();
    let big = json!({"tenantName": "Environment", "nickname": "x".repeat(2000)});
    c.post("/api/v2/chats", big).await.assert_error(413, 2, 111);
    c.request_chat("small").await;
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed() {
    let gw = gateway()
        .env("GATEWAY__LIMITS__HEADER_READ_TIMEOUT_MS", "300")
        .start()
        .await;
    // Slowloris: half a request head, then nothing.
    let mut slow = TcpStream::connect(addr(&gw)).await.unwrap();
    slow.write_all(b"POST /api/v2/chats HTTP/1.1\r\nHost: x\r\nX-A: ")
        .await
        .unwrap();
    // Idle: connected, never a byte.
    let mut idle = TcpStream::connect(addr(&gw)).await.unwrap();
    // Meanwhile another client is served.
    gw.client().request_chat("other").await;
    tokio::time::timeout(LONG, read_until_closed(&mut slow))
        .await
        .expect("the slow connection is closed");
    tokio::time::timeout(LONG, read_until_closed(&mut idle))
        .await
        .expect("the idle connection is closed");
}

#[tokio::test]
async fn connections_past_the_cap_get_503_then_service_resumes() {
    let gw = gateway()
        .env("GATEWAY__LIMITS__MAX_CONNECTIONS", "2")
        .start()
        .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(addr(&gw)).await.unwrap());
    }
    // The server accepts in order, so by the time this one is answered the two are held.
    let mut third = TcpStream::connect(addr(&gw)).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let reply = tokio::time::timeout(LONG, read_until_closed(&mut third))
        .await
        .unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains(r#""code":411"#), "{reply}");
    drop(held);
    eventually("a slot frees up", LONG, || async {
        let resp = reqwest::get(format!("{}/healthz", gw.base)).await.ok()?;
        (resp.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn per_ip_rate_limit_answers_429_and_other_clients_go_on() {
    let gw = gateway()
        .env("GATEWAY__LIMITS__PER_IP_PER_SECOND", "1")
        .env("GATEWAY__LIMITS__PER_IP_BURST", "3")
        .start()
        .await;
    let c = gw.client();
    let mut refused = None;
    for i in 0..20 {
        let r = c
            .post(
                "/api/v2/chats",
                json!({"tenantName": "Environment", "nickname": "n"}),
            )
            .await;
        if r.http == 429 {
            refused = Some((i, r));
            break;
        }
    }
    let (i, r) = refused.expect("a 429 within 20 requests");
    assert!(i >= 3, "the burst of 3 was allowed, refused at {i}");
    r.assert_error(429, 1, 400);
    // Another address is not held up.
    client_from(&gw, 2).request_chat("other").await;
}

#[tokio::test]
async fn per_chat_rate_limit_answers_429_and_other_chats_go_on() {
    let gw = gateway()
        .env("GATEWAY__LIMITS__PER_CHAT_PER_SECOND", "1")
        .env("GATEWAY__LIMITS__PER_CHAT_BURST", "2")
        .start()
        .await;
    let c = gw.client();
    let busy = c.request_chat("busy").await;
    let quiet = c.request_chat("quiet").await;
    let mut refused = None;
    for _ in 0..20 {
        let r = c.messages(&busy, Some(0)).await;
        if r.http == 429 {
            refused = Some(r);
            break;
        }
    }
    refused
        .expect("a 429 within 20 polls")
        .assert_error(429, 1, 401);
    assert_eq!(c.messages(&quiet, Some(0)).await.status_code(), 0);
}

#[tokio::test]
async fn repeated_bad_credentials_are_throttled_per_chat_and_client() {
    let gw = gateway()
        .env("GATEWAY__LIMITS__BAD_CREDENTIALS_BURST", "2")
        .env("GATEWAY__LIMITS__BAD_CREDENTIALS_PERIOD_SECS", "3600")
        .start()
        .await;
    let c = gw.client();
    let chat = c.request_chat("victim").await;
    let mut wrong = chat.clone();
    wrong.secure_key = chat
        .secure_key
        .replace(|ch: char| ch.is_ascii_hexdigit(), "0");
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(c.messages(&wrong, Some(0)).await.error_code());
    }
    // Exactly the burst of 2 is answered 401 (issue 13: it used to let burst + 1 through).
    assert_eq!(codes, [200, 200, 402, 402], "checked twice, then throttled");
    c.messages(&wrong, Some(0)).await.assert_error(429, 1, 402);
    // The customer on the same address (behind the same NAT as whoever sent the wrong
    // keys) still gets through with the right key: only failing keys are throttled.
    for _ in 0..3 {
        assert_eq!(c.messages(&chat, Some(0)).await.status_code(), 0);
        c.messages(&wrong, Some(0)).await.assert_error(429, 1, 402);
    }
    // Other addresses and other chats are not affected.
    assert_eq!(
        client_from(&gw, 3)
            .messages(&chat, Some(0))
            .await
            .status_code(),
        0
    );
    let other = c.request_chat("other").await;
    assert_eq!(c.messages(&other, Some(0)).await.status_code(), 0);
}

#[tokio::test]
async fn the_request_id_reaches_the_adapter() {
    use tower::ServiceExt;
    let seen = testkit::ScriptedBackend::new();
    seen.create
        .always(Some(Err(backend_api::BackendError::Unreachable(
            "test".into(),
        ))));
    let backend: std::sync::Arc<dyn backend_api::ChatBackend> = seen.clone();
    let config = gateway().config();
    let gw = webapi_gateway::Gateway::with_backends(
        config,
        vec![("117".into(), backend.clone()), ("118".into(), backend)],
    )
    .expect("gateway starts");
    let request = axum::http::Request::post("/api/v2/chats")
        .header("x-request-id", "trace-me-42")
        .body(axum::body::Body::from(
            r#"{"tenantName":"Environment","nickname":"n"}"#,
        ))
        .unwrap();
    let response = webapi_gateway::app(gw).oneshot(request).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    // The chat is offered to each instance in turn (both refuse): every call carries the id.
    let seen: Vec<Option<String>> = seen.received().into_iter().map(|r| r.request_id).collect();
    assert!(!seen.is_empty(), "the adapter was called");
    assert!(
        seen.iter().all(|id| id.as_deref() == Some("trace-me-42")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_others_are_still_served() {
    let gw = gateway()
        .env("GATEWAY__LIMITS__BODY_READ_TIMEOUT_MS", "300")
        .start()
        .await;
    let mut slow = TcpStream::connect(addr(&gw)).await.unwrap();
    slow.write_all(
        b"POST /api/v2/chats HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"tenantName\":",
    )
    .await
    .unwrap();
    gw.client().request_chat("other").await;
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    let reply = tokio::time::timeout(LONG, async {
        while !String::from_utf8_lossy(&reply).contains(r#""code":"#) {
            let n = slow.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed without a reply");
            reply.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&reply).to_string()
    })
    .await
    .expect("a reply");
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains(r#""code":412"#), "{reply}");
}

#[tokio::test]
async fn every_reply_says_nosniff() {
    let gw = gateway()
        .cors_origins(&["https://shop.example.com"])
        .env("GATEWAY__LIMITS__PER_IP_PER_SECOND", "1")
        .env("GATEWAY__LIMITS__PER_IP_BURST", "6")
        .start()
        .await;
    let http = reqwest::Client::new();
    let chats = format!("{}/api/v2/chats", gw.base);
    let body = r#"{"tenantName":"Environment","nickname":"n"}"#;
    let mut replies = vec![
        http.post(&chats).body(body).send().await.unwrap(),
        http.post(&chats).body("{").send().await.unwrap(),
        http.get(format!("{}/nowhere", gw.base))
            .send()
            .await
            .unwrap(),
        http.request(reqwest::Method::OPTIONS, &chats)
            .header("origin", "https://shop.example.com")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap(),
        http.post(&chats)
            .header("origin", "https://evil.example.com")
            .body(body)
            .send()
            .await
            .unwrap(),
        http.get(format!("{}/metrics", gw.admin))
            .send()
            .await
            .unwrap(),
        http.get(format!("{}/admin/instances", gw.admin))
            .send()
            .await
            .unwrap(),
    ];
    // And a limit's refusal.
    loop {
        let r = http.post(&chats).body(body).send().await.unwrap();
        if r.status() == 429 {
            replies.push(r);
            break;
        }
    }
    for r in replies {
        assert_eq!(
            r.headers()
                .get("x-content-type-options")
                .map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{} {}",
            r.url(),
            r.status()
        );
    }
}

#[tokio::test]
async fn preflights_and_refused_origins_count_against_the_per_address_limit() {
    let gw = gateway()
        .cors_origins(&["https://shop.example.com"])
        .env("GATEWAY__LIMITS__PER_IP_PER_SECOND", "1")
        .env("GATEWAY__LIMITS__PER_IP_BURST", "4")
        .start()
        .await;
    let http = reqwest::Client::new();
    let chats = format!("{}/api/v2/chats", gw.base);
    let preflight = || {
        http.request(reqwest::Method::OPTIONS, &chats)
            .header("origin", "https://shop.example.com")
            .header("access-control-request-method", "POST")
            .send()
    };
    let refused_origin = || {
        http.post(&chats)
            .header("origin", "https://evil.example.com")
            .body("{}")
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(preflight().await.unwrap().status().as_u16());
        statuses.push(refused_origin().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 403, 200, 403]);
    // The burst of 4 is spent: a preflight is now refused, and its refusal still carries
    // the allowed origin, so the widget's page can read it.
    let r = eventually("a 429", LONG, || async {
        let r = preflight().await.unwrap();
        (r.status() == 429).then_some(r)
    })
    .await;
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], 400);
    let r = eventually("a 429 for a refused origin", LONG, || async {
        let r = refused_origin().await.unwrap();
        (r.status() == 429).then_some(r)
    })
    .await;
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn without_an_admin_listener_or_a_token_metrics_are_not_served() {
    let gw = gateway()
        .env("GATEWAY__ADMIN__ENABLED", "false")
        .start()
        .await;
    assert_eq!(get(&format!("{}/metrics", gw.base)).await.0, 404);
}

#[tokio::test]
async fn without_an_admin_listener_metrics_are_public_behind_the_token() {
    let gw = gateway()
        .env("GATEWAY__ADMIN__ENABLED", "false")
        .env("GATEWAY__ADMIN__TOKEN", "0123456789abcdef-token")
        .start()
        .await;
    assert!(gw.admin.is_empty());
    assert_eq!(get(&format!("{}/metrics", gw.base)).await.0, 401);
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", gw.base))
        .bearer_auth("0123456789abcdef-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("gateway_http_requests_total"));
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight() {
    // The first `create` waits until released (later calls pass at once).
    let gate = testkit::ScriptedBackend::new();
    gate.create
        .always(Some(Err(backend_api::BackendError::Overloaded(
            "released".into(),
        ))));
    gate.pause_creates();
    let backend: std::sync::Arc<dyn backend_api::ChatBackend> = gate.clone();
    let config = gateway().config();
    let gw = webapi_gateway::Gateway::with_backends(
        config,
        vec![("117".into(), backend.clone()), ("118".into(), backend)],
    )
    .expect("gateway starts");
    let listener = webapi_gateway::server::bind(&gw.config.server)
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(webapi_gateway::server::serve_with(
        listener,
        None,
        std::sync::Arc::clone(&gw),
        async {
            let _ = stopped.await;
        },
    ));
    let client = Client {
        base,
        http: reqwest::Client::new(),
    };
    let in_flight = tokio::spawn(async move {
        client
            .post(
                "/api/v2/chats",
                json!({"tenantName": "Environment", "nickname": "n"}),
            )
            .await
    });
    gate.paused_call().await;
    stop.send(()).unwrap();
    // Shutdown has begun (readiness says so) while the request is still at the backend.
    eventually("shutdown to start", LONG, || async {
        gw.readiness()
            .err()
            .filter(|why| why.contains("shutting down"))
    })
    .await;
    gate.resume();
    let reply = in_flight.await.unwrap();
    reply.assert_error(503, 1, 304);
    tokio::time::timeout(LONG, server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}
