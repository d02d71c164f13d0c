//! What one event of a stream carries in `data:`: each dialect's Get Messages reply holding
//! that one event, less `secureKey` (a stream is read from a URL; it never carries the key).
//!
//! The Web API shape is `webapi::wire::ChatReply` as Get Messages answers it, the GMS shape
//! `gms::wire::GmsReply` as `refresh` answers it; `tests/push.rs` checks that each has the
//! fields of its reply but `secureKey` and `streamToken`.

use serde::Serialize;

use crate::edge::wire::Events;

/// The Web API's Get Messages reply with one event.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebApiEvent<'a> {
    pub status_code: u8,
    pub alias: &'a str,
    pub user_id: &'a str,
    pub tenant_name: &'a str,
    pub chat_id: &'a str,
    pub chat_ended: bool,
    pub next_position: u64,
    pub messages: Events<'a>,
}

/// GMS's `refresh` reply with one event.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GmsEvent<'a> {
    pub status_code: u8,
    pub alias: &'a str,
    pub user_id: &'a str,
    pub chat_id: &'a str,
    pub chat_ended: bool,
    pub next_position: u64,
    pub messages: Events<'a>,
}

/// `event: reset`: the position asked for is past the chat's end.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reset<'a> {
    pub status_code: u8,
    pub chat_id: &'a str,
    /// The position the stream was asked to start at.
    pub transcript_position: u64,
    /// Where the chat's transcript ends now (one past its last event).
    pub transcript_end: u64,
    /// Where the stream goes on from: 1, the whole transcript again.
    pub next_position: u64,
    pub message: &'static str,
}

pub const RESET_MESSAGE: &str =
    "the position asked for is past the end of this chat's transcript: drop what was shown \
     and re-read from 1; this stream now sends the transcript from 1";
