//! The GMS dialect front end, driven as GMS clients drive it: requests built from the
//! examples in gms-v2.md, `refresh` polled with each reply's `nextPosition`, file transfer.

mod common;

use chat_engine::FileRules;
use common::gms::{GmsChat, GmsClient};
use common::{gateway, types, Chat, TestGateway};
use serde_json::{json, Value};

const SERVICES: &str = r#"
[[gms.services]]
name = "customer-support"
tenant = "Environment"
[[gms.services]]
name = "sales"
tenant = "Other"
endpoint = "sales-queue"
api_key = "sales-key-0123456789"
[[gms.services]]
name = "other-support"
tenant = "Other"
[gms.tenant_api_keys]
Other = "other-tenant-key-0123"
"#;

async fn start() -> TestGateway {
    gateway()
        .toml(SERVICES)
        .behaviour(|b| {
            b.files = FileRules {
                max_files: 3,
                max_file_size: 1000,
                max_total_size: 1500,
                file_types: vec!["txt".into(), "png".into()],
                ..FileRules::default()
            }
        })
        .start()
        .await
}

#[tokio::test]
async fn request_chat_and_poll_with_next_position() {
    let gw = start().await;
    let c = GmsClient::new(&gw.base, "customer-support").header("gms_user", "user-1");
    // The fields of the request chat row in gms-v2.md.
    let r = c
        .post(
            "",
            &[
                ("firstName", "First"),
                ("lastName", "Last"),
                ("subject", "Question"),
                ("emailAddress", "first.last@example.com"),
                ("userData[TimeZone]", "120"),
                ("userData[key1]", "value1"),
            ],
        )
        .await;
    assert_eq!((r.http, r.status_code()), (200, 0), "{:#}", r.body);
    let b = &r.body;
    for field in ["alias", "userId", "secureKey", "chatId"] {
        assert!(b[field].as_str().is_some_and(|s| !s.is_empty()), "{field}");
    }
    assert_eq!(b["chatEnded"], false);
    assert_eq!(
        r.messages()[0],
        json!({"from":{"nickname":"First Last","participantId":1,"type":"Client"},
               "index":1,"type":"ParticipantJoined","utcTime":r.messages()[0]["utcTime"]})
    );
    let mut chat = GmsChat {
        chat_id: b["chatId"].as_str().unwrap().into(),
        user_id: b["userId"].as_str().unwrap().into(),
        secure_key: b["secureKey"].as_str().unwrap().into(),
        alias: b["alias"].as_str().unwrap().into(),
        next_position: 1,
    };
    // Polling from 1 then with each nextPosition: every event exactly once, in order.
    let mut seen = c.poll_until(&mut chat, "Message").await;
    let r = c
        .op(
            &chat,
            "send",
            &[
                ("message", "Hello"),
                ("transcriptPosition", &chat.next_position.to_string()),
            ],
        )
        .await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    // send with transcriptPosition returns the transcript from there.
    assert_eq!(r.messages().last().unwrap()["text"], "Hello");
    let own = r.messages().len() as u64;
    seen.extend(r.messages().iter().cloned());
    chat.next_position += own;
    assert_eq!(r.body["nextPosition"].as_u64(), Some(chat.next_position));
    // The agent answers (mock: agent joins at once, replies at once).
    loop {
        let got = c.poll_until(&mut chat, "Message").await;
        let agent = got.iter().any(|m| m["from"]["type"] == "Agent");
        seen.extend(got);
        if agent && seen.last().unwrap()["from"]["type"] == "Agent" {
            break;
        }
    }
    let indexes: Vec<u64> = seen.iter().map(|m| m["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, (1..=indexes.len() as u64).collect::<Vec<_>>());
    assert_eq!(chat.next_position, indexes.len() as u64 + 1);
    // refresh also reports the chat's user data.
    let r = c.refresh(&mut chat).await;
    assert_eq!(r.body["userData"]["TimeZone"], "120");
    assert!(r.messages().is_empty());
}

#[tokio::test]
async fn every_operation_with_gms_event_names() {
    let gw = start().await;
    let c = GmsClient::new(&gw.base, "customer-support");
    let mut chat = c.request_chat(&[("nickname", "Ann")]).await;
    c.poll_until(&mut chat, "Message").await;
    for (op, fields, expect) in [
        ("startTyping", vec![("message", "Hel")], "TypingStarted"),
        ("stopTyping", vec![], "TypingStopped"),
        (
            "pushUrl",
            vec![("pushUrl", "https://example.com/a")],
            "PushUrl",
        ),
        (
            "updateNickname",
            vec![("nickname", "Anna")],
            "NicknameUpdated",
        ),
        ("customNotice", vec![("message", "note")], "CustomNotice"),
    ] {
        let r = c.op(&chat, op, &fields).await;
        assert_eq!((r.http, r.status_code()), (200, 0), "{op}: {:#}", r.body);
        assert_eq!(r.body["chatEnded"], false);
        let got = c.poll_until(&mut chat, expect).await;
        assert!(types(&got).contains(&expect), "{op}");
    }
    let r = c
        .op(
            &chat,
            "updateData",
            &[("userData[k1]", "v1"), ("userData[k2]", "v2")],
        )
        .await;
    assert_eq!(r.status_code(), 0);
    let r = c.refresh(&mut chat).await;
    assert_eq!(r.body["userData"]["k1"], "v1");
    assert_eq!(r.body["userData"]["k2"], "v2");

    // The same chat in the Web API dialect: PushUrl and NicknameUpdated are Notices there.
    let web = gw.client();
    let web_chat = Chat {
        chat_id: chat.chat_id.clone(),
        user_id: chat.user_id.clone(),
        secure_key: chat.secure_key.clone(),
        alias: chat.alias.clone(),
        tenant: "Environment".into(),
    };
    let r = web.messages(&web_chat, None).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let web_types = types(r.messages());
    assert!(!web_types.contains(&"PushUrl") && !web_types.contains(&"NicknameUpdated"));
    assert!(web_types.contains(&"Notice"));
    let r = web.op(&web_chat, "GetChat", json!({})).await;
    assert_eq!(r.body["userData"]["k1"], "v1");

    let r = c.op(&chat, "disconnect", &[]).await;
    assert_eq!((r.status_code(), &r.body["chatEnded"]), (0, &json!(true)));
    let r = c.op(&chat, "send", &[("message", "late")]).await;
    r.assert_error(409, 2, 211);
    assert_eq!(r.body["chatEnded"], true);
    assert_eq!(r.body["chatId"], chat.chat_id.as_str());
    // Reading still works.
    let r = c.refresh(&mut chat).await;
    assert_eq!((r.status_code(), &r.body["chatEnded"]), (0, &json!(true)));
}

#[tokio::test]
async fn a_web_api_chat_continues_in_gms() {
    let gw = start().await;
    let web = gw.client();
    let chat = web.request_chat("Bob").await;
    let c = GmsClient::new(&gw.base, "customer-support");
    let mut g = GmsChat {
        chat_id: chat.chat_id.clone(),
        user_id: chat.user_id.clone(),
        secure_key: chat.secure_key.clone(),
        alias: chat.alias.clone(),
        next_position: 1,
    };
    let r = c
        .op(&g, "pushUrl", &[("pushUrl", "https://example.com")])
        .await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let got = c.poll_until(&mut g, "PushUrl").await;
    assert_eq!(got[0]["from"]["nickname"], "Bob");
    // The service maps to the chat's tenant: another tenant's service is refused.
    let other = GmsClient::new(&gw.base, "sales").header("apikey", "sales-key-0123456789");
    other.op(&g, "refresh", &[]).await.assert_error(401, 2, 200);
}

#[tokio::test]
async fn services_api_keys_and_bad_requests() {
    let gw = start().await;
    let base = &gw.base;
    GmsClient::new(base, "nope")
        .post("", &[("nickname", "n")])
        .await
        .assert_error(404, 2, 501);
    let sales = GmsClient::new(base, "sales");
    sales
        .post("", &[("nickname", "n")])
        .await
        .assert_error(401, 2, 502);
    sales
        .clone()
        .header("apikey", "wrong-key-0123456789")
        .post("", &[("nickname", "n")])
        .await
        .assert_error(401, 2, 502);
    for header in ["apikey", "x-api-key"] {
        let c = sales.clone().header(header, "sales-key-0123456789");
        let chat = c.request_chat(&[("nickname", "n")]).await;
        assert_eq!(chat.next_position, 1);
    }
    // A tenant's key covers its services that set none.
    let other = GmsClient::new(base, "other-support");
    other
        .post("", &[("nickname", "n")])
        .await
        .assert_error(401, 2, 502);
    other
        .header("x-api-key", "other-tenant-key-0123")
        .request_chat(&[("nickname", "n")])
        .await;
    let c = GmsClient::new(base, "customer-support");
    c.post("", &[("subject", "no name")])
        .await
        .assert_error(400, 2, 102);
    let chat = c.request_chat(&[("nickname", "n")]).await;
    c.op(&chat, "send", &[]).await.assert_error(400, 2, 102);
    c.op(&chat, "teleport", &[]).await.assert_error(404, 2, 120);
    let mut forged = chat.clone();
    let last = if chat.secure_key.ends_with('0') {
        "1"
    } else {
        "0"
    };
    forged.secure_key = format!("{}{last}", &chat.secure_key[..chat.secure_key.len() - 1]);
    let before = gw.backend_requests();
    let r = c.op(&forged, "send", &[("message", "x")]).await;
    r.assert_error(401, 2, 200);
    assert_eq!(
        r.body["chatEnded"], false,
        "every GMS reply states chatEnded"
    );
    assert_eq!(
        gw.backend_requests(),
        before,
        "a forged key never reaches a backend"
    );
    // Not a form.
    let r = gw
        .client()
        .post_raw(
            &format!("/genesys/2/chat/customer-support/{}/refresh", chat.chat_id),
            Some("application/xml"),
            b"<x/>".to_vec(),
        )
        .await;
    r.assert_error(415, 2, 110);
}

#[tokio::test]
async fn file_upload_download_delete_and_limits() {
    let gw = start().await;
    let c = GmsClient::new(&gw.base, "customer-support");
    let mut chat = c.request_chat(&[("nickname", "Ann")]).await;
    let limits = |r: &common::Reply, k: &str| r.body["userData"][k].as_str().unwrap().to_owned();

    let r = c.op(&chat, "file/limits", &[]).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    assert_eq!(limits(&r, "upload-max-files"), "3");
    assert_eq!(limits(&r, "upload-max-file-size"), "1000");
    assert_eq!(limits(&r, "upload-max-total-size"), "1500");
    assert_eq!(limits(&r, "upload-file-types"), "txt:png");
    assert_eq!(limits(&r, "used-upload-max-files"), "0");

    let content = b"hello, file".to_vec();
    let r = c
        .upload(&chat, "notes.txt", "text/plain", content.clone())
        .await;
    assert_eq!((r.http, r.status_code()), (200, 0), "{:#}", r.body);
    let id = r.body["userData"]["file-id"].as_str().unwrap().to_owned();
    let got = c.poll_until(&mut chat, "FileUploaded").await;
    let event = got.iter().find(|m| m["type"] == "FileUploaded").unwrap();
    assert_eq!(event["userData"]["file-id"], id.as_str());
    assert_eq!(event["userData"]["file-name"], "notes.txt");
    assert_eq!(event["userData"]["file-description"], "a test file");
    assert_eq!(event["text"], "notes.txt");

    let (status, ct, bytes) = c.download(&chat, &id).await;
    assert_eq!(
        (status, ct.as_str(), bytes),
        (200, "text/plain", content.clone())
    );

    // Limits: type, size, total, count.
    c.upload(&chat, "run.exe", "application/octet-stream", vec![0; 10])
        .await
        .assert_error(415, 2, 513);
    c.upload(&chat, "big.png", "image/png", vec![1; 1001])
        .await
        .assert_error(413, 2, 510);
    let r = c.upload(&chat, "a.png", "image/png", vec![2; 1000]).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    c.upload(&chat, "b.png", "image/png", vec![3; 600])
        .await
        .assert_error(400, 2, 512);
    let r = c.upload(&chat, "c.txt", "text/plain", vec![4; 10]).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    c.upload(&chat, "d.txt", "text/plain", vec![5; 1])
        .await
        .assert_error(400, 2, 511);
    let r = c.op(&chat, "file/limits", &[]).await;
    assert_eq!(limits(&r, "used-upload-max-files"), "3");
    assert_eq!(
        limits(&r, "used-upload-max-total-size"),
        (content.len() + 1010).to_string()
    );

    // Delete: a FileDeleted event, and the file is gone.
    let r = c.op(&chat, &format!("file/{id}/delete"), &[]).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let got = c.poll_until(&mut chat, "FileDeleted").await;
    let event = got.iter().find(|m| m["type"] == "FileDeleted").unwrap();
    assert_eq!(event["userData"]["file-id"], id.as_str());
    let (status, _, bytes) = c.download(&chat, &id).await;
    assert_eq!(status, 404);
    let err: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(err["errors"][0]["code"], 515);
    // A body without a file part, and a body past gms.max_upload_bytes.
    c.op(&chat, "file", &[]).await.assert_error(400, 2, 102);
    let r = c
        .upload(&chat, "huge.txt", "text/plain", vec![b'x'; 2 * 1024 * 1024])
        .await;
    r.assert_error(413, 2, 111);
    // After the chat ends, no more uploads.
    c.op(&chat, "disconnect", &[]).await;
    c.upload(&chat, "e.txt", "text/plain", vec![1])
        .await
        .assert_error(409, 2, 211);
}
