//! Test fixtures: for tests that cross a network with real processes, a private
//! `redis-server`, `chat-server` processes, and polling with a deadline; for tests that need
//! none, [`ScriptedBackend`] (`backend`), the one fake chat backend whose answers a test
//! scripts and whose received calls it reads back.
//!
//! Owns starting and stopping those processes and the fake, nothing else: assertions belong
//! to the tests. Every fixture picks its own free port on 127.0.0.1 and kills its process on drop, so
//! tests can run in parallel and never assume a service already running.

pub mod backend;
pub mod redis_ha;

pub use backend::{Call, Received, ScriptedBackend};

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How often the `eventually` helpers look again.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// The one way tests wait for something: polls `check` every 20 ms until it yields a value,
/// failing the test with "timed out waiting for `what`" past `within`. Tests never sleep a
/// fixed time instead.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// [`eventually`] for code outside an async runtime (threads, process fixtures): blocks the
/// thread between checks.
pub fn eventually_blocking<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL_EVERY);
    }
}

/// Fails the test unless `probe` runs and exits 0, naming what is missing and how to install
/// it. A test that needs a real part never skips itself and passes: it fails until the part
/// is there (`.ci/run` installs them).
pub fn require(what: &str, install: &str, mut probe: Command) {
    let present = probe
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        present,
        "this test needs {what}, which is not installed here: {install}"
    );
}

/// A port nobody listens on right now (for programs that cannot be told to use port 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "testkit-{}-{}-{}",
        name,
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// A private `redis-server` on a free port, without persistence, killed on drop. It can be
/// stopped and started again on the same port with its data ([`Redis::stop`],
/// [`Redis::restart`]), as an operator restarting Redis would.
pub struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Starts one. Without `redis-server` installed the test fails and says how to install it.
    pub fn start() -> Redis {
        let mut probe = Command::new("redis-server");
        probe.arg("--version");
        require("redis-server", "apt-get install redis-server", probe);
        // The port is picked before redis binds it, so another process can take it in
        // between: try a few.
        for _ in 0..5 {
            let port = free_port();
            let dir = scratch_dir("redis");
            if let Some(child) = spawn_redis(port, &dir) {
                return Redis { child, port, dir };
            }
        }
        panic!("redis-server did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops it as `redis-cli shutdown save` would: the data is written to its directory and
    /// the process exits; clients see their connections closed and new ones refused.
    pub fn stop(&mut self) {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = stream.write_all(b"SHUTDOWN SAVE\r\n");
        }
        let child = &mut self.child;
        eventually_blocking("redis-server to exit", Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_))).then_some(())
        });
    }

    /// Starts it again on the same port with the data [`Redis::stop`] saved.
    pub fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = spawn_redis(self.port, &self.dir) {
                self.child = child;
                return;
            }
            // The old socket may linger a moment.
            assert!(
                Instant::now() < deadline,
                "redis-server did not start again on {}",
                self.port
            );
            std::thread::sleep(POLL_EVERY);
        }
    }
}

/// Runs `redis-server` on `port` with its files in `dir`; `None` when it does not answer.
fn spawn_redis(port: u16, dir: &Path) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if redis_ping(port) {
            return Some(child);
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(POLL_EVERY);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {} failed", child.id());
}

/// The `chat-server` binary of this workspace, built if it is not there yet. For tests outside
/// the chat-server package, where Cargo does not provide `CARGO_BIN_EXE_chat-server`.
pub fn chat_server_bin() -> PathBuf {
    // Tests run in parallel threads: build at most once per test process.
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(find_or_build_chat_server).clone()
}

fn find_or_build_chat_server() -> PathBuf {
    // Test executables live in <target>/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let bin = profile_dir.join(format!("chat-server{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "chat-server", "--bin", "chat-server"]);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build for chat-server");
        assert!(status.success(), "building chat-server failed");
    }
    bin
}

/// A `chat-server` process: build it with [`ChatServer::builder`].
pub struct ChatServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    pub alias: String,
    log: PathBuf,
}

pub struct ChatServerBuilder {
    bin: PathBuf,
    alias: String,
    listen: String,
    args: Vec<String>,
}

impl ChatServer {
    /// A server with alias `117`, quick simulated agent, listening on a free port.
    pub fn builder(bin: impl Into<PathBuf>) -> ChatServerBuilder {
        ChatServerBuilder {
            bin: bin.into(),
            alias: "117".into(),
            listen: "127.0.0.1:0".into(),
            args: vec![
                "--agent-join-delay-ms".into(),
                "0".into(),
                "--agent-reply-delay-ms".into(),
                "0".into(),
            ],
        }
    }

    /// SIGKILL: the process dies mid-whatever, as a crashed host would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the process to exit (bounded); returns whether it exited 0.
    pub fn terminate(&mut self, within: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(POLL_EVERY);
        }
        false
    }

    /// SIGSTOP: the process is frozen (as a paused VM or a long GC pause would be); its
    /// sockets stay open and what is sent to it queues.
    pub fn pause(&mut self) {
        signal(&self.child, "-STOP");
        // The signal is delivered asynchronously: wait until the process is stopped, so
        // what the test sends next surely queues.
        let stat = format!("/proc/{}/stat", self.child.id());
        eventually_blocking("the chat server to stop", Duration::from_secs(10), || {
            let Ok(text) = std::fs::read_to_string(&stat) else {
                return Some(()); // no /proc: nothing more to wait for
            };
            let state = text.rsplit(')').next()?.split_whitespace().next()?;
            (state == "T").then_some(())
        });
    }

    /// SIGCONT: a frozen process runs on, and handles what queued meanwhile.
    pub fn resume(&mut self) {
        signal(&self.child, "-CONT");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the server logged so far (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl ChatServerBuilder {
    pub fn alias(mut self, alias: &str) -> Self {
        self.alias = alias.into();
        self
    }

    /// Listen on this address instead of a free port (to restart a server where clients
    /// expect it).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr.to_string();
        self
    }

    pub fn store(self, url: &str) -> Self {
        self.arg("--store", url)
    }

    /// Any other flag of the binary.
    pub fn arg(mut self, flag: &str, value: &str) -> Self {
        self.args.push(flag.into());
        self.args.push(value.into());
        self
    }

    /// Starts the process and waits for it to say where it listens.
    pub fn start(self) -> ChatServer {
        let log = scratch_dir("chat-server").join("stderr.log");
        let mut child = Command::new(&self.bin)
            .args(["--listen", &self.listen, "--alias", &self.alias])
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read chat-server stdout");
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!(
                    "chat-server did not start: {line:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        ChatServer {
            child,
            addr,
            alias: self.alias,
            log,
        }
    }
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
