//! Chat API v2 through the gateway to real `chat-server` processes over TCP
//! (`kind = "tcp"` instances): every operation, and what a client sees when a chat server is
//! full or gone.

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
    gateway()
        .aliases(&[])
        .toml(&tcp_instance(&server.alias, server))
        .toml("[tcp]\nstatus_interval_ms = 100\nbackoff_max_ms = 200\nrequest_timeout_ms = 3000")
        .start()
        .await
}

#[tokio::test]
async fn every_operation_through_the_gateway_over_tcp() {
    let server = ChatServer::builder(chat_server_bin())
        .alias("117")
        .arg("--agent-join-delay-ms", "3600000")
        .start();
    let gw = gateway_over(&server).await;
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
