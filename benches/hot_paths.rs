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

criterion_group!(benches, parsing, credentials, transcript, encoding);
criterion_main!(benches);
