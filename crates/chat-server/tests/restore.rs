//! Restoration across real processes: a chat server saving to a private Redis is killed with
//! SIGKILL mid-chat, and a second instance restores the chat through the TCP adapter's restore
//! call, with the whole transcript and the same ids.

mod support;

use std::time::Duration;

use backend_api::{Action, BackendError, ChatBackend, ChatRef, NewChat, Refresh, Transcript};
use backend_tcp::{TcpBackend, TcpConfig};
use support::{connected, poll, say, PATIENCE};
use testkit::{eventually, ChatServer, Redis};

fn adapter(server: &ChatServer) -> TcpBackend {
    TcpBackend::new(TcpConfig {
        status_interval: Duration::from_millis(100),
        backoff_max: Duration::from_millis(200),
        ..TcpConfig::new(server.addr.to_string())
    })
}

#[tokio::test]
async fn a_second_instance_restores_a_chat_after_kill_9() {
    let redis = Redis::start();
    let bin = env!("CARGO_BIN_EXE_chat-server");
    let mut first = ChatServer::builder(bin)
        .alias("117")
        .store(&redis.url())
        .start();
    let second = ChatServer::builder(bin)
        .alias("118")
        .store(&redis.url())
        .start();
    let to_first = adapter(&first);
    let to_second = adapter(&second);
    connected(&to_first).await;
    connected(&to_second).await;

    let created = to_first
        .create(NewChat {
            tenant_name: "Environment".into(),
            nickname: "Ann".into(),
            endpoint: "default".into(),
            user_data: [("order".to_string(), "42".to_string())].into(),
            ..NewChat::default()
        })
        .await
        .unwrap();
    let chat = created.chat.clone();
    to_first
        .refresh(&chat, say("first question"))
        .await
        .unwrap();
    // Wait for the agent's answer so the transcript has every kind of party in it.
    let before = eventually("the agent's answer", PATIENCE, || async {
        let update = to_first.refresh(&chat, poll()).await.unwrap();
        update
            .messages
            .iter()
            .any(|e| e.text.as_deref() != Some("first question") && e.index > 4)
            .then_some(update)
    })
    .await;

    // The second instance does not have the chat until it restores it: it says the chat is
    // elsewhere (the store has it), so a caller restores it rather than giving up.
    assert!(matches!(
        to_second.refresh(&chat, poll()).await,
        Err(BackendError::Moved(_))
    ));

    first.kill9();
    let error = to_first.refresh(&chat, poll()).await.unwrap_err();
    assert!(
        error.retryable(),
        "a dead instance is statusCode 1: {error:?}"
    );

    // Restoring needs the chat's credentials.
    let forged = ChatRef {
        secure_key: "0000000000000000".into(),
        ..chat.clone()
    };
    assert_eq!(
        to_second.restore(&forged).await,
        Err(BackendError::BadCredentials)
    );
    let restored = to_second.restore_chat(&chat).await.unwrap();
    assert_eq!(
        restored.alias, "118",
        "the chat's alias is now the second instance's"
    );
    assert_eq!(restored.next_position, before.next_position);
    assert!(!restored.chat_ended);
    // Restore is idempotent, and the trait's restore is the same call.
    to_second.restore(&chat).await.unwrap();
    assert_eq!(to_second.server_alias().as_deref(), Some("118"));

    let after = to_second.refresh(&chat, poll()).await.unwrap();
    assert_eq!(
        &after.messages[..before.messages.len()],
        &before.messages[..],
        "the whole transcript, same indexes, same events"
    );
    assert!(!after.chat_ended);

    // Carrying on works with the same ids, and the transcript keeps growing without gaps.
    let carried = to_second
        .refresh(&chat, say("second question"))
        .await
        .unwrap();
    let indexes: Vec<u64> = carried.messages.iter().map(|e| e.index).collect();
    assert_eq!(indexes, (1..carried.next_position).collect::<Vec<_>>());
    assert!(carried
        .messages
        .iter()
        .any(|e| e.text.as_deref() == Some("second question")));
    let details = to_second
        .refresh(
            &chat,
            Refresh {
                action: Action::Poll,
                transcript: Transcript::None,
                details: true,
            },
        )
        .await
        .unwrap()
        .details
        .unwrap();
    assert_eq!(
        details.user_data.get("order").map(String::as_str),
        Some("42")
    );
    eventually("the second instance counts the chat", PATIENCE, || async {
        (to_second.load().active == 1).then_some(())
    })
    .await;
    let done = to_second
        .refresh(
            &chat,
            Refresh {
                action: Action::Complete,
                transcript: Transcript::None,
                details: false,
            },
        )
        .await
        .unwrap();
    assert!(done.chat_ended);
}

#[tokio::test]
async fn restore_of_an_unknown_chat_is_final() {
    let redis = Redis::start();
    let server = ChatServer::builder(env!("CARGO_BIN_EXE_chat-server"))
        .store(&redis.url())
        .start();
    let backend = adapter(&server);
    connected(&backend).await;
    let unknown = ChatRef {
        chat_id: "0000000000000000".into(),
        user_id: "0000000000000000".into(),
        secure_key: "0000000000000000".into(),
    };
    let error = backend.restore(&unknown).await.unwrap_err();
    assert_eq!(error, BackendError::UnknownChat);
    assert!(!error.retryable());
}

#[tokio::test]
async fn a_server_whose_store_is_down_fails_retryably() {
    let redis = Redis::start();
    let server = ChatServer::builder(env!("CARGO_BIN_EXE_chat-server"))
        .store(&redis.url())
        .arg("--store-timeout-ms", "500")
        .start();
    let backend = adapter(&server);
    connected(&backend).await;
    let chat = NewChat {
        tenant_name: "Environment".into(),
        nickname: "Ann".into(),
        endpoint: "default".into(),
        ..NewChat::default()
    };
    backend.create(chat.clone()).await.unwrap();
    drop(redis);
    let error = eventually("the store failure", PATIENCE, || async {
        backend.create(chat.clone()).await.err()
    })
    .await;
    assert!(error.retryable(), "{error:?}");
    assert!(!error.never_arrived());
    // The chat that could not be saved was not left behind.
    let status = backend.status().await.unwrap();
    assert_eq!(status.load.active, 1);
}
