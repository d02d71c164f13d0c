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
