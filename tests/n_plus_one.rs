//! N+1 alias routing over real `chat-server` processes sharing a real Redis: placement over
//! instances, failover when one dies, drain and maint, hot reload, and two gateway processes
//! serving the same chats.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{self, Cluster, GatewayProcess, Scratch, FAST};
use common::{eventually, gateway, Chat, Client};
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_chats_spread_evenly_over_three_instances() {
    let cluster = Cluster::start(&["1", "2", "3"]);
    let gw = cluster.gateway(&[], "").await;
    let c = gw.client();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 0..300 {
        let chat = c.request_chat_retrying(&format!("n{i}")).await;
        *counts.entry(chat.alias).or_default() += 1;
    }
    for alias in ["1", "2", "3"] {
        let n = counts.get(alias).copied().unwrap_or(0);
        assert!((80..=120).contains(&n), "{alias} got {n}: {counts:?}");
    }
}

/// What one chatting customer saw: the texts acknowledged with statusCode 0.
struct Chatter {
    chat: Chat,
    first_alias: String,
    acked: Vec<String>,
}

/// Sends messages until `messages` are acknowledged. Each attempt has its own text, so a
/// statusCode 1 attempt that did arrive shows as an extra text, never as a doubled one.
async fn chatter(
    c: Client,
    mut chat: Chat,
    n: usize,
    messages: usize,
    acked_total: Arc<AtomicUsize>,
) -> Chatter {
    let first_alias = chat.alias.clone();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut attempt = 0;
    while acked.len() < messages {
        assert!(Instant::now() < deadline, "chat {n} made no progress");
        attempt += 1;
        let text = format!("c{n}-m{}-a{attempt}", acked.len());
        let r = c.op(&chat, "SendMessage", json!({ "text": text })).await;
        match r.status_code() {
            0 => {
                chat.alias = r.alias();
                acked.push(text);
                acked_total.fetch_add(1, Ordering::Relaxed);
            }
            1 => tokio::time::sleep(Duration::from_millis(20)).await,
            _ => panic!("chat {n}: {:#}", r.body),
        }
        // A poll between messages, as widgets do; its alias is the newest too.
        let r = c.messages(&chat, None).await;
        if r.status_code() == 0 {
            chat.alias = r.alias();
        }
    }
    Chatter {
        chat,
        first_alias,
        acked,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_survive_a_kill_9_and_the_instance_comes_back() {
    let mut cluster = Cluster::start(&["1", "2", "3"]);
    let gw = cluster.gateway(&[], "").await;
    let c = gw.client();
    let mut chats = Vec::new();
    for i in 0..50 {
        chats.push(c.request_chat_retrying(&format!("n{i}")).await);
    }
    let victim = chats[0].alias.clone();
    let on_victim = chats.iter().filter(|ch| ch.alias == victim).count();
    assert!(on_victim > 0);
    let acked = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = chats
        .into_iter()
        .enumerate()
        .map(|(n, chat)| tokio::spawn(chatter(c.clone(), chat, n, 10, Arc::clone(&acked))))
        .collect();
    // Kill it in the middle of the conversation.
    eventually("chats under way", PATIENCE, || async {
        (acked.load(Ordering::Relaxed) >= 150).then_some(())
    })
    .await;
    cluster.server(&victim).kill9();

    let mut moved = 0;
    for task in tasks {
        let done = task.await.unwrap();
        let texts = c.customer_texts(&done.chat).await;
        for text in &done.acked {
            let n = texts.iter().filter(|t| *t == text).count();
            assert_eq!(n, 1, "{text} in the transcript {n} times: {texts:?}");
        }
        if done.first_alias == victim {
            assert_ne!(done.chat.alias, victim, "the reply carries the new alias");
            moved += 1;
        }
    }
    assert_eq!(moved, on_victim);

    // Back: it receives new chats again.
    cluster.restart(&victim);
    eventually("a new chat on the restarted instance", PATIENCE, || async {
        let chat = c.request_chat_retrying("again").await;
        (chat.alias == victim).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_keeps_existing_chats_and_maint_moves_them() {
    let cluster = Cluster::start(&["1", "2", "3"]);
    let gw = cluster.gateway(&[], "").await;
    let admin = cluster::serve_admin(Arc::clone(&gw.gateway)).await;
    let c = gw.client();

    let (status, _) = cluster::list_instances(&admin, None).await;
    assert_eq!(status, 401, "the token is required");
    let (status, _) = cluster::list_instances(&admin, Some("wrong-token-0123456789")).await;
    assert_eq!(status, 401);

    let mut chats = Vec::new();
    for i in 0..30 {
        chats.push(c.request_chat_retrying(&format!("n{i}")).await);
    }
    let drained = chats[0].alias.clone();
    let (status, body) = cluster::set_state(&admin, &drained, "drain").await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["state"], "drain");
    assert_eq!(body["takesNewChats"], false);

    for i in 0..30 {
        let chat = c.request_chat_retrying(&format!("d{i}")).await;
        assert_ne!(
            chat.alias, drained,
            "a draining instance takes no new chats"
        );
    }
    let mut mine: Vec<Chat> = chats.into_iter().filter(|ch| ch.alias == drained).collect();
    for chat in &mine {
        let r = c
            .op(chat, "SendMessage", json!({"text": "still here"}))
            .await;
        assert_eq!((r.status_code(), r.alias()), (0, drained.clone()));
    }

    let (status, body) = cluster::set_state(&admin, &drained, "maint").await;
    assert_eq!((status, &body["state"]), (200, &json!("maint")));
    for chat in &mut mine {
        let r = c.op(chat, "SendMessage", json!({"text": "moved"})).await;
        assert_eq!(r.status_code(), 0, "{:#}", r.body);
        assert_ne!(r.alias(), drained, "maint moves the chat");
        chat.alias = r.alias();
        let texts = c.customer_texts(chat).await;
        assert_eq!(texts, ["still here", "moved"]);
    }

    let (status, list) = cluster::list_instances(&admin, Some(cluster::ADMIN_TOKEN)).await;
    assert_eq!(status, 200);
    let entry = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["alias"] == drained.as_str())
        .unwrap();
    assert_eq!(entry["state"], "maint");
    assert_eq!(entry["health"], "healthy");
    assert_eq!(entry["kind"], "tcp");
    assert!(entry["activeChats"].as_u64().is_some());
    let (status, _) = cluster::set_state(&admin, "nope", "ready").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_fourth_instance_under_load() {
    let mut cluster = Cluster::start(&["1", "2", "3"]);
    cluster.add("4");
    let three = cluster.instances(&["1", "2", "3"]);
    let builder = gateway().aliases(&[]).toml(&three).toml(FAST);
    let text = builder.toml_text();
    let scratch = Scratch::new("gw-reload");
    let path = scratch.0.join("gateway.toml");
    std::fs::write(&path, &text).unwrap();
    let gw = builder.start().await;
    cluster::all_accepting(&gw).await;

    // A bad file is refused with the key named, and the running table stays.
    let bad = scratch.0.join("bad.toml");
    std::fs::write(
        &bad,
        text.replace("alias = \"2\"", "alias = \"2\"\nweight = 0"),
    )
    .unwrap();
    let why = webapi_gateway::reload::reload_from(&gw.gateway, &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(why.contains("chat.instances[1].weight"), "{why}");
    assert_eq!(gw.gateway.router().instances().len(), 3);

    // A chat on "1", which the second reload removes.
    let c = gw.client();
    let mut on_1 = eventually("a chat on 1", PATIENCE, || async {
        let chat = c.request_chat_retrying("one").await;
        (chat.alias == "1").then_some(chat)
    })
    .await;
    let r = c.op(&on_1, "SendMessage", json!({"text": "before"})).await;
    assert_eq!(r.status_code(), 0);

    tokio::spawn(webapi_gateway::reload::watch(
        Arc::clone(&gw.gateway),
        path.clone(),
        Duration::from_millis(50),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let seen_4 = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let c = gw.client();
            let (stop, failures, seen_4) = (stop.clone(), failures.clone(), seen_4.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let nickname = format!("w{w}-{n}");
                    let r = c
                        .post(
                            "/api/v2/chats",
                            json!({"tenantName": "Environment", "nickname": nickname}),
                        )
                        .await;
                    if r.status_code() != 0 {
                        failures.lock().unwrap().push(r.body);
                        continue;
                    }
                    let chat = Chat::created(&r);
                    if chat.alias == "4" {
                        seen_4.store(true, Ordering::Relaxed);
                    }
                    let r = c.op(&chat, "SendMessage", json!({"text": "hi"})).await;
                    if r.status_code() != 0 {
                        failures.lock().unwrap().push(r.body);
                    }
                }
            })
        })
        .collect();

    cluster::replace_file(&path, &text.replace(&three, &cluster.instances(&[])));
    eventually("the reload", PATIENCE, || async {
        (gw.gateway.router().instances().len() == 4).then_some(())
    })
    .await;
    eventually("new chats on the added instance", PATIENCE, || async {
        seen_4.load(Ordering::Relaxed).then_some(())
    })
    .await;
    assert_eq!(gw.gateway.router().instances().len(), 4);

    // Removing "1", still under load: its chats move on their next request.
    cluster::replace_file(
        &path,
        &text.replace(&three, &cluster.instances(&["2", "3", "4"])),
    );
    eventually("the removal", PATIENCE, || async {
        gw.gateway.router().get("1").is_none().then_some(())
    })
    .await;
    let r = c.op(&on_1, "SendMessage", json!({"text": "after"})).await;
    assert_eq!(r.status_code(), 0, "{:#}", r.body);
    on_1.alias = r.alias();
    assert_ne!(on_1.alias, "1");
    assert_eq!(c.customer_texts(&on_1).await, ["before", "after"]);

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
}

/// Two gateway processes with the same secret in front of the same chat servers: a chat
/// created on one continues on the other, and on either after it restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_serve_the_same_chats() {
    let cluster = Cluster::start(&["1", "2"]);
    let scratch = Scratch::new("gw-pair");
    let config = scratch.0.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[credentials]\nsecret = \"{}\"\n\
             [[tenants]]\nname = \"Environment\"\n{}{FAST}",
            common::SECRET,
            cluster.instances(&[]),
        ),
    )
    .unwrap();
    let start = |name: &str| {
        let dir = scratch.0.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        GatewayProcess::start(&config, &dir)
    };
    let client = |p: &GatewayProcess| Client {
        base: p.base.clone(),
        http: reqwest::Client::new(),
    };
    let mut a = start("a");
    let mut b = start("b");
    let chat = client(&a).request_chat_retrying("Ann").await;

    // The client keeps the newest alias, as the Web API asks.
    let send = |c: Client, chat: Chat, text: &'static str| async move {
        eventually("a message accepted", PATIENCE, || async {
            let r = c.op(&chat, "SendMessage", json!({ "text": text })).await;
            match r.status_code() {
                0 => Some(Chat {
                    alias: r.alias(),
                    ..chat.clone()
                }),
                1 => None,
                _ => panic!("{:#}", r.body),
            }
        })
        .await
    };
    let chat = send(client(&b), chat, "via b").await;
    assert_eq!(client(&a).customer_texts(&chat).await, ["via b"]);

    a.kill9();
    let a = start("a2");
    let chat = send(client(&a), chat, "via restarted a").await;
    b.kill9();
    let b = start("b2");
    let chat = send(client(&b), chat, "via restarted b").await;
    assert_eq!(
        client(&a).customer_texts(&chat).await,
        ["via b", "via restarted a", "via restarted b"]
    );
}

/// Admin state from the config file, over embedded mock instances (no processes): a reload
/// applies the file's state only where the file changed it; a mock instance's chats cannot
/// move, so maint leaves them with statusCode 1 (code 600); the admin routes need a token.
#[tokio::test]
async fn reload_applies_changed_states_and_mock_chats_cannot_move() {
    let builder = gateway().toml("[admin]\ntoken = \"admin-token-0123456789\"\n");
    let text = builder.toml_text();
    let scratch = Scratch::new("gw-states");
    let path = scratch.0.join("gateway.toml");
    let gw = builder.start().await;
    let c = gw.client();
    let admin = cluster::serve_admin(Arc::clone(&gw.gateway)).await;
    let state = |alias: &str| gw.gateway.router().get(alias).unwrap().state();
    use webapi_gateway::config::AdminState;

    // Set at runtime; a reload of a file that did not change the state keeps it.
    let (status, _) = cluster::set_state(&admin, "117", "drain").await;
    assert_eq!(status, 200);
    std::fs::write(
        &path,
        text.replace("kind = \"mock\"\n[[", "kind = \"mock\"\nweight = 2\n[["),
    )
    .unwrap();
    webapi_gateway::reload::reload_from(&gw.gateway, &path)
        .await
        .unwrap();
    assert_eq!(state("117"), AdminState::Drain);
    assert_eq!(gw.gateway.router().get("117").unwrap().weight, 2);

    // The file changes 118's state: applied.
    std::fs::write(
        &path,
        text.replace("alias = \"118\"", "alias = \"118\"\nstate = \"drain\""),
    )
    .unwrap();
    webapi_gateway::reload::reload_from(&gw.gateway, &path)
        .await
        .unwrap();
    assert_eq!(
        (state("117"), state("118")),
        (AdminState::Drain, AdminState::Drain)
    );
    let r = c
        .post(
            "/api/v2/chats",
            json!({"tenantName": "Environment", "nickname": "n"}),
        )
        .await;
    r.assert_error(503, 1, 300);

    // A mock chat whose instance goes to maint: nowhere to go while the other instance
    // drains (601), and it cannot be restored once the other is ready (600).
    let (status, _) = cluster::set_state(&admin, "118", "ready").await;
    assert_eq!(status, 200);
    let chat = c.request_chat("Ann").await;
    assert_eq!(chat.alias, "118");
    cluster::set_state(&admin, "118", "maint").await;
    c.op(&chat, "SendMessage", json!({"text": "hi"}))
        .await
        .assert_error(503, 1, 601);
    cluster::set_state(&admin, "117", "ready").await;
    c.op(&chat, "SendMessage", json!({"text": "hi"}))
        .await
        .assert_error(503, 1, 600);
    cluster::set_state(&admin, "118", "ready").await;
    let r = c.op(&chat, "SendMessage", json!({"text": "hi"})).await;
    assert_eq!((r.status_code(), r.alias()), (0, "118".to_string()));

    // A gateway without admin.token refuses every admin request.
    let plain = gateway().start().await;
    let admin = cluster::serve_admin(Arc::clone(&plain.gateway)).await;
    let (status, _) = cluster::list_instances(&admin, Some(cluster::ADMIN_TOKEN)).await;
    assert_eq!(status, 403);
}

/// The binary reloads its instance list on SIGHUP (and survives the signal).
#[tokio::test]
async fn the_binary_reloads_on_sighup() {
    let scratch = Scratch::new("gw-hup");
    let config = scratch.0.join("gateway.toml");
    let base = "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
                [[tenants]]\nname = \"Environment\"\n";
    std::fs::write(
        &config,
        format!("{base}[[chat.instances]]\nalias = \"117\"\nkind = \"mock\"\n"),
    )
    .unwrap();
    let mut gw = GatewayProcess::start(&config, &scratch.0);
    let c = Client {
        base: gw.base.clone(),
        http: reqwest::Client::new(),
    };
    assert_eq!(c.request_chat("Ann").await.alias, "117");
    cluster::replace_file(
        &config,
        &format!(
            "{base}[[chat.instances]]\nalias = \"117\"\nkind = \"mock\"\nstate = \"drain\"\n\
             [[chat.instances]]\nalias = \"118\"\nkind = \"mock\"\n"
        ),
    );
    gw.signal("HUP");
    eventually("new chats on the added instance", PATIENCE, || async {
        (c.request_chat_retrying("Bob").await.alias == "118").then_some(())
    })
    .await;
    assert!(gw.is_running());
}

/// The failover rules, request by request: a message that may have arrived is never sent
/// again (statusCode 1); a poll is moved at once; anything refused at connect is moved at
/// once, and the refusing instance is not asked again.
#[tokio::test]
async fn what_is_moved_after_a_failure_and_what_is_not() {
    use backend_api::BackendError;
    use webapi_gateway::config::AdminState;
    let (a, b) = (
        testkit::ScriptedBackend::new(),
        testkit::ScriptedBackend::new(),
    );
    let gw = gateway()
        .aliases(&["A", "B"])
        // No active checks during the test: only requests change health.
        .toml("[chat.health]\neject_after = 100\ninterval_ms = 3600000")
        .start_over(vec![
            ("A".into(), a.clone() as Arc<dyn backend_api::ChatBackend>),
            ("B".into(), b.clone() as Arc<dyn backend_api::ChatBackend>),
        ])
        .await;
    let c = gw.client();
    let router = gw.gateway.router();
    router.get("B").unwrap().set_state(AdminState::Drain);
    let chat = c.request_chat("Ann").await;
    assert_eq!(chat.alias, "A");
    router.get("B").unwrap().set_state(AdminState::Ready);
    let count = |s: &testkit::ScriptedBackend| (s.refreshes(), s.restores());

    // May have arrived: a message is not sent again; the client retries.
    a.refresh
        .always(Some(Err(BackendError::Interrupted("lost".into()))));
    c.op(&chat, "SendMessage", json!({"text": "once"}))
        .await
        .assert_error(500, 1, 302);
    assert_eq!((count(&a), count(&b)), ((1, 0), (0, 0)));
    // A poll is safe to run again: moved at once.
    let r = c.messages(&chat, None).await;
    assert_eq!((r.status_code(), r.alias()), (0, "B".to_string()));
    assert_eq!((count(&a), count(&b)), ((2, 0), (1, 1)));

    // Refused at connect: cannot have arrived, so even a message moves at once.
    a.refresh
        .always(Some(Err(BackendError::Unreachable("refused".into()))));
    let r = c.op(&chat, "SendMessage", json!({"text": "moved"})).await;
    assert_eq!((r.status_code(), r.alias()), (0, "B".to_string()));
    assert_eq!((count(&a), count(&b)), ((3, 0), (2, 2)));
    // A is down now: a request with its alias goes straight to B.
    let r = c.op(&chat, "SendMessage", json!({"text": "again"})).await;
    assert_eq!((r.status_code(), r.alias()), (0, "B".to_string()));
    assert_eq!((count(&a), count(&b)), ((3, 0), (3, 3)));

    // An alias never configured is not a failover.
    let lost = Chat {
        alias: "Z".into(),
        ..chat.clone()
    };
    c.op(&lost, "GetChat", json!({}))
        .await
        .assert_error(400, 2, 201);
}
