//! The widget as the gateway serves it, in process (`oneshot` on `app(...)`): its files
//! with their content types, caching and `nosniff`, `config.json` from `[widget]`, the demo
//! page at `/` under its Content-Security-Policy, the path and the switches, the config
//! rules across sections, and a page of another origin reading it under CORS. The widget
//! in a real browser is `tests/clients/chat_widget.rs`.

mod common;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use common::{gateway, InProcess};
use webapi_gateway::Config;

const SERVICE: &str = "[[gms.services]]\nname = \"customer-support\"\ntenant = \"Environment\"\n";

async fn get(
    gw: &InProcess,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::builder().method(Method::GET).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = gw
        .app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

#[tokio::test]
async fn the_files_come_with_their_types_caching_and_nosniff() {
    let gw = gateway().toml(SERVICE).in_process();
    for (path, kind, needle) in [
        (
            "/widget/widget.js",
            "text/javascript; charset=utf-8",
            "document.currentScript",
        ),
        ("/widget/widget.css", "text/css; charset=utf-8", ":host"),
        ("/widget/demo.css", "text/css; charset=utf-8", "body"),
    ] {
        let (status, headers, body) = get(&gw, path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(header(&headers, "content-type"), kind, "{path}");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        assert_eq!(header(&headers, "cache-control"), "public, max-age=300");
        assert!(String::from_utf8_lossy(&body).contains(needle), "{path}");
        // Revalidation by the entity tag: unchanged, no body.
        let etag = header(&headers, "etag").to_owned();
        let (status, again, body) = get(&gw, path, &[("if-none-match", &etag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(body.is_empty());
        assert_eq!(header(&again, "etag"), etag);
    }
    // The script never writes data as HTML.
    let (_, _, script) = get(&gw, "/widget/widget.js", &[]).await;
    let script = String::from_utf8_lossy(&script);
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!script.contains(sink), "widget.js uses {sink}");
    }
}

#[tokio::test]
async fn config_json_is_the_widget_section_with_the_tenant_resolved() {
    let gw = gateway()
        .toml(SERVICE)
        .toml(
            "[widget]\ntitle = \"Help <b>desk</b>\"\ntransport = \"poll\"\npoll_interval_ms = 500\n\
             prechat_fields = [\"email\"]\nfile_service = \"customer-support\"\n\
             hours = [\"mon-fri 08:00-18:00\", \"sat 09:00-12:30\"]\ntime_zone = \"Europe/Berlin\"\n\
             [widget.colors]\naccent = \"#112233\"\n",
        )
        .in_process();
    let (status, headers, body) = get(&gw, "/widget/config.json", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-type"), "application/json");
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    let c: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(c["tenant"], "Environment", "the first tenant: {c}");
    assert_eq!(c["title"], "Help <b>desk</b>");
    assert_eq!(c["transport"], "poll");
    assert_eq!(c["pollIntervalMs"], 500);
    assert_eq!(c["prechatFields"], serde_json::json!(["email"]));
    assert_eq!(c["fileService"], "customer-support");
    assert_eq!(c["leaveMessage"], true);
    assert_eq!(c["colors"]["accent"], "#112233");
    assert_eq!(c["colors"]["accent_text"], "#ffffff");
    assert_eq!(
        c["hours"],
        serde_json::json!([
            {"days": [1, 2, 3, 4, 5], "from": 480, "to": 1080},
            {"days": [6], "from": 540, "to": 750}
        ])
    );
    assert_eq!(c["timeZone"], "Europe/Berlin");
}

#[tokio::test]
async fn the_demo_page_is_at_the_root_under_a_strict_policy() {
    let gw = gateway().in_process();
    let (status, headers, body) = get(&gw, "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    let csp = header(&headers, "content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let page = String::from_utf8_lossy(&body);
    assert!(
        page.contains(r#"<script src="/widget/widget.js" async></script>"#),
        "{page}"
    );
    // No inline script or style for the policy to refuse: the only script is the file.
    assert_eq!(page.matches("<script").count(), 1, "{page}");
    assert!(
        !page.contains("<style") && !page.contains("style="),
        "{page}"
    );
    assert!(page.contains(r#"href="/widget/demo.css""#), "{page}");
}

#[tokio::test]
async fn path_and_switches_move_or_remove_the_routes() {
    let moved = gateway()
        .toml("[widget]\npath = \"/help/chat/\"\n")
        .in_process();
    assert_eq!(
        get(&moved, "/help/chat/widget.js", &[]).await.0,
        StatusCode::OK
    );
    assert_eq!(
        get(&moved, "/widget/widget.js", &[]).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, _, page) = get(&moved, "/", &[]).await;
    assert!(String::from_utf8_lossy(&page).contains(r#"src="/help/chat/widget.js""#));

    let no_demo = gateway().toml("[widget]\ndemo_page = false\n").in_process();
    assert_eq!(
        get(&no_demo, "/widget/widget.js", &[]).await.0,
        StatusCode::OK
    );
    let (status, _, body) = get(&no_demo, "/", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["errors"][0]["code"], 120, "{error}");

    let off = gateway().toml("[widget]\nenabled = false\n").in_process();
    for path in [
        "/",
        "/widget/widget.js",
        "/widget/widget.css",
        "/widget/config.json",
    ] {
        assert_eq!(
            get(&off, path, &[]).await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    // Only GET (and HEAD): another method is refused as on every route.
    for path in ["/help/chat/widget.js", "/help/chat/config.json", "/"] {
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let answer = moved.app.clone().oneshot(req).await.unwrap();
        assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
    }
}

#[tokio::test]
async fn another_sites_page_reads_the_config_only_when_its_origin_is_allowed() {
    let gw = gateway()
        .cors_origins(&["https://shop.example.com"])
        .in_process();
    let (status, headers, _) = get(
        &gw,
        "/widget/config.json",
        &[("origin", "https://shop.example.com")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        "https://shop.example.com"
    );
    let (status, _, _) = get(
        &gw,
        "/widget/config.json",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The script itself is loaded by a <script> element, which sends no Origin.
    assert_eq!(get(&gw, "/widget/widget.js", &[]).await.0, StatusCode::OK);
}

#[test]
fn the_config_rules_across_sections_name_their_key() {
    let base =
        "[[tenants]]\nname = \"Environment\"\n[[chat.instances]]\nalias = \"1\"\nkind = \"mock\"\n";
    let refused = |extra: &str, key: &str| {
        let e = Config::from_toml_str(&format!("{base}{extra}"))
            .expect_err(extra)
            .to_string();
        assert!(e.contains(key), "{extra}: {e}");
    };
    refused("[widget]\ntenant = \"Nobody\"\n", "widget.tenant");
    refused("[widget]\nfile_service = \"nope\"\n", "widget.file_service");
    refused(
        "[gms]\n[[gms.services]]\nname = \"s\"\ntenant = \"Environment\"\napi_key = \"k-0123456789abcdef\"\n\
         [widget]\nfile_service = \"s\"\n",
        "widget.file_service",
    );
    refused(
        "[widget]\nmailbox = \"someone@else.example\"\n",
        "widget.mailbox",
    );
    refused("[widget]\npath = \"widget\"\n", "widget.path");
    refused(
        "[widget]\ncolors = { accent = \"red\" }\n",
        "widget.colors.accent",
    );
    refused("[widget]\ntransport = \"carrier-pigeon\"\n", "transport");
    let ok = Config::from_toml_str(&format!(
        "{base}[[gms.services]]\nname = \"s\"\ntenant = \"Environment\"\n\
         [widget]\nfile_service = \"s\"\nmailbox = \"contact-center@localhost\"\n"
    ))
    .unwrap();
    assert_eq!(ok.widget_tenant(), "Environment");
}
