//! The `http` backend against a real HTTP server on 127.0.0.1:0 standing in for GMS: the
//! request it makes, and how HTTP outcomes become retries or dead letters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use email::config::BackendKind;
use email::{EmailConfig, EmailService, InteractionId, TextField};
use testkit::eventually;

/// One form part: field name, file name, content type, bytes.
type Part = (String, Option<String>, Option<String>, Vec<u8>);

/// One request as GMS saw it.
#[derive(Debug, Clone)]
struct Seen {
    service: String,
    interaction_id: Option<String>,
    api_key: Option<String>,
    parts: Vec<Part>,
}

#[derive(Clone, Default)]
struct Gms {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Statuses to answer, in turn; 200 once they run out.
    answers: Arc<Mutex<Vec<u16>>>,
}

async fn email(
    State(gms): State<Gms>,
    UrlPath(service): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> StatusCode {
    let ct = headers["content-type"].to_str().unwrap();
    let boundary = multer::parse_boundary(ct).unwrap();
    let mut multipart = multer::Multipart::new(body.into_data_stream(), boundary);
    let mut parts = Vec::new();
    while let Some(field) = multipart.next_field().await.unwrap() {
        let name = field.name().unwrap().to_owned();
        let file = field.file_name().map(str::to_owned);
        let ct = field.content_type().map(|m| m.to_string());
        parts.push((name, file, ct, field.bytes().await.unwrap().to_vec()));
    }
    let header = |n: &str| headers.get(n).map(|v| v.to_str().unwrap().to_owned());
    gms.seen.lock().unwrap().push(Seen {
        service,
        interaction_id: header("x-interaction-id"),
        api_key: header("x-api-key"),
        parts,
    });
    let mut answers = gms.answers.lock().unwrap();
    let status = if answers.is_empty() {
        200
    } else {
        answers.remove(0)
    };
    StatusCode::from_u16(status).unwrap()
}

async fn start_gms(answers: Vec<u16>) -> (Gms, String) {
    let gms = Gms {
        answers: Arc::new(Mutex::new(answers)),
        ..Gms::default()
    };
    let app = Router::new()
        .route("/genesys/2/email/{service}", post(email))
        .with_state(gms.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (gms, base)
}

fn config(dir: &std::path::Path, base: &str) -> EmailConfig {
    let mut config = EmailConfig {
        spool_dir: dir.join("spool"),
        backoff_initial_ms: 10,
        backoff_max_ms: 50,
        mailboxes: vec!["support@company.com".into()],
        ..EmailConfig::default()
    };
    config.backend.kind = BackendKind::Http;
    config.backend.http.base_url = base.to_owned();
    config.backend.http.service_name = "customer-email".into();
    config.backend.http.api_key = Some(config_types::Secret::from("k3y"));
    config
}

async fn send(service: &EmailService, attachment: &[u8]) -> InteractionId {
    let mut intake = service.intake().await.unwrap();
    for (field, value) in [
        (TextField::FirstName, "John"),
        (TextField::LastName, "Doe"),
        (TextField::TenantName, "Environment"),
        (TextField::FromAddress, "john@doe.com"),
        (TextField::Subject, "Hi hello"),
        (TextField::Text, "This is the text"),
        (TextField::Mailbox, "support@company.com"),
        (TextField::UserData, "key1=value1"),
    ] {
        let mut buf = Vec::new();
        intake
            .text_chunk(field, &mut buf, value.as_bytes())
            .unwrap();
        intake.set_text(field, buf).unwrap();
    }
    let mut sink = intake.attachment(Some("scan.png")).await.unwrap();
    sink.write(attachment).await.unwrap();
    sink.finish().await.unwrap();
    intake.commit().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_the_gms_form_and_retries_server_errors() {
    let (gms, base) = start_gms(vec![503, 500]).await;
    let dir = tempfile::tempdir().unwrap();
    let (service, _deliverer) =
        EmailService::start(&config(dir.path(), &base), std::future::pending()).unwrap();
    let png: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let id = send(&service, &png).await;

    eventually("the third attempt", Duration::from_secs(20), || async {
        (gms.seen.lock().unwrap().len() == 3).then_some(())
    })
    .await;
    let spool = service.spool().clone();
    eventually(
        "delivery after two 5xx",
        Duration::from_secs(20),
        || async { spool.is_idle().await.unwrap().then_some(()) },
    )
    .await;

    let seen = gms.seen.lock().unwrap().clone();
    let last = &seen[2];
    assert_eq!(last.service, "customer-email");
    assert_eq!(last.interaction_id.as_deref(), Some(id.as_str()));
    assert_eq!(last.api_key.as_deref(), Some("k3y"));
    let text: Vec<(String, String)> = last
        .parts
        .iter()
        .filter(|p| p.1.is_none())
        .map(|p| (p.0.clone(), String::from_utf8(p.3.clone()).unwrap()))
        .collect();
    let expect = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        text,
        vec![
            expect("firstName", "John"),
            expect("lastName", "Doe"),
            expect("fromAddress", "john@doe.com"),
            expect("subject", "Hi hello"),
            expect("text", "This is the text"),
            expect("mailbox", "support@company.com"),
            expect("userData", "key1=value1"),
        ],
        "GMS fields, no tenantName"
    );
    let files: Vec<_> = last.parts.iter().filter(|p| p.1.is_some()).collect();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, "files");
    assert_eq!(files[0].1.as_deref(), Some("scan.png"));
    assert_eq!(files[0].2.as_deref(), Some("image/png"));
    assert_eq!(files[0].3, png);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_error_is_dead_lettered_at_once() {
    let (gms, base) = start_gms(vec![400]).await;
    let dir = tempfile::tempdir().unwrap();
    let (service, _deliverer) =
        EmailService::start(&config(dir.path(), &base), std::future::pending()).unwrap();
    let id = send(&service, b"x").await;
    let reason = service.spool().dead_dir(&id).join("reason.txt");
    eventually("the dead letter", Duration::from_secs(20), || async {
        reason.exists().then_some(())
    })
    .await;
    let reason = std::fs::read_to_string(reason).unwrap();
    assert!(
        reason.contains("refused permanently at attempt 1"),
        "{reason}"
    );
    assert!(reason.contains("400"), "{reason}");
    assert_eq!(gms.seen.lock().unwrap().len(), 1);
}
