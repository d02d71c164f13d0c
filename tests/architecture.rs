//! The architecture invariants the shape of the code can show, checked on the source.
//! `ARCHITECTURE.md` names each of these tests beside the invariant it guards; the ones about
//! behaviour (failover, no double send, durability) are guarded by behaviour tests instead.

use std::path::{Path, PathBuf};

/// The production code of every `.rs` file under `src/<dir>`: a file's text up to its inline
/// `#[cfg(test)] mod tests {`, test-only files (`tests.rs`) left out.
fn production(dir: &str) -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "tests.rs")
            {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = match text.find("#[cfg(test)]\nmod tests {") {
                    Some(i) => text[..i].to_owned(),
                    None => text,
                };
                out.push((path, code));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut out = Vec::new();
    // A module may be a file (`server.rs`), a folder (`router/`), or both.
    let file = root.with_extension("rs");
    if file.is_file() {
        out.push((file.clone(), std::fs::read_to_string(&file).unwrap()));
    }
    if root.is_dir() {
        walk(&root, &mut out);
    }
    assert!(!out.is_empty(), "no source under {}", root.display());
    out
}

/// The places in `files` whose code (comments aside) contains any of `needles`.
fn naming(files: &[(PathBuf, String)], needles: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for (path, code) in files {
        for (n, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap_or_default();
            for needle in needles {
                if line.contains(needle) {
                    let rel = path.strip_prefix(&src).unwrap_or(path).display();
                    found.push(format!("src/{rel}:{}: {needle}", n + 1));
                }
            }
        }
    }
    found
}

const ADAPTER_CRATES: &[&str] = &["backend_tcp", "backend_http", "chat_engine"];

#[test]
fn only_the_gateway_builds_adapters() {
    let all = production("");
    let builds = naming(
        &all,
        &["MockBackend", "TcpBackend", "HttpBackend", "Engine::new"],
    );
    let elsewhere: Vec<_> = builds
        .iter()
        .filter(|at| !at.starts_with("src/gateway.rs:"))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "adapters built outside gateway.rs: {elsewhere:#?}"
    );
    // The adapter crates are named by the gateway (to build them) and by config (which reads
    // their sections), nowhere else.
    let named = naming(&all, ADAPTER_CRATES);
    let elsewhere: Vec<_> = named
        .iter()
        .filter(|at| !at.starts_with("src/gateway.rs:") && !at.starts_with("src/config/"))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "adapter crates named outside gateway.rs and config: {elsewhere:#?}"
    );
}

#[test]
fn the_edge_knows_no_backend() {
    let named = naming(&production("edge"), ADAPTER_CRATES);
    assert!(named.is_empty(), "the edge names a backend: {named:#?}");
}

#[test]
fn the_router_does_no_io() {
    let io = naming(
        &production("router"),
        &[
            ".await",
            "tokio::net",
            "tokio::fs",
            "std::fs",
            "std::net::Tcp",
            "reqwest",
            "spawn(",
        ],
    );
    assert!(io.is_empty(), "the router does I/O: {io:#?}");
}

#[test]
fn config_sections_do_not_import_config() {
    let mut sections = Vec::new();
    for dir in [
        "edge",
        "router",
        "server",
        "telemetry",
        "admin",
        "credentials",
    ] {
        sections.extend(production(dir));
    }
    let imports = naming(&sections, &["crate::config"]);
    assert!(imports.is_empty(), "a section imports config: {imports:#?}");
}

#[test]
fn only_the_edge_and_admin_write_json_replies() {
    let mut rest = Vec::new();
    for dir in [
        "operation",
        "router",
        "credentials",
        "config",
        "gateway",
        "telemetry",
        "server",
    ] {
        rest.extend(production(dir));
    }
    let json = naming(&rest, &["serde_json", "axum::Json", "Json("]);
    assert!(json.is_empty(), "reply shapes outside the edge: {json:#?}");
}

#[test]
fn errors_become_replies_in_one_place() {
    let all = production("");
    let at: Vec<_> = naming(&all, &[".wire()", "impl IntoResponse for"])
        .into_iter()
        .filter(|at| !at.starts_with("src/edge/error.rs:"))
        .collect();
    assert!(
        at.is_empty(),
        "errors rendered outside edge::error: {at:#?}"
    );
}
