//! Rotating `credentials.secret` without ending chats: keys and tokens sealed under the old
//! secret keep working on a gateway configured `secret = B, previous_secrets = [A]`, and stop
//! on one with only B. Three in-process gateways over the same embedded chat engines stand
//! for the replicas before, during and after the rotation.

mod common;

use std::time::Duration;

use common::gms::GmsClient;
use common::{gateway, sse, Chat, TestGateway};
use serde_json::json;

const SERVICE: &str = "svc";
const NEW_SECRET: &str = "the-new-secret-fedcba9876543210fedcba98";

fn service_toml() -> String {
    format!("[[gms.services]]\nname = \"{SERVICE}\"\ntenant = \"Environment\"\n")
}

/// The replicas: on the old secret (`common::SECRET`), rotating (new + old), and on the new
/// secret alone; all over the first one's engines.
async fn replicas() -> (TestGateway, TestGateway, TestGateway) {
    let old = gateway().toml(&service_toml()).start().await;
    let rotating = gateway()
        .toml(&service_toml())
        .env("GATEWAY__CREDENTIALS__SECRET", NEW_SECRET)
        .env("GATEWAY__CREDENTIALS__PREVIOUS_SECRETS", common::SECRET)
        .start_with(Some(old.engines.clone()))
        .await;
    let new = gateway()
        .toml(&service_toml())
        .env("GATEWAY__CREDENTIALS__SECRET", NEW_SECRET)
        .start_with(Some(old.engines.clone()))
        .await;
    (old, rotating, new)
}

fn on(gw: &TestGateway, chat: &Chat) -> (common::Client, Chat) {
    (gw.client(), chat.clone())
}

#[tokio::test]
async fn a_chat_started_under_the_old_secret_continues_during_the_rotation_and_not_after() {
    let (old, rotating, new) = replicas().await;

    // Web API v2: a chat and its stream token from the old replica.
    let started = old
        .client()
        .post(
            "/api/v2/chats",
            json!({"tenantName": "Environment", "nickname": "Ann"}),
        )
        .await;
    assert_eq!(started.status_code(), 0, "{:#}", started.body);
    let chat = Chat::created(&started);
    let token = started.body["streamToken"].as_str().unwrap().to_owned();
    let r = old
        .client()
        .op(&chat, "SendMessage", json!({"text": "before"}))
        .await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);

    // During the rotation: the old key and the old stream token still work.
    let (c, chat_r) = on(&rotating, &chat);
    let r = c
        .op(&chat_r, "SendMessage", json!({"text": "during"}))
        .await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    assert_eq!(c.customer_texts(&chat_r).await, ["before", "during"]);
    let url = |base: &str| {
        format!(
            "{base}/api/v2/chats/{}/events?streamToken={token}",
            chat.chat_id
        )
    };
    let mut stream = sse::open(&c.http, &url(&rotating.base), None).await;
    assert_eq!(stream.status, 200, "the old stream token opens");
    assert!(stream.next_event(Duration::from_secs(10)).await.is_some());
    drop(stream);

    // After it: the same key and token are refused before any backend sees them.
    let (c, chat_n) = on(&new, &chat);
    let seen = new.backend_requests();
    c.op(&chat_n, "SendMessage", json!({"text": "after"}))
        .await
        .assert_error(401, 2, 200);
    assert_eq!(
        new.backend_requests(),
        seen,
        "no backend call on a wrong key"
    );
    let stream = sse::open(&c.http, &url(&new.base), None).await;
    assert_eq!(stream.status, 401, "the old stream token no longer opens");

    // A chat started during the rotation is sealed under the new secret only.
    let fresh = rotating.client().request_chat("Bob").await;
    let r = new.client().messages(&fresh, Some(1)).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    old.client()
        .messages(&fresh, Some(1))
        .await
        .assert_error(401, 2, 200);
}

#[tokio::test]
async fn a_gms_chat_started_under_the_old_secret_continues_during_the_rotation_and_not_after() {
    let (old, rotating, new) = replicas().await;
    let mut chat = GmsClient::new(&old.base, SERVICE)
        .request_chat(&[("nickname", "Ann")])
        .await;
    let r = GmsClient::new(&old.base, SERVICE)
        .op(&chat, "send", &[("message", "before")])
        .await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);

    let during = GmsClient::new(&rotating.base, SERVICE);
    let r = during.op(&chat, "send", &[("message", "during")]).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let r = during.refresh(&mut chat).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let texts: Vec<&str> = r
        .messages()
        .iter()
        .filter(|m| m["type"] == "Message" && m["from"]["type"] == "Client")
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["before", "during"]);

    let seen = new.backend_requests();
    let r = GmsClient::new(&new.base, SERVICE)
        .op(&chat, "send", &[("message", "after")])
        .await;
    assert_eq!((r.http, r.status_code()), (401, 2), "{:#}", r.body);
    assert_eq!(
        new.backend_requests(),
        seen,
        "no backend call on a wrong key"
    );
}
