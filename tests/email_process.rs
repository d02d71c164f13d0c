//! The `webapi-gateway` binary as a process, for what only a process can show: an e-mail that
//! got an interactionId survives `kill -9` and an SMTP outage far past the old retry budget,
//! what a 10 MB upload costs in memory, and that 40 concurrent uploads of a huge `text` cannot
//! grow the process (issue 13, findings 3 and 5).

#[path = "../crates/email/tests/support/smtp_server.rs"]
mod smtp_server;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use futures::StreamExt;
use mailparse::MailHeaderMap;
use smtp_server::{free_port, received, require_aiosmtpd, SmtpServer};
use testkit::eventually_blocking;

const BOUNDARY: &str = "gatewaytestboundary";

/// A gateway process started from a config file; killed (SIGKILL) on drop.
struct GatewayProcess {
    child: Child,
    addr: String,
}

impl GatewayProcess {
    fn start(config: &Path) -> GatewayProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_webapi-gateway"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            // Test gateways run side by side: each takes its own admin port.
            .env("GATEWAY__ADMIN__LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Keeps reading after the address is found, so the log pipe never fills up.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.find("addr=") {
                    let addr = line[i + 5..].split_whitespace().next().unwrap().to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the gateway's listening line");
        GatewayProcess { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown code runs.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, email: &str) -> PathBuf {
    let path = dir.join("gateway.toml");
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[tenants]]\nname = \"Environment\"\n\
         [[chat.instances]]\nalias = \"117\"\nkind = \"mock\"\n[log]\nlevel = \"info\"\n\
         [email]\nspool_dir = \"{}\"\n{email}\n",
        dir.join("spool").display()
    );
    std::fs::write(&path, toml).unwrap();
    path
}

fn multipart(subject: &str, attachment: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in [
        ("firstName", "John"),
        ("lastName", "Doe"),
        ("tenantName", "Environment"),
        ("fromAddress", "john@doe.com"),
        ("subject", subject),
        ("text", "This is the text"),
    ] {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"doc.pdf\"\r\n\
             Content-Type: application/pdf\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(attachment);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn send(addr: &str, body: Vec<u8>) -> String {
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/api/v2/emails"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let reply: serde_json::Value = resp.json().await.unwrap();
    reply["interactionId"].as_str().unwrap().to_owned()
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_email_survives_kill_9_and_arrives_once() {
    require_aiosmtpd();
    let dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let config = write_config(
        dir.path(),
        &format!(
            "backoff_initial_ms = 50\nbackoff_max_ms = 200\nper_address_per_hour = 0\n\
             [email.backend]\nkind = \"smtp\"\n[email.backend.smtp]\nhost = \"127.0.0.1\"\n\
             port = {smtp_port}\nsecurity = \"plain\"\ndefault_mailbox = \"inbox@company.com\"\n"
        ),
    );

    // The SMTP server is down: everything accepted stays queued.
    let gateway = GatewayProcess::start(&config);
    const N: usize = 8;
    let mut ids = Vec::new();
    for i in 0..N {
        let attachment: Vec<u8> = (0..(i * 1000 + 10)).map(|b| b as u8).collect();
        ids.push(send(&gateway.addr, multipart(&format!("mail {i}"), &attachment)).await);
    }
    // And one upload cut off by the kill: it never got an id and must never be delivered.
    let mut half = TcpStream::connect(&gateway.addr).unwrap();
    let body = multipart("cut off", &[7u8; 100_000]);
    write!(
        half,
        "POST /api/v2/emails HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    half.write_all(&body[..body.len() / 2]).unwrap();
    let spool = dir.path().join("spool");
    eventually_blocking(
        "the cut-off upload to reach the spool",
        Duration::from_secs(20),
        || (entries(&spool.join("tmp")) == 1).then_some(()),
    );
    assert_eq!(entries(&spool.join("queue")), N);
    gateway.kill9();
    drop(half);

    let server = SmtpServer::start(smtp_port, &dir.path().join("received"));
    let _gateway = GatewayProcess::start(&config);
    // `tmp/` empty: the cut-off upload was cleared at start-up, and the last delivered
    // e-mail's folder (renamed out of `queue/` into `tmp/`) has been deleted.
    eventually_blocking(
        "every e-mail to leave the spool",
        Duration::from_secs(60),
        || {
            (entries(&spool.join("queue")) == 0
                && entries(&spool.join("tmp")) == 0
                && server.messages().len() >= N)
                .then_some(())
        },
    );
    assert_eq!(entries(&spool.join("dead")), 0);

    let mut seen: HashMap<String, usize> = HashMap::new();
    for raw in received(&server.outdir) {
        let mail = mailparse::parse_mail(&raw).unwrap();
        let id = mail.headers.get_first_value("X-Interaction-Id").unwrap();
        *seen.entry(id).or_default() += 1;
    }
    let mut expected: Vec<_> = ids.iter().map(|id| (id.clone(), 1)).collect();
    let mut got: Vec<_> = seen.into_iter().collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "each interactionId exactly once");
}

/// Resident set size and its peak, in kB, from /proc.
fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// How much a 10 MB upload grows the gateway (printed: the figure in docs/email.md, about
/// +1.3 MB). Asserts a generous bound, docs/benchmarks.md's e-mail target of at most 16 MB of
/// peak growth: it catches an upload held whole in memory without turning timing noise into
/// failures. Delivery is pointed at a closed port of the HTTP backend, which streams, so only
/// the upload path is measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_of_a_10mb_upload() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "backoff_initial_ms = 60000\nbackoff_max_ms = 60000\n\
             [email.backend]\nkind = \"http\"\n[email.backend.http]\n\
             base_url = \"http://127.0.0.1:{}\"\n",
            free_port()
        ),
    );
    let gateway = GatewayProcess::start(&config);
    // Warm up: threads, buffers and the allocator's first arenas.
    send(&gateway.addr, multipart("warm-up", &[1u8; 100_000])).await;
    let (rss_before, peak_before) = memory_kb(gateway.pid());
    let ten_mb = vec![b'x'; 10 * 1024 * 1024 - 1000];
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = multipart("big", &ten_mb)
        .chunks(64 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v2/emails", gateway.addr))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (rss_after, peak_after) = memory_kb(gateway.pid());
    println!(
        "10 MB upload: RSS before {rss_before} kB, after {rss_after} kB (+{} kB); \
         peak before {peak_before} kB, after {peak_after} kB (+{} kB)",
        rss_after as i64 - rss_before as i64,
        peak_after as i64 - peak_before as i64,
    );
    const BOUND_KB: u64 = 16 * 1024;
    assert!(
        peak_after.saturating_sub(peak_before) <= BOUND_KB,
        "a 10 MB upload grew the gateway's peak resident memory from {peak_before} kB to \
         {peak_after} kB: more than {BOUND_KB} kB (is the upload held in memory?)"
    );
}

/// The `X-Interaction-Id` of every message the server received, sorted.
fn received_ids(dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = received(dir)
        .iter()
        .map(|raw| {
            let mail = mailparse::parse_mail(raw).unwrap();
            mail.headers.get_first_value("X-Interaction-Id").unwrap()
        })
        .collect();
    ids.sort();
    ids
}

/// Finding 5 (review 6.9): with the old defaults every e-mail accepted during an SMTP outage
/// of more than ~8.5 minutes (10 attempts) went to `dead/` for good. Scaled down (backoff of
/// 10–20 ms): the SMTP port answers every connection by closing it until each e-mail has
/// failed far more than 10 times, with the give-up time (an hour) not reached; once a real
/// server is back, every e-mail arrives exactly once and none is dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_outage_past_the_old_retry_budget_loses_nothing() {
    require_aiosmtpd();
    let dir = tempfile::tempdir().unwrap();
    let smtp_port = free_port();
    let down = tokio::net::TcpListener::bind(("127.0.0.1", smtp_port))
        .await
        .unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&attempts);
    let refuser = tokio::spawn(async move {
        while let Ok((conn, _)) = down.accept().await {
            counted.fetch_add(1, Ordering::Relaxed);
            drop(conn);
        }
    });
    let config = write_config(
        dir.path(),
        &format!(
            "backoff_initial_ms = 10\nbackoff_max_ms = 20\ngive_up_after_secs = 3600\n\
             per_address_per_hour = 0\n\
             [email.backend]\nkind = \"smtp\"\n[email.backend.smtp]\nhost = \"127.0.0.1\"\n\
             port = {smtp_port}\nsecurity = \"plain\"\ndefault_mailbox = \"inbox@company.com\"\n"
        ),
    );
    let gateway = GatewayProcess::start(&config);
    const N: usize = 5;
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(
            send(
                &gateway.addr,
                multipart(&format!("mail {i}"), &[i as u8; 100]),
            )
            .await,
        );
    }
    const OLD_BUDGET: usize = 10;
    eventually_blocking(
        "each e-mail to fail three times the old attempt budget",
        Duration::from_secs(120),
        || (attempts.load(Ordering::Relaxed) >= 3 * OLD_BUDGET * N).then_some(()),
    );
    let spool = dir.path().join("spool");
    assert_eq!(entries(&spool.join("dead")), 0, "nothing given up");
    assert_eq!(entries(&spool.join("queue")), N);

    refuser.abort();
    let _ = refuser.await; // the listener is closed once the task is gone
    let server = SmtpServer::start(smtp_port, &dir.path().join("received"));
    eventually_blocking(
        "every e-mail to be delivered",
        Duration::from_secs(60),
        || (entries(&spool.join("queue")) == 0 && server.messages().len() >= N).then_some(()),
    );
    ids.sort();
    assert_eq!(received_ids(&server.outdir), ids, "each exactly once");
    assert_eq!(entries(&spool.join("dead")), 0);
    drop(gateway);
}

/// Finding 3 (review 2.12: 40 concurrent e-mails with 10 MB of `text` took the gateway from
/// 59 to 514 MB). `text` is capped (`max_text_bytes`, 256 KiB) and concurrent intakes are
/// bounded, so the same 40 uploads are refused (413 / code 149, or 503 / code 161 past the
/// intake bound; a client still sending when the refusal comes may see the connection
/// closed instead) and the process's peak resident memory grows by a bounded amount
/// (printed; asserted below 64 MB, generous against noise, far below the unbounded case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_of_a_huge_text_stay_bounded_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "per_address_per_hour = 0\nbackoff_initial_ms = 60000\nbackoff_max_ms = 60000\n\
             [email.backend]\nkind = \"http\"\n[email.backend.http]\n\
             base_url = \"http://127.0.0.1:{}\"\n",
            free_port()
        ),
    );
    let gateway = GatewayProcess::start(&config);
    send(&gateway.addr, multipart("warm-up", &[1u8; 100_000])).await;
    let (rss_before, peak_before) = memory_kb(gateway.pid());

    let mut body = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\n")
        .into_bytes();
    body.extend(std::iter::repeat_n(b't', 10 * 1024 * 1024 - 1000));
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    // One copy of the body; each upload copies 64 KiB at a time as it streams.
    let body = Arc::new(body);
    const N: usize = 40;
    let client = reqwest::Client::new();
    let uploads: Vec<_> = (0..N)
        .map(|_| {
            let body = Arc::clone(&body);
            let chunks = futures::stream::iter((0..body.len()).step_by(64 * 1024)).map(move |i| {
                Ok::<_, std::io::Error>(body[i..body.len().min(i + 64 * 1024)].to_vec())
            });
            let request = client
                .post(format!("http://{}/api/v2/emails", gateway.addr))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .body(reqwest::Body::wrap_stream(chunks));
            tokio::spawn(async move {
                match request.send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let body: serde_json::Value = resp.json().await.unwrap();
                        Some((status, body["errors"][0]["code"].as_i64()))
                    }
                    Err(_) => None,
                }
            })
        })
        .collect();
    let mut outcomes = HashMap::new();
    for upload in uploads {
        *outcomes.entry(upload.await.unwrap()).or_insert(0usize) += 1;
    }
    let (rss_after, peak_after) = memory_kb(gateway.pid());
    println!(
        "{N} concurrent uploads of 10 MB text: outcomes {outcomes:?}; RSS before {rss_before} kB, \
         after {rss_after} kB; peak before {peak_before} kB, after {peak_after} kB (+{} kB)",
        peak_after as i64 - peak_before as i64,
    );
    for outcome in outcomes.keys() {
        assert!(
            matches!(
                outcome,
                None | Some((413, Some(149))) | Some((503, Some(161)))
            ),
            "unexpected outcome {outcome:?}"
        );
    }
    assert!(
        outcomes.keys().any(|o| *o == Some((413, Some(149)))),
        "the text cap answered: {outcomes:?}"
    );
    const BOUND_KB: u64 = 64 * 1024;
    assert!(
        peak_after.saturating_sub(peak_before) <= BOUND_KB,
        "{N} uploads of a 10 MB text grew the gateway's peak resident memory from \
         {peak_before} kB to {peak_after} kB: more than {BOUND_KB} kB"
    );
    let spool = dir.path().join("spool");
    assert_eq!(
        entries(&spool.join("queue")),
        1,
        "nothing but the warm-up e-mail was accepted"
    );
    assert_eq!(entries(&spool.join("tmp")), 0, "no draft left behind");
}
