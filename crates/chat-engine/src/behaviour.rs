//! What the simulated parties say, and the timeouts of an instance: also the `[mock]`
//! section of the gateway's configuration (embedded `kind = "mock"` instances).
//!
//! Owns the section's keys, defaults and local validation; it must not read files.

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
    /// A customer who makes no request for this long is removed and the chat ends.
    #[serde(rename = "disconnect_timeout_secs", deserialize_with = "secs")]
    pub disconnect_timeout: Duration,
    /// The most open chats the instance hosts; past it new chats are refused (retryable).
    pub session_limit: u64,
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
}

impl Behaviour {
    /// Checks what types alone cannot; the key is relative to the section
    /// (`session_limit`, `files.max_file_size`).
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.files.max_file_size > self.files.max_total_size {
            return Err(Invalid::new(
                "files.max_file_size",
                "must not exceed files.max_total_size",
            ));
        }
        nonzero("disconnect_timeout_secs", self.disconnect_timeout)?;
        if self.session_limit == 0 {
            return Err(Invalid::new("session_limit", "must be greater than 0"));
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
            disconnect_timeout: Duration::from_secs(45),
            session_limit: 1000,
            ended_retention: Duration::from_secs(300),
            // Longer than a gateway request timeout plus a client's retry delay.
            duplicate_window: Duration::from_secs(30),
            files: crate::FileRules::default(),
        }
    }
}
