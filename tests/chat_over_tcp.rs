//! Chat API v2 through the gateway to real `chat-server` processes over TCP
//! (`kind = "tcp"` instances): every operation (over the shared-secret handshake), what a
//! client sees when a chat server is full or gone, and a gateway whose secret is wrong.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{assert_contiguous, eventually, gateway, types, Client, TestGateway};
use serde_json::json;
use testkit::{chat_server_bin, ChatServer};

const PATIENCE: Duration = Duration::from_secs(15);

fn tcp_instance(alias: &str, server: &ChatServer) -> String {
    format!(
        "[[chat.instances]]\nalias = \"{alias}\"\nkind = \"tcp\"\naddress = \"{}\"\n",
        server.addr
    )
}

/// A gateway whose only instance is the given chat server, with a quick status poll.
async fn gateway_over(server: &ChatServer) -> TestGateway {
    gateway_with_secret(server, None).await
}

const TCP: &str =
    "[tcp]\nstatus_interval_ms = 100\nbackoff_max_ms = 200\nrequest_timeout_ms = 3000";

/// The same, proving `secret` to the chat server (`tcp.secret`), with quick health checks.
async fn gateway_with_secret(server: &ChatServer, secret: Option<&str>) -> TestGateway {
    let secret = secret.map_or(String::new(), |s| format!("\nsecret = \"{s}\""));
    gateway()
        .aliases(&[])
        .toml(&tcp_instance(&server.alias, server))
        .toml(&format!("{TCP}{secret}"))
        .toml("[chat.health]\ninterval_ms = 100")
        .start()
        .await
}

const SECRET: &str = "b8e2f4a6c8d0e2f4a6b8c0d2e4f6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c6d8e0f2";

/// A chat server that needs `SECRET` (from a file, as an operator runs it).
fn server_with_secret(alias: &str) -> ChatServer {
    let dir = std::env::temp_dir().join(format!("chat-secret-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    ChatServer::builder(chat_server_bin())
        .alias(alias)
        .arg("--secret-file", path.to_str().unwrap())
        .arg("--agent-join-delay-ms", "3600000")
        .start()
}

#[tokio::test]
async fn every_operation_through_the_gateway_over_tcp() {
    // Over the authenticated handshake, as a chat server off loopback must be run.
    let server = server_with_secret("117");
    let gw = gateway_with_secret(&server, Some(SECRET)).await;
    let c = gw.client();
    let chat = c.request_chat_retrying("Ann").await;
    assert_eq!(chat.alias, "117");

    // Get Messages: everything, and nothing.
    let all = c.messages(&chat, None).await;
    assert_eq!((all.http, all.status_code()), (200, 0));
    assert_contiguous(all.messages(), 1);
    assert_eq!(
        types(&all.messages()[..3]),
        ["ParticipantJoined", "ParticipantJoined", "Message"]
    );
    let none = c.messages(&chat, Some(0)).await;
    assert!(none.messages().is_empty());
    assert_eq!(none.body["nextPosition"], all.body["nextPosition"]);

    // A wrong key stops at the gateway and never reaches the chat server.
    let mut forged = chat.clone();
    forged.secure_key = format!("{}x", &chat.secure_key[..chat.secure_key.len() - 1]);
    let r = c
        .op(&forged, "SendMessage", json!({"text": "hijack"}))
        .await;
    assert_eq!(r.status_code(), 2);
    assert_eq!(r.http, 401);

    // Then the same scenario as on the embedded mock, to the chat's end.
    common::every_operation(&c, &chat).await;
    assert!(
        !server.log().contains(&chat.secure_key),
        "keys are never logged"
    );
    assert!(!server.log().contains(SECRET), "the secret is never logged");
}

/// A gateway with the wrong `tcp.secret` (or none) is refused by the chat server: the
/// instance goes down with the reason in its check, new chats are refused retry-later, and
/// no call reaches the chat server. A gateway with the right secret is served.
#[tokio::test]
async fn a_gateway_with_a_wrong_secret_has_its_instance_taken_down() {
    let server = server_with_secret("117");
    for secret in [
        Some("a-secret-that-is-not-the-chat-servers-0123456789"),
        None,
    ] {
        let gw = gateway_with_secret(&server, secret).await;
        let router = gw.gateway.router();
        let instance = router.get("117").unwrap();
        eventually("the instance down", PATIENCE, || async {
            (instance.health.state() == webapi_gateway::router::HealthState::Down).then_some(())
        })
        .await;
        let why = instance.backend.check().await.unwrap_err().to_string();
        assert!(why.contains("shared-secret handshake"), "{secret:?}: {why}");
        let r = gw
            .client()
            .post(
                "/api/v2/chats",
                json!({"tenantName": "Environment", "nickname": "Ann"}),
            )
            .await;
        r.assert_error(503, 1, 300);
    }
    let log = server.log();
    assert!(log.contains("authentication failed"), "{log}");

    let gw = gateway_with_secret(&server, Some(SECRET)).await;
    let c = gw.client();
    let chat = c.request_chat_retrying("Ann").await;
    assert_eq!(chat.alias, "117");
}

#[tokio::test]
async fn the_agent_answers_over_tcp() {
    let server = ChatServer::builder(chat_server_bin()).alias("117").start();
    let gw = gateway_over(&server).await;
    let c = gw.client();
    let chat = c.request_chat_retrying("Ann").await;
    c.op(&chat, "SendMessage", json!({"text": "anyone there?"}))
        .await;
    eventually("the agent's answer", PATIENCE, || async {
        let r = c.messages(&chat, None).await;
        r.messages()
            .iter()
            .any(|m| m["from"]["type"] == "Agent" && m["type"] == "Message")
            .then_some(())
    })
    .await;
    let r = c.op(&chat, "GetChat", json!({})).await;
    assert_eq!(r.body["state"], "Chatting");
}

#[tokio::test]
async fn a_full_or_dead_chat_server_is_retry_later() {
    let mut server = ChatServer::builder(chat_server_bin())
        .alias("117")
        .arg("--session-limit", "1")
        .start();
    let gw = gateway_over(&server).await;
    let c = gw.client();
    let chat = c.request_chat_retrying("first").await;
    // Full: the gateway learns it from the status poll or from the server's refusal.
    let r = c
        .post(
            "/api/v2/chats",
            json!({"tenantName": "Environment", "nickname": "second"}),
        )
        .await;
    assert_eq!((r.http, r.status_code()), (503, 1), "{:#}", r.body);

    server.kill9();
    let r = eventually("the loss noticed", PATIENCE, || async {
        let r = c.messages(&chat, None).await;
        (r.status_code() != 0).then_some(r)
    })
    .await;
    assert_eq!((r.http, r.status_code()), (503, 1), "{:#}", r.body);
    // 601: the chat's instance is down and no other instance can take it over.
    let code = r.error_code();
    assert!([300, 301, 302, 601].contains(&code), "{code}");
    let r = c.op(&chat, "SendMessage", json!({"text": "hello?"})).await;
    assert_eq!((r.http, r.status_code()), (503, 1), "{:#}", r.body);
}

/// The binary as an operator runs it, configured with a tcp instance.
#[tokio::test]
async fn the_gateway_binary_serves_chats_from_a_chat_server() {
    let server = ChatServer::builder(chat_server_bin()).alias("205").start();
    let dir = std::env::temp_dir().join(format!("gw-tcp-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[[tenants]]\nname = \"Environment\"\n{}",
            tcp_instance("205", &server)
        ),
    )
    .unwrap();
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_webapi-gateway"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        // Test gateways run side by side: each takes its own admin port.
        .env("GATEWAY__ADMIN__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = gateway.stdout.take().unwrap();
    let addr = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.find("addr=")
                .map(|i| line[i + 5..].split_whitespace().next().unwrap().to_string())
        })
        .expect("the listening line");
    let c = Client {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
    };
    let chat = c.request_chat_retrying("Ann").await;
    assert_eq!(chat.alias, "205");
    let r = c.op(&chat, "SendMessage", json!({"text": "hi"})).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let r = c.messages(&chat, None).await;
    assert!(r.messages().iter().any(|m| m["text"] == "hi"));
    let _ = gateway.kill();
    let _ = gateway.wait();
    std::fs::remove_dir_all(&dir).unwrap();
}
