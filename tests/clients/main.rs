//! The client-compatibility suite: what public GMS Chat API v2 and Web API clients send,
//! replayed black-box over real sockets, each test named after the client behaviour it
//! replays (docs/gms.md "Compatibility" lists the rules and the clients behind them).
//! One module per area; the browser tests drive a real Chromium (`browser`: a GMS-style
//! page; `chat_widget`: the gateway's own widget).

#[path = "../common/mod.rs"]
mod common;

mod browser;
mod chat_widget;
mod cometd;
mod gms_shapes;
mod push;
mod tls_h2;
mod tolerance;
mod transport;
