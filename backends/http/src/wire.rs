//! The GMS reply shape, read leniently (GMS versions differ in which fields they send), and
//! its translation into the domain types.

use std::collections::BTreeMap;
use std::sync::Arc;

use backend_api::{
    BackendError, ChatCreated, ChatDetails, ChatRef, ChatState, Event, EventType, FileLimits,
    Participant, ParticipantType, UserData,
};
use serde::Deserialize;
use serde_json::Value;

/// Every GMS Chat API v2 reply has this shape; with statusCode 1 or 2 only `errors` and
/// `chatEnded` can be trusted.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Reply {
    pub status_code: Option<i64>,
    pub alias: Option<String>,
    pub user_id: Option<String>,
    pub secure_key: Option<String>,
    pub chat_id: Option<String>,
    pub chat_ended: Option<bool>,
    pub next_position: Option<u64>,
    pub messages: Vec<WireEvent>,
    pub errors: Vec<WireError>,
    pub user_data: BTreeMap<String, Value>,
    /// Web API GetChat: the chat's state, participants and the customer's read marker.
    pub state: Option<String>,
    pub participants: Vec<WireParty>,
    pub read_position: Option<u64>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct WireError {
    pub code: Option<i64>,
    pub message: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct WireEvent {
    pub from: WireParty,
    pub index: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
    pub message_type: Option<String>,
    pub utc_time: u64,
    pub user_data: BTreeMap<String, Value>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct WireParty {
    pub nickname: String,
    pub participant_id: Value,
    #[serde(rename = "type")]
    pub kind: String,
}

impl Reply {
    /// statusCode 0, or the GMS error passed through as it came.
    pub fn into_success(self) -> Result<Reply, BackendError> {
        match self.status_code {
            Some(0) => Ok(self),
            other => {
                let first = self.errors.first();
                Err(BackendError::Remote {
                    // Anything but an explicit 1 is "do not retry": a GMS that says nothing
                    // clear has not said it is worth retrying.
                    status_code: if other == Some(1) { 1 } else { 2 },
                    code: first
                        .and_then(|e| e.code)
                        .and_then(|c| u16::try_from(c).ok())
                        .unwrap_or(0),
                    message: first
                        .and_then(|e| e.message.clone())
                        .unwrap_or_else(|| "GMS refused the request".into()),
                    chat_ended: self.chat_ended.unwrap_or(false),
                })
            }
        }
    }

    /// A new chat from the remote's Request Chat reply (either dialect: `remote` names it in
    /// errors), its key sealing the remote's alias, `service` (the GMS service or the Web API
    /// tenant) and the remote's secure key.
    pub fn into_created(self, service: String, remote: &str) -> Result<ChatCreated, BackendError> {
        let missing = |f: &str| BackendError::Interrupted(format!("{remote} reply without {f}"));
        let messages = self.events();
        let next_position = self.next_position(&messages);
        let key = crate::key::RemoteKey {
            alias: self.alias.unwrap_or_default(),
            service,
            secure_key: self.secure_key.ok_or_else(|| missing("secureKey"))?,
        };
        Ok(ChatCreated {
            chat: ChatRef {
                chat_id: self.chat_id.ok_or_else(|| missing("chatId"))?,
                user_id: self.user_id.ok_or_else(|| missing("userId"))?,
                secure_key: key.pack(),
            },
            messages,
            next_position,
        })
    }

    pub fn events(&self) -> Vec<Event> {
        self.messages.iter().map(WireEvent::to_event).collect()
    }

    /// `nextPosition`, or one past the last event shown when GMS left it out.
    pub fn next_position(&self, events: &[Event]) -> u64 {
        self.next_position
            .or_else(|| events.last().map(|e| e.index + 1))
            .unwrap_or(1)
    }

    pub fn user_data(&self) -> UserData {
        strings(&self.user_data)
    }

    /// `file/limits`: GMS sends the limits in the `userData` of a `Notice` event with text
    /// `file-client-cfg-get`; some versions (and this gateway, as a copy) in the reply's own
    /// `userData`. Both are read, the event's values winning.
    pub fn limits_data(&self) -> UserData {
        let mut data = self.user_data();
        if let Some(notice) = self
            .messages
            .iter()
            .find(|e| e.kind == "Notice" && e.text.as_deref() == Some("file-client-cfg-get"))
        {
            data.extend(strings(&notice.user_data));
        }
        data
    }

    /// Web API GetChat's details, as the reply shows them.
    pub fn web_api_details(&self) -> ChatDetails {
        let state = match self.state.as_deref() {
            Some("Chatting") => ChatState::Chatting,
            Some("WaitingForAgent") => ChatState::WaitingForAgent,
            _ => ChatState::Idle,
        };
        ChatDetails {
            state,
            participants: self
                .participants
                .iter()
                .map(WireParty::to_participant)
                .collect(),
            user_data: self.user_data(),
            read_position: self.read_position,
        }
    }
}

impl WireParty {
    fn to_participant(&self) -> Participant {
        Participant {
            nickname: Arc::from(self.nickname.as_str()),
            participant_id: match &self.participant_id {
                Value::Number(n) => n.as_u64().unwrap_or(0) as u32,
                Value::String(s) => s.parse().unwrap_or(0),
                _ => 0,
            },
            kind: participant_type(&self.kind),
        }
    }
}

impl WireEvent {
    fn to_event(&self) -> Event {
        Event {
            index: self.index,
            kind: event_type(&self.kind),
            from: self.from.to_participant(),
            text: self.text.as_deref().map(Arc::from),
            message_type: self.message_type.as_deref().map(Arc::from),
            utc_time: self.utc_time,
            user_data: strings(&self.user_data),
        }
    }
}

fn strings(map: &BTreeMap<String, Value>) -> UserData {
    map.iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// GMS event types; one this adapter does not know is shown as a `Notice`.
fn event_type(kind: &str) -> EventType {
    match kind {
        "ParticipantJoined" => EventType::ParticipantJoined,
        "ParticipantLeft" => EventType::ParticipantLeft,
        "Message" => EventType::Message,
        "TypingStarted" => EventType::TypingStarted,
        "TypingStopped" => EventType::TypingStopped,
        "CustomNotice" => EventType::CustomNotice,
        "IdleAlert" => EventType::IdleAlert,
        "IdleClose" => EventType::IdleClose,
        "PushUrl" => EventType::PushUrl,
        "NicknameUpdated" => EventType::NicknameUpdated,
        "FileUploaded" => EventType::FileUploaded,
        "FileDeleted" => EventType::FileDeleted,
        _ => EventType::Notice,
    }
}

fn participant_type(kind: &str) -> ParticipantType {
    match kind {
        "Client" => ParticipantType::Client,
        "Agent" => ParticipantType::Agent,
        "Supervisor" => ParticipantType::Supervisor,
        "External" => ParticipantType::External,
        _ => ParticipantType::System,
    }
}

/// `file/limits` from the strings GMS reports in `userData`; a missing number is 0.
pub(crate) fn file_limits(d: &UserData) -> FileLimits {
    let num = |k: &str| {
        d.get(k)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    // GMS writes switches as `true` / `false`, some versions as `enabled` / `disabled`.
    let yes = |k: &str| {
        d.get(k).is_some_and(|v| {
            let v = v.trim();
            ["true", "enabled", "yes", "1"]
                .iter()
                .any(|y| v.eq_ignore_ascii_case(y))
        })
    };
    FileLimits {
        max_files: num("upload-max-files") as u32,
        max_file_size: num("upload-max-file-size"),
        max_total_size: num("upload-max-total-size"),
        file_types: d
            .get("upload-file-types")
            .map(|t| {
                t.split(':')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        need_agent: yes("upload-need-agent"),
        download_attempts: num("download-attempts") as u32,
        delete_allowed: yes("delete-file"),
        used_files: num("used-upload-max-files") as u32,
        used_total_size: num("used-upload-max-total-size"),
        used_downloads: num("used-download-attempts") as u32,
    }
}

/// The `filename` of a `Content-Disposition` header.
pub(crate) fn disposition_file_name(header: &str) -> Option<String> {
    header.split(';').find_map(|p| {
        let v = p.trim().strip_prefix("filename=")?;
        let v = v.trim_matches('"');
        (!v.is_empty()).then(|| v.to_owned())
    })
}

/// GetChat from what a whole transcript shows: who joined and has not left (with their
/// latest nickname), whether an agent is among them, whether the chat ended.
pub(crate) fn details(events: &[Event], ended: bool, user_data: UserData) -> ChatDetails {
    let mut present: Vec<Participant> = Vec::new();
    for e in events {
        let id = e.from.participant_id;
        match e.kind {
            EventType::ParticipantJoined if !present.iter().any(|p| p.participant_id == id) => {
                present.push(e.from.clone());
            }
            EventType::ParticipantLeft => present.retain(|p| p.participant_id != id),
            EventType::NicknameUpdated => {
                if let (Some(p), Some(name)) = (
                    present.iter_mut().find(|p| p.participant_id == id),
                    e.text.as_deref(),
                ) {
                    p.nickname = Arc::from(name);
                }
            }
            _ => {}
        }
    }
    let state = if ended {
        ChatState::Idle
    } else if present.iter().any(|p| p.kind == ParticipantType::Agent) {
        ChatState::Chatting
    } else {
        ChatState::WaitingForAgent
    };
    ChatDetails {
        state,
        participants: present,
        user_data,
        // GMS's transcript shows no read marker.
        read_position: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"statusCode":0,"alias":"117","userId":"007555677B20000A",
        "secureKey":"4ee15d7e1c343c8e","chatId":"00048aAPEQJ8000U","chatEnded":false,
        "nextPosition":2,"messages":[{"from":{"nickname":"First Last","participantId":1,
        "type":"Client"},"index":1,"type":"ParticipantJoined","utcTime":1432845088000}]}"#;

    #[test]
    fn reads_the_documented_reply() {
        let r: Reply = serde_json::from_str(EXAMPLE).unwrap();
        let r = r.into_success().unwrap();
        let events = r.events();
        assert_eq!(events[0].kind, EventType::ParticipantJoined);
        assert_eq!(events[0].from.kind, ParticipantType::Client);
        assert_eq!(r.next_position(&events), 2);
        let d = details(&events, false, UserData::new());
        assert_eq!(d.state, ChatState::WaitingForAgent);
        assert_eq!(d.participants.len(), 1);
    }

    /// GMS's own `file/limits` reply: the limits in the `file-client-cfg-get` Notice only.
    #[test]
    fn limits_are_read_from_the_gms_notice() {
        let r: Reply = serde_json::from_str(
            r#"{"statusCode":0,"alias":"117","chatEnded":false,"messages":[{"from":
            {"nickname":"John","participantId":1,"type":"Client"},"index":0,"type":"Notice",
            "utcTime":1432845887000,"text":"file-client-cfg-get","userData":{
            "download-attempts":"10","upload-max-files":"5","delete-file":"enabled",
            "upload-max-file-size":"104857600","used-upload-max-total-size":"12",
            "used-upload-max-files":"1","upload-max-total-size":"209715200",
            "upload-need-agent":"true","upload-file-types":"bmp:txt","used-download-attempts":"3"}}]}"#,
        )
        .unwrap();
        let l = file_limits(&r.limits_data());
        assert_eq!(l.max_files, 5);
        assert_eq!(l.max_file_size, 104_857_600);
        assert_eq!(l.max_total_size, 209_715_200);
        assert_eq!(l.file_types, ["bmp", "txt"]);
        assert!(l.need_agent && l.delete_allowed);
        assert_eq!((l.download_attempts, l.used_downloads), (10, 3));
        assert_eq!((l.used_files, l.used_total_size), (1, 12));
        // The top-level copy alone reads the same.
        let top: Reply = serde_json::from_str(
            r#"{"statusCode":0,"userData":{"upload-max-files":"5","delete-file":"false"}}"#,
        )
        .unwrap();
        let l = file_limits(&top.limits_data());
        assert_eq!(l.max_files, 5);
        assert!(!l.delete_allowed);
    }

    #[test]
    fn errors_pass_through() {
        let r: Reply = serde_json::from_str(
            r#"{"statusCode":2,"chatEnded":true,"errors":[{"code":211,"message":"ended"}]}"#,
        )
        .unwrap();
        assert_eq!(
            r.into_success().unwrap_err(),
            BackendError::Remote {
                status_code: 2,
                code: 211,
                message: "ended".into(),
                chat_ended: true
            }
        );
        let r: Reply = serde_json::from_str(r#"{"statusCode":1}"#).unwrap();
        let e = r.into_success().unwrap_err();
        assert!(e.retryable() && !e.never_arrived());
    }
}
