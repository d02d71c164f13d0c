//! The table of chats of one instance: ids, credentials, session limit and expiry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backend_api::{
    BackendError, ChatCreated, ChatRef, ChatUpdate, FileContent, FileLimits, FileRefusal, Load,
    NewChat, NewFile, Refresh, Transcript,
};
use dashmap::DashMap;
use rand::Rng;

use crate::limits::{check_len, check_size, events_budget, user_data_len, PAGE_MAX_BYTES};
use crate::watch::{seen, Slot};
use crate::{Behaviour, ChatRecord};

/// Milliseconds since the Unix epoch: the engine's only clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One chat instance's chats. Every method is synchronous and short: a lock on one chat,
/// never across I/O (the one async method, `wait_for_change`, holds no lock while it waits).
/// Whatever changes what a reader of a chat sees rings that chat's bell (see `watch`).
pub struct Engine {
    behaviour: Behaviour,
    chats: DashMap<Box<str>, Arc<Slot>>,
    /// Chats not yet ended: what the session limit counts.
    active: AtomicU64,
    /// Requests on existing chats received, whatever their outcome: lets operators and
    /// tests see whether a request reached this instance at all.
    requests: AtomicU64,
    /// Bytes of uploaded files held by all chats: what `max_file_bytes_total` bounds. Raised
    /// by an upload's reservation before the file is kept, lowered whenever a chat's files
    /// shrink (delete, end, a record replaced or forgotten).
    file_bytes: AtomicU64,
}

impl Engine {
    pub fn new(behaviour: Behaviour) -> Arc<Engine> {
        Arc::new(Engine {
            behaviour,
            chats: DashMap::new(),
            active: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            file_bytes: AtomicU64::new(0),
        })
    }

    pub fn behaviour(&self) -> &Behaviour {
        &self.behaviour
    }

    /// Starts the background sweep that ends idle chats and forgets expired ones. It stops by
    /// itself once the engine is dropped.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Engine> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(engine) = weak.upgrade() else { return };
                engine.sweep(now_ms());
            }
        })
    }

    /// Ends chats whose customer went silent and forgets ended chats past their retention.
    pub fn sweep(&self, now: u64) {
        let retention = self.behaviour.ended_retention.as_millis() as u64;
        self.chats.retain(|_, slot| {
            let mut chat = slot.lock();
            let before = seen(&chat);
            if self.tracked(&mut chat, |c| c.advance(now, &self.behaviour)) {
                self.active.fetch_sub(1, Ordering::Relaxed);
            }
            let keep = chat.ended_at.is_none_or(|at| at + retention > now);
            if !keep {
                self.file_bytes_changed(chat.file_bytes(), 0);
            }
            if !keep || seen(&chat) != before {
                slot.ring();
            }
            keep
        });
    }

    pub fn load(&self) -> Load {
        let active = self.active.load(Ordering::Relaxed);
        Load {
            active,
            limit: self.behaviour.session_limit.get(),
            accepting: active < self.behaviour.session_limit.get(),
        }
    }

    /// Login + join: a new chat with fresh ids and key.
    pub fn create(&self, chat: NewChat) -> Result<ChatCreated, BackendError> {
        check_new_chat(&chat, &self.behaviour)?;
        // Reserve a place first so concurrent creates cannot overshoot the limit.
        let limit = self.behaviour.session_limit.get();
        if self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_err()
        {
            return Err(BackendError::Overloaded(format!(
                "session limit of {limit} reached"
            )));
        }
        let now = now_ms();
        let mut rng = rand::thread_rng();
        loop {
            let chat_id = random_chat_id(&mut rng);
            let entry = match self.chats.entry(chat_id.clone().into_boxed_str()) {
                dashmap::Entry::Occupied(_) => continue,
                dashmap::Entry::Vacant(v) => v,
            };
            let ids = (chat_id, random_hex(&mut rng), random_hex(&mut rng));
            let record = ChatRecord::open(ids, chat, &self.behaviour, now);
            let (messages, next_position) = record.page(Transcript::From(1), PAGE_MAX_BYTES);
            let created = ChatCreated {
                chat: ChatRef {
                    chat_id: record.chat_id.clone(),
                    user_id: record.user_id.clone(),
                    secure_key: record.secure_key.clone(),
                },
                messages,
                next_position,
            };
            entry.insert(Slot::new(record));
            return Ok(created);
        }
    }

    /// One action on a chat, after checking its credentials.
    pub fn refresh(&self, chat: &ChatRef, request: Refresh) -> Result<ChatUpdate, BackendError> {
        self.on_record(chat, |record, behaviour, now| {
            if self.tracked(record, |r| r.act(request.action, behaviour, now))? {
                self.active.fetch_sub(1, Ordering::Relaxed);
            }
            Ok(reply(record, request.transcript, request.details))
        })
    }

    /// Like [`Engine::refresh`], on a copy of the chat: the live chat is left as it was and
    /// the copy, with its version one past the live one's, is returned for the caller to save
    /// and then [`Engine::publish`]. A caller that cannot save simply drops the copy, so
    /// nothing is half-applied. The caller keeps other refreshes of the chat out until it
    /// publishes (the chat server's save lock).
    pub fn refresh_copy(
        &self,
        chat: &ChatRef,
        request: Refresh,
    ) -> Result<(ChatUpdate, ChatRecord), BackendError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let entry = self
            .chats
            .get(chat.chat_id.as_str())
            .map(|e| Arc::clone(e.value()))
            .ok_or(BackendError::UnknownChat)?;
        let mut record = {
            let live = entry.lock();
            live.check_credentials(chat)?;
            live.clone()
        };
        let now = now_ms();
        record.advance(now, &self.behaviour);
        record.last_activity = now;
        record.act(request.action, &self.behaviour, now)?;
        record.version += 1;
        Ok((reply(&record, request.transcript, request.details), record))
    }

    /// Makes a saved copy the live chat (see [`Engine::refresh_copy`]). A chat forgotten in
    /// the meantime (discarded) stays forgotten.
    pub fn publish(&self, record: ChatRecord) {
        let Some(entry) = self
            .chats
            .get(record.chat_id.as_str())
            .map(|e| Arc::clone(e.value()))
        else {
            return;
        };
        let mut live = entry.lock();
        self.count_change(live.is_ended(), record.is_ended());
        self.file_bytes_changed(live.file_bytes(), record.file_bytes());
        let changed = seen(&live) != seen(&record);
        *live = record;
        drop(live);
        if changed {
            entry.ring();
        }
    }

    /// Keeps the session count right when a chat's record is replaced.
    fn count_change(&self, was_ended: bool, is_ended: bool) {
        match (was_ended, is_ended) {
            (false, true) => {
                self.active.fetch_sub(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.active.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Runs `g` on a chat and keeps the engine's count of file bytes right for whatever `g`
    /// did to the chat's files (ending the chat releases them).
    fn tracked<T>(&self, record: &mut ChatRecord, g: impl FnOnce(&mut ChatRecord) -> T) -> T {
        let before = record.file_bytes();
        let out = g(record);
        self.file_bytes_changed(before, record.file_bytes());
        out
    }

    fn file_bytes_changed(&self, before: u64, after: u64) {
        if after > before {
            self.file_bytes.fetch_add(after - before, Ordering::AcqRel);
        } else if before > after {
            self.file_bytes.fetch_sub(before - after, Ordering::AcqRel);
        }
    }

    /// Takes room for `size` bytes of file under `max_file_bytes_total`, or refuses: the
    /// upload's reservation, taken before the file is kept so concurrent uploads on
    /// different chats cannot overshoot the budget together.
    fn reserve_file_bytes(&self, size: u64) -> Result<(), BackendError> {
        let budget = self.behaviour.max_file_bytes_total;
        self.file_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(size).filter(|&n| n <= budget)
            })
            .map(drop)
            .map_err(|_| FileRefusal::NoRoom(budget).into())
    }

    /// Bytes of uploaded files held by all chats now (at most `max_file_bytes_total`).
    pub fn file_bytes_held(&self) -> u64 {
        self.file_bytes.load(Ordering::Acquire)
    }

    /// Runs `f` on a chat after checking its credentials and bringing it up to now: the
    /// common part of every operation on a chat. Any request is customer activity.
    fn on_record<T>(
        &self,
        chat: &ChatRef,
        f: impl FnOnce(&mut ChatRecord, &Behaviour, u64) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let entry = self
            .chats
            .get(chat.chat_id.as_str())
            .map(|e| Arc::clone(e.value()))
            .ok_or(BackendError::UnknownChat)?;
        let mut record = entry.lock();
        record.check_credentials(chat)?;
        let before = seen(&record);
        let now = now_ms();
        if self.tracked(&mut record, |r| r.advance(now, &self.behaviour)) {
            self.active.fetch_sub(1, Ordering::Relaxed);
        }
        record.last_activity = now;
        let out = f(&mut record, &self.behaviour, now);
        let changed = seen(&record) != before;
        drop(record);
        if changed {
            entry.ring();
        }
        out
    }

    /// A chat's slot (record and bell), if held here.
    pub(crate) fn slot(&self, chat_id: &str) -> Option<Arc<Slot>> {
        self.chats.get(chat_id).map(|e| Arc::clone(e.value()))
    }

    pub fn file_limits(&self, chat: &ChatRef) -> Result<FileLimits, BackendError> {
        self.on_record(chat, |r, b, _| Ok(r.file_limits(b)))
    }

    pub fn upload_file(&self, chat: &ChatRef, file: NewFile) -> Result<String, BackendError> {
        // The reservation is the only change to the count: the file is kept exactly when it
        // succeeds (the chat's own rules refuse before it is asked).
        self.on_record(chat, |r, b, now| {
            r.upload(file, b, now, |size| self.reserve_file_bytes(size))
        })
    }

    pub fn download_file(&self, chat: &ChatRef, id: &str) -> Result<FileContent, BackendError> {
        self.on_record(chat, |r, b, _| r.download(id, b))
    }

    pub fn delete_file(&self, chat: &ChatRef, id: &str) -> Result<(), BackendError> {
        self.on_record(chat, |r, b, now| {
            self.tracked(r, |r| r.delete_file(id, b, now))
        })
    }

    /// A copy of a chat's whole state.
    pub fn snapshot(&self, chat_id: &str) -> Option<ChatRecord> {
        self.chats.get(chat_id).map(|e| e.value().lock().clone())
    }

    /// Takes over a chat saved by another instance. Refused (retryable) at the session limit.
    /// A copy of the chat already here is replaced: the record given is the store's, and the
    /// store's is never older than a local copy (a local copy is older when the chat moved
    /// away and back, or this instance was frozen while another carried the chat on).
    pub fn adopt(&self, mut record: ChatRecord) -> Result<(), BackendError> {
        record.release_files_if_ended();
        if let Some(entry) = self
            .chats
            .get(record.chat_id.as_str())
            .map(|e| Arc::clone(e.value()))
        {
            let mut live = entry.lock();
            self.count_change(live.is_ended(), record.is_ended());
            self.file_bytes_changed(live.file_bytes(), record.file_bytes());
            *live = record;
            drop(live);
            entry.ring();
            return Ok(());
        }
        if !record.is_ended() {
            let limit = self.behaviour.session_limit.get();
            self.active
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                })
                .map_err(|_| {
                    BackendError::Overloaded(format!("session limit of {limit} reached"))
                })?;
        }
        // Adopted files count against the budget but are not refused by it: the chat (and
        // its files) already exist, and refusing would lose them.
        self.file_bytes_changed(0, record.file_bytes());
        let key = record.chat_id.clone().into_boxed_str();
        self.chats.insert(key, Slot::new(record));
        Ok(())
    }

    /// Forgets a chat at once, freeing its place under the session limit. For a caller that
    /// could not make the chat durable (the chat server when its store refuses the first save)
    /// and so must not leave a chat behind that nobody holds the credentials of.
    pub fn discard(&self, chat_id: &str) {
        if let Some((_, slot)) = self.chats.remove(chat_id) {
            let chat = slot.lock();
            if !chat.is_ended() {
                self.active.fetch_sub(1, Ordering::Relaxed);
            }
            self.file_bytes_changed(chat.file_bytes(), 0);
            drop(chat);
            slot.ring();
        }
    }

    /// Requests on existing chats received so far, refused ones included.
    pub fn requests_seen(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Number of chats held, ended ones included.
    pub fn len(&self) -> usize {
        self.chats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chats.is_empty()
    }
}

/// A new chat's fields each within `max_message_bytes`, its user data as a whole too.
fn check_new_chat(chat: &NewChat, behaviour: &Behaviour) -> Result<(), BackendError> {
    check_len("nickname", &chat.nickname, behaviour)?;
    check_len("endpoint", &chat.endpoint, behaviour)?;
    for (field, value) in [
        ("firstName", &chat.first_name),
        ("lastName", &chat.last_name),
        ("emailAddress", &chat.email_address),
        ("subject", &chat.subject),
    ] {
        check_len(field, value.as_deref().unwrap_or(""), behaviour)?;
    }
    check_size("userData", user_data_len(&chat.user_data), behaviour)
}

const ID_ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// 16 characters like the original's `00019a9SXTQW001N`, from a CSPRNG.
fn random_chat_id(rng: &mut impl Rng) -> String {
    (0..16)
        .map(|_| ID_ALPHABET[rng.gen_range(0..ID_ALPHABET.len())] as char)
        .collect()
}

/// 64 bits from a CSPRNG as 16 upper-case hex digits (user ids and secure keys).
fn random_hex(rng: &mut impl Rng) -> String {
    format!("{:016X}", rng.gen::<u64>())
}

/// What a refresh answers: the chat's state and at most one page of the transcript asked
/// for, `next_position` at the first event not sent (see `limits`).
fn reply(record: &ChatRecord, transcript: Transcript, details: bool) -> ChatUpdate {
    let details = details.then(|| record.details());
    let budget = events_budget(details.as_ref());
    let (messages, next_position) = record.page(transcript, budget);
    ChatUpdate {
        messages,
        next_position,
        chat_ended: record.is_ended(),
        details,
        secure_key: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend_api::{Action, EventType};

    fn behaviour() -> Behaviour {
        Behaviour {
            agent_join_delay: Duration::from_millis(0),
            agent_reply_delay: Duration::from_millis(0),
            session_limit: std::num::NonZeroU64::new(2).unwrap(),
            ..Behaviour::default()
        }
    }

    fn new_chat() -> NewChat {
        NewChat {
            tenant_name: "Environment".into(),
            nickname: "Ann".into(),
            endpoint: "default".into(),
            ..NewChat::default()
        }
    }

    fn act(engine: &Engine, chat: &ChatRef, action: Action) -> Result<ChatUpdate, BackendError> {
        engine.refresh(
            chat,
            Refresh {
                action,
                transcript: Transcript::From(1),
                details: true,
            },
        )
    }

    #[test]
    fn transcript_is_contiguous_and_agent_answers() {
        let engine = Engine::new(behaviour());
        let created = engine.create(new_chat()).unwrap();
        assert_eq!(created.messages[0].kind, EventType::ParticipantJoined);
        let update = act(
            &engine,
            &created.chat,
            Action::SendMessage {
                text: "hi".into(),
                message_type: None,
            },
        )
        .unwrap();
        // The agent joins and greets (due at once), then the message, then the reply is
        // scheduled; the next refresh shows it.
        let update2 = act(&engine, &created.chat, Action::Poll).unwrap();
        let indexes: Vec<u64> = update2.messages.iter().map(|e| e.index).collect();
        assert_eq!(indexes, (1..=indexes.len() as u64).collect::<Vec<_>>());
        assert!(update2.messages.len() > update.messages.len() - 1);
        let last = update2.messages.last().unwrap();
        assert_eq!(last.from.kind, backend_api::ParticipantType::Agent);
        assert_eq!(update2.next_position, indexes.len() as u64 + 1);
    }

    #[test]
    fn a_read_receipt_moves_the_read_marker_forward_only_and_adds_no_event() {
        let engine = Engine::new(behaviour());
        let created = engine.create(new_chat()).unwrap();
        let chat = &created.chat;
        let before = act(&engine, chat, Action::Poll).unwrap();
        assert_eq!(before.details.as_ref().unwrap().read_position, None);
        let last = before.next_position - 1;
        let read = |p| {
            act(&engine, chat, Action::ReadReceipt { position: p })
                .unwrap()
                .details
                .unwrap()
                .read_position
        };
        assert_eq!(read(1), Some(1));
        // Past the end: up to the last event only. A late, lower receipt changes nothing.
        assert_eq!(read(last + 50), Some(last));
        assert_eq!(read(1), Some(last));
        assert_eq!(read(0), Some(last));
        let after = act(&engine, chat, Action::Poll).unwrap();
        assert_eq!(after.next_position, before.next_position, "no event added");
        // Once the chat ended, a receipt is answered (not refused) and records nothing.
        act(&engine, chat, Action::Complete).unwrap();
        let ended = act(&engine, chat, Action::ReadReceipt { position: 999 }).unwrap();
        assert!(ended.chat_ended);
    }

    #[test]
    fn wrong_key_is_refused_and_complete_ends() {
        let engine = Engine::new(behaviour());
        let created = engine.create(new_chat()).unwrap();
        let mut bad = created.chat.clone();
        bad.secure_key = "0000000000000000".into();
        assert_eq!(
            act(&engine, &bad, Action::Poll),
            Err(BackendError::BadCredentials)
        );
        let done = act(&engine, &created.chat, Action::Complete).unwrap();
        assert!(done.chat_ended);
        assert!(matches!(
            act(&engine, &created.chat, Action::StartTyping { text: None }),
            Err(BackendError::ChatEnded { .. })
        ));
        assert!(
            act(&engine, &created.chat, Action::Poll)
                .unwrap()
                .chat_ended
        );
        // A second Complete is answered, not refused: the chat has ended already.
        assert!(
            act(&engine, &created.chat, Action::Complete)
                .unwrap()
                .chat_ended
        );
        assert_eq!(engine.load().active, 0);
    }

    #[test]
    fn session_limit_and_idle_timeout() {
        let engine = Engine::new(Behaviour {
            disconnect_timeout: Duration::from_millis(10),
            ended_retention: Duration::from_millis(10),
            ..behaviour()
        });
        engine.create(new_chat()).unwrap();
        engine.create(new_chat()).unwrap();
        assert!(matches!(
            engine.create(new_chat()),
            Err(BackendError::Overloaded(_))
        ));
        engine.sweep(now_ms() + 15);
        assert_eq!(engine.load().active, 0);
        assert_eq!(
            engine.len(),
            2,
            "ended chats stay readable for the retention"
        );
        engine.sweep(now_ms() + 40);
        assert!(engine.is_empty());
        engine.create(new_chat()).unwrap();
    }

    #[test]
    fn discard_frees_the_place_and_adopt_keeps_the_ids() {
        let engine = Engine::new(behaviour());
        let first = engine.create(new_chat()).unwrap();
        engine.create(new_chat()).unwrap();
        let saved = engine.snapshot(&first.chat.chat_id).unwrap();
        engine.discard(&first.chat.chat_id);
        assert_eq!(engine.load().active, 1);
        assert_eq!(
            act(&engine, &first.chat, Action::Poll),
            Err(BackendError::UnknownChat)
        );
        let other = Engine::new(behaviour());
        saved.check_credentials(&first.chat).unwrap();
        other.adopt(saved).unwrap();
        let update = act(&other, &first.chat, Action::Poll).unwrap();
        assert_eq!(update.messages[0].index, 1);
        assert_eq!(other.load().active, 1);
    }

    #[test]
    fn transcript_positions() {
        let engine = Engine::new(behaviour());
        let created = engine.create(new_chat()).unwrap();
        let r = |t| {
            engine
                .refresh(
                    &created.chat,
                    Refresh {
                        action: Action::Poll,
                        transcript: t,
                        details: false,
                    },
                )
                .unwrap()
        };
        let all = r(Transcript::From(1));
        assert!(r(Transcript::None).messages.is_empty());
        let from3 = r(Transcript::From(3));
        assert_eq!(from3.messages.first().map(|e| e.index), Some(3));
        assert_eq!(from3.messages.len(), all.messages.len() - 2);
        assert!(r(Transcript::From(1000)).messages.is_empty());
    }

    fn send(text: &str) -> Action {
        Action::SendMessage {
            text: text.into(),
            message_type: None,
        }
    }

    #[test]
    fn a_text_over_the_limit_is_refused_and_nothing_is_applied() {
        let engine = Engine::new(Behaviour {
            max_message_bytes: 100,
            ..behaviour()
        });
        let created = engine.create(new_chat()).unwrap();
        // The agent's join falls due at once: let it happen before taking the picture.
        act(&engine, &created.chat, Action::Poll).unwrap();
        let before = engine.snapshot(&created.chat.chat_id).unwrap();
        let long = "x".repeat(101);
        for (action, field) in [
            (send(&long), "text"),
            (
                Action::UpdateNickname {
                    nickname: long.clone(),
                },
                "nickname",
            ),
            (Action::PushUrl { url: long.clone() }, "pushUrl"),
            (
                Action::UpdateUserData {
                    data: [("k".to_owned(), long.clone())].into(),
                    text: None,
                },
                "userData",
            ),
        ] {
            match act(&engine, &created.chat, action) {
                Err(BackendError::TooLong { field: f, limit }) => {
                    assert_eq!((f.as_str(), limit), (field, 100))
                }
                other => panic!("{field}: {other:?}"),
            }
        }
        let mut after = engine.snapshot(&created.chat.chat_id).unwrap();
        after.last_activity = before.last_activity;
        assert_eq!(after, before, "a refused action changed the chat");
        act(&engine, &created.chat, send(&"x".repeat(100))).unwrap();
        let big_user_data = NewChat {
            user_data: [("k".to_owned(), long)].into(),
            ..new_chat()
        };
        assert!(matches!(
            engine.create(big_user_data),
            Err(BackendError::TooLong { .. })
        ));
        assert_eq!(engine.load().active, 1, "a refused chat holds no place");
    }

    #[test]
    fn a_full_transcript_refuses_new_events_but_reads_and_completes() {
        let engine = Engine::new(Behaviour {
            max_transcript_events: 10,
            agent_replies: Vec::new(),
            ..behaviour()
        });
        let created = engine.create(new_chat()).unwrap();
        let mut sent = 0;
        let refusal = loop {
            // Each text differs: a repeat of the latest one would be taken for a retry.
            match act(&engine, &created.chat, send(&format!("hello {sent}"))) {
                Ok(_) => sent += 1,
                Err(e) => break e,
            }
        };
        assert!(
            matches!(refusal, BackendError::TranscriptFull(_)),
            "{refusal:?}"
        );
        assert!(sent > 0);
        let read = act(&engine, &created.chat, Action::Poll).unwrap();
        assert_eq!(read.messages.len(), 10);
        assert!(
            act(&engine, &created.chat, Action::Complete)
                .unwrap()
                .chat_ended
        );

        let engine = Engine::new(Behaviour {
            max_transcript_bytes: 4096,
            agent_replies: Vec::new(),
            ..behaviour()
        });
        let created = engine.create(new_chat()).unwrap();
        let mut n = 0;
        let refusal = loop {
            n += 1;
            if let Err(e) = act(&engine, &created.chat, send(&format!("{n:y>500}"))) {
                break e;
            }
        };
        assert!(
            matches!(refusal, BackendError::TranscriptFull(_)),
            "{refusal:?}"
        );
    }

    #[test]
    fn a_long_transcript_is_read_in_pages_every_event_once() {
        let engine = Engine::new(Behaviour {
            max_message_bytes: 60_000,
            max_transcript_bytes: 4 << 20,
            agent_replies: Vec::new(),
            ..behaviour()
        });
        let created = engine.create(new_chat()).unwrap();
        // Control characters escape to six bytes each: the page is measured as JSON.
        let text = "\u{1}".repeat(10_000) + &"m".repeat(49_990);
        for n in 0..30 {
            act(&engine, &created.chat, send(&format!("{text}{n}"))).unwrap();
        }
        let total = engine
            .snapshot(&created.chat.chat_id)
            .unwrap()
            .next_position()
            - 1;
        let (mut position, mut seen, mut pages) = (1, Vec::new(), 0);
        loop {
            let page = engine
                .refresh(
                    &created.chat,
                    Refresh {
                        action: Action::Poll,
                        transcript: Transcript::From(position),
                        details: true,
                    },
                )
                .unwrap();
            let json: usize = page
                .messages
                .iter()
                .map(|e| serde_json::to_vec(e).unwrap().len())
                .sum();
            assert!(json <= crate::PAGE_MAX_BYTES, "a page of {json} bytes");
            if page.messages.is_empty() {
                assert_eq!(page.next_position, position);
                break;
            }
            pages += 1;
            seen.extend(page.messages.iter().map(|e| e.index));
            position = page.next_position;
        }
        assert_eq!(seen, (1..=total).collect::<Vec<_>>());
        assert!(pages > 3, "{pages} pages");
    }

    fn client_messages(engine: &Engine, chat: &ChatRef) -> Vec<String> {
        act(engine, chat, Action::Poll)
            .unwrap()
            .messages
            .iter()
            .filter(|e| {
                e.kind == EventType::Message && e.from.kind == backend_api::ParticipantType::Client
            })
            .map(|e| e.text.as_deref().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn a_retried_message_within_the_window_is_acknowledged_once() {
        let engine = Engine::new(behaviour());
        let chat = engine.create(new_chat()).unwrap().chat;
        let first = act(&engine, &chat, send("hi")).unwrap();
        let retry = act(&engine, &chat, send("hi")).unwrap();
        assert_eq!(client_messages(&engine, &chat), ["hi"]);
        // The retry is answered as the message already there: same transcript, same end.
        assert!(retry.next_position >= first.next_position);
        // Another event from the customer in between: the same text is a new message.
        act(&engine, &chat, Action::StartTyping { text: None }).unwrap();
        act(&engine, &chat, send("hi")).unwrap();
        // A different text, or a different messageType, is a new message.
        act(&engine, &chat, send("ho")).unwrap();
        act(
            &engine,
            &chat,
            Action::SendMessage {
                text: "ho".into(),
                message_type: Some("text".into()),
            },
        )
        .unwrap();
        assert_eq!(client_messages(&engine, &chat), ["hi", "hi", "ho", "ho"]);
    }

    #[test]
    fn the_duplicate_window_ends_and_zero_turns_it_off() {
        let off = Engine::new(Behaviour {
            duplicate_window: Duration::ZERO,
            ..behaviour()
        });
        let chat = off.create(new_chat()).unwrap().chat;
        act(&off, &chat, send("hi")).unwrap();
        act(&off, &chat, send("hi")).unwrap();
        assert_eq!(client_messages(&off, &chat), ["hi", "hi"]);

        // Outside the window: the same text again is a new message.
        let short = Engine::new(Behaviour {
            duplicate_window: Duration::from_millis(1),
            ..behaviour()
        });
        let chat = short.create(new_chat()).unwrap().chat;
        act(&short, &chat, send("hi")).unwrap();
        let sent_at = now_ms();
        while now_ms() <= sent_at + 1 {
            std::thread::yield_now();
        }
        act(&short, &chat, send("hi")).unwrap();
        assert_eq!(client_messages(&short, &chat), ["hi", "hi"]);
    }

    #[test]
    fn a_copy_changes_nothing_until_published() {
        let engine = Engine::new(behaviour());
        let chat = engine.create(new_chat()).unwrap().chat;
        let before = engine.snapshot(&chat.chat_id).unwrap();
        let request = |action| Refresh {
            action,
            transcript: Transcript::From(1),
            details: false,
        };
        let (update, copy) = engine.refresh_copy(&chat, request(send("hi"))).unwrap();
        assert_eq!(copy.version, before.version + 1);
        assert_eq!(update.next_position, copy.next_position());
        // Not saved: dropped, and the chat is as it was.
        drop(copy);
        assert_eq!(engine.snapshot(&chat.chat_id).unwrap(), before);
        let (_, copy) = engine
            .refresh_copy(&chat, request(Action::Complete))
            .unwrap();
        assert_eq!(engine.load().active, 1, "ended only once published");
        engine.publish(copy.clone());
        assert_eq!(engine.snapshot(&chat.chat_id).unwrap(), copy);
        assert_eq!(engine.load().active, 0);
    }

    fn upload(engine: &Engine, chat: &ChatRef, size: usize) -> Result<String, BackendError> {
        engine.upload_file(
            chat,
            NewFile {
                name: "a.txt".into(),
                content_type: None,
                description: None,
                bytes: std::sync::Arc::from(vec![1u8; size]),
            },
        )
    }

    #[test]
    fn file_bytes_are_bounded_for_all_chats_and_freed_when_a_chat_ends() {
        let engine = Engine::new(Behaviour {
            session_limit: std::num::NonZeroU64::new(10).unwrap(),
            max_file_bytes_total: 1000,
            disconnect_timeout: Duration::from_millis(50),
            files: crate::FileRules {
                max_file_size: 400,
                max_total_size: 800,
                ..crate::FileRules::default()
            },
            ..behaviour()
        });
        let a = engine.create(new_chat()).unwrap().chat;
        let b = engine.create(new_chat()).unwrap().chat;
        let c = engine.create(new_chat()).unwrap().chat;
        let first = upload(&engine, &a, 400).unwrap();
        upload(&engine, &a, 400).unwrap();
        assert_eq!(engine.file_bytes_held(), 800);
        // Within b's own quota, past the instance's budget: refused, retryable, not kept.
        let full = upload(&engine, &b, 300).unwrap_err();
        assert_eq!(full, FileRefusal::NoRoom(1000).into());
        assert!(full.retryable());
        assert_eq!(engine.file_bytes_held(), 800);
        assert_eq!(
            engine.file_limits(&b).unwrap().used_files,
            0,
            "a refused file is not counted against the chat"
        );
        upload(&engine, &b, 200).unwrap();
        assert_eq!(engine.file_bytes_held(), 1000);

        // a ends: its bytes are released, its transcript stays, its files are gone.
        act(&engine, &a, Action::Complete).unwrap();
        assert_eq!(engine.file_bytes_held(), 200);
        assert!(matches!(
            engine.download_file(&a, &first),
            Err(BackendError::ChatEnded { .. })
        ));
        let read = act(&engine, &a, Action::Poll).unwrap();
        let uploaded = read
            .messages
            .iter()
            .filter(|e| e.kind == EventType::FileUploaded)
            .count();
        assert_eq!(uploaded, 2, "the transcript keeps its file events");
        upload(&engine, &c, 400).unwrap();
        assert_eq!(engine.file_bytes_held(), 600);

        // Delete, an idle chat swept, and a discarded one each give their bytes back.
        let id = upload(&engine, &b, 100).unwrap();
        engine.delete_file(&b, &id).unwrap();
        assert_eq!(engine.file_bytes_held(), 600);
        engine.discard(&c.chat_id);
        assert_eq!(engine.file_bytes_held(), 200);
        engine.sweep(now_ms() + 100);
        assert_eq!(engine.load().active, 0);
        assert_eq!(engine.file_bytes_held(), 0);
    }

    #[test]
    fn replaced_and_adopted_records_keep_the_count_right() {
        let engine = Engine::new(behaviour());
        let chat = engine.create(new_chat()).unwrap().chat;
        upload(&engine, &chat, 100).unwrap();
        let with_file = engine.snapshot(&chat.chat_id).unwrap();
        // The chat server's path: a copy ended, saved and published.
        let (_, ended) = engine
            .refresh_copy(
                &chat,
                Refresh {
                    action: Action::Complete,
                    transcript: Transcript::None,
                    details: false,
                },
            )
            .unwrap();
        assert_eq!(engine.file_bytes_held(), 100, "a copy changes nothing");
        engine.publish(ended.clone());
        assert_eq!(engine.file_bytes_held(), 0);
        // Restored elsewhere: an open chat brings its files, an ended one none.
        let other = Engine::new(behaviour());
        other.adopt(with_file.clone()).unwrap();
        assert_eq!(other.file_bytes_held(), 100);
        other.adopt(ended).unwrap();
        assert_eq!(other.file_bytes_held(), 0);
        let mut old_ended = with_file;
        old_ended.ended_at = Some(now_ms());
        let third = Engine::new(behaviour());
        third.adopt(old_ended).unwrap();
        assert_eq!(
            third.file_bytes_held(),
            0,
            "an ended chat's files are not kept"
        );
    }

    #[test]
    fn adopt_replaces_an_older_copy_here() {
        let engine = Engine::new(behaviour());
        let chat = engine.create(new_chat()).unwrap().chat;
        let old = engine.snapshot(&chat.chat_id).unwrap();
        act(&engine, &chat, send("saved elsewhere")).unwrap();
        let newer = engine.snapshot(&chat.chat_id).unwrap();
        let here = Engine::new(behaviour());
        here.adopt(old).unwrap();
        here.adopt(newer.clone()).unwrap();
        assert_eq!(here.snapshot(&chat.chat_id).unwrap(), newer);
        assert_eq!(here.load().active, 1);
        assert_eq!(client_messages(&here, &chat), ["saved elsewhere"]);
    }
}
