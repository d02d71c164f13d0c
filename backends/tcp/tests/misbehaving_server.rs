//! The adapter against a server that completes the handshake and then never answers: the
//! request timeout and the in-flight bound, which a well-behaved chat server cannot provoke;
//! and against one that reads late: requests the socket cannot take at once.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backend_api::{Action, BackendError, ChatBackend, ChatRef, NewChat, Refresh, Transcript};
use backend_tcp::{TcpBackend, TcpConfig};
use chat_protocol::{
    codec, decode, encode, Answer, Call, ErrorCode, Hello, HelloReply, Reply, Request, Status,
    Welcome, WireError, MAX_FRAME_LENGTH, PROTOCOL_VERSION,
};
use futures::{SinkExt, StreamExt};
use testkit::eventually;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

fn status() -> Status {
    Status {
        alias: "999".into(),
        load: chat_protocol::chat::Load {
            active: 0,
            limit: 10,
            accepting: true,
        },
        chats: 0,
        connections: 1,
        store: false,
    }
}

fn welcome() -> HelloReply {
    HelloReply::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        alias: "999".into(),
        max_frame_length: MAX_FRAME_LENGTH as u64,
        status: status(),
        proof: None,
    })
}

/// Accepts connections, greets them, and reports every request frame without answering it
/// (with `answers_status`, it answers `status` calls, and only those); `accepted` counts
/// connections.
async fn silent_server(
    answers_status: bool,
) -> (String, mpsc::UnboundedReceiver<()>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (seen, requests) = mpsc::unbounded_channel();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut framed = Framed::new(stream, codec());
                let Some(Ok(frame)) = framed.next().await else {
                    return;
                };
                let hello: Hello = decode(&frame).unwrap();
                // A gateway says the newest version first, with or without tcp.secret.
                assert_eq!(hello.version, PROTOCOL_VERSION);
                framed.send(encode(&welcome())).await.unwrap();
                while let Some(Ok(frame)) = framed.next().await {
                    let _ = seen.send(());
                    let Ok(request) = decode::<Request>(&frame) else {
                        continue;
                    };
                    if answers_status && matches!(request.call, Call::Status {}) {
                        let reply = Reply::ok(request.id, Answer::Status(status()));
                        if framed.send(encode(&reply)).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (address, requests, accepted)
}

fn new_chat() -> NewChat {
    NewChat {
        tenant_name: "Environment".into(),
        nickname: "Ann".into(),
        endpoint: "default".into(),
        ..NewChat::default()
    }
}

#[tokio::test]
async fn no_answer_is_interrupted_and_a_full_pipe_is_overloaded() {
    let (address, mut requests, _) = silent_server(false).await;
    let backend = std::sync::Arc::new(TcpBackend::new(TcpConfig {
        max_in_flight: NonZeroUsize::new(1).unwrap(),
        request_timeout: Duration::from_millis(300),
        // No status polls: they would take the one in-flight permit.
        status_interval: Duration::from_secs(3600),
        ..TcpConfig::new(&address)
    }));
    eventually("connected", Duration::from_secs(10), || async {
        backend.is_connected().then_some(())
    })
    .await;
    assert!(backend.load().accepting, "load comes from the handshake");

    let waiting = {
        let backend = std::sync::Arc::clone(&backend);
        tokio::spawn(async move { backend.create(new_chat()).await })
    };
    requests
        .recv()
        .await
        .expect("the first request reached the server");
    let error = backend.create(new_chat()).await.unwrap_err();
    assert!(matches!(error, BackendError::Overloaded(_)), "{error:?}");
    assert!(error.retryable() && error.never_arrived());

    let error = waiting.await.unwrap().unwrap_err();
    assert!(matches!(error, BackendError::Interrupted(_)), "{error:?}");
    assert!(error.retryable() && !error.never_arrived());
}

#[tokio::test]
async fn a_connection_whose_requests_keep_timing_out_is_replaced() {
    let (address, _requests, accepted) = silent_server(false).await;
    let backend = TcpBackend::new(TcpConfig {
        connections: 1,
        request_timeout: Duration::from_millis(100),
        status_interval: Duration::from_secs(3600),
        backoff_max: Duration::from_millis(100),
        ..TcpConfig::new(&address)
    });
    eventually("connected", Duration::from_secs(10), || async {
        backend.is_connected().then_some(())
    })
    .await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // Nothing came back while it waited: the connection is replaced at once (a request
    // queued on a cut path must not be delivered when the path heals).
    let error = backend.create(new_chat()).await.unwrap_err();
    assert!(matches!(error, BackendError::Interrupted(_)), "{error:?}");
    eventually("a new connection", Duration::from_secs(10), || async {
        (accepted.load(Ordering::SeqCst) == 2).then_some(())
    })
    .await;
}

/// Callers write their own requests to the socket and hand what it cannot take at once to
/// the connection's future. A server that reads nothing until far more than any socket buffer
/// is queued must still get every request whole (each frame decodes, no id twice), and every
/// caller its own reply.
#[tokio::test]
async fn requests_the_socket_cannot_take_at_once_all_arrive_whole_and_each_caller_gets_its_reply() {
    const CALLERS: usize = 64;
    const TEXT_BYTES: usize = 500_000;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (start_reading, reading) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut framed = Framed::new(stream, codec());
        let Some(Ok(_hello)) = framed.next().await else {
            panic!("no hello");
        };
        framed.send(encode(&welcome())).await.unwrap();
        // Reads nothing more until every caller has queued its request.
        reading.await.unwrap();
        let mut ids = std::collections::HashSet::new();
        while ids.len() < CALLERS {
            let frame = framed.next().await.expect("the adapter closed").unwrap();
            let request: Request = decode(&frame).expect("every frame arrives whole");
            let Call::Refresh { chat, action, .. } = &request.call else {
                panic!("unexpected call {}", request.call.name());
            };
            let chat_protocol::chat::Action::SendMessage { text, .. } = action else {
                panic!("unexpected action {action:?}");
            };
            assert_eq!(text.len(), TEXT_BYTES);
            assert!(ids.insert(request.id), "request id {} twice", request.id);
            // Names the request's chat: each caller checks the reply is its own.
            let error = WireError::new(ErrorCode::Rejected, chat.chat_id.clone());
            framed
                .send(encode(&Reply::error(request.id, error)))
                .await
                .unwrap();
        }
        ids.len()
    });
    let backend = Arc::new(TcpBackend::new(TcpConfig {
        connections: 1,
        request_timeout: Duration::from_secs(60),
        status_interval: Duration::from_secs(3600),
        ..TcpConfig::new(&address)
    }));
    eventually("connected", Duration::from_secs(10), || async {
        backend.is_connected().then_some(())
    })
    .await;
    let callers: Vec<_> = (0..CALLERS)
        .map(|n| {
            let backend = Arc::clone(&backend);
            tokio::spawn(async move {
                let chat = ChatRef {
                    chat_id: format!("chat{n}"),
                    user_id: "007553ADB4D9001A".into(),
                    secure_key: "E1A17B94F802C330".into(),
                };
                let request = Refresh {
                    action: Action::SendMessage {
                        text: "x".repeat(TEXT_BYTES),
                        message_type: None,
                    },
                    transcript: Transcript::From(1),
                    details: false,
                };
                backend.refresh(&chat, request).await
            })
        })
        .collect();
    // 32 MB queued: far more than a loopback socket's buffers take.
    tokio::time::sleep(Duration::from_millis(500)).await;
    start_reading.send(()).unwrap();
    for (n, caller) in callers.into_iter().enumerate() {
        match caller.await.unwrap().unwrap_err() {
            BackendError::Rejected { message, .. } => assert_eq!(message, format!("chat{n}")),
            other => panic!("caller {n} got {other:?}"),
        }
    }
    assert_eq!(server.await.unwrap(), CALLERS);
}

#[tokio::test]
async fn a_timeout_on_a_connection_that_still_answers_keeps_it() {
    // Status calls are answered, the chat call is not: a slow call on a live server, not a cut
    // path. The connection stays (only one silent for a request's whole timeout is replaced).
    let (address, mut requests, accepted) = silent_server(true).await;
    let backend = TcpBackend::new(TcpConfig {
        connections: 1,
        request_timeout: Duration::from_millis(300),
        status_interval: Duration::from_millis(20),
        ..TcpConfig::new(&address)
    });
    eventually("connected", Duration::from_secs(10), || async {
        backend.is_connected().then_some(())
    })
    .await;
    let error = backend.create(new_chat()).await.unwrap_err();
    assert!(matches!(error, BackendError::Interrupted(_)), "{error:?}");
    // Twenty more status calls on the connection after the timeout: a replaced connection
    // would have been made again by now.
    while requests.try_recv().is_ok() {}
    for _ in 0..20 {
        requests.recv().await.expect("status calls go on");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the connection was replaced"
    );
}
