//! `POST /genesys/2/email/{serviceName}`: the GMS dialect of Send Email, directly and as the
//! target of another gateway's `http` e-mail backend.

mod common;

use std::time::Duration;

use common::{eventually, gateway, TestGateway};
use mailparse::MailHeaderMap;
use serde_json::Value;

const BOUNDARY: &str = "gmsboundary7MA4YWxkTrZu0gW";
const SERVICE: &str = "[[gms.services]]\nname = \"customer-support\"\ntenant = \"Environment\"\n";

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
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

const FIELDS: &[(&str, &str)] = &[
    ("firstName", "John"),
    ("lastName", "Doe"),
    ("fromAddress", "jdoe@example.com"),
    ("subject", "Order 1234"),
    ("text", "Where is my parcel?"),
    ("userData", "orderId=1234"),
];

async fn post(gw: &TestGateway, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", gw.base))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON reply"))
}

/// The `.eml` the mock backend wrote for an interaction.
async fn delivered(gw: &TestGateway, id: &str) -> mailparse::ParsedMail<'static> {
    let path = gw
        .email_dir
        .join("spool/mock-outbox")
        .join(format!("{id}.eml"));
    let bytes = eventually("the e-mail's delivery", Duration::from_secs(20), || {
        let path = path.clone();
        async move { std::fs::read(&path).ok() }
    })
    .await;
    mailparse::parse_mail(Box::leak(bytes.into_boxed_slice())).unwrap()
}

#[tokio::test]
async fn multipart_and_form_encoded_emails_reach_the_services_tenant() {
    let gw = gateway().toml(SERVICE).start().await;
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let (status, body) = post(
        &gw,
        "/genesys/2/email/customer-support",
        &ct,
        multipart(FIELDS, Some(("invoice.pdf", b"%PDF-1.4 test"))),
    )
    .await;
    assert_eq!(
        (status, body["statusCode"].as_i64()),
        (200, Some(0)),
        "{body}"
    );
    let id = body["interactionId"].as_str().unwrap().to_owned();
    let mail = delivered(&gw, &id).await;
    assert_eq!(
        mail.headers.get_first_value("Subject").as_deref(),
        Some("Order 1234")
    );
    assert_eq!(
        mail.headers.get_first_value("X-Interaction-Id").as_deref(),
        Some(&id[..])
    );
    assert_eq!(mail.subparts.len(), 2, "text and the attachment");

    let form = "firstName=Ann&lastName=Lee&fromAddress=ann%40example.com&subject=Hi&text=Hello+there&tenantName=Ignored";
    let (status, body) = post(
        &gw,
        "/genesys/2/email/customer-support",
        "application/x-www-form-urlencoded",
        form.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(
        (status, body["statusCode"].as_i64()),
        (200, Some(0)),
        "{body}"
    );
    let mail = delivered(&gw, body["interactionId"].as_str().unwrap()).await;
    assert_eq!(
        mail.headers.get_first_value("Subject").as_deref(),
        Some("Hi")
    );
    assert!(mail.get_body().unwrap().contains("Hello there"));
}

#[tokio::test]
async fn refusals_are_gms_errors() {
    let gw = gateway().toml(SERVICE).start().await;
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let (status, body) = post(&gw, "/genesys/2/email/nope", &ct, multipart(FIELDS, None)).await;
    assert_eq!(
        (status, body["statusCode"].as_i64()),
        (404, Some(2)),
        "{body}"
    );
    let without_subject: Vec<_> = FIELDS
        .iter()
        .filter(|(k, _)| *k != "subject")
        .copied()
        .collect();
    let (status, body) = post(
        &gw,
        "/genesys/2/email/customer-support",
        &ct,
        multipart(&without_subject, None),
    )
    .await;
    assert_eq!(
        (status, body["statusCode"].as_i64()),
        (400, Some(2)),
        "{body}"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("subject"),
        "{body}"
    );
    let (status, body) = post(
        &gw,
        "/genesys/2/email/customer-support",
        "application/x-www-form-urlencoded",
        b"firstName=A&lastName=B&fromAddress=a%40b.c&subject=s&text=t&files=x".to_vec(),
    )
    .await;
    assert_eq!(
        (status, body["statusCode"].as_i64()),
        (400, Some(2)),
        "{body}"
    );
    let (status, body) = post(
        &gw,
        "/genesys/2/email/customer-support",
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(
        (status, body["statusCode"].as_i64()),
        (415, Some(2)),
        "{body}"
    );
    let spool = std::fs::read_dir(gw.email_dir.join("spool/queue"))
        .unwrap()
        .count();
    assert_eq!(spool, 0, "nothing of a refused e-mail is kept");
}

/// Gateway A's `http` e-mail backend delivers to gateway B's GMS e-mail front end.
#[tokio::test]
async fn a_gateways_gms_email_backend_delivers_to_another_gateway() {
    let b = gateway().toml(SERVICE).start().await;
    let a = gateway()
        .email(&format!(
            "backoff_initial_ms = 50\n[email.backend]\nkind = \"http\"\n[email.backend.http]\nbase_url = \"{}\"\nservice_name = \"customer-support\"\n",
            b.base
        ))
        .start()
        .await;
    let mut fields = FIELDS.to_vec();
    fields.push(("tenantName", "Environment"));
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let (status, body) = post(
        &a,
        "/api/v2/emails",
        &ct,
        multipart(&fields, Some(("note.txt", b"hello"))),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let outbox = b.email_dir.join("spool/mock-outbox");
    let mail = eventually("delivery through B", Duration::from_secs(20), || {
        let outbox = outbox.clone();
        async move {
            // Only a finished message: the mock backend writes `.<id>.eml.tmp`, then renames.
            let entry = std::fs::read_dir(&outbox)
                .ok()?
                .flatten()
                .find(|e| e.path().extension().is_some_and(|x| x == "eml"))?;
            std::fs::read(entry.path()).ok()
        }
    })
    .await;
    let mail = mailparse::parse_mail(&mail).unwrap();
    assert_eq!(
        mail.headers.get_first_value("Subject").as_deref(),
        Some("Order 1234")
    );
    assert_eq!(mail.subparts.len(), 2);
}
