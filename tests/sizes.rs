//! Bounded sizes end to end, with real processes: a text over the chat's limit is refused in
//! both dialects with nothing applied; a transcript larger than a chat-server frame is read
//! page by page through the gateway over tcp, every event exactly once, with no connection
//! reset and bystander chats on the same instance served throughout.

mod common;

use common::gms::{GmsChat, GmsClient};
use common::{assert_contiguous, gateway, Chat, Client, GatewayBuilder};
use serde_json::json;
use testkit::{chat_server_bin, ChatServer};

const SERVICE: &str = "[[gms.services]]\nname = \"customer-support\"\ntenant = \"Environment\"\n";

/// A gateway whose only instance is `server`, with the GMS dialect's service.
fn gateway_over(server: &ChatServer) -> GatewayBuilder {
    gateway()
        .aliases(&[])
        .toml(&format!(
            "[[chat.instances]]\nalias = \"{}\"\nkind = \"tcp\"\naddress = \"{}\"\n",
            server.alias, server.addr
        ))
        .toml("[tcp]\nstatus_interval_ms = 100\nbackoff_max_ms = 200\nrequest_timeout_ms = 3000")
        .toml(SERVICE)
}

fn gms(chat: &Chat) -> GmsChat {
    GmsChat {
        chat_id: chat.chat_id.clone(),
        user_id: chat.user_id.clone(),
        secure_key: chat.secure_key.clone(),
        alias: chat.alias.clone(),
        next_position: 1,
    }
}

/// The texts of a chat's whole transcript, read from position 1.
async fn texts(c: &Client, chat: &Chat) -> Vec<String> {
    let r = c.messages(chat, Some(1)).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    r.messages()
        .iter()
        .filter_map(|m| m["text"].as_str().map(str::to_owned))
        .collect()
}

/// The default limit (16 KiB) in both dialects, on the embedded engine and over tcp: one
/// byte more is refused with statusCode 2, code 214, naming the field, and nothing is added.
#[tokio::test]
async fn a_text_over_the_limit_is_refused_in_both_dialects() {
    let server = ChatServer::builder(chat_server_bin()).alias("117").start();
    let over_tcp = gateway_over(&server).start().await;
    let embedded = gateway().toml(SERVICE).start().await;
    for gw in [&over_tcp, &embedded] {
        let c = gw.client();
        let chat = c.request_chat_retrying("Ann").await;
        let at_limit = "a".repeat(16 * 1024);
        let over = "b".repeat(16 * 1024 + 1);

        let r = c.op(&chat, "SendMessage", json!({"text": over})).await;
        r.assert_error(413, 2, 214);
        let message = r.body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("`text`") && message.contains("16384"),
            "{message}"
        );

        let g = GmsClient::new(&gw.base, "customer-support");
        let r = g.op(&gms(&chat), "send", &[("message", &over)]).await;
        r.assert_error(413, 2, 214);
        let r = g
            .op(&gms(&chat), "updateNickname", &[("nickname", &over)])
            .await;
        r.assert_error(413, 2, 214);

        let r = c.op(&chat, "SendMessage", json!({"text": at_limit})).await;
        assert_eq!(r.status_code(), 0, "{:#}", r.body);
        let texts = texts(&c, &chat).await;
        assert!(texts.contains(&at_limit));
        assert!(
            !texts.iter().any(|t| t.starts_with('b')),
            "a refused text was kept"
        );
    }
}

/// 30 messages of 60 KB (limits raised to allow them): about 1.8 MB of transcript, more than
/// a chat-server frame. Get Messages and the GMS refresh page through it with nextPosition,
/// every event exactly once; the chat server closes no connection; other chats on the same
/// instance are served between the pages.
#[tokio::test]
async fn a_long_transcript_is_read_page_by_page_through_the_gateway() {
    let server = ChatServer::builder(chat_server_bin())
        .alias("117")
        .arg("--max-message-bytes", "60000")
        .arg("--max-transcript-bytes", "4194304")
        .arg("--agent-join-delay-ms", "0")
        .arg("--agent-reply-delay-ms", "0")
        .start();
    let gw = gateway_over(&server)
        .env("GATEWAY__SERVER__MAX_BODY_BYTES", "131072")
        .start()
        .await;
    let c = gw.client();
    let chat = c.request_chat_retrying("Ann").await;
    let mut bystanders = Vec::new();
    for n in 0..3 {
        bystanders.push(c.request_chat_retrying(&format!("bystander {n}")).await);
    }
    for n in 0..30 {
        let text = format!("{n:02}") + &"m".repeat(59_998);
        let r = c.op(&chat, "SendMessage", json!({"text": text})).await;
        assert_eq!(r.status_code(), 0, "message {n}: {:#}", r.body["errors"]);
    }

    // The Web API: Get Messages from 1, then from each reply's nextPosition.
    let (mut position, mut seen, mut pages, mut long) = (1, Vec::new(), 0, 0);
    loop {
        let r = c.messages(&chat, Some(position)).await;
        long += r
            .messages()
            .iter()
            .filter(|m| m["text"].as_str().is_some_and(|t| t.len() == 60_000))
            .count();
        assert_eq!(
            (r.http, r.status_code()),
            (200, 0),
            "{:#}",
            r.body["errors"]
        );
        assert_eq!(r.body["alias"], "117", "the chat moved");
        let next = r.body["nextPosition"].as_u64().unwrap();
        if r.messages().is_empty() {
            assert_eq!(next, position);
            break;
        }
        assert_contiguous(r.messages(), position);
        assert_eq!(next, position + r.messages().len() as u64);
        seen.extend(r.messages().iter().map(|m| m["index"].as_u64().unwrap()));
        position = next;
        pages += 1;
        for other in &bystanders {
            let r = c
                .op(
                    other,
                    "SendMessage",
                    json!({"text": format!("page {pages}")}),
                )
                .await;
            assert_eq!((r.status_code(), &r.body["alias"]), (0, &json!("117")));
        }
    }
    assert_eq!(seen, (1..position).collect::<Vec<_>>());
    assert_eq!(long, 30, "every message read exactly once");
    assert!(pages >= 4, "1.8 MB in {pages} pages");
    let sent: Vec<String> = texts(&c, &chat).await;
    assert!(
        sent.len() < 30,
        "one reply carries a page, not the whole transcript"
    );

    // The GMS dialect: refresh with each nextPosition, as its widgets poll.
    let g = GmsClient::new(&gw.base, "customer-support");
    let mut polled = gms(&chat);
    let mut indexes = Vec::new();
    loop {
        let r = g.refresh(&mut polled).await;
        assert_eq!(r.status_code(), 0, "{:#}", r.body);
        if r.messages().is_empty() {
            break;
        }
        indexes.extend(r.messages().iter().map(|m| m["index"].as_u64().unwrap()));
    }
    assert_eq!(indexes, seen);

    for other in &bystanders {
        let mine = texts(&c, other).await;
        for page in 1..=pages {
            assert!(mine.contains(&format!("page {page}")), "{mine:?}");
        }
    }
    let log = server.log();
    assert!(!log.contains("closing connection"), "{log}");
}

/// The embedded engine pages the same way (one engine): the mock's limits raised in `[mock]`.
#[tokio::test]
async fn the_embedded_engine_pages_the_same_way() {
    let gw = gateway()
        .behaviour(|b| {
            b.max_message_bytes = 60_000;
            b.max_transcript_bytes = 4 << 20;
        })
        .env("GATEWAY__SERVER__MAX_BODY_BYTES", "131072")
        .start()
        .await;
    let c = gw.client();
    let chat = c.request_chat("Ann").await;
    for n in 0..30 {
        let text = format!("{n:02}") + &"e".repeat(59_998);
        let r = c.op(&chat, "SendMessage", json!({"text": text})).await;
        assert_eq!(r.status_code(), 0, "message {n}: {:#}", r.body["errors"]);
    }
    let (mut position, mut seen, mut pages, mut messages) = (1, Vec::new(), 0, 0);
    loop {
        let r = c.messages(&chat, Some(position)).await;
        assert_eq!(r.status_code(), 0, "{:#}", r.body["errors"]);
        if r.messages().is_empty() {
            break;
        }
        assert_contiguous(r.messages(), position);
        seen.extend(r.messages().iter().map(|m| m["index"].as_u64().unwrap()));
        messages += r
            .messages()
            .iter()
            .filter(|m| m["text"].as_str().is_some_and(|t| t.len() == 60_000))
            .count();
        position = r.body["nextPosition"].as_u64().unwrap();
        pages += 1;
    }
    assert_eq!(seen, (1..position).collect::<Vec<_>>());
    assert_eq!(messages, 30, "every message read once");
    assert!(pages >= 4, "{pages} pages");
}
