//! The browser test: a widget-style page (`widget/index.html`) served from another origin
//! runs a whole GMS conversation through the gateway in a real Chromium (Debian's
//! `chromium`, driven by `playwright-core` from `tests/clients/node_modules`, both
//! installed by `.ci/run`). A missing part fails the test and names it.

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::response::Html;
use axum::routing::get;
use serde_json::Value;

use crate::common::gateway;

const PAGE: &str = include_str!("widget/index.html");
const API_KEY: &str = "widget-key-0123456789";

pub(crate) fn here() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

pub(crate) fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Runs a driver script (`tests/clients/*.mjs`) with `args` under node, in a blocking task,
/// with the Chromium binary to drive; the handle gives its whole output.
pub(crate) fn run_node(
    script: &str,
    args: Vec<String>,
) -> tokio::task::JoinHandle<std::process::Output> {
    let script = here().join(script);
    tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .args(args)
            .env("CHROMIUM", chromium())
            .output()
            .expect("node runs")
    })
}

/// What a driver script saw: its last line of output, as JSON. Fails the test with the
/// driver's own account when the run failed or printed no result.
pub(crate) fn page_result(output: &std::process::Output) -> Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser run failed: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"))
}

/// Node, the Chromium binary and playwright-core: each missing one fails the test by name.
pub(crate) fn require_parts() {
    let mut node = Command::new("node");
    node.arg("--version");
    testkit::require("node", "apt-get install nodejs npm", node);
    let mut probe = Command::new(chromium());
    probe.arg("--version");
    testkit::require(
        &format!("chromium ({})", chromium()),
        "apt-get install chromium (or set CHROMIUM to the binary)",
        probe,
    );
    let module = here().join("node_modules/playwright-core/package.json");
    assert!(
        module.is_file(),
        "this test needs the npm package playwright-core in {}, which is not installed \
         here: run `npm ci` in tests/clients",
        here().join("node_modules").display()
    );
}

/// A test page at `/`, and the icon a browser asks for answered, so that the console stays
/// clean. Tests add routes for what else their page loads.
pub(crate) fn page(html: &'static str) -> axum::Router {
    axum::Router::new()
        .route("/", get(move || async move { Html(html) }))
        .route(
            "/favicon.ico",
            get(|| async { axum::http::StatusCode::NO_CONTENT }),
        )
}

/// Serves `app` on its own port, another origin than the gateway's, and returns the origin.
pub(crate) async fn serve_origin(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    origin
}

#[tokio::test]
async fn chromium_widget_from_another_origin_runs_a_whole_gms_conversation_with_a_file() {
    require_parts();
    let page = serve_origin(page(PAGE)).await;
    let gw = gateway()
        .cors_origins(&[&page])
        .toml(&format!(
            "[[gms.services]]\nname = \"widget\"\ntenant = \"Environment\"\napi_key = \"{API_KEY}\"\n"
        ))
        .start()
        .await;
    let args = vec![
        format!("{page}/"),
        gw.base.clone(),
        "widget".into(),
        API_KEY.into(),
    ];
    let seen = page_result(&run_node("browser.mjs", args).await.unwrap());

    assert_eq!(
        seen["origin"],
        page.as_str(),
        "the page ran on its own origin"
    );
    assert_ne!(page, gw.base, "the page is cross-origin to the gateway");
    assert!(
        seen["agentText"].as_str().is_some_and(|t| !t.is_empty()),
        "{seen:#}"
    );
    let limits = &seen["limits"];
    assert!(limits["upload-max-files"].is_string(), "{seen:#}");
    assert_eq!(seen["uploadedMatches"], true, "{seen:#}");
    assert_eq!(seen["downloadType"], "text/plain", "{seen:#}");
    assert_eq!(seen["chatEnded"], true, "{seen:#}");
    assert_eq!(seen["consoleErrors"], serde_json::json!([]), "{seen:#}");

    // The chat server saw the widget's message and its upload, with the description.
    let chat_id = seen["chatId"].as_str().unwrap();
    let engine = gw
        .engines
        .iter()
        .map(|(_, e)| e)
        .find(|e| e.snapshot(chat_id).is_some());
    assert!(engine.is_some(), "no chat server knows chat {chat_id}");
}
