//! The gateway's adapter to standalone chat servers: [`TcpBackend`] implements `ChatBackend`
//! over the chat-server protocol (`docs/chat-protocol.md`).
//!
//! Layout, in the order a request travels:
//! - `adapter`: [`TcpBackend`]: the in-flight bound, the per-request timeout, the mapping of
//!   every outcome to a `BackendError`, and the status poller behind `load()`;
//! - `pool`: a few connections per instance, each kept up by a task that reconnects with
//!   exponential backoff; picks a live one per request;
//! - `link`: one connection: handshake, a writer task, a reader routing replies to their
//!   callers by request id;
//! - `config`: [`TcpConfig`], plain data with defaults.
//!
//! It is the only code in the gateway that talks to a chat server. It must not know about HTTP,
//! the Web API shapes or routing, and it never retries a request: whether a failure is worth
//! retrying travels in the error it returns.

mod adapter;
mod config;
mod link;
mod pool;

pub use adapter::TcpBackend;
pub use config::TcpConfig;
