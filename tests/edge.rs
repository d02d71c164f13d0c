//! What lives at the edge, in process: `oneshot` on `app(...)`, no socket. Content types,
//! both dialects' error shapes, body limits, CORS preflight and the GMS dialect's parsing.
//! The same behaviours over a real socket are in `chat_api`, `gms_api`, `ops`.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use common::{gateway, InProcess};

const SERVICE: &str = r#"
[[gms.services]]
name = "customer-support"
tenant = "Environment"
"#;

/// A reply: status, headers, body as JSON (`Null` when it is not JSON).
struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> i64 {
        self.body["errors"][0]["code"].as_i64().unwrap_or(-1)
    }
}

async fn call(
    gw: &InProcess,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = gw
        .app
        .clone()
        .oneshot(req.body(body.into()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

async fn post(gw: &InProcess, path: &str, content_type: &str, body: &str) -> Answer {
    call(
        gw,
        Method::POST,
        path,
        &[("content-type", content_type)],
        body.to_owned(),
    )
    .await
}

const REQUEST_CHAT: &str = r#"{"tenantName":"Environment","nickname":"Ann"}"#;

#[tokio::test]
async fn web_api_content_types() {
    let gw = gateway().in_process();
    for ok in [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/vnd.widget+json",
        // Old widgets label a JSON string as a form: fine while it is a JSON object.
        "application/x-www-form-urlencoded",
    ] {
        let a = post(&gw, "/api/v2/chats", ok, REQUEST_CHAT).await;
        assert_eq!(
            (a.status, a.body["statusCode"].as_i64()),
            (StatusCode::OK, Some(0)),
            "{ok}: {}",
            a.body
        );
    }
    for refused in ["application/xml", "multipart/form-data; boundary=x"] {
        let a = post(&gw, "/api/v2/chats", refused, REQUEST_CHAT).await;
        assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{refused}");
        assert_eq!(a.body["statusCode"], 2, "{}", a.body);
    }
    let a = post(
        &gw,
        "/api/v2/chats",
        "application/x-www-form-urlencoded",
        "tenantName=Environment&nickname=Ann",
    )
    .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", a.body);
}

#[tokio::test]
async fn gms_content_types() {
    let gw = gateway().toml(SERVICE).in_process();
    let path = "/genesys/2/chat/customer-support";
    let a = post(
        &gw,
        path,
        "application/x-www-form-urlencoded",
        "nickname=Ann",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = post(&gw, path, "application/json", r#"{"nickname":"Ann"}"#).await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", a.body);
    assert_eq!(a.body["chatEnded"], false, "GMS shape: {}", a.body);
}

#[tokio::test]
async fn error_shapes_of_both_dialects() {
    let gw = gateway().toml(SERVICE).in_process();
    // Web API: statusCode, one error with code and message; chatEnded only when it ended.
    let a = post(
        &gw,
        "/api/v2/chats",
        "application/json",
        r#"{"nickname":"Ann"}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body["statusCode"], 2);
    assert!(
        a.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("tenantName"),
        "{}",
        a.body
    );
    assert!(a.body.get("chatEnded").is_none(), "{}", a.body);
    // On a chat, the reply names the chat.
    let a = post(
        &gw,
        "/api/v2/chats/C-1",
        "application/json",
        r#"{"operationName":"GetChat","userId":"u","secureKey":"k","alias":"117","tenantName":"Environment"}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    assert_eq!(
        (a.body["statusCode"].as_i64(), a.code()),
        (Some(2), 200),
        "{}",
        a.body
    );
    assert_eq!(a.body["chatId"], "C-1");
    // GMS: the same codes, and every reply states chatEnded.
    let a = post(
        &gw,
        "/genesys/2/chat/customer-support/C-1/refresh",
        "application/x-www-form-urlencoded",
        "userId=u&secureKey=k&alias=117",
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    assert_eq!(
        (a.body["statusCode"].as_i64(), a.code()),
        (Some(2), 200),
        "{}",
        a.body
    );
    assert_eq!(a.body["chatEnded"], false);
    let a = post(
        &gw,
        "/genesys/2/chat/nope",
        "application/x-www-form-urlencoded",
        "nickname=A",
    )
    .await;
    assert_eq!(
        (a.status, a.body["chatEnded"].as_bool()),
        (StatusCode::NOT_FOUND, Some(false)),
        "{}",
        a.body
    );
    // Unknown route and method: the Web API shape.
    let a = post(&gw, "/api/v2/nothing", "application/json", "{}").await;
    assert_eq!(
        (a.status, a.body["statusCode"].as_i64()),
        (StatusCode::NOT_FOUND, Some(2))
    );
    let a = call(&gw, Method::GET, "/api/v2/chats", &[], Body::empty()).await;
    assert_eq!(
        (a.status, a.body["statusCode"].as_i64()),
        (StatusCode::METHOD_NOT_ALLOWED, Some(2))
    );
}

#[tokio::test]
async fn body_limits_answer_413() {
    let gw = gateway()
        .toml(SERVICE)
        .env("GATEWAY__SERVER__MAX_BODY_BYTES", "1024")
        .env("GATEWAY__GMS__MAX_UPLOAD_BYTES", "1024")
        .in_process();
    let big = format!(
        r#"{{"tenantName":"Environment","nickname":"Ann","subject":"{}"}}"#,
        "x".repeat(2000)
    );
    let a = post(&gw, "/api/v2/chats", "application/json", &big).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
    assert_eq!(a.body["statusCode"], 2);
    // Without a Content-Length (a stream), the limit still holds.
    let stream = Body::from_stream(futures::stream::iter(
        big.into_bytes()
            .chunks(100)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    ));
    let a = call(
        &gw,
        Method::POST,
        "/api/v2/chats",
        &[("content-type", "application/json")],
        stream,
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
    let form = format!("nickname=Ann&subject={}", "x".repeat(2000));
    let a = post(
        &gw,
        "/genesys/2/chat/customer-support",
        "application/x-www-form-urlencoded",
        &form,
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
    assert_eq!(a.body["chatEnded"], false);
    // Others are still served.
    let a = post(&gw, "/api/v2/chats", "application/json", REQUEST_CHAT).await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn cors_preflight() {
    let gw = gateway()
        .cors_origins(&["https://shop.example.com"])
        .in_process();
    let preflight = |origin: &'static str| {
        let gw = &gw;
        async move {
            let headers = [
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ];
            call(
                gw,
                Method::OPTIONS,
                "/api/v2/chats/C-1",
                &headers,
                Body::empty(),
            )
            .await
        }
    };
    let a = preflight("https://shop.example.com").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.headers["access-control-allow-origin"],
        "https://shop.example.com"
    );
    assert!(a.headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    let a = preflight("https://evil.example.com").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.headers.get("access-control-allow-origin").is_none());
    assert_eq!(a.code(), 420);
}

/// GMS fields: `firstName` + `lastName` make the nickname, `userData[k]=v` the user data,
/// `transcriptPosition` where the transcript starts.
#[tokio::test]
async fn gms_dialect_parsing() {
    let gw = gateway().toml(SERVICE).in_process();
    let a = post(
        &gw,
        "/genesys/2/chat/customer-support",
        "application/x-www-form-urlencoded",
        "firstName=Ann&lastName=Lee&userData%5BOrder%5D=1234&userData%5Bk%5D=v",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let creds = format!(
        "userId={}&secureKey={}&alias={}",
        a.body["userId"].as_str().unwrap(),
        urlencode(a.body["secureKey"].as_str().unwrap()),
        a.body["alias"].as_str().unwrap()
    );
    let chat = a.body["chatId"].as_str().unwrap().to_owned();
    let op = |name: &str| format!("/genesys/2/chat/customer-support/{chat}/{name}");
    post(
        &gw,
        &op("send"),
        "application/x-www-form-urlencoded",
        &format!("{creds}&message=one"),
    )
    .await;
    post(
        &gw,
        &op("send"),
        "application/x-www-form-urlencoded",
        &format!("{creds}&message=two"),
    )
    .await;
    // refresh: the whole transcript, and the chat's user data.
    let all = post(
        &gw,
        &op("refresh"),
        "application/x-www-form-urlencoded",
        &format!("{creds}&transcriptPosition=1"),
    )
    .await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.body["userData"]["Order"], "1234", "{}", all.body);
    assert_eq!(all.body["userData"]["k"], "v", "{}", all.body);
    let messages = all.body["messages"].as_array().unwrap();
    let joined = &messages[0];
    assert_eq!(joined["type"], "ParticipantJoined");
    assert_eq!(joined["from"]["nickname"], "Ann Lee", "{joined}");
    // From a later position: only the events from there.
    let two = messages
        .iter()
        .find(|m| m["text"] == "two")
        .expect("the second message");
    let second = two["index"].as_u64().unwrap();
    let later = post(
        &gw,
        &op("refresh"),
        "application/x-www-form-urlencoded",
        &format!("{creds}&transcriptPosition={second}"),
    )
    .await;
    let later = later.body["messages"].as_array().unwrap();
    assert!(
        later.iter().all(|m| m["index"].as_u64().unwrap() >= second),
        "{later:?}"
    );
    assert_eq!(later[0]["text"], "two");
    // Without a position: no transcript.
    let none = post(
        &gw,
        &op("refresh"),
        "application/x-www-form-urlencoded",
        &creds,
    )
    .await;
    assert_eq!(none.body["messages"], Value::Array(vec![]), "{}", none.body);
    // A position that is not a number names the field.
    let bad = post(
        &gw,
        &op("refresh"),
        "application/x-www-form-urlencoded",
        &format!("{creds}&transcriptPosition=x"),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(bad.body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("transcriptPosition"));
    // Neither nickname nor names: the nickname is missing.
    let a = post(
        &gw,
        "/genesys/2/chat/customer-support",
        "application/x-www-form-urlencoded",
        "subject=s",
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(a.body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("nickname"));
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A body sent in small pieces without a Content-Length, as a slow client streams it.
fn trickled(text: &str, piece: usize) -> Body {
    let pieces: Vec<_> = text
        .as_bytes()
        .chunks(piece)
        .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
        .collect();
    Body::from_stream(futures::stream::iter(pieces))
}

/// The GMS form-encoded e-mail is decoded as it arrives: escapes cut between pieces decode
/// whole, and `email.max_size` refuses a body past it without reading it all first.
#[tokio::test]
async fn a_gms_form_email_is_streamed_into_the_intake() {
    let gw = gateway()
        .toml(SERVICE)
        .email("max_size = 4096")
        .in_process();
    let path = "/genesys/2/email/customer-support";
    let form = "firstName=Ann&lastName=Lee&fromAddress=ann%40example.com&subject=Caf%C3%A9+%E2%82%AC&text=Hello+there";
    for piece in [1, 2, 3, 7] {
        let a = call(
            &gw,
            Method::POST,
            path,
            &[("content-type", "application/x-www-form-urlencoded")],
            trickled(form, piece),
        )
        .await;
        assert_eq!(
            (a.status, a.body["statusCode"].as_i64()),
            (StatusCode::OK, Some(0)),
            "{}",
            a.body
        );
    }
    let big = format!("{form}&extra={}", "x".repeat(8000));
    let a = call(
        &gw,
        Method::POST,
        path,
        &[("content-type", "application/x-www-form-urlencoded")],
        trickled(&big, 512),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
    assert_eq!(a.body["chatEnded"], false, "GMS shape: {}", a.body);
    let a = post(
        &gw,
        path,
        "application/x-www-form-urlencoded",
        &format!("{form}&files=x"),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
}
