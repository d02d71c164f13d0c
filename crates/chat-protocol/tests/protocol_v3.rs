//! Protocol v3 pinned: version 2 plus the `watch` call (the long poll). The handshake frames
//! are version 2's with `version: 3`; the `watch` call encodes to exactly the JSON the spec
//! shows and is answered by the `update` every `refresh` gets (pinned by `protocol_v1`); a
//! version-2 server's refusal of a version-3 hello is what a client falls back from. The
//! frames of versions 1 and 2 are unchanged (`protocol_v1`, `protocol_v2`).

#[allow(dead_code)] // the fixtures serve every pinned version; this one uses a few
mod fixtures;

use chat_protocol::chat::ChatUpdate as WireUpdate;
use chat_protocol::{
    decode, encode, Answer, Call, ErrorCode, Hello, HelloReply, Refused, Reply, Request, WireError,
    PROTOCOL_V2, PROTOCOL_VERSION, WATCH_SINCE,
};

fn pinned<T>(json: &str, message: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(std::str::from_utf8(&encode(message)).unwrap(), json);
    assert_eq!(&decode::<T>(json.as_bytes()).unwrap(), message);
}

#[test]
fn the_version_is_3_and_watch_comes_with_it() {
    assert_eq!((PROTOCOL_V2, PROTOCOL_VERSION, WATCH_SINCE), (2, 3, 3));
}

#[test]
fn the_watch_call_is_pinned() {
    let request = Request {
        id: 12,
        call: Call::Watch {
            chat: fixtures::chat().into(),
            transcript_position: 7,
            wait_ms: 25000,
        },
        trace_id: None,
    };
    pinned(
        r#"{"id":12,"call":{"watch":{"chat":{"chatId":"00019a9SXTQW001N","userId":"007553ADB4D9001A","secureKey":"e1a17b94f802c330"},"transcriptPosition":7,"waitMs":25000}}}"#,
        &request,
    );
    assert_eq!(request.call.name(), "watch");
    // Every field is required: a watch without a wait is not a watch.
    assert!(decode::<Request>(
        br#"{"id":1,"call":{"watch":{"chat":{"chatId":"a","userId":"b","secureKey":"c"},"transcriptPosition":7}}}"#
    )
    .is_err());
}

#[test]
fn a_watch_is_answered_by_an_update() {
    let update = WireUpdate::from(fixtures::updates().remove(0));
    let reply = Reply::ok(12, Answer::Update(update.clone()));
    let json = String::from_utf8(encode(&reply).to_vec()).unwrap();
    assert!(json.starts_with(r#"{"id":12,"ok":{"update":{"#), "{json}");
    assert_eq!(decode::<Reply>(json.as_bytes()).unwrap(), reply);
    // An empty answer: the wait ran out, or the server shuts down.
    pinned(
        r#"{"id":13,"ok":{"update":{"messages":[],"nextPosition":7,"chatEnded":false,"details":null}}}"#,
        &Reply::ok(
            13,
            Answer::Update(WireUpdate::from(backend_api::ChatUpdate {
                messages: Vec::new(),
                next_position: 7,
                chat_ended: false,
                details: None,
                secure_key: None,
            })),
        ),
    );
    // Past the held-watch bound: retryable, so the client tries again later.
    pinned(
        r#"{"id":14,"error":{"code":"overloaded","retryable":true,"message":"20000 watches already held on this connection"}}"#,
        &Reply::error(
            14,
            WireError::new(
                ErrorCode::Overloaded,
                "20000 watches already held on this connection",
            ),
        ),
    );
}

#[test]
fn the_handshake_frames_are_version_2_saying_3() {
    pinned(
        r#"{"version":3,"peer":"webapi-gateway"}"#,
        &Hello {
            version: 3,
            peer: "webapi-gateway".into(),
            nonce: None,
        },
    );
    // What a version-2 server with a secret answers a version-3 hello: the client says 2 on
    // a new connection and has no watch there.
    pinned(
        r#"{"refused":{"error":{"code":"versionMismatch","retryable":false,"message":"protocol version 3 not supported, this server speaks [2]"},"supportedVersions":[2]}}"#,
        &HelloReply::Refused(Refused {
            error: WireError::new(
                ErrorCode::VersionMismatch,
                "protocol version 3 not supported, this server speaks [2]",
            ),
            supported_versions: vec![2],
        }),
    );
}
