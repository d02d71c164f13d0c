//! A real `chat-server` process against peers that break the protocol: each such connection
//! is closed with a logged reason, and the server keeps serving everyone else.

use std::time::Duration;

use bytes::Bytes;
use chat_protocol::chat::{Action, ChatRef, NewChat};
use chat_protocol::{
    codec, decode, encode, Answer, Call, ErrorCode, Hello, HelloReply, Reply, Request,
    PROTOCOL_VERSION,
};
use futures::{SinkExt, StreamExt};
use testkit::{eventually, ChatServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

const PATIENCE: Duration = Duration::from_secs(10);

fn server() -> ChatServer {
    ChatServer::builder(env!("CARGO_BIN_EXE_chat-server"))
        .arg("--handshake-timeout-ms", "300")
        .start()
}

/// A well-behaved client speaking the protocol by hand.
struct Client {
    framed: Framed<TcpStream, LengthDelimitedCodec>,
    next_id: u64,
}

impl Client {
    async fn connect(server: &ChatServer) -> Client {
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let mut framed = Framed::new(stream, codec());
        let hello = Hello {
            version: PROTOCOL_VERSION,
            peer: "test".into(),
            nonce: None,
        };
        framed.send(encode(&hello)).await.unwrap();
        let reply: HelloReply = decode(&framed.next().await.unwrap().unwrap()).unwrap();
        let HelloReply::Welcome(welcome) = reply else {
            panic!("refused: {reply:?}")
        };
        assert_eq!(welcome.alias, server.alias);
        Client { framed, next_id: 1 }
    }

    async fn call(&mut self, call: Call) -> Reply {
        let id = self.next_id;
        self.next_id += 1;
        self.framed
            .send(encode(&Request {
                id,
                call,
                trace_id: None,
            }))
            .await
            .unwrap();
        let reply: Reply = decode(&self.framed.next().await.unwrap().unwrap()).unwrap();
        assert_eq!(reply.id, id);
        reply
    }
}

fn new_chat() -> NewChat {
    NewChat {
        tenant_name: "Environment".into(),
        nickname: "Ann".into(),
        endpoint: "default".into(),
        ..NewChat::default()
    }
}

/// Reads until the server closes the connection; fails the test if it does not.
async fn closed_by_server(mut stream: TcpStream) {
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

async fn after_hello(server: &ChatServer) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let hello = encode(&Hello {
        version: PROTOCOL_VERSION,
        peer: "hostile".into(),
        nonce: None,
    });
    stream
        .write_all(&(hello.len() as u32).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&hello).await.unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.unwrap();
    let mut welcome = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut welcome).await.unwrap();
    stream
}

#[tokio::test]
async fn hostile_frames_close_only_their_connection() {
    let server = server();
    let mut good = Client::connect(&server).await;
    let Some(Ok(Answer::Created(created))) =
        good.call(Call::LoginJoin(new_chat())).await.into_result()
    else {
        panic!("loginJoin failed")
    };

    // Garbage that is a well-formed frame but not JSON, before and after the handshake.
    let mut garbage = TcpStream::connect(server.addr).await.unwrap();
    garbage
        .write_all(&[0, 0, 0, 5, b'x', b'y', 0xff, 0, 1])
        .await
        .unwrap();
    closed_by_server(garbage).await;
    let mut garbage = after_hello(&server).await;
    garbage
        .write_all(&[0, 0, 0, 3, b'{', b'{', b'{'])
        .await
        .unwrap();
    closed_by_server(garbage).await;

    // A frame announcing 1 GB: refused on reading its header, nothing allocated.
    let mut huge = after_hello(&server).await;
    huge.write_all(&0x4000_0000u32.to_be_bytes()).await.unwrap();
    huge.write_all(b"{\"id\":1").await.unwrap();
    closed_by_server(huge).await;

    // A truncated frame: 100 bytes announced, 10 sent, then the peer stops writing.
    let mut truncated = after_hello(&server).await;
    truncated.write_all(&100u32.to_be_bytes()).await.unwrap();
    truncated.write_all(b"{\"id\":1,\"c").await.unwrap();
    truncated.shutdown().await.unwrap();
    closed_by_server(truncated).await;

    // A truncated frame from a peer that then goes quiet, before the handshake.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(&[0, 0, 0, 50, b'{']).await.unwrap();
    closed_by_server(stalled).await;

    // A peer that connects and says nothing.
    let silent = TcpStream::connect(server.addr).await.unwrap();
    closed_by_server(silent).await;

    // A peer with another protocol version is told so, then closed.
    let mut old = Framed::new(TcpStream::connect(server.addr).await.unwrap(), codec());
    let hello = Hello {
        version: PROTOCOL_VERSION + 1,
        peer: "future".into(),
        nonce: None,
    };
    old.send(encode(&hello)).await.unwrap();
    let reply: HelloReply = decode(&old.next().await.unwrap().unwrap()).unwrap();
    let HelloReply::Refused(refused) = reply else {
        panic!("accepted another version")
    };
    assert_eq!(refused.error.code, ErrorCode::VersionMismatch);
    assert!(old.next().await.is_none(), "closed after the refusal");

    // The well-behaved client never noticed, and new ones still get in.
    let update = good
        .call(Call::Refresh {
            chat: created.chat.clone(),
            action: Action::SendMessage {
                text: "still there?".into(),
                message_type: None,
            },
            transcript_position: 1,
            details: false,
        })
        .await;
    let Some(Ok(Answer::Update(update))) = update.into_result() else {
        panic!("refresh failed")
    };
    assert!(update
        .messages
        .iter()
        .any(|e| e.text.as_deref() == Some("still there?")));
    let mut fresh = Client::connect(&server).await;
    assert!(matches!(
        fresh.call(Call::Status {}).await.into_result(),
        Some(Ok(Answer::Status(_)))
    ));

    let log = eventually("the reasons in the log", PATIENCE, || async {
        let log = server.log();
        (log.contains("bad hello")
            && log.contains("bad request frame")
            && log.contains("bad frame")
            && log.contains("no hello within")
            && log.contains("protocol version"))
        .then_some(log)
    })
    .await;
    assert!(
        !log.contains(&created.chat.secure_key),
        "keys are never logged"
    );
}

#[tokio::test]
async fn a_peer_that_goes_quiet_after_hello_is_closed() {
    let server = ChatServer::builder(env!("CARGO_BIN_EXE_chat-server"))
        .arg("--idle-timeout-ms", "300")
        .start();
    let idle = after_hello(&server).await;
    closed_by_server(idle).await;
    eventually("the reason in the log", PATIENCE, || async {
        server.log().contains("nothing received for").then_some(())
    })
    .await;
    // A client that keeps talking is not affected.
    let mut client = Client::connect(&server).await;
    assert!(client.call(Call::Status {}).await.ok.is_some());
}

#[tokio::test]
async fn a_peer_that_never_reads_its_replies_is_closed() {
    let server = ChatServer::builder(env!("CARGO_BIN_EXE_chat-server"))
        .arg("--write-timeout-ms", "300")
        .start();
    // A tiny receive window so the server's replies back up quickly.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    let hello = encode(&Hello {
        version: PROTOCOL_VERSION,
        peer: "never reads".into(),
        nonce: None,
    });
    stream
        .write_all(&(hello.len() as u32).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(&hello).await.unwrap();
    let request = encode(&Request {
        id: 1,
        call: Call::Status {},
        trace_id: None,
    });
    let mut frame = (request.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&request);
    // Keep asking, never read: the server must give up on this peer, not buffer forever.
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            if stream.write_all(&frame).await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server closes a peer that does not read"
    );
    eventually("the reason in the log", PATIENCE, || async {
        server.log().contains("does not read").then_some(())
    })
    .await;
    let mut client = Client::connect(&server).await;
    assert!(client.call(Call::Status {}).await.ok.is_some());
}

#[tokio::test]
async fn unknown_calls_get_an_error_reply_and_the_connection_stays() {
    let server = server();
    let mut client = Client::connect(&server).await;
    client
        .framed
        .send(Bytes::from_static(br#"{"id":41,"call":{"teleport":{}}}"#))
        .await
        .unwrap();
    let reply: Reply = decode(&client.framed.next().await.unwrap().unwrap()).unwrap();
    assert_eq!(reply.id, 41);
    assert_eq!(reply.error.unwrap().code, ErrorCode::Unsupported);
    let Some(Ok(Answer::Status(status))) = client.call(Call::Status {}).await.into_result() else {
        panic!("status failed")
    };
    assert_eq!(status.alias, "117");
    assert!(status.load.accepting);
    assert!(!status.store);
    // Without a store, restore is refused as unsupported (final).
    let reply = client
        .call(Call::Restore {
            chat: ChatRef {
                chat_id: "x".into(),
                user_id: "y".into(),
                secure_key: "z".into(),
            },
        })
        .await;
    let error = reply.error.unwrap();
    assert_eq!(error.code, ErrorCode::Unsupported);
    assert!(!error.retryable);
}

#[tokio::test]
async fn many_chats_share_one_connection() {
    let server = server();
    let mut client = Client::connect(&server).await;
    // Send all the calls before reading any reply: the ids route them back.
    for id in 1..=20u64 {
        let call = Call::LoginJoin(new_chat());
        client
            .framed
            .send(encode(&Request {
                id,
                call,
                trace_id: None,
            }))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    for _ in 1..=20 {
        let reply: Reply = decode(&client.framed.next().await.unwrap().unwrap()).unwrap();
        assert!(matches!(
            reply.clone().into_result(),
            Some(Ok(Answer::Created(_)))
        ));
        seen.push(reply.id);
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let mut server = server();
    let mut client = Client::connect(&server).await;
    assert!(client.call(Call::Status {}).await.ok.is_some());
    assert!(server.terminate(PATIENCE), "exits 0 on SIGTERM");
    assert!(
        client.framed.next().await.is_none(),
        "connections are closed"
    );
}
