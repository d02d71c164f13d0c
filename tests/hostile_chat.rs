//! Issue 13's chat findings, each attack reproduced over real sockets: a case-folded
//! `secureKey`, `javascript:` push URLs in both dialects, and (with a gateway process) GMS
//! file memory.

mod common;

use common::gms::{GmsChat, GmsClient};
use common::{gateway, Chat, Reply, TestGateway};
use serde_json::json;

const SERVICES: &str = r#"
[[gms.services]]
name = "customer-support"
tenant = "Environment"
"#;

async fn start() -> TestGateway {
    gateway().toml(SERVICES).start().await
}

/// The key with its MAC (the last 32 characters) in lower case; the backend key as it was.
fn case_folded(key: &str) -> String {
    let (backend_key, mac) = key.split_at(key.len() - 32);
    assert!(
        mac.bytes().any(|b| b.is_ascii_uppercase()),
        "a MAC without letters cannot be case-folded: {mac}"
    );
    format!("{backend_key}{}", mac.to_ascii_lowercase())
}

#[tokio::test]
async fn a_case_folded_key_is_refused_before_any_backend_call() {
    let gw = start().await;
    let c = gw.client();
    let g = GmsClient::new(&gw.base, "customer-support");
    // A MAC is 32 hex digits: one without a letter comes once in about 2^20 chats.
    let chat = loop {
        let chat = c.request_chat("Ann").await;
        if chat.secure_key[chat.secure_key.len() - 32..]
            .bytes()
            .any(|b| b.is_ascii_uppercase())
        {
            break chat;
        }
    };
    let seen = gw.backend_requests();
    let folded = Chat {
        secure_key: case_folded(&chat.secure_key),
        ..chat.clone()
    };
    for op in ["SendMessage", "GetChat", "Complete"] {
        c.op(&folded, op, json!({"text": "x"}))
            .await
            .assert_error(401, 2, 200);
    }
    c.messages(&folded, Some(1))
        .await
        .assert_error(401, 2, 200);
    let gms_folded = GmsChat {
        chat_id: chat.chat_id.clone(),
        user_id: chat.user_id.clone(),
        secure_key: folded.secure_key.clone(),
        alias: chat.alias.clone(),
        next_position: 1,
    };
    g.op(&gms_folded, "refresh", &[])
        .await
        .assert_error(401, 2, 200);
    g.op(&gms_folded, "send", &[("message", "x")])
        .await
        .assert_error(401, 2, 200);
    assert_eq!(
        gw.backend_requests(),
        seen,
        "a case-folded key reached a chat server"
    );
    // The key as issued still works, and nothing of the above reached the chat.
    let r = c.op(&chat, "SendMessage", json!({"text": "mine"})).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    assert_eq!(c.customer_texts(&chat).await, ["mine"]);
}

/// Push URLs a browser would run or open as something other than a web page, and the
/// malformed ones: each refused with code 104 naming `pushUrl`.
const BAD_URLS: &[&str] = &[
    "javascript:alert(1)",
    "JaVaScRiPt:alert(document.cookie)",
    " javascript:alert(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "//evil.example/x",
    "https://",
    "https://example.com/a\nb",
    "example.com",
];

fn assert_names_push_url(r: &Reply) {
    r.assert_error(400, 2, 104);
    let message = r.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("`pushUrl`"), "{message}");
}

#[tokio::test]
async fn only_http_and_https_urls_are_pushed_in_both_dialects() {
    let gw = start().await;
    let c = gw.client();
    let g = GmsClient::new(&gw.base, "customer-support");
    let chat = c.request_chat("Ann").await;
    let long = format!("https://example.com/{}", "a".repeat(2048));
    let seen = gw.backend_requests();
    for url in BAD_URLS.iter().copied().chain([long.as_str()]) {
        assert_names_push_url(&c.op(&chat, "SendUrl", json!({"pushUrl": url})).await);
    }
    assert_eq!(gw.backend_requests(), seen, "a refused URL reached a chat server");
    let gms_chat = g.request_chat(&[("nickname", "Bo")]).await;
    let seen = gw.backend_requests();
    for url in BAD_URLS.iter().copied().chain([long.as_str()]) {
        assert_names_push_url(&g.op(&gms_chat, "pushUrl", &[("pushUrl", url)]).await);
    }
    assert_eq!(gw.backend_requests(), seen, "a refused URL reached a chat server");

    // http and https pass, in any case of the scheme, and are shown as sent.
    for url in ["https://example.com/a?b=c#d", "HTTP://example.com"] {
        let r = c.op(&chat, "SendUrl", json!({"pushUrl": url})).await;
        assert_eq!(r.status_code(), 0, "{url}: {:#}", r.body);
        let r = g.op(&gms_chat, "pushUrl", &[("pushUrl", url)]).await;
        assert_eq!(r.status_code(), 0, "{url}: {:#}", r.body);
    }
    let r = c.messages(&chat, Some(1)).await;
    let notices: Vec<&str> = r
        .messages()
        .iter()
        .filter(|m| m["type"] == "Notice")
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(notices, ["https://example.com/a?b=c#d", "HTTP://example.com"]);
}
