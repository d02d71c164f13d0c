//! Protocol v1 pinned: every call and answer, built from the adapter boundary's domain values
//! and converted to the protocol's own types, encodes to exactly the JSON that protocol v1 has
//! always sent (`protocol_v1.txt`, recorded from the implementation that serialised the domain
//! types directly), and that JSON decodes back to the same domain values. A change to
//! `backend-api` or to the wire structs that would alter a byte fails here.

mod fixtures;

use backend_api as domain;
use chat_protocol::{
    chat, decode, encode, Answer, Call, ErrorCode, HelloReply, Reply, Request, Restored, Status,
    Welcome, WireError,
};

/// The recorded payload of one named message, byte for byte.
fn recorded(name: &str) -> &'static str {
    include_str!("protocol_v1.txt")
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix('\t'))
        .unwrap_or_else(|| panic!("no recorded message {name}"))
}

/// Encodes `message`, compares it with the recording byte for byte (field order included),
/// and returns the recording decoded.
fn pinned<T>(name: &str, message: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let sent = encode(message);
    assert_eq!(
        std::str::from_utf8(&sent).unwrap(),
        recorded(name),
        "{name} changed on the wire"
    );
    let read: T = decode(recorded(name).as_bytes()).unwrap();
    assert_eq!(&read, message, "{name} decodes differently");
    read
}

fn request(id: u64, call: Call, trace_id: Option<&str>) -> Request {
    Request {
        id,
        call,
        trace_id: trace_id.map(str::to_owned),
    }
}

#[test]
fn calls_are_protocol_v1() {
    for (i, new_chat) in fixtures::new_chats().into_iter().enumerate() {
        let call = Call::LoginJoin(new_chat.clone().into());
        let read = pinned(&format!("loginJoin{i}"), &request(1, call, Some("t")));
        let Call::LoginJoin(back) = read.call else {
            panic!("not a loginJoin")
        };
        assert_eq!(domain::NewChat::from(back), new_chat);
    }
    for (i, action) in fixtures::actions().into_iter().enumerate() {
        let call = Call::Refresh {
            chat: fixtures::chat().into(),
            action: action.clone().into(),
            transcript_position: 3,
            details: i % 2 == 0,
        };
        let read = pinned(&format!("refresh{i}"), &request(2, call, None));
        let Call::Refresh {
            chat, action: back, ..
        } = read.call
        else {
            panic!("not a refresh")
        };
        assert_eq!(domain::Action::from(back), action);
        assert_eq!(domain::ChatRef::from(chat), fixtures::chat());
    }
    let logout = Call::Logout {
        chat: fixtures::chat().into(),
        transcript_position: 5,
    };
    pinned("logout", &request(3, logout, None));
    pinned("status", &request(4, Call::Status {}, None));
    let restore = Call::Restore {
        chat: fixtures::chat().into(),
    };
    pinned("restore", &request(5, restore, None));
}

#[test]
fn answers_are_protocol_v1() {
    let created = Reply::ok(1, Answer::Created(fixtures::created().into()));
    let Some(Ok(Answer::Created(back))) = pinned("created", &created).into_result() else {
        panic!("not created")
    };
    assert_eq!(domain::ChatCreated::from(back), fixtures::created());
    for (i, update) in fixtures::updates().into_iter().enumerate() {
        let reply = Reply::ok(2, Answer::Update(update.clone().into()));
        let Some(Ok(Answer::Update(back))) = pinned(&format!("update{i}"), &reply).into_result()
        else {
            panic!("not an update")
        };
        assert_eq!(domain::ChatUpdate::from(back), update);
    }
    let restored = Restored {
        alias: "a".into(),
        next_position: 7,
        chat_ended: true,
    };
    pinned("restored", &Reply::ok(5, Answer::Restored(restored)));
    let status = Status {
        alias: "a".into(),
        load: fixtures::load().into(),
        chats: 4,
        connections: 2,
        store: true,
    };
    assert_eq!(domain::Load::from(status.load), fixtures::load());
    pinned(
        "statusAnswer",
        &Reply::ok(4, Answer::Status(status.clone())),
    );
    let welcome = HelloReply::Welcome(Welcome {
        version: 1,
        alias: "a".into(),
        max_frame_length: 1048576,
        status,
        proof: None,
    });
    pinned("welcome", &welcome);
}

/// The error codes added to v1 for the store path (additions: a v1 peer that does not know
/// them reads `unknown` and trusts `retryable`, which is true for both).
#[test]
fn store_errors_are_protocol_v1_additions() {
    for (name, error, code) in [
        (
            "errorStoreUnavailable",
            domain::BackendError::StoreUnavailable("store did not answer within 2s".into()),
            ErrorCode::StoreUnavailable,
        ),
        (
            "errorMoved",
            domain::BackendError::Moved("a newer version was saved by another instance".into()),
            ErrorCode::Moved,
        ),
    ] {
        let wire = WireError::from(error.clone());
        assert_eq!(wire.code, code);
        let Some(Err(back)) = pinned(name, &Reply::error(2, wire)).into_result() else {
            panic!("not an error")
        };
        let back = back.into_backend_error("refresh");
        assert_eq!(
            std::mem::discriminant(&back),
            std::mem::discriminant(&error)
        );
        assert!(back.retryable() && !back.never_arrived());
    }
}

/// Fields a peer may leave out still read as before.
#[test]
fn optional_fields_may_be_absent() {
    let call: Request = decode(
        br#"{"id":1,"call":{"loginJoin":{"tenantName":"t","nickname":"n","endpoint":"e",
        "userData":{}}}}"#,
    )
    .unwrap();
    let Call::LoginJoin(new_chat) = call.call else {
        panic!("not a loginJoin")
    };
    assert_eq!(new_chat.first_name, None);
    let action: chat::Action = decode(br#"{"action":"sendMessage","text":"hi"}"#).unwrap();
    assert_eq!(
        domain::Action::from(action),
        domain::Action::SendMessage {
            text: "hi".into(),
            message_type: None
        }
    );
}

/// The read receipt (issue 14) is an addition: its call and the read marker in an answer's
/// details are pinned here, and an answer without the marker reads as before (`None`).
#[test]
fn read_receipts_are_protocol_v1_additions() {
    let call = Call::Refresh {
        chat: fixtures::chat().into(),
        action: domain::Action::ReadReceipt { position: 5 }.into(),
        transcript_position: 0,
        details: false,
    };
    let sent = String::from_utf8(encode(&request(7, call, None)).to_vec()).unwrap();
    assert!(
        sent.contains(r#""action":"readReceipt","readPosition":5"#),
        "{sent}"
    );
    let read: Request = decode(sent.as_bytes()).unwrap();
    let Call::Refresh { action, .. } = read.call else {
        panic!("not a refresh")
    };
    assert_eq!(
        domain::Action::from(action),
        domain::Action::ReadReceipt { position: 5 }
    );
    let details = domain::ChatDetails {
        state: domain::ChatState::Chatting,
        participants: Vec::new(),
        user_data: domain::UserData::new(),
        read_position: Some(4),
    };
    let wire = chat::ChatDetails::from(details.clone());
    assert_eq!(
        String::from_utf8(encode(&wire).to_vec()).unwrap(),
        r#"{"state":"Chatting","participants":[],"userData":{},"readPosition":4}"#
    );
    assert_eq!(domain::ChatDetails::from(wire), details);
    let old: chat::ChatDetails =
        decode(br#"{"state":"Idle","participants":[],"userData":{}}"#).unwrap();
    assert_eq!(domain::ChatDetails::from(old).read_position, None);
}
