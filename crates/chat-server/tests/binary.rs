//! The `chat-server` binary as a process: `--version` names the crate version and the commit it
//! was built from (the build script's `git describe`), and a SIGHUP does not end it.

use std::process::Command;

#[test]
fn version_names_the_crate_version_and_the_commit_it_was_built_from() {
    let out = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let said = String::from_utf8(out.stdout).unwrap();
    let expected = format!("chat-server {} (", env!("CARGO_PKG_VERSION"));
    assert!(said.starts_with(&expected), "{said}");
    let git = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git must be installed: --version is checked against `git rev-parse HEAD`");
    assert!(
        git.status.success(),
        "git rev-parse HEAD failed: not a git checkout?"
    );
    let head = String::from_utf8(git.stdout).unwrap();
    assert!(said.contains(&head.trim()[..7]), "{said} names HEAD {head}");
}

/// An operator's `kill -HUP` (a reload, for most daemons) must not end the chat server and
/// every chat it holds: it logs the signal and keeps serving.
#[cfg(unix)]
#[test]
fn a_sighup_is_logged_and_the_server_keeps_serving() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["--listen", "127.0.0.1:0", "--alias", "hup"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .expect("the bound address is announced")
        .to_string();
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    // The signal is handled (logged) before we look: read stderr until the line shows.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut logged = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logged.contains("SIGHUP ignored") && Instant::now() < deadline {
        let mut l = String::new();
        if stderr.read_line(&mut l).unwrap() == 0 {
            break;
        }
        logged.push_str(&l);
    }
    assert!(logged.contains("SIGHUP ignored"), "stderr: {logged}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the chat server ended on SIGHUP"
    );
    std::net::TcpStream::connect(&addr).expect("still accepting after SIGHUP");
    child.kill().unwrap();
    child.wait().unwrap();
}
