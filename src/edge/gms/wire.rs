//! The GMS Chat API v2 reply shape: one shape for every operation.

use backend_api::{Event, EventType, FileLimits, Participant, UserData};
use serde::{Serialize, Serializer};

/// Every successful GMS reply (request chat, operations, file operations).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GmsReply<'a> {
    pub status_code: u8,
    pub alias: &'a str,
    pub user_id: &'a str,
    pub secure_key: &'a str,
    pub chat_id: &'a str,
    pub chat_ended: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<GmsEvents<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<&'a UserData>,
}

/// Transcript events with their GMS type names (`PushUrl`, `NicknameUpdated` as they are).
pub struct GmsEvents<'a>(pub &'a [Event]);

impl Serialize for GmsEvents<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(GmsEvent::from))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GmsEvent<'a> {
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

impl<'a> From<&'a Event> for GmsEvent<'a> {
    fn from(e: &'a Event) -> Self {
        GmsEvent {
            from: &e.from,
            index: e.index,
            kind: event_type(e.kind),
            text: e.text.as_deref(),
            message_type: e.message_type.as_deref(),
            utc_time: e.utc_time,
            user_data: &e.user_data,
        }
    }
}

fn event_type(kind: EventType) -> &'static str {
    match kind {
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

/// `file/limits` as GMS reports it: strings in `userData`.
pub fn limits_user_data(l: &FileLimits) -> UserData {
    let mut d = UserData::new();
    let mut put = |k: &str, v: String| {
        d.insert(k.to_owned(), v);
    };
    put("upload-max-files", l.max_files.to_string());
    put("upload-max-file-size", l.max_file_size.to_string());
    put("upload-max-total-size", l.max_total_size.to_string());
    put("upload-file-types", l.file_types.join(":"));
    put("upload-need-agent", l.need_agent.to_string());
    put("used-upload-max-files", l.used_files.to_string());
    put("used-upload-max-total-size", l.used_total_size.to_string());
    put("download-attempts", l.download_attempts.to_string());
    put("delete-file", l.delete_allowed.to_string());
    d
}
