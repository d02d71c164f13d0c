//! The client-compatibility suite: what public GMS Chat API v2 and Web API clients send,
//! replayed black-box over real sockets, each test named after the client behaviour it
//! replays (docs/gms.md "Compatibility" lists the rules and the clients behind them).
//! One module per area; the browser test drives a real Chromium.

#[path = "../common/mod.rs"]
mod common;

mod browser;
mod cometd;
mod gms_shapes;
mod push;
mod tolerance;
mod transport;
