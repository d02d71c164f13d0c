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
    let mut child = bin()
        .args(["--config", &repo_config()])
        .env("GATEWAY__SERVER__LISTEN", "127.0.0.1:0")
        .env("GATEWAY__ADMIN__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut addr = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(i) = line.find("addr=") {
            addr = Some(line[i + 5..].split_whitespace().next().unwrap().to_string());
            break;
        }
    }
    let addr = addr.expect("the listening line");
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
