//! Many calls sent on one connection before any reply is read, against a real `chat-server`
//! at an in-flight bound of one: without a store every call is answered inline on the
//! connection's task, with one each call runs on its own task and the connection stops
//! reading at the bound until it finishes. Either way every call gets exactly one reply and a
//! chat's messages keep the order they were sent in.

use std::collections::HashSet;
use std::time::Duration;

use chat_protocol::chat::{Action, ChatRef, NewChat};
use chat_protocol::{codec, decode, encode, Answer, Call, Hello, HelloReply, Reply, Request};
use futures::{SinkExt, StreamExt};
use testkit::{ChatServer, Redis};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

const PATIENCE: Duration = Duration::from_secs(20);
const MESSAGES: u64 = 200;

async fn connect(server: &ChatServer) -> Framed<TcpStream, LengthDelimitedCodec> {
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let mut framed = Framed::new(stream, codec());
    let hello = Hello {
        version: chat_protocol::PROTOCOL_VERSION,
        peer: "pipelining test".into(),
        nonce: None,
    };
    framed.send(encode(&hello)).await.unwrap();
    let reply: HelloReply = decode(&framed.next().await.unwrap().unwrap()).unwrap();
    assert!(matches!(reply, HelloReply::Welcome(_)), "{reply:?}");
    framed
}

async fn next_reply(framed: &mut Framed<TcpStream, LengthDelimitedCodec>) -> Reply {
    let frame = tokio::time::timeout(PATIENCE, framed.next())
        .await
        .expect("a reply within the patience")
        .expect("the server closed the connection")
        .unwrap();
    decode(&frame).unwrap()
}

fn request(id: u64, call: Call) -> bytes::Bytes {
    encode(&Request {
        id,
        call,
        trace_id: None,
    })
}

/// Opens a chat, then sends `MESSAGES` messages and a status call without reading, then reads
/// every reply; returns the chat's transcript texts.
async fn pipelined(server: &ChatServer) -> Vec<String> {
    let mut framed = connect(server).await;
    let new_chat = NewChat {
        tenant_name: "Environment".into(),
        nickname: "Ann".into(),
        endpoint: "default".into(),
        ..NewChat::default()
    };
    framed
        .send(request(1, Call::LoginJoin(new_chat)))
        .await
        .unwrap();
    let Some(Ok(Answer::Created(created))) = next_reply(&mut framed).await.into_result() else {
        panic!("no chat");
    };
    let chat: ChatRef = created.chat;
    let first = 2;
    for n in 0..MESSAGES {
        let call = Call::Refresh {
            chat: chat.clone(),
            action: Action::SendMessage {
                text: format!("message {n}"),
                message_type: None,
            },
            transcript_position: 0,
            details: false,
        };
        framed.feed(request(first + n, call)).await.unwrap();
    }
    framed
        .feed(request(first + MESSAGES, Call::Status {}))
        .await
        .unwrap();
    SinkExt::<bytes::Bytes>::flush(&mut framed).await.unwrap();
    let mut answered = HashSet::new();
    for _ in 0..=MESSAGES {
        let reply = next_reply(&mut framed).await;
        assert!(
            answered.insert(reply.id),
            "request {} answered twice",
            reply.id
        );
        assert!(matches!(reply.into_result(), Some(Ok(_))), "a call failed");
    }
    let expected: HashSet<u64> = (first..=first + MESSAGES).collect();
    assert_eq!(answered, expected, "every call answered once");
    let poll = Call::Refresh {
        chat,
        action: Action::Poll,
        transcript_position: 1,
        details: false,
    };
    framed.send(request(10_000, poll)).await.unwrap();
    let Some(Ok(Answer::Update(update))) = next_reply(&mut framed).await.into_result() else {
        panic!("no transcript");
    };
    update
        .messages
        .into_iter()
        .filter(|event| event.from.nickname.as_ref() == "Ann")
        .filter_map(|event| event.text.map(|text| text.to_string()))
        .collect()
}

fn sent() -> Vec<String> {
    (0..MESSAGES).map(|n| format!("message {n}")).collect()
}

#[tokio::test]
async fn pipelined_calls_answered_inline_are_each_answered_once_in_order() {
    let server = ChatServer::builder(env!("CARGO_BIN_EXE_chat-server"))
        .arg("--max-in-flight-per-connection", "1")
        .start();
    assert_eq!(pipelined(&server).await, sent());
}

#[tokio::test]
async fn pipelined_calls_past_the_in_flight_bound_with_a_store_are_each_answered_once_in_order() {
    let redis = Redis::start();
    let server = ChatServer::builder(env!("CARGO_BIN_EXE_chat-server"))
        .store(&redis.url())
        .arg("--max-in-flight-per-connection", "1")
        .start();
    assert_eq!(pipelined(&server).await, sent());
}
