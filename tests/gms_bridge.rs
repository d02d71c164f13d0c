//! The migration bridge over real processes: gateway A (Web API front end, `kind = "http"`
//! instance) in front of gateway B (GMS front end, mock backend), each a `webapi-gateway`
//! process on 127.0.0.1:0. And A in front of a scripted GMS, to see the exact GMS calls and
//! the GMS alias carried through.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::gms::GmsClient;
use common::{eventually, types, Chat, Client};
use serde_json::{json, Value};

/// A `webapi-gateway` process and the address it listens on.
struct Process {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Process {
    /// Starts the binary on `toml` (which listens on 127.0.0.1:0) and learns its address
    /// from the `addr=` log line.
    fn start(toml: &str) -> Process {
        let dir = std::env::temp_dir().join(format!("gwbridge-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.toml");
        std::fs::write(&path, toml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_webapi-gateway"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            // Several gateways run at once: each takes its own admin port.
            .env("GATEWAY__ADMIN__LISTEN", "127.0.0.1:0")
            .env("GATEWAY__EMAIL__SPOOL_DIR", dir.join("spool"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the process ended before listening")
                .unwrap();
            if let Some(i) = line.find("addr=") {
                break line[i + 5..].split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining the log so the process never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Process { child, addr, dir }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Gateway B: the GMS dialect over the embedded mock.
fn gateway_b(session_limit: u64) -> Process {
    Process::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[credentials]
secret = "gateway-b-secret-0123456789abcdef0123"
[[tenants]]
name = "Environment"
[[chat.instances]]
alias = "117"
kind = "mock"
[[chat.instances]]
alias = "118"
kind = "mock"
[mock]
agent_join_delay_ms = 0
agent_reply_delay_ms = 0
session_limit = {session_limit}
[[gms.services]]
name = "customer-support"
tenant = "Environment"
"#
    ))
}

/// Gateway A: the Web API dialect over one `http` instance pointing at `gms`.
fn gateway_a(gms: &str) -> Process {
    gateway_a_with(gms, "")
}

/// Gateway A with extra TOML (e.g. its own GMS dialect services).
fn gateway_a_with(gms: &str, extra: &str) -> Process {
    Process::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
request_timeout_ms = 8000
[credentials]
secret = "gateway-a-secret-0123456789abcdef0123"
[[tenants]]
name = "Environment"
[[tenants]]
name = "Other"
[[chat.instances]]
alias = "gms"
kind = "http"
[chat.instances.http]
base_url = "{gms}"
service = "customer-support"
connect_timeout_ms = 1000
request_timeout_ms = 4000
[chat.instances.http.services]
Other = "no-such-service"
{extra}
"#
    ))
}

fn client(p: &Process) -> Client {
    Client {
        base: p.base(),
        http: reqwest::Client::new(),
    }
}

#[tokio::test]
async fn every_web_api_operation_through_gms() {
    let b = gateway_b(100);
    let a = gateway_a(&b.base());
    let c = client(&a);
    let chat = c.request_chat("Ann").await;
    assert_eq!(chat.alias, "gms", "the client sees A's instance alias");

    let r = c.op(&chat, "GetChat", json!({})).await;
    assert_eq!((r.http, r.status_code()), (200, 0), "{:#}", r.body);
    assert!(["WaitingForAgent", "Chatting"].contains(&r.body["state"].as_str().unwrap()));
    assert_eq!(
        r.body["participants"][0],
        json!({"nickname":"Ann","participantId":1,"type":"Client"})
    );
    assert_eq!(r.body["secureKey"], chat.secure_key.as_str());

    for (op, extra) in [
        ("SendMessage", json!({"text": "Hello"})),
        ("SendStartTypingNotification", json!({})),
        ("SendStopTypingNotification", json!({})),
        ("UpdateUserNickname", json!({"nickname": "Anna"})),
        ("SendUrl", json!({"pushUrl": "https://example.com/page"})),
        ("UpdateUserData", json!({"userData": {"key1": "value1"}})),
    ] {
        let r = c.op(&chat, op, extra).await;
        assert_eq!((r.http, r.status_code()), (200, 0), "{op}: {:#}", r.body);
        assert_eq!(r.body["alias"], "gms");
        assert_eq!(r.body["chatEnded"], false);
    }
    // The agent (on B's mock) answers; Get Messages polls for it.
    let all = eventually("the agent's answer", Duration::from_secs(10), || async {
        let r = c.messages(&chat, Some(1)).await;
        assert_eq!(r.status_code(), 0, "{:#}", r.body);
        let msgs = r.messages().clone();
        let answered = msgs
            .iter()
            .filter(|m| m["type"] == "Message" && m["from"]["type"] == "Agent")
            .count()
            >= 2;
        answered.then_some((msgs, r.body["nextPosition"].as_u64().unwrap()))
    })
    .await;
    let (msgs, next) = all;
    let t = types(&msgs);
    for expected in [
        "ParticipantJoined",
        "Message",
        "TypingStarted",
        "TypingStopped",
        "Notice",
    ] {
        assert!(t.contains(&expected), "{expected} in {t:?}");
    }
    assert!(
        !t.contains(&"PushUrl"),
        "the Web API dialect says Notice: {t:?}"
    );
    let indexes: Vec<u64> = msgs.iter().map(|m| m["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, (1..=indexes.len() as u64).collect::<Vec<_>>());
    assert_eq!(next, indexes.len() as u64 + 1);
    let r = c.messages(&chat, Some(3)).await;
    assert_eq!(r.messages()[0]["index"], 3);
    let r = c.messages(&chat, Some(0)).await;
    assert!(r.messages().is_empty());
    assert_eq!(r.body["nextPosition"].as_u64(), Some(next));

    let r = c.op(&chat, "GetChat", json!({})).await;
    assert_eq!(r.body["state"], "Chatting");
    assert_eq!(r.body["userData"]["key1"], "value1");
    let parts = r.body["participants"].as_array().unwrap();
    assert!(parts.contains(&json!({"nickname":"Anna","participantId":1,"type":"Client"})));
    assert!(parts.iter().any(|p| p["type"] == "Agent"));

    let r = c.op(&chat, "Complete", json!({})).await;
    assert_eq!((r.status_code(), &r.body["chatEnded"]), (0, &json!(true)));
    let r = c.op(&chat, "GetChat", json!({})).await;
    assert_eq!((r.status_code(), &r.body["state"]), (0, &json!("Idle")));
    // B's refusal (statusCode 2, its code 211, chatEnded) passes through A.
    let r = c.op(&chat, "SendMessage", json!({"text": "late"})).await;
    r.assert_error(409, 2, 211);
    assert_eq!(r.body["chatEnded"], true);
}

#[tokio::test]
async fn errors_at_a_at_b_and_with_b_gone() {
    let mut b = gateway_b(100);
    let a = gateway_a(&b.base());
    let c = client(&a);
    let chat = c.request_chat("Ann").await;

    // Refused at A: a forged key, an unknown alias.
    let mut forged = chat.clone();
    forged.secure_key.replace_range(
        0..1,
        if chat.secure_key.starts_with('0') {
            "1"
        } else {
            "0"
        },
    );
    c.op(&forged, "GetChat", json!({}))
        .await
        .assert_error(401, 2, 200);
    let lost = Chat {
        alias: "999".into(),
        ..chat.clone()
    };
    c.op(&lost, "GetChat", json!({}))
        .await
        .assert_error(400, 2, 201);

    // Refused at B, passed through: tenant Other maps to a service B does not know.
    let r = c
        .post(
            "/api/v2/chats",
            json!({"tenantName": "Other", "nickname": "n"}),
        )
        .await;
    r.assert_error(400, 2, 501);

    // B gone: statusCode 1 at A, for new chats and existing ones.
    b.stop();
    c.post(
        "/api/v2/chats",
        json!({"tenantName": "Environment", "nickname": "n"}),
    )
    .await
    .assert_error(503, 1, 301);
    c.op(&chat, "SendMessage", json!({"text": "anyone?"}))
        .await
        .assert_error(503, 1, 301);
}

#[tokio::test]
async fn gms_statuscode_1_passes_through() {
    let b = gateway_b(1);
    let a = gateway_a(&b.base());
    let c = client(&a);
    c.request_chat("first").await;
    // B's mock instances are full (two instances, one chat each).
    c.request_chat("second").await;
    let r = c
        .post(
            "/api/v2/chats",
            json!({"tenantName": "Environment", "nickname": "third"}),
        )
        .await;
    r.assert_error(503, 1, 300);
}

/// What the scripted GMS received: (operation path tail, form fields).
type Calls = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

/// A scripted GMS: request chat answers alias 117; every later call answers alias 118, as
/// after a GMS node failover.
async fn scripted_gms() -> (String, Calls) {
    use axum::extract::{Path, State};
    use axum::routing::post;
    let calls: Calls = Arc::default();
    async fn create(
        State(calls): State<Calls>,
        Path(svc): Path<String>,
        headers: axum::http::HeaderMap,
        body: String,
    ) -> axum::Json<Value> {
        let mut fields = pairs(&body);
        if let Some(id) = headers.get("x-request-id") {
            fields.push(("header:x-request-id".into(), id.to_str().unwrap().into()));
        }
        calls.lock().unwrap().push((svc, fields));
        axum::Json(
            json!({"statusCode":0,"alias":"117","userId":"007555677B20000A",
            "secureKey":"4ee15d7e1c343c8e","chatId":"00048aAPEQJ8000U","chatEnded":false,
            "nextPosition":2,"messages":[{"from":{"nickname":"First Last","participantId":1,
            "type":"Client"},"index":1,"type":"ParticipantJoined","utcTime":1432845088000u64}]}),
        )
    }
    async fn op(
        State(calls): State<Calls>,
        Path((_svc, _chat, op)): Path<(String, String, String)>,
        body: String,
    ) -> axum::Json<Value> {
        calls.lock().unwrap().push((op, pairs(&body)));
        axum::Json(
            json!({"statusCode":0,"alias":"118","userId":"007555677B20000A",
            "secureKey":"4ee15d7e1c343c8e","chatId":"00048aAPEQJ8000U","chatEnded":false,
            "nextPosition":2,"messages":[]}),
        )
    }
    let app = axum::Router::new()
        .route("/genesys/2/chat/{svc}", post(create))
        .route("/genesys/2/chat/{svc}/{chat}/{op}", post(op))
        .with_state(Arc::clone(&calls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, calls)
}

fn pairs(body: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test]
async fn gms_calls_are_form_encoded_and_the_gms_alias_is_carried() {
    let (gms, calls) = scripted_gms().await;
    let a = gateway_a(&gms);
    let c = client(&a);
    let r = c
        .post(
            "/api/v2/chats",
            json!({"tenantName":"Environment","nickname":"First Last","subject":"s",
                   "userData":{"key1":"value1"}}),
        )
        .await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let chat = Chat {
        chat_id: r.body["chatId"].as_str().unwrap().into(),
        user_id: r.body["userId"].as_str().unwrap().into(),
        secure_key: r.body["secureKey"].as_str().unwrap().into(),
        alias: "gms".into(),
        tenant: "Environment".into(),
    };
    assert_eq!(chat.chat_id, "00048aAPEQJ8000U");
    let field = |call: &(String, Vec<(String, String)>), k: &str| {
        call.1.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    };
    {
        let calls = calls.lock().unwrap();
        assert_eq!(calls[0].0, "customer-support");
        // The gateway's request id went along to GMS.
        assert!(field(&calls[0], "header:x-request-id").is_some_and(|id| !id.is_empty()));
        assert_eq!(field(&calls[0], "nickname").as_deref(), Some("First Last"));
        assert_eq!(
            field(&calls[0], "userData[key1]").as_deref(),
            Some("value1")
        );
    }
    // GMS answers alias 118 now: A hands out a new key carrying it.
    let r = c.op(&chat, "SendMessage", json!({"text": "hi"})).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let new_key = r.body["secureKey"].as_str().unwrap().to_owned();
    assert_ne!(new_key, chat.secure_key);
    let moved = Chat {
        secure_key: new_key,
        ..chat.clone()
    };
    let r = c
        .op(&moved, "UpdateUserData", json!({"userData": {"a": "1"}}))
        .await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    c.messages(&moved, Some(2)).await;
    let calls = calls.lock().unwrap();
    let send = &calls[1];
    assert_eq!(send.0, "send");
    assert_eq!(field(send, "message").as_deref(), Some("hi"));
    assert_eq!(field(send, "alias").as_deref(), Some("117"));
    assert_eq!(
        field(send, "secureKey").as_deref(),
        Some("4ee15d7e1c343c8e")
    );
    assert_eq!(field(send, "userId").as_deref(), Some("007555677B20000A"));
    let update = &calls[2];
    assert_eq!(update.0, "updateData");
    assert_eq!(field(update, "userData[a]").as_deref(), Some("1"));
    assert_eq!(
        field(update, "alias").as_deref(),
        Some("118"),
        "the new GMS alias is used"
    );
    let refresh = &calls[3];
    assert_eq!(refresh.0, "refresh");
    assert_eq!(field(refresh, "transcriptPosition").as_deref(), Some("2"));
}

#[tokio::test]
async fn gms_clients_and_files_through_both_gateways() {
    let b = gateway_b(100);
    let a = gateway_a_with(
        &b.base(),
        "[[gms.services]]\nname = \"customer-support\"\ntenant = \"Environment\"\n",
    );
    // A GMS client on A: A's GMS dialect → A's http instance → B's GMS dialect → B's mock.
    let c = GmsClient::new(&a.base(), "customer-support");
    let mut chat = c.request_chat(&[("nickname", "Ann")]).await;
    assert_eq!(chat.alias, "gms");
    c.poll_until(&mut chat, "Message").await;
    let r = c
        .op(&chat, "pushUrl", &[("pushUrl", "https://example.com")])
        .await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    c.poll_until(&mut chat, "PushUrl").await;

    let r = c.op(&chat, "file/limits", &[]).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    assert_eq!(r.body["userData"]["upload-max-files"], "5");
    assert_eq!(r.body["userData"]["used-upload-max-files"], "0");
    let content = b"%PDF-1.4 not really".to_vec();
    let r = c
        .upload(&chat, "report.pdf", "application/pdf", content.clone())
        .await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let id = r.body["userData"]["file-id"].as_str().unwrap().to_owned();
    let got = c.poll_until(&mut chat, "FileUploaded").await;
    let event = got.iter().find(|m| m["type"] == "FileUploaded").unwrap();
    assert_eq!(event["userData"]["file-name"], "report.pdf");
    assert_eq!(event["userData"]["file-description"], "a test file");
    let (status, ct, bytes) = c.download(&chat, &id).await;
    assert_eq!(
        (status, ct.as_str(), bytes),
        (200, "application/pdf", content)
    );
    // B's refusals pass through A with B's codes.
    let r = c
        .upload(&chat, "run.exe", "application/octet-stream", vec![1])
        .await;
    assert_eq!((r.status_code(), r.error_code()), (2, 513), "{:#}", r.body);
    let r = c.op(&chat, &format!("file/{id}/delete"), &[]).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    c.poll_until(&mut chat, "FileDeleted").await;
    let (status, _, bytes) = c.download(&chat, &id).await;
    let err: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (status, &err["statusCode"], &err["errors"][0]["code"]),
        (400, &json!(2), &json!(515))
    );
}

/// A GMS that starts chats, never answers `send`, and fails `startTyping` with a bare 500.
async fn stalling_gms() -> (String, Arc<Mutex<u32>>) {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    let sends: Arc<Mutex<u32>> = Arc::default();
    async fn create() -> axum::Json<Value> {
        axum::Json(
            json!({"statusCode":0,"alias":"117","userId":"U","secureKey":"K",
            "chatId":"C","chatEnded":false,"nextPosition":1,"messages":[]}),
        )
    }
    async fn op(
        State(sends): State<Arc<Mutex<u32>>>,
        Path((_svc, _chat, op)): Path<(String, String, String)>,
    ) -> Response {
        match op.as_str() {
            "send" => {
                *sends.lock().unwrap() += 1;
                std::future::pending::<()>().await;
                unreachable!()
            }
            "startTyping" => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
            _ => (StatusCode::NOT_FOUND, "<html>not here</html>").into_response(),
        }
    }
    let app = axum::Router::new()
        .route("/genesys/2/chat/{svc}", post(create))
        .route("/genesys/2/chat/{svc}/{chat}/{op}", post(op))
        .with_state(Arc::clone(&sends));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, sends)
}

#[tokio::test]
async fn timeouts_and_5xx_are_statuscode_1_and_send_is_never_repeated() {
    let (gms, sends) = stalling_gms().await;
    let a = Process::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
[credentials]
secret = "gateway-a-secret-0123456789abcdef0123"
[[tenants]]
name = "Environment"
[[chat.instances]]
alias = "gms"
kind = "http"
[chat.instances.http]
base_url = "{gms}"
request_timeout_ms = 300
"#
    ));
    let c = client(&a);
    let chat = c.request_chat("Ann").await;
    let r = c.op(&chat, "SendMessage", json!({"text": "once"})).await;
    r.assert_error(500, 1, 302);
    assert_eq!(
        *sends.lock().unwrap(),
        1,
        "SendMessage reached GMS exactly once"
    );
    c.op(&chat, "SendStartTypingNotification", json!({}))
        .await
        .assert_error(500, 1, 302);
    // Not a GMS reply and not a 5xx: the request is refused as it is (statusCode 2).
    c.op(&chat, "Complete", json!({}))
        .await
        .assert_error(400, 2, 212);
}

/// Gateway A with one `http` instance in the Web API dialect in front of `remote` (another
/// gateway's Web API front end), and the GMS dialect on A for GMS clients.
fn gateway_a_webapi(remote: &str) -> Process {
    Process::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
request_timeout_ms = 8000
[credentials]
secret = "gateway-a-secret-0123456789abcdef0123"
[[tenants]]
name = "Environment"
[[tenants]]
name = "Other"
[[chat.instances]]
alias = "wa"
kind = "http"
[chat.instances.http]
dialect = "webapi"
base_url = "{remote}"
connect_timeout_ms = 1000
request_timeout_ms = 4000
[[gms.services]]
name = "customer-support"
tenant = "Environment"
"#
    ))
}

/// Gateway B listening on a given address (to restart it where A expects it).
fn gateway_b_at(listen: &str) -> Process {
    Process::start(&format!(
        r#"
[server]
listen = "{listen}"
[credentials]
secret = "gateway-b-secret-0123456789abcdef0123"
[[tenants]]
name = "Environment"
[[chat.instances]]
alias = "117"
kind = "mock"
[mock]
agent_join_delay_ms = 0
agent_reply_delay_ms = 0
"#
    ))
}

#[tokio::test]
async fn every_web_api_operation_through_a_web_api_remote() {
    let b = gateway_b(100);
    let a = gateway_a_webapi(&b.base());
    let c = client(&a);
    let chat = c.request_chat("Ann").await;
    assert_eq!(chat.alias, "wa", "the client sees A's instance alias");

    let r = c.op(&chat, "GetChat", json!({})).await;
    assert_eq!((r.http, r.status_code()), (200, 0), "{:#}", r.body);
    assert!(["WaitingForAgent", "Chatting"].contains(&r.body["state"].as_str().unwrap()));
    assert_eq!(
        r.body["participants"][0],
        json!({"nickname":"Ann","participantId":1,"type":"Client"})
    );
    for (op, extra) in [
        (
            "SendMessage",
            json!({"text": "Hello", "messageType": "text"}),
        ),
        ("SendStartTypingNotification", json!({})),
        ("SendStopTypingNotification", json!({})),
        ("UpdateUserNickname", json!({"nickname": "Anna"})),
        ("SendUrl", json!({"pushUrl": "https://example.com/page"})),
        ("UpdateUserData", json!({"userData": {"key1": "value1"}})),
    ] {
        let r = c.op(&chat, op, extra).await;
        assert_eq!((r.http, r.status_code()), (200, 0), "{op}: {:#}", r.body);
        assert_eq!(r.body["alias"], "wa");
        assert_eq!(r.body["chatEnded"], false);
    }
    let (msgs, next) = eventually("the agent's answer", Duration::from_secs(10), || async {
        let r = c.messages(&chat, Some(1)).await;
        assert_eq!(r.status_code(), 0, "{:#}", r.body);
        let msgs = r.messages().clone();
        let answered = msgs
            .iter()
            .filter(|m| m["type"] == "Message" && m["from"]["type"] == "Agent")
            .count()
            >= 2;
        answered.then_some((msgs, r.body["nextPosition"].as_u64().unwrap()))
    })
    .await;
    let t = types(&msgs);
    for expected in [
        "ParticipantJoined",
        "Message",
        "TypingStarted",
        "TypingStopped",
        "Notice",
    ] {
        assert!(t.contains(&expected), "{expected} in {t:?}");
    }
    let indexes: Vec<u64> = msgs.iter().map(|m| m["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, (1..=indexes.len() as u64).collect::<Vec<_>>());
    assert_eq!(next, indexes.len() as u64 + 1);
    let r = c.messages(&chat, Some(3)).await;
    assert_eq!(r.messages()[0]["index"], 3);
    let r = c.messages(&chat, Some(0)).await;
    assert!(r.messages().is_empty());
    assert_eq!(r.body["nextPosition"].as_u64(), Some(next));

    // A read receipt reaches B's chat: GetChat through A shows B's read marker.
    let r = c
        .op(
            &chat,
            "ReadReceipt",
            json!({"transcriptPosition": next - 1}),
        )
        .await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let r = c.op(&chat, "GetChat", json!({})).await;
    assert_eq!(r.body["state"], "Chatting");
    assert_eq!(r.body["userData"]["key1"], "value1");
    assert_eq!(r.body["readPosition"], next - 1);
    let parts = r.body["participants"].as_array().unwrap();
    assert!(parts.contains(&json!({"nickname":"Anna","participantId":1,"type":"Client"})));

    // A GMS client on A, over the Web API remote: the same chat operations.
    let g = GmsClient::new(&a.base(), "customer-support");
    let mut gchat = g.request_chat(&[("nickname", "Gus")]).await;
    assert_eq!(gchat.alias, "wa");
    g.poll_until(&mut gchat, "Message").await;
    let r = g.op(&gchat, "send", &[("message", "hi")]).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let r = g
        .op(&gchat, "readReceipt", &[("transcriptPosition", "1")])
        .await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    // What the Web API has not: custom notices and files, refused at A (213).
    let r = g.op(&gchat, "customNotice", &[("message", "n")]).await;
    assert_eq!((r.status_code(), r.error_code()), (2, 213), "{:#}", r.body);
    let r = g.op(&gchat, "file/limits", &[]).await;
    assert_eq!((r.status_code(), r.error_code()), (2, 213), "{:#}", r.body);

    let r = c.op(&chat, "Complete", json!({})).await;
    assert_eq!((r.status_code(), &r.body["chatEnded"]), (0, &json!(true)));
    let r = c.op(&chat, "GetChat", json!({})).await;
    assert_eq!((r.status_code(), &r.body["state"]), (0, &json!("Idle")));
    // B's "chat ended" (statusCode 2, 211, chatEnded, nextPosition) comes out of A as B said it.
    let r = c.op(&chat, "SendMessage", json!({"text": "late"})).await;
    r.assert_error(409, 2, 211);
    assert_eq!(r.body["chatEnded"], true);
    assert!(r.body["nextPosition"].as_u64().unwrap() > 1, "{:#}", r.body);
}

#[tokio::test]
async fn web_api_remote_errors_bad_keys_unknown_chats_and_the_remote_gone() {
    let mut b = gateway_b_at("127.0.0.1:0");
    let listen = b.addr.clone();
    let a = gateway_a_webapi(&b.base());
    let c = client(&a);
    let chat = c.request_chat("Ann").await;

    // Bad keys stop at A (its code 200, the throttle's 401), a lost alias too (201).
    let mut forged = chat.clone();
    forged.secure_key = "0".repeat(chat.secure_key.len());
    c.op(&forged, "GetChat", json!({}))
        .await
        .assert_error(401, 2, 200);
    let lost = Chat {
        alias: "999".into(),
        ..chat.clone()
    };
    c.op(&lost, "GetChat", json!({}))
        .await
        .assert_error(400, 2, 201);
    // A tenant B does not serve: B's refusal passes through with B's code.
    let r = c
        .post(
            "/api/v2/chats",
            json!({"tenantName": "Other", "nickname": "n"}),
        )
        .await;
    assert_eq!(r.status_code(), 2, "{:#}", r.body);

    // B gone: statusCode 1 at A, for new chats and existing ones; a send is not repeated.
    b.stop();
    c.post(
        "/api/v2/chats",
        json!({"tenantName": "Environment", "nickname": "n"}),
    )
    .await
    .assert_error(503, 1, 301);
    c.op(&chat, "SendMessage", json!({"text": "anyone?"}))
        .await
        .assert_error(503, 1, 301);

    // B back where it was, without the chat (its mock forgot it): B's "unknown chat" (210).
    drop(b);
    let _b = gateway_b_at(&listen);
    let r = eventually("B back", Duration::from_secs(10), || async {
        let r = c.op(&chat, "GetChat", json!({})).await;
        (r.status_code() != 1).then_some(r)
    })
    .await;
    r.assert_error(404, 2, 210);
}

/// A GMS that answers in GMS's own shapes: `file/limits` with the limits only in the
/// `file-client-cfg-get` Notice, and no `readReceipt` (an older GMS: 404).
async fn real_shape_gms() -> (String, Calls) {
    use axum::extract::{Path, State};
    use axum::routing::post;
    let calls: Calls = Arc::default();
    async fn create() -> axum::Json<Value> {
        axum::Json(
            json!({"statusCode":0,"alias":"117","userId":"007555677B20000A",
            "secureKey":"4ee15d7e1c343c8e","chatId":"00048aAPEQJ8000U","chatEnded":false,
            "nextPosition":2,"messages":[{"from":{"nickname":"Ann","participantId":1,
            "type":"Client"},"index":1,"type":"ParticipantJoined","utcTime":1432845088000u64}]}),
        )
    }
    async fn limits(State(calls): State<Calls>, body: String) -> axum::Json<Value> {
        calls
            .lock()
            .unwrap()
            .push(("file/limits".into(), pairs(&body)));
        axum::Json(
            json!({"statusCode":0,"alias":"117","userId":"007555677B20000A",
            "secureKey":"4ee15d7e1c343c8e","chatId":"00048aAPEQJ8000U","chatEnded":false,
            "messages":[{"from":{"nickname":"Ann","participantId":1,"type":"Client"},
            "index":0,"type":"Notice","utcTime":1432845887000u64,"text":"file-client-cfg-get",
            "userData":{"download-attempts":"10","upload-max-files":"7","delete-file":"enabled",
            "upload-max-file-size":"104857600","used-upload-max-total-size":"0",
            "used-upload-max-files":"2","upload-max-total-size":"209715200",
            "upload-need-agent":"true","upload-file-types":"bmp:txt",
            "used-download-attempts":"1"}}]}),
        )
    }
    async fn op(
        State(calls): State<Calls>,
        Path((_svc, _chat, op)): Path<(String, String, String)>,
        body: String,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        calls.lock().unwrap().push((op.clone(), pairs(&body)));
        if op == "readReceipt" {
            return (axum::http::StatusCode::NOT_FOUND, "Not Found").into_response();
        }
        axum::Json(json!({"statusCode":0,"alias":"117","chatEnded":false,
            "nextPosition":2,"messages":[]}))
        .into_response()
    }
    let app = axum::Router::new()
        .route("/genesys/2/chat/{svc}", post(create))
        .route("/genesys/2/chat/{svc}/{chat}/file/limits", post(limits))
        .route("/genesys/2/chat/{svc}/{chat}/{op}", post(op))
        .with_state(Arc::clone(&calls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, calls)
}

#[tokio::test]
async fn a_real_gms_limits_reply_is_read_and_read_receipts_are_passed_on() {
    let (gms, calls) = real_shape_gms().await;
    let a = gateway_a_with(
        &gms,
        "[[gms.services]]\nname = \"customer-support\"\ntenant = \"Environment\"\n",
    );
    let c = GmsClient::new(&a.base(), "customer-support");
    let chat = c.request_chat(&[("nickname", "Ann")]).await;
    let r = c.op(&chat, "file/limits", &[]).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let limits = &r.body["messages"][0]["userData"];
    assert_eq!(limits["upload-max-files"], "7", "{:#}", r.body);
    assert_eq!(limits["upload-max-file-size"], "104857600");
    assert_eq!(limits["upload-max-total-size"], "209715200");
    assert_eq!(limits["upload-file-types"], "bmp:txt");
    assert_eq!(limits["upload-need-agent"], "true");
    assert_eq!(limits["delete-file"], "true");
    assert_eq!(limits["download-attempts"], "10");
    assert_eq!(limits["used-download-attempts"], "1");
    assert_eq!(limits["used-upload-max-files"], "2");

    // The receipt goes to GMS as its readReceipt; a GMS without one (404) is not an error.
    let r = c
        .op(&chat, "readReceipt", &[("transcriptPosition", "1")])
        .await;
    assert_eq!((r.http, r.status_code()), (200, 0), "{:#}", r.body);
    let calls = calls.lock().unwrap();
    let (op, fields) = calls.last().unwrap();
    assert_eq!(op, "readReceipt");
    let field = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(field("transcriptPosition"), Some("1"));
    assert_eq!(field("secureKey"), Some("4ee15d7e1c343c8e"));
    assert_eq!(field("alias"), Some("117"));
}

/// N+1 across two Web API remotes: two gateway processes (B1, B2) with the same secret over
/// the same chat server, each one `http` instance (`dialect = "webapi"`) of A. When the
/// remote holding a chat is gone, A moves the chat to the other (its restore asks the remote
/// whether it serves the chat) and the conversation goes on there, nothing lost or doubled.
#[tokio::test]
async fn a_chat_moves_to_the_other_web_api_remote_when_its_own_is_gone() {
    use common::cluster::Cluster;
    let cluster = Cluster::start(&["1"]);
    let back = || {
        Process::start(&format!(
            r#"
[server]
listen = "127.0.0.1:0"
[credentials]
secret = "gateway-b-secret-0123456789abcdef0123"
[[tenants]]
name = "Environment"
{}"#,
            cluster.instances(&[])
        ))
    };
    let mut b1 = back();
    let mut b2 = back();
    let a = Process::start(&format!(
        r#"
[server]
listen = "127.0.0.1:0"
request_timeout_ms = 8000
[credentials]
secret = "gateway-a-secret-0123456789abcdef0123"
[[tenants]]
name = "Environment"
[[chat.instances]]
alias = "wa1"
kind = "http"
[chat.instances.http]
dialect = "webapi"
base_url = "{}"
connect_timeout_ms = 1000
request_timeout_ms = 4000
[[chat.instances]]
alias = "wa2"
kind = "http"
[chat.instances.http]
dialect = "webapi"
base_url = "{}"
connect_timeout_ms = 1000
request_timeout_ms = 4000
"#,
        b1.base(),
        b2.base()
    ));
    let c = client(&a);
    let chat = c.request_chat_retrying("Ann").await;
    let send = |chat: Chat, text: &'static str| {
        let c = client(&a);
        async move {
            eventually("a message accepted", Duration::from_secs(30), || async {
                let r = c.op(&chat, "SendMessage", json!({ "text": text })).await;
                match r.status_code() {
                    0 => Some(Chat {
                        alias: r.alias(),
                        secure_key: r.body["secureKey"].as_str().unwrap().into(),
                        ..chat.clone()
                    }),
                    1 => None,
                    _ => panic!("{:#}", r.body),
                }
            })
            .await
        }
    };
    let chat = send(chat, "before").await;
    let was = chat.alias.clone();
    if was == "wa1" {
        b1.stop();
    } else {
        b2.stop();
    }
    let chat = send(chat, "after").await;
    assert_ne!(chat.alias, was, "the chat moved to the other remote");
    assert_eq!(c.customer_texts(&chat).await, ["before", "after"]);
    // A read receipt crosses A, the remote and the chat-server protocol, and is stored.
    let r = c
        .op(&chat, "ReadReceipt", json!({"transcriptPosition": 2}))
        .await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let chat = Chat {
        secure_key: r.body["secureKey"].as_str().unwrap().into(),
        ..chat
    };
    let r = c.op(&chat, "GetChat", json!({})).await;
    assert_eq!(r.body["readPosition"], 2, "{:#}", r.body);
}

/// A Web API remote whose reads fail: `SendMessage` is answered, Get Messages is a 500.
async fn web_api_remote_whose_reads_fail() -> (String, Arc<Mutex<u32>>) {
    use axum::extract::State;
    use axum::routing::post;
    let sends: Arc<Mutex<u32>> = Arc::default();
    let reply = |extra: Value| {
        let mut v = json!({"statusCode":0,"alias":"117","userId":"U1","secureKey":"K1",
            "chatId":"C1","tenantName":"Environment","chatEnded":false,"nextPosition":2,
            "messages":[]});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        axum::Json(v)
    };
    let app = axum::Router::new()
        .route(
            "/api/v2/chats",
            post(move || async move { reply(json!({"path": "/api/v2/chats/C1"})) }),
        )
        .route(
            "/api/v2/chats/{chat}",
            post(
                move |State(sends): State<Arc<Mutex<u32>>>, body: String| async move {
                    if body.contains("SendMessage") {
                        *sends.lock().unwrap() += 1;
                    }
                    reply(json!({}))
                },
            ),
        )
        .route(
            "/api/v2/chats/{chat}/messages",
            post(|| async { axum::http::StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .with_state(Arc::clone(&sends));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, sends)
}

/// A GMS widget sends with `transcriptPosition`: over a Web API remote that is the send and
/// then a read. The read failing must not fail the send (the widget would send it again):
/// the reply is statusCode 0 without events, its `nextPosition` where the widget asked.
#[tokio::test]
async fn a_failed_read_after_a_send_to_a_web_api_remote_never_makes_the_client_resend() {
    let (remote, sends) = web_api_remote_whose_reads_fail().await;
    let a = gateway_a_webapi(&remote);
    let g = GmsClient::new(&a.base(), "customer-support");
    let chat = g.request_chat(&[("nickname", "Ann")]).await;
    let r = g
        .op(
            &chat,
            "send",
            &[("message", "hi"), ("transcriptPosition", "1")],
        )
        .await;
    assert_eq!((r.http, r.status_code()), (200, 0), "{:#}", r.body);
    assert_eq!(r.body["messages"], json!([]));
    assert_eq!(r.body["nextPosition"], 1);
    assert_eq!(*sends.lock().unwrap(), 1);
    // A plain refresh, which repeats nothing, reports the failed read (statusCode 1).
    let r = g.op(&chat, "refresh", &[("transcriptPosition", "1")]).await;
    assert_eq!(r.status_code(), 1, "{:#}", r.body);
}
