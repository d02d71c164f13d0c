//! The GMS Chat API v2 reply shape: one shape for every operation.

use backend_api::{FileLimits, UserData};
use serde::Serialize;

use crate::edge::wire::Events;

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
    pub messages: Option<Events<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<&'a UserData>,
    /// Opens the chat's event stream (`GET …/{chatId}/events?streamToken=`).
    pub stream_token: &'a str,
}

/// The text of the `Notice` event that carries the limits in GMS's `file/limits` reply.
pub const LIMITS_NOTICE: &str = "file-client-cfg-get";

/// `file/limits`'s reply as GMS sends it: one `Notice` event, text
/// [`LIMITS_NOTICE`], with the limits in its `userData` (where widgets read them); the
/// gateway keeps a copy in the reply's own `userData` too. The event is not part of the
/// transcript: its index is 0, and it comes from the system party.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitsReply<'a> {
    pub status_code: u8,
    pub alias: &'a str,
    pub user_id: &'a str,
    pub secure_key: &'a str,
    pub chat_id: &'a str,
    pub chat_ended: bool,
    pub messages: [LimitsNotice<'a>; 1],
    pub user_data: &'a UserData,
    /// Opens the chat's event stream (`GET …/{chatId}/events?streamToken=`).
    pub stream_token: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitsNotice<'a> {
    pub from: backend_api::Participant,
    pub index: u64,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: &'static str,
    pub utc_time: u64,
    pub user_data: &'a UserData,
}

impl<'a> LimitsNotice<'a> {
    pub fn new(user_data: &'a UserData) -> LimitsNotice<'a> {
        LimitsNotice {
            from: backend_api::Participant {
                nickname: "system".into(),
                participant_id: 0,
                kind: backend_api::ParticipantType::System,
            },
            index: 0,
            kind: "Notice",
            text: LIMITS_NOTICE,
            utc_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            user_data,
        }
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
    put("used-download-attempts", l.used_downloads.to_string());
    put("delete-file", l.delete_allowed.to_string());
    d
}
