//! What the simulated parties say, and the timeouts of an instance.

use std::time::Duration;

/// The behaviour of one chat instance. Plain data, validated by whoever builds it.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Nickname of the system party (`External`) that greets every new chat.
    pub system_nickname: String,
    /// What the system party says when the customer joins.
    pub greeting: String,
    /// Nickname of the simulated agent.
    pub agent_nickname: String,
    /// How long after the chat starts the agent joins.
    pub agent_join_delay: Duration,
    /// What the agent says on joining.
    pub agent_greeting: String,
    /// The agent's answers to customer messages, used in turn.
    pub agent_replies: Vec<String>,
    /// How long the agent takes to answer a message.
    pub agent_reply_delay: Duration,
    /// A customer who makes no request for this long is removed and the chat ends.
    pub disconnect_timeout: Duration,
    /// The most open chats the instance hosts; past it new chats are refused (retryable).
    pub session_limit: u64,
    /// How long an ended chat stays readable (GetChat / Get Messages) before it is forgotten.
    pub ended_retention: Duration,
    /// File-transfer rules (the GMS dialect's `file/…` operations).
    pub files: crate::FileRules,
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
            files: crate::FileRules::default(),
        }
    }
}
