//! What the reply shapes of both dialects share: a JSON reply, and transcript events as each
//! dialect shows them (they differ only in event type names).
//!
//! Each dialect's own reply structs are in `webapi::wire` and `gms::wire`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use backend_api::{Event, EventType, Participant, UserData};
use serde::{Serialize, Serializer};

/// What a JSON reply's buffer starts at: most chat replies fit.
const REPLY_CAPACITY: usize = 1024;

/// A JSON reply. Encoding a plain struct cannot fail; if it ever did, the client still gets
/// a JSON body.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response {
    // Encoded straight into one buffer sized ahead for a chat reply with its stream token and
    // a few events (issue 17: `to_vec` started at 128 bytes and grew two or three times).
    let mut body = Vec::with_capacity(REPLY_CAPACITY);
    let body = match serde_json::to_writer(&mut body, value) {
        Ok(()) => body,
        Err(_) => {
            br#"{"statusCode":1,"errors":[{"code":399,"message":"reply could not be encoded"}]}"#
                .to_vec()
        }
    };
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Which front-end dialect a transcript is shown in: the two differ only in event type names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    WebApi,
    Gms,
}

/// Transcript events as a dialect shows them.
pub struct Events<'a> {
    pub events: &'a [Event],
    pub dialect: Dialect,
}

impl<'a> Events<'a> {
    pub fn web_api(events: &'a [Event]) -> Self {
        Events {
            events,
            dialect: Dialect::WebApi,
        }
    }

    pub fn gms(events: &'a [Event]) -> Self {
        Events {
            events,
            dialect: Dialect::Gms,
        }
    }
}

impl Serialize for Events<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.events.iter().map(|e| WireEvent {
            from: &e.from,
            index: e.index,
            kind: event_type(e.kind, self.dialect),
            text: e.text.as_deref(),
            message_type: e.message_type.as_deref(),
            utc_time: e.utc_time,
            user_data: &e.user_data,
        }))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireEvent<'a> {
    from: &'a Participant,
    index: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_type: Option<&'a str>,
    utc_time: u64,
    #[serde(skip_serializing_if = "UserData::is_empty")]
    user_data: &'a UserData,
}

/// GMS names every event type as the backends record it; the Web API has no `PushUrl` or
/// `NicknameUpdated`: both are `Notice` there.
fn event_type(kind: EventType, dialect: Dialect) -> &'static str {
    match kind {
        EventType::PushUrl | EventType::NicknameUpdated if dialect == Dialect::WebApi => "Notice",
        EventType::ParticipantJoined => "ParticipantJoined",
        EventType::ParticipantLeft => "ParticipantLeft",
        EventType::Message => "Message",
        EventType::TypingStarted => "TypingStarted",
        EventType::TypingStopped => "TypingStopped",
        EventType::Notice => "Notice",
        EventType::PushUrl => "PushUrl",
        EventType::NicknameUpdated => "NicknameUpdated",
        EventType::CustomNotice => "CustomNotice",
        EventType::IdleAlert => "IdleAlert",
        EventType::IdleClose => "IdleClose",
        EventType::FileUploaded => "FileUploaded",
        EventType::FileDeleted => "FileDeleted",
    }
}
