//! Tolerance where real clients differ from our reading of the API (issue 14), each rule
//! replayed as the client sends it, over real sockets; docs/gms.md "Compatibility" lists
//! them with the clients behind them. Each test also checks that what was refused for safety
//! stays refused.

use std::time::Duration;

use mailparse::MailHeaderMap;
use serde_json::{json, Value};

use crate::common::gms::{GmsChat, GmsClient};
use crate::common::{eventually, gateway, Chat, Reply, TestGateway};

const SERVICES: &str = r#"
[[gms.services]]
name = "customer-support"
tenant = "Environment"
"#;

async fn start() -> TestGateway {
    gateway().toml(SERVICES).start().await
}

fn gms_chat(chat: &Chat) -> GmsChat {
    GmsChat {
        chat_id: chat.chat_id.clone(),
        user_id: chat.user_id.clone(),
        secure_key: chat.secure_key.clone(),
        alias: chat.alias.clone(),
        next_position: 1,
    }
}

fn gms_form(chat: &GmsChat, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut fields = vec![
        ("userId".to_owned(), chat.user_id.clone()),
        ("secureKey".to_owned(), chat.secure_key.clone()),
        ("alias".to_owned(), chat.alias.clone()),
    ];
    fields.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    fields
}

#[tokio::test]
async fn python_bot_posts_request_chat_with_a_trailing_slash() {
    let gw = start().await;
    let http = reqwest::Client::new();
    let base = format!("{}/genesys/2/chat/customer-support", gw.base);
    // Request Chat at `{service}/`, as the Python `requests` bot posts it.
    let r = Reply::read(
        http.post(format!("{base}/"))
            .form(&[("nickname", "Bot"), ("subject", "trailing")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((r.http, r.status_code()), (200, 0), "{:#}", r.body);
    let chat = GmsChat {
        chat_id: r.body["chatId"].as_str().unwrap().into(),
        user_id: r.body["userId"].as_str().unwrap().into(),
        secure_key: r.body["secureKey"].as_str().unwrap().into(),
        alias: r.body["alias"].as_str().unwrap().into(),
        next_position: 1,
    };
    // Every other route too: an operation, the file limits.
    for tail in ["send/", "file/limits/"] {
        let url = format!("{base}/{}/{tail}", chat.chat_id);
        let r = Reply::read(
            http.post(url)
                .form(&gms_form(&chat, &[("message", "hello")]))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((r.http, r.status_code()), (200, 0), "{tail}: {:#}", r.body);
    }
    // The Web API dialect and the probes take it as well.
    let c = gw.client();
    let r = c
        .post(
            "/api/v2/chats/",
            json!({"tenantName": "Environment", "nickname": "Ann"}),
        )
        .await;
    assert_eq!((r.http, r.status_code()), (200, 0), "{:#}", r.body);
    let web = Chat::created(&r);
    let mut body = web.credentials();
    body["transcriptPosition"] = 1.into();
    let r = c
        .post(&format!("/api/v2/chats/{}/messages/", web.chat_id), body)
        .await;
    assert_eq!((r.http, r.status_code()), (200, 0), "{:#}", r.body);
    let health = http
        .get(format!("{}/healthz/", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // One slash only: two are still an unknown path, and so is an unknown route.
    for path in [
        "/api/v2/chats//",
        "/genesys/2/chat/customer-support//",
        "/nope/",
    ] {
        c.post(
            path,
            json!({"tenantName": "Environment", "nickname": "Ann"}),
        )
        .await
        .assert_error(404, 2, 120);
    }
}

#[tokio::test]
async fn jquery_widget_sends_quoted_user_data_keys() {
    let gw = start().await;
    let g = GmsClient::new(&gw.base, "customer-support");
    // jQuery's `$.param` of a widget's `userData` with quoted keys.
    let mut chat = g
        .request_chat(&[
            ("nickname", "Widget"),
            ("userData[\"Product\"]", "TOL"),
            ("userData['Region']", "EU"),
            ("userData[\"half]", "kept as sent"),
        ])
        .await;
    let r = g.refresh(&mut chat).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    assert_eq!(r.body["userData"]["Product"], "TOL", "{:#}", r.body);
    assert_eq!(r.body["userData"]["Region"], "EU");
    assert_eq!(r.body["userData"]["\"half"], "kept as sent");
    assert!(r.body["userData"].get("\"Product\"").is_none());
    // A hostile field name is still refused, quoted or not.
    let r = g
        .post("", &[("nickname", "x"), ("userData[\"a\r\nb\"]", "v")])
        .await;
    r.assert_error(400, 2, 500);
}

#[tokio::test]
async fn integration_attaches_numbers_and_booleans_to_user_data() {
    let gw = start().await;
    let c = gw.client();
    let raw = br#"{"tenantName":"Environment","nickname":"Ann",
        "userData":{"CustomerID":12345,"VIP":true,"Score":1.5,"Name":"Ann",
                    "Account":123456789012345678901234567890}}"#;
    let r = c
        .post_raw("/api/v2/chats", Some("application/json"), raw.to_vec())
        .await;
    assert_eq!((r.http, r.status_code()), (200, 0), "{:#}", r.body);
    let chat = Chat::created(&r);
    let r = c.op(&chat, "GetChat", json!({})).await;
    assert_eq!(
        r.body["userData"],
        json!({"CustomerID": "12345", "VIP": "true", "Score": "1.5", "Name": "Ann",
               "Account": "123456789012345678901234567890"}),
        "{:#}",
        r.body
    );
    let r = c
        .op(
            &chat,
            "UpdateUserData",
            json!({"userData": {"Visits": 3, "Returning": false}}),
        )
        .await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let r = c.op(&chat, "GetChat", json!({})).await;
    assert_eq!(r.body["userData"]["Visits"], "3");
    assert_eq!(r.body["userData"]["Returning"], "false");
    // Nested objects, arrays and nulls stay errors naming the field.
    for nested in [json!({"a": 1}), json!([1]), Value::Null] {
        let r = c
            .post(
                "/api/v2/chats",
                json!({"tenantName": "Environment", "nickname": "Ann",
                       "userData": {"ok": "v", "k": nested}}),
            )
            .await;
        r.assert_error(400, 2, 103);
        let message = r.body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("`userData.k`"), "{message}");
    }
}

#[tokio::test]
async fn client_sends_transcript_position_as_a_string_and_alias_as_a_number() {
    let gw = start().await;
    let c = gw.client();
    let chat = c.request_chat("Ann").await;
    let r = c.op(&chat, "SendMessage", json!({"text": "one"})).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let alias: u64 = chat.alias.parse().expect("the mock's aliases are numbers");
    let mut body = chat.credentials();
    body["alias"] = alias.into();
    body["transcriptPosition"] = "1".into();
    let r = c
        .post(&format!("/api/v2/chats/{}/messages", chat.chat_id), body)
        .await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let texts: Vec<&str> = r
        .messages()
        .iter()
        .filter(|m| m["type"] == "Message" && m["from"]["type"] == "Client")
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["one"]);
    assert_eq!(r.body["alias"], chat.alias.as_str(), "answered as a string");
    // Anything else is still refused, naming the field.
    for (field, value) in [
        ("transcriptPosition", json!("-1")),
        ("transcriptPosition", json!("5x")),
        ("alias", json!(1.5)),
        ("alias", json!(true)),
    ] {
        let mut body = chat.credentials();
        body[field] = value;
        let r = c
            .post(&format!("/api/v2/chats/{}/messages", chat.chat_id), body)
            .await;
        r.assert_error(400, 2, 103);
        let message = r.body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{field}`")), "{message}");
    }
}

#[tokio::test]
async fn client_that_lower_cases_the_secure_key_keeps_its_chat() {
    let gw = start().await;
    let c = gw.client();
    let chat = c.request_chat("Ann").await;
    let lower = Chat {
        secure_key: chat.secure_key.to_ascii_lowercase(),
        ..chat.clone()
    };
    let r = c.op(&lower, "SendMessage", json!({"text": "web"})).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let g = GmsClient::new(&gw.base, "customer-support");
    let mut gms_lower = gms_chat(&lower);
    let r = g.op(&gms_lower, "send", &[("message", "gms")]).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    let r = g.refresh(&mut gms_lower).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    assert_eq!(c.customer_texts(&chat).await, ["web", "gms"]);
    // A changed key is still refused before any backend sees it.
    let seen = gw.backend_requests();
    let mut changed = chat.secure_key.clone().into_bytes();
    let i = changed.len() - 3;
    changed[i] = if changed[i] == b'0' { b'1' } else { b'0' };
    let bad = Chat {
        secure_key: String::from_utf8(changed).unwrap(),
        ..chat.clone()
    };
    c.op(&bad, "SendMessage", json!({"text": "x"}))
        .await
        .assert_error(401, 2, 200);
    assert_eq!(
        gw.backend_requests(),
        seen,
        "a changed key reached a backend"
    );
}

#[tokio::test]
async fn widget_completes_a_chat_that_has_already_ended() {
    let gw = start().await;
    let c = gw.client();
    let chat = c.request_chat("Ann").await;
    for round in 0..2 {
        let r = c.op(&chat, "Complete", json!({})).await;
        assert_eq!(
            (r.http, r.status_code(), &r.body["chatEnded"]),
            (200, 0, &json!(true)),
            "Complete #{round}: {:#}",
            r.body
        );
    }
    // GMS `disconnect` likewise, on a chat ended in the other dialect.
    let g = GmsClient::new(&gw.base, "customer-support");
    let r = g.op(&gms_chat(&chat), "disconnect", &[]).await;
    assert_eq!(
        (r.http, r.status_code(), &r.body["chatEnded"]),
        (200, 0, &json!(true)),
        "{:#}",
        r.body
    );
    // Other operations on the ended chat keep their answer.
    c.op(&chat, "SendMessage", json!({"text": "late"}))
        .await
        .assert_error(409, 2, 211);
    let r = g.op(&gms_chat(&chat), "send", &[("message", "late")]).await;
    r.assert_error(409, 2, 211);
}

#[tokio::test]
async fn mail_form_sends_from_address_with_a_display_name() {
    let gw = start().await;
    let c = gw.client();
    let form = |from: &str| {
        reqwest::multipart::Form::new()
            .text("firstName", "John")
            .text("lastName", "Doe")
            .text("tenantName", "Environment")
            .text("fromAddress", from.to_owned())
            .text("subject", "Order")
            .text("text", "Where is it?")
    };
    let send = |from: &str| {
        c.http
            .post(format!("{}/api/v2/emails", gw.base))
            .multipart(form(from))
            .send()
    };
    let r = Reply::read(send("\"Doe, Johnny\" <johnny@doe.example>").await.unwrap()).await;
    assert_eq!(r.http, 200, "{:#}", r.body);
    let id = r.body["interactionId"].as_str().unwrap().to_owned();
    let path = gw
        .email_dir
        .join("spool/mock-outbox")
        .join(format!("{id}.eml"));
    let eml = eventually("the .eml file", Duration::from_secs(20), || {
        let path = path.clone();
        async move { std::fs::read(path).ok() }
    })
    .await;
    let mail = mailparse::parse_mail(&eml).unwrap();
    let reply_to = mail.headers.get_first_value("Reply-To").unwrap();
    let from = mail.headers.get_first_value("From").unwrap();
    assert!(
        reply_to.contains("Doe, Johnny") && reply_to.ends_with("<johnny@doe.example>"),
        "{reply_to}"
    );
    assert!(from.contains("Doe, Johnny"), "{from}");
    // The address inside must still pass the address rule, and a name cannot carry a
    // header.
    for bad in [
        "John <john@doe>",
        "John <john doe@doe.example>",
        "John\r\nBcc: x@evil.example <john@doe.example>",
    ] {
        let r = Reply::read(send(bad).await.unwrap()).await;
        assert_eq!((r.http, r.status_code()), (400, 2), "{bad}: {:#}", r.body);
    }
}

#[tokio::test]
async fn fetch_client_preflights_authorization_and_contactcenterid_cross_origin() {
    let gw = gateway()
        .cors_origins(&["https://shop.example.com"])
        .toml(SERVICES)
        .toml(
            "[[tenants]]\nname = \"Kiosk\"\ncors_origins = [\"https://kiosk.example\"]\n\
             cors_allowed_headers = [\"X-Kiosk-Id\"]",
        )
        .start()
        .await;
    let http = reqwest::Client::new();
    let url = format!("{}/genesys/2/chat/customer-support", gw.base);
    let preflight = |origin: &str, headers: &str| {
        http.request(reqwest::Method::OPTIONS, &url)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", headers)
            .send()
    };
    let allowed = |resp: &reqwest::Response| -> Vec<String> {
        resp.headers()
            .get("access-control-allow-headers")
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
            .unwrap_or_default()
            .split(',')
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .collect()
    };
    let resp = preflight(
        "https://shop.example.com",
        "authorization,contactcenterid,content-type",
    )
    .await
    .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    let names = allowed(&resp);
    for h in [
        "authorization",
        "contactcenterid",
        "apikey",
        "x-api-key",
        "x-requested-with",
        "content-type",
        "gms_user",
    ] {
        assert!(names.iter().any(|n| n == h), "{h} not in {names:?}");
    }
    // The actual request, with those headers, works.
    let resp = http
        .post(&url)
        .header("Origin", "https://shop.example.com")
        .header("Authorization", "Bearer widget")
        .header("ContactCenterId", "cc-1")
        .form(&[("nickname", "Ann")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://shop.example.com"
    );
    let r = Reply::read(resp).await;
    assert_eq!((r.http, r.status_code()), (200, 0), "{:#}", r.body);
    // Per tenant: the kiosk's origin gets the kiosk's list, not the GMS defaults.
    let resp = preflight("https://kiosk.example", "x-kiosk-id")
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(allowed(&resp), ["x-kiosk-id"]);
    // A refused origin is still refused, preflight or not.
    let resp = preflight("https://evil.example", "authorization")
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let r = Reply::read(
        http.post(&url)
            .header("Origin", "https://evil.example")
            .header("Authorization", "Bearer x")
            .form(&[("nickname", "Eve")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.assert_error(403, 2, 420);
}

#[tokio::test]
async fn gms_client_posting_json_is_told_the_form_types() {
    let gw = start().await;
    let c = gw.client();
    let r = c
        .post(
            "/genesys/2/chat/customer-support",
            json!({"nickname": "Ann"}),
        )
        .await;
    r.assert_error(415, 2, 110);
    let advice = r.body["errors"][0]["advice"].as_str().unwrap();
    assert!(
        advice.contains("application/x-www-form-urlencoded")
            && advice.contains("multipart/form-data"),
        "{advice}"
    );
    // The Web API's own advice is unchanged.
    let r = c
        .post_raw("/api/v2/chats", Some("text/csv"), b"a,b".to_vec())
        .await;
    r.assert_error(415, 2, 110);
    assert_eq!(
        r.body["errors"][0]["advice"],
        "send the body as application/json"
    );
}
