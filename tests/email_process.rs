//! The `webapi-gateway` binary as a process, for what only a process can show: an e-mail that
//! got an interactionId survives `kill -9`, and what a 10 MB upload costs in memory.

#[path = "../crates/email/tests/support/smtp_server.rs"]
mod smtp_server;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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
            "backoff_initial_ms = 50\nbackoff_max_ms = 200\nmax_attempts = 100000\n\
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
