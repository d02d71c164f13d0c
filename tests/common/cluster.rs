//! Fixtures for N+1 tests: chat-server processes sharing one Redis store, the admin API of an
//! in-process gateway, and gateway processes run from the binary.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use serde_json::Value;
use testkit::{chat_server_bin, ChatServer, Redis};
use webapi_gateway::Gateway;

pub const ADMIN_TOKEN: &str = "admin-token-0123456789";

/// Quick checks and reconnects, so tests see failures and recoveries within a second.
pub const FAST: &str = "[tcp]\nstatus_interval_ms = 100\nbackoff_min_ms = 20\n\
    backoff_max_ms = 200\nrequest_timeout_ms = 3000\n\
    [chat.health]\ninterval_ms = 100\ntimeout_ms = 1000\nrise = 2\nfall = 2\neject_ms = 1000\n\
    [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"admin-token-0123456789\"\n";

/// Chat servers sharing a store: what N+1 restoration needs.
pub struct Cluster {
    pub redis: Redis,
    pub servers: Vec<ChatServer>,
}

impl Cluster {
    /// An in-process gateway over the cluster's instances (all of them when `aliases` is
    /// empty), with fast health checks and `extra` config, once every instance takes chats.
    pub async fn gateway(&self, aliases: &[&str], extra: &str) -> super::TestGateway {
        let gw = super::gateway()
            .aliases(&[])
            .toml(&self.instances(aliases))
            .toml(FAST)
            .toml(extra)
            .start()
            .await;
        all_accepting(&gw).await;
        gw
    }

    /// One server per alias. Without Redis installed the test fails, saying how to install it.
    pub fn start(aliases: &[&str]) -> Cluster {
        let redis = Redis::start();
        let mut cluster = Cluster {
            redis,
            servers: Vec::new(),
        };
        for alias in aliases {
            cluster.add(alias);
        }
        cluster
    }

    fn builder(&self, alias: &str) -> testkit::ChatServerBuilder {
        ChatServer::builder(chat_server_bin())
            .alias(alias)
            .store(&self.redis.url())
    }

    pub fn add(&mut self, alias: &str) -> &ChatServer {
        let server = self.builder(alias).start();
        self.servers.push(server);
        self.servers.last().unwrap()
    }

    pub fn server(&mut self, alias: &str) -> &mut ChatServer {
        self.servers.iter_mut().find(|s| s.alias == alias).unwrap()
    }

    /// Starts a killed server again where it listened before.
    pub fn restart(&mut self, alias: &str) {
        let i = self.servers.iter().position(|s| s.alias == alias).unwrap();
        let addr = self.servers[i].addr;
        self.servers[i] = self.builder(alias).listen(addr).start();
    }

    /// `[[chat.instances]]` entries for the given aliases (all when empty).
    pub fn instances(&self, aliases: &[&str]) -> String {
        self.servers
            .iter()
            .filter(|s| aliases.is_empty() || aliases.contains(&s.alias.as_str()))
            .map(|s| {
                format!(
                    "[[chat.instances]]\nalias = \"{}\"\nkind = \"tcp\"\naddress = \"{}\"\n",
                    s.alias, s.addr
                )
            })
            .collect()
    }
}

/// Serves the gateway's admin routes on a free port; returns their base URL.
pub async fn serve_admin(gw: Arc<Gateway>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, webapi_gateway::admin::app(gw)).await });
    base
}

/// An admin request: `PUT {base}/admin/instances/{alias}/state` with `state`.
pub async fn set_state(admin: &str, alias: &str, state: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .put(format!("{admin}/admin/instances/{alias}/state"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "state": state }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

pub async fn list_instances(admin: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(format!("{admin}/admin/instances"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A `webapi-gateway` process, killed on drop.
pub struct GatewayProcess {
    child: Child,
    pub base: String,
    /// Its admin listener's base URL (empty when the admin listener is off).
    pub admin: String,
}

impl GatewayProcess {
    /// Runs the binary on `config` with its own e-mail spool under `dir`.
    pub fn start(config: &Path, dir: &Path) -> GatewayProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_webapi-gateway"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .env("GATEWAY__EMAIL__SPOOL_DIR", dir.join("spool"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        // Keeps reading the log so the process never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("webapi-gateway listening") {
                    if let (Some(tx), Some(i)) = (tx.take(), line.find("addr=")) {
                        let addr = line[i + 5..].split_whitespace().next().unwrap();
                        let admin = line
                            .find("admin=")
                            .and_then(|i| line[i + 6..].split_whitespace().next())
                            .and_then(|a| a.parse::<SocketAddr>().ok());
                        let _ = tx.send((addr.parse::<SocketAddr>().unwrap(), admin));
                    }
                }
            }
        });
        let (addr, admin) = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the gateway's listening line");
        GatewayProcess {
            child,
            base: format!("http://{addr}"),
            admin: admin.map_or(String::new(), |a| format!("http://{a}")),
        }
    }

    /// Sends a signal (`HUP`, `TERM`…) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id (for reading its memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("{name}-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Replaces a file whole (write beside it, then rename), as config management tools do.
pub fn replace_file(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// Waits until every instance of the gateway's table has connected and takes chats.
pub async fn all_accepting(gw: &super::TestGateway) {
    super::eventually(
        "every instance accepting",
        std::time::Duration::from_secs(30),
        || async {
            gw.gateway
                .router()
                .instances()
                .iter()
                .all(|i| i.backend.load().accepting && i.health.is_up())
                .then_some(())
        },
    )
    .await;
}
