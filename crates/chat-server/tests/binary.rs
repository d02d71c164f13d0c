//! The `chat-server` binary's `--version`: the crate version and the commit it was built
//! from (the build script's `git describe`).

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
