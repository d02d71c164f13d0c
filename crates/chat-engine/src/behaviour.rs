//! What the simulated parties say, and the timeouts of an instance: also the `[mock]`
//! section of the gateway's configuration (embedded `kind = "mock"` instances).
//!
//! Owns the section's keys, defaults and local validation; it must not read files.

use std::num::NonZeroU64;
use std::time::Duration;

use config_types::{millis, nonzero, secs, Invalid};
use serde::Deserialize;

/// The behaviour of one chat instance. Plain data; [`Behaviour::validate`] says what is
/// wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Behaviour {
    /// Nickname of the system party (`External`) that greets every new chat.
    pub system_nickname: String,
    /// What the system party says when the customer joins.
    pub greeting: String,
    /// Nickname of the simulated agent.
    pub agent_nickname: String,
    /// How long after the chat starts the agent joins.
    #[serde(rename = "agent_join_delay_ms", deserialize_with = "millis")]
    pub agent_join_delay: Duration,
    /// What the agent says on joining.
    pub agent_greeting: String,
    /// The agent's answers to customer messages, used in turn.
    pub agent_replies: Vec<String>,
    /// How long the agent takes to answer a message.
    #[serde(rename = "agent_reply_delay_ms", deserialize_with = "millis")]
    pub agent_reply_delay: Duration,
    /// Whether the agent, once joined, shows that it is typing (a `TypingStarted` event)
    /// as soon as a customer message arrives; its answer follows after the reply delay.
    pub agent_typing: bool,
    /// A customer who makes no request for this long is removed and the chat ends.
    #[serde(rename = "disconnect_timeout_secs", deserialize_with = "secs")]
    pub disconnect_timeout: Duration,
    /// The most open chats the instance hosts; past it new chats are refused (retryable).
    pub session_limit: NonZeroU64,
    /// How long an ended chat stays readable (GetChat / Get Messages) before it is forgotten.
    #[serde(rename = "ended_retention_secs", deserialize_with = "secs")]
    pub ended_retention: Duration,
    /// A SendMessage repeating the customer's latest event (same text and messageType)
    /// within this window is a client's retry of a message whose answer was lost: it is
    /// acknowledged as that message and not appended again. A customer who sends the
    /// identical text twice within the window is shown it once. 0 turns this off.
    #[serde(rename = "duplicate_window_ms", deserialize_with = "millis")]
    pub duplicate_window: Duration,
    /// File-transfer rules (the GMS dialect's `file/…` operations).
    pub files: crate::FileRules,
    /// Most bytes of uploaded files the instance holds, all its chats together. An upload
    /// past it is refused (retryable, `FileRefusal::NoRoom`) and nothing of it is kept; a
    /// chat's files are released when it ends, so room comes back as chats end. Bounds the
    /// memory files cost whatever the rate of new chats. At least `files.max_file_size`.
    pub max_file_bytes_total: u64,
    /// Longest text the customer may send in one action, in UTF-8 bytes: a message, a
    /// typing or custom notice, a nickname, a URL, and each of a new chat's fields; a chat's
    /// user data as a whole. Longer is refused (`BackendError::TooLong`), nothing applied.
    /// At most [`MAX_MESSAGE_BYTES_CEILING`], so one event always fits a transcript page.
    pub max_message_bytes: usize,
    /// Most events a transcript holds. Past it the customer's actions that add events are
    /// refused (`BackendError::TranscriptFull`); the chat can still be read and completed.
    pub max_transcript_events: u64,
    /// Most bytes of content a transcript holds (each event's text, nickname and attributes,
    /// plus a fixed overhead per event), with the same refusal as `max_transcript_events`.
    /// Bounds what one chat costs in memory and in every save to the store.
    pub max_transcript_bytes: usize,
}

/// The highest `max_message_bytes` accepted: 64 KiB. Even escaped at its worst (6 bytes of
/// JSON per byte), one event then stays below [`crate::PAGE_MAX_BYTES`], so a page always
/// holds at least the next event.
pub const MAX_MESSAGE_BYTES_CEILING: usize = 64 * 1024;

impl Behaviour {
    /// Checks what types alone cannot; the key is relative to the section
    /// (`disconnect_timeout_secs`, `files.max_file_size`).
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.files.max_file_size > self.files.max_total_size {
            return Err(Invalid::new(
                "files.max_file_size",
                "must not exceed files.max_total_size",
            ));
        }
        if self.max_file_bytes_total < self.files.max_file_size {
            return Err(Invalid::new(
                "max_file_bytes_total",
                "must be at least files.max_file_size",
            ));
        }
        nonzero("disconnect_timeout_secs", self.disconnect_timeout)?;
        if self.max_message_bytes == 0 || self.max_message_bytes > MAX_MESSAGE_BYTES_CEILING {
            return Err(Invalid::new(
                "max_message_bytes",
                "must be between 1 and 65536",
            ));
        }
        if self.max_transcript_events < 10 {
            return Err(Invalid::new("max_transcript_events", "must be at least 10"));
        }
        if self.max_transcript_bytes < self.max_message_bytes {
            return Err(Invalid::new(
                "max_transcript_bytes",
                "must be at least max_message_bytes",
            ));
        }
        Ok(())
    }
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            system_nickname: "system".into(),
            greeting: "Thank you for contacting us. An agent will be with you shortly.".into(),
            agent_nickname: "Agent".into(),
            agent_join_delay: Duration::from_secs(3),
            agent_greeting: "Hello, my name is Agent. How can I help you today?".into(),
            agent_replies: vec![
                "Thank you, let me check that for you.".into(),
                "I see. Could you tell me a little more?".into(),
                "Understood. Is there anything else I can help with?".into(),
            ],
            agent_reply_delay: Duration::from_secs(1),
            agent_typing: false,
            disconnect_timeout: Duration::from_secs(45),
            session_limit: NonZeroU64::new(1000).expect("non-zero"),
            ended_retention: Duration::from_secs(300),
            // Longer than a gateway request timeout plus a client's retry delay.
            duplicate_window: Duration::from_secs(30),
            files: crate::FileRules::default(),
            max_file_bytes_total: 256 * 1024 * 1024,
            max_message_bytes: 16 * 1024,
            max_transcript_events: 2000,
            max_transcript_bytes: 1024 * 1024,
        }
    }
}
