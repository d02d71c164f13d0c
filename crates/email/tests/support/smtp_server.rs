//! A real SMTP server for tests: aiosmtpd (Python) in its own process, saving every message it
//! accepts as a file (and its envelope, `MAIL FROM` and `RCPT TO`, beside it), refusing
//! recipients whose local part starts with `reject` with a 550.
//!
//! Shared by the email tests and the gateway's crash test (included with `#[path]`).

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const HANDLER: &str = r#"
import json, os, uuid

class Saver:
    def __init__(self, outdir):
        self.outdir = outdir

    @classmethod
    def from_cli(cls, parser, outdir):
        return cls(outdir)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split('@')[0].startswith('reject'):
            return '550 5.1.1 no such mailbox'
        envelope.rcpt_tos.append(address)
        return '250 OK'

    async def handle_DATA(self, server, session, envelope):
        name = uuid.uuid4().hex
        with open(os.path.join(self.outdir, name + '.envelope'), 'w') as f:
            json.dump({'mail_from': envelope.mail_from, 'rcpt_tos': envelope.rcpt_tos}, f)
        tmp = os.path.join(self.outdir, '.' + name)
        with open(tmp, 'wb') as f:
            f.write(envelope.original_content or envelope.content)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self.outdir, name + '.eml'))
        return '250 OK saved'
"#;

/// Fails the test unless python3 with aiosmtpd is installed, saying how to install it.
pub fn require_aiosmtpd() {
    let mut probe = Command::new("python3");
    probe.args(["-c", "import aiosmtpd"]);
    testkit::require("python3 with aiosmtpd", "pip install aiosmtpd", probe);
}

/// A free port on 127.0.0.1 (bound and released; the small race is acceptable in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running aiosmtpd; killed on drop.
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    pub outdir: PathBuf,
}

impl SmtpServer {
    /// Starts aiosmtpd on `port`, saving messages into `outdir`; returns once it accepts
    /// connections.
    pub fn start(port: u16, outdir: &Path) -> SmtpServer {
        std::fs::create_dir_all(outdir).unwrap();
        let script_dir = outdir.join("..").join(format!("smtp-handler-{port}"));
        std::fs::create_dir_all(&script_dir).unwrap();
        std::fs::write(script_dir.join("savehandler.py"), HANDLER).unwrap();
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "savehandler.Saver"])
            .arg(outdir)
            .env("PYTHONPATH", &script_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning python3 -m aiosmtpd");
        let mut server = SmtpServer {
            child,
            port,
            outdir: outdir.to_owned(),
        };
        let listening = format!("aiosmtpd to listen on {port}");
        testkit::eventually_blocking(&listening, Duration::from_secs(20), || {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("aiosmtpd exited early: {status}");
            }
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        server
    }

    /// The messages received so far, as raw bytes.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        received(&self.outdir)
    }

    /// The messages received so far with their SMTP envelopes.
    pub fn deliveries(&self) -> Vec<Delivery> {
        deliveries(&self.outdir)
    }
}

/// One message as the SMTP server received it.
#[derive(Debug)]
pub struct Delivery {
    /// The envelope sender (`MAIL FROM`).
    pub mail_from: String,
    /// The envelope recipients (`RCPT TO`).
    pub rcpt_to: Vec<String>,
    /// The message, as sent after `DATA`.
    pub raw: Vec<u8>,
}

/// The `.eml` files in `dir` with the envelopes saved beside them.
pub fn deliveries(dir: &Path) -> Vec<Delivery> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "eml") {
                let envelope: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(path.with_extension("envelope")).unwrap(),
                )
                .unwrap();
                out.push(Delivery {
                    mail_from: envelope["mail_from"].as_str().unwrap().to_owned(),
                    rcpt_to: envelope["rcpt_tos"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r.as_str().unwrap().to_owned())
                        .collect(),
                    raw: std::fs::read(path).unwrap(),
                });
            }
        }
    }
    out
}

/// The `.eml` files in `dir`, as raw bytes.
pub fn received(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "eml") {
                out.push(std::fs::read(path).unwrap());
            }
        }
    }
    out
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
