//! The e-mail side end to end below the HTTP edge: intake into the spool, the deliverer, and
//! what arrives at the mock folder and at a real SMTP server (aiosmtpd).

#[path = "support/smtp_server.rs"]
mod smtp_server;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use email::config::{BackendKind, SmtpSecurity};
use email::{EmailConfig, EmailService, InteractionId, TextField};
use mailparse::{MailHeaderMap, ParsedMail};
use smtp_server::{free_port, require_aiosmtpd, SmtpServer};
use testkit::eventually;

const PDF: &[u8] = b"%PDF-1.4\n% not really a pdf, but bytes\n\x00\x01\x02\xff";

/// The contact center's address mail is sent from in these tests.
const SENDER: &str = "web-form@company.com";

fn config(dir: &Path) -> EmailConfig {
    let mut config = EmailConfig {
        spool_dir: dir.join("spool"),
        backoff_initial_ms: 10,
        backoff_max_ms: 50,
        attempt_timeout_secs: 5,
        sender: Some(SENDER.into()),
        mailboxes: vec!["support@company.com".into(), "reject-me@company.com".into()],
        ..EmailConfig::default()
    };
    config.backend.mock.dir = Some(dir.join("outbox"));
    config
}

/// Accepts one e-mail the way the edge does, with two attachments.
async fn send(service: &EmailService, mailbox: Option<&str>) -> InteractionId {
    let mut intake = service.intake().await.unwrap();
    let mut fields = vec![
        (TextField::FirstName, "John"),
        (TextField::LastName, "Doe"),
        (TextField::TenantName, "Environment"),
        (TextField::FromAddress, "john@doe.com"),
        (TextField::Subject, "Help with account"),
        (TextField::Text, "I need help with my account\r\nThanks"),
        (TextField::UserData, "key1=value1"),
        (TextField::UserData, "key2=value=2"),
    ];
    if let Some(m) = mailbox {
        fields.push((TextField::Mailbox, m));
    }
    for (field, value) in fields {
        let mut buf = Vec::new();
        intake
            .text_chunk(field, &mut buf, value.as_bytes())
            .unwrap();
        intake.set_text(field, buf).unwrap();
    }
    let mut sink = intake.attachment(Some("../../report.PDF")).await.unwrap();
    for chunk in PDF.chunks(7) {
        sink.write(chunk).await.unwrap();
    }
    sink.finish().await.unwrap();
    let mut sink = intake.attachment(Some("notes.txt")).await.unwrap();
    sink.write(b"plain notes\n").await.unwrap();
    sink.finish().await.unwrap();
    intake.commit().await.unwrap()
}

fn header(mail: &ParsedMail, name: &str) -> Option<String> {
    mail.headers.get_first_value(name)
}

/// Asserts the message is the one `send` produced, addressed to `to`.
fn assert_message(raw: &[u8], id: &InteractionId, to: &str) {
    let mail = mailparse::parse_mail(raw).unwrap();
    assert_eq!(
        header(&mail, "X-Interaction-Id").as_deref(),
        Some(id.as_str())
    );
    assert!(header(&mail, "Message-ID").unwrap().contains(id.as_str()));
    // Sent by the contact center in the customer's name; replies go to the customer.
    let from = mailparse::addrparse_header(mail.headers.get_first_header("From").unwrap()).unwrap();
    assert_eq!(from.to_string(), format!("\"John Doe\" <{SENDER}>"));
    let reply_to =
        mailparse::addrparse_header(mail.headers.get_first_header("Reply-To").unwrap()).unwrap();
    assert_eq!(reply_to.to_string(), "\"John Doe\" <john@doe.com>");
    assert!(
        header(&mail, "To").unwrap().contains(to),
        "To {:?}",
        header(&mail, "To")
    );
    assert_eq!(
        header(&mail, "Subject").as_deref(),
        Some("Help with account")
    );
    assert_eq!(
        header(&mail, "X-Tenant-Name").as_deref(),
        Some("Environment")
    );
    assert_eq!(header(&mail, "X-UserData-key1").as_deref(), Some("value1"));
    assert_eq!(header(&mail, "X-UserData-key2").as_deref(), Some("value=2"));
    assert_eq!(mail.subparts.len(), 3, "text and two attachments");
    let text = mail.subparts[0].get_body().unwrap();
    assert_eq!(text.trim_end(), "I need help with my account\r\nThanks");
    let pdf = &mail.subparts[1];
    assert_eq!(pdf.ctype.mimetype, "application/pdf");
    assert_eq!(
        pdf.get_content_disposition()
            .params
            .get("filename")
            .map(String::as_str),
        Some("report.PDF")
    );
    assert_eq!(pdf.get_body_raw().unwrap(), PDF);
    let txt = &mail.subparts[2];
    assert_eq!(txt.ctype.mimetype, "text/plain");
    assert_eq!(txt.get_body_raw().unwrap(), b"plain notes\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_backend_writes_one_eml_per_interaction_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.mailbox = Some("configured@company.com".into());
    let (service, _deliverer) = EmailService::start(&config, std::future::pending()).unwrap();

    let with_request_mailbox = send(&service, Some("support@company.com")).await;
    let with_config_mailbox = send(&service, None).await;

    let outbox = dir.path().join("outbox");
    let eml = |id: &InteractionId| outbox.join(format!("{id}.eml"));
    eventually("both .eml files", Duration::from_secs(20), || async {
        (eml(&with_request_mailbox).exists() && eml(&with_config_mailbox).exists()).then_some(())
    })
    .await;
    assert_message(
        &std::fs::read(eml(&with_request_mailbox)).unwrap(),
        &with_request_mailbox,
        "support@company.com",
    );
    assert_message(
        &std::fs::read(eml(&with_config_mailbox)).unwrap(),
        &with_config_mailbox,
        "configured@company.com",
    );
    let spool = service.spool().clone();
    eventually(
        "delivered e-mails to leave the spool",
        Duration::from_secs(20),
        || async { spool.is_idle().await.unwrap().then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_backend_default_mailbox_applies_last() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (service, _deliverer) = EmailService::start(&config, std::future::pending()).unwrap();
    let id = send(&service, None).await;
    let eml = dir.path().join("outbox").join(format!("{id}.eml"));
    eventually(".eml file", Duration::from_secs(20), || async {
        eml.exists().then_some(())
    })
    .await;
    assert_message(
        &std::fs::read(eml).unwrap(),
        &id,
        "contact-center@localhost",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_delivery_to_a_real_server() {
    require_aiosmtpd();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = SmtpServer::start(port, &dir.path().join("received"));
    let mut config = config(dir.path());
    config.backend.kind = BackendKind::Smtp;
    config.backend.smtp.host = "127.0.0.1".into();
    config.backend.smtp.port = Some(port);
    config.backend.smtp.security = SmtpSecurity::Plain;
    config.backend.smtp.default_mailbox = "inbox@company.com".into();
    let (service, _deliverer) = EmailService::start(&config, std::future::pending()).unwrap();

    let id = send(&service, Some("support@company.com")).await;
    eventually(
        "the SMTP server to receive it",
        Duration::from_secs(30),
        || async { (server.messages().len() == 1).then_some(()) },
    )
    .await;
    let delivery = server.deliveries().remove(0);
    assert_message(&delivery.raw, &id, "support@company.com");
    assert_eq!(
        delivery.mail_from, SENDER,
        "the envelope sender is the contact center"
    );
    assert_eq!(delivery.rcpt_to, vec!["support@company.com".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_dead_letters_after_give_up_after_secs() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.give_up_after_secs = 1;
    config.backend.kind = BackendKind::Smtp;
    config.backend.smtp.host = "127.0.0.1".into();
    config.backend.smtp.port = Some(free_port()); // nobody listens there
    config.backend.smtp.security = SmtpSecurity::Plain;
    let (service, _deliverer) = EmailService::start(&config, std::future::pending()).unwrap();
    let id = send(&service, None).await;

    let reason = service.spool().dead_dir(&id).join("reason.txt");
    eventually("the dead letter", Duration::from_secs(30), || async {
        reason.exists().then_some(())
    })
    .await;
    let reason = std::fs::read_to_string(reason).unwrap();
    assert!(reason.starts_with("gave up after "), "{reason}");
    assert!(reason.contains("email.give_up_after_secs = 1"), "{reason}");
    assert!(service.spool().is_idle().await.unwrap());
    assert!(
        service.spool().dead_dir(&id).join("att-0").exists(),
        "the content is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_refusal_dead_letters_at_once() {
    require_aiosmtpd();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = SmtpServer::start(port, &dir.path().join("received"));
    let mut config = config(dir.path());
    config.backend.kind = BackendKind::Smtp;
    config.backend.smtp.host = "127.0.0.1".into();
    config.backend.smtp.port = Some(port);
    config.backend.smtp.security = SmtpSecurity::Plain;
    let (service, _deliverer) = EmailService::start(&config, std::future::pending()).unwrap();
    let id = send(&service, Some("reject-me@company.com")).await;

    let reason = service.spool().dead_dir(&id).join("reason.txt");
    eventually("the dead letter", Duration::from_secs(30), || async {
        reason.exists().then_some(())
    })
    .await;
    let reason = std::fs::read_to_string(reason).unwrap();
    assert!(
        reason.starts_with("refused permanently at attempt 1"),
        "{reason}"
    );
    assert!(server.messages().is_empty());
}

/// An SMTP "server" that holds the first connection open without a word (a tarpit) and
/// passes every later one through to a real server.
struct Tarpit {
    port: u16,
    /// The connections held; dropping them releases the stalled attempt.
    held: Arc<Mutex<Vec<tokio::net::TcpStream>>>,
}

impl Tarpit {
    async fn start(real_port: u16) -> Tarpit {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let holder = Arc::clone(&held);
        tokio::spawn(async move {
            let mut first = true;
            while let Ok((mut client, _)) = listener.accept().await {
                if std::mem::take(&mut first) {
                    holder.lock().unwrap().push(client);
                    continue;
                }
                tokio::spawn(async move {
                    let mut server = tokio::net::TcpStream::connect(("127.0.0.1", real_port))
                        .await
                        .unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Tarpit { port, held }
    }

    fn holding(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    fn release(&self) {
        self.held.lock().unwrap().clear();
    }
}

fn interaction_ids(server: &SmtpServer) -> Vec<String> {
    let mut ids: Vec<String> = server
        .messages()
        .iter()
        .map(|raw| {
            let mail = mailparse::parse_mail(raw).unwrap();
            header(&mail, "X-Interaction-Id").unwrap()
        })
        .collect();
    ids.sort();
    ids
}

/// Finding 5 of issue 13: with deliveries in parallel, one connection the SMTP server never
/// answers (attempt timeout far away) holds one slot, while the next e-mails are delivered;
/// once it is let go, the stalled e-mail is retried and delivered, each e-mail once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_smtp_connection_does_not_hold_up_the_queue() {
    require_aiosmtpd();
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(free_port(), &dir.path().join("received"));
    let tarpit = Tarpit::start(server.port).await;
    let mut config = config(dir.path());
    config.parallel_deliveries = 2;
    config.attempt_timeout_secs = 600;
    config.backend.kind = BackendKind::Smtp;
    config.backend.smtp.host = "127.0.0.1".into();
    config.backend.smtp.port = Some(tarpit.port);
    config.backend.smtp.security = SmtpSecurity::Plain;
    let (service, _deliverer) = EmailService::start(&config, std::future::pending()).unwrap();

    let stalled = send(&service, None).await;
    eventually(
        "the tarpit to hold a connection",
        Duration::from_secs(20),
        || async { (tarpit.holding() == 1).then_some(()) },
    )
    .await;
    let others = [send(&service, None).await, send(&service, None).await];
    eventually(
        "the other two e-mails to arrive",
        Duration::from_secs(30),
        || async { (server.messages().len() == 2).then_some(()) },
    )
    .await;
    let mut expected: Vec<String> = others.iter().map(|id| id.to_string()).collect();
    expected.sort();
    assert_eq!(interaction_ids(&server), expected);
    assert_eq!(tarpit.holding(), 1, "the first attempt is still stalled");

    tarpit.release();
    eventually(
        "the stalled e-mail, retried",
        Duration::from_secs(30),
        || async { (server.messages().len() == 3).then_some(()) },
    )
    .await;
    expected.push(stalled.to_string());
    expected.sort();
    assert_eq!(interaction_ids(&server), expected, "each e-mail once");
    let spool = service.spool().clone();
    eventually("the spool to empty", Duration::from_secs(20), || async {
        spool.is_idle().await.unwrap().then_some(())
    })
    .await;
    assert!(spool.dead().await.unwrap().is_empty());
}

/// Dead letters go back into the queue on the operator's word, with a fresh give-up time,
/// and are delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_dead_letters_are_delivered_once() {
    require_aiosmtpd();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(); // nobody listens there yet
    let mut config = config(dir.path());
    config.give_up_after_secs = 1;
    config.backend.kind = BackendKind::Smtp;
    config.backend.smtp.host = "127.0.0.1".into();
    config.backend.smtp.port = Some(port);
    config.backend.smtp.security = SmtpSecurity::Plain;
    let (service, _deliverer) = EmailService::start(&config, std::future::pending()).unwrap();
    let ids = [send(&service, None).await, send(&service, None).await];
    let spool = service.spool().clone();
    eventually("both dead letters", Duration::from_secs(30), || async {
        (spool.dead().await.unwrap().len() == 2).then_some(())
    })
    .await;
    let listed = service.dead_letters().await.unwrap();
    assert!(listed.iter().all(|d| d.reason.starts_with("gave up after")));

    let server = SmtpServer::start(port, &dir.path().join("received"));
    let requeued = service.requeue_dead().await.unwrap();
    assert_eq!((requeued.ids.len(), requeued.failed), (2, 0));
    eventually("both delivered", Duration::from_secs(30), || async {
        (server.messages().len() == 2 && spool.is_idle().await.unwrap()).then_some(())
    })
    .await;
    let mut expected: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    expected.sort();
    assert_eq!(interaction_ids(&server), expected);
    assert!(spool.dead().await.unwrap().is_empty());
    assert_eq!(service.requeue_dead().await.unwrap().ids.len(), 0);
}

/// An e-mail spooled with a mailbox that is not (or no longer) allowed is never sent there:
/// the deliverer checks again and dead-letters it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_mailbox_outside_the_allow_list_is_dead_lettered_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let spool = email::Spool::open(&config.spool_dir).unwrap();
    let draft = spool.draft().await.unwrap();
    let id = draft.id().clone();
    let envelope = email::Envelope {
        interaction_id: id.to_string(),
        first_name: "John".into(),
        last_name: "Doe".into(),
        tenant_name: "Environment".into(),
        from_address: "security@bigbank.example".into(),
        from_name: None,
        subject: "Verify your account".into(),
        text: "click here".into(),
        mailbox: Some("victim@elsewhere.example".into()),
        user_data: vec![],
        attachments: vec![],
        accepted_at_ms: 0,
        requeued_at_ms: None,
    };
    draft.commit(&envelope).await.unwrap();

    let (service, _deliverer) = EmailService::start(&config, std::future::pending()).unwrap();
    let reason = service.spool().dead_dir(&id).join("reason.txt");
    eventually("the dead letter", Duration::from_secs(20), || async {
        reason.exists().then_some(())
    })
    .await;
    let reason = std::fs::read_to_string(reason).unwrap();
    assert!(reason.contains("victim@elsewhere.example"), "{reason}");
    assert!(reason.contains("email.mailboxes"), "{reason}");
    let outbox = std::fs::read_dir(dir.path().join("outbox"))
        .unwrap()
        .count();
    assert_eq!(outbox, 0, "nothing was written to the outbox");
}
