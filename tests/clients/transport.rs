//! Transport: the HTTP status of statusCode 1 and 2 replies (`webapi.reply_status`,
//! `gms.reply_status`), and the client address behind a load balancer
//! (`limits.trusted_proxies`), as real clients and proxies meet them.

use std::net::IpAddr;
use std::sync::Arc;

use backend_api::BackendError;
use serde_json::{json, Value};

use crate::common::gms::GmsClient;
use crate::common::{gateway, Reply, TestGateway};

const SERVICE: &str = "[[gms.services]]\nname = \"chat\"\ntenant = \"Environment\"\n";

/// What a Python `requests` bot does when it mounts
/// `HTTPAdapter(max_retries=Retry(total=4, status_forcelist=FORCELIST,
/// allowed_methods=None, respect_retry_after_header=True))`: the same POST is sent again,
/// by the HTTP stack and unseen by the bot, while the status is in the forcelist (or is 413,
/// 429 or 503 with `Retry-After`). Returns the last reply and how many times it was sent.
async fn post_like_urllib3_retry(
    request: impl Fn() -> reqwest::RequestBuilder,
    forcelist: &[u16],
) -> (Reply, usize) {
    let mut sent = 0;
    loop {
        sent += 1;
        let resp = request().send().await.expect("request");
        let status = resp.status().as_u16();
        let retry_after = resp.headers().contains_key("retry-after");
        let reply = Reply::read(resp).await;
        let retried =
            forcelist.contains(&status) || (retry_after && matches!(status, 413 | 429 | 503));
        if !retried || sent == 5 {
            return (reply, sent);
        }
    }
}

/// The forcelist of the bot in the issue (it retried 503).
const BOT_FORCELIST: &[u16] = &[429, 502, 503, 504];
/// The widest one in common use (the `requests` retry recipe), 500 included.
const WIDE_FORCELIST: &[u16] = &[429, 500, 502, 503, 504];

/// A gateway over one scripted chat server whose every request on a chat is lost after
/// it was sent (`Interrupted`: it may have arrived).
async fn gateway_losing_answers(extra: &str) -> (TestGateway, Arc<testkit::ScriptedBackend>) {
    let backend = testkit::ScriptedBackend::new();
    let gw = gateway()
        .aliases(&["A"])
        .toml("[chat.health]\neject_after = 100\ninterval_ms = 3600000")
        .toml(SERVICE)
        .toml(extra)
        .start_over(vec![(
            "A".into(),
            backend.clone() as Arc<dyn backend_api::ChatBackend>,
        )])
        .await;
    backend
        .refresh
        .always(Some(Err(BackendError::Interrupted("lost".into()))));
    (gw, backend)
}

#[tokio::test]
async fn python_bot_with_http_level_retry_sends_a_web_api_message_that_may_have_arrived_once() {
    let (gw, backend) = gateway_losing_answers("").await;
    let c = gw.client();
    let chat = c.request_chat("Ann").await;
    let url = format!("{}/api/v2/chats/{}", gw.base, chat.chat_id);
    let mut body = chat.credentials();
    body["operationName"] = json!("SendMessage");
    body["text"] = json!("once");
    let before = backend.refreshes();
    let (reply, sent) =
        post_like_urllib3_retry(|| c.http.post(&url).json(&body), BOT_FORCELIST).await;
    // statusCode 1 (the bot may poll and send again itself), but not a status its HTTP
    // stack resends: the message reached the chat server once.
    reply.assert_error(500, 1, 302);
    assert_eq!((sent, backend.refreshes() - before), (1, 1));
}

#[tokio::test]
async fn python_gms_bot_with_http_level_retry_sends_a_message_that_may_have_arrived_once() {
    for (setting, forcelist, http) in [
        ("", BOT_FORCELIST, 500),
        ("[gms]\nreply_status = \"ok\"", WIDE_FORCELIST, 200),
    ] {
        let (gw, backend) = gateway_losing_answers(setting).await;
        let gms = GmsClient::new(&gw.base, "chat");
        let chat = gms.request_chat(&[("nickname", "Ann")]).await;
        let url = format!("{}/genesys/2/chat/chat/{}/send", gw.base, chat.chat_id);
        let fields = [
            ("userId", chat.user_id.as_str()),
            ("secureKey", chat.secure_key.as_str()),
            ("alias", chat.alias.as_str()),
            ("message", "once"),
        ];
        let before = backend.refreshes();
        let (reply, sent) =
            post_like_urllib3_retry(|| gms.http.post(&url).form(&fields), forcelist).await;
        reply.assert_error(http, 1, 302);
        assert_eq!(reply.body["chatEnded"], false, "{setting}");
        assert_eq!((sent, backend.refreshes() - before), (1, 1), "{setting}");
    }
}

#[tokio::test]
async fn widget_that_treats_non_2xx_as_transport_failure_reads_refusals_as_200_under_ok() {
    let gw = gateway()
        .toml(
            "[gms]\nreply_status = \"ok\"\n\
             [[gms.services]]\nname = \"chat\"\ntenant = \"Environment\"\n\
             [[gms.services]]\nname = \"strict\"\ntenant = \"Environment\"\nreply_status = \"rest\"\n",
        )
        .start()
        .await;
    let gms = GmsClient::new(&gw.base, "chat");
    let chat = gms.request_chat(&[("nickname", "Ann")]).await;
    let wrong = [
        ("userId", chat.user_id.as_str()),
        ("secureKey", "0123456789abcdef"),
        ("alias", chat.alias.as_str()),
    ];
    let tail = format!("/{}/refresh", chat.chat_id);
    // A refusal the dialect made: HTTP 200, the body as under `rest`.
    gms.post(&tail, &wrong).await.assert_error(200, 2, 200);
    // An unknown service is the dialect's answer too.
    GmsClient::new(&gw.base, "nope")
        .post("", &[("nickname", "Ann")])
        .await
        .assert_error(200, 2, 501);
    // A service that sets `rest` keeps REST statuses.
    let strict = GmsClient::new(&gw.base, "strict");
    strict.post(&tail, &wrong).await.assert_error(401, 2, 200);
    // Before the request is read: a route that does not exist keeps its 404.
    let r = Reply::read(
        gms.http
            .post(format!("{}/genesys/2/nowhere", gw.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.assert_error(404, 2, 120);
    // The Web API dialect keeps `rest` (its own setting).
    let c = gw.client();
    let web = c.request_chat("Bob").await;
    let mut body = web.credentials();
    body["secureKey"] = json!("0123456789abcdef");
    body["operationName"] = json!("GetChat");
    c.post(&format!("/api/v2/chats/{}", web.chat_id), body)
        .await
        .assert_error(401, 2, 200);
}

#[tokio::test]
async fn web_api_integration_under_ok_gets_200_with_status_code_2() {
    let gw = gateway()
        .toml("[webapi]\nreply_status = \"ok\"")
        .start()
        .await;
    let c = gw.client();
    let chat = c.request_chat("Ann").await;
    let mut body = chat.credentials();
    body["secureKey"] = json!("0123456789abcdef");
    body["operationName"] = json!("GetChat");
    c.post(&format!("/api/v2/chats/{}", chat.chat_id), body)
        .await
        .assert_error(200, 2, 200);
    // The body size cap refuses before the request is read: 413 stays.
    let big = vec![b' '; 70 * 1024];
    c.post_raw("/api/v2/chats", Some("application/json"), big)
        .await
        .assert_error(413, 2, 111);
}

// ---- The client address behind a load balancer.

/// A client whose connections come from `from` (a loopback address: 127.0.0.2 plays the
/// load balancer, 127.0.0.1 a client that talks to the gateway directly).
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// A gateway with a small per-address limit (burst 3, then 1 a second).
async fn limited_gateway(trusted: &str) -> TestGateway {
    gateway()
        .env("GATEWAY__LIMITS__PER_IP_PER_SECOND", "1")
        .env("GATEWAY__LIMITS__PER_IP_BURST", "3")
        .toml(&format!("[limits]\ntrusted_proxies = {trusted}"))
        .start()
        .await
}

async fn health(http: &reqwest::Client, gw: &TestGateway, headers: &[(&str, &str)]) -> u16 {
    let mut req = http.get(format!("{}/healthz", gw.base));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap().status().as_u16()
}

/// Sends until the limit refuses (at most 20 requests); the limit must refuse.
async fn exhaust(http: &reqwest::Client, gw: &TestGateway, headers: &[(&str, &str)]) {
    for _ in 0..20 {
        if health(http, gw, headers).await == 429 {
            return;
        }
    }
    panic!("the per-address limit never refused {headers:?}");
}

#[test]
fn operator_lists_the_load_balancers_in_the_file_or_the_environment() {
    let config = gateway()
        .env(
            "GATEWAY__LIMITS__TRUSTED_PROXIES",
            "127.0.0.2/32,10.0.0.0/8",
        )
        .config();
    let listed: Vec<String> = config
        .limits
        .trusted_proxies
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(listed, ["127.0.0.2/32", "10.0.0.0/8"]);
    for bad in ["10.0.0.0/33", "balancer.example.com"] {
        let text = gateway()
            .toml(&format!("[limits]\ntrusted_proxies = [\"{bad}\"]"))
            .toml_text();
        let error = webapi_gateway::Config::from_toml_str(&text)
            .expect_err(bad)
            .to_string();
        assert!(error.contains("trusted_proxies"), "{bad}: {error}");
    }
}

#[tokio::test]
async fn bot_spoofing_x_forwarded_for_from_an_untrusted_address_keeps_its_own_bucket() {
    // 127.0.0.2 is trusted; this client connects from 127.0.0.1, which is not.
    let gw = limited_gateway("[\"127.0.0.2/32\"]").await;
    let direct = client_from("127.0.0.1");
    exhaust(&direct, &gw, &[("x-forwarded-for", "198.51.100.1")]).await;
    for spoof in [
        ("x-forwarded-for", "198.51.100.2"),
        ("forwarded", "for=198.51.100.3"),
        ("x-forwarded-for", "127.0.0.2"),
    ] {
        assert_eq!(health(&direct, &gw, &[spoof]).await, 429, "{spoof:?}");
    }
}

#[tokio::test]
async fn customers_behind_a_trusted_load_balancer_get_their_own_buckets() {
    let gw = limited_gateway("[\"127.0.0.2/32\"]").await;
    let lb = client_from("127.0.0.2");
    exhaust(&lb, &gw, &[("x-forwarded-for", "198.51.100.1")]).await;
    // Another customer through the same balancer: its own bucket.
    assert_eq!(
        health(&lb, &gw, &[("x-forwarded-for", "198.51.100.2")]).await,
        200
    );
    // RFC 7239 `Forwarded` names the first customer as well: its bucket is empty.
    assert_eq!(
        health(&lb, &gw, &[("forwarded", "for=198.51.100.1;proto=https")]).await,
        429
    );
    // A customer's own X-Forwarded-For is left of the balancer's entry: not believed.
    assert_eq!(
        health(
            &lb,
            &gw,
            &[("x-forwarded-for", "203.0.113.9, 198.51.100.1")]
        )
        .await,
        429
    );
}

#[tokio::test]
async fn a_chain_of_trusted_proxies_is_read_right_to_left_to_the_customer() {
    // A CDN (10.0.0.0/8) in front of the load balancer (127.0.0.2).
    let gw = limited_gateway("[\"127.0.0.2/32\", \"10.0.0.0/8\"]").await;
    let lb = client_from("127.0.0.2");
    exhaust(
        &lb,
        &gw,
        &[("x-forwarded-for", "198.51.100.1, 10.1.2.3, 10.9.9.9")],
    )
    .await;
    // The same customer through other CDN nodes, in either header: the same bucket.
    for same in [
        ("x-forwarded-for", "198.51.100.1, 10.7.7.7"),
        (
            "forwarded",
            "for=198.51.100.1, for=\"10.7.7.7:443\", for=10.0.0.1",
        ),
    ] {
        assert_eq!(health(&lb, &gw, &[same]).await, 429, "{same:?}");
    }
    // Another customer through the same hops: its own.
    assert_eq!(
        health(
            &lb,
            &gw,
            &[("x-forwarded-for", "198.51.100.2, 10.1.2.3, 10.9.9.9")]
        )
        .await,
        200
    );
}

#[tokio::test]
async fn malformed_forwarding_headers_fall_back_to_the_proxy_address() {
    let gw = limited_gateway("[\"127.0.0.2/32\"]").await;
    let lb = client_from("127.0.0.2");
    // No header: keyed on the balancer itself.
    exhaust(&lb, &gw, &[]).await;
    for garbage in [
        ("x-forwarded-for", "not-an-address"),
        ("x-forwarded-for", "198.51.100.1, unknown"),
        ("forwarded", "for=unknown"),
        ("forwarded", "for=_hidden"),
        ("forwarded", "proto=https"),
    ] {
        assert_eq!(health(&lb, &gw, &[garbage]).await, 429, "{garbage:?}");
    }
    // A well-formed one still gets its own bucket.
    assert_eq!(
        health(&lb, &gw, &[("x-forwarded-for", "198.51.100.9")]).await,
        200
    );
}

#[tokio::test]
async fn chat_starts_behind_a_trusted_load_balancer_are_limited_per_customer() {
    let gw = gateway()
        .env("GATEWAY__LIMITS__CHAT_STARTS_PER_IP_PER_SECOND", "1")
        .env("GATEWAY__LIMITS__CHAT_STARTS_PER_IP_BURST", "1")
        .toml("[limits]\ntrusted_proxies = [\"127.0.0.2\"]")
        .start()
        .await;
    let lb = client_from("127.0.0.2");
    let start = |customer: &'static str| {
        let req = lb
            .post(format!("{}/api/v2/chats", gw.base))
            .header("x-forwarded-for", customer)
            .json(&json!({"nickname": "Ann", "tenantName": "Environment"}));
        async move { Reply::read(req.send().await.unwrap()).await }
    };
    assert_eq!(start("198.51.100.1").await.status_code(), 0);
    let mut refused: Option<Value> = None;
    for _ in 0..10 {
        let r = start("198.51.100.1").await;
        if r.http == 429 {
            r.assert_error(429, 1, 414);
            refused = Some(r.body);
            break;
        }
    }
    assert!(refused.is_some(), "the chat-start limit never refused");
    assert_eq!(start("198.51.100.2").await.status_code(), 0);
}

#[tokio::test]
async fn a_wrong_key_behind_a_trusted_load_balancer_throttles_only_its_customer() {
    let gw = gateway()
        .env("GATEWAY__LIMITS__BAD_CREDENTIALS_BURST", "2")
        .toml("[limits]\ntrusted_proxies = [\"127.0.0.2\"]")
        .start()
        .await;
    let lb = client_from("127.0.0.2");
    let chat = gw.client().request_chat("Ann").await;
    let url = format!("{}/api/v2/chats/{}", gw.base, chat.chat_id);
    let get = |customer: &'static str, key: &str| {
        let mut body = chat.credentials();
        body["secureKey"] = json!(key);
        body["operationName"] = json!("GetChat");
        let req = lb
            .post(&url)
            .header("x-forwarded-for", customer)
            .json(&body);
        async move { Reply::read(req.send().await.unwrap()).await }
    };
    let wrong = "0123456789abcdef";
    get("203.0.113.66", wrong).await.assert_error(401, 2, 200);
    get("203.0.113.66", wrong).await.assert_error(401, 2, 200);
    get("203.0.113.66", wrong).await.assert_error(429, 1, 402);
    // Another customer through the same balancer is judged on its own.
    get("198.51.100.1", wrong).await.assert_error(401, 2, 200);
    let r = get("198.51.100.1", &chat.secure_key).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
}

#[tokio::test]
async fn web_form_e_mails_behind_a_trusted_load_balancer_are_limited_per_customer() {
    let gw = gateway()
        .env("GATEWAY__EMAIL__PER_ADDRESS_PER_HOUR", "1")
        .env("GATEWAY__EMAIL__PER_ADDRESS_BURST", "1")
        .toml("[limits]\ntrusted_proxies = [\"127.0.0.2\"]")
        .start()
        .await;
    let lb = client_from("127.0.0.2");
    let send = |customer: &'static str| {
        let form = reqwest::multipart::Form::new()
            .text("firstName", "John")
            .text("lastName", "Doe")
            .text("tenantName", "Environment")
            .text("fromAddress", "john@doe.com")
            .text("subject", "Help with account")
            .text("text", "I need help with my account");
        let req = lb
            .post(format!("{}/api/v2/emails", gw.base))
            .header("x-forwarded-for", customer)
            .multipart(form);
        async move { Reply::read(req.send().await.unwrap()).await }
    };
    let first = send("198.51.100.1").await;
    assert_eq!(first.http, 200, "{:#}", first.body);
    let again = send("198.51.100.1").await;
    again.assert_error(429, 1, 162);
    let other = send("198.51.100.2").await;
    assert_eq!(other.http, 200, "{:#}", other.body);
}
