//! The `webapi-gateway` binary as an operator runs it: config checks and start-up.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_webapi-gateway"))
}

fn repo_config() -> String {
    format!("{}/gateway.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_config_accepts_the_default_and_names_bad_keys() {
    let out = bin()
        .args(["--check-config", "--config", &repo_config()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let dir = std::env::temp_dir().join(format!("gwbin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    let cases = [
        ("[server]\nlisten = 8080\n[[tenants]]\nname=\"E\"\n[[chat.instances]]\nalias=\"1\"\nkind=\"mock\"\n", "server.listen"),
        ("[[tenants]]\nname=\"E\"\n[[chat.instances]]\nalias=\"1\"\nkind=\"mock\"\nweight=0\n", "chat.instances[0].weight"),
        ("[[tenants]]\nname=\"E\"\n[chat]\ninstances=[]\n", "chat.instances"),
        ("[[tenants]]\nname=\"E\"\n[[chat.instances]]\nalias=\"1\"\nkind=\"mock\"\n[mock]\nsesion_limit=3\n", "sesion_limit"),
        ("[[tenants]]\nname=\"E\"\n[[chat.instances]]\nalias=\"1\"\nkind=\"mock\"\n[mock]\nsession_limit=0\n", "mock.session_limit"),
        ("[[tenants]]\nname=\"E\"\n[[chat.instances]]\nalias=\"1\"\nkind=\"mock\"\n[tcp]\nmax_in_flight=0\n", "tcp.max_in_flight"),
        ("[server]\nworker_threads = 5000\n[[tenants]]\nname=\"E\"\n[[chat.instances]]\nalias=\"1\"\nkind=\"mock\"\n", "server.worker_threads"),
        ("this is not toml", "bad.toml"),
    ];
    for (text, key) in cases {
        std::fs::write(&bad, text).unwrap();
        let out = bin()
            .args(["--check-config", "--config"])
            .arg(&bad)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(key), "{key} not named in: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = bin()
        .args(["--config", "/nonexistent/gateway.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    // An environment override is checked like the file.
    let out = bin()
        .args(["--check-config", "--config", &repo_config()])
        .env("GATEWAY__SERVER__MAX_BODY_BYTES", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_body_bytes"));
    // An admin listener off loopback without a token would serve /metrics to the network.
    let out = bin()
        .args(["--check-config", "--config", &repo_config()])
        .env("GATEWAY__ADMIN__LISTEN", "0.0.0.0:8081")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.token"));
    let out = bin()
        .args(["--check-config", "--config", &repo_config()])
        .env("GATEWAY__ADMIN__LISTEN", "0.0.0.0:8081")
        .env("GATEWAY__ADMIN__TOKEN", "0123456789abcdef-token")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn starts_on_the_default_config_with_an_env_override() {
    let (mut child, addr, _log) = start_binary(&[]);
    let body = r#"{"tenantName":"Environment","nickname":"n"}"#;
    let reply = http_post(&addr, "/api/v2/chats", body);
    let _ = child.kill();
    let _ = child.wait();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains(r#""alias":"11"#), "{reply}");
}

/// A raw HTTP/1.1 request: the binary test needs no client library.
fn http_post(addr: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Starts the binary on free ports and returns it with its public address. Its stdout is
/// drained in the background so logging never blocks it.
fn start_binary(
    envs: &[(&str, &str)],
) -> (
    std::process::Child,
    String,
    std::sync::mpsc::Receiver<String>,
) {
    let started = start_binary_with(envs, |_| {});
    (started.child, started.addr, started.log)
}

/// A running binary: its public and admin addresses, the log lines up to the listening
/// line, and the ones after it as they come.
struct Started {
    child: std::process::Child,
    addr: String,
    admin: String,
    before: Vec<String>,
    /// The listening line itself.
    listening: String,
    log: std::sync::mpsc::Receiver<String>,
}

fn start_binary_with(envs: &[(&str, &str)], customize: impl FnOnce(&mut Command)) -> Started {
    let mut cmd = bin();
    cmd.args(["--config", &repo_config()])
        .env("GATEWAY__SERVER__LISTEN", "127.0.0.1:0")
        .env("GATEWAY__ADMIN__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    customize(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let field = |line: &str, name: &str| {
        let i = line.find(name)?;
        Some(
            line[i + name.len()..]
                .split_whitespace()
                .next()?
                .to_string(),
        )
    };
    let mut before = Vec::new();
    let (addr, admin, listening) = loop {
        let line = lines.next().expect("the listening line").unwrap();
        if let Some(addr) = field(&line, " addr=") {
            break (addr, field(&line, " admin=").unwrap_or_default(), line);
        }
        before.push(line);
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Started {
        child,
        addr,
        admin,
        before,
        listening,
        log: rx,
    }
}

/// Sends one request on a keep-alive connection and reads its reply: status and body.
fn exchange(s: &mut std::net::TcpStream, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    s.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed mid-reply");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn post_json(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The value of the sample `name{labels}` in a Prometheus scrape (0 when absent).
fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits for the access line of the request with this id, and returns the lines logged
/// before it.
fn lines_until_request(log: &std::sync::mpsc::Receiver<String>, id: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let line = log
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no log line for request {id}"));
        if line.contains(&format!("request_id={id}")) && line.contains("finished processing") {
            return lines;
        }
        lines.push(line);
    }
}

/// A request that marks a point in the log.
fn marker(addr: &str, id: &str) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let (status, _) = exchange(
        &mut s,
        &format!("GET /healthz HTTP/1.1\r\nHost: x\r\nx-request-id: {id}\r\n\r\n"),
    );
    assert_eq!(status, 200);
}

#[test]
fn a_flood_of_refusals_is_counted_one_by_one_and_logged_a_few_lines_a_second() {
    // Every instance takes one chat, and a chat takes one request a second: the floods
    // below are 503s (no instance can take a new chat) and 429s (per-chat limit).
    let started = start_binary_with(
        &[
            ("GATEWAY__LIMITS__PER_IP_PER_SECOND", "0"),
            ("GATEWAY__LIMITS__CHAT_STARTS_PER_IP_PER_SECOND", "0"),
            ("GATEWAY__LIMITS__PER_CHAT_PER_SECOND", "1"),
            ("GATEWAY__LIMITS__PER_CHAT_BURST", "1"),
            ("GATEWAY__MOCK__SESSION_LIMIT", "1"),
        ],
        |_| {},
    );
    let Started {
        mut child,
        addr,
        admin,
        log,
        ..
    } = started;
    let body = r#"{"tenantName":"Environment","nickname":"n"}"#;
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    let mut chat = None;
    for _ in 0..2 {
        let (status, reply) = exchange(&mut conn, &post_json("/api/v2/chats", body));
        assert_eq!(status, 200, "{reply}");
        chat.get_or_insert(reply);
    }
    let chat: serde_json::Value = serde_json::from_str(&chat.unwrap()).unwrap();
    let scrape = || {
        let mut s = std::net::TcpStream::connect(&admin).unwrap();
        exchange(&mut s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").1
    };
    let refused_chats = r#"gateway_http_requests_total{route="/api/v2/chats",operation="RequestChat",status_code="1",http_status="503"}"#;
    let rate_chat = r#"gateway_refusals_total{reason="rate_chat"}"#;
    let before = scrape();
    marker(&addr, "before-the-flood");
    let _ = lines_until_request(&log, "before-the-flood");

    const N: usize = 300;
    let started_at = std::time::Instant::now();
    let mut unavailable = 0;
    for _ in 0..N {
        let (status, reply) = exchange(&mut conn, &post_json("/api/v2/chats", body));
        assert!(reply.contains(r#""code":300"#), "{reply}");
        unavailable += usize::from(status == 503);
    }
    let messages = format!(
        "/api/v2/chats/{}/messages",
        chat["chatId"].as_str().unwrap()
    );
    let credentials = serde_json::json!({
        "userId": chat["userId"], "secureKey": chat["secureKey"],
        "alias": chat["alias"], "tenantName": "Environment",
    })
    .to_string();
    let mut throttled = 0;
    for _ in 0..N {
        let (status, _) = exchange(&mut conn, &post_json(&messages, &credentials));
        throttled += usize::from(status == 429);
    }
    let elapsed = started_at.elapsed();
    marker(&addr, "after-the-flood");
    let logged = lines_until_request(&log, "after-the-flood");
    let after = scrape();
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(unavailable, N);
    assert!(throttled >= N - 10, "{throttled} of {N} throttled");
    // Every refusal is counted...
    assert_eq!(
        sample(&after, refused_chats) - sample(&before, refused_chats),
        unavailable as f64,
        "{after}"
    );
    assert_eq!(
        sample(&after, rate_chat) - sample(&before, rate_chat),
        throttled as f64,
        "{after}"
    );
    // ...but at the default level (info) each kind is logged at most once a second, with
    // no ERROR line at all (before issue 13: an INFO line per refusal, and WARN + ERROR per
    // 503).
    let shown: Vec<&String> = logged
        .iter()
        .filter(|l| l.contains(" INFO ") || l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(!shown.iter().any(|l| l.contains(" ERROR ")), "{shown:#?}");
    let bound = 2 * (elapsed.as_secs() as usize + 2);
    assert!(
        shown.len() <= bound,
        "{} lines for {} refusals in {elapsed:?} (at most {bound}): {shown:#?}",
        shown.len(),
        unavailable + throttled
    );
    assert!(
        shown.iter().any(|l| l.contains("suppressed")),
        "the sampled lines say how many they stand for: {shown:#?}"
    );
}

/// Starts the binary with the open-files limit set to `soft`/`hard` and returns the start-up
/// log lines and the limit the running process has.
// `rlim_t` is u64 on 64-bit Linux but narrower elsewhere.
#[allow(clippy::unnecessary_cast)]
fn start_with_open_files(soft: u64, hard: u64, envs: &[(&str, &str)]) -> (Vec<String>, String) {
    use std::os::unix::process::CommandExt;
    let started = start_binary_with(envs, |cmd| {
        // SAFETY: only setrlimit(2), async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: soft as libc::rlim_t,
                    rlim_max: hard as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let mut child = started.child;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    (started.before, open_files)
}

#[test]
fn the_open_files_limit_is_raised_for_the_cap_or_the_cap_lowered_to_fit() {
    let headroom = webapi_gateway::server::OPEN_FILES_HEADROOM;
    // Room under the hard limit: the soft limit is raised as far as the cap needs.
    let (log, open_files) =
        start_with_open_files(256, 4096, &[("GATEWAY__LIMITS__MAX_CONNECTIONS", "1000")]);
    assert_eq!(open_files, format!("{} 4096", 1000 + headroom), "{log:#?}");
    assert!(
        log.iter().any(|l| l.contains("open-files limit raised")),
        "{log:#?}"
    );
    assert!(!log.iter().any(|l| l.contains("lowered")), "{log:#?}");
    // The default cap (10 000) does not fit a hard limit of 1024: raised to 1024, and the
    // cap lowered to what fits, with a warning naming the key.
    let (log, open_files) = start_with_open_files(256, 1024, &[]);
    assert_eq!(open_files, "1024 1024");
    let expected = format!("max_connections={}", 1024 - headroom);
    assert!(
        log.iter().any(|l| l.contains(" WARN ")
            && l.contains("limits.max_connections lowered")
            && l.contains(&expected)),
        "{expected} in {log:#?}"
    );
}

#[test]
fn sigterm_with_an_idle_keep_alive_client_exits_within_the_deadline() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let deadline = Duration::from_millis(1000);
    let (mut child, addr, log) = start_binary(&[("GATEWAY__SERVER__SHUTDOWN_DEADLINE_MS", "1000")]);
    // A keep-alive client: one request answered, the connection left open and idle.
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = conn.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let started = Instant::now();
    let status = testkit::eventually_blocking(
        "the exit, within 10x the shutdown deadline after SIGTERM",
        deadline * 10,
        || {
            let status = child.try_wait().unwrap();
            if status.is_none() && started.elapsed() > deadline * 10 {
                // Not left running after the test fails.
                let _ = child.kill();
            }
            status
        },
    );
    assert!(status.success(), "{status:?}");
    // It did not just wait out the deadline: the idle connection was closed at once.
    let log: Vec<String> = log.iter().collect();
    assert!(
        log.iter().any(|l| l.contains("shut down cleanly")),
        "{log:#?}"
    );
    // The idle connection was closed, not left hanging.
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(conn.read(&mut buf).unwrap_or(0), 0);
}

/// What `git rev-parse HEAD` says of this checkout; fails naming git when it cannot run (the
/// version test needs the checkout the binary was built from).
fn head_commit() -> String {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git must be installed: --version is checked against `git rev-parse HEAD`");
    assert!(
        out.status.success(),
        "git rev-parse HEAD failed: not a git checkout?"
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn version_names_the_crate_version_and_the_commit_it_was_built_from() {
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    let said = String::from_utf8(out.stdout).unwrap();
    // `webapi-gateway 0.1.0 (<git describe --always --dirty>)`
    let expected = format!("webapi-gateway {} (", env!("CARGO_PKG_VERSION"));
    assert!(said.starts_with(&expected), "{said}");
    let head = head_commit();
    assert!(said.contains(&head[..7]), "{said} names HEAD {head}");
}

/// `server.worker_threads` sizes the runtime that serves requests: the listening line names
/// the runtime's worker count, and the gateway serves with one.
#[test]
fn worker_threads_sets_the_threads_that_serve_requests() {
    for threads in ["1", "3"] {
        let mut started =
            start_binary_with(&[("GATEWAY__SERVER__WORKER_THREADS", threads)], |_| {});
        let reply = http_post(
            &started.addr,
            "/api/v2/chats",
            r#"{"operationName":"RequestChat","nickname":"Ann","tenantName":"Environment"}"#,
        );
        started.child.kill().unwrap();
        started.child.wait().unwrap();
        assert!(reply.contains("\"statusCode\":0"), "{reply}");
        assert!(
            started
                .listening
                .split_whitespace()
                .any(|field| field == format!("workers={threads}")),
            "the listening line names {threads} workers: {}",
            started.listening
        );
    }
}
