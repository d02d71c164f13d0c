//! Protocol v2 pinned: version 1 plus the shared-secret handshake. Every v2 handshake frame
//! encodes to exactly the JSON the spec shows, the v1 handshake frames are unchanged (the
//! new fields are left out when absent, so a v1 peer reads the same bytes as before), and
//! the frames after the handshake are v1's (pinned by `protocol_v1`).

use chat_protocol::auth::{self, Role};
use chat_protocol::{
    decode, encode, Challenge, ErrorCode, Hello, HelloReply, Proof, Refused, Status, WireError,
    PROTOCOL_V1, PROTOCOL_V2,
};

fn pinned<T>(json: &str, message: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(std::str::from_utf8(&encode(message)).unwrap(), json);
    assert_eq!(&decode::<T>(json.as_bytes()).unwrap(), message);
}

const SERVER_NONCE: &str = "5f1d1e0f6b0a4c3e9d8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d";
const CLIENT_NONCE: &str = "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

#[test]
fn the_handshake_frames_are_protocol_v2() {
    assert_eq!((PROTOCOL_V1, PROTOCOL_V2), (1, 2));
    pinned(
        &format!(r#"{{"version":2,"peer":"webapi-gateway","nonce":"{CLIENT_NONCE}"}}"#),
        &Hello {
            version: 2,
            peer: "webapi-gateway".into(),
            nonce: Some(CLIENT_NONCE.into()),
        },
    );
    pinned(
        &format!(r#"{{"challenge":{{"nonce":"{SERVER_NONCE}"}}}}"#),
        &HelloReply::Challenge(Challenge {
            nonce: SERVER_NONCE.into(),
        }),
    );
    let client = auth::proof(SECRET, Role::Client, SERVER_NONCE, CLIENT_NONCE);
    pinned(
        &format!(r#"{{"proof":"{client}"}}"#),
        &Proof {
            proof: client.clone(),
        },
    );
    pinned(
        r#"{"refused":{"error":{"code":"authFailed","retryable":false,"message":"the proof does not match this server's shared secret"},"supportedVersions":[2]}}"#,
        &HelloReply::Refused(Refused {
            error: WireError::new(
                ErrorCode::AuthFailed,
                "the proof does not match this server's shared secret",
            ),
            supported_versions: vec![2],
        }),
    );
    let server = auth::proof(SECRET, Role::Server, SERVER_NONCE, CLIENT_NONCE);
    let welcome: HelloReply = decode(
        format!(
            r#"{{"welcome":{{"version":2,"alias":"117","maxFrameLength":1048576,"status":{{"alias":"117","load":{{"active":0,"limit":1000,"accepting":true}},"chats":0,"connections":1,"store":true}},"proof":"{server}"}}}}"#
        )
        .as_bytes(),
    )
    .unwrap();
    let HelloReply::Welcome(welcome) = welcome else {
        panic!("not a welcome")
    };
    assert_eq!(welcome.proof.as_deref(), Some(server.as_str()));
    assert!(auth::verify(
        SECRET,
        Role::Server,
        SERVER_NONCE,
        CLIENT_NONCE,
        &server
    ));
    assert!(!auth::verify(
        SECRET,
        Role::Client,
        SERVER_NONCE,
        CLIENT_NONCE,
        &server
    ));
}

/// A v1 hello and welcome carry no new field: the bytes a v1 peer has always sent and read.
#[test]
fn version_1_handshake_frames_are_unchanged() {
    pinned(
        r#"{"version":1,"peer":"webapi-gateway 0.1.0"}"#,
        &Hello {
            version: 1,
            peer: "webapi-gateway 0.1.0".into(),
            nonce: None,
        },
    );
    let welcome = HelloReply::Welcome(chat_protocol::Welcome {
        version: 1,
        alias: "117".into(),
        max_frame_length: 1048576,
        status: Status {
            alias: "117".into(),
            load: chat_protocol::chat::Load {
                active: 0,
                limit: 1000,
                accepting: true,
            },
            chats: 0,
            connections: 1,
            store: true,
        },
        proof: None,
    });
    pinned(
        r#"{"welcome":{"version":1,"alias":"117","maxFrameLength":1048576,"status":{"alias":"117","load":{"active":0,"limit":1000,"accepting":true},"chats":0,"connections":1,"store":true}}}"#,
        &welcome,
    );
}
