//! The store path through the whole stack: a gateway over `chat-server` processes sharing a
//! real Redis. A Redis outage costs statusCode 1 at once (code 306), no ejection and no move,
//! and service returns within seconds of Redis; an instance frozen while its chat moved wakes
//! to find its saves refused, and a client still using its alias is served from the store's
//! newer record with nothing acknowledged lost.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{eventually, Chat};
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_statuscode_1_at_once_without_moves_and_ends_with_redis() {
    let mut cluster = Cluster::start(&["1", "2"]);
    let gw = cluster.gateway(&[], "").await;
    let c = gw.client();
    let chat = c.request_chat_retrying("Ann").await;
    let r = c.op(&chat, "SendMessage", json!({"text": "before"})).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);

    cluster.redis.stop();
    // More failures than would eject an instance: none is ejected, the chat never moves.
    for i in 0..6 {
        let text = format!("during {i}");
        c.op(&chat, "SendMessage", json!({ "text": text }))
            .await
            .assert_error(503, 1, 306);
        c.messages(&chat, None).await.assert_error(503, 1, 306);
    }
    let router = gw.gateway.router();
    assert!(
        router.instances().iter().all(|i| i.health.is_up()),
        "a store failure ejects no instance"
    );

    let back = Instant::now();
    cluster.redis.restart();
    let r = eventually("the chat works again", PATIENCE, || async {
        let r = c.messages(&chat, None).await;
        (r.status_code() == 0).then_some(r)
    })
    .await;
    println!(
        "the chat worked again {:.2} s after Redis restarted",
        back.elapsed().as_secs_f64()
    );
    assert_eq!(r.alias(), chat.alias, "the chat did not move");
    let r = c.op(&chat, "SendMessage", json!({"text": "after"})).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    // Nothing of the outage was half-applied.
    assert_eq!(c.customer_texts(&chat).await, ["before", "after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_instance_wakes_to_a_moved_chat_and_nothing_acknowledged_is_lost() {
    let mut cluster = Cluster::start(&["1", "2"]);
    let gw = cluster.gateway(&[], "").await;
    let c = gw.client();
    let old = c.request_chat_retrying("Ann").await;
    let r = c.op(&old, "SendMessage", json!({"text": "before"})).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);

    cluster.server(&old.alias).pause();
    // A message sent to the frozen instance queues there; the client is told to retry.
    let r = c.op(&old, "SendMessage", json!({"text": "queued"})).await;
    assert_eq!(r.status_code(), 1, "{:#}", r.body);
    // The chat moves (a poll is safe to run elsewhere) and carries on.
    let moved = eventually("the chat moved", PATIENCE, || async {
        let r = c.messages(&old, None).await;
        (r.status_code() == 0 && r.alias() != old.alias).then(|| Chat {
            alias: r.alias(),
            ..old.clone()
        })
    })
    .await;
    for text in ["after 1", "after 2"] {
        let r = c.op(&moved, "SendMessage", json!({ "text": text })).await;
        assert_eq!(r.status_code(), 0, "{:#}", r.body);
    }

    cluster.server(&old.alias).resume();
    let router = gw.gateway.router();
    eventually("the woken instance is up again", PATIENCE, || async {
        router.get(&old.alias).unwrap().health.is_up().then_some(())
    })
    .await;
    // A client still on the old alias reaches the woken instance, whose copy is stale: its
    // save is refused, the instance reloads the store's newer record, and the message runs
    // there, applied once.
    let r = c
        .op(&old, "SendMessage", json!({"text": "from a stale alias"}))
        .await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    assert_eq!(r.alias(), old.alias, "reloaded where its alias points");
    let now = Chat {
        alias: r.alias(),
        ..old.clone()
    };
    assert_eq!(
        c.customer_texts(&now).await,
        ["before", "after 1", "after 2", "from a stale alias"],
        "nothing acknowledged lost, the queued message never applied"
    );
    assert!(
        cluster.server(&old.alias).log().contains("save refused"),
        "the woken instance's stale save was refused"
    );
}
