//! The chaos rig: one Redis, three `chat-server`s sharing it, two `webapi-gateway` processes
//! with the same secret in front of them, and chats talking through both while a test injects
//! a fault; then what the customers and the agent saw, counted.
//!
//! Owns starting the processes, the customers' traffic and the counting. The faults and the
//! assertions belong to the scenarios (`tests/chaos.rs`).
//!
//! A customer here behaves as a widget: it acknowledges a message only on statusCode 0,
//! retries the same text on statusCode 1 (or when its gateway does not answer, through the
//! other gateway, as a load balancer would), follows the alias of every reply, and polls
//! between messages.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::free_port;

use super::cluster::{self, Cluster, GatewayProcess, Scratch, FAST};
use super::{eventually, Chat, Reply};

/// How long a scenario may take to get every chat working again before it fails.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(60);
/// How long a start-up step (a process, a health change) may take.
pub const PATIENCE: Duration = Duration::from_secs(30);
/// A widget's pause between two messages, and before retrying a statusCode 1.
const PACE: Duration = Duration::from_millis(100);
/// How long the chats talk on after the fault (so a stale copy or a late save shows), and how
/// long a final transcript read may take.
const TAIL: Duration = Duration::from_secs(15);

/// The processes of one scenario.
pub struct Rig {
    pub cluster: Cluster,
    scratch: Scratch,
    configs: Vec<PathBuf>,
    pub gateways: Vec<GatewayProcess>,
    /// The gateways' public base URLs: fixed ports, so a restarted gateway is where clients
    /// expect it.
    bases: Vec<String>,
}

impl Rig {
    /// Redis, chat servers `1`, `2`, `3` and two gateways, every instance healthy on both.
    pub async fn start() -> Rig {
        let cluster = Cluster::start(&["1", "2", "3"]);
        let scratch = Scratch::new("chaos");
        let mut rig = Rig {
            configs: Vec::new(),
            gateways: Vec::new(),
            bases: Vec::new(),
            cluster,
            scratch,
        };
        for g in 0..2 {
            let port = free_port();
            let config = rig.scratch.0.join(format!("gateway-{g}.toml"));
            std::fs::write(
                &config,
                format!(
                    "[server]\nlisten = \"127.0.0.1:{port}\"\n[credentials]\nsecret = \"{}\"\n\
                     [[tenants]]\nname = \"Environment\"\n\
                     [limits]\nper_ip_per_second = 0\nper_chat_per_second = 0\n\
                     chat_starts_per_ip_per_second = 0\nmax_connections_per_ip = 0\n\
                     bad_credentials_burst = 1000\n{}{FAST}",
                    super::SECRET,
                    rig.cluster.instances(&[]),
                ),
            )
            .unwrap();
            rig.configs.push(config);
            rig.bases.push(format!("http://127.0.0.1:{port}"));
            let process = rig.spawn_gateway(g);
            rig.gateways.push(process);
        }
        for alias in ["1", "2", "3"] {
            rig.wait_health(alias, "healthy").await;
        }
        rig
    }

    fn spawn_gateway(&self, g: usize) -> GatewayProcess {
        let dir = self
            .scratch
            .0
            .join(format!("gw-{g}-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let process = GatewayProcess::start(&self.configs[g], &dir);
        assert_eq!(process.base, self.bases[g]);
        process
    }

    /// Kills gateway `g` with SIGKILL.
    pub fn kill_gateway(&mut self, g: usize) {
        self.gateways[g].kill9();
    }

    /// Starts gateway `g` again on its port and waits until it sees every instance healthy.
    pub async fn restart_gateway(&mut self, g: usize) {
        self.gateways[g] = self.spawn_gateway(g);
        for alias in ["1", "2", "3"] {
            self.wait_health(alias, "healthy").await;
        }
    }

    /// Waits until every gateway reports `alias` with this health (`healthy`, or `down` /
    /// `ejected` for "not healthy").
    pub async fn wait_health(&self, alias: &str, health: &str) {
        for gw in &self.gateways {
            eventually(
                &format!("{alias} {health} on {}", gw.base),
                PATIENCE,
                || async {
                    let (_, list) =
                        cluster::list_instances(&gw.admin, Some(cluster::ADMIN_TOKEN)).await;
                    let seen = list["instances"]
                        .as_array()?
                        .iter()
                        .find(|i| i["alias"] == alias)?["health"]
                        .as_str()?
                        .to_string();
                    let wanted = match health {
                        "healthy" => seen == "healthy",
                        _ => seen != "healthy",
                    };
                    wanted.then_some(())
                },
            )
            .await;
        }
    }

    /// Sets `alias` to an admin state on every gateway (the state belongs to each process).
    pub async fn set_state(&self, alias: &str, state: &str) {
        for gw in &self.gateways {
            let (status, body) = cluster::set_state(&gw.admin, alias, state).await;
            assert_eq!(status, 200, "{body:#}");
        }
    }

    /// `chats` customers, spread over both gateways, talking until the traffic is finished;
    /// returns once each has two messages acknowledged.
    pub async fn traffic(&self, scenario: &str, chats: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let hold = Hold::default();
        let mut logs = Vec::new();
        let mut tasks = Vec::new();
        for n in 0..chats {
            let customer = Customer::new(&self.bases, n % self.bases.len());
            let chat = customer.new_chat(&format!("{scenario}-{n}")).await;
            let log = Arc::new(Mutex::new(ChatLog::new(chat)));
            logs.push((customer.clone(), Arc::clone(&log)));
            tasks.push(tokio::spawn(talk(
                customer,
                format!("{scenario}-c{n}"),
                log,
                Arc::clone(&stop),
                hold.clone(),
            )));
        }
        let traffic = Traffic {
            started: Instant::now(),
            scenario: scenario.into(),
            stop,
            hold,
            logs,
            tasks,
        };
        traffic.wait_acks_since(Instant::now(), 5, PATIENCE).await;
        traffic
    }
}

/// One customer's client: its gateway, and the other one to fall back to.
#[derive(Clone)]
pub struct Customer {
    bases: Vec<String>,
    preferred: usize,
    http: reqwest::Client,
}

impl Customer {
    pub fn new(bases: &[String], preferred: usize) -> Customer {
        Customer {
            bases: bases.to_vec(),
            preferred,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .connect_timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
        }
    }

    /// A request through the preferred gateway, or the other when it does not answer. `None`:
    /// neither answered with a JSON reply (the widget retries).
    pub async fn post(&self, path: &str, body: &Value) -> Option<Reply> {
        for i in 0..self.bases.len() {
            let base = &self.bases[(self.preferred + i) % self.bases.len()];
            let Ok(resp) = self
                .http
                .post(format!("{base}{path}"))
                .json(body)
                .send()
                .await
            else {
                continue;
            };
            let http = resp.status().as_u16();
            if let Ok(body) = resp.json::<Value>().await {
                return Some(Reply { http, body });
            }
        }
        None
    }

    /// Requests a chat, retrying statusCode 1.
    pub async fn new_chat(&self, nickname: &str) -> Chat {
        let body = json!({"tenantName": "Environment", "nickname": nickname});
        eventually("a new chat", PATIENCE, || async {
            let r = self.post("/api/v2/chats", &body).await?;
            match r.status_code() {
                0 => Some(Chat::created(&r)),
                1 => None,
                _ => panic!("request chat refused: {:#}", r.body),
            }
        })
        .await
    }

    pub async fn op(&self, chat: &Chat, operation: &str, extra: Value) -> Option<Reply> {
        let mut body = chat.credentials();
        body["operationName"] = operation.into();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.post(&format!("/api/v2/chats/{}", chat.chat_id), &body)
            .await
    }

    pub async fn messages(&self, chat: &Chat, position: Option<u64>) -> Option<Reply> {
        let mut body = chat.credentials();
        if let Some(p) = position {
            body["transcriptPosition"] = p.into();
        }
        self.post(&format!("/api/v2/chats/{}/messages", chat.chat_id), &body)
            .await
    }

    /// The whole transcript from position 1, page after page (a reply may hold only part of
    /// it), retrying statusCode 1. `Err` with the last reply when a read is refused for good
    /// or the chat cannot be read within `within`.
    pub async fn transcript(
        &self,
        chat: &mut Chat,
        within: Duration,
    ) -> Result<Transcript, String> {
        let deadline = Instant::now() + within;
        let mut events = Vec::new();
        let mut position = 1;
        let mut ended = false;
        let mut reads = 0;
        loop {
            let reply = loop {
                if Instant::now() > deadline {
                    return Err(format!("no transcript within {within:?}"));
                }
                match self.messages(chat, Some(position)).await {
                    Some(r) if r.status_code() == 0 => break r,
                    Some(r) if r.status_code() == 2 => return Err(format!("{:#}", r.body)),
                    _ => tokio::time::sleep(PACE).await,
                }
            };
            reads += 1;
            chat.alias = reply.body["alias"].as_str().unwrap_or(&chat.alias).into();
            ended |= reply.body["chatEnded"] == true;
            let page = reply.messages().clone();
            let Some(last) = page.last().and_then(|m| m["index"].as_u64()) else {
                break;
            };
            events.extend(page);
            position = last + 1;
            assert!(reads < 10_000, "a transcript that never ends");
        }
        Ok(Transcript { events, ended })
    }
}

/// A chat's events as the agent sees them.
pub struct Transcript {
    pub events: Vec<Value>,
    pub ended: bool,
}

impl Transcript {
    /// The texts the customer sent, in order.
    pub fn customer_texts(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|m| m["type"] == "Message" && m["from"]["type"] == "Client")
            .filter_map(|m| m["text"].as_str().map(String::from))
            .collect()
    }
}

/// What one customer saw.
pub struct ChatLog {
    pub chat: Chat,
    /// Every alias the chat had, in order (a change is a move).
    pub aliases: Vec<String>,
    /// Texts acknowledged with statusCode 0, with when.
    pub acked: Vec<(String, Instant)>,
    /// statusCode 1 replies and unanswered requests.
    pub retries: usize,
    /// Why the chat ended, if something ended it (`chatEnded`, or a statusCode 2).
    pub ended: Option<String>,
}

impl ChatLog {
    fn new(chat: Chat) -> ChatLog {
        ChatLog {
            aliases: vec![chat.alias.clone()],
            chat,
            acked: Vec::new(),
            retries: 0,
            ended: None,
        }
    }

    fn follow(&mut self, reply: &Reply) {
        if let Some(alias) = reply.body["alias"].as_str() {
            if alias != self.chat.alias {
                self.chat.alias = alias.into();
                self.aliases.push(alias.into());
            }
        }
        if reply.body["chatEnded"] == true && self.ended.is_none() {
            self.ended = Some(format!("chatEnded: {}", reply.body));
        }
    }

    fn first_ack_since(&self, t: Instant) -> Option<Instant> {
        self.acked.iter().map(|(_, at)| *at).find(|at| *at >= t)
    }
}

/// Customers told to stay quiet between two messages (as people do), and how many are.
#[derive(Clone, Default)]
struct Hold {
    on: Arc<AtomicBool>,
    quiet: Arc<AtomicUsize>,
}

/// A customer's conversation: message after message until told to stop.
async fn talk(
    c: Customer,
    tag: String,
    log: Arc<Mutex<ChatLog>>,
    stop: Arc<AtomicBool>,
    hold: Hold,
) {
    let mut k = 0;
    while !stop.load(Ordering::Relaxed) {
        if hold.on.load(Ordering::Relaxed) {
            hold.quiet.fetch_add(1, Ordering::SeqCst);
            // A customer thinking: no request until the hold is lifted.
            while hold.on.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(PACE).await;
            }
            hold.quiet.fetch_sub(1, Ordering::SeqCst);
        }
        let text = format!("{tag}-m{k}");
        // The same text until it is acknowledged, as a widget retries.
        while !stop.load(Ordering::Relaxed) {
            let chat = log.lock().unwrap().chat.clone();
            let reply = c.op(&chat, "SendMessage", json!({ "text": text })).await;
            {
                let mut log = log.lock().unwrap();
                match reply {
                    Some(r) if r.status_code() == 0 => {
                        log.follow(&r);
                        log.acked.push((text.clone(), Instant::now()));
                        break;
                    }
                    Some(r) if r.status_code() == 2 => {
                        log.ended = Some(format!("SendMessage refused: {}", r.body));
                        return;
                    }
                    _ => log.retries += 1,
                }
            }
            tokio::time::sleep(PACE).await;
        }
        k += 1;
        if log.lock().unwrap().ended.is_some() {
            return;
        }
        // A poll between messages, as widgets do; its alias is the newest too.
        let chat = log.lock().unwrap().chat.clone();
        if let Some(r) = c.messages(&chat, None).await {
            if r.status_code() == 0 {
                log.lock().unwrap().follow(&r);
            }
        }
        tokio::time::sleep(PACE).await;
    }
}

/// The customers of a scenario, talking.
pub struct Traffic {
    started: Instant,
    scenario: String,
    stop: Arc<AtomicBool>,
    hold: Hold,
    logs: Vec<(Customer, Arc<Mutex<ChatLog>>)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// The alias holding the most chats right now.
    pub fn busiest_alias(&self) -> String {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (_, log) in &self.logs {
            *counts
                .entry(log.lock().unwrap().chat.alias.clone())
                .or_default() += 1;
        }
        counts.into_iter().max_by_key(|(_, n)| *n).unwrap().0
    }

    /// The alias to which most chats that started on `from` have moved.
    pub fn where_most_went_from(&self, from: &str) -> Option<String> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (_, log) in &self.logs {
            let log = log.lock().unwrap();
            if log.aliases[0] == from && log.chat.alias != from {
                *counts.entry(log.chat.alias.clone()).or_default() += 1;
            }
        }
        counts.into_iter().max_by_key(|(_, n)| *n).map(|(a, _)| a)
    }

    /// Every customer stops talking after its current message (acknowledged or given up on
    /// by the hold); returns once all are quiet.
    pub async fn hold(&self) {
        self.hold.on.store(true, Ordering::SeqCst);
        eventually("every customer quiet", RECOVERY_BOUND, || async {
            let ended = self
                .logs
                .iter()
                .filter(|(_, log)| log.lock().unwrap().ended.is_some())
                .count();
            (self.hold.quiet.load(Ordering::SeqCst) + ended >= self.logs.len()).then_some(())
        })
        .await;
    }

    /// The customers talk again.
    pub fn release(&self) {
        self.hold.on.store(false, Ordering::SeqCst);
    }

    /// Waits until every chat not ended has `n` messages acknowledged since `t`; `false` when
    /// `within` passed first.
    async fn wait_acks_since(&self, t: Instant, n: usize, within: Duration) -> bool {
        let waiting = eventually("every chat talking", within + PATIENCE, || async {
            self.logs
                .iter()
                .all(|(_, log)| {
                    let log = log.lock().unwrap();
                    log.ended.is_some() || log.acked.iter().filter(|(_, at)| *at >= t).count() >= n
                })
                .then_some(())
        });
        tokio::time::timeout(within, waiting).await.is_ok()
    }

    /// Seconds from `t` (the fault, or its end) until every chat had a message acknowledged
    /// again; `None` past [`RECOVERY_BOUND`].
    pub async fn recovery_since(&self, t: Instant) -> Option<f64> {
        if !self.wait_acks_since(t, 1, RECOVERY_BOUND).await {
            return None;
        }
        let last = self
            .logs
            .iter()
            .filter_map(|(_, log)| log.lock().unwrap().first_ack_since(t))
            .max()?;
        Some(last.duration_since(t).as_secs_f64())
    }

    /// Lets every chat talk a little more (so a stale copy or a late save shows), stops the
    /// customers, reads every transcript from position 1 and counts.
    pub async fn finish(self, recovery: Option<f64>) -> Outcome {
        self.wait_acks_since(Instant::now(), 10, TAIL).await;
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let mut outcome = Outcome {
            took: self.started.elapsed().as_secs_f64(),
            scenario: self.scenario,
            recovery,
            ..Outcome::default()
        };
        for (customer, log) in &self.logs {
            let mut chat = log.lock().unwrap().chat.clone();
            let read = customer.transcript(&mut chat, TAIL).await;
            let mut log = log.lock().unwrap();
            outcome.acked += log.acked.len();
            outcome.retries += log.retries;
            outcome.moves += log.aliases.len() - 1;
            match read {
                Ok(transcript) => {
                    outcome.count(&log, &transcript);
                    if transcript.ended && log.ended.is_none() {
                        log.ended = Some("the transcript says chatEnded".into());
                    }
                }
                Err(why) => outcome.details.push(format!(
                    "chat {}: transcript unreadable: {why}",
                    chat.chat_id
                )),
            }
            if let Some(why) = &log.ended {
                outcome.ended += 1;
                outcome
                    .details
                    .push(format!("chat {} ended: {why}", chat.chat_id));
            }
        }
        outcome
    }
}

/// What a scenario cost, as the summary line prints it.
#[derive(Default)]
pub struct Outcome {
    pub scenario: String,
    /// Messages acknowledged with statusCode 0.
    pub acked: usize,
    /// Acknowledged messages not in the transcript read at the end.
    pub missing: usize,
    /// Extra copies of customer texts in the transcripts.
    pub duplicates: usize,
    /// Chats ended by the fault (or whose transcript could not be read).
    pub ended: usize,
    /// statusCode 1 replies and unanswered requests the customers retried.
    pub retries: usize,
    /// Alias changes the customers followed.
    pub moves: usize,
    /// Seconds until every chat worked again.
    pub recovery: Option<f64>,
    /// Seconds from the first chat to the end of the counting.
    pub took: f64,
    pub details: Vec<String>,
}

impl Outcome {
    fn count(&mut self, log: &ChatLog, transcript: &Transcript) {
        let texts = transcript.customer_texts();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for text in &texts {
            *seen.entry(text).or_default() += 1;
        }
        for (text, _) in &log.acked {
            if !seen.contains_key(text.as_str()) {
                self.missing += 1;
                self.details
                    .push(format!("chat {}: acked {text} missing", log.chat.chat_id));
            }
        }
        for (text, n) in seen {
            if n > 1 {
                self.duplicates += n - 1;
                self.details.push(format!(
                    "chat {}: {} copies of {}",
                    log.chat.chat_id,
                    n,
                    short(text)
                ));
            }
        }
    }

    /// Prints the summary line (`chaos: <scenario> acked=… recovery=…s`) and the details,
    /// then asserts what every scenario must hold.
    pub fn report(&self) {
        let recovery = self
            .recovery
            .map_or("none".to_string(), |s| format!("{s:.1}s"));
        println!(
            "chaos: {} acked={} missing={} duplicates={} ended={} recovery={} retries={} moves={} \
             took={:.0}s",
            self.scenario,
            self.acked,
            self.missing,
            self.duplicates,
            self.ended,
            recovery,
            self.retries,
            self.moves,
            self.took
        );
        for line in self.details.iter().take(20) {
            println!("chaos: {}: {line}", self.scenario);
        }
        let summary = format!(
            "{}: missing={} duplicates={} ended={} recovery={recovery}",
            self.scenario, self.missing, self.duplicates, self.ended
        );
        assert!(self.acked > 0, "{summary}: nothing was acknowledged");
        assert_eq!(
            (self.missing, self.duplicates, self.ended),
            (0, 0, 0),
            "{summary}"
        );
        assert!(
            self.recovery.is_some(),
            "{summary}: not every chat worked again within {RECOVERY_BOUND:?}"
        );
    }
}

/// A text for a log line: long ones cut.
fn short(text: &str) -> &str {
    &text[..text.len().min(40)]
}
