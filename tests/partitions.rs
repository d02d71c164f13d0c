//! Partitions between machines, simulated in network namespaces (`common/netns.rs`): each
//! host of a small deployment in a namespace of its own — two `webapi-gateway`s (`gwa`,
//! `gwb`), three `chat-server --store`s (`s1`..`s3`, aliases `1`..`3`), one `redis-server`,
//! and the customers (`client`) — joined by point-to-point veth links:
//!
//! ```text
//!            client
//!           /      \
//!        gwa        gwb          every gateway ── every chat server
//!        | \ \     / / |         every chat server ── redis
//!        s1  s2  s3  (redis)     (no gateway has a link to redis: they never talk to it)
//! ```
//!
//! One fault per scenario, injected on links (nftables rules in the hosts' namespaces, or a
//! delaying relay: this kernel has no `netem`, see `common/netns.rs`), then healed: a chat
//! server cut off from one gateway but not the other (the split where the fenced store
//! matters), the chat servers cut off from Redis, 50 ms each way between gateways and chat
//! servers, and 10% loss there. Twelve chats talk meanwhile, each from two tabs of the same
//! customer: a writing tab (messages, a poll between two) behind one gateway and a reading
//! tab (polls) behind the other, as a load balancer sticky per connection would place them,
//! each following the alias of its own replies. In the split, the tab behind A follows its
//! chat to the instance A moves it to while the tab behind B still reaches the old one; every
//! request is a fenced save, so every save of that chat alternates between two instances and
//! only the store's fencing keeps it whole. (Why not two writing tabs: `docs/failover.md`,
//! "Partitions".)
//!
//! The counters are the chaos suite's (`tests/chaos.rs`), counted over both tabs: messages
//! acknowledged (statusCode 0) then missing from the transcript, extra copies, chats ended by
//! the fault, seconds until every tab had a request answered with statusCode 0 again. After the heal, the
//! transcript read through each tab (so through each gateway, on the instance each tab's alias
//! names) must hold the same customer texts: the copies converged. Each scenario prints
//! `partition: <scenario> acked=N missing=0 duplicates=0 ended=0 recovery=Xs …`
//! (`cargo test --test partitions -- --nocapture | grep -o 'partition: .*'`).
//!
//! Needs root (network namespaces), `ip` (iproute2), `nft` (nftables) and `redis-server`:
//! without them every test fails naming what is missing.

mod common;
#[path = "common/netns.rs"]
mod netns;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::chaos::{Customer, PATIENCE, RECOVERY_BOUND};
use common::cluster::{self, Scratch, ADMIN_TOKEN, FAST};
use common::{eventually, Chat};
use netns::{Fault, HostProcess, Net, Relay};
use serde_json::json;

/// Chats per scenario (each talked to from two tabs).
const CHATS: usize = 12;
/// A widget's pause between two messages, and before retrying a statusCode 1.
const PACE: Duration = Duration::from_millis(100);
/// How long the final steps (more messages after the heal, a transcript read) may take.
const TAIL: Duration = Duration::from_secs(20);
/// The aliases of the chat servers; the host of alias `n` is `s<n>`.
const ALIASES: [&str; 3] = ["1", "2", "3"];
const GATEWAYS: [&str; 2] = ["gwa", "gwb"];
const PUBLIC_PORT: u16 = 8080;
const ADMIN_PORT: u16 = 8081;
const CHAT_PORT: u16 = 7000;
/// Where a chat server's delaying relay listens (in its host), when the gateways go through
/// relays.
const RELAY_PORT: u16 = 7001;
const REDIS_PORT: u16 = 6379;
/// The secret the gateways and chat servers share (`tcp.secret`, `--secret-file`).
const TCP_SECRET: &str = "partition-tests-tcp-secret-0123456789abcdef";

/// One scenario at a time: each runs seven hosts' processes on a 2-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn host_of(alias: &str) -> String {
    format!("s{alias}")
}

/// The processes of one scenario and their network. Fields drop in order: processes first,
/// the namespaces last.
struct Rig {
    gateways: Vec<HostProcess>,
    servers: Vec<HostProcess>,
    redis: HostProcess,
    /// The gateways' public base URLs, as the client host reaches them.
    bases: Vec<String>,
    /// Their admin listeners, likewise.
    admins: Vec<String>,
    /// One per chat server host, in alias order, when the gateways reach them through
    /// relays (empty otherwise).
    relays: Vec<Relay>,
    _scratch: Scratch,
    net: Net,
}

impl Rig {
    /// The hosts, their links, and the processes; returns once they listen. With `relayed`,
    /// each chat server's host runs a [`Relay`] in front of it (no delay until told) and the
    /// gateways reach the chat servers through those.
    fn start(relayed: bool) -> Rig {
        let mut net = Net::new(&["client", "gwa", "gwb", "s1", "s2", "s3", "redis"]);
        for gw in GATEWAYS {
            net.link("client", gw);
            for alias in ALIASES {
                net.link(gw, &host_of(alias));
            }
        }
        for alias in ALIASES {
            net.link(&host_of(alias), "redis");
        }
        let scratch = Scratch::new("partitions");
        let dir = |name: &str| -> PathBuf {
            let d = scratch.0.join(name);
            std::fs::create_dir_all(&d).unwrap();
            d
        };

        let mut probe = Command::new("redis-server");
        probe.arg("--version");
        testkit::require("redis-server", "apt-get install redis-server", probe);
        let mut command = net.command("redis", "redis-server");
        command
            .args(["--port", &REDIS_PORT.to_string(), "--bind", "0.0.0.0"])
            .args(["--protected-mode", "no", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir("redis"));
        let (redis, _) = HostProcess::start(
            "redis-server",
            command,
            "Ready to accept connections",
            scratch.0.join("redis.log"),
        );

        // The chat servers listen beyond loopback: the gateways prove this secret.
        let secret_file = scratch.0.join("tcp-secret");
        std::fs::write(&secret_file, TCP_SECRET).unwrap();
        std::fs::set_permissions(
            &secret_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let servers: Vec<HostProcess> = ALIASES
            .iter()
            .map(|alias| {
                let host = host_of(alias);
                let store = format!("redis://{}:{REDIS_PORT}", net.addr(&host, "redis"));
                let mut command = net.command(&host, testkit::chat_server_bin());
                command
                    .args(["--listen", &format!("0.0.0.0:{CHAT_PORT}")])
                    .args(["--alias", alias, "--store", &store])
                    .arg("--secret-file")
                    .arg(&secret_file)
                    .args(["--agent-join-delay-ms", "0", "--agent-reply-delay-ms", "0"])
                    .env("RUST_LOG", "info");
                HostProcess::start(
                    &format!("chat-server {alias}"),
                    command,
                    "listening on",
                    scratch.0.join(format!("chat-server-{alias}.log")),
                )
                .0
            })
            .collect();

        let mut relays = Vec::new();
        if relayed {
            for alias in ALIASES {
                relays.push(net.relay(
                    &host_of(alias),
                    (Ipv4Addr::UNSPECIFIED, RELAY_PORT).into(),
                    (Ipv4Addr::LOCALHOST, CHAT_PORT).into(),
                ));
            }
        }
        let port = if relayed { RELAY_PORT } else { CHAT_PORT };
        let mut gateways = Vec::new();
        let mut bases = Vec::new();
        let mut admins = Vec::new();
        for gw in GATEWAYS {
            let instances: String = ALIASES
                .iter()
                .map(|alias| {
                    format!(
                        "[[chat.instances]]\nalias = \"{alias}\"\nkind = \"tcp\"\n\
                         address = \"{}:{port}\"\n",
                        net.addr(gw, &host_of(alias))
                    )
                })
                .collect();
            let config = scratch.0.join(format!("{gw}.toml"));
            std::fs::write(
                &config,
                format!(
                    "[server]\nlisten = \"0.0.0.0:{PUBLIC_PORT}\"\n[credentials]\nsecret = \"{}\"\n\
                     [[tenants]]\nname = \"Environment\"\n\
                     [limits]\nper_ip_per_second = 0\nper_chat_per_second = 0\n\
                     chat_starts_per_ip_per_second = 0\nmax_connections_per_ip = 0\n\
                     bad_credentials_burst = 1000\n{instances}{FAST}",
                    common::SECRET,
                ),
            )
            .unwrap();
            let mut command = net.command(gw, env!("CARGO_BIN_EXE_webapi-gateway"));
            command
                .arg("--config")
                .arg(&config)
                .env("RUST_LOG", "info")
                .env("GATEWAY__TCP__SECRET", TCP_SECRET)
                .env("GATEWAY__ADMIN__LISTEN", format!("0.0.0.0:{ADMIN_PORT}"))
                .env("GATEWAY__EMAIL__SPOOL_DIR", dir(gw).join("spool"));
            let (process, line) = HostProcess::start(
                &format!("webapi-gateway {gw}"),
                command,
                "webapi-gateway listening",
                scratch.0.join(format!("{gw}.log")),
            );
            assert!(
                line.contains(&format!("admin=0.0.0.0:{ADMIN_PORT}")),
                "the admin listener is not where the test reaches it: {line}"
            );
            let at = net.addr("client", gw);
            bases.push(format!("http://{at}:{PUBLIC_PORT}"));
            admins.push(format!("http://{at}:{ADMIN_PORT}"));
            gateways.push(process);
        }
        Rig {
            gateways,
            servers,
            redis,
            bases,
            admins,
            relays,
            _scratch: scratch,
            net,
        }
    }

    /// Runs the scenario's client side inside the client host, on a runtime of its own.
    fn client<F>(&self, scenario: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        self.net.run_in("client", move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(scenario)
        })
    }

    /// Fails the test when a process died during the scenario (naming it, with its log).
    fn check_alive(&mut self) {
        for process in self
            .gateways
            .iter_mut()
            .chain(self.servers.iter_mut())
            .chain(std::iter::once(&mut self.redis))
        {
            assert!(
                process.is_running(),
                "{} died during the scenario:\n{}",
                process.name,
                process.log()
            );
        }
    }

    /// The health gateway `g` reports for `alias` (`healthy`, `down`, `ejected`).
    async fn health(&self, g: usize, alias: &str) -> Option<String> {
        let (status, list) = cluster::list_instances(&self.admins[g], Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 200, "{list:#}");
        Some(
            list["instances"]
                .as_array()?
                .iter()
                .find(|i| i["alias"] == alias)?["health"]
                .as_str()?
                .to_string(),
        )
    }

    /// Waits until gateway `g` reports `alias` healthy (`true`) or not (`false`).
    async fn wait_health(&self, g: usize, alias: &str, healthy: bool) {
        eventually(
            &format!(
                "{alias} {} on {}",
                if healthy { "healthy" } else { "not healthy" },
                GATEWAYS[g]
            ),
            PATIENCE,
            || async { ((self.health(g, alias).await? == "healthy") == healthy).then_some(()) },
        )
        .await;
    }

    async fn all_healthy(&self) {
        for g in 0..GATEWAYS.len() {
            for alias in ALIASES {
                self.wait_health(g, alias, true).await;
            }
        }
    }

    /// Whether any process in a gateway's host has a TCP socket to Redis's port: the
    /// namespace holds only the gateway, so its `/proc/<pid>/net/tcp` lists the gateway's
    /// sockets alone.
    fn gateways_talk_to_redis(&self) -> bool {
        self.gateways.iter().any(|gw| {
            let table = std::fs::read_to_string(format!("/proc/{}/net/tcp", gw.pid()))
                .expect("the gateway's socket table");
            let redis_port = format!(":{REDIS_PORT:04X}");
            table
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(2))
                .any(|remote| remote.ends_with(&redis_port))
        })
    }
}

/// What one tab saw.
struct TabLog {
    chat: Chat,
    /// Every alias this tab's chat had, in order (a change is a move).
    aliases: Vec<String>,
    /// Texts acknowledged with statusCode 0 (a writing tab), with when.
    acked: Vec<(String, Instant)>,
    /// When a request was answered with statusCode 0: an acknowledged message (writing
    /// tab) or an answered poll (reading tab).
    answered: Vec<Instant>,
    /// statusCode 1 replies and unanswered requests.
    retries: usize,
    /// Why the chat ended, if something ended it (`chatEnded`, or a statusCode 2).
    ended: Option<String>,
}

impl TabLog {
    fn follow(&mut self, body: &serde_json::Value) {
        if let Some(alias) = body["alias"].as_str() {
            if alias != self.chat.alias {
                self.chat.alias = alias.into();
                self.aliases.push(alias.into());
            }
        }
        if body["chatEnded"] == true && self.ended.is_none() {
            self.ended = Some(format!("chatEnded: {body}"));
        }
    }

    fn acks_since(&self, t: Instant) -> impl Iterator<Item = Instant> + '_ {
        self.answered.iter().copied().filter(move |at| *at >= t)
    }
}

/// One tab of a chat: the gateway it prefers (the other when its own does not answer, as a
/// load balancer would) and what it saw.
struct Tab {
    chat: usize,
    /// A writing tab sends messages (and polls between them); a reading one only polls.
    writes: bool,
    /// The gateway it prefers (0: A, 1: B).
    gateway: usize,
    customer: Customer,
    log: Arc<Mutex<TabLog>>,
}

/// The customers of a scenario, talking.
struct Traffic {
    scenario: String,
    started: Instant,
    stop: Arc<AtomicBool>,
    tabs: Vec<Tab>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// `CHATS` chats, started alternately through each gateway, each talked to from one tab
    /// per gateway; returns once every tab has had three messages acknowledged.
    async fn start(rig: &Rig, scenario: &str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tabs = Vec::new();
        let mut tasks = Vec::new();
        for n in 0..CHATS {
            let chat = Customer::new(&rig.bases, n % rig.bases.len())
                .new_chat(&format!("{scenario}-{n}"))
                .await;
            // The writing tab behind one gateway, the reading tab behind the other.
            let writer = n % rig.bases.len();
            for g in [writer, 1 - writer] {
                let writes = g == writer;
                let customer = Customer::new(&rig.bases, g);
                let log = Arc::new(Mutex::new(TabLog {
                    aliases: vec![chat.alias.clone()],
                    chat: chat.clone(),
                    acked: Vec::new(),
                    answered: Vec::new(),
                    retries: 0,
                    ended: None,
                }));
                let tag = format!("{scenario}-c{n}");
                let task = if writes {
                    tokio::spawn(talk(
                        customer.clone(),
                        tag,
                        Arc::clone(&log),
                        Arc::clone(&stop),
                    ))
                } else {
                    tokio::spawn(read(customer.clone(), Arc::clone(&log), Arc::clone(&stop)))
                };
                tasks.push(task);
                tabs.push(Tab {
                    chat: n,
                    writes,
                    gateway: g,
                    customer,
                    log,
                });
            }
        }
        let traffic = Traffic {
            scenario: scenario.into(),
            started: Instant::now(),
            stop,
            tabs,
            tasks,
        };
        assert!(
            traffic.wait_acks_since(Instant::now(), 3, PATIENCE).await,
            "{scenario}: the chats did not start talking"
        );
        traffic
    }

    /// The alias holding the most chats written to through gateway `g` right now.
    fn busiest_alias(&self, g: usize) -> String {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for tab in self.tabs.iter().filter(|t| t.writes && t.gateway == g) {
            *counts
                .entry(tab.log.lock().unwrap().chat.alias.clone())
                .or_default() += 1;
        }
        counts.into_iter().max_by_key(|(_, n)| *n).unwrap().0
    }

    /// Waits until every tab whose chat did not end has `n` messages acknowledged since `t`;
    /// `false` when `within` passed first.
    async fn wait_acks_since(&self, t: Instant, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let done = self.tabs.iter().all(|tab| {
                let log = tab.log.lock().unwrap();
                log.ended.is_some() || log.acks_since(t).count() >= n
            });
            if done {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Seconds from `t` until every tab had a message acknowledged again; `None` past
    /// [`RECOVERY_BOUND`].
    async fn recovery_since(&self, t: Instant) -> Option<f64> {
        if !self.wait_acks_since(t, 1, RECOVERY_BOUND).await {
            return None;
        }
        let last = self
            .tabs
            .iter()
            .filter_map(|tab| tab.log.lock().unwrap().acks_since(t).next())
            .max()?;
        Some(last.duration_since(t).as_secs_f64())
    }

    /// Lets every tab talk a little more, stops them, reads every chat's transcript through
    /// each of its tabs (each gateway, each tab's alias) and counts.
    async fn finish(self) -> Outcome {
        let more = self.wait_acks_since(Instant::now(), 3, TAIL).await;
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let mut outcome = Outcome {
            scenario: self.scenario,
            took: self.started.elapsed().as_secs_f64(),
            ..Outcome::default()
        };
        if !more {
            outcome
                .details
                .push("not every tab talked on after the fault".into());
            outcome.stalled = true;
        }
        for n in 0..CHATS {
            let tabs: Vec<&Tab> = self.tabs.iter().filter(|t| t.chat == n).collect();
            let mut acked = Vec::new();
            let mut ended = None;
            let mut reads = Vec::new();
            for tab in &tabs {
                let mut chat = {
                    let log = tab.log.lock().unwrap();
                    outcome.acked += log.acked.len();
                    outcome.retries += log.retries;
                    outcome.moves += log.aliases.len() - 1;
                    acked.extend(log.acked.iter().map(|(t, _)| t.clone()));
                    ended = ended.or_else(|| log.ended.clone());
                    log.chat.clone()
                };
                match tab.customer.transcript(&mut chat, TAIL).await {
                    Ok(transcript) => {
                        if transcript.ended && ended.is_none() {
                            ended = Some("the transcript says chatEnded".into());
                        }
                        reads.push(transcript.customer_texts());
                    }
                    Err(why) => {
                        ended = Some(format!("transcript unreadable: {why}"));
                    }
                }
            }
            let chat_id = tabs[0].log.lock().unwrap().chat.chat_id.clone();
            if let Some(why) = ended {
                outcome.ended += 1;
                outcome.details.push(format!("chat {chat_id} ended: {why}"));
            }
            let Some(texts) = reads.first() else { continue };
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for text in texts {
                *seen.entry(text).or_default() += 1;
            }
            for text in &acked {
                if !seen.contains_key(text.as_str()) {
                    outcome.missing += 1;
                    outcome
                        .details
                        .push(format!("chat {chat_id}: acked {text} missing"));
                }
            }
            for (text, copies) in seen {
                if copies > 1 {
                    outcome.duplicates += copies - 1;
                    let at: Vec<usize> = texts
                        .iter()
                        .enumerate()
                        .filter(|(_, t)| t.as_str() == text)
                        .map(|(i, _)| i)
                        .collect();
                    let around =
                        &texts[at[0].saturating_sub(1)..texts.len().min(at[at.len() - 1] + 2)];
                    outcome.details.push(format!(
                        "chat {chat_id}: {copies} copies of {text}, among {around:?}"
                    ));
                }
            }
            if reads.iter().any(|other| other != texts) {
                outcome.diverged += 1;
                outcome.details.push(format!(
                    "chat {chat_id}: its tabs read different transcripts: {reads:?}"
                ));
            }
        }
        outcome
    }
}

/// A tab's conversation: message after message until told to stop; the same text again after
/// statusCode 1 or no answer, as a widget retries.
async fn talk(c: Customer, tag: String, log: Arc<Mutex<TabLog>>, stop: Arc<AtomicBool>) {
    let mut k = 0;
    while !stop.load(Ordering::Relaxed) {
        let text = format!("{tag}-m{k}");
        while !stop.load(Ordering::Relaxed) {
            let chat = log.lock().unwrap().chat.clone();
            let reply = c.op(&chat, "SendMessage", json!({ "text": text })).await;
            {
                let mut log = log.lock().unwrap();
                match reply {
                    Some(r) if r.status_code() == 0 => {
                        log.follow(&r.body);
                        let now = Instant::now();
                        log.acked.push((text.clone(), now));
                        log.answered.push(now);
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
                log.lock().unwrap().follow(&r.body);
            }
        }
        tokio::time::sleep(PACE).await;
    }
}

/// A reading tab: a poll (Get Messages) every pace until told to stop, following the alias of
/// its replies.
async fn read(c: Customer, log: Arc<Mutex<TabLog>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let chat = log.lock().unwrap().chat.clone();
        let reply = c.messages(&chat, None).await;
        {
            let mut log = log.lock().unwrap();
            match reply {
                Some(r) if r.status_code() == 0 => {
                    log.follow(&r.body);
                    log.answered.push(Instant::now());
                }
                Some(r) if r.status_code() == 2 => {
                    log.ended = Some(format!("Get Messages refused: {}", r.body));
                    return;
                }
                _ => log.retries += 1,
            }
            if log.ended.is_some() {
                return;
            }
        }
        tokio::time::sleep(PACE).await;
    }
}

/// What a scenario cost, as its summary line prints it.
#[derive(Default)]
struct Outcome {
    scenario: String,
    /// Messages acknowledged with statusCode 0, both tabs.
    acked: usize,
    /// Acknowledged messages not in the transcript read at the end.
    missing: usize,
    /// Extra copies of customer texts in the transcripts.
    duplicates: usize,
    /// Chats ended by the fault (or whose transcript could not be read).
    ended: usize,
    /// Chats whose tabs read different customer texts at the end.
    diverged: usize,
    /// Some tab did not talk on after the fault within the bound.
    stalled: bool,
    /// statusCode 1 replies and unanswered requests the tabs retried.
    retries: usize,
    /// Alias changes the tabs followed.
    moves: usize,
    /// Seconds from the fault until every tab had a message acknowledged.
    recovery: Option<f64>,
    /// Seconds from the heal until every tab had a message acknowledged.
    healed: Option<f64>,
    took: f64,
    details: Vec<String>,
}

impl Outcome {
    /// Prints `partition: <scenario> acked=… recovery=…s …` and the details, then asserts
    /// what every scenario must hold.
    fn report(&self) {
        let secs = |s: Option<f64>| s.map_or("none".to_string(), |s| format!("{s:.1}s"));
        println!(
            "partition: {} acked={} missing={} duplicates={} ended={} recovery={} healed={} \
             diverged={} retries={} moves={} took={:.0}s",
            self.scenario,
            self.acked,
            self.missing,
            self.duplicates,
            self.ended,
            secs(self.recovery),
            secs(self.healed),
            self.diverged,
            self.retries,
            self.moves,
            self.took
        );
        for line in self.details.iter().take(20) {
            println!("partition: {}: {line}", self.scenario);
        }
        let summary = format!(
            "{}: missing={} duplicates={} ended={} diverged={} recovery={} healed={}",
            self.scenario,
            self.missing,
            self.duplicates,
            self.ended,
            self.diverged,
            secs(self.recovery),
            secs(self.healed)
        );
        assert!(self.acked > 0, "{summary}: nothing was acknowledged");
        assert_eq!(
            (self.missing, self.duplicates, self.ended, self.diverged),
            (0, 0, 0, 0),
            "{summary}"
        );
        assert!(!self.stalled, "{summary}: {:?}", self.details);
        assert!(
            self.recovery.is_some(),
            "{summary}: not every tab worked again within {RECOVERY_BOUND:?} of the fault"
        );
        assert!(
            self.healed.is_some(),
            "{summary}: not every tab worked again within {RECOVERY_BOUND:?} of the heal"
        );
    }
}

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Chat server S (the one holding most of the chats written to through gateway A) cut off from
/// gateway A, not from gateway B. A marks S down and moves the chats its tabs send to S (a
/// restore elsewhere, chosen by the chat id); B still reaches S, where the other tab of the
/// same chats keeps polling (or writing). Every
/// save of such a chat alternates between S and the instance A moved it to, each refused
/// over the other's newer version and answered after reloading the store's record: nothing
/// acknowledged may be lost or doubled. Recovery counted from the cut; then the link heals,
/// A sees S healthy again, and every tab talks on (healed counted from the heal); the tabs'
/// transcripts, read through each gateway, must agree.
#[test]
fn a_chat_server_cut_off_from_one_gateway_but_not_the_other() {
    let _one = one_at_a_time();
    let mut rig = Rig::start(false);
    let outcome = rig.client(async {
        rig.all_healthy().await;
        let traffic = Traffic::start(&rig, "split").await;
        let victim = traffic.busiest_alias(0);
        let host = host_of(&victim);

        let t0 = Instant::now();
        rig.net.cut("gwa", &host);
        rig.wait_health(0, &victim, false).await;
        assert_eq!(
            rig.health(1, &victim).await.as_deref(),
            Some("healthy"),
            "gateway B lost {victim} too: the cut is not one-sided"
        );
        let recovery = traffic.recovery_since(t0).await;
        // Both sides of the split keep writing the same chats for a while.
        traffic.wait_acks_since(Instant::now(), 5, TAIL).await;
        assert_eq!(
            rig.health(1, &victim).await.as_deref(),
            Some("healthy"),
            "gateway B lost {victim} during the split"
        );

        let dropped = rig.net.dropped("gwa", &host);
        assert!(dropped > 0, "the cut dropped nothing");
        let th = Instant::now();
        rig.net.heal("gwa", &host);
        rig.wait_health(0, &victim, true).await;
        let healed = traffic.recovery_since(th).await;
        let mut outcome = traffic.finish().await;
        outcome.recovery = recovery;
        outcome.healed = healed;
        outcome
    });
    rig.check_alive();
    outcome.report();
    assert!(outcome.moves > 0, "no chat moved: the split tested nothing");
}

/// Every chat server cut off from Redis for 10 s (the gateways have no link to Redis and no
/// socket to it: asserted; "the gateways cut off from Redis" is this). Requests get
/// statusCode 1 (the store times out) and are retried; when the links heal, service returns.
/// Recovery counted from the heal.
#[test]
fn the_chat_servers_cut_off_from_redis() {
    let _one = one_at_a_time();
    let mut rig = Rig::start(false);
    let outcome = rig.client(async {
        rig.all_healthy().await;
        let traffic = Traffic::start(&rig, "redis-cut").await;

        for alias in ALIASES {
            rig.net.cut(&host_of(alias), "redis");
        }
        let cut = Instant::now();
        // The outage lasts 10 s whatever the customers do: this is the fault, not a wait.
        tokio::time::sleep(Duration::from_secs(10).saturating_sub(cut.elapsed())).await;
        let dropped: u64 = ALIASES
            .iter()
            .map(|alias| rig.net.dropped(&host_of(alias), "redis"))
            .sum();
        assert!(dropped > 0, "the cut dropped nothing");
        for alias in ALIASES {
            rig.net.heal(&host_of(alias), "redis");
        }
        let th = Instant::now();
        let healed = traffic.recovery_since(th).await;
        rig.all_healthy().await;
        let mut outcome = traffic.finish().await;
        outcome.recovery = healed;
        outcome.healed = healed;
        outcome
    });
    rig.check_alive();
    outcome.report();
    assert!(
        outcome.retries > 0,
        "no request failed while Redis was cut off: the cut tested nothing"
    );
    assert!(
        !rig.gateways_talk_to_redis(),
        "a gateway has a socket to Redis"
    );
}

/// 50 ms each way (100 ms round trip) on every link between a gateway and a chat server while
/// the chats talk: they keep working, nothing moves for it. Recovery counted from when the
/// delay was added; it stays on through the final reads, and is removed after.
#[test]
fn fifty_ms_between_gateways_and_chat_servers() {
    let _one = one_at_a_time();
    let mut rig = Rig::start(true);
    let outcome = rig.client(async {
        rig.all_healthy().await;
        let traffic = Traffic::start(&rig, "latency").await;
        let before = poll_time(&rig).await;

        let t0 = Instant::now();
        for relay in &rig.relays {
            relay.set_delay(Duration::from_millis(50));
        }
        let during = poll_time(&rig).await;
        println!(
            "partition: latency: a poll took {:.0} ms before the delay, {:.0} ms with it \
             (median of 5)",
            before.as_secs_f64() * 1000.0,
            during.as_secs_f64() * 1000.0
        );
        assert!(
            during >= Duration::from_millis(100),
            "a poll took {during:?} with 50 ms each way: the delay is not in effect"
        );
        let recovery = traffic.recovery_since(t0).await;
        traffic.wait_acks_since(Instant::now(), 5, TAIL).await;
        let mut outcome = traffic.finish().await;
        let th = Instant::now();
        for relay in &rig.relays {
            relay.set_delay(Duration::ZERO);
        }
        rig.all_healthy().await;
        outcome.recovery = recovery;
        outcome.healed = Some(th.elapsed().as_secs_f64());
        outcome
    });
    rig.check_alive();
    outcome.report();
    assert_eq!(outcome.moves, 0, "latency alone moved chats");
}

/// The median time of five polls (Get Messages) on a new chat through gateway A: one call
/// from the gateway to a chat server and back.
async fn poll_time(rig: &Rig) -> Duration {
    let customer = Customer::new(&rig.bases, 0);
    let chat = customer.new_chat("latency-probe").await;
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let reply = customer
            .messages(&chat, None)
            .await
            .expect("a poll answered");
        assert_eq!(reply.status_code(), 0, "{:#}", reply.body);
        times.push(t.elapsed());
    }
    times.sort();
    times[2]
}

/// 10% of packets lost each way on every link between a gateway and a chat server (TCP
/// retransmits; a lost one costs at least 200 ms) while the chats talk. Recovery counted from
/// when the loss started; it stays on through the final reads.
#[test]
fn ten_percent_loss_between_gateways_and_chat_servers() {
    let _one = one_at_a_time();
    let mut rig = Rig::start(false);
    let outcome = rig.client(async {
        rig.all_healthy().await;
        let traffic = Traffic::start(&rig, "loss").await;

        let t0 = Instant::now();
        for gw in GATEWAYS {
            for alias in ALIASES {
                rig.net.fault(gw, &host_of(alias), Fault::Loss(10));
            }
        }
        let recovery = traffic.recovery_since(t0).await;
        traffic.wait_acks_since(Instant::now(), 5, TAIL).await;
        let dropped: u64 = GATEWAYS
            .iter()
            .flat_map(|gw| ALIASES.iter().map(move |alias| (gw, host_of(alias))))
            .map(|(gw, host)| rig.net.dropped(gw, &host))
            .sum();
        assert!(dropped > 0, "the loss dropped nothing");
        println!("partition: loss: {dropped} packets dropped");
        let mut outcome = traffic.finish().await;
        let th = Instant::now();
        for gw in GATEWAYS {
            for alias in ALIASES {
                rig.net.heal(gw, &host_of(alias));
            }
        }
        rig.all_healthy().await;
        outcome.recovery = recovery;
        outcome.healed = Some(th.elapsed().as_secs_f64());
        outcome
    });
    rig.check_alive();
    outcome.report();
}
