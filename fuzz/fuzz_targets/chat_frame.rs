//! The chat server's read path on arbitrary bytes: the protocol's length-delimited codec
//! (`chat_protocol::codec`, 1 MiB bound) fed in chunks as a socket delivers them, then each
//! frame decoded as the server decodes it — the first as a `Hello`, every later one as a
//! `Request`, falling back to reading just its id as `connection.rs` does for a newer client's
//! unknown call. The client's side (`HelloReply`, `Reply`) is decoded from the same frames.
//!
//! What must hold: every stream ends in frames or a codec error, never a panic or a hang; a
//! frame that decodes re-encodes (`chat_protocol::encode`) to a payload that decodes to the
//! same message, so both ends agree on what was said.
//!
//! Input layout: byte 0 picks the chunk size the stream arrives in; the rest is the stream
//! (frames are a 4-byte big-endian length, then the payload).
#![no_main]

use bytes::BytesMut;
use chat_protocol::{codec, decode, encode, Hello, HelloReply, Reply, Request, RequestId};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use tokio_util::codec::Decoder;

/// What the server reads from a frame that is not a request it knows (`connection.rs`).
#[derive(Deserialize)]
struct JustTheId {
    #[allow(dead_code)]
    id: RequestId,
}

fn round_trips<T>(payload: &[u8]) -> Option<T>
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let message: T = decode(payload).ok()?;
    let again: T = decode(&encode(&message)).expect("a re-encoded message decodes");
    assert_eq!(again, message, "a message changed through encode/decode");
    Some(message)
}

fn server_reads(first: bool, payload: &[u8]) {
    if first {
        let _ = round_trips::<Hello>(payload);
    } else if round_trips::<Request>(payload).is_none() {
        let _ = decode::<JustTheId>(payload);
    }
    // The client's side of the same connection.
    let _ = round_trips::<HelloReply>(payload);
    if let Some(reply) = round_trips::<Reply>(payload) {
        let _ = reply.into_result();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 64) + 1;
    let mut codec = codec();
    let mut buffer = BytesMut::new();
    let mut first = true;
    for piece in stream.chunks(chunk) {
        buffer.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    server_reads(first, &frame);
                    first = false;
                }
                Ok(None) => break,
                // The server closes the connection on a framing error.
                Err(_) => return,
            }
        }
    }
    // The peer closes: what is left is a frame, nothing, or a truncated-frame error.
    while let Ok(Some(frame)) = codec.decode_eof(&mut buffer) {
        server_reads(first, &frame);
        first = false;
    }
});
