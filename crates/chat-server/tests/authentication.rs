//! The shared secret (protocol v2) against a real `chat-server` process: a peer without it —
//! raw TCP speaking the protocol, or the gateway's adapter with no or a wrong secret — is
//! refused in the handshake and reaches no chat; the adapter with the secret works; and a
//! server without a secret will not serve a non-loopback address.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use backend_api::{BackendError, ChatBackend, NewChat};
use backend_tcp::{TcpBackend, TcpConfig};
use chat_protocol::auth::{self, Role};
use chat_protocol::chat::NewChat as WireNewChat;
use chat_protocol::{
    codec, decode, encode, Answer, Call, ErrorCode, Hello, HelloReply, Proof, Reply, Request,
    PROTOCOL_V1, PROTOCOL_V2, PROTOCOL_VERSION,
};
use futures::{SinkExt, StreamExt};
use std::io::Read as _;
use testkit::{eventually, eventually_blocking, ChatServer};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

const PATIENCE: Duration = Duration::from_secs(10);
const SECRET: &str = "7f3c9a1e5b2d8f4a6c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_chat-server")
}

/// A file holding `secret` (with the trailing newline an editor leaves).
fn secret_file(secret: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "chat-server-auth-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("secret");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

fn server_with_secret() -> ChatServer {
    ChatServer::builder(bin())
        .arg("--secret-file", secret_file(SECRET).to_str().unwrap())
        .arg("--handshake-timeout-ms", "2000")
        .start()
}

type Frames = Framed<TcpStream, LengthDelimitedCodec>;

async fn raw(server: &ChatServer) -> Frames {
    Framed::new(TcpStream::connect(server.addr).await.unwrap(), codec())
}

async fn hello(frames: &mut Frames, version: u16, nonce: Option<&str>) -> HelloReply {
    let hello = Hello {
        version,
        peer: "stranger".into(),
        nonce: nonce.map(str::to_owned),
    };
    frames.send(encode(&hello)).await.unwrap();
    next(frames).await
}

async fn next(frames: &mut Frames) -> HelloReply {
    let frame = tokio::time::timeout(PATIENCE, frames.next())
        .await
        .expect("an answer in time")
        .expect("a frame")
        .unwrap();
    decode(&frame).unwrap()
}

/// Reads until the server closes the connection; fails the test if it does not.
async fn closed_by_server(frames: Frames) {
    let mut stream = frames.into_inner();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closes the connection");
}

fn login_join(id: u64) -> bytes::Bytes {
    let chat = NewChat {
        tenant_name: "Environment".into(),
        nickname: "Mallory".into(),
        endpoint: "default".into(),
        ..NewChat::default()
    };
    encode(&Request {
        id,
        call: Call::LoginJoin(WireNewChat::from(chat)),
        trace_id: None,
    })
}

fn refused_for_auth(reply: HelloReply) {
    let HelloReply::Refused(refused) = reply else {
        panic!("not refused: {reply:?}")
    };
    assert_eq!(refused.error.code, ErrorCode::AuthFailed, "{refused:?}");
    assert!(!refused.error.retryable);
    assert_eq!(refused.supported_versions, [PROTOCOL_V2, PROTOCOL_VERSION]);
}

/// An authenticated raw client: the one way to see the server's state from outside.
async fn chats_held(server: &ChatServer) -> u64 {
    let mut frames = raw(server).await;
    let client_nonce = auth::nonce();
    let HelloReply::Challenge(challenge) =
        hello(&mut frames, PROTOCOL_VERSION, Some(&client_nonce)).await
    else {
        panic!("no challenge")
    };
    let proof = auth::proof(
        SECRET.as_bytes(),
        Role::Client,
        &challenge.nonce,
        &client_nonce,
    );
    frames.send(encode(&Proof { proof })).await.unwrap();
    let HelloReply::Welcome(welcome) = next(&mut frames).await else {
        panic!("the right proof was refused")
    };
    let server_proof = welcome.proof.expect("the server proves the secret too");
    assert!(auth::verify(
        SECRET.as_bytes(),
        Role::Server,
        &challenge.nonce,
        &client_nonce,
        &server_proof
    ));
    welcome.status.chats
}

#[tokio::test]
async fn a_peer_without_the_secret_is_refused_and_reaches_no_chat() {
    let server = server_with_secret();

    // Version 1, as every client spoke before: refused, closed.
    let mut v1 = raw(&server).await;
    refused_for_auth(hello(&mut v1, PROTOCOL_V1, None).await);
    closed_by_server(v1).await;

    // A call straight away, without a hello: not a hello, closed.
    let mut rude = raw(&server).await;
    rude.send(login_join(1)).await.unwrap();
    closed_by_server(rude).await;

    // Version 2 without the secret: challenged; a guessed proof is refused and closed, and a
    // call sent in place of the proof does not get through either.
    let mut guess = raw(&server).await;
    let HelloReply::Challenge(challenge) = hello(&mut guess, PROTOCOL_VERSION, None).await else {
        panic!("no challenge")
    };
    assert_eq!(challenge.nonce.len(), 64);
    let wrong = auth::proof(
        b"not the secret, but just as long as it",
        Role::Client,
        &challenge.nonce,
        "",
    );
    guess.send(encode(&Proof { proof: wrong })).await.unwrap();
    refused_for_auth(next(&mut guess).await);
    closed_by_server(guess).await;

    let mut skipper = raw(&server).await;
    let HelloReply::Challenge(_) = hello(&mut skipper, PROTOCOL_VERSION, None).await else {
        panic!("no challenge")
    };
    skipper.send(login_join(2)).await.unwrap();
    closed_by_server(skipper).await;

    // A proof replayed from another connection: its nonce is not this connection's.
    let mut first = raw(&server).await;
    let HelloReply::Challenge(old) = hello(&mut first, PROTOCOL_VERSION, None).await else {
        panic!("no challenge")
    };
    let seen_on_the_wire = auth::proof(SECRET.as_bytes(), Role::Client, &old.nonce, "");
    let mut replay = raw(&server).await;
    let HelloReply::Challenge(_) = hello(&mut replay, PROTOCOL_VERSION, None).await else {
        panic!("no challenge")
    };
    replay
        .send(encode(&Proof {
            proof: seen_on_the_wire,
        }))
        .await
        .unwrap();
    refused_for_auth(next(&mut replay).await);
    closed_by_server(replay).await;

    assert_eq!(
        chats_held(&server).await,
        0,
        "a refused peer created a chat"
    );
    let log = eventually("the refusals logged", PATIENCE, || async {
        let log = server.log();
        let refusals = log.matches("authentication failed").count();
        (refusals >= 3 && log.contains("bad proof frame")).then_some(log)
    })
    .await;
    assert!(
        log.contains("wrong proof: the peer does not hold the shared secret"),
        "{log}"
    );
    assert!(!log.contains(SECRET), "the secret is never logged");
}

fn adapter(server: &ChatServer, secret: Option<&str>) -> TcpBackend {
    TcpBackend::new(TcpConfig {
        status_interval: Duration::from_millis(100),
        backoff_max: Duration::from_millis(200),
        secret: secret.map(Into::into),
        ..TcpConfig::new(server.addr.to_string())
    })
}

fn new_chat() -> NewChat {
    NewChat {
        tenant_name: "Environment".into(),
        nickname: "Ann".into(),
        endpoint: "default".into(),
        ..NewChat::default()
    }
}

/// The adapter's verdict once its first connection attempt is over.
async fn first_check(backend: &TcpBackend) -> Result<backend_api::Load, BackendError> {
    eventually("a settled check", PATIENCE, || async {
        match backend.check().await {
            Err(BackendError::Unreachable(why)) if why.contains("not connected yet") => None,
            other => Some(other),
        }
    })
    .await
}

#[tokio::test]
async fn the_adapter_with_the_secret_serves_and_a_wrong_or_missing_one_is_refused() {
    let server = server_with_secret();

    let good = adapter(&server, Some(SECRET));
    let created = eventually("a chat created", PATIENCE, || async {
        match good.create(new_chat()).await {
            Ok(created) => Some(created),
            Err(e) if e.retryable() => None,
            Err(e) => panic!("create failed: {e}"),
        }
    })
    .await;
    assert_eq!(created.chat.chat_id.len(), 16);
    assert!(first_check(&good).await.is_ok());

    for (secret, says) in [
        (
            Some("a-wrong-secret-of-the-right-length-0123456789"),
            "refused this gateway's proof",
        ),
        (None, "needs the shared secret and tcp.secret is not set"),
    ] {
        let bad = adapter(&server, secret);
        match first_check(&bad).await {
            Err(BackendError::Unreachable(why)) => {
                assert!(why.contains(says), "{why}");
                assert!(why.contains("shared-secret handshake"), "{why}");
            }
            other => panic!("{secret:?}: {other:?}"),
        }
        match bad.create(new_chat()).await {
            Err(e @ BackendError::Unreachable(_)) => assert!(e.never_arrived()),
            other => panic!("{secret:?}: a chat without the secret: {other:?}"),
        }
    }
    assert_eq!(chats_held(&server).await, 1, "only the good adapter's chat");
}

#[tokio::test]
async fn an_adapter_with_a_secret_does_not_trust_a_server_without_one() {
    let open = ChatServer::builder(bin()).start();
    let backend = adapter(&open, Some(SECRET));
    match first_check(&backend).await {
        Err(BackendError::Unreachable(why)) => {
            assert!(why.contains("did not ask for it"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    // Without a secret on either side (loopback), the adapter speaks version 1 and is served.
    let plain = adapter(&open, None);
    assert!(
        eventually("a chat", PATIENCE, || async {
            plain.create(new_chat()).await.ok()
        })
        .await
        .chat
        .chat_id
        .len()
            == 16
    );
    // And a version-1 peer is still welcome there.
    let mut v1 = Framed::new(TcpStream::connect(open.addr).await.unwrap(), codec());
    let HelloReply::Welcome(welcome) = hello(&mut v1, PROTOCOL_V1, None).await else {
        panic!("a v1 hello refused by a server without a secret")
    };
    assert_eq!((welcome.version, welcome.proof), (PROTOCOL_V1, None));
    v1.send(encode(&Request {
        id: 1,
        call: Call::Status {},
        trace_id: None,
    }))
    .await
    .unwrap();
    let reply: Reply = decode(&v1.next().await.unwrap().unwrap()).unwrap();
    assert!(matches!(reply.into_result(), Some(Ok(Answer::Status(_)))));
}

/// A child process killed when the test is done with it, whatever happened.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on `listen` with `extra` flags and waits for it to exit (it must: these
/// are refused configurations); returns its exit code and what it said.
fn run(listen: &str, extra: &[&str]) -> (Option<i32>, String) {
    let mut child = Running(
        Command::new(bin())
            .args(["--listen", listen, "--alias", "117"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let code = eventually_blocking("the refused server to exit", PATIENCE, || {
        child
            .0
            .try_wait()
            .ok()
            .flatten()
            .map(|status| status.code())
    });
    let mut said = String::new();
    for pipe in [
        child
            .0
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read>),
        child
            .0
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut pipe = pipe;
        pipe.read_to_string(&mut said).unwrap();
    }
    (code, said)
}

#[test]
fn without_a_secret_a_non_loopback_address_is_refused() {
    let (code, said) = run("0.0.0.0:0", &[]);
    assert_ne!(code, Some(0), "{said}");
    assert!(
        said.contains("without a shared secret") && said.contains("--secret-file"),
        "{said}"
    );
    let path = secret_file("short");
    let (code, said) = run("127.0.0.1:0", &["--secret-file", path.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("secret_file"), "{said}");
}

#[test]
fn with_a_secret_or_the_explicit_opt_out_it_serves_any_address() {
    for extra in [
        vec![
            "--secret-file".to_owned(),
            secret_file(SECRET).display().to_string(),
        ],
        vec!["--allow-no-secret".to_owned()],
    ] {
        let mut child = Running(
            Command::new(bin())
                .args(["--listen", "0.0.0.0:0", "--alias", "117"])
                .args(&extra)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.0.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        drop(child);
        assert!(
            line.contains("listening on 0.0.0.0:"),
            "{extra:?}: {line:?}"
        );
    }
}

const NEW_SECRET: &str = "0d2b4f6a8c1e3d5f7b9a2c4e6f8d0b1a3c5e7f9b2d4a6c8e0f1b3d5a7c9e2f4b";

#[tokio::test]
async fn during_a_tcp_secret_rotation_either_secret_is_served_and_after_it_only_the_new_one() {
    // During: secret_file holds the new secret, previous_secret_file the old one.
    let rotating = ChatServer::builder(bin())
        .arg("--secret-file", secret_file(NEW_SECRET).to_str().unwrap())
        .arg(
            "--previous-secret-file",
            secret_file(SECRET).to_str().unwrap(),
        )
        .arg("--handshake-timeout-ms", "2000")
        .start();
    for secret in [SECRET, NEW_SECRET] {
        let gateway = adapter(&rotating, Some(secret));
        eventually("a chat created", PATIENCE, || async {
            match gateway.create(new_chat()).await {
                Ok(created) => Some(created),
                Err(e) if e.retryable() => None,
                Err(e) => panic!("create failed: {e}"),
            }
        })
        .await;
        assert!(first_check(&gateway).await.is_ok());
    }
    let stranger = adapter(
        &rotating,
        Some("a-wrong-secret-of-the-right-length-0123456789"),
    );
    match first_check(&stranger).await {
        Err(BackendError::Unreachable(why)) => {
            assert!(why.contains("refused this gateway's proof"), "{why}")
        }
        other => panic!("a third secret: {other:?}"),
    }
    // A raw peer proving the old secret gets the server's proof under that same secret.
    assert_eq!(chats_held(&rotating).await, 2, "one chat per secret");

    // After: the previous secret is removed, and a gateway still on it is refused.
    let after = ChatServer::builder(bin())
        .arg("--secret-file", secret_file(NEW_SECRET).to_str().unwrap())
        .arg("--handshake-timeout-ms", "2000")
        .start();
    match first_check(&adapter(&after, Some(SECRET))).await {
        Err(BackendError::Unreachable(why)) => {
            assert!(why.contains("refused this gateway's proof"), "{why}")
        }
        other => panic!("the old secret after the rotation: {other:?}"),
    }
    assert!(first_check(&adapter(&after, Some(NEW_SECRET)))
        .await
        .is_ok());
    for server in [&rotating, &after] {
        let log = server.log();
        assert!(
            !log.contains(SECRET) && !log.contains(NEW_SECRET),
            "secrets are never logged"
        );
    }
}

#[test]
fn a_previous_secret_needs_a_current_one_and_the_same_length() {
    let old = secret_file(SECRET);
    let (code, said) = run(
        "127.0.0.1:0",
        &["--previous-secret-file", old.to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("previous_secret_file"), "{said}");
    let (new, short) = (secret_file(NEW_SECRET), secret_file("short"));
    let (code, said) = run(
        "127.0.0.1:0",
        &[
            "--secret-file",
            new.to_str().unwrap(),
            "--previous-secret-file",
            short.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("previous_secret_file"), "{said}");
}
