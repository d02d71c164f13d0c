//! The gateway's own chat widget (`widget/`, served by `edge::widget`) in a real Chromium
//! (Debian's `chromium` driven by `playwright-core`, see `browser.rs`): a customer on the
//! demo page at `/` fills the pre-chat form, chats with the simulated agent, reloads, opens
//! a second tab, loses the network for a while, sends and downloads a file, sends an XSS
//! payload, ends the chat and leaves a message that reaches the mock outbox
//! (`chat_widget.mjs` does it, step by step, and reports what the widget did). Twice: on the
//! embedded mock, with the one-line snippet on another site's page too; and in front of two
//! `chat-server`s sharing Redis, one killed mid-chat, where the widget carries on under the
//! new alias (no files there: chat servers transfer none) and the screenshot for
//! docs/widget.md is taken. And outside the opening hours, where only a message is offered.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::response::Html;
use axum::routing::get;
use serde_json::{json, Value};

use super::browser::{chromium, here, require_parts, serve_origin};
use crate::common::cluster::Cluster;
use crate::common::gateway;

/// A GMS service for the widget's files, and the widget sending files through it.
const FILES: &str = "[[gms.services]]\nname = \"customer-support\"\ntenant = \"Environment\"\n\
    [widget]\nfile_service = \"customer-support\"\n";

/// What the customer types, in order; each must be in the chat once.
const CUSTOMER_TEXTS: [&str; 5] = [
    "Where is my order 42? It was due on Monday.",
    "<img src=x onerror=alert(1)>",
    "Thanks, one more question",
    "Sent from my second tab",
    "Back online",
];
const AFTER_FAILOVER: &str = "Are you still there after the failover?";

/// Runs `chat_widget.mjs` with `options`, answering its steps with `on_step`, and returns
/// its result. Fails with the driver's own account when the browser run failed.
async fn drive(options: Value, on_step: impl FnMut(&Value) -> String + Send + 'static) -> Value {
    require_parts();
    let script = here().join("chat_widget.mjs");
    tokio::task::spawn_blocking(move || run_driver(&script, &options, on_step))
        .await
        .unwrap()
}

fn run_driver(script: &Path, options: &Value, mut on_step: impl FnMut(&Value) -> String) -> Value {
    let mut child = Command::new("node")
        .arg(script)
        .arg(options.to_string())
        .env("CHROMIUM", chromium())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let mut stdin = Some(child.stdin.take().unwrap());
    let stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let mut result = None;
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        if let Some(step) = line.strip_prefix("STEP ") {
            let step: Value = serde_json::from_str(step).unwrap();
            let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| on_step(&step)))
                .unwrap_or_else(|_| format!("fail: the test failed at step {step}"));
            if let Some(stdin) = stdin.as_mut() {
                writeln!(stdin, "{answer}").unwrap();
                stdin.flush().unwrap();
            }
        } else if let Some(r) = line.strip_prefix("RESULT ") {
            result = Some(serde_json::from_str::<Value>(r).unwrap());
            // No more steps: the driver may end.
            stdin = None;
        } else {
            println!("driver: {line}");
        }
    }
    let status = child.wait().unwrap();
    let errors = errors.join().unwrap();
    let result = result.unwrap_or_else(|| panic!("the driver reported nothing: {errors}"));
    assert!(
        status.success() && result.get("failed").is_none(),
        "the browser run failed: {}\n{errors}\nwhat it saw: {result:#}",
        result["failed"]
    );
    result
}

/// The delivered e-mail, once the deliverer wrote it into the mock outbox.
fn delivered(email_dir: &Path, id: &str) -> String {
    let path = email_dir
        .join("spool/mock-outbox")
        .join(format!("{id}.eml"));
    testkit::eventually_blocking(
        "the e-mail in the mock outbox",
        Duration::from_secs(30),
        || std::fs::read_to_string(&path).ok(),
    )
}

/// The answer to the driver's `email` step: the e-mail it sent reached the outbox, with
/// its text and attachment.
fn check_email(email_dir: &Path, step: &Value) -> String {
    let id = step["interactionId"].as_str().expect("an interactionId");
    let eml = delivered(email_dir, id);
    assert!(eml.contains("Please call me back about order 42"), "{eml}");
    assert!(eml.contains("receipt.txt"), "{eml}");
    assert!(eml.contains("ann@example.com"), "{eml}");
    "ok".into()
}

/// Serves a page of another site with the one-line snippet on it; returns its origin.
async fn serve_embed_page(gateway_base: &str) -> String {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>A shop</title><link rel=\"icon\" href=\"data:,\"></head>\
         <body><h1>A shop</h1>\
         <script src=\"{gateway_base}/widget/widget.js\" async></script></body></html>"
    );
    serve_origin(axum::Router::new().route("/", get(move || async move { Html(page) }))).await
}

/// Whether the gateway's replies offer the event stream (`streamToken`): the widget then
/// reads with it (`transport = "auto"`), else it polls.
async fn offers_streams(base: &str) -> bool {
    let reply: Value = reqwest::Client::new()
        .post(format!("{base}/api/v2/chats"))
        .json(&json!({"tenantName": "Environment", "nickname": "probe"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reply["statusCode"], 0, "{reply}");
    reply.get("streamToken").is_some()
}

/// What every run must show, whatever the backend.
fn check_conversation(r: &Value, files: bool, extra_texts: &[&str], allowed_problems: &[&str]) {
    let problems: Vec<&str> = r["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|p| !allowed_problems.iter().any(|a| p.contains(a)))
        .collect();
    assert!(problems.is_empty(), "console errors: {problems:?}\n{r:#}");
    assert_eq!(r["dialogs"], json!([]), "a dialog opened: {r:#}");
    // Keyboard and form.
    assert_eq!(r["focusOnOpen"], "nickname", "{r:#}");
    assert_eq!(r["emptyNicknameError"], "Please enter a nickname.");
    // Text, never HTML; links only for http(s).
    assert_eq!(r["xssShownAsText"], true, "{r:#}");
    assert!(r["linkRel"].as_str().unwrap().contains("noopener"));
    assert_eq!(r["unsafeLinks"], json!([null, null, null, null, null]));
    // Files, with the limits shown, where the backend transfers them; else no file button.
    if files {
        assert_eq!(r["files"], "on", "{r:#}");
        let limits = r["fileLimits"].as_str().unwrap();
        assert!(limits.contains("Up to 5 files, 512 KB each"), "{limits}");
        assert!(limits.contains("txt"), "{limits}");
        assert_eq!(r["downloaded"], "widget file content \u{e9}");
        assert_eq!(r["downloadName"], "notes.txt");
    } else {
        assert_eq!(r["files"], "off", "{r:#}");
        assert_eq!(r["fileButtons"], 0, "{r:#}");
    }
    // Unread count while minimised.
    assert!(r["unreadWhileMinimised"].as_u64().unwrap() >= 1, "{r:#}");
    assert!(r["launcherWhileMinimised"]
        .as_str()
        .unwrap()
        .contains("unread message"));
    assert_eq!(r["unreadAfterOpen"], 0);
    // Reload, second tab (one reader for both), outage.
    assert_eq!(r["reloadKeptTranscript"], true, "{r:#}");
    assert_eq!(r["openAfterReload"], true);
    assert_eq!(r["secondTabSameChat"], true);
    assert_eq!(r["readers"], 1, "one reader for the chat: {:#}", r["tabs"]);
    assert_eq!(r["statusOffline"], "Reconnecting…");
    assert_eq!(r["pendingWhileOffline"], 1, "shown as being sent: {r:#}");
    assert_eq!(r["statusAfterOutage"], "", "{r:#}");
    // 320 px wide: nothing sticks out.
    let narrow = &r["narrow"];
    assert!(narrow["panelLeft"].as_f64().unwrap() >= 0.0, "{narrow}");
    assert!(narrow["panelRight"].as_f64().unwrap() <= 320.0, "{narrow}");
    assert!(narrow["sendRight"].as_f64().unwrap() <= 320.0, "{narrow}");
    assert!(narrow["scrollWidth"].as_f64().unwrap() <= 320.0, "{narrow}");
    // End with a confirmation; the credentials go with the chat.
    assert_eq!(r["confirmFocused"], "Keep chatting");
    assert_eq!(r["ended"], true);
    assert_eq!(r["credentialsLeft"], 0);

    // Nothing lost, nothing doubled: every customer message is in the chat once, shown once
    // in order, and every event shown is the chat's, in index order.
    let transcript = r["transcript"].as_array().unwrap();
    let mut expected: Vec<&str> = CUSTOMER_TEXTS.to_vec();
    expected.extend_from_slice(extra_texts);
    for text in &expected {
        let times = transcript
            .iter()
            .filter(|e| e["type"] == "Message" && e["from"] == "Client" && e["text"] == *text)
            .count();
        assert_eq!(
            times, 1,
            "{text:?} is in the chat {times} times: {transcript:#?}"
        );
    }
    let shown_texts: Vec<&str> = r["customerTexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(shown_texts, expected, "the customer's messages as shown");
    let shown: Vec<u64> = r["shownIndexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap())
        .collect();
    assert!(
        shown.windows(2).all(|w| w[0] < w[1]),
        "events shown twice or out of order: {shown:?}"
    );
    for e in transcript.iter().filter(|e| e["type"] == "Message") {
        let index = e["index"].as_u64().unwrap();
        assert!(
            shown.contains(&index),
            "message {e} was never shown: {shown:?}"
        );
    }
    // Typing notifications are debounced: not one per key (the first message alone was
    // typed key by key, 43 keys).
    let typing = transcript
        .iter()
        .filter(|e| e["type"] == "TypingStarted" && e["from"] == "Client")
        .count();
    assert!(
        typing <= expected.len(),
        "{typing} typing notifications for {} messages",
        expected.len()
    );
}

#[tokio::test]
async fn chromium_customer_on_the_demo_page_chats_reloads_uses_two_tabs_sends_a_file_and_leaves_a_message(
) {
    require_parts();
    // The port is chosen first: the demo page's own origin and the embedding site's are the
    // two allowed origins (a browser sends Origin on a same-origin POST too).
    let port = testkit::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let embed = serve_embed_page(&base).await;
    let gw = gateway()
        .behaviour(|b| {
            // The agent types for 2.5 s before it answers, and the widget polls every 200 ms
            // (or is pushed each event): the indicator is seen between the two.
            b.agent_typing = true;
            b.agent_reply_delay = Duration::from_millis(2500);
        })
        .env("GATEWAY__SERVER__LISTEN", &format!("127.0.0.1:{port}"))
        .cors_origins(&[&base, &embed])
        .toml(FILES)
        .toml("poll_interval_ms = 200\n")
        .start()
        .await;
    assert_eq!(gw.base, base);
    let transport = if offers_streams(&gw.base).await {
        "push"
    } else {
        "poll"
    };
    let email_dir = gw.email_dir.clone();
    let r = drive(
        json!({"page": format!("{base}/"), "failover": false, "screenshot": null,
               "agentTyping": true, "files": true, "embed": format!("{embed}/")}),
        move |step| match step["step"].as_str() {
            Some("email") => check_email(&email_dir, step),
            other => format!("fail: unexpected step {other:?}"),
        },
    )
    .await;
    check_conversation(&r, true, &[], &["ERR_INTERNET_DISCONNECTED"]);
    assert_eq!(r["sawAgentTyping"], true, "{r:#}");
    assert_eq!(r["typingHiddenAfterReply"], true, "{r:#}");
    assert_eq!(r["transport"], transport, "{r:#}");
    // The one-line snippet on another site: a chat started from there, under CORS.
    assert_eq!(r["embedOrigin"], embed.as_str());
    assert_ne!(embed, base);
    let embedded = r["embedChat"]
        .as_str()
        .expect("a chat from the embedding page");
    // The chat servers saw the widget's chats, and its file.
    let chat_id = r["chatId"].as_str().unwrap();
    for id in [chat_id, embedded] {
        assert!(
            gw.engines.iter().any(|(_, e)| e.snapshot(id).is_some()),
            "no chat server knows chat {id}"
        );
    }
    println!("widget run: {}", r["log"]);
}

#[tokio::test]
async fn chromium_widget_carries_on_under_the_new_alias_when_its_chat_server_is_killed_mid_chat() {
    require_parts();
    let cluster = std::sync::Arc::new(std::sync::Mutex::new(Cluster::start(&["1", "2"])));
    // Once reading with the event stream (the stream carries the new alias), once polling.
    for transport in ["push", "poll"] {
        let extra = format!("{FILES}transport = \"{transport}\"\npoll_interval_ms = 300\n");
        let instances = cluster.lock().unwrap().instances(&[]);
        let gw = crate::common::gateway()
            .aliases(&[])
            .toml(&instances)
            .toml(crate::common::cluster::FAST)
            .toml(&extra)
            .start()
            .await;
        crate::common::cluster::all_accepting(&gw).await;
        let shot = (transport == "push")
            .then(|| std::env::temp_dir().join(format!("widget-{}.png", testkit::free_port())));
        let email_dir = gw.email_dir.clone();
        let killed = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen_kill = std::sync::Arc::clone(&killed);
        // The kill happens on the driver's thread, mid-chat.
        let servers = std::sync::Arc::clone(&cluster);
        let r = drive(
            json!({"page": format!("{}/", gw.base), "failover": true,
                   "screenshot": shot.as_ref().map(|s| s.display().to_string()),
                   "agentTyping": false, "files": false, "embed": null}),
            move |step| match step["step"].as_str() {
                Some("kill") => {
                    let alias = step["alias"].as_str().unwrap().to_owned();
                    servers.lock().unwrap().server(&alias).kill9();
                    *seen_kill.lock().unwrap() = Some(alias);
                    "ok".into()
                }
                Some("email") => check_email(&email_dir, step),
                other => format!("fail: unexpected step {other:?}"),
            },
        )
        .await;
        // Chat servers transfer no files (their protocol has no file calls): no file button.
        // While the chat moves, a request may be answered "retry later": the widget retries.
        check_conversation(
            &r,
            false,
            &[AFTER_FAILOVER],
            &[
                "ERR_INTERNET_DISCONNECTED",
                "status of 503",
                "HTTP 503",
                // The question the widget asks to learn that there is no file transfer.
                "/file/limits",
            ],
        );
        assert_eq!(r["transport"], transport, "{r:#}");
        let killed = killed
            .lock()
            .unwrap()
            .clone()
            .expect("the driver asked for the kill");
        assert_eq!(r["aliasAtStart"].as_str(), Some(killed.as_str()), "{r:#}");
        assert_ne!(
            r["aliasAfterFailover"].as_str(),
            Some(killed.as_str()),
            "the widget carries on under the new alias: {r:#}"
        );
        println!(
            "{transport}: the widget's next message and the agent's answer came {} ms after the kill",
            r["failoverMs"]
        );
        if let Some(shot) = shot {
            keep_screenshot(&shot);
        }
        // The killed server comes back for the next round.
        cluster.lock().unwrap().restart(&killed);
    }
}

/// docs/widget.png: written when missing, or when UPDATE_WIDGET_SCREENSHOT=1 (every run's
/// picture differs in its times, so it is not rewritten on every run).
fn keep_screenshot(shot: &PathBuf) {
    let png = std::fs::read(shot).expect("the driver took a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "not a screenshot"
    );
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/widget.png");
    if !docs.exists() || std::env::var_os("UPDATE_WIDGET_SCREENSHOT").is_some_and(|v| v == "1") {
        std::fs::write(&docs, &png).unwrap();
        println!("wrote {}", docs.display());
    }
    let _ = std::fs::remove_file(shot);
}

#[tokio::test]
async fn chromium_outside_the_opening_hours_the_widget_offers_only_a_message() {
    require_parts();
    // Open only on the day after tomorrow (UTC): closed now, whatever the time.
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let open_day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][((days + 3 + 2) % 7) as usize];
    let gw = gateway()
        .toml(&format!(
            "[widget]\nhours = [\"{open_day} 00:00-24:00\"]\ntime_zone = \"UTC\"\n"
        ))
        .start()
        .await;
    let email_dir = gw.email_dir.clone();
    let r = drive(
        json!({"page": format!("{}/", gw.base), "closed": true, "embed": null}),
        move |step| match step["step"].as_str() {
            Some("email") => check_email(&email_dir, step),
            other => format!("fail: unexpected step {other:?}"),
        },
    )
    .await;
    let text = r["closedText"].as_str().unwrap();
    let day = format!("{}{}", open_day[..1].to_uppercase(), &open_day[1..]);
    assert!(text.contains(&format!("{day} 00:00–24:00 (UTC)")), "{text}");
    assert_eq!(r["startButtons"], 0, "no chat on offer: {r:#}");
    assert_eq!(r["focusOnOpen"], "Leave a message", "{r:#}");
    assert_eq!(r["problems"], json!([]), "{r:#}");
    assert!(r["interactionId"].is_string());
}
