//! The hostile-client review's attacks on connections, bodies and sessions (issue 13,
//! findings 2 and 4 and the edge's part of 7), each replayed over real sockets against a
//! gateway configured small, so every test is bounded by seconds.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU64;
use std::time::Duration;

use common::gms::GmsClient;
use common::{eventually, gateway, Client, TestGateway};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const LONG: Duration = Duration::from_secs(20);

const SERVICE: &str = "[[gms.services]]\nname = \"customer-support\"\ntenant = \"Environment\"\n";

/// A gateway whose bodies get 400 ms at any pace, then must carry 1000 bytes/s, and at most
/// 2 s in all.
fn paced() -> common::GatewayBuilder {
    gateway()
        .toml(SERVICE)
        .env("GATEWAY__LIMITS__BODY_READ_TIMEOUT_MS", "400")
        .env("GATEWAY__LIMITS__BODY_MIN_BYTES_PER_SEC", "1000")
        .env("GATEWAY__LIMITS__BODY_READ_MAX_MS", "2000")
}

fn addr(gw: &TestGateway) -> SocketAddr {
    gw.base.trim_start_matches("http://").parse().unwrap()
}

/// A connection from another loopback address (127.0.0.`last`): "another client".
async fn connect_from(gw: &TestGateway, last: u8) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
            0,
        ))
        .unwrap();
    socket.connect(addr(gw)).await.unwrap()
}

fn client_from(gw: &TestGateway, last: u8) -> Client {
    Client {
        base: gw.base.clone(),
        http: reqwest::Client::builder()
            .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
            .build()
            .unwrap(),
    }
}

/// Reads one reply (head and a JSON body) or whatever came before the connection closed.
async fn read_reply<R: tokio::io::AsyncRead + Unpin>(s: &mut R) -> String {
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&reply);
        if let Some(at) = text.find("\r\n\r\n") {
            if text[at..].trim_end().ends_with('}') {
                return text.into_owned();
            }
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&reply).into_owned(),
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends a request head announcing a 10 000-byte body and its first bytes, then one more
/// byte every 100 ms (the review's trickle, sped up) until the gateway answers; returns the
/// reply. The trickle never stops by itself, so only the body's pace can end it.
async fn trickle(gw: &TestGateway, path: &str, content_type: &str, first: &str) -> String {
    let mut s = TcpStream::connect(addr(gw)).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
         Content-Length: 10000\r\n\r\n{first}"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = s.into_split();
    let dripping = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            if write.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    let reply = tokio::time::timeout(LONG, read_reply(&mut read))
        .await
        .expect("an answer while the body still trickles");
    dripping.abort();
    reply
}

fn multipart_head(name: &str) -> String {
    format!("--XYZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\nab")
}

#[tokio::test]
async fn trickled_bodies_get_408_in_every_reader_while_others_are_served() {
    let gw = paced().start().await;
    let multipart = "multipart/form-data; boundary=XYZ";
    let form = "application/x-www-form-urlencoded";
    let (nickname, text) = (multipart_head("nickname"), multipart_head("text"));
    let (json_chat, gms_form, gms_multipart, email, gms_email, ()) = tokio::join!(
        trickle(&gw, "/api/v2/chats", "application/json", "{\"tenantName\":"),
        trickle(&gw, "/genesys/2/chat/customer-support", form, "nickname=a"),
        trickle(
            &gw,
            "/genesys/2/chat/customer-support",
            multipart,
            &nickname
        ),
        trickle(&gw, "/api/v2/emails", multipart, &text),
        trickle(
            &gw,
            "/genesys/2/email/customer-support",
            form,
            "firstName=a"
        ),
        async {
            // Meanwhile a client that sends its body at once is served.
            gw.client().request_chat("legit").await;
        },
    );
    for (what, reply, gms) in [
        ("JSON chat body", &json_chat, false),
        ("GMS form", &gms_form, true),
        ("GMS multipart", &gms_multipart, true),
        ("e-mail multipart", &email, false),
        ("GMS e-mail form", &gms_email, true),
    ] {
        assert!(reply.starts_with("HTTP/1.1 408"), "{what}: {reply}");
        assert!(reply.contains(r#""code":412"#), "{what}: {reply}");
        assert!(reply.contains("too slowly"), "{what}: {reply}");
        assert_eq!(
            reply.contains(r#""chatEnded":false"#),
            gms,
            "{what}: {reply}"
        );
    }
    // Nothing of the trickled e-mails was kept.
    let spool = gw.gateway.email().spool();
    eventually("no draft left", LONG, || async {
        spool.is_idle().await.unwrap().then_some(())
    })
    .await;
}

/// Sends `body` in `chunk`-byte pieces every 100 ms and returns the reply.
async fn steady(gw: &TestGateway, body: &[u8], announced: usize, chunk: usize) -> String {
    let mut s = TcpStream::connect(addr(gw)).await.unwrap();
    let head = format!(
        "POST /api/v2/chats HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {announced}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = s.into_split();
    let body = body.to_vec();
    let sending = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for piece in body.chunks(chunk) {
            tick.tick().await;
            if write.write_all(piece).await.is_err() {
                return;
            }
        }
        // Keeps the connection open (and silent) until the reply.
        std::future::pending::<()>().await;
    });
    let reply = tokio::time::timeout(LONG, read_reply(&mut read))
        .await
        .expect("a reply");
    sending.abort();
    reply
}

#[tokio::test]
async fn a_slow_steady_body_passes_the_grace_but_not_the_cap() {
    let gw = paced().start().await;
    // 4000 bytes/s, four times the minimum, for about 0.8 s: past the 400 ms grace.
    let pad = "x".repeat(3000);
    let body =
        format!(r#"{{"tenantName":"Environment","nickname":"slow","userData":{{"pad":"{pad}"}}}}"#);
    let reply = steady(&gw, body.as_bytes(), body.len(), 400).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // The same pace for a body that would take 15 s: cut off at the 2 s cap.
    let long = vec![b' '; 60_000];
    let reply = steady(&gw, &long, long.len(), 400).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains(r#""code":412"#), "{reply}");
    assert!(reply.contains("within 2000 ms"), "{reply}");
}

#[tokio::test]
async fn one_address_past_its_connection_cap_is_refused_while_another_is_served() {
    let gw = gateway()
        .env("GATEWAY__LIMITS__MAX_CONNECTIONS_PER_IP", "3")
        .start()
        .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(&gw, 2).await);
    }
    // The server accepts in order, so by the time this one is answered the three are held.
    let mut fourth = connect_from(&gw, 2).await;
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let reply = tokio::time::timeout(LONG, read_reply(&mut fourth))
        .await
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 429"), "{reply}");
    assert!(reply.contains(r#""code":413"#), "{reply}");
    assert!(reply.contains("x-content-type-options: nosniff"), "{reply}");
    // Another address is served meanwhile, and so is this one once it closes one.
    client_from(&gw, 3).request_chat("other").await;
    held.pop();
    eventually("a place for 127.0.0.2 again", LONG, || async {
        let r = client_from(&gw, 2)
            .http
            .get(format!("{}/healthz", gw.base))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let metrics = reqwest::get(format!("{}/metrics", gw.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_refusals_total{reason=\"connections_ip\"}")),
        "{metrics}"
    );
}

#[tokio::test]
async fn full_instances_keep_the_gateway_ready_and_their_chats_served() {
    const TOKEN: &str = "0123456789abcdef-token";
    let gw = gateway()
        .behaviour(|b| b.session_limit = NonZeroU64::new(2).unwrap())
        .env("GATEWAY__ADMIN__TOKEN", TOKEN)
        .start()
        .await;
    // Two addresses fill every session (2 instances x 2).
    let mut chats = Vec::new();
    for last in [2, 3] {
        let c = client_from(&gw, last);
        for n in 0..2 {
            chats.push((last, c.request_chat(&format!("filler-{last}-{n}")).await));
        }
    }
    let newcomer = client_from(&gw, 4);
    newcomer
        .post(
            "/api/v2/chats",
            json!({"tenantName": "Environment", "nickname": "late"}),
        )
        .await
        .assert_error(503, 1, 300);
    // Still ready: the running chats must keep their load balancer.
    for base in [&gw.base, &gw.admin] {
        let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
        assert_eq!(r.status(), 200, "{base}");
    }
    for (last, chat) in &chats {
        let c = client_from(&gw, *last);
        let r = c
            .op(chat, "SendMessage", json!({"text": "still here"}))
            .await;
        assert_eq!(r.status_code(), 0, "{}", r.body);
    }
    // Fullness is reported where an operator looks.
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", gw.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for alias in ["117", "118"] {
        let line = format!("gateway_instance_full{{alias=\"{alias}\"}} 1");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    let instances: Value = reqwest::Client::new()
        .get(format!("{}/admin/instances", gw.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for instance in instances["instances"].as_array().unwrap() {
        assert_eq!(instance["full"], json!(true), "{instance}");
        assert_eq!(instance["activeChats"], json!(2), "{instance}");
        assert_eq!(instance["takesNewChats"], json!(false), "{instance}");
    }
}

#[tokio::test]
async fn the_sixth_immediate_chat_start_from_one_address_is_refused_in_both_dialects() {
    let gw = gateway()
        .toml(SERVICE)
        .env("GATEWAY__LIMITS__CHAT_STARTS_PER_IP_PER_SECOND", "1")
        .env("GATEWAY__LIMITS__CHAT_STARTS_PER_IP_BURST", "5")
        .start()
        .await;
    let c = client_from(&gw, 2);
    let mut gms = GmsClient::new(&gw.base, "customer-support");
    gms.http = c.http.clone();
    let mut started = Vec::new();
    for n in 0..3 {
        started.push(c.request_chat(&format!("web-{n}")).await);
    }
    for n in 0..2 {
        let nickname = format!("gms-{n}");
        let r = gms.post("", &[("nickname", nickname.as_str())]).await;
        assert_eq!(r.body["statusCode"], json!(0), "{}", r.body);
    }
    // The sixth, in either dialect and in its shape, is refused at once.
    let r = c
        .post(
            "/api/v2/chats",
            json!({"tenantName": "Environment", "nickname": "sixth"}),
        )
        .await;
    r.assert_error(429, 1, 414);
    let r = gms.post("", &[("nickname", "sixth")]).await;
    assert_eq!(r.http, 429, "{}", r.body);
    assert_eq!(r.body["errors"][0]["code"], json!(414), "{}", r.body);
    assert_eq!(r.body["chatEnded"], json!(false), "{}", r.body);
    // Chats already started go on, and another address starts its own.
    let r = c
        .op(&started[0], "SendMessage", json!({"text": "hello"}))
        .await;
    assert_eq!(r.status_code(), 0, "{}", r.body);
    client_from(&gw, 3).request_chat("neighbour").await;
}
