//! Send Email against a hostile client (issue 13, findings 1 and 3), over real sockets with a
//! real SMTP server (aiosmtpd): the open-relay attack of the security review is refused in
//! both dialects, accepted mail leaves as the contact center (the customer only in
//! `Reply-To`), the e-mail rate limits and the bounds on what an upload holds in memory
//! refuse with their own codes, and the operator's dead-letter requeue delivers once.

#[path = "../crates/email/tests/support/smtp_server.rs"]
mod smtp_server;

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::cluster::ADMIN_TOKEN;
use common::{eventually, gateway, TestGateway};
use mailparse::MailHeaderMap;
use serde_json::Value;
use smtp_server::{free_port, require_aiosmtpd, SmtpServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BOUNDARY: &str = "abuseboundary0x2f9c";
const SERVICE: &str = "[[gms.services]]\nname = \"customer-support\"\ntenant = \"Environment\"\n";
const SENDER: &str = "web-form@company.com";

/// A multipart body with these fields (and one attachment when given).
fn multipart(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    if let Some((name, bytes)) = file {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\nContent-Type: application/pdf\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn fields<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut fields = vec![
        ("firstName", "John"),
        ("lastName", "Doe"),
        ("tenantName", "Environment"),
        ("fromAddress", "john@doe.com"),
        ("subject", "Help with account"),
        ("text", "I need help with my account"),
    ];
    for (name, value) in extra {
        fields.retain(|(n, _)| n != name);
        fields.push((name, value));
    }
    fields
}

/// A client whose connections come from `127.0.0.<last>`: another client address.
fn client_from(last: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        .build()
        .unwrap()
}

async fn post_with(client: &reqwest::Client, url: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = client
        .post(url)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON reply"))
}

async fn post(gw: &TestGateway, body: Vec<u8>) -> (u16, Value) {
    post_with(&client_from(1), &format!("{}/api/v2/emails", gw.base), body).await
}

#[track_caller]
fn assert_error(reply: &(u16, Value), http: u16, status_code: i64, code: i64) {
    let (status, body) = reply;
    assert_eq!(
        (
            *status,
            body["statusCode"].as_i64(),
            body["errors"][0]["code"].as_i64()
        ),
        (http, Some(status_code), Some(code)),
        "{body:#}"
    );
}

fn metric(text: &str, name: &str, reason: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| l.contains(&format!("reason=\"{reason}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn refusals(gw: &TestGateway, reason: &str) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", gw.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric(&text, "gateway_refusals_total", reason)
}

/// A gateway delivering over SMTP to `port` from [`SENDER`], default mailbox
/// `inbox@company.com`, with `sales@company.com` also allowed.
async fn smtp_gateway(port: u16, email: &str) -> TestGateway {
    gateway()
        .toml(SERVICE)
        .env("GATEWAY__ADMIN__TOKEN", ADMIN_TOKEN)
        .email(&format!(
            "sender = \"{SENDER}\"\nmailboxes = [\"sales@company.com\"]\n\
             backoff_initial_ms = 10\nbackoff_max_ms = 50\n{email}\n\
             [email.backend]\nkind = \"smtp\"\n[email.backend.smtp]\nhost = \"127.0.0.1\"\n\
             port = {port}\nsecurity = \"plain\"\ndefault_mailbox = \"inbox@company.com\"\n"
        ))
        .start()
        .await
}

async fn spool_is_idle(gw: &TestGateway) -> bool {
    gw.gateway.email().spool().is_idle().await.unwrap()
}

/// Finding 1 on the wire: the review's relay attempt (a stranger's mailbox, a bank's address
/// as the sender, an attachment) is refused in both dialects with nothing spooled or sent;
/// accepted e-mails go from the configured sender to an allowed mailbox, the customer in
/// `Reply-To`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_relay_attack_is_refused_and_mail_leaves_as_the_contact_center() {
    require_aiosmtpd();
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(free_port(), &dir.path().join("received"));
    let gw = smtp_gateway(server.port, "").await;
    let refused_before = refusals(&gw, "email_mailbox").await;

    let attack = fields(&[
        ("mailbox", "victim@elsewhere.example"),
        ("fromAddress", "security@bigbank.example"),
        ("subject", "Your account is locked"),
    ]);
    let pdf = vec![b'%'; 50_000];
    let reply = post(&gw, multipart(&attack, Some(("invoice.pdf", &pdf)))).await;
    assert_error(&reply, 403, 2, 148);
    assert!(
        reply.1["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("victim@elsewhere.example"),
        "{:#}",
        reply.1
    );
    // The GMS dialect's e-mail route, multipart and form-encoded.
    let gms = format!("{}/genesys/2/email/customer-support", gw.base);
    let gms_attack: Vec<_> = attack
        .iter()
        .filter(|(n, _)| *n != "tenantName")
        .copied()
        .collect();
    let reply = post_with(&client_from(1), &gms, multipart(&gms_attack, None)).await;
    assert_error(&reply, 403, 2, 148);
    assert_eq!(reply.1["chatEnded"], false, "the GMS error shape");
    let form = reqwest::Client::new()
        .post(&gms)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("firstName=J&lastName=D&fromAddress=security%40bigbank.example&subject=s&text=t&mailbox=victim%40elsewhere.example")
        .send()
        .await
        .unwrap();
    let reply = (form.status().as_u16(), form.json::<Value>().await.unwrap());
    assert_error(&reply, 403, 2, 148);
    assert!(
        spool_is_idle(&gw).await,
        "nothing of the attack was spooled"
    );
    assert_eq!(refusals(&gw, "email_mailbox").await - refused_before, 3.0);

    // Accepted: an allowed mailbox (any case), and none at all (the default).
    let (status, body) = post(
        &gw,
        multipart(&fields(&[("mailbox", "Sales@Company.com")]), None),
    )
    .await;
    assert_eq!(status, 200, "{body:#}");
    let to_sales = body["interactionId"].as_str().unwrap().to_owned();
    let (status, body) = post(&gw, multipart(&fields(&[]), Some(("a.pdf", b"pdf")))).await;
    assert_eq!(status, 200, "{body:#}");
    let to_default = body["interactionId"].as_str().unwrap().to_owned();
    eventually(
        "both e-mails at the SMTP server",
        Duration::from_secs(30),
        || async { (server.deliveries().len() == 2).then_some(()) },
    )
    .await;
    let mut seen = Vec::new();
    for delivery in server.deliveries() {
        let mail = mailparse::parse_mail(&delivery.raw).unwrap();
        let header = |n: &str| mail.headers.get_first_value(n).unwrap_or_default();
        assert_eq!(
            delivery.mail_from, SENDER,
            "MAIL FROM is the configured sender"
        );
        assert!(
            header("From").contains(&format!("<{SENDER}>")),
            "{}",
            header("From")
        );
        assert!(header("From").contains("John Doe"), "{}", header("From"));
        assert!(
            header("Reply-To").contains("<john@doe.com>"),
            "{}",
            header("Reply-To")
        );
        seen.push((header("X-Interaction-Id"), delivery.rcpt_to.clone()));
    }
    seen.sort();
    let mut expected = vec![
        (to_sales, vec!["sales@company.com".to_string()]),
        (to_default, vec!["inbox@company.com".to_string()]),
    ];
    expected.sort();
    assert_eq!(
        seen, expected,
        "RCPT TO is an allowed mailbox, never the customer"
    );
}

/// Finding 1's rate limits: a burst per client address, then 429 with code 162, while
/// another address goes on; and the global limit (code 163) for everyone together.
#[tokio::test]
async fn email_rate_limits_refuse_past_the_burst() {
    let gw = gateway()
        .env("GATEWAY__ADMIN__TOKEN", ADMIN_TOKEN)
        .env("GATEWAY__EMAIL__PER_ADDRESS_PER_HOUR", "1")
        .env("GATEWAY__EMAIL__PER_ADDRESS_BURST", "3")
        .start()
        .await;
    let url = format!("{}/api/v2/emails", gw.base);
    let before = refusals(&gw, "email_rate_address").await;
    let flooder = client_from(7);
    for _ in 0..3 {
        let (status, body) = post_with(&flooder, &url, multipart(&fields(&[]), None)).await;
        assert_eq!(status, 200, "{body:#}");
    }
    let reply = post_with(&flooder, &url, multipart(&fields(&[]), None)).await;
    assert_error(&reply, 429, 1, 162);
    let (status, body) = post_with(&client_from(8), &url, multipart(&fields(&[]), None)).await;
    assert_eq!(status, 200, "another address is not affected: {body:#}");
    assert_eq!(refusals(&gw, "email_rate_address").await - before, 1.0);

    let gw = gateway()
        .env("GATEWAY__ADMIN__TOKEN", ADMIN_TOKEN)
        .env("GATEWAY__EMAIL__GLOBAL_PER_HOUR", "1")
        .env("GATEWAY__EMAIL__GLOBAL_BURST", "2")
        .start()
        .await;
    let url = format!("{}/api/v2/emails", gw.base);
    let before = refusals(&gw, "email_rate_global").await;
    for last in [9, 10] {
        let (status, body) =
            post_with(&client_from(last), &url, multipart(&fields(&[]), None)).await;
        assert_eq!(status, 200, "{body:#}");
    }
    let reply = post_with(&client_from(11), &url, multipart(&fields(&[]), None)).await;
    assert_error(&reply, 429, 1, 163);
    assert_eq!(refusals(&gw, "email_rate_global").await - before, 1.0);
}

/// Finding 3: `text` is held in memory, so it has a small bound of its own (413, code 149),
/// and so has `userData` in all (code 141); nothing of either is kept.
#[tokio::test]
async fn long_text_and_user_data_are_refused_before_they_fill_memory() {
    let gw = gateway()
        .env("GATEWAY__ADMIN__TOKEN", ADMIN_TOKEN)
        .email("max_text_bytes = 1000")
        .start()
        .await;
    let at_limit = "t".repeat(1000);
    let (status, body) = post(&gw, multipart(&fields(&[("text", &at_limit)]), None)).await;
    assert_eq!(status, 200, "{body:#}");
    let over = "t".repeat(1001);
    let reply = post(&gw, multipart(&fields(&[("text", &over)]), None)).await;
    assert_error(&reply, 413, 2, 149);
    assert!(reply.1["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("1000 bytes"));

    let pair = format!("k={}", "v".repeat(4000));
    let mut many: Vec<(&str, &str)> = fields(&[]);
    for _ in 0..20 {
        many.push(("userData", &pair));
    }
    let reply = post(&gw, multipart(&many, None)).await;
    assert_error(&reply, 400, 2, 141);
    assert!(reply.1["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("userData"));
    eventually(
        "the accepted e-mail to leave the spool",
        Duration::from_secs(20),
        || async { spool_is_idle(&gw).await.then_some(()) },
    )
    .await;
}

/// Opens an upload and sends all but the end of its body: an intake under way.
async fn held_upload(gw: &TestGateway, body: &[u8]) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(gw.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /api/v2/emails HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() - 10]).await.unwrap();
    stream
}

/// Finding 3: at most `max_concurrent_intakes` e-mails are received at once; one more is
/// refused at once with 503 / statusCode 1 (retry), and the places come back when the
/// uploads end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_intakes_beyond_the_bound_are_refused_retryably() {
    let gw = gateway()
        .env("GATEWAY__ADMIN__TOKEN", ADMIN_TOKEN)
        .email("max_concurrent_intakes = 2")
        .start()
        .await;
    let before = refusals(&gw, "email_busy").await;
    let body = multipart(&fields(&[]), Some(("a.pdf", &[b'x'; 20_000])));
    let mut held = vec![held_upload(&gw, &body).await, held_upload(&gw, &body).await];
    let tmp = gw.email_dir.join("spool/tmp");
    eventually("two uploads under way", Duration::from_secs(20), || async {
        (std::fs::read_dir(&tmp).unwrap().count() == 2).then_some(())
    })
    .await;
    let reply = post(&gw, multipart(&fields(&[]), None)).await;
    assert_error(&reply, 503, 1, 161);
    assert_eq!(refusals(&gw, "email_busy").await - before, 1.0);

    for stream in &mut held {
        stream.write_all(&body[body.len() - 10..]).await.unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200", "a held upload completes");
    }
    drop(held);
    let (status, body) = post(&gw, multipart(&fields(&[]), None)).await;
    assert_eq!(status, 200, "the places came back: {body:#}");
}

/// Finding 5's operator command: dead letters listed and requeued through the admin
/// listener (token required), then delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_requeued_through_the_admin_listener() {
    require_aiosmtpd();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(); // the SMTP server is down
    let gw = smtp_gateway(port, "give_up_after_secs = 1").await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, body) = post(&gw, multipart(&fields(&[]), None)).await;
        assert_eq!(status, 200, "{body:#}");
        ids.push(body["interactionId"].as_str().unwrap().to_owned());
    }
    let admin = reqwest::Client::new();
    let dead = || async {
        let resp = admin
            .get(format!("{}/admin/emails/dead", gw.admin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<Value>().await.unwrap()["dead"]
            .as_array()
            .unwrap()
            .clone()
    };
    let listed = eventually("both dead letters", Duration::from_secs(30), || async {
        let dead = dead().await;
        (dead.len() == 2).then_some(dead)
    })
    .await;
    assert!(listed
        .iter()
        .all(|d| d["reason"].as_str().unwrap().starts_with("gave up after")));

    let url = format!("{}/admin/emails/dead/requeue", gw.admin);
    let resp = admin.post(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401, "the token is required");
    assert_eq!(
        resp.json::<Value>().await.unwrap()["errors"][0]["code"],
        203
    );

    let server = SmtpServer::start(port, &dir.path().join("received"));
    let resp = admin
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["requeued"].as_u64(), body["failed"].as_u64()),
        (Some(2), Some(0))
    );
    eventually(
        "both requeued e-mails delivered",
        Duration::from_secs(30),
        || async { (server.deliveries().len() == 2 && spool_is_idle(&gw).await).then_some(()) },
    )
    .await;
    let mut delivered: Vec<String> = server
        .deliveries()
        .iter()
        .map(|d| {
            let mail = mailparse::parse_mail(&d.raw).unwrap();
            mail.headers.get_first_value("X-Interaction-Id").unwrap()
        })
        .collect();
    delivered.sort();
    ids.sort();
    assert_eq!(delivered, ids, "each once");
    assert!(dead().await.is_empty());
}
