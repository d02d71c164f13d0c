//! The chat-server protocol: what the gateway and a standalone chat server say to each other.
//!
//! `docs/chat-protocol.md` is the specification; this crate is its one implementation, shared by
//! both ends so they cannot drift apart.
//!
//! Layout:
//! - `frame`: length-prefixed framing (a `u32` big-endian length, then a JSON payload) and the
//!   one place that turns payload bytes into messages and back;
//! - `chat`: the chat values calls and answers carry (chat references, actions, events,
//!   updates, load), as the protocol's own types: their serde attributes are protocol v1;
//! - `convert`: the one conversion between those and the adapter boundary's domain types
//!   (`backend_api`), used by both ends;
//! - `message`: the handshake (`Hello` / `HelloReply`), the calls a client makes (`Request`,
//!   `Call`) and what the server answers (`Reply`, `Answer`, `Status`);
//! - `error`: the error codes of a reply, whether each is retryable, and their conversion from
//!   and to [`backend_api::BackendError`];
//! - `auth`: the shared secret's proofs for the version-2 handshake (HMAC over both ends'
//!   nonces, compared in constant time).
//!
//! It owns no sockets and no tasks: the chat server and the TCP adapter do the I/O. It must not
//! know about HTTP, the Web API JSON shapes, routing or the shared store.

pub mod auth;
pub mod chat;
mod convert;
mod error;
mod frame;
mod message;

pub use convert::{position_of, transcript_from_position};
pub use error::{ErrorCode, WireError};
pub use frame::{codec, decode, encode, encode_frame, put_frame, DecodeError, MAX_FRAME_LENGTH};
pub use message::{
    Answer, Call, Challenge, Hello, HelloReply, Proof, Refused, Reply, Request, RequestId,
    Restored, Status, Welcome,
};

/// The protocol version this build speaks: 3, version 2 plus the `watch` call (the long
/// poll, answered when the event happens). The handshake is version 2's. A server with a
/// secret speaks 2 and 3; one without also takes 1 (see "Versioning" in the spec). A client
/// refused for its version reconnects with the highest version the refusal lists that it
/// speaks, and without version 3 it has no `watch` (it polls).
pub const PROTOCOL_VERSION: u16 = 3;

/// Version 2: version 1 plus the shared-secret handshake (`Challenge`, `Proof`, the nonces).
/// Every frame after the handshake is the same as in version 1. Pinned by `protocol_v2`.
pub const PROTOCOL_V2: u16 = 2;

/// Version 1: the handshake without authentication. Its frames are pinned by `protocol_v1`.
pub const PROTOCOL_V1: u16 = 1;

/// The first version with the `watch` call.
pub const WATCH_SINCE: u16 = 3;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Action, ChatRef};
    use backend_api::BackendError;

    fn chat() -> ChatRef {
        ChatRef {
            chat_id: "00019a9SXTQW001N".into(),
            user_id: "007553ADB4D9001A".into(),
            secure_key: "e1a17b94f802c330".into(),
        }
    }

    #[test]
    fn debug_never_prints_the_secure_key() {
        let printed = format!("{:?}", chat());
        assert!(!printed.contains("e1a17b94f802c330"), "{printed}");
        assert!(printed.contains("00019a9SXTQW001N"), "{printed}");
    }

    /// The spec's examples are the wire format: these pin them.
    #[test]
    fn refresh_call_is_flat_and_readable() {
        let request = Request {
            id: 7,
            call: Call::Refresh {
                chat: chat(),
                action: Action::SendMessage {
                    text: "hi".into(),
                    message_type: None,
                },
                transcript_position: 3,
                details: false,
            },
            trace_id: None,
        };
        let json: serde_json::Value = serde_json::from_slice(&encode(&request)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id": 7, "call": {"refresh": {
                "chat": {"chatId": "00019a9SXTQW001N", "userId": "007553ADB4D9001A",
                         "secureKey": "e1a17b94f802c330"},
                "action": "sendMessage", "text": "hi", "messageType": null,
                "transcriptPosition": 3, "details": false}}})
        );
        assert_eq!(decode::<Request>(&encode(&request)).unwrap(), request);
        let poll =
            br#"{"id":8,"call":{"refresh":{"chat":{"chatId":"a","userId":"b","secureKey":"c"},
            "action":"poll","transcriptPosition":0}}}"#;
        let decoded: Request = decode(poll).unwrap();
        assert!(matches!(
            decoded.call,
            Call::Refresh {
                action: Action::Poll,
                details: false,
                ..
            }
        ));
        let status: Request = decode(br#"{"id":9,"call":{"status":{}}}"#).unwrap();
        assert_eq!(status.call, Call::Status {});
    }

    #[test]
    fn errors_round_trip_to_the_same_adapter_error() {
        let cases = [
            BackendError::Overloaded("full".into()),
            BackendError::StoreUnavailable("down".into()),
            BackendError::Moved("newer".into()),
            BackendError::UnknownChat,
            BackendError::ChatEnded { next_position: 9 },
            BackendError::BadCredentials,
            BackendError::Rejected {
                field: Some("text".into()),
                message: "too long".into(),
            },
            BackendError::TooLong {
                field: "text".into(),
                limit: 16384,
            },
            BackendError::TranscriptFull("2000 events".into()),
            BackendError::TooLarge("a reply of 2000000 bytes".into()),
        ];
        for error in cases {
            let wire = WireError::from(error.clone());
            assert_eq!(wire.retryable, error.retryable());
            let back: WireError = decode(&encode(&wire)).unwrap();
            let again = back.into_backend_error("refresh");
            assert_eq!(again.retryable(), error.retryable());
            if let BackendError::TooLong { .. } = error {
                assert_eq!(again, error, "field and limit survive the wire");
            }
            assert_eq!(
                std::mem::discriminant(&again),
                std::mem::discriminant(&error)
            );
        }
        let store = WireError::from(BackendError::Interrupted("redis".into()));
        assert_eq!(store.code, ErrorCode::Unavailable);
        assert!(!store.into_backend_error("refresh").never_arrived());
    }

    #[test]
    fn unknown_codes_from_newer_servers_keep_their_retryability() {
        let wire: WireError =
            decode(br#"{"code":"somethingNew","retryable":true,"message":"x"}"#).unwrap();
        assert_eq!(wire.code, ErrorCode::Unknown);
        assert!(wire.into_backend_error("refresh").retryable());
    }

    /// Every JSON example in the spec is a message this implementation reads, so the spec
    /// cannot drift from the code.
    #[test]
    fn the_spec_examples_decode() {
        let spec = include_str!("../../../docs/chat-protocol.md");
        let mut examples = 0;
        for block in spec.split("```json").skip(1) {
            let json = block.split("```").next().unwrap();
            let bytes = json.trim().as_bytes();
            let value: serde_json::Value =
                serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"));
            let decodes = if value.get("call").is_some() {
                decode::<Request>(bytes).is_ok()
            } else if value.get("id").is_some() {
                decode::<Reply>(bytes).is_ok_and(|r| r.into_result().is_some())
            } else if value.get("version").is_some() {
                decode::<Hello>(bytes).is_ok()
            } else if value.get("proof").is_some() {
                decode::<Proof>(bytes).is_ok()
            } else {
                decode::<HelloReply>(bytes).is_ok()
            };
            assert!(decodes, "the spec's example does not decode: {json}");
            examples += 1;
        }
        assert!(examples >= 12, "only {examples} examples found");
    }

    /// A frame encoded straight into a buffer is what the codec reads back, and one over the
    /// bound leaves the buffer as it was.
    #[test]
    fn frames_encoded_into_a_buffer_read_back_and_an_oversize_one_is_not_appended() {
        use tokio_util::codec::Decoder;
        let mut buf = bytes::BytesMut::new();
        let first = Reply::error(1, WireError::new(ErrorCode::UnknownChat, "no"));
        encode_frame(&first, &mut buf).unwrap();
        let second = Reply::ok(
            2,
            Answer::Status(Status {
                alias: "117".into(),
                load: crate::chat::Load {
                    active: 1,
                    limit: 2,
                    accepting: true,
                },
                chats: 1,
                connections: 1,
                store: false,
            }),
        );
        put_frame(&encode(&second), &mut buf);
        let before = buf.clone();
        let huge = Reply::error(
            3,
            WireError::new(ErrorCode::Rejected, "x".repeat(MAX_FRAME_LENGTH)),
        );
        assert!(encode_frame(&huge, &mut buf).unwrap_err() > MAX_FRAME_LENGTH);
        assert_eq!(buf, before, "nothing of the oversize frame was appended");
        let mut codec = codec();
        let read = |frame: Option<bytes::BytesMut>| decode::<Reply>(&frame.unwrap()).unwrap();
        assert_eq!(read(codec.decode(&mut buf).unwrap()), first);
        assert_eq!(read(codec.decode(&mut buf).unwrap()), second);
        assert!(buf.is_empty());
    }

    #[test]
    fn reply_needs_exactly_one_outcome() {
        let both: Reply = decode(br#"{"id":1}"#).unwrap();
        assert!(both.into_result().is_none());
        let reply = Reply::error(2, WireError::new(ErrorCode::UnknownChat, "no"));
        assert!(matches!(
            decode::<Reply>(&encode(&reply)).unwrap().into_result(),
            Some(Err(_))
        ));
    }
}
