//! The public listener with real clients: TLS with a CA and certificates the test makes with
//! the `openssl` CLI, HTTP/2 through ALPN and cleartext (`h2c`) with `curl`, certificate
//! reload on SIGHUP and on a file change seen by new connections while an old one keeps
//! working (a rustls client), the handshake timeout, and the parking of idle HTTP/1.1
//! keep-alive connections (raw sockets). Every test runs the `webapi-gateway` binary on
//! loopback, on free ports, with its own temporary directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

use pki::Pki;

#[allow(dead_code)] // Pki::spki is for the Chromium test
#[path = "tls/pki.rs"]
mod pki;

/// The gateway binary on the repository's config plus `extra` TOML, on free ports; its log
/// lines are collected as they come.
struct Gateway {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    fn start(extra: &str, envs: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gateway.toml");
        let base =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml")).unwrap();
        std::fs::write(&config, format!("{base}\n{extra}")).unwrap();
        let port = testkit::free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_webapi-gateway"));
        cmd.arg("--config")
            .arg(&config)
            .env("GATEWAY__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("GATEWAY__ADMIN__LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info,webapi_gateway::server=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        let gw = Gateway {
            child,
            port,
            log,
            _dir: dir,
        };
        gw.wait_for("webapi-gateway listening", Duration::from_secs(30));
        gw
    }

    fn logged(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits (bounded) until `needle` has been logged `n` times in all.
    fn wait_for_n(&self, needle: &str, n: usize, within: Duration) {
        let start = Instant::now();
        while self.logged(needle) < n {
            assert!(
                start.elapsed() < within,
                "`{needle}` not logged {n} times within {within:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for(&self, needle: &str, within: Duration) {
        self.wait_for_n(needle, 1, within)
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill sends a signal to the child we started.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, signal) },
            0
        );
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl` with `args`; returns (body, the `%{http_version}` it reports), or the failure.
fn curl(args: &[&str]) -> Result<(String, String), String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_version}"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{:?}: {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let (body, version) = stdout.rsplit_once('\n').unwrap();
    Ok((body.to_string(), version.to_string()))
}

fn post_args<'a>(url: &'a str, body: &'a str) -> Vec<&'a str> {
    vec![
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        body,
        url,
    ]
}

#[test]
fn curl_runs_a_chat_over_tls_with_http2_and_http1_on_the_same_port() {
    let pki = Pki::new();
    pki.leaf("a");
    pki.install("a");
    let gw = Gateway::start(&pki.tls_section(""), &[]);
    let ca = pki.path("ca.pem");
    let ca = ca.to_str().unwrap();
    let base = format!("https://localhost:{}", gw.port);

    let url = format!("{base}/api/v2/chats");
    let body = r#"{"tenantName":"Environment","nickname":"tls"}"#;
    let mut args = vec!["--http2", "--cacert", ca];
    args.extend(post_args(&url, body));
    let (reply, version) = curl(&args).unwrap();
    assert_eq!(version, "2", "{reply}");
    let chat: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(chat["statusCode"], 0, "{reply}");
    let id = chat["chatId"].as_str().unwrap();
    let auth = |extra: &str| {
        format!(
            r#"{{"tenantName":"Environment","userId":{},"secureKey":{},"alias":{}{extra}}}"#,
            chat["userId"], chat["secureKey"], chat["alias"]
        )
    };

    let url = format!("{base}/api/v2/chats/{id}");
    let body = auth(r#","operationName":"SendMessage","text":"hello over h2""#);
    let mut args = vec!["--http2", "--cacert", ca];
    args.extend(post_args(&url, &body));
    let (reply, version) = curl(&args).unwrap();
    assert_eq!(version, "2", "{reply}");
    assert_eq!(
        serde_json::from_str::<Value>(&reply).unwrap()["statusCode"],
        0,
        "{reply}"
    );

    // Refresh over HTTP/1.1 on the same port: the message is in the transcript.
    let url = format!("{base}/api/v2/chats/{id}/messages");
    let body = auth("");
    let mut args = vec!["--http1.1", "--cacert", ca];
    args.extend(post_args(&url, &body));
    let (reply, version) = curl(&args).unwrap();
    assert_eq!(version, "1.1", "{reply}");
    assert!(reply.contains("hello over h2"), "{reply}");

    // Plain HTTP on the TLS port is not served.
    assert!(curl(&[
        "--http1.1",
        &format!("http://127.0.0.1:{}/healthz", gw.port)
    ])
    .is_err());
}

#[test]
fn h2c_prior_knowledge_is_spoken_only_when_enabled() {
    for enabled in [true, false] {
        let gw = Gateway::start(
            "",
            &[
                (
                    "GATEWAY__SERVER__H2C",
                    if enabled { "true" } else { "false" },
                ),
                ("GATEWAY__LIMITS__HEADER_READ_TIMEOUT_MS", "1000"),
            ],
        );
        let url = format!("http://127.0.0.1:{}/healthz", gw.port);
        let h2 = curl(&["--http2-prior-knowledge", &url]);
        let h1 = curl(&["--http1.1", &url]).unwrap();
        assert_eq!(h1.1, "1.1");
        if enabled {
            let (body, version) = h2.unwrap();
            assert_eq!(
                (body.as_str(), version.as_str()),
                (r#"{"status":"ok"}"#, "2")
            );
            // An HTTP/2 connection that opens no stream gets a GOAWAY and is closed (its
            // PINGs would otherwise keep it from ever being idle).
            let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let started = Instant::now();
            s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
                .unwrap();
            let (mut got, mut types, mut at) = (Vec::new(), Vec::new(), 0);
            let mut buf = [0u8; 4096];
            // Frames: 3 bytes length, 1 byte type; GOAWAY is type 7.
            while !types.contains(&7) {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "closed without a GOAWAY: frames {types:?}");
                got.extend_from_slice(&buf[..n]);
                while at + 9 <= got.len() {
                    let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
                    if at + 9 + len > got.len() {
                        break;
                    }
                    types.push(got[at + 3]);
                    at += 9 + len;
                }
            }
            println!(
                "idle h2c connection got its GOAWAY after {:?}",
                started.elapsed()
            );
            assert!(types.contains(&7), "no GOAWAY in frames {types:?}");
        } else {
            assert!(h2.is_err(), "h2c spoken while off: {h2:?}");
        }
    }
}

#[test]
fn a_bad_certificate_or_key_is_refused_at_start_naming_the_key() {
    let pki = Pki::new();
    pki.leaf("a");
    pki.leaf("b");
    // The key of another certificate, then a file that is no key at all.
    std::fs::copy(pki.path("a.pem"), pki.path("server.pem")).unwrap();
    std::fs::copy(pki.path("b.key"), pki.path("server.key")).unwrap();
    let config = pki.path("bad.toml");
    let base =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml")).unwrap();
    for (key_text, named) in [
        (None, "server.tls.key_file"),
        (Some("not a key"), "server.tls.key_file"),
    ] {
        if let Some(text) = key_text {
            std::fs::write(pki.path("server.key"), text).unwrap();
        }
        std::fs::write(&config, format!("{base}\n{}", pki.tls_section(""))).unwrap();
        for check in [true, false] {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_webapi-gateway"));
            cmd.arg("--config").arg(&config);
            if check {
                cmd.arg("--check-config");
            }
            let out = cmd
                .env("GATEWAY__SERVER__LISTEN", "127.0.0.1:0")
                .env("GATEWAY__ADMIN__LISTEN", "127.0.0.1:0")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "started with a bad key: {stderr}");
            assert!(stderr.contains(named), "{named} not named: {stderr}");
        }
    }
    std::fs::write(pki.path("server.pem"), "").unwrap();
    std::fs::write(&config, format!("{base}\n{}", pki.tls_section(""))).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_webapi-gateway"))
        .args(["--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.tls.cert_file"));
}

/// A rustls client trusting only the test CA.
fn client(pki: &Pki) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(pki.path("ca.pem")).unwrap();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Each handshake a full one: a resumed session shows the certificate of the session.
    config.resumption = rustls::client::Resumption::disabled();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(connector: &tokio_rustls::TlsConnector, port: u16) -> Tls {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

fn served_cert(tls: &Tls) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// One GET /healthz on a keep-alive connection; the reply's head and body.
async fn healthz<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S) -> String {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(r#"{"status":"ok"}"#) {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_on_sighup_and_on_change_while_open_connections_keep_working() {
    let pki = Pki::new();
    for leaf in ["a", "b", "c"] {
        pki.leaf(leaf);
    }
    pki.install("a");
    let gw = Gateway::start(&pki.tls_section(""), &[]);
    let connector = client(&pki);
    let mut old = connect(&connector, gw.port).await;
    assert!(healthz(&mut old).await.contains("200 OK"));
    assert_eq!(served_cert(&old), pki.der("a"));

    // SIGHUP: the files are replaced, then the signal; the next handshake gets b.
    pki.install("b");
    gw.signal(libc::SIGHUP);
    let started = Instant::now();
    gw.wait_for("TLS certificate reloaded", Duration::from_secs(15));
    println!("SIGHUP reload logged after {:?}", started.elapsed());
    let fresh = connect(&connector, gw.port).await;
    assert_eq!(served_cert(&fresh), pki.der("b"));
    assert!(
        healthz(&mut old).await.contains("200 OK"),
        "the old connection broke"
    );
    assert_eq!(served_cert(&old), pki.der("a"));

    // A file change alone, no signal: c.
    pki.install("c");
    let started = Instant::now();
    gw.wait_for_n("TLS certificate reloaded", 2, Duration::from_secs(20));
    println!("file-change reload logged after {:?}", started.elapsed());
    let fresh = connect(&connector, gw.port).await;
    assert_eq!(served_cert(&fresh), pki.der("c"));
    assert!(healthz(&mut old).await.contains("200 OK"));

    // A key that does not fit: refused with the reason, c stays.
    std::fs::copy(pki.path("a.key"), pki.path("server.key.tmp")).unwrap();
    std::fs::rename(pki.path("server.key.tmp"), pki.path("server.key")).unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_for("new TLS certificate refused", Duration::from_secs(15));
    assert!(
        gw.log_text().contains("server.tls.key_file"),
        "{}",
        gw.log_text()
    );
    let fresh = connect(&connector, gw.port).await;
    assert_eq!(served_cert(&fresh), pki.der("c"));
    assert!(healthz(&mut old).await.contains("200 OK"));
    assert!(
        !gw.log_text().contains("PRIVATE KEY"),
        "key material in the log"
    );
}

#[test]
fn a_client_that_never_finishes_the_handshake_is_dropped_after_the_timeout() {
    let pki = Pki::new();
    pki.leaf("a");
    pki.install("a");
    let gw = Gateway::start(
        &pki.tls_section("handshake_timeout_ms = 500"),
        &[("GATEWAY__LIMITS__MAX_CONNECTIONS", "2")],
    );
    let silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", gw.port)).unwrap())
        .collect();
    let started = Instant::now();
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 16];
        // Closed by the gateway: EOF (or a reset), never a timeout of ours.
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("expected the gateway to close: {other:?}"),
        }
    }
    println!("silent TLS clients dropped after {:?}", started.elapsed());
    gw.wait_for_n("TLS handshake timed out", 2, Duration::from_secs(10));
    // Their slots are free again: a real client is served.
    let ca = pki.path("ca.pem");
    let url = format!("https://localhost:{}/healthz", gw.port);
    let (_, version) = curl(&["--cacert", ca.to_str().unwrap(), &url]).unwrap();
    assert_eq!(version, "2");
}

fn read_reply(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(r#"{"status":"ok"}"#) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn parked_idle_connections_serve_their_next_request_and_lose_no_byte() {
    let gw = Gateway::start(
        "",
        &[
            ("GATEWAY__SERVER__PARK_IDLE_MS", "200"),
            ("GATEWAY__LIMITS__HEADER_READ_TIMEOUT_MS", "3000"),
        ],
    );
    let req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    // One that makes a request and then says nothing more: parked, then closed when hyper
    // would have closed an idle keep-alive connection (the header-read timeout).
    let mut quiet = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let quiet_since = Instant::now();
    quiet
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    quiet.write_all(req).unwrap();
    read_reply(&mut quiet);
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let parked = |n| gw.wait_for_n("connection parked", n, Duration::from_secs(10));

    // Parked before its first request (the quiet one is parked too).
    parked(2);
    s.write_all(req).unwrap();
    let reply = read_reply(&mut s);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // Parked after a request, then the next one.
    parked(3);
    s.write_all(req).unwrap();
    let reply = read_reply(&mut s);
    assert!(
        !reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
    // A head cut in two by a parking.
    parked(4);
    s.write_all(&req[..12]).unwrap();
    parked(5);
    s.write_all(&req[12..]).unwrap();
    let reply = read_reply(&mut s);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        !reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
    // Three pipelined requests after a parking: three replies.
    parked(6);
    s.write_all(&req.repeat(3)).unwrap();
    let mut got = String::new();
    while got.matches(r#"{"status":"ok"}"#).count() < 3 {
        got.push_str(&read_reply(&mut s));
    }
    assert_eq!(got.matches("HTTP/1.1 200").count(), 3, "{got}");
    assert!(
        !got.to_ascii_lowercase().contains("connection: close"),
        "{got}"
    );

    let mut buf = [0u8; 16];
    assert_eq!(
        quiet.read(&mut buf).unwrap(),
        0,
        "a parked idle connection got bytes"
    );
    println!(
        "an idle parked connection was closed {:?} after its request",
        quiet_since.elapsed()
    );

    // Shutdown closes a parked socket at once, and the gateway exits.
    parked(7);
    let started = Instant::now();
    gw.signal(libc::SIGTERM);
    assert_eq!(
        s.read(&mut buf).unwrap(),
        0,
        "a parked socket got bytes at shutdown"
    );
    let mut gw = gw;
    let status = gw.child.wait().unwrap();
    println!(
        "parked socket closed and gateway exited {:?} after SIGTERM",
        started.elapsed()
    );
    assert!(status.success(), "{status:?}");
    assert!(
        gw.log_text().contains("shut down cleanly"),
        "{}",
        gw.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_hold_over_tls_for_http1_and_http2() {
    let pki = Pki::new();
    pki.leaf("a");
    pki.install("a");
    let gw = Gateway::start(
        &pki.tls_section(""),
        &[("GATEWAY__LIMITS__MAX_CONNECTIONS_PER_IP", "1")],
    );
    let connector = client(&pki);
    let mut held = connect(&connector, gw.port).await;
    assert!(healthz(&mut held).await.contains("200 OK"));
    let ca = pki.path("ca.pem");
    let url = format!("https://localhost:{}/healthz", gw.port);
    for version in ["--http2", "--http1.1"] {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                "-w",
                "\n%{http_code} %{http_version}",
            ])
            .args([version, "--cacert", ca.to_str().unwrap(), &url])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (body, status) = stdout.rsplit_once('\n').unwrap();
        let want = if version == "--http2" {
            "429 2"
        } else {
            "429 1.1"
        };
        assert_eq!(
            status,
            want,
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(body.contains("statusCode"), "{body}");
    }
    // The held connection's place given back: served again.
    drop(held);
    let start = Instant::now();
    loop {
        let served = curl(&["--cacert", ca.to_str().unwrap(), &url]);
        if served.as_ref().is_ok_and(|(b, _)| b.contains(r#""ok""#)) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{served:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
