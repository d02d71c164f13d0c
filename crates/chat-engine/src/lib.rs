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
//! - `limits`: the size rules: how long one text may be, how much a transcript holds, how
//!   many events one reply carries (a page; the client polls for the rest);
//! - `files`: file-transfer rules and a chat's files (upload, download, delete);
//! - `engine`: the table of chats, ids, credentials check, session limit, expiry sweep;
//! - `watch`: each chat's bell, rung whenever what a reader sees changes, and
//!   `Engine::wait_for_change`, the wait behind the long poll (no polling; per process);
//! - `adapter`: [`MockBackend`], the `ChatBackend` implementation over an engine.
//!
//! It must not know about HTTP, the Web API JSON shapes, aliases or routing.

mod adapter;
mod behaviour;
mod chat;
mod engine;
mod files;
mod limits;
mod watch;

pub use adapter::MockBackend;
pub use behaviour::{Behaviour, MAX_MESSAGE_BYTES_CEILING};
pub use chat::ChatRecord;
pub use engine::{now_ms, Engine};
pub use files::FileRules;
pub use limits::{PAGE_MAX_BYTES, PAGE_MAX_EVENTS};
pub use watch::Wake;
