//! The push test in a real Chromium: a page on its own origin reads a chat through
//! `EventSource` (`widget/sse.html`, driven by `push.mjs`) from two gateway processes behind
//! a failover proxy, over chat-server processes sharing Redis. It never polls. Gateway 1 is
//! stopped mid-chat (the page's stream reconnects to gateway 2), then the chat server holding
//! the chat is killed with -9; the page must see every event of the chat once, the agent's
//! messages included.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

use crate::browser::{chromium, here, page, require_parts, serve_origin};
use crate::common::cluster::{Cluster, GatewayProcess, Scratch, FAST};
use crate::common::{Chat, Client, SECRET};

const PAGE: &str = include_str!("widget/sse.html");

/// A TCP proxy that sends each new connection to the first backend that accepts it: the
/// page's one address for both gateways, as a load balancer without affinity would be.
async fn failover_proxy(backends: Vec<SocketAddr>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let backends = backends.clone();
            tokio::spawn(async move {
                for backend in backends {
                    if let Ok(mut outbound) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// The node driver: one JSON command a line, one JSON answer a line.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Driver {
    fn start(page_url: &str) -> Driver {
        let mut child = Command::new("node")
            .arg(here().join("push.mjs"))
            .arg(page_url)
            .env("CHROMIUM", chromium())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Driver {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends a command and returns its answer (`ok`), failing the test on an error.
    fn call(&mut self, cmd: Value) -> Value {
        tokio::task::block_in_place(|| {
            writeln!(self.stdin, "{cmd}").unwrap();
            let mut line = String::new();
            self.stdout.read_line(&mut line).unwrap();
            let answer: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("the driver answered {line:?} to {cmd}: {e}"));
            if let Some(error) = answer.get("error") {
                panic!(
                    "{cmd} failed in the browser: {}",
                    error.as_str().unwrap_or("")
                );
            }
            answer["ok"].clone()
        })
    }

    fn wait_for(&mut self, expr: &str, within: Duration) {
        self.call(json!({"op": "waitFor", "expr": expr, "timeoutMs": within.as_millis() as u64}));
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "quit"}));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addr_of(base: &str) -> SocketAddr {
    base.trim_start_matches("http://").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_event_source_gets_every_agent_message_once_across_a_replica_change_and_a_kill_9()
{
    require_parts();
    let page = serve_origin(page(PAGE)).await;
    let mut cluster = Cluster::start(&["1", "2"]);
    let scratch = Scratch::new("push-browser");
    let config = scratch.0.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[credentials]\nsecret = \"{SECRET}\"\n\
             [[tenants]]\nname = \"Environment\"\ncors_origins = [\"{page}\"]\n\
             [push]\nheartbeat_secs = 1\nretry_ms = 300\n{}{FAST}",
            cluster.instances(&[]),
        ),
    )
    .unwrap();
    let start = |name: &str| {
        let dir = scratch.0.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        GatewayProcess::start(&config, &dir)
    };
    let one = start("one");
    let two = start("two");
    let proxy = failover_proxy(vec![addr_of(&one.base), addr_of(&two.base)]).await;
    let patience = Duration::from_secs(60);

    let mut browser = Driver::start(&format!("{page}/"));
    let started = browser.call(json!({"op": "start", "base": proxy}));
    let chat_id = started["chatId"].as_str().unwrap().to_owned();
    let mut sent = vec![browser.call(json!({"op": "send", "text": "first"}))];
    browser.wait_for("window.agentMessages() >= 1", patience);

    // Gateway 1 stops: its streams close, the page's EventSource reconnects through the
    // proxy to gateway 2 and resumes at its last event id.
    let stopped = Instant::now();
    one.signal("TERM");
    browser.wait_for("window.report().opens >= 2", patience);
    println!(
        "the stream reopened on gateway 2 {:?} after SIGTERM",
        stopped.elapsed()
    );
    sent.push(browser.call(json!({"op": "send", "text": "second"})));
    browser.wait_for("window.agentMessages() >= 2", patience);

    // The chat server holding the chat dies.
    let report = browser.call(json!({"op": "report"}));
    let holder = report["events"].as_array().unwrap().last().unwrap()["alias"]
        .as_str()
        .unwrap()
        .to_owned();
    let killed = Instant::now();
    cluster.server(&holder).kill9();
    sent.push(browser.call(json!({"op": "send", "text": "third"})));
    browser.wait_for("window.agentMessages() >= 3", patience);
    println!(
        "the agent's answer arrived {:?} after the kill -9",
        killed.elapsed()
    );
    browser.call(json!({"op": "complete"}));
    browser.wait_for("window.report().chatEnded", patience);
    // The stream ends with the chat; the reconnect that follows gets 204 and EventSource
    // stops for good (readyState CLOSED).
    browser.wait_for("window.report().readyState === 2", patience);
    let report = browser.call(json!({"op": "report"}));

    assert_eq!(
        report["origin"],
        page.as_str(),
        "the page ran on its own origin"
    );
    let events = report["events"].as_array().unwrap();
    let ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (1..=ids.len() as u64).collect();
    assert_eq!(ids, expected, "every event once, in order: {report:#}");
    assert!(events.iter().all(|e| e["id"] == e["index"]));
    assert!(
        events
            .iter()
            .all(|e| !e["data"].as_str().unwrap().contains("secureKey")),
        "a stream never carries secureKey"
    );
    let customer: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "Message" && e["from"] == "Client")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    let sent: Vec<&str> = sent.iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(customer, sent, "each acknowledged message once");
    let last = events.last().unwrap();
    assert_ne!(
        last["alias"],
        holder.as_str(),
        "the data names the new alias"
    );
    assert_eq!(last["chatEnded"], true);
    assert_eq!(report["resets"], 0);
    assert_eq!(report["serverErrors"], json!([]));

    // It never polled: no Get Messages, no GetChat; only the stream and its sends.
    let requests: Vec<&str> = report["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        !requests.iter().any(|r| r.contains("/messages")),
        "the page polled: {requests:#?}"
    );
    let cors: Vec<&Value> = report["console"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l.as_str().unwrap().contains("CORS"))
        .collect();
    assert!(cors.is_empty(), "CORS refused something: {cors:#?}");

    // The whole transcript, read from gateway 2: the page saw every event of it.
    let c = Client {
        base: two.base.clone(),
        http: reqwest::Client::new(),
    };
    let creds = &report["credentials"];
    let chat = Chat {
        chat_id: chat_id.clone(),
        user_id: creds["userId"].as_str().unwrap().into(),
        secure_key: creds["secureKey"].as_str().unwrap().into(),
        alias: creds["alias"].as_str().unwrap().into(),
        tenant: "Environment".into(),
    };
    let transcript = c.messages(&chat, Some(1)).await;
    assert_eq!(transcript.status_code(), 0, "{:#}", transcript.body);
    assert_eq!(
        transcript.messages().len(),
        ids.len(),
        "the page saw every event of the chat"
    );
    assert!(ids.len() >= 10, "a whole conversation: {ids:?}");
}
