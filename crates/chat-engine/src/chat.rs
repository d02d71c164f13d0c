//! One chat: participants, transcript and the rules of each action.
//!
//! All times are milliseconds since the Unix epoch so a [`ChatRecord`] means the same thing
//! in another process (a chat server restoring it from a shared store).

use std::collections::VecDeque;
use std::sync::Arc;

use backend_api::{
    Action, BackendError, ChatDetails, ChatRef, ChatState, Event, EventType, FileContent,
    FileLimits, NewFile, Participant, ParticipantType, Transcript, UserData,
};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::files::ChatFiles;
use crate::limits::{check_len, check_size, content_len, page_len, user_data_len, EVENT_OVERHEAD};
use crate::Behaviour;

/// Something the simulated agent will do at a given time. Materialised lazily: the chat
/// applies every due item before it handles the next request, so no timer runs per chat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Pending {
    at: u64,
    what: Scheduled,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Scheduled {
    AgentJoins,
    AgentReplies,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Slot {
    participant: Participant,
    present: bool,
}

/// The whole state of a chat: what a shared store saves after every event, and what an
/// instance needs to carry the chat on with the same ids and transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatRecord {
    pub chat_id: String,
    pub user_id: String,
    pub secure_key: String,
    pub tenant_name: String,
    pub endpoint: String,
    pub subject: Option<String>,
    pub email_address: Option<String>,
    participants: Vec<Slot>,
    transcript: Vec<Event>,
    user_data: UserData,
    /// Ordered by time; taken from the front as they fall due.
    pending: VecDeque<Pending>,
    replies_sent: u64,
    /// Last request from the customer: the disconnect timeout counts from here.
    pub last_activity: u64,
    /// When the chat ended, if it has.
    pub ended_at: Option<u64>,
    /// The store's version of this record: how many times it has been saved. A save is
    /// accepted only over the version the saver holds (fencing, `chat-server`'s store); 0
    /// for a chat never saved, and for records saved before versions existed.
    #[serde(default)]
    pub version: u64,
    /// Uploaded files (kept with the chat so a restored chat keeps them too).
    #[serde(default, skip_serializing_if = "is_default")]
    files: ChatFiles,
    /// The customer's read marker (its read receipts, the highest index acknowledged,
    /// never past the transcript); absent in records saved before read receipts existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    read_position: Option<u64>,
}

fn is_default(files: &ChatFiles) -> bool {
    *files == ChatFiles::default()
}

const CLIENT: usize = 0;

impl ChatRecord {
    /// A new chat: the customer and the greeting system party join.
    pub(crate) fn open(
        ids: (String, String, String),
        chat: backend_api::NewChat,
        behaviour: &Behaviour,
        now: u64,
    ) -> ChatRecord {
        let (chat_id, user_id, secure_key) = ids;
        let mut record = ChatRecord {
            chat_id,
            user_id,
            secure_key,
            tenant_name: chat.tenant_name,
            endpoint: chat.endpoint,
            subject: chat.subject,
            email_address: chat.email_address,
            participants: Vec::with_capacity(3),
            transcript: Vec::with_capacity(8),
            user_data: chat.user_data,
            pending: VecDeque::new(),
            replies_sent: 0,
            last_activity: now,
            ended_at: None,
            version: 0,
            files: ChatFiles::default(),
            read_position: None,
        };
        let client = record.join(&chat.nickname, ParticipantType::Client, now);
        let _ = client;
        let system = record.join(&behaviour.system_nickname, ParticipantType::External, now);
        record.push(
            system,
            EventType::Message,
            Some(&behaviour.greeting),
            None,
            now,
        );
        record.schedule(now + ms(behaviour.agent_join_delay), Scheduled::AgentJoins);
        record
    }

    /// Whether `chat` carries this chat's userId and secureKey, compared in constant time.
    /// Public so a server restoring a saved record checks it exactly as the engine does.
    pub fn check_credentials(&self, chat: &ChatRef) -> Result<(), BackendError> {
        let user = self.user_id.as_bytes().ct_eq(chat.user_id.as_bytes());
        let key = self.secure_key.as_bytes().ct_eq(chat.secure_key.as_bytes());
        if bool::from(user & key) {
            Ok(())
        } else {
            Err(BackendError::BadCredentials)
        }
    }

    pub fn is_ended(&self) -> bool {
        self.ended_at.is_some()
    }

    pub fn next_position(&self) -> u64 {
        self.transcript.len() as u64 + 1
    }

    /// Brings the chat up to `now`: due agent actions happen, and an idle customer is dropped.
    /// Returns true when the chat ended here.
    pub(crate) fn advance(&mut self, now: u64, behaviour: &Behaviour) -> bool {
        if self.is_ended() {
            return false;
        }
        let idle_deadline = self.last_activity + ms(behaviour.disconnect_timeout);
        while let Some(first) = self.pending.front() {
            if first.at > now || first.at > idle_deadline {
                break;
            }
            let Some(item) = self.pending.pop_front() else {
                break;
            };
            self.apply(item, behaviour);
        }
        if now >= idle_deadline {
            self.end(idle_deadline);
            return true;
        }
        false
    }

    fn apply(&mut self, item: Pending, behaviour: &Behaviour) {
        match item.what {
            Scheduled::AgentJoins => {
                let agent = self.join(&behaviour.agent_nickname, ParticipantType::Agent, item.at);
                self.push(
                    agent,
                    EventType::Message,
                    Some(&behaviour.agent_greeting),
                    None,
                    item.at,
                );
            }
            Scheduled::AgentReplies => {
                let Some(agent) = self.agent() else { return };
                if behaviour.agent_replies.is_empty() {
                    return;
                }
                let n = behaviour.agent_replies.len() as u64;
                let text = &behaviour.agent_replies[(self.replies_sent % n) as usize];
                self.replies_sent += 1;
                self.push(agent, EventType::Message, Some(text), None, item.at);
            }
        }
    }

    /// Runs one customer action. The chat must have been advanced to `now` first.
    pub(crate) fn act(
        &mut self,
        action: Action,
        behaviour: &Behaviour,
        now: u64,
    ) -> Result<bool, BackendError> {
        self.last_activity = now;
        if self.is_ended() {
            // Complete ends the chat "if it hasn't been ended already": on an ended chat it
            // is answered as a read (statusCode 0, chatEnded), not refused.
            return if action.is_write() && action != Action::Complete {
                Err(BackendError::ChatEnded {
                    next_position: self.next_position(),
                })
            } else {
                Ok(false)
            };
        }
        if let Action::SendMessage { text, message_type } = &action {
            if self.is_retry(text, message_type.as_deref(), behaviour, now) {
                // Acknowledged as the message already there (see `is_retry`), even when the
                // transcript has since filled up.
                return Ok(false);
            }
        }
        // Every size rule is checked before anything changes: a refused action leaves no trace.
        self.check_sizes(&action, behaviour)?;
        match action {
            Action::Poll => return Ok(false),
            Action::SendMessage { text, message_type } => {
                self.push(
                    CLIENT,
                    EventType::Message,
                    Some(&text),
                    message_type.as_deref(),
                    now,
                );
                // A pending join is always first: replies are scheduled no earlier than it,
                // and after it at equal times. So only the front needs looking at.
                let join_at = self
                    .pending
                    .front()
                    .filter(|p| p.what == Scheduled::AgentJoins)
                    .map_or(0, |p| p.at);
                let at = (now + ms(behaviour.agent_reply_delay)).max(join_at);
                self.schedule(at, Scheduled::AgentReplies);
                // An agent already there starts typing the answer at once (widgets show it).
                if let Some(agent) = self.agent().filter(|_| behaviour.agent_typing) {
                    self.push(agent, EventType::TypingStarted, None, None, now);
                }
            }
            Action::StartTyping { text } => {
                self.push(CLIENT, EventType::TypingStarted, text.as_deref(), None, now)
            }
            Action::StopTyping { text } => {
                self.push(CLIENT, EventType::TypingStopped, text.as_deref(), None, now)
            }
            Action::UpdateNickname { nickname } => {
                self.participants[CLIENT].participant.nickname = Arc::from(nickname.as_str());
                self.push(
                    CLIENT,
                    EventType::NicknameUpdated,
                    Some(&nickname),
                    None,
                    now,
                );
            }
            Action::PushUrl { url } => self.push(CLIENT, EventType::PushUrl, Some(&url), None, now),
            Action::UpdateUserData { data, text: _ } => self.user_data.extend(data),
            Action::CustomNotice { text } => {
                self.push(CLIENT, EventType::CustomNotice, Some(&text), None, now)
            }
            Action::Complete => {
                self.end(now);
                return Ok(true);
            }
            Action::ReadReceipt { position } => {
                // Only forward, and only up to what exists: a receipt for an event not yet
                // sent (or a late, lower one) cannot move the marker there.
                let read = position.min(self.next_position() - 1);
                if read > self.read_position.unwrap_or(0) {
                    self.read_position = Some(read);
                }
            }
        }
        Ok(false)
    }

    /// Whether a SendMessage repeats the customer's latest event: a message with the same
    /// text and messageType, sent within `behaviour.duplicate_window`. That is a client
    /// retrying after statusCode 1 for a message that was saved but whose answer was lost
    /// (the Web API has no request key to tell it apart). The trade-off: a customer who
    /// really sends the identical text twice within the window is shown it once.
    fn is_retry(
        &self,
        text: &str,
        message_type: Option<&str>,
        behaviour: &Behaviour,
        now: u64,
    ) -> bool {
        let window = ms(behaviour.duplicate_window);
        if window == 0 {
            return false;
        }
        let client = &self.participants[CLIENT].participant;
        let Some(latest) = self
            .transcript
            .iter()
            .rev()
            .find(|e| e.from.participant_id == client.participant_id)
        else {
            return false;
        };
        latest.kind == EventType::Message
            && latest.text.as_deref() == Some(text)
            && latest.message_type.as_deref() == message_type
            && now.saturating_sub(latest.utc_time) < window
    }

    /// The size rules an action must pass: each text it carries within `max_message_bytes`,
    /// the user data as a whole too, and room in the transcript for the event it adds.
    fn check_sizes(&self, action: &Action, behaviour: &Behaviour) -> Result<(), BackendError> {
        let added = match action {
            Action::Poll | Action::Complete | Action::ReadReceipt { .. } => return Ok(()),
            Action::SendMessage { text, message_type } => {
                check_len("text", text, behaviour)?;
                let kind = message_type.as_deref().unwrap_or("");
                check_len("messageType", kind, behaviour)?;
                text.len() + kind.len()
            }
            Action::StartTyping { text } | Action::StopTyping { text } => {
                let text = text.as_deref().unwrap_or("");
                check_len("text", text, behaviour)?;
                text.len()
            }
            Action::CustomNotice { text } => {
                check_len("text", text, behaviour)?;
                text.len()
            }
            Action::UpdateNickname { nickname } => {
                check_len("nickname", nickname, behaviour)?;
                // The event carries it twice: as its text and as the sender's nickname.
                2 * nickname.len()
            }
            Action::PushUrl { url } => {
                check_len("pushUrl", url, behaviour)?;
                url.len()
            }
            Action::UpdateUserData { data, .. } => {
                // The chat's user data after the update, as a whole (it adds no event).
                let replaced: usize = data
                    .keys()
                    .filter_map(|k| self.user_data.get(k).map(|v| k.len() + v.len()))
                    .sum();
                let after = user_data_len(&self.user_data) - replaced + user_data_len(data);
                return check_size("userData", after, behaviour);
            }
        };
        self.check_room(added, behaviour)
    }

    /// Refuses a customer event of `added` content bytes when the transcript is full.
    fn check_room(&self, added: usize, behaviour: &Behaviour) -> Result<(), BackendError> {
        let events = self.transcript.len() as u64;
        if events >= behaviour.max_transcript_events {
            return Err(BackendError::TranscriptFull(format!(
                "{events} events, at most {}",
                behaviour.max_transcript_events
            )));
        }
        let nickname = self.participants[CLIENT].participant.nickname.len();
        let bytes: usize = self.transcript.iter().map(content_len).sum();
        let after = bytes + EVENT_OVERHEAD + nickname + added;
        if after > behaviour.max_transcript_bytes {
            return Err(BackendError::TranscriptFull(format!(
                "{bytes} bytes, at most {}",
                behaviour.max_transcript_bytes
            )));
        }
        Ok(())
    }

    /// The events a refresh asked for, at most one page of them (see `limits`), and the
    /// position to ask for next: one past the last event sent, so a client that polls from
    /// it gets the rest, every event exactly once.
    pub(crate) fn page(&self, transcript: Transcript, budget: usize) -> (Vec<Event>, u64) {
        let Transcript::From(n) = transcript else {
            return (Vec::new(), self.next_position());
        };
        let start = (n.max(1) - 1) as usize;
        let Some(rest) = self.transcript.get(start..) else {
            return (Vec::new(), self.next_position());
        };
        let len = page_len(rest, budget);
        let events = rest[..len].to_vec();
        let next = events.last().map_or(self.next_position(), |e| e.index + 1);
        (events, next)
    }

    pub(crate) fn details(&self) -> ChatDetails {
        let state = if self.is_ended() {
            ChatState::Idle
        } else if self.agent().is_some() {
            ChatState::Chatting
        } else {
            ChatState::WaitingForAgent
        };
        ChatDetails {
            state,
            participants: self
                .participants
                .iter()
                .filter(|s| s.present)
                .map(|s| s.participant.clone())
                .collect(),
            user_data: self.user_data.clone(),
            read_position: self.read_position,
        }
    }

    fn agent(&self) -> Option<usize> {
        self.participants
            .iter()
            .position(|s| s.present && s.participant.kind == ParticipantType::Agent)
    }

    fn end(&mut self, at: u64) {
        // Files are for the conversation: once it is over their bytes go (the engine's
        // budget gets them back); the transcript, with its file events, stays readable.
        self.files.release();
        self.participants[CLIENT].present = false;
        self.push(CLIENT, EventType::ParticipantLeft, None, None, at);
        self.pending.clear();
        self.ended_at = Some(at);
    }

    fn join(&mut self, nickname: &str, kind: ParticipantType, at: u64) -> usize {
        let slot = self.participants.len();
        self.participants.push(Slot {
            participant: Participant {
                nickname: Arc::from(nickname),
                participant_id: slot as u32 + 1,
                kind,
            },
            present: true,
        });
        self.push(slot, EventType::ParticipantJoined, None, None, at);
        slot
    }

    fn push(
        &mut self,
        who: usize,
        kind: EventType,
        text: Option<&str>,
        message_type: Option<&str>,
        at: u64,
    ) {
        let index = self.next_position();
        self.transcript.push(Event {
            index,
            kind,
            from: self.participants[who].participant.clone(),
            text: text.map(Arc::from),
            message_type: message_type.map(Arc::from),
            utc_time: at,
            user_data: UserData::new(),
        });
    }

    pub(crate) fn file_limits(&self, behaviour: &Behaviour) -> FileLimits {
        self.files.limits(&behaviour.files)
    }

    /// Bytes of file content this chat holds.
    pub(crate) fn file_bytes(&self) -> u64 {
        self.files.held_bytes()
    }

    /// Drops the file bytes of an ended chat (a record saved before chats released them).
    pub(crate) fn release_files_if_ended(&mut self) {
        if self.is_ended() {
            self.files.release();
        }
    }

    /// Stores an uploaded file and records a `FileUploaded` event. Refused once ended.
    /// `reserve` is asked for the file's bytes once every rule of the chat has passed.
    pub(crate) fn upload(
        &mut self,
        file: NewFile,
        behaviour: &Behaviour,
        now: u64,
        reserve: impl FnOnce(u64) -> Result<(), BackendError>,
    ) -> Result<String, BackendError> {
        self.refuse_if_ended()?;
        check_len("fileName", &file.name, behaviour)?;
        // The event's attributes (id, name, size, type) come to a few hundred bytes at most.
        self.check_room(2 * file.name.len() + 256, behaviour)?;
        let name = file.name.clone();
        let agent = self.agent().is_some();
        let (id, attributes) = self.files.upload(file, &behaviour.files, agent, reserve)?;
        self.push(CLIENT, EventType::FileUploaded, Some(&name), None, now);
        if let Some(e) = self.transcript.last_mut() {
            e.user_data = attributes;
        }
        Ok(id)
    }

    /// A file's content. Refused once the chat ended: its files were released then.
    pub(crate) fn download(
        &mut self,
        id: &str,
        behaviour: &Behaviour,
    ) -> Result<FileContent, BackendError> {
        self.refuse_if_ended()?;
        self.files.download(id, &behaviour.files)
    }

    /// Deletes a file and records a `FileDeleted` event. Refused once ended.
    pub(crate) fn delete_file(
        &mut self,
        id: &str,
        behaviour: &Behaviour,
        now: u64,
    ) -> Result<(), BackendError> {
        self.refuse_if_ended()?;
        let attributes = self.files.delete(id, &behaviour.files)?;
        let name = attributes.get("file-name").cloned();
        self.push(CLIENT, EventType::FileDeleted, name.as_deref(), None, now);
        if let Some(e) = self.transcript.last_mut() {
            e.user_data = attributes;
        }
        Ok(())
    }

    fn refuse_if_ended(&self) -> Result<(), BackendError> {
        if self.is_ended() {
            return Err(BackendError::ChatEnded {
                next_position: self.next_position(),
            });
        }
        Ok(())
    }

    /// When the next scheduled event (the agent joining or replying) falls due, in ms since
    /// the epoch: a watcher wakes then and reads the chat, which materialises it. `None` when
    /// nothing is scheduled or the chat has ended.
    pub fn next_due(&self) -> Option<u64> {
        if self.is_ended() {
            return None;
        }
        self.pending.front().map(|p| p.at)
    }

    fn schedule(&mut self, at: u64, what: Scheduled) {
        let pos = self.pending.partition_point(|p| p.at <= at);
        self.pending.insert(pos, Pending { at, what });
    }
}

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}
