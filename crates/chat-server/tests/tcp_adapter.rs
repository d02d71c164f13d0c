//! The gateway's TCP adapter against a real `chat-server` process: every chat operation, the
//! errors a client sees, reconnecting, and many chats at once over the pool.

use std::sync::Arc;
use std::time::Duration;

use backend_api::{
    Action, BackendError, ChatBackend, ChatRef, ChatState, EventType, NewChat, ParticipantType,
    Refresh, Transcript,
};
use backend_tcp::{TcpBackend, TcpConfig};
use testkit::{eventually, free_port, ChatServer};

const PATIENCE: Duration = Duration::from_secs(10);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_chat-server")
}

fn adapter(server: &ChatServer) -> TcpBackend {
    adapter_to(&server.addr.to_string())
}

fn adapter_to(address: &str) -> TcpBackend {
    TcpBackend::new(TcpConfig {
        status_interval: Duration::from_millis(100),
        backoff_max: Duration::from_millis(200),
        ..TcpConfig::new(address)
    })
}

fn new_chat() -> NewChat {
    NewChat {
        tenant_name: "Environment".into(),
        nickname: "Ann".into(),
        email_address: Some("ann@example.com".into()),
        subject: Some("help".into()),
        endpoint: "default".into(),
        user_data: [("key1".to_string(), "value1".to_string())].into(),
        ..NewChat::default()
    }
}

fn refresh(action: Action) -> Refresh {
    Refresh {
        action,
        transcript: Transcript::From(1),
        details: false,
    }
}

/// Creates a chat, retrying while the adapter's first connection is still being made.
async fn create(backend: &TcpBackend) -> backend_api::ChatCreated {
    eventually("a chat created", PATIENCE, || async {
        match backend.create(new_chat()).await {
            Ok(created) => Some(created),
            Err(e) if e.retryable() => None,
            Err(e) => panic!("create failed: {e}"),
        }
    })
    .await
}

#[tokio::test]
async fn every_chat_operation_over_tcp() {
    let server = ChatServer::builder(bin()).start();
    let backend = adapter(&server);
    let created = create(&backend).await;
    let chat = created.chat.clone();
    assert_eq!(created.chat.chat_id.len(), 16);
    assert_eq!(created.messages[0].kind, EventType::ParticipantJoined);
    assert_eq!(created.next_position, created.messages.len() as u64 + 1);

    let sent = backend
        .refresh(
            &chat,
            refresh(Action::SendMessage {
                text: "hello".into(),
                message_type: Some("text".into()),
            }),
        )
        .await
        .unwrap();
    let mine = sent
        .messages
        .iter()
        .find(|e| e.text.as_deref() == Some("hello"))
        .expect("the message is in the transcript");
    assert_eq!(mine.message_type.as_deref(), Some("text"));
    // The simulated agent answers; poll for it as a client would.
    eventually("the agent's answer", PATIENCE, || async {
        let update = backend.refresh(&chat, refresh(Action::Poll)).await.unwrap();
        update
            .messages
            .iter()
            .any(|e| e.from.kind == ParticipantType::Agent && e.index > mine.index)
            .then_some(())
    })
    .await;

    for action in [
        Action::StartTyping { text: None },
        Action::StopTyping {
            text: Some("done".into()),
        },
        Action::UpdateNickname {
            nickname: "Anna".into(),
        },
        Action::PushUrl {
            url: "https://example.com/help".into(),
        },
        Action::CustomNotice {
            text: "custom".into(),
        },
        Action::UpdateUserData {
            data: [("key2".to_string(), "value2".to_string())].into(),
            text: None,
        },
    ] {
        backend.refresh(&chat, refresh(action)).await.unwrap();
    }
    let details = backend
        .refresh(
            &chat,
            Refresh {
                action: Action::Poll,
                transcript: Transcript::None,
                details: true,
            },
        )
        .await
        .unwrap();
    assert!(
        details.messages.is_empty(),
        "transcriptPosition 0 returns no events"
    );
    let details = details.details.expect("details were asked for");
    assert_eq!(details.state, ChatState::Chatting);
    assert!(details
        .participants
        .iter()
        .any(|p| p.kind == ParticipantType::Client && &*p.nickname == "Anna"));
    assert_eq!(
        details.user_data.get("key1").map(String::as_str),
        Some("value1")
    );
    assert_eq!(
        details.user_data.get("key2").map(String::as_str),
        Some("value2")
    );

    let all = backend.refresh(&chat, refresh(Action::Poll)).await.unwrap();
    let indexes: Vec<u64> = all.messages.iter().map(|e| e.index).collect();
    assert_eq!(indexes, (1..all.next_position).collect::<Vec<_>>());
    let kinds: Vec<EventType> = all.messages.iter().map(|e| e.kind).collect();
    for kind in [
        EventType::TypingStarted,
        EventType::TypingStopped,
        EventType::NicknameUpdated,
        EventType::PushUrl,
        EventType::CustomNotice,
    ] {
        assert!(kinds.contains(&kind), "{kind:?} in {kinds:?}");
    }
    let tail = backend
        .refresh(
            &chat,
            Refresh {
                action: Action::Poll,
                transcript: Transcript::From(3),
                details: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(tail.messages.first().map(|e| e.index), Some(3));

    // Wrong key and unknown chat are final errors.
    let wrong = ChatRef {
        secure_key: "0000000000000000".into(),
        ..chat.clone()
    };
    let error = backend
        .refresh(&wrong, refresh(Action::Poll))
        .await
        .unwrap_err();
    assert_eq!(error, BackendError::BadCredentials);
    assert!(!error.retryable());
    let unknown = ChatRef {
        chat_id: "0000000000000000".into(),
        ..chat.clone()
    };
    let error = backend
        .refresh(&unknown, refresh(Action::Poll))
        .await
        .unwrap_err();
    assert_eq!(error, BackendError::UnknownChat);

    // Complete (logout) ends it; writes after that are refused, reads still work.
    let done = backend
        .refresh(&chat, refresh(Action::Complete))
        .await
        .unwrap();
    assert!(done.chat_ended);
    assert_eq!(
        done.messages.last().map(|e| e.kind),
        Some(EventType::ParticipantLeft)
    );
    let error = backend
        .refresh(
            &chat,
            refresh(Action::SendMessage {
                text: "too late".into(),
                message_type: None,
            }),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, BackendError::ChatEnded { next_position } if next_position == done.next_position)
    );
    assert!(!error.retryable());
    assert!(
        backend
            .refresh(&chat, refresh(Action::Poll))
            .await
            .unwrap()
            .chat_ended
    );

    // Without a store the server cannot restore.
    assert_eq!(
        backend.restore(&chat).await,
        Err(BackendError::Unsupported("restore"))
    );
    assert_eq!(backend.server_alias().as_deref(), Some("117"));
}

#[tokio::test]
async fn load_follows_the_server_and_the_session_limit_is_retryable() {
    let server = ChatServer::builder(bin())
        .arg("--session-limit", "2")
        .start();
    let backend = adapter(&server);
    let first = create(&backend).await;
    create(&backend).await;
    let error = backend.create(new_chat()).await.unwrap_err();
    assert!(matches!(error, BackendError::Overloaded(_)), "{error:?}");
    assert!(error.retryable() && error.never_arrived());
    eventually("load shows the limit", PATIENCE, || async {
        let load = backend.load();
        (load.active == 2 && load.limit == 2 && !load.accepting).then_some(())
    })
    .await;
    backend
        .refresh(&first.chat, refresh(Action::Complete))
        .await
        .unwrap();
    eventually("load shows room again", PATIENCE, || async {
        backend.load().accepting.then_some(())
    })
    .await;
    create(&backend).await;
}

#[tokio::test]
async fn many_chats_at_once_over_the_pool() {
    let server = ChatServer::builder(bin()).start();
    let backend = Arc::new(adapter(&server));
    create(&backend).await;
    let mut tasks = Vec::new();
    for n in 0..40 {
        let backend = Arc::clone(&backend);
        tasks.push(tokio::spawn(async move {
            let created = backend.create(new_chat()).await.unwrap();
            let text = format!("message {n}");
            let update = backend
                .refresh(
                    &created.chat,
                    refresh(Action::SendMessage {
                        text: text.clone(),
                        message_type: None,
                    }),
                )
                .await
                .unwrap();
            assert!(update
                .messages
                .iter()
                .any(|e| e.text.as_deref() == Some(&*text)));
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn unreachable_then_reconnects_then_lost() {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let backend = adapter_to(&addr.to_string());
    let error = backend.create(new_chat()).await.unwrap_err();
    assert!(matches!(error, BackendError::Unreachable(_)), "{error:?}");
    assert!(error.retryable() && error.never_arrived());
    assert!(!backend.load().accepting);

    // The server comes up where the adapter expects it: the pool reconnects by itself.
    let mut server = ChatServer::builder(bin()).listen(addr).start();
    let created = create(&backend).await;
    eventually("accepting once connected", PATIENCE, || async {
        backend.load().accepting.then_some(())
    })
    .await;

    server.kill9();
    let error = eventually("the loss noticed", PATIENCE, || async {
        backend
            .refresh(&created.chat, refresh(Action::Poll))
            .await
            .err()
    })
    .await;
    assert!(error.retryable(), "{error:?}");
    eventually("not accepting once disconnected", PATIENCE, || async {
        (!backend.load().accepting).then_some(())
    })
    .await;
}

/// A reply over the frame bound is that request's error; the connection every chat of this
/// gateway shares stays open, and other chats' requests on it, at the same time, succeed.
#[tokio::test]
async fn a_reply_too_large_fails_only_its_request_and_the_connection_stays() {
    let server = ChatServer::builder(bin())
        .arg("--max-message-bytes", "65536")
        .arg("--agent-join-delay-ms", "0")
        .arg("--agent-reply-delay-ms", "0")
        .start();
    // One connection: every chat below shares it.
    let backend = Arc::new(TcpBackend::new(TcpConfig {
        connections: 1,
        status_interval: Duration::from_millis(100),
        backoff_max: Duration::from_millis(200),
        ..TcpConfig::new(server.addr.to_string())
    }));
    let big = create(&backend).await.chat;
    let mut bystanders = Vec::new();
    for _ in 0..5 {
        bystanders.push(create(&backend).await.chat);
    }
    // Control characters are six bytes each in JSON: a nickname and user data at the limit
    // make a GetChat reply (the nickname's event, the details) of about 1.5 MB.
    let wide = "\u{1}".repeat(65536);
    let renamed = backend
        .refresh(
            &big,
            Refresh {
                action: Action::UpdateNickname { nickname: wide },
                transcript: Transcript::None,
                details: false,
            },
        )
        .await
        .unwrap();
    let renamed_at = renamed.next_position - 1;
    backend
        .refresh(
            &big,
            refresh(Action::UpdateUserData {
                data: [("k".to_owned(), "\u{1}".repeat(65000))].into(),
                text: None,
            }),
        )
        .await
        .unwrap();
    let get_chat = Refresh {
        action: Action::Poll,
        transcript: Transcript::From(renamed_at),
        details: true,
    };
    for round in 0..3 {
        let others = bystanders.iter().map(|chat| {
            let backend = Arc::clone(&backend);
            let chat = chat.clone();
            tokio::spawn(async move {
                backend
                    .refresh(
                        &chat,
                        refresh(Action::SendMessage {
                            text: format!("round {round}"),
                            message_type: None,
                        }),
                    )
                    .await
            })
        });
        let others: Vec<_> = others.collect();
        match backend.refresh(&big, get_chat.clone()).await {
            Err(BackendError::TooLarge(why)) => assert!(why.contains("frame"), "{why}"),
            Err(other) => panic!("expected TooLarge, got {other:?}"),
            Ok(update) => panic!(
                "expected TooLarge, got {} events from {:?}",
                update.messages.len(),
                update.messages.first().map(|e| e.index)
            ),
        }
        for other in others {
            let update = other.await.unwrap().expect("a bystander's request failed");
            assert!(update
                .messages
                .iter()
                .any(|e| e.text.as_deref() == Some(&*format!("round {round}"))));
        }
    }
    // A request over the frame bound fails alone too, in the adapter, before it is written.
    let huge = backend
        .refresh(
            &bystanders[0],
            refresh(Action::SendMessage {
                text: "h".repeat(2 << 20),
                message_type: None,
            }),
        )
        .await;
    assert!(
        matches!(huge, Err(BackendError::TooLarge(_))),
        "{:?}",
        huge.err()
    );
    backend
        .refresh(&bystanders[1], refresh(Action::Poll))
        .await
        .expect("the connection still serves");
    // The same chat is still served: without details its transcript reads, page by page.
    let mut position = 1;
    loop {
        let page = backend
            .refresh(
                &big,
                Refresh {
                    action: Action::Poll,
                    transcript: Transcript::From(position),
                    details: false,
                },
            )
            .await
            .unwrap();
        if page.messages.is_empty() {
            break;
        }
        position = page.next_position;
    }
    assert!(position > renamed_at);
    let log = server.log();
    assert!(
        !log.contains("closing connection"),
        "the shared connection was closed:\n{log}"
    );
    assert!(log.contains("replyTooLarge"), "{log}");
}
