//! Micro-benchmarks of the request hot path, to catch regressions (`cargo bench`). Not run by
//! CI; the load benchmark is `bench/run.sh`.

use std::time::Duration;

use backend_api::{Action, ChatRef, NewChat, Refresh, Transcript};
use chat_engine::{Behaviour, Engine};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use webapi_gateway::credentials::{Claim, Credentials};
use webapi_gateway::edge::webapi::wire::ChatReply;
use webapi_gateway::edge::webapi::{parse_chat_operation, parse_get_messages};
use webapi_gateway::edge::wire::{json, Events};

const SEND: &[u8] = br#"{"operationName":"SendMessage","userId":"007553ADB4D9001A","secureKey":"E1A17B94F802C33032D2E33366F42CFB5F9D98033A81AC42","alias":"117","tenantName":"Environment","text":"Hello, I have a question about my order"}"#;
const POLL: &[u8] = br#"{"userId":"007553ADB4D9001A","secureKey":"E1A17B94F802C33032D2E33366F42CFB5F9D98033A81AC42","alias":"117","tenantName":"Environment","transcriptPosition":12}"#;

fn parsing(c: &mut Criterion) {
    c.bench_function("parse SendMessage", |b| {
        b.iter(|| parse_chat_operation(black_box(SEND)).unwrap())
    });
    c.bench_function("parse Get Messages", |b| {
        b.iter(|| parse_get_messages(black_box(POLL)).unwrap())
    });
}

fn credentials(c: &mut Criterion) {
    let creds = Credentials::new(b"bench-secret-0123456789abcdef0123456789");
    let claim = Claim {
        chat_id: "00019a9SXTQW001N",
        user_id: "007553ADB4D9001A",
        tenant_name: "Environment",
    };
    let key = creds.seal(claim, "E1A17B94F802C330");
    c.bench_function("verify secureKey", |b| {
        b.iter(|| creds.open(black_box(claim), black_box(&key)).unwrap())
    });
}

fn setup() -> (std::sync::Arc<Engine>, ChatRef) {
    let engine = Engine::new(Behaviour {
        agent_join_delay: Duration::from_secs(3600),
        session_limit: std::num::NonZeroU64::MAX,
        ..Behaviour::default()
    });
    let created = engine
        .create(NewChat {
            tenant_name: "Environment".into(),
            nickname: "bench".into(),
            endpoint: "default".into(),
            ..NewChat::default()
        })
        .unwrap();
    (engine, created.chat)
}

fn transcript(c: &mut Criterion) {
    let (engine, chat) = setup();
    c.bench_function("append a message", |b| {
        b.iter(|| {
            engine
                .refresh(
                    &chat,
                    Refresh {
                        action: Action::SendMessage {
                            text: "Hello, I have a question about my order".into(),
                            message_type: None,
                        },
                        transcript: Transcript::None,
                        details: false,
                    },
                )
                .unwrap()
        })
    });
    let (engine, chat) = setup();
    for _ in 0..20 {
        engine
            .refresh(
                &chat,
                Refresh {
                    action: Action::SendMessage {
                        text: "message".into(),
                        message_type: None,
                    },
                    transcript: Transcript::None,
                    details: false,
                },
            )
            .unwrap();
    }
    c.bench_function("read the last 4 events", |b| {
        b.iter(|| {
            engine
                .refresh(
                    &chat,
                    Refresh {
                        action: Action::Poll,
                        transcript: Transcript::From(20),
                        details: false,
                    },
                )
                .unwrap()
        })
    });
}

fn encoding(c: &mut Criterion) {
    let (engine, chat) = setup();
    let update = engine
        .refresh(
            &chat,
            Refresh {
                action: Action::Poll,
                transcript: Transcript::From(1),
                details: false,
            },
        )
        .unwrap();
    c.bench_function("encode a Get Messages reply", |b| {
        b.iter(|| {
            json(
                axum::http::StatusCode::OK,
                &ChatReply {
                    status_code: 0,
                    alias: "117",
                    secure_key: "E1A17B94F802C33032D2E33366F42CFB5F9D98033A81AC42",
                    user_id: &chat.user_id,
                    tenant_name: "Environment",
                    chat_id: &chat.chat_id,
                    chat_ended: false,
                    next_position: update.next_position,
                    messages: Some(Events::web_api(black_box(&update.messages))),
                    state: None,
                    participants: None,
                    user_data: None,
                    stream_token: "",
                    read_position: None,
                },
            )
        })
    });
}

/// Sealing the `streamToken` every chat reply carries (issue 17: one buffer, in place).
fn tokens(c: &mut Criterion) {
    let creds = Credentials::new(b"bench-secret-0123456789abcdef0123456789");
    let payload = [7u8; 60];
    c.bench_function("seal a stream token", |b| {
        b.iter(|| {
            creds.tokens().seal(
                webapi_gateway::credentials::Purpose::Stream,
                black_box(&payload),
                Some(Duration::from_secs(3600)),
            )
        })
    });
}

/// The mock's expiry sweep over 2,000 open chats (what `bench/run.sh` opens): it runs once a
/// second on a runtime worker, and a request on that worker waits for it (issue 17, tail).
fn sweep(c: &mut Criterion) {
    let engine = Engine::new(Behaviour {
        session_limit: std::num::NonZeroU64::MAX,
        ..Behaviour::default()
    });
    for _ in 0..2000 {
        engine
            .create(NewChat {
                tenant_name: "Environment".into(),
                nickname: "bench".into(),
                endpoint: "default".into(),
                ..NewChat::default()
            })
            .unwrap();
    }
    c.bench_function("sweep 2,000 open chats", |b| {
        b.iter(|| engine.sweep(black_box(chat_engine::now_ms())))
    });
}

/// One SendMessage through the whole application in process (`app`: every layer, the
/// operation, the mock), as `bench/run.sh` configures it, with `oneshot`: the request path's
/// own cost without sockets (issue 17: the middleware and allocations per request).
fn whole_request(c: &mut Criterion) {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let spool = std::env::temp_dir().join(format!("hot-paths-{}", std::process::id()));
    let toml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml"))
        .expect("gateway.toml");
    let env = [
        ("GATEWAY__LIMITS__PER_IP_PER_SECOND", "0".to_string()),
        ("GATEWAY__LIMITS__PER_CHAT_PER_SECOND", "0".into()),
        ("GATEWAY__LIMITS__CHAT_STARTS_PER_IP_PER_SECOND", "0".into()),
        ("GATEWAY__EMAIL__SPOOL_DIR", spool.display().to_string()),
        (
            "GATEWAY__CREDENTIALS__SECRET",
            "bench-secret-0123456789abcdef0123456789".into(),
        ),
        ("GATEWAY__MOCK__SESSION_LIMIT", "1000000".into()),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let config = webapi_gateway::Config::from_toml_str_with_env(&toml, env).unwrap();
    let gateway = webapi_gateway::Gateway::new(config).unwrap();
    let app = webapi_gateway::app(gateway);
    let call = |path: String, body: String| {
        let app = app.clone();
        async move {
            let mut req = Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            req.extensions_mut().insert(axum::extract::ConnectInfo(
                "127.0.0.1:40000".parse::<std::net::SocketAddr>().unwrap(),
            ));
            let reply = app.oneshot(req).await.unwrap();
            let bytes = reply.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
        }
    };
    let chat = rt.block_on(call(
        "/api/v2/chats".into(),
        r#"{"tenantName":"Environment","nickname":"bench"}"#.into(),
    ));
    let path = format!("/api/v2/chats/{}", chat["chatId"].as_str().unwrap());
    let body = format!(
        r#"{{"operationName":"SendMessage","userId":"{}","secureKey":"{}","alias":"{}","tenantName":"Environment","text":"Hello, I have a question about my order"}}"#,
        chat["userId"].as_str().unwrap(),
        chat["secureKey"].as_str().unwrap(),
        chat["alias"].as_str().unwrap(),
    );
    c.bench_function("SendMessage through the whole app", |b| {
        b.iter(|| rt.block_on(call(path.clone(), body.clone())))
    });
    let _ = std::fs::remove_dir_all(&spool);
}

criterion_group!(
    benches,
    parsing,
    credentials,
    transcript,
    encoding,
    tokens,
    sweep,
    whole_request
);
criterion_main!(benches);
