//! Machines simulated in Linux network namespaces, for tests of partitions between hosts
//! (`tests/partitions.rs`): each host is a namespace of its own, wired to the hosts it talks
//! to by point-to-point veth pairs, and a fault is a rule on both ends of a link.
//!
//! Owns creating and deleting the namespaces and links, the faults on a link (a cut, a share
//! of packets lost), the delaying relay (latency), starting processes inside a host (`ip
//! netns exec`) and running client code inside one. It must not touch the root namespace: no
//! interface, route, address or firewall rule is created there, the addresses
//! (`10.213.<link>.1` and `.2`, one /24 per link) exist only inside the test's namespaces, and
//! no packet can leave them (no link reaches the root namespace, no default route anywhere).
//!
//! Why not `tc netem`: the kernel of the development machine and of CI is built without
//! `sch_netem` (and without `prio`, `sfq`, `gact`: only `htb`, `tbf`, the FIFOs and
//! `ingress`), so faults use what it has. A cut is an nftables table in each end's namespace
//! dropping everything in and out of the link's device (silently, as across a real
//! partition: connections hang until their timeouts, nothing is refused); loss is the same
//! table dropping `numgen random` packets leaving each end; healing deletes the tables.
//! Latency is [`Relay`]: a TCP relay inside a host that holds every chunk it forwards for a
//! set delay, each way (the stream's bytes arrive that much later; TCP's own handshakes and
//! acknowledgements do not).
//!
//! Why point-to-point links and not a bridge: a fault between two hosts is a rule on the
//! device that joins only those two, so cutting chat server 1 off from gateway A leaves it
//! reachable from gateway B without any address matching.
//!
//! Why the client runs in a namespace too: the test's own threads stay in the root
//! namespace, and [`Net::run_in`] runs the client side (HTTP customers, admin calls) in a
//! dedicated thread that has entered the client host's namespace with `setns(2)`. A thread
//! keeps the namespace it entered, threads it spawns inherit it, and every socket is created
//! in its creator's namespace: the tokio runtime built in that thread (its workers spawned
//! from it) opens every connection inside the client host. [`Relay`]s run the same way, in
//! a thread inside their host.
//!
//! Names: every namespace is `wgpt<pid>x<n>-<host>` (the test process's id and a counter),
//! so parallel tests and leftovers never collide. [`Net`] deletes its namespaces on drop,
//! panics included, after killing whatever still runs inside them; a new [`Net`] also
//! deletes the leftovers of test processes that no longer exist (a test killed with
//! SIGKILL).
//!
//! Nothing here is optional: when namespaces cannot be made (not root, no `ip` or `nft`, no
//! veth or nf_tables in the kernel), [`Net::new`] fails the test naming what is missing.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The prefix of every namespace these tests create.
const PREFIX: &str = "wgpt";

/// Namespaces created by this process so far (one [`Net`] each set).
static NETS: AtomicUsize = AtomicUsize::new(0);

/// A fault on a link, on both its ends.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Every packet dropped, both ways.
    Cut,
    /// This share of the packets (percent) dropped as each end sends them.
    Loss(u8),
}

/// One end of a link: the host, its device there, its address on the link.
#[derive(Clone, Debug)]
pub struct End {
    pub host: String,
    pub dev: String,
    pub addr: Ipv4Addr,
}

/// The hosts of one test and the links between them; deleted on drop.
pub struct Net {
    /// `wgpt<pid>x<n>-`: every namespace's name is this and the host's.
    prefix: String,
    hosts: Vec<String>,
    links: Vec<(End, End)>,
}

impl Net {
    /// A namespace per host, each with its loopback up and nothing else. Fails the test,
    /// naming what is missing, when namespaces cannot be made here.
    pub fn new(hosts: &[&str]) -> Net {
        preflight();
        sweep_leftovers();
        let prefix = format!(
            "{PREFIX}{}x{}-",
            std::process::id(),
            NETS.fetch_add(1, Ordering::SeqCst)
        );
        let mut net = Net {
            prefix,
            hosts: Vec::new(),
            links: Vec::new(),
        };
        for host in hosts {
            let ns = net.ns(host);
            ip(&["netns", "add", &ns]);
            net.hosts.push(host.to_string());
            ip(&["-n", &ns, "link", "set", "dev", "lo", "up"]);
        }
        net
    }

    /// The namespace of `host`.
    pub fn ns(&self, host: &str) -> String {
        format!("{}{host}", self.prefix)
    }

    /// Joins `a` and `b` by a veth pair: the device is named after the peer on each side
    /// (`b` in `a`'s namespace, `a` in `b`'s); `a` gets `10.213.<n>.1`, `b` `.2`.
    pub fn link(&mut self, a: &str, b: &str) {
        assert!(self.hosts.iter().any(|h| h == a) && self.hosts.iter().any(|h| h == b));
        let n = self.links.len();
        assert!(n < 250, "too many links");
        let (na, nb) = (self.ns(a), self.ns(b));
        ip(&[
            "-n", &na, "link", "add", "name", b, "type", "veth", "peer", "name", a, "netns", &nb,
        ]);
        let ends = (
            End {
                host: a.into(),
                dev: b.into(),
                addr: Ipv4Addr::new(10, 213, n as u8, 1),
            },
            End {
                host: b.into(),
                dev: a.into(),
                addr: Ipv4Addr::new(10, 213, n as u8, 2),
            },
        );
        for end in [&ends.0, &ends.1] {
            let ns = self.ns(&end.host);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", end.addr),
                "dev",
                &end.dev,
            ]);
            ip(&["-n", &ns, "link", "set", "dev", &end.dev, "up"]);
        }
        self.links.push(ends);
    }

    fn ends(&self, a: &str, b: &str) -> (&End, &End) {
        self.links
            .iter()
            .find_map(|(x, y)| {
                if x.host == a && y.host == b {
                    Some((x, y))
                } else if x.host == b && y.host == a {
                    Some((y, x))
                } else {
                    None
                }
            })
            .unwrap_or_else(|| panic!("no link between {a} and {b}"))
    }

    /// The address `from` reaches `to` at (`to`'s end of their link).
    pub fn addr(&self, from: &str, to: &str) -> Ipv4Addr {
        self.ends(from, to).1.addr
    }

    /// Puts `fault` on both ends of the link between `a` and `b`, replacing any fault there.
    pub fn fault(&self, a: &str, b: &str, fault: Fault) {
        let (x, y) = self.ends(a, b);
        for end in [x, y] {
            let table = format!("link_{}", end.dev);
            let dev = &end.dev;
            let rules = match fault {
                Fault::Cut => format!(
                    "chain out {{ type filter hook output priority 0; oifname \"{dev}\" counter drop; }}\n\
                     chain in {{ type filter hook input priority 0; iifname \"{dev}\" counter drop; }}"
                ),
                Fault::Loss(percent) => format!(
                    "chain out {{ type filter hook output priority 0; oifname \"{dev}\" \
                     numgen random mod 100 < {percent} counter drop; }}"
                ),
            };
            // Created empty (if missing), deleted and made again in one transaction.
            self.nft(
                &end.host,
                &format!(
                    "table inet {table} {{}}\ndelete table inet {table}\n\
                     table inet {table} {{\n{rules}\n}}\n"
                ),
            );
        }
    }

    /// Cuts the link between `a` and `b`: every packet dropped both ways, silently.
    pub fn cut(&self, a: &str, b: &str) {
        self.fault(a, b, Fault::Cut);
    }

    /// Removes every fault from the link between `a` and `b`.
    pub fn heal(&self, a: &str, b: &str) {
        let (x, y) = self.ends(a, b);
        for end in [x, y] {
            let table = format!("link_{}", end.dev);
            self.nft(
                &end.host,
                &format!("table inet {table} {{}}\ndelete table inet {table}\n"),
            );
        }
    }

    /// Packets the fault on the link between `a` and `b` has dropped so far, both ends (0
    /// when there is no fault on it).
    pub fn dropped(&self, a: &str, b: &str) -> u64 {
        let (x, y) = self.ends(a, b);
        [x, y]
            .into_iter()
            .map(|end| {
                let out = self
                    .command(&end.host, "nft")
                    .args(["list", "table", "inet", &format!("link_{}", end.dev)])
                    .output()
                    .expect("run nft");
                let listing = String::from_utf8_lossy(&out.stdout).into_owned();
                let words: Vec<&str> = listing.split_whitespace().collect();
                words
                    .windows(2)
                    .filter(|w| w[0] == "packets")
                    .filter_map(|w| w[1].parse::<u64>().ok())
                    .sum::<u64>()
            })
            .sum()
    }

    /// Runs an nftables script inside `host`.
    fn nft(&self, host: &str, script: &str) {
        let mut child = self
            .command(host, "nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(script.as_bytes())
            .expect("write the nft script");
        let out = child.wait_with_output().expect("wait for nft");
        assert!(
            out.status.success(),
            "nft in {host} failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// A [`Relay`] inside `host`: listens on `listen` there and forwards to `target` (an
    /// address reachable from `host`), with no delay until told.
    pub fn relay(&self, host: &str, listen: SocketAddr, target: SocketAddr) -> Relay {
        Relay::start(
            PathBuf::from("/run/netns").join(self.ns(host)),
            listen,
            target,
        )
    }

    /// `program` run inside `host` (`ip netns exec`, which execs it: the child's id is the
    /// program's).
    pub fn command(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(host)]).arg(program);
        command
    }

    /// Runs `f` in a new thread inside `host`'s namespace and returns what it returns (a
    /// panic in it is this thread's panic). Sockets `f` opens, and threads it spawns (a tokio
    /// runtime's workers), are inside `host`.
    pub fn run_in<T: Send>(&self, host: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = PathBuf::from("/run/netns").join(self.ns(host));
        std::thread::scope(|s| {
            let thread = s.spawn(move || {
                enter(&path);
                f()
            });
            match thread.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for host in &self.hosts {
            delete_namespace(&self.ns(host));
        }
    }
}

/// Moves the calling thread into the namespace mounted at `path`.
fn enter(path: &Path) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: setns on a valid descriptor of a network namespace; it changes only the
    // calling thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Fails the test naming the first thing missing for network namespaces and their faults.
fn preflight() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the partition tests need root (CAP_NET_ADMIN, to create network namespaces): \
         run them as root, as .ci/run does"
    );
    let mut probe = Command::new("ip");
    probe.arg("-V");
    testkit::require("ip", "apt-get install iproute2", probe);
    let mut probe = Command::new("nft");
    probe.arg("--version");
    testkit::require("nft", "apt-get install nftables", probe);
    // Namespaces, veth and nf_tables, tried for real in a scratch namespace.
    let ns = format!(
        "{PREFIX}{}x{}-probe",
        std::process::id(),
        NETS.fetch_add(1, Ordering::SeqCst)
    );
    let out = Command::new("ip")
        .args(["netns", "add", &ns])
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "the partition tests cannot create a network namespace (`ip netns add`: {}); they \
         need CAP_NET_ADMIN and a kernel with network namespaces",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let tried = (|| {
        let veth = Command::new("ip")
            .args([
                "-n", &ns, "link", "add", "name", "p0", "type", "veth", "peer", "name", "p1",
            ])
            .output()
            .expect("run ip");
        if !veth.status.success() {
            return Err(format!(
                "veth pairs (`ip link add type veth`: {}; kernel module veth)",
                String::from_utf8_lossy(&veth.stderr).trim()
            ));
        }
        let nft = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "add", "table", "inet", "probe"])
            .output()
            .expect("run nft");
        if !nft.status.success() {
            return Err(format!(
                "nftables in a namespace (`nft add table`: {}; kernel nf_tables)",
                String::from_utf8_lossy(&nft.stderr).trim()
            ));
        }
        Ok(())
    })();
    delete_namespace(&ns);
    if let Err(missing) = tried {
        panic!("the partition tests need {missing}, which this machine lacks");
    }
}

/// Deletes the namespaces of test processes that are gone (killed before their drop ran),
/// killing what still runs inside them first.
fn sweep_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('x').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            delete_namespace(name);
        }
    }
}

/// Kills the processes inside namespace `ns` (by their ids, as `ip netns pids` lists them),
/// then deletes it.
fn delete_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill has no memory preconditions; the pid is a process inside the
                // test's own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

fn ip(args: &[&str]) {
    run("ip", args);
}

fn run<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(program: &str, args: &[S]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A process started inside a host, killed on drop. Its stdout is read to the end by a
/// thread (so it never blocks on a full pipe); its stderr goes to a log file.
pub struct HostProcess {
    child: Child,
    pub name: String,
    log: PathBuf,
}

impl HostProcess {
    /// Starts `command` and waits (up to 30 s) for a stdout line containing `ready`;
    /// returns the process and that line.
    pub fn start(
        name: &str,
        mut command: Command,
        ready: &str,
        log: PathBuf,
    ) -> (HostProcess, String) {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let ready = ready.to_string();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(&ready) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line);
                    }
                }
            }
        });
        let process = HostProcess {
            child,
            name: name.into(),
            log,
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => (process, line),
            Err(_) => panic!("{name} did not start:\n{}", process.log()),
        }
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id (`ip netns exec` execs the program: this is the program's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay inside a host, delaying what it forwards: every chunk read from one side is
/// written to the other [`Relay::set_delay`] later (50 ms each way is a 100 ms round trip
/// added to every call). Runs a runtime of its own in a thread inside the host; stopped on
/// drop (its connections with it).
pub struct Relay {
    delay_ms: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Chunks a relay holds per direction before it stops reading (back-pressure).
const RELAY_QUEUE: usize = 256;

impl Relay {
    fn start(ns: PathBuf, listen: SocketAddr, target: SocketAddr) -> Relay {
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, bound) = std::sync::mpsc::channel();
        let delay = Arc::clone(&delay_ms);
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the relay");
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::bind(listen).await {
                    Ok(listener) => listener,
                    Err(e) => {
                        let _ = ready.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                tokio::pin!(stopped);
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            if let Ok((inbound, _)) = accepted {
                                tokio::spawn(relay_pair(inbound, target, Arc::clone(&delay)));
                            }
                        }
                    }
                }
            });
        });
        match bound.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the relay could not listen on {listen}: {e}"),
            Err(_) => panic!("the relay on {listen} did not start"),
        }
        Relay {
            delay_ms,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The delay from now on, each way (chunks already held keep theirs).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One relayed connection: `inbound` joined to a new connection to `target`, each way
/// delayed.
async fn relay_pair(inbound: tokio::net::TcpStream, target: SocketAddr, delay: Arc<AtomicU64>) {
    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::join!(
        relay_way(in_read, out_write, Arc::clone(&delay)),
        relay_way(out_read, in_write, delay)
    );
}

/// One direction: a reader stamping each chunk with when it may leave, a writer sending it
/// then; the end of the stream is passed on after the last chunk.
async fn relay_way(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(RELAY_QUEUE);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let at = tokio::time::Instant::now()
                        + Duration::from_millis(delay.load(Ordering::SeqCst));
                    if tx.send((at, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
