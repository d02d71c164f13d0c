//! The embedded chat engine and the mock adapter.
//!
//! [`Engine`] hosts chats the way a small chat server does: the customer joins, a system party
//! greets, a simulated agent joins after a delay and answers every message, idle customers are
//! dropped after the disconnect timeout, and a session limit caps the instance. It is plain
//! synchronous code over in-memory state (a lock per chat), so it is used twice: in-process by
//! [`MockBackend`] (the gateway's default backend) and behind a network protocol by the
//! standalone chat server, which shares it rather than copying it.
//!
//! Layout:
//! - `behaviour`: what the simulated parties say and the timeouts (plain config struct);
//! - `chat`: one chat: participants, transcript, pending scheduled events, and the rules of
//!   each action;
//! - `files`: file-transfer rules and a chat's files (upload, download, delete);
//! - `engine`: the table of chats, ids, credentials check, session limit, expiry sweep;
//! - `adapter`: [`MockBackend`], the `ChatBackend` implementation over an engine.
//!
//! It must not know about HTTP, the Web API JSON shapes, aliases or routing.

mod adapter;
mod behaviour;
mod chat;
mod engine;
mod files;

pub use adapter::MockBackend;
pub use behaviour::Behaviour;
pub use chat::ChatRecord;
pub use engine::{now_ms, Engine};
pub use files::FileRules;
