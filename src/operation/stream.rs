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

use super::{Chats, ClientCredentials};
use crate::credentials::Purpose;

/// The payload a stream token seals: the chat id, then the credentials (user id, tenant,
/// alias, the client's sealed secureKey), each a 16-bit big-endian length and its bytes.
/// Public for tests that seal tokens a gateway would not hand out (expired ones).
pub fn stream_payload(chat_id: &str, creds: &ClientCredentials) -> Vec<u8> {
    let fields = [
        chat_id,
        &creds.user_id,
        &creds.tenant_name,
        &creds.alias,
        &creds.secure_key,
    ];
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 2).sum());
    for field in fields {
        // Chat ids, user ids, tenants, aliases and keys are short; a longer field is cut at
        // the bound, and such a token opens to credentials that fail the MAC check.
        let bytes = &field.as_bytes()[..field.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// The fields of a [`stream_payload`], or `None` when it is not one.
fn read_payload(mut bytes: &[u8]) -> Option<[String; 5]> {
    let mut fields: [String; 5] = Default::default();
    for field in &mut fields {
        let (len, rest) = bytes.split_first_chunk::<2>()?;
        let len = u16::from_be_bytes(*len) as usize;
        let (value, rest) = (rest.get(..len)?, &rest[len..]);
        *field = String::from_utf8(value.to_vec()).ok()?;
        bytes = rest;
    }
    bytes.is_empty().then_some(fields)
}

/// A stream token for the chat `chat_id` with these credentials, valid for the configured
/// lifetime.
pub fn stream_token(gw: &Chats, chat_id: &str, creds: &ClientCredentials) -> String {
    gw.credentials().tokens().seal(
        Purpose::Stream,
        &stream_payload(chat_id, creds),
        Some(gw.stream_token_ttl()),
    )
}

/// The credentials inside a stream token that opens (sealed under this secret, for streams,
/// not expired) and names `chat_id`; `None` for anything else.
pub fn open_stream_token(gw: &Chats, chat_id: &str, token: &str) -> Option<ClientCredentials> {
    let bytes = gw.credentials().tokens().open(Purpose::Stream, token)?;
    let [c, user_id, tenant_name, alias, secure_key] = read_payload(&bytes)?;
    (c == chat_id).then_some(ClientCredentials {
        user_id,
        secure_key,
        alias,
        tenant_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_back_and_anything_else_does_not() {
        let creds = ClientCredentials {
            user_id: "u".into(),
            secure_key: "KEY".into(),
            alias: "117".into(),
            tenant_name: "Environment".into(),
        };
        let payload = stream_payload("chat", &creds);
        let [c, u, t, a, k] = read_payload(&payload).unwrap();
        assert_eq!(
            [c, u, t, a, k],
            ["chat", "u", "Environment", "117", "KEY"].map(String::from)
        );
        assert_eq!(read_payload(&payload[..payload.len() - 1]), None);
        let mut longer = payload.clone();
        longer.push(0);
        assert_eq!(read_payload(&longer), None);
        assert_eq!(read_payload(b""), None);
    }
}
