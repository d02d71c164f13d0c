//! Replicated Redis for the store's high-availability tests: a master with replicas, the same
//! watched by three Sentinels, and a Redis Cluster of three masters each with a replica. Every
//! process is Debian's `redis-server` on free ports in its own scratch directory, on
//! 127.0.0.1, killed and cleaned up on drop.
//!
//! Owns starting these topologies, waiting until they are really ready (replicas in sync,
//! Sentinels aware of each other, every cluster slot served), killing a master with SIGKILL,
//! and reading their state through `redis-cli`. It must not assert anything about the chat
//! server: the tests do.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{eventually_blocking, free_port, require, scratch_dir};

/// How long a topology may take to become ready (or to fail over) before the test fails.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The Sentinels' name for the master.
pub const SENTINEL_MASTER: &str = "mymaster";

/// Fails the test unless `redis-server` and `redis-cli` are installed.
fn require_redis() {
    let mut server = Command::new("redis-server");
    server.arg("--version");
    require("redis-server", "apt-get install redis-server", server);
    let mut cli = Command::new("redis-cli");
    cli.arg("--version");
    require(
        "redis-cli",
        "apt-get install redis-tools (redis-server depends on it)",
        cli,
    );
}

/// `redis-cli -p PORT ARGS...`: its output, trimmed; `None` when it fails (the node is down).
pub fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !text.starts_with("Could not connect") && !text.is_empty())
        .then_some(text)
}

/// The value of `field:` in an `INFO`-style reply.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix(field)?.strip_prefix(':'))
}

/// One `redis-server` process (data node or Sentinel).
struct Node {
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
    args: Vec<String>,
}

impl Node {
    /// Starts `redis-server` with `config` (a file in `dir`) plus `args`, waiting until it
    /// answers `PING`.
    fn start(port: u16, dir: &Path, config: &str, args: &[&str]) -> Node {
        let file = dir.join(format!("{port}.conf"));
        std::fs::write(&file, config).expect("write redis config");
        let mut node = Node {
            port,
            child: None,
            dir: dir.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        node.spawn();
        node
    }

    /// Runs the process (again) with its config file, which Sentinel and Cluster rewrite.
    fn spawn(&mut self) {
        let port = self.port;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{port}.log")))
            .expect("log file");
        let child = Command::new("redis-server")
            .arg(self.dir.join(format!("{port}.conf")))
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        eventually_blocking(
            &format!("redis-server on port {port} to answer"),
            READY_WITHIN,
            || (redis_cli(port, &["PING"]).as_deref() == Some("PONG")).then_some(()),
        );
    }

    /// SIGKILL, as a crashed host.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The settings every data node shares: loopback, no persistence, quick full syncs.
fn data_config(port: u16) -> String {
    format!(
        "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\n\
         repl-diskless-sync yes\nrepl-diskless-sync-delay 0\n"
    )
}

/// A master (first) and `replicas` replicas in `dir`, returned once every replica is in
/// sync.
fn start_replicated(dir: &Path, replicas: usize) -> Vec<Node> {
    let port = free_port();
    let mut nodes = vec![Node::start(port, dir, &data_config(port), &[])];
    for _ in 0..replicas {
        let port = free_port();
        let config = format!(
            "{}replicaof 127.0.0.1 {}\n",
            data_config(port),
            nodes[0].port
        );
        nodes.push(Node::start(port, dir, &config, &[]));
    }
    wait_in_sync(nodes[0].port, replicas);
    nodes
}

/// Waits until `replicas` replicas of the master on `port` are online and have applied
/// everything the master has written (their offset is the master's).
fn wait_in_sync(port: u16, replicas: usize) {
    eventually_blocking("the replicas in sync", READY_WITHIN, || {
        let info = redis_cli(port, &["INFO", "replication"])?;
        let master: u64 = info_field(&info, "master_repl_offset")?.parse().ok()?;
        let caught_up = info
            .lines()
            .filter(|l| l.starts_with("slave") && l.contains("state=online"))
            .filter(|l| {
                l.split(',')
                    .find_map(|f| f.strip_prefix("offset="))
                    .and_then(|o| o.parse::<u64>().ok())
                    == Some(master)
            })
            .count();
        (caught_up == replicas).then_some(())
    });
}

/// Starts the killed node at `port` among `nodes` again (as a supervisor would) and waits
/// until it is back as a replica with its link to the master up.
fn restart_as_replica(nodes: &mut [Node], port: u16) {
    nodes
        .iter_mut()
        .find(|n| n.port == port)
        .expect("one of the fixture's data nodes")
        .spawn();
    eventually_blocking(
        "the old master back as a replica in sync",
        READY_WITHIN,
        || {
            let info = redis_cli(port, &["INFO", "replication"])?;
            (info_field(&info, "role") == Some("slave")
                && info_field(&info, "master_link_status") == Some("up"))
            .then_some(())
        },
    );
}

/// A master and its replicas, without Sentinels (the replicas stay replicas).
pub struct ReplicatedRedis {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl ReplicatedRedis {
    /// A master and `replicas` replicas, returned once every replica is in sync.
    pub fn start(replicas: usize) -> ReplicatedRedis {
        require_redis();
        let dir = scratch_dir("redis-replicated");
        let nodes = start_replicated(&dir, replicas);
        ReplicatedRedis { nodes, dir }
    }

    /// Returns once every replica has applied everything the master has written (a burst of
    /// saves can leave a replica behind, or make the master drop and resync it).
    pub fn wait_in_sync(&self) {
        wait_in_sync(self.nodes[0].port, self.nodes.len() - 1);
    }

    /// `redis://127.0.0.1:PORT` of the master.
    pub fn master_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.nodes[0].port)
    }
}

impl Drop for ReplicatedRedis {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A master, one replica and three Sentinels (quorum 2, the master down after 1 s without
/// answers, a failover retried after 3 s).
pub struct RedisSentinel {
    /// Data nodes by port (the master first at start); a killed one stays, without process.
    nodes: Vec<Node>,
    sentinels: Vec<Node>,
    dir: PathBuf,
}

impl RedisSentinel {
    /// Returns once the replica is in sync and every Sentinel knows the other two and the
    /// replica (so a failover can be authorized as soon as the master fails).
    pub fn start() -> RedisSentinel {
        require_redis();
        let dir = scratch_dir("redis-sentinel");
        let nodes = start_replicated(&dir, 1);
        let master_port = nodes[0].port;
        let sentinels = (0..3)
            .map(|_| {
                let port = free_port();
                let config = format!(
                    "port {port}\nbind 127.0.0.1\n\
                     sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                     sentinel failover-timeout {SENTINEL_MASTER} 3000\n\
                     sentinel parallel-syncs {SENTINEL_MASTER} 1\n"
                );
                Node::start(port, &dir, &config, &["--sentinel"])
            })
            .collect::<Vec<_>>();
        let set = RedisSentinel {
            nodes,
            sentinels,
            dir,
        };
        for sentinel in &set.sentinels {
            eventually_blocking("the Sentinels to know each other", READY_WITHIN, || {
                let info = redis_cli(sentinel.port, &["SENTINEL", "MASTER", SENTINEL_MASTER])?;
                let lines: Vec<&str> = info.lines().collect();
                let field = |name: &str| {
                    let at = lines.iter().position(|l| *l == name)?;
                    lines.get(at + 1).copied()
                };
                (field("num-other-sentinels") == Some("2") && field("num-slaves") == Some("1"))
                    .then_some(())
            });
        }
        set
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/mymaster`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{SENTINEL_MASTER}", hosts.join(","))
    }

    /// The master's port as the first Sentinel that answers says.
    pub fn master_port(&self) -> u16 {
        self.sentinels
            .iter()
            .find_map(|s| {
                let reply = redis_cli(
                    s.port,
                    &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER],
                )?;
                reply.lines().nth(1)?.trim().parse().ok()
            })
            .expect("a Sentinel names the master")
    }

    /// SIGKILL to the current master; returns its port.
    pub fn kill_master(&mut self) -> u16 {
        let port = self.master_port();
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("the master is one of the data nodes")
            .kill9();
        port
    }

    /// Starts the killed node at `port` again (as a supervisor would) and waits until the
    /// Sentinels have made it a replica of the new master, in sync.
    pub fn restart(&mut self, port: u16) {
        restart_as_replica(&mut self.nodes, port);
    }

    /// Waits until the Sentinels name a master other than `old` and it says it is one;
    /// returns its port.
    pub fn wait_for_new_master(&self, old: u16) -> u16 {
        eventually_blocking("a replica promoted by the Sentinels", READY_WITHIN, || {
            let port = self.master_port();
            let role = redis_cli(port, &["ROLE"])?;
            (port != old && role.starts_with("master")).then_some(port)
        })
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        self.sentinels.clear();
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A Redis Cluster: three masters, each with one replica (`cluster-node-timeout` 1 s).
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Returns once `redis-cli --cluster create` is done and every node reports
    /// `cluster_state:ok` with all 16384 slots served.
    pub fn start() -> RedisCluster {
        require_redis();
        let dir = scratch_dir("redis-cluster");
        let nodes: Vec<Node> = (0..6)
            .map(|_| {
                let port = free_cluster_port();
                let config = format!(
                    "{}cluster-enabled yes\ncluster-config-file nodes-{port}.conf\n\
                     cluster-node-timeout 1000\n",
                    data_config(port)
                );
                Node::start(port, &dir, &config, &[])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = RedisCluster { nodes, dir };
        cluster.wait_ok(None);
        cluster
    }

    /// `redis+cluster://127.0.0.1:P1,...` naming every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// Ports of the live nodes.
    fn live(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
    }

    /// Waits until every live node reports the cluster ok, all slots served, with no
    /// master at `failed` (after a kill: its replica promoted).
    fn wait_ok(&self, failed: Option<u16>) {
        eventually_blocking(
            "the cluster ok with every slot served",
            READY_WITHIN,
            || {
                for port in self.live() {
                    let info = redis_cli(port, &["CLUSTER", "INFO"])?;
                    if info_field(&info, "cluster_state") != Some("ok")
                        || info_field(&info, "cluster_slots_ok") != Some("16384")
                    {
                        return None;
                    }
                    if let Some(failed) = failed {
                        let nodes = redis_cli(port, &["CLUSTER", "NODES"])?;
                        let still_master = nodes.lines().any(|l| {
                            l.contains(&format!("127.0.0.1:{failed}@"))
                                && l.contains("master")
                                && !l.contains("fail")
                        });
                        if still_master {
                            return None;
                        }
                    }
                }
                Some(())
            },
        );
    }

    /// The port of the master serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let port = self.live().next().expect("a live node");
        let slot = redis_cli(port, &["CLUSTER", "KEYSLOT", key]).expect("CLUSTER KEYSLOT");
        let slots = redis_cli(port, &["CLUSTER", "NODES"]).expect("CLUSTER NODES");
        let slot: u16 = slot.parse().expect("a slot number");
        slots
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .find_map(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                let serves = fields.iter().skip(8).any(|range| {
                    let (from, to) = range.split_once('-').unwrap_or((range, range));
                    matches!((from.parse::<u16>(), to.parse::<u16>()), (Ok(f), Ok(t)) if f <= slot && slot <= t)
                });
                let addr = fields.get(1)?;
                serves.then(|| addr.split(['@', ':']).nth(1)?.parse().ok())?
            })
            .expect("a master serves the slot")
    }

    /// SIGKILL to the master at `port`.
    pub fn kill(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of the cluster")
            .kill9();
    }

    /// Starts the killed node at `port` again (as a supervisor would; it keeps its cluster
    /// config file) and waits until it is a replica in sync.
    pub fn restart(&mut self, port: u16) {
        restart_as_replica(&mut self.nodes, port);
        self.wait_ok(None);
    }

    /// Waits until the cluster serves every slot again without the master at `port`.
    pub fn wait_for_failover(&self, port: u16) {
        self.wait_ok(Some(port));
    }

    /// `redis-cli -c` (following redirections) on a live node.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let port = self.live().next().expect("a live node");
        let mut all = vec!["-c"];
        all.extend_from_slice(args);
        redis_cli(port, &all)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
