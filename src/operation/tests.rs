//! The chat rules of `run`, on [`Chats`] built by hand over scripted backends: no spool, no
//! socket, no process. Each test asserts what reached which backend.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use backend_api::{Action, BackendError, ChatBackend, ChatRef, NewChat, Refresh, Transcript};
use testkit::{Call, ScriptedBackend};

use super::run::MAX_ATTEMPTS;
use super::*;
use crate::config::{AdminState, HealthConfig, Placement, TenantConfig};
use crate::credentials::{Claim, Credentials};
use crate::error::Error;
use crate::router::{Health, Instance, Router};

const TENANT: &str = "Environment";

/// Chats over one scripted backend per alias, placed round robin (so the first new chat
/// goes to the first alias).
struct Rig {
    chats: Chats,
    table: Arc<ArcSwap<Router>>,
    backends: Vec<(&'static str, Arc<ScriptedBackend>)>,
}

fn rig(aliases: &[&'static str]) -> Rig {
    let backends: Vec<_> = aliases
        .iter()
        .map(|a| (*a, ScriptedBackend::new()))
        .collect();
    let instances = backends
        .iter()
        .map(|(alias, b)| instance(alias, b))
        .collect();
    let table = Arc::new(ArcSwap::from_pointee(Router::from_shared(
        instances,
        Placement::RoundRobin,
        None,
    )));
    let tenants = vec![TenantConfig {
        name: TENANT.into(),
        default_endpoint: "default".into(),
        cors_origins: Vec::new(),
        cors_allowed_headers: crate::edge::cors::default_allowed_headers(),
    }];
    let chats = Chats::new(
        tenants,
        Credentials::new(b"test secret of the operation rules"),
        Arc::clone(&table),
        Duration::from_secs(5),
    );
    Rig {
        chats,
        table,
        backends,
    }
}

fn instance(alias: &str, backend: &Arc<ScriptedBackend>) -> Arc<Instance> {
    let backend: Arc<dyn ChatBackend> = backend.clone();
    Arc::new(Instance::new(
        alias,
        backend,
        1,
        Vec::new(),
        AdminState::Ready,
        Health::new(alias, &HealthConfig::default()),
    ))
}

impl Rig {
    fn backend(&self, alias: &str) -> &ScriptedBackend {
        &self.backends.iter().find(|(a, _)| *a == alias).unwrap().1
    }

    fn instance(&self, alias: &str) -> Arc<Instance> {
        Arc::clone(self.table.load().get(alias).unwrap())
    }

    /// What each backend received, by alias.
    fn calls(&self) -> Vec<(&'static str, Vec<Call>)> {
        self.backends.iter().map(|(a, b)| (*a, b.calls())).collect()
    }

    /// The credentials of chat C1 (backend key K1) as a client on `alias` holds them.
    fn client(&self, alias: &str) -> ClientCredentials {
        let claim = Claim {
            chat_id: "C1",
            user_id: "U1",
            tenant_name: TENANT,
        };
        ClientCredentials {
            user_id: "U1".into(),
            secure_key: self.chats.credentials().seal(claim, "K1"),
            alias: alias.into(),
            tenant_name: TENANT.into(),
        }
    }

    async fn on(&self, alias: &str, action: Action) -> Result<ChatReply, Error> {
        let request = OnChat {
            credentials: self.client(alias),
            operation: refresh(action),
        };
        on_chat(&self.chats, "C1", request).await
    }
}

fn refresh(action: Action) -> Refresh {
    Refresh {
        action,
        transcript: Transcript::None,
        details: false,
    }
}

fn send() -> Action {
    Action::SendMessage {
        text: "hello".into(),
        message_type: None,
    }
}

fn chat_ref() -> ChatRef {
    ChatRef {
        chat_id: "C1".into(),
        user_id: "U1".into(),
        secure_key: "K1".into(),
    }
}

fn sent(action: Action) -> Call {
    Call::Refresh(chat_ref(), refresh(action))
}

fn new_chat() -> NewChat {
    NewChat {
        tenant_name: TENANT.into(),
        nickname: "Ann".into(),
        ..NewChat::default()
    }
}

#[tokio::test]
async fn a_chat_stays_on_an_instance_that_serves_it() {
    let r = rig(&["A", "B"]);
    let reply = r.on("A", send()).await.unwrap();
    assert_eq!(&*reply.alias, "A");
    assert_eq!(r.calls(), vec![("A", vec![sent(send())]), ("B", vec![])]);
}

#[tokio::test]
async fn a_message_that_may_have_arrived_is_never_sent_again() {
    let r = rig(&["A", "B"]);
    r.backend("A")
        .refresh
        .always(Some(Err(BackendError::Interrupted("lost".into()))));
    let e = r.on("A", send()).await.err().unwrap();
    assert!(
        matches!(e, Error::Backend(BackendError::Interrupted(_))),
        "{e:?}"
    );
    assert_eq!(e.wire().status_code, 1, "the client retries");
    // Not sent again anywhere, and the chat did not move.
    assert_eq!(r.calls(), vec![("A", vec![sent(send())]), ("B", vec![])]);
}

#[tokio::test]
async fn an_idempotent_action_moves_after_an_interruption() {
    let r = rig(&["A", "B"]);
    r.backend("A")
        .refresh
        .then(Err(BackendError::Interrupted("lost".into())));
    let reply = r.on("A", Action::Poll).await.unwrap();
    assert_eq!(&*reply.alias, "B");
    assert_eq!(
        r.calls(),
        vec![
            ("A", vec![sent(Action::Poll)]),
            ("B", vec![Call::Restore(chat_ref()), sent(Action::Poll)])
        ]
    );
}

#[tokio::test]
async fn a_refused_request_moves_even_a_message_and_the_instance_is_left_alone() {
    let r = rig(&["A", "B"]);
    r.backend("A")
        .refresh
        .always(Some(Err(BackendError::Unreachable("refused".into()))));
    assert_eq!(&*r.on("A", send()).await.unwrap().alias, "B");
    // A is down now: the next request with its alias goes straight to B.
    assert_eq!(&*r.on("A", send()).await.unwrap().alias, "B");
    assert_eq!(
        r.calls(),
        vec![
            ("A", vec![sent(send())]),
            (
                "B",
                vec![
                    Call::Restore(chat_ref()),
                    sent(send()),
                    Call::Restore(chat_ref()),
                    sent(send())
                ]
            )
        ]
    );
}

#[tokio::test]
async fn an_answer_that_refuses_the_request_does_not_move_the_chat() {
    let r = rig(&["A", "B"]);
    for refusal in [
        BackendError::ChatEnded { next_position: 3 },
        BackendError::UnknownChat,
        BackendError::Overloaded("busy".into()),
    ] {
        r.backend("A").refresh.then(Err(refusal.clone()));
        let e = r.on("A", Action::Poll).await.err().unwrap();
        assert!(matches!(&e, Error::Backend(b) if *b == refusal), "{e:?}");
    }
    assert_eq!(r.backend("A").refreshes(), 3);
    assert_eq!(r.backend("B").calls(), vec![]);
}

#[tokio::test]
async fn a_chat_never_moves_because_of_its_own_oversize_reply() {
    // Another instance would build the same reply: moving the chat would only repeat the
    // failure there (the review's 20 moved bystander chats). Nor is the instance to blame.
    let r = rig(&["A", "B"]);
    let too_large = BackendError::TooLarge("a reply of 2000000 bytes".into());
    r.backend("A").refresh.always(Some(Err(too_large.clone())));
    let tries = HealthConfig::default().eject_after.get() + 2;
    for _ in 0..tries {
        let e = r.on("A", Action::Poll).await.err().unwrap();
        assert!(matches!(&e, Error::Backend(b) if *b == too_large), "{e:?}");
        assert_eq!(e.wire().status_code, 2, "not worth retrying as it is");
    }
    assert_eq!(r.backend("A").refreshes(), tries as usize);
    assert_eq!(r.backend("B").calls(), vec![]);
    assert!(r.instance("A").serves_its_chats(), "A was not ejected");
    // The size refusals of the engine are answers too: they never move the chat either.
    for refusal in [
        BackendError::TooLong {
            field: "text".into(),
            limit: 16384,
        },
        BackendError::TranscriptFull("2000 events".into()),
    ] {
        r.backend("A").refresh.then(Err(refusal.clone()));
        let e = r.on("A", send()).await.err().unwrap();
        assert!(matches!(&e, Error::Backend(b) if *b == refusal), "{e:?}");
        assert_eq!(e.wire().status_code, 2);
    }
    assert_eq!(r.backend("B").calls(), vec![]);
}

#[tokio::test]
async fn a_chat_moves_before_any_call_when_its_instance_cannot_serve_it() {
    // maint
    let r = rig(&["A", "B"]);
    r.instance("A").set_state(AdminState::Maint);
    assert_eq!(&*r.on("A", send()).await.unwrap().alias, "B");
    assert_eq!(
        r.calls(),
        vec![
            ("A", vec![]),
            ("B", vec![Call::Restore(chat_ref()), sent(send())])
        ]
    );
    // down
    let r = rig(&["A", "B"]);
    r.instance("A").health.refused("test");
    assert_eq!(&*r.on("A", send()).await.unwrap().alias, "B");
    assert_eq!(r.backend("A").calls(), vec![]);
    // ejected
    let r = rig(&["A", "B"]);
    for _ in 0..HealthConfig::default().eject_after.get() {
        r.instance("A").health.request_failed("test");
    }
    assert_eq!(&*r.on("A", send()).await.unwrap().alias, "B");
    assert_eq!(r.backend("A").calls(), vec![]);
    // drained: still serves its chats
    let r = rig(&["A", "B"]);
    r.instance("A").set_state(AdminState::Drain);
    assert_eq!(&*r.on("A", send()).await.unwrap().alias, "A");
    assert_eq!(r.backend("B").calls(), vec![]);
}

#[tokio::test]
async fn a_chat_on_an_alias_a_reload_removed_moves() {
    let r = rig(&["A", "B"]);
    let old = r.table.load_full();
    let kept = vec![r.instance("B")];
    r.table.store(Arc::new(Router::from_shared(
        kept,
        Placement::RoundRobin,
        Some(&old),
    )));
    assert_eq!(&*r.on("A", send()).await.unwrap().alias, "B");
    assert_eq!(
        r.calls(),
        vec![
            ("A", vec![]),
            ("B", vec![Call::Restore(chat_ref()), sent(send())])
        ]
    );
}

#[tokio::test]
async fn a_down_instance_with_nowhere_to_move_is_still_tried_but_one_in_maint_is_not() {
    let r = rig(&["A"]);
    r.instance("A").health.refused("test");
    assert_eq!(&*r.on("A", send()).await.unwrap().alias, "A");
    assert_eq!(r.calls(), vec![("A", vec![sent(send())])]);

    let r = rig(&["A"]);
    r.instance("A").set_state(AdminState::Maint);
    let e = r.on("A", send()).await.err().unwrap();
    assert!(matches!(e, Error::InstanceDown(_)), "{e:?}");
    assert_eq!(r.calls(), vec![("A", vec![])]);
}

#[tokio::test]
async fn a_restore_the_target_cannot_do_is_cannot_move() {
    let r = rig(&["A", "B"]);
    r.instance("A").set_state(AdminState::Maint);
    r.backend("B")
        .restore
        .always(Some(Err(BackendError::Unsupported("restore"))));
    let e = r.on("A", send()).await.err().unwrap();
    assert!(
        matches!(&e, Error::CannotMove(from) if from == "A"),
        "{e:?}"
    );
    assert_eq!(
        r.calls(),
        vec![("A", vec![]), ("B", vec![Call::Restore(chat_ref())])]
    );
}

#[tokio::test]
async fn failover_gives_up_after_max_attempts() {
    let r = rig(&["A", "B", "C", "D", "E"]);
    for (_, b) in &r.backends {
        b.refresh
            .always(Some(Err(BackendError::Unreachable("refused".into()))));
    }
    let e = r.on("A", Action::Poll).await.err().unwrap();
    assert!(
        matches!(e, Error::Backend(BackendError::Unreachable(_))),
        "{e:?}"
    );
    let refreshes: usize = r.backends.iter().map(|(_, b)| b.refreshes()).sum();
    assert_eq!(refreshes, MAX_ATTEMPTS);
}

#[tokio::test]
async fn request_chat_tries_another_instance_only_when_it_never_arrived() {
    // Refused: placed on the next instance.
    let r = rig(&["A", "B"]);
    r.backend("A")
        .create
        .then(Err(BackendError::Unreachable("refused".into())));
    let created = request_chat(&r.chats, new_chat()).await.unwrap();
    assert_eq!(&*created.alias, "B");
    let mut placed = new_chat();
    placed.endpoint = "default".into();
    assert_eq!(
        r.calls(),
        vec![
            ("A", vec![Call::Create(placed.clone())]),
            ("B", vec![Call::Create(placed.clone())])
        ]
    );

    // May have arrived: not offered elsewhere.
    let r = rig(&["A", "B"]);
    r.backend("A")
        .create
        .then(Err(BackendError::Interrupted("lost".into())));
    let e = request_chat(&r.chats, new_chat()).await.err().unwrap();
    assert!(
        matches!(e, Error::Backend(BackendError::Interrupted(_))),
        "{e:?}"
    );
    assert_eq!(
        r.calls(),
        vec![("A", vec![Call::Create(placed)]), ("B", vec![])]
    );

    // Everyone refuses: the first placement, then MAX_ATTEMPTS more, then the error.
    let r = rig(&["A", "B", "C", "D", "E", "F"]);
    for (_, b) in &r.backends {
        b.create
            .always(Some(Err(BackendError::Unreachable("refused".into()))));
    }
    let e = request_chat(&r.chats, new_chat()).await.err().unwrap();
    assert!(
        matches!(e, Error::Backend(BackendError::Unreachable(_))),
        "{e:?}"
    );
    let creates: usize = r.backends.iter().map(|(_, b)| b.creates()).sum();
    assert_eq!(creates, MAX_ATTEMPTS + 1);
}

#[tokio::test]
async fn nothing_reaches_a_backend_when_tenant_key_or_alias_is_bad() {
    let r = rig(&["A", "B"]);
    let mut wrong_tenant = r.client("A");
    wrong_tenant.tenant_name = "Nobody".into();
    let mut wrong_key = r.client("A");
    wrong_key.secure_key.push('0');
    let mut forged = r.client("A");
    forged.user_id = "U2".into();
    let mut wrong_alias = r.client("A");
    wrong_alias.alias = "Z".into();
    for (credentials, expected) in [
        (wrong_tenant, "UnknownTenant"),
        (wrong_key, "BadCredentials"),
        (forged, "BadCredentials"),
        (wrong_alias, "UnknownAlias"),
    ] {
        let request = OnChat {
            credentials,
            operation: refresh(send()),
        };
        let e = on_chat(&r.chats, "C1", request).await.err().unwrap();
        assert!(format!("{e:?}").starts_with(expected), "{e:?}");
    }
    let e = file_limits(&r.chats, "C2", &r.client("A"))
        .await
        .err()
        .unwrap();
    assert!(matches!(e, Error::BadCredentials), "{e:?}");
    let mut nobody = new_chat();
    nobody.tenant_name = "Nobody".into();
    let e = request_chat(&r.chats, nobody).await.err().unwrap();
    assert!(matches!(e, Error::UnknownTenant(_)), "{e:?}");
    assert_eq!(r.calls(), vec![("A", vec![]), ("B", vec![])]);
}

#[test]
fn debug_never_prints_a_secure_key() {
    let client = ClientCredentials {
        user_id: "007553ADB4D9001A".into(),
        secure_key: "sealed-key-0123456789".into(),
        alias: "117".into(),
        tenant_name: "Environment".into(),
    };
    let backend = ChatRef {
        chat_id: "00019a9SXTQW001N".into(),
        user_id: "007553ADB4D9001A".into(),
        secure_key: "backend-key-0123456789".into(),
    };
    let printed = format!("{client:?} {backend:?} {:?}", Credentials::random());
    assert!(!printed.contains("sealed-key"), "{printed}");
    assert!(!printed.contains("backend-key"), "{printed}");
    assert!(printed.contains("007553ADB4D9001A"), "{printed}");
}

#[tokio::test]
async fn a_store_failure_neither_moves_the_chat_nor_ejects_the_instance() {
    let r = rig(&["A", "B"]);
    r.backend("A")
        .refresh
        .always(Some(Err(BackendError::StoreUnavailable("down".into()))));
    let times = HealthConfig::default().eject_after.get() + 2;
    for action in [send(), Action::Poll] {
        for _ in 0..times {
            let e = r.on("A", action.clone()).await.err().unwrap();
            assert!(
                matches!(e, Error::Backend(BackendError::StoreUnavailable(_))),
                "{e:?}"
            );
            assert_eq!(e.wire().status_code, 1, "the client retries");
        }
    }
    // Every request reached A once, nothing reached B, and A still serves its chats.
    assert_eq!(r.backend("A").refreshes(), 2 * times as usize);
    assert_eq!(r.backend("B").calls(), vec![]);
    assert!(r.instance("A").serves_its_chats());
}

#[tokio::test]
async fn a_chat_whose_save_was_refused_is_reloaded_where_it_is_and_even_a_message_runs_there() {
    let r = rig(&["A", "B"]);
    r.backend("A")
        .refresh
        .then(Err(BackendError::Moved("newer version saved".into())));
    let reply = r.on("A", send()).await.unwrap();
    assert_eq!(
        &*reply.alias, "A",
        "no move: the instance reloads the store's record"
    );
    assert_eq!(
        r.calls(),
        vec![
            (
                "A",
                vec![sent(send()), Call::Restore(chat_ref()), sent(send())]
            ),
            ("B", vec![])
        ]
    );
    assert!(r.instance("A").serves_its_chats(), "A is left alone");
}

#[tokio::test]
async fn a_chat_that_moved_away_with_nowhere_else_to_go_is_reloaded_where_it_was() {
    let r = rig(&["A"]);
    r.backend("A")
        .refresh
        .then(Err(BackendError::Moved("newer version saved".into())));
    let reply = r.on("A", send()).await.unwrap();
    assert_eq!(&*reply.alias, "A");
    assert_eq!(
        r.calls(),
        vec![(
            "A",
            vec![sent(send()), Call::Restore(chat_ref()), sent(send())]
        )]
    );
}

#[tokio::test]
async fn a_store_failure_during_a_move_is_statuscode_1_at_once() {
    let r = rig(&["A", "B", "C"]);
    r.instance("A").set_state(AdminState::Maint);
    for alias in ["B", "C"] {
        r.backend(alias)
            .restore
            .always(Some(Err(BackendError::StoreUnavailable("down".into()))));
    }
    let e = r.on("A", send()).await.err().unwrap();
    assert!(
        matches!(e, Error::Backend(BackendError::StoreUnavailable(_))),
        "{e:?}"
    );
    assert_eq!(e.wire().status_code, 1);
    // One restore tried, not one per instance: the store is the same everywhere.
    let restores: usize = ["B", "C"].iter().map(|a| r.backend(a).calls().len()).sum();
    assert_eq!(restores, 1);
    assert!(r.instance("B").serves_its_chats() && r.instance("C").serves_its_chats());
}

#[tokio::test]
async fn a_stream_token_opens_only_its_chat_with_the_alias_that_served() {
    let r = rig(&["A", "B"]);
    r.instance("A").set_state(AdminState::Maint);
    let reply = r.on("A", send()).await.unwrap();
    assert_eq!(&*reply.alias, "B");
    let opened = open_stream_token(&r.chats, "C1", &reply.stream_token).expect("opens");
    // The chat moved: the token names where it lives now, with the client's own key.
    assert_eq!(
        opened,
        ClientCredentials {
            alias: "B".into(),
            ..r.client("A")
        }
    );
    assert_eq!(open_stream_token(&r.chats, "C2", &reply.stream_token), None);
    let other_secret = Chats::new(
        Vec::new(),
        Credentials::new(b"another secret"),
        Arc::clone(&r.table),
        Duration::from_secs(5),
    );
    assert_eq!(
        open_stream_token(&other_secret, "C1", &reply.stream_token),
        None
    );
    // The token says nothing readable of the key it carries (the whole sealed key: a
    // two-letter string turns up in random base64 now and then).
    assert!(!reply.stream_token.contains(&r.client("A").secure_key));
    // A stream presents it to `watch`, which runs the same checks and routing.
    let watched = watch(&r.chats, "C1", opened, 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(&*watched.alias, "B");
}

#[tokio::test]
async fn a_chat_token_opens_to_its_credentials_and_a_forged_one_reaches_no_backend() {
    let r = rig(&["A", "B"]);
    let client = r.client("A");
    let token = seal_chat_token(&r.chats, "C1", &client).unwrap();
    let (chat_id, opened) = open_chat_token(&r.chats, &token).unwrap();
    assert_eq!((chat_id.as_str(), &opened), ("C1", &client));
    assert!(
        !token.contains(&client.secure_key),
        "the token says nothing readable"
    );
    // Only a chat's own credentials become a token.
    let mut wrong = r.client("A");
    wrong.secure_key.push('0');
    assert!(matches!(
        seal_chat_token(&r.chats, "C1", &wrong),
        Err(Error::BadCredentials)
    ));
    let mut forged = token.clone().into_bytes();
    forged[10] = if forged[10] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    for bad in [forged.as_str(), "", "not-a-token", &client.secure_key] {
        assert!(matches!(
            open_chat_token(&r.chats, bad),
            Err(Error::BadCredentials)
        ));
    }
    assert_eq!(r.calls(), vec![("A", vec![]), ("B", vec![])]);
}
