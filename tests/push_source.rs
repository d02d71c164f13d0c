//! Events at the source through the gateway: `operation::watch` (what the push channels hold
//! open) over the embedded mock and over real `chat-server` processes sharing Redis. The
//! watch answers when the event happens (the adapter's own watch runs, not the polling
//! default: the metered wrapper forwards it), and a watch held while the chat's server is
//! killed with -9 follows the chat to another server with nothing missing or doubled.
//! Figures are printed, not asserted.

mod common;

use std::time::{Duration, Instant};

use axum::extract::FromRef;
use common::cluster::Cluster;
use common::{gateway, Chat, Client};
use serde_json::json;
use webapi_gateway::operation::{self, Chats, ClientCredentials};

const PATIENCE: Duration = Duration::from_secs(30);
const LONG_WAIT: Duration = Duration::from_secs(30);

fn credentials(chat: &Chat) -> ClientCredentials {
    ClientCredentials {
        user_id: chat.user_id.clone(),
        secure_key: chat.secure_key.clone(),
        alias: chat.alias.clone(),
        tenant_name: chat.tenant.clone(),
    }
}

async fn next_position(c: &Client, chat: &Chat) -> u64 {
    let r = c.messages(chat, Some(1)).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    r.body["nextPosition"].as_u64().unwrap()
}

/// A customer's message, sent again on statusCode 1 (as widgets do); the chat's alias
/// follows the reply.
async fn send(c: &Client, chat: &mut Chat, text: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = c.op(chat, "SendMessage", json!({ "text": text })).await;
        match r.status_code() {
            0 => {
                chat.alias = r.alias();
                return;
            }
            1 if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => panic!("{:#}", r.body),
        }
    }
}

#[tokio::test]
async fn a_watch_through_the_gateway_on_the_mock_wakes_on_the_event_without_polling() {
    let gw = gateway().start().await;
    let c = gw.client();
    let mut chat = c.request_chat_retrying("Ann").await;
    let from = next_position(&c, &chat).await;
    let chats = Chats::from_ref(&gw.gateway);
    let watch = {
        let (chats, chat_id, creds) = (chats.clone(), chat.chat_id.clone(), credentials(&chat));
        tokio::spawn(async move {
            let reply = operation::watch(&chats, &chat_id, creds, from, LONG_WAIT).await;
            (reply, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reads_before = gw.backend_requests();
    let sent_at = Instant::now();
    send(&c, &mut chat, "hello").await;
    let (reply, answered_at) = tokio::time::timeout(PATIENCE, watch)
        .await
        .unwrap()
        .unwrap();
    let reply = reply.unwrap();
    assert_eq!(reply.update.messages[0].index, from);
    assert_eq!(reply.update.messages[0].text.as_deref(), Some("hello"));
    // The message, and the watch's one read after it woke: no polling in between.
    assert_eq!(gw.backend_requests() - reads_before, 2);
    println!(
        "mock through the gateway: watch answered {:?} after the message",
        answered_at - sent_at
    );
}

#[tokio::test]
async fn a_watch_over_tcp_follows_a_chat_killed_9_to_another_server_without_gap() {
    let mut cluster = Cluster::start(&["1", "2"]);
    let gw = cluster.gateway(&[], "").await;
    let c = gw.client();
    let mut chat = c.request_chat_retrying("Ann").await;
    send(&c, &mut chat, "before").await;
    // The agent answers at once (the fixture's delay is 0): read past its answer.
    let seen = common::eventually("the agent's answer", PATIENCE, || async {
        let r = c.messages(&chat, Some(1)).await;
        let last = r.messages().last()?.clone();
        (last["from"]["type"] == "Agent" && last["text"] != "before").then_some(r)
    })
    .await;
    let from = seen.body["nextPosition"].as_u64().unwrap();
    let holder = chat.alias.clone();

    // 1. Held on a live server: answered by the event.
    let chats = Chats::from_ref(&gw.gateway);
    let spawn_watch = |chat: &Chat| {
        let (chats, chat_id, creds) = (chats.clone(), chat.chat_id.clone(), credentials(chat));
        tokio::spawn(async move {
            let reply = operation::watch(&chats, &chat_id, creds, from, LONG_WAIT).await;
            (reply, Instant::now())
        })
    };
    let watch = spawn_watch(&chat);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!watch.is_finished(), "nothing new, yet the watch answered");

    // 2. The server holding the chat dies; the held watch moves with the chat (restore on
    //    the other server, watch there from the same position), and the next message is
    //    the first event it answers.
    let killed_at = Instant::now();
    cluster.server(&holder).kill9();
    send(&c, &mut chat, "after").await;
    assert_ne!(chat.alias, holder, "the chat did not move");
    let (reply, answered_at) = tokio::time::timeout(PATIENCE, watch)
        .await
        .unwrap()
        .unwrap();
    let reply = match reply {
        Ok(reply) => reply,
        // The watch failed before the chat was restored elsewhere: a client watches again
        // from the same position, as the push channels do.
        Err(error) => {
            println!("the held watch failed at the kill ({error:?}); watching again");
            let (reply, _) = spawn_watch(&chat).await.unwrap();
            reply.unwrap()
        }
    };
    println!(
        "kill -9 of {holder}: the held watch answered {:?} after the kill, on {}",
        answered_at - killed_at,
        reply.alias
    );
    let indexes: Vec<u64> = reply.update.messages.iter().map(|e| e.index).collect();
    assert_eq!(
        indexes.first(),
        Some(&from),
        "a gap or a repeat at the failover"
    );
    assert_eq!(
        indexes,
        (from..from + indexes.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(reply.update.messages[0].text.as_deref(), Some("after"));
    assert_eq!(&*reply.alias, chat.alias.as_str());
    assert_eq!(c.customer_texts(&chat).await, ["before", "after"]);
}
