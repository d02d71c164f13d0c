//! Stream tokens: what opens a chat's event stream (`GET …/events?streamToken=`) where a
//! `secureKey` may not travel (a URL).
//!
//! Owns the token's payload and its two uses: [`stream_token`], minted for every reply on a
//! chat, and [`open_stream_token`], which gives back the chat's credentials when the token
//! names that chat. The token is sealed by `credentials::Tokens` (purpose `Stream`, expiry
//! `push.token_ttl_secs`), so nothing in it can be read or changed without the shared
//! secret, and any replica opens it. It carries the client's sealed `secureKey`, which the
//! stream presents to `run::watch` like any request: the usual checks run on every wait. It
//! must not know HTTP or how a stream is written.

use serde::{Deserialize, Serialize};

use super::{Chats, ClientCredentials};
use crate::credentials::Purpose;

/// What a stream token holds. Short keys: it travels in a URL.
#[derive(Serialize, Deserialize)]
struct Payload {
    /// The chat id: the path's must match.
    c: String,
    u: String,
    t: String,
    a: String,
    /// The client's sealed secureKey (the backend key with its MAC).
    k: String,
}

/// A stream token for the chat `chat_id` with these credentials, valid for the configured
/// lifetime.
pub fn stream_token(gw: &Chats, chat_id: &str, creds: &ClientCredentials) -> String {
    let payload = Payload {
        c: chat_id.to_owned(),
        u: creds.user_id.clone(),
        t: creds.tenant_name.clone(),
        a: creds.alias.clone(),
        k: creds.secure_key.clone(),
    };
    let bytes = serde_json::to_vec(&payload).expect("a struct of strings encodes");
    gw.credentials()
        .tokens()
        .seal(Purpose::Stream, &bytes, Some(gw.stream_token_ttl()))
}

/// The credentials inside a stream token that opens (sealed under this secret, for streams,
/// not expired) and names `chat_id`; `None` for anything else.
pub fn open_stream_token(gw: &Chats, chat_id: &str, token: &str) -> Option<ClientCredentials> {
    let bytes = gw.credentials().tokens().open(Purpose::Stream, token)?;
    let payload: Payload = serde_json::from_slice(&bytes).ok()?;
    (payload.c == chat_id).then(|| ClientCredentials {
        user_id: payload.u,
        secure_key: payload.k,
        alias: payload.a,
        tenant_name: payload.t,
    })
}
