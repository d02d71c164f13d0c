//! Chat API v2 over a real socket, on the embedded mock: every operation and error path.

mod common;

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::time::Duration;

use common::{assert_contiguous, eventually, gateway, Chat};
use serde_json::{json, Value};

#[tokio::test]
async fn request_chat_reference_example() {
    let gw = gateway().start().await;
    let r = gw
        .client()
        .post(
            "/api/v2/chats",
            json!({"tenantName":"Environment","nickname":"nickname","emailAddress":"email@address",
                   "subject":"subject to","userData":{"key1":"value1","key2":"value2"}}),
        )
        .await;
    assert_eq!((r.http, r.status_code()), (200, 0));
    let b = &r.body;
    let chat_id = b["chatId"].as_str().unwrap();
    assert_eq!(chat_id.len(), 16);
    assert_eq!(b["path"], format!("/api/v2/chats/{chat_id}"));
    assert_eq!(b["userId"].as_str().unwrap().len(), 16);
    assert!(b["secureKey"].as_str().unwrap().len() >= 16);
    assert!(["117", "118"].contains(&b["alias"].as_str().unwrap()));
    assert_eq!(b["tenantName"], "Environment");
    assert_eq!(b["chatEnded"], false);
    let msgs = r.messages();
    assert_eq!(
        msgs[0],
        json!({"from":{"nickname":"nickname","participantId":1,"type":"Client"},
               "index":1,"type":"ParticipantJoined","utcTime":msgs[0]["utcTime"]})
    );
    assert!(msgs[0]["utcTime"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(b["nextPosition"].as_u64(), Some(msgs.len() as u64 + 1));
    // The system party greets.
    assert_eq!(msgs[1]["from"]["type"], "External");
    assert_eq!(msgs[1]["from"]["nickname"], "system");
    assert_eq!(msgs[2]["type"], "Message");
}

#[tokio::test]
async fn every_operation_end_to_end() {
    let gw = gateway()
        .behaviour(|b| b.agent_join_delay = Duration::from_secs(3600))
        .start()
        .await;
    let c = gw.client();
    let chat = c.request_chat("Ann").await;

    common::every_operation(&c, &chat).await;
}

#[tokio::test]
async fn transcript_positions() {
    let gw = gateway()
        .behaviour(|b| b.agent_join_delay = Duration::from_secs(3600))
        .start()
        .await;
    let c = gw.client();
    let chat = c.request_chat("Ann").await;
    for i in 0..3 {
        c.op(&chat, "SendMessage", json!({"text": format!("m{i}")}))
            .await;
    }
    let all = c.messages(&chat, None).await;
    assert_contiguous(all.messages(), 1);
    assert_eq!(all.messages().len(), 6);
    assert_eq!(all.body["nextPosition"], 7);
    assert_eq!(c.messages(&chat, Some(1)).await.messages(), all.messages());
    let none = c.messages(&chat, Some(0)).await;
    assert!(none.messages().is_empty());
    assert_eq!(none.body["nextPosition"], 7);
    let tail = c.messages(&chat, Some(5)).await;
    assert_contiguous(tail.messages(), 5);
    assert_eq!(tail.messages().len(), 2);
    assert!(c.messages(&chat, Some(7)).await.messages().is_empty());
    assert!(c.messages(&chat, Some(1000)).await.messages().is_empty());
}

#[tokio::test]
async fn agent_joins_and_answers() {
    let gw = gateway()
        .behaviour(|b| {
            b.agent_join_delay = Duration::from_millis(100);
            b.agent_reply_delay = Duration::from_millis(50);
        })
        .start()
        .await;
    let c = gw.client();
    let chat = c.request_chat("Ann").await;
    c.op(&chat, "SendMessage", json!({"text": "anyone?"})).await;
    let msgs = eventually("the agent's answer", Duration::from_secs(10), || async {
        let r = c.messages(&chat, None).await;
        let answered = r
            .messages()
            .iter()
            .filter(|m| m["from"]["type"] == "Agent" && m["type"] == "Message")
            .count()
            >= 2;
        answered.then(|| r.messages().clone())
    })
    .await;
    assert_contiguous(&msgs, 1);
    let agent_join = msgs
        .iter()
        .position(|m| m["type"] == "ParticipantJoined" && m["from"]["type"] == "Agent")
        .expect("agent joined");
    let question = msgs.iter().position(|m| m["text"] == "anyone?").unwrap();
    let answer = msgs
        .iter()
        .rposition(|m| m["from"]["type"] == "Agent" && m["type"] == "Message")
        .unwrap();
    assert!(agent_join < answer && question < answer);
    assert_eq!(
        c.op(&chat, "GetChat", json!({})).await.body["state"],
        "Chatting"
    );
}

#[tokio::test]
async fn idle_customer_is_disconnected() {
    let gw = gateway()
        .behaviour(|b| b.disconnect_timeout = Duration::from_millis(300))
        .start()
        .await;
    let c = gw.client();
    let chat = c.request_chat("Ann").await;
    let engine = gw.engine(&chat.alias);
    // Watch the engine, not the API: a request would count as activity.
    eventually("the idle chat to end", Duration::from_secs(10), || async {
        engine
            .snapshot(&chat.chat_id)
            .filter(|r| r.is_ended())
            .map(|_| ())
    })
    .await;
    let r = c.messages(&chat, None).await;
    assert_eq!((r.status_code(), &r.body["chatEnded"]), (0, &json!(true)));
    assert_eq!(
        r.messages().last().unwrap()["type"],
        "ParticipantLeft",
        "{:#}",
        r.body
    );
    c.op(&chat, "SendMessage", json!({"text": "still there?"}))
        .await
        .assert_error(409, 2, 211);
}

#[tokio::test]
async fn session_limit_answers_retry_later() {
    let gw = gateway()
        .behaviour(|b| b.session_limit = NonZeroU64::new(2).unwrap())
        .start()
        .await;
    let c = gw.client();
    let mut chats = Vec::new();
    for i in 0..4 {
        chats.push(c.request_chat(&format!("c{i}")).await);
    }
    let r = c
        .post(
            "/api/v2/chats",
            json!({"tenantName":"Environment","nickname":"one too many"}),
        )
        .await;
    r.assert_error(503, 1, 300);
    // A chat that ends frees its place.
    c.op(&chats[0], "Complete", json!({})).await;
    c.request_chat("fits again").await;
}

#[tokio::test]
async fn new_chats_are_spread_and_alias_routes() {
    let gw = gateway().start().await;
    let c = gw.client();
    let mut by_alias: HashMap<String, Vec<Chat>> = HashMap::new();
    for i in 0..100 {
        let chat = c.request_chat(&format!("c{i}")).await;
        by_alias.entry(chat.alias.clone()).or_default().push(chat);
    }
    let n117 = by_alias["117"].len();
    let n118 = by_alias["118"].len();
    assert!(
        (40..=60).contains(&n117) && n117 + n118 == 100,
        "{n117}/{n118}"
    );
    // Each chat lives on the instance its alias names, and only there.
    for (alias, chats) in &by_alias {
        for chat in chats {
            assert!(gw.engine(alias).snapshot(&chat.chat_id).is_some());
        }
    }
    let chat = &by_alias["117"][0];
    let mut moved = chat.clone();
    moved.alias = "118".into();
    c.op(&moved, "GetChat", json!({}))
        .await
        .assert_error(404, 2, 210);
}

#[tokio::test]
async fn bad_credentials_never_reach_a_backend() {
    let gw = gateway().start().await;
    let c = gw.client();
    let chat = c.request_chat("Ann").await;
    let other = c.request_chat("Bob").await;
    let seen = gw.backend_requests();

    let mut wrong_key = chat.clone();
    wrong_key.secure_key = other.secure_key.clone();
    let mut forged = chat.clone();
    forged.secure_key.replace_range(
        0..1,
        if chat.secure_key.starts_with('0') {
            "1"
        } else {
            "0"
        },
    );
    let mut backend_key_only = chat.clone();
    backend_key_only.secure_key.truncate(16);
    let mut other_user = chat.clone();
    other_user.user_id = other.user_id.clone();
    let mut unknown_chat = chat.clone();
    unknown_chat.chat_id = "0000000000000000".into();
    let mut other_tenant = chat.clone();
    other_tenant.tenant = "Other".into();
    for bad in [
        wrong_key,
        forged,
        backend_key_only,
        other_user,
        unknown_chat,
        other_tenant,
    ] {
        for op in ["SendMessage", "Complete", "GetChat"] {
            c.op(&bad, op, json!({"text": "x"}))
                .await
                .assert_error(401, 2, 200);
        }
        c.messages(&bad, None).await.assert_error(401, 2, 200);
    }
    let mut unknown_alias = chat.clone();
    unknown_alias.alias = "999".into();
    c.op(&unknown_alias, "GetChat", json!({}))
        .await
        .assert_error(400, 2, 201);
    let mut unknown_tenant = chat.clone();
    unknown_tenant.tenant = "Nope".into();
    c.op(&unknown_tenant, "GetChat", json!({}))
        .await
        .assert_error(400, 2, 130);

    assert_eq!(
        gw.backend_requests(),
        seen,
        "no bad request reached a chat server"
    );
    // The real customer was not disturbed.
    let r = c
        .op(&chat, "SendMessage", json!({"text": "still here"}))
        .await;
    assert_eq!(r.status_code(), 0);
    assert_eq!(gw.backend_requests(), seen + 1);
}

#[tokio::test]
async fn bad_input_gets_json_errors() {
    let gw = gateway()
        .env("GATEWAY__SERVER__MAX_BODY_BYTES", "1024")
        .start()
        .await;
    let c = gw.client();
    let chat = c.request_chat("Ann").await;
    let path = format!("/api/v2/chats/{}", chat.chat_id);
    let ct = Some("application/json");
    let raw = |p: &str, b: &str| {
        let c = c.clone();
        let (p, b) = (p.to_string(), b.to_string());
        async move { c.post_raw(&p, ct, b.into_bytes()).await }
    };
    raw("/api/v2/chats", "{").await.assert_error(400, 2, 100);
    raw("/api/v2/chats", "").await.assert_error(400, 2, 100);
    raw("/api/v2/chats", "\u{0}\u{1}garbage")
        .await
        .assert_error(400, 2, 100);
    raw("/api/v2/chats", "[]").await.assert_error(400, 2, 101);
    raw("/api/v2/chats", "42").await.assert_error(400, 2, 101);
    raw("/api/v2/chats", "{}").await.assert_error(400, 2, 102);
    raw(
        "/api/v2/chats",
        r#"{"tenantName":"Environment","nickname":7}"#,
    )
    .await
    .assert_error(400, 2, 103);
    let r = c
        .op(
            &chat,
            "SendMessage",
            json!({"text": ["not", "a", "string"]}),
        )
        .await;
    r.assert_error(400, 2, 103);
    assert!(r.body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("`text`"));
    let r = c.op(&chat, "SendMessage", json!({})).await;
    r.assert_error(400, 2, 102);
    assert!(r.body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("`text`"));
    c.op(&chat, "UpdateUserData", json!({"userData": "k=v"}))
        .await
        .assert_error(400, 2, 103);
    c.op(&chat, "UpdateUserData", json!({}))
        .await
        .assert_error(400, 2, 102);
    c.op(&chat, "UpdateUserNickname", json!({}))
        .await
        .assert_error(400, 2, 102);
    c.op(&chat, "SendUrl", json!({"pushUrl": ""}))
        .await
        .assert_error(400, 2, 104);
    c.op(&chat, "Dance", json!({}))
        .await
        .assert_error(400, 2, 105);
    let mut body = chat.credentials();
    body["operationName"] = json!(5);
    c.post(&path, body).await.assert_error(400, 2, 103);
    // A numeric string position and a numeric alias are read (issue 14, see
    // `clients::tolerance`); anything else of another type is still refused by name.
    let mut body = chat.credentials();
    body["transcriptPosition"] = json!("3x");
    c.post(&format!("{path}/messages"), body)
        .await
        .assert_error(400, 2, 103);
    let mut body = chat.credentials();
    body["alias"] = json!(true);
    body["operationName"] = json!("GetChat");
    c.post(&path, body).await.assert_error(400, 2, 103);

    // Size limit: announced and streamed.
    let big = format!(
        r#"{{"tenantName":"Environment","nickname":"{}"}}"#,
        "x".repeat(2000)
    );
    raw("/api/v2/chats", &big).await.assert_error(413, 2, 111);
    let chunks = vec![Ok::<_, std::io::Error>(big.clone().into_bytes())];
    let resp = c
        .http
        .post(format!("{}/api/v2/chats", c.base))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], 111);

    // Content types: lenient for JSON sent as text, strict for other formats.
    let good = r#"{"tenantName":"Environment","nickname":"n"}"#;
    for ct in [
        None,
        Some("text/plain;charset=UTF-8"),
        Some("application/json; charset=utf-8"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let r = c
            .post_raw("/api/v2/chats", ct, good.as_bytes().to_vec())
            .await;
        assert_eq!(r.status_code(), 0, "{ct:?}");
    }
    c.post_raw(
        "/api/v2/chats",
        Some("multipart/form-data; boundary=x"),
        good.into(),
    )
    .await
    .assert_error(415, 2, 110);
    c.post_raw(
        "/api/v2/chats",
        Some("application/x-www-form-urlencoded"),
        b"a=b".to_vec(),
    )
    .await
    .assert_error(415, 2, 110);

    // Routes and methods.
    raw("/api/v2/nothing", "{}").await.assert_error(404, 2, 120);
    raw(&format!("{path}/messages/extra"), "{}")
        .await
        .assert_error(404, 2, 120);
    let resp = c
        .http
        .get(format!("{}/api/v2/chats", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        (v["statusCode"].as_i64(), v["errors"][0]["code"].as_i64()),
        (Some(2), Some(121))
    );
    let resp = c
        .http
        .delete(format!("{}{path}", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);

    // And the gateway still serves the chat.
    assert_eq!(
        c.op(&chat, "SendMessage", json!({"text": "ok"}))
            .await
            .status_code(),
        0
    );
}

/// 100 chats × 20 messages at once: every transcript complete, in order, without gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_chats_keep_whole_ordered_transcripts() {
    let gw = gateway().start().await;
    let c = gw.client();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let chat = c.request_chat(&format!("c{i}")).await;
            // Messages to one chat are sent concurrently too.
            let sends = (0..20).map(|j| {
                let (c, chat) = (c.clone(), chat.clone());
                async move {
                    let r = c
                        .op(&chat, "SendMessage", json!({"text": format!("{i}:{j}")}))
                        .await;
                    assert_eq!(r.status_code(), 0, "{:#}", r.body);
                }
            });
            futures::future::join_all(sends).await;
            chat
        }));
    }
    for t in tasks {
        let chat = t.await.unwrap();
        let r = c.messages(&chat, None).await;
        let msgs = r.messages();
        assert_contiguous(msgs, 1);
        let mut mine: Vec<&str> = msgs
            .iter()
            .filter(|m| m["from"]["type"] == "Client" && m["type"] == "Message")
            .map(|m| m["text"].as_str().unwrap())
            .collect();
        assert_eq!(mine.len(), 20, "every acknowledged message is there once");
        mine.sort();
        mine.dedup();
        assert_eq!(mine.len(), 20);
        assert_eq!(r.body["nextPosition"].as_u64(), Some(msgs.len() as u64 + 1));
    }
}

/// No per-chat state pins a chat to a gateway: a second gateway with the same secret, over
/// the same chat servers, serves the same chat.
#[tokio::test]
async fn replicas_with_the_same_secret_serve_the_same_chats() {
    let a = gateway().start().await;
    let b = gateway().start_with(Some(a.engines.clone())).await;
    let chat = a.client().request_chat("Ann").await;
    let r = b
        .client()
        .op(&chat, "SendMessage", json!({"text": "via b"}))
        .await;
    assert_eq!(r.status_code(), 0);
    let r = a.client().messages(&chat, None).await;
    assert!(r.messages().iter().any(|m| m["text"] == "via b"));
    // A replica with another secret refuses the key before the chat server sees it.
    let other = gateway()
        .env(
            "GATEWAY__CREDENTIALS__SECRET",
            "another-secret-0123456789abcdef012345",
        )
        .start_with(Some(a.engines.clone()))
        .await;
    other
        .client()
        .op(&chat, "GetChat", json!({}))
        .await
        .assert_error(401, 2, 200);
}
