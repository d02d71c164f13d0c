//! Framing and payload encoding.
//!
//! Owns the frame format (a 4-byte big-endian length, then that many bytes of UTF-8 JSON) and
//! the bound on a frame's size. It must not decide what to do with a bad frame: the caller
//! closes the connection and logs why.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;
use tokio_util::codec::LengthDelimitedCodec;

/// The largest payload either end accepts: 1 MiB. A longer announced length is refused by the
/// codec as soon as the 4-byte header is read, before anything is allocated for the body, so a
/// peer announcing 1 GB costs nothing. The largest real message (a long transcript) is far
/// below it.
pub const MAX_FRAME_LENGTH: usize = 1024 * 1024;

/// The codec both ends wrap their sockets in.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(MAX_FRAME_LENGTH)
        .new_codec()
}

/// A message as the payload of one frame.
pub fn encode<T: Serialize>(message: &T) -> Bytes {
    // Serialising these types cannot fail: every map key is a string and no custom
    // serializer returns an error.
    Bytes::from(serde_json::to_vec(message).expect("protocol messages always serialise"))
}

/// Appends a message to `buf` as one whole frame (the 4-byte length, then the JSON payload),
/// serialised straight into the buffer: no payload allocation and no copy. A payload over
/// [`MAX_FRAME_LENGTH`] is not appended (`buf` is left as it was) and its length is returned
/// instead, so the caller fails that message alone rather than writing a frame the peer's
/// codec would refuse.
pub fn encode_frame<T: Serialize>(message: &T, buf: &mut BytesMut) -> Result<(), usize> {
    let start = buf.len();
    buf.put_u32(0);
    let mut writer = buf.writer();
    serde_json::to_writer(&mut writer, message).expect("protocol messages always serialise");
    let buf = writer.into_inner();
    let length = buf.len() - start - 4;
    if length > MAX_FRAME_LENGTH {
        buf.truncate(start);
        return Err(length);
    }
    buf[start..start + 4].copy_from_slice(&(length as u32).to_be_bytes());
    Ok(())
}

/// Appends an already encoded payload (from [`encode`]) to `buf` as one frame. The caller
/// keeps payloads within [`MAX_FRAME_LENGTH`].
pub fn put_frame(payload: &[u8], buf: &mut BytesMut) {
    debug_assert!(payload.len() <= MAX_FRAME_LENGTH);
    buf.reserve(4 + payload.len());
    buf.put_u32(payload.len() as u32);
    buf.extend_from_slice(payload);
}

/// Why a frame's payload is not the expected message.
#[derive(Debug, Error)]
#[error("undecodable payload: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

/// The message in one frame's payload.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    Ok(serde_json::from_slice(payload)?)
}
