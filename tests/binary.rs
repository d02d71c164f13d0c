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
    let mut cmd = bin();
    cmd.args(["--config", &repo_config()])
        .env("GATEWAY__SERVER__LISTEN", "127.0.0.1:0")
        .env("GATEWAY__ADMIN__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find_map(|line| {
            let i = line.find("addr=")?;
            Some(line[i + 5..].split_whitespace().next()?.to_string())
        })
        .expect("the listening line");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, addr, rx)
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
