//! Chromium over TLS with HTTP/2 (issue 18): the gateway serves its widget demo page `/` over
//! https with a certificate from a CA the test makes (`openssl`), which Chromium trusts by the
//! leaf's public key alone (`--ignore-certificate-errors-spki-list`, not a blanket ignore);
//! the page runs a chat, holds the chat's push stream open and sends more than six requests
//! at once beside it, and every request reports `nextHopProtocol == "h2"`
//! (`tls_h2.mjs` drives it). A missing part (node, chromium, playwright-core, openssl) fails
//! the test by name.

use serde_json::Value;

use super::browser::{page_result, require_parts, run_node};
use crate::common::gateway;

#[allow(dead_code)]
#[path = "../tls/pki.rs"]
mod pki;

/// Requests the page sends at once while its push stream is open.
const CONCURRENT: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_loads_the_widget_page_over_tls_with_http2_and_pushes_beside_many_requests() {
    require_parts();
    let pki = pki::Pki::new();
    pki.leaf("a");
    pki.install("a");
    let gw = gateway().toml(&pki.tls_section("")).start().await;
    let port = gw.base.rsplit(':').next().unwrap().to_string();
    let page_url = format!("https://localhost:{port}/");
    let spki = pki.spki("a");
    let args = vec![page_url, spki, CONCURRENT.to_string()];
    let seen = page_result(&run_node("tls_h2.mjs", args).await.unwrap());
    println!("{seen:#}");

    assert_eq!(seen["pageStatus"], 200, "{seen:#}");
    assert_eq!(seen["navigation"], "h2", "the page itself: {seen:#}");
    assert_eq!(seen["chatStatus"], 0, "{seen:#}");
    assert_eq!(seen["sentStatus"], 0, "{seen:#}");
    assert_eq!(seen["streamOpened"], true, "{seen:#}");
    assert_eq!(seen["pushedText"], "hello over h2", "{seen:#}");
    assert_eq!(seen["streamOpenThroughout"], true, "{seen:#}");
    let statuses = seen["refreshStatuses"].as_array().unwrap();
    assert_eq!(statuses.len(), CONCURRENT);
    assert!(statuses.iter().all(|s| s == 0), "{seen:#}");
    assert_eq!(seen["refreshSawMessage"], true, "{seen:#}");
    let resources = seen["resources"].as_array().unwrap();
    let api: Vec<&Value> = resources
        .iter()
        .filter(|r| r["name"].as_str().unwrap().starts_with("/api/v2/"))
        .collect();
    // Request Chat, SendMessage and the concurrent Get Messages (the stream is listed once it
    // has ended, which it has not while the page measures).
    assert!(api.len() >= CONCURRENT + 2, "{seen:#}");
    assert!(
        resources.iter().all(|r| r["protocol"] == "h2"),
        "a request not over h2: {seen:#}"
    );
    assert_eq!(seen["consoleErrors"], serde_json::json!([]), "{seen:#}");
}
