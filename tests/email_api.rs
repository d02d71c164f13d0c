//! `POST /api/v2/emails` over a real socket: what a client is answered, what reaches the mock
//! backend's folder, and that a refused request leaves nothing in the spool.

mod common;

use std::time::Duration;

use common::{eventually, gateway, Reply, TestGateway};
use mailparse::MailHeaderMap;
use serde_json::Value;

const BOUNDARY: &str = "----WebKitFormBoundaryE19zNvXGzXaLvS5C";

/// A multipart/form-data body, built by hand so tests control every byte.
#[derive(Default, Clone)]
struct Form {
    body: Vec<u8>,
}

impl Form {
    fn text(mut self, name: &str, value: &str) -> Self {
        self.body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
        self
    }

    fn file(mut self, file_name: &str, content_type: &str, bytes: &[u8]) -> Self {
        self.body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{file_name}\"\r\nContent-Type: {content_type}\r\n\r\n"
            )
            .as_bytes(),
        );
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    fn finish(mut self) -> Vec<u8> {
        self.body
            .extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        self.body
    }
}

fn content_type() -> String {
    format!("multipart/form-data; boundary=\"{BOUNDARY}\"")
}

/// Every required field, valid.
fn complete() -> Form {
    Form::default()
        .text("firstName", "John")
        .text("lastName", "Doe")
        .text("tenantName", "Environment")
        .text("fromAddress", "jdoe@gmail.com")
        .text("subject", "Help with account")
        .text("text", "I need help with my account")
}

async fn post(gw: &TestGateway, body: Vec<u8>) -> Reply {
    gw.client()
        .post_raw("/api/v2/emails", Some(&content_type()), body)
        .await
}

fn interaction_id(reply: &Reply) -> String {
    assert_eq!(reply.http, 200, "{:#}", reply.body);
    let obj = reply.body.as_object().unwrap();
    assert_eq!(obj.len(), 1, "only interactionId: {:#}", reply.body);
    let id = obj["interactionId"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 16);
    assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
    id
}

/// The delivered `.eml` of `id`, once the deliverer wrote it.
async fn delivered(gw: &TestGateway, id: &str) -> Vec<u8> {
    let path = gw
        .email_dir
        .join("spool/mock-outbox")
        .join(format!("{id}.eml"));
    eventually("the .eml file", Duration::from_secs(20), || {
        let path = path.clone();
        async move { std::fs::read(path).ok() }
    })
    .await
}

/// Waits until accepted e-mails have been delivered and have left the spool.
async fn settle(gw: &TestGateway) {
    eventually("the spool to empty", Duration::from_secs(20), || async {
        gw.gateway
            .email()
            .spool()
            .is_idle()
            .await
            .unwrap()
            .then_some(())
    })
    .await;
}

/// Checked right after a refusal, with nothing else in flight: the refused request's files
/// are gone before its reply was sent.
async fn assert_nothing_kept(gw: &TestGateway) {
    let spool = gw.gateway.email().spool();
    assert!(
        spool.is_idle().await.unwrap(),
        "a refused e-mail left files in the spool"
    );
    assert!(spool.dead().await.unwrap().is_empty());
}

#[track_caller]
fn assert_refused(reply: &Reply, http: u16, code: i64, mentions: &str) {
    reply.assert_error(http, 2, code);
    let message = reply.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains(mentions), "{message:?} lacks {mentions:?}");
}

#[tokio::test]
async fn the_reference_example_is_accepted_and_delivered() {
    let gw = gateway().start().await;
    // "Send Email" example of the Web API reference, with its OCR damage repaired.
    let body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"firstName\"\r\n\r\nName\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"lastName\"\r\n\r\nLastName\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"fromAddress\"\r\n\r\njohn@doe.com\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"subject\"\r\n\r\nHi hello\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nThis is the text\r\n\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"tenantName\"\r\n\r\nEnvironment\r\n\
         --{b}--\r\n",
        b = BOUNDARY
    );
    let reply = post(&gw, body.into_bytes()).await;
    let id = interaction_id(&reply);

    let raw = delivered(&gw, &id).await;
    let mail = mailparse::parse_mail(&raw).unwrap();
    let header = |n: &str| mail.headers.get_first_value(n).unwrap_or_default();
    assert_eq!(header("X-Interaction-Id"), id);
    assert!(header("Message-ID").contains(&id));
    assert_eq!(header("Subject"), "Hi hello");
    assert_eq!(header("X-Tenant-Name"), "Environment");
    // Sent from the contact center's address (the default mailbox, as no `email.sender` is
    // set) in the customer's name; replies go to the customer.
    assert!(
        header("From").contains("<contact-center@localhost>"),
        "{}",
        header("From")
    );
    assert!(
        header("From").contains("Name LastName"),
        "{}",
        header("From")
    );
    assert!(
        header("Reply-To").contains("<john@doe.com>"),
        "{}",
        header("Reply-To")
    );
    assert!(header("To").contains("contact-center@localhost"));
    assert_eq!(mail.get_body().unwrap().trim_end(), "This is the text");
    settle(&gw).await;
}

#[tokio::test]
async fn attachments_user_data_and_mailbox_reach_the_backend() {
    let gw = gateway()
        .email("mailbox = \"configured@company.com\"")
        .email("mailboxes = [\"support@company.com\"]")
        .start()
        .await;
    let pdf: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let body = complete()
        .text("mailbox", "support@company.com")
        .text("userData", "key1=value1")
        .text("userData", "key2=value2")
        .file("../../statement.PDF", "application/x-msdownload", &pdf)
        .file("..\\..\\notes.txt", "image/png", b"some notes")
        .file("", "application/octet-stream", b"") // an unused file input
        .text("submit", "Send")
        .finish();
    let id = interaction_id(&post(&gw, body).await);

    let raw = delivered(&gw, &id).await;
    let mail = mailparse::parse_mail(&raw).unwrap();
    let header = |n: &str| mail.headers.get_first_value(n).unwrap_or_default();
    assert!(
        header("To").contains("support@company.com"),
        "request beats config"
    );
    assert_eq!(header("X-UserData-key1"), "value1");
    assert_eq!(header("X-UserData-key2"), "value2");
    assert_eq!(mail.subparts.len(), 3);
    let names: Vec<_> = mail.subparts[1..]
        .iter()
        .map(|p| {
            (
                p.get_content_disposition()
                    .params
                    .get("filename")
                    .cloned()
                    .unwrap(),
                p.ctype.mimetype.clone(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("statement.PDF".to_string(), "application/pdf".to_string()),
            ("notes.txt".to_string(), "text/plain".to_string()),
        ],
        "names lose their paths; types come from the extension"
    );
    assert_eq!(mail.subparts[1].get_body_raw().unwrap(), pdf);
    assert_eq!(mail.subparts[2].get_body_raw().unwrap(), b"some notes");
}

#[tokio::test]
async fn the_configured_mailbox_applies_when_the_request_has_none() {
    let gw = gateway()
        .email("mailbox = \"configured@company.com\"")
        .start()
        .await;
    let id = interaction_id(&post(&gw, complete().finish()).await);
    let raw = delivered(&gw, &id).await;
    let mail = mailparse::parse_mail(&raw).unwrap();
    assert!(mail
        .headers
        .get_first_value("To")
        .unwrap()
        .contains("configured@company.com"));
}

#[tokio::test]
async fn each_missing_or_blank_required_field_is_refused() {
    let gw = gateway().start().await;
    let fields = [
        ("firstName", "John"),
        ("lastName", "Doe"),
        ("tenantName", "Environment"),
        ("fromAddress", "jdoe@gmail.com"),
        ("subject", "Help"),
        ("text", "Body"),
    ];
    for missing in fields.map(|(name, _)| name) {
        for blank in [false, true] {
            let mut form = Form::default().file("a.txt", "text/plain", b"attached");
            for (name, value) in fields {
                if name != missing {
                    form = form.text(name, value);
                } else if blank {
                    form = form.text(name, "  ");
                }
            }
            let reply = post(&gw, form.finish()).await;
            assert_refused(&reply, 400, 140, missing);
            assert_nothing_kept(&gw).await;
        }
    }
}

#[tokio::test]
async fn invalid_fields_are_refused() {
    let gw = gateway().start().await;
    let cases: Vec<(Form, u16, i64, &str)> = vec![
        (
            complete().text("fromAddress", "x@y.z"),
            400,
            141,
            "more than once",
        ),
        (
            Form::default()
                .text("firstName", "John")
                .text("lastName", "Doe")
                .text("tenantName", "Environment")
                .text("fromAddress", "not-an-address")
                .text("subject", "s")
                .text("text", "t"),
            400,
            142,
            "fromAddress",
        ),
        (complete().text("mailbox", "nobody"), 400, 142, "mailbox"),
        (
            complete().text("userData", "no-equals-sign"),
            400,
            141,
            "userData",
        ),
        (
            complete().text("userData", "bad key=v"),
            400,
            141,
            "userData",
        ),
        (
            Form::default()
                .text("firstName", "John\r\nBcc: victim@example.com")
                .text("lastName", "Doe")
                .text("tenantName", "Environment")
                .text("fromAddress", "jdoe@gmail.com")
                .text("subject", "s")
                .text("text", "t"),
            400,
            141,
            "firstName",
        ),
    ];
    for (form, http, code, mentions) in cases {
        let reply = post(&gw, form.file("a.txt", "text/plain", b"x").finish()).await;
        assert_refused(&reply, http, code, mentions);
        assert_nothing_kept(&gw).await;
    }

    // An attachment under another field name is refused rather than silently dropped.
    let mut misnamed = complete().finish();
    misnamed.truncate(misnamed.len() - format!("--{BOUNDARY}--\r\n").len());
    misnamed.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"attachment\"; filename=\"a.pdf\"\r\n\r\nx\r\n--{BOUNDARY}--\r\n"
        )
        .as_bytes(),
    );
    assert_refused(&post(&gw, misnamed).await, 400, 141, "files");
    assert_nothing_kept(&gw).await;

    let unknown_tenant = Form::default()
        .text("firstName", "John")
        .text("lastName", "Doe")
        .text("tenantName", "Nobody")
        .text("fromAddress", "jdoe@gmail.com")
        .text("subject", "s")
        .text("text", "t")
        .file("a.txt", "text/plain", b"x")
        .finish();
    assert_refused(&post(&gw, unknown_tenant).await, 400, 130, "Nobody");
    assert_nothing_kept(&gw).await;
}

#[tokio::test]
async fn too_many_files_is_refused() {
    let gw = gateway().email("max_files = 2").start().await;
    let two = complete()
        .file("a.txt", "text/plain", b"1")
        .file("b.txt", "text/plain", b"2");
    interaction_id(&post(&gw, two.clone().finish()).await);
    settle(&gw).await;
    let three = two.file("c.txt", "text/plain", b"3").finish();
    assert_refused(&post(&gw, three).await, 400, 143, "more than 2 files");
    assert_nothing_kept(&gw).await;
    settle(&gw).await;
}

#[tokio::test]
async fn content_over_max_size_is_refused() {
    let gw = gateway().email("max_size = 10000").start().await;
    // Exactly at the limit: every part's content counts (text fields too).
    let text_len: usize = [
        "John",
        "Doe",
        "Environment",
        "jdoe@gmail.com",
        "Help with account",
        "I need help with my account",
    ]
    .iter()
    .map(|s| s.len())
    .sum();
    let at_limit = complete()
        .file("a.pdf", "application/pdf", &vec![b'x'; 10_000 - text_len])
        .finish();
    interaction_id(&post(&gw, at_limit).await);
    settle(&gw).await;

    let over = complete()
        .file("a.pdf", "application/pdf", &vec![b'x'; 10_001 - text_len])
        .finish();
    assert_refused(&post(&gw, over).await, 413, 144, "10000 bytes");
    assert_nothing_kept(&gw).await;

    // Far beyond the limit, announced: refused before the body is read.
    let huge = complete()
        .file("a.pdf", "application/pdf", &vec![b'x'; 3 * 1024 * 1024])
        .finish();
    assert_refused(&post(&gw, huge).await, 413, 144, "10000 bytes");
    assert_nothing_kept(&gw).await;

    // Streamed without a length: refused when the stream crosses the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = complete()
        .file("a.pdf", "application/pdf", &vec![b'x'; 20_000])
        .finish()
        .chunks(1000)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v2/emails", gw.base))
        .header("content-type", content_type())
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], 144);
    assert_nothing_kept(&gw).await;
}

#[tokio::test]
async fn forbidden_file_types_are_refused() {
    let gw = gateway().start().await;
    for name in [
        "virus.exe",
        "archive.tar.gz",
        "noextension",
        "../../etc/passwd",
        "pdf",
    ] {
        let reply = post(&gw, complete().file(name, "application/pdf", b"x").finish()).await;
        reply.assert_error(415, 2, 145);
        assert_nothing_kept(&gw).await;
    }
    // A body in a files part without a file name.
    let reply = post(&gw, complete().file("", "text/plain", b"x").finish()).await;
    reply.assert_error(415, 2, 145);
    assert_nothing_kept(&gw).await;
    // Case does not matter.
    interaction_id(
        &post(
            &gw,
            complete().file("SCAN.JPG", "image/jpeg", b"x").finish(),
        )
        .await,
    );
}

#[tokio::test]
async fn file_types_replace_the_default_list() {
    let gw = gateway().email("file_types = [\"csv\"]").start().await;
    let reply = post(
        &gw,
        complete().file("a.pdf", "application/pdf", b"x").finish(),
    )
    .await;
    reply.assert_error(415, 2, 145);
    assert_nothing_kept(&gw).await;
    interaction_id(&post(&gw, complete().file("a.csv", "text/csv", b"x").finish()).await);
}

#[tokio::test]
async fn hostile_file_names_are_sanitised() {
    let gw = gateway().start().await;
    let cases = [
        ("../../../tmp/evil.txt", "evil.txt"),
        ("C:\\Windows\\system32\\x.txt", "x.txt"),
        ("..", ""),
        // C1 controls (CSI, NEL) arrive as UTF-8 and tabs are legal in a header: both go.
        ("a\u{9b}31m\u{85}b\t.txt", "a31mb.txt"),
        ("   .hidden.txt  ", "hidden.txt"),
    ];
    for (sent, shown) in cases {
        let reply = post(&gw, complete().file(sent, "text/plain", b"x").finish()).await;
        if shown.is_empty() {
            // Nothing left of the name, so no extension: refused.
            reply.assert_error(415, 2, 145);
            assert_nothing_kept(&gw).await;
            continue;
        }
        let id = interaction_id(&reply);
        let raw = delivered(&gw, &id).await;
        settle(&gw).await;
        let mail = mailparse::parse_mail(&raw).unwrap();
        let name = mail.subparts[1]
            .get_content_disposition()
            .params
            .get("filename")
            .cloned();
        assert_eq!(name.as_deref(), Some(shown), "sent {sent:?}");
    }
    // C0 controls other than tab are not even legal in a part header: the framing is refused.
    let reply = post(
        &gw,
        complete()
            .file("a\u{1b}[31m\u{7f}.txt", "text/plain", b"x")
            .finish(),
    )
    .await;
    reply.assert_error(400, 2, 147);
    assert_nothing_kept(&gw).await;
    // Nothing was written outside the spool's own folders.
    assert!(!gw.email_dir.join("tmp/evil.txt").exists());
    assert!(!std::path::Path::new("/tmp/evil.txt").exists());
}

#[tokio::test]
async fn a_body_that_is_not_multipart_is_refused() {
    let gw = gateway().start().await;
    let client = gw.client();
    let json = br#"{"firstName":"John"}"#.to_vec();
    for ct in [Some("application/json"), Some("multipart/form-data"), None] {
        let reply = client.post_raw("/api/v2/emails", ct, json.clone()).await;
        reply.assert_error(415, 2, 146);
    }
    assert_nothing_kept(&gw).await;
}

#[tokio::test]
async fn a_malformed_multipart_body_is_refused() {
    let gw = gateway().start().await;
    let truncated = {
        let mut body = complete()
            .file("a.txt", "text/plain", b"half of it")
            .finish();
        body.truncate(body.len() - 20);
        body
    };
    let no_headers = format!("--{BOUNDARY}\r\ngarbage without a blank line").into_bytes();
    for body in [truncated, no_headers, b"not multipart at all".to_vec()] {
        let reply = post(&gw, body).await;
        assert_eq!(reply.http, 400, "{:#}", reply.body);
        let code = reply.error_code();
        assert!(code == 147 || code == 140, "{:#}", reply.body);
        assert_nothing_kept(&gw).await;
    }
}
