//! GMS reply shapes real clients read: `file/limits` with the limits in its
//! `file-client-cfg-get` Notice (the browser widget), and `readReceipt` (all three public
//! clients call it; two throw on a 404).

use chat_engine::FileRules;
use serde_json::json;

use crate::common::gms::GmsClient;
use crate::common::{gateway, Chat, TestGateway};

async fn start() -> TestGateway {
    gateway()
        .toml("[[gms.services]]\nname = \"customer-support\"\ntenant = \"Environment\"\n")
        .behaviour(|b| {
            b.files = FileRules {
                max_files: 3,
                max_file_size: 1000,
                max_total_size: 1500,
                file_types: vec!["txt".into()],
                download_attempts: 4,
                ..FileRules::default()
            }
        })
        .start()
        .await
}

/// Every key GMS sends in the limits Notice.
const LIMIT_KEYS: [&str; 10] = [
    "upload-max-files",
    "upload-max-file-size",
    "upload-max-total-size",
    "upload-file-types",
    "upload-need-agent",
    "used-upload-max-files",
    "used-upload-max-total-size",
    "download-attempts",
    "used-download-attempts",
    "delete-file",
];

#[tokio::test]
async fn browser_widget_reads_file_limits_from_the_first_messages_user_data() {
    let gw = start().await;
    let c = GmsClient::new(&gw.base, "customer-support");
    let mut chat = c.request_chat(&[("nickname", "Ann")]).await;
    let r = c.op(&chat, "file/limits", &[]).await;
    assert_eq!((r.http, r.status_code()), (200, 0), "{:#}", r.body);
    let notice = &r.body["messages"][0];
    assert_eq!(notice["type"], "Notice", "{:#}", r.body);
    assert_eq!(notice["text"], "file-client-cfg-get");
    for key in LIMIT_KEYS {
        assert!(notice["userData"][key].is_string(), "{key}: {:#}", r.body);
    }
    assert_eq!(notice["userData"]["upload-max-files"], "3");
    assert_eq!(notice["userData"]["download-attempts"], "4");
    assert_eq!(notice["userData"]["used-download-attempts"], "0");
    // The top-level copy stays, for clients that read it there.
    assert_eq!(r.body["userData"], notice["userData"]);

    // A download counts in `used-download-attempts`.
    c.poll_until(&mut chat, "ParticipantJoined").await;
    let up = c
        .upload(&chat, "notes.txt", "text/plain", b"hi".to_vec())
        .await;
    assert_eq!(up.status_code(), 0, "{:#}", up.body);
    let id = up.body["userData"]["file-id"].as_str().unwrap().to_owned();
    assert_eq!(c.download(&chat, &id).await.0, 200);
    let r = c.op(&chat, "file/limits", &[]).await;
    assert_eq!(
        r.body["messages"][0]["userData"]["used-download-attempts"],
        "1"
    );
    assert_eq!(
        r.body["messages"][0]["userData"]["used-upload-max-files"],
        "1"
    );
}

#[tokio::test]
async fn clients_send_read_receipts_and_the_agent_side_sees_the_read_marker() {
    let gw = start().await;
    let c = GmsClient::new(&gw.base, "customer-support");
    let mut chat = c.request_chat(&[("nickname", "Ann")]).await;
    let events = c.poll_until(&mut chat, "Message").await;
    let last = events.last().unwrap()["index"].as_u64().unwrap();

    let r = c
        .op(
            &chat,
            "readReceipt",
            &[("transcriptPosition", &last.to_string())],
        )
        .await;
    assert_eq!((r.http, r.status_code()), (200, 0), "{:#}", r.body);
    assert_eq!(r.body["chatEnded"], false);
    assert_eq!(
        r.body["messages"],
        json!([]),
        "a receipt sends nothing back"
    );
    // The receipt adds no event: the next refresh has nothing new from the customer.
    let again = c.refresh(&mut chat).await;
    assert!(again
        .messages()
        .iter()
        .all(|m| m["from"]["type"] != "Client"));

    // The chat's state shows it: GetChat (the Web API view of the same chat).
    let web = gw.client();
    let same = Chat {
        chat_id: chat.chat_id.clone(),
        user_id: chat.user_id.clone(),
        secure_key: chat.secure_key.clone(),
        alias: chat.alias.clone(),
        tenant: "Environment".into(),
    };
    let r = web.op(&same, "GetChat", json!({})).await;
    assert_eq!(r.body["readPosition"], last, "{:#}", r.body);
    // The Web API counterpart moves it too (never backwards, never past the end).
    let r = web
        .op(&same, "ReadReceipt", json!({"transcriptPosition": 1}))
        .await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let r = web.op(&same, "GetChat", json!({})).await;
    assert_eq!(r.body["readPosition"], last);

    // Without a position, or with the wrong key, it is refused like every operation.
    c.op(&chat, "readReceipt", &[])
        .await
        .assert_error(400, 2, 102);
    let mut forged = chat.clone();
    forged.secure_key = "0".repeat(chat.secure_key.len());
    c.op(&forged, "readReceipt", &[("transcriptPosition", "1")])
        .await
        .assert_error(401, 2, 200);
}
