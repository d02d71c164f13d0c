//! The two tokens that carry a chat's credentials where a `secureKey` alone cannot:
//!
//! - the **stream token** ([`stream_token`], [`open_stream_token`]): opens a chat's event
//!   stream (`GET …/events?streamToken=`) from a URL. Minted for every reply on a chat,
//!   purpose `Stream`, expiring after `push.token_ttl_secs`. It carries the client's sealed
//!   `secureKey`, which the stream presents to `run::watch` like any request, so the usual
//!   checks run on every wait.
//! - the **chat token** ([`seal_chat_token`], [`open_chat_token`]): a whole chat's
//!   credentials in one value, for clients that carry nothing else (the CometD dialect's
//!   `secureKey`: GMS's CometD operations send only it). Purpose `Chat`, no expiry; only a
//!   chat's checked credentials become one.
//!
//! Owns both payloads: the chat id and the credentials (user id, tenant, alias, a key), each
//! field a 16-bit big-endian length and its bytes ([`pack`], [`unpack`]). Both are sealed by
//! `credentials::Tokens`, so nothing in them can be read or changed without the shared
//! secret, and any replica opens them. It must not route, call a backend, or know HTTP: a
//! token opens into credentials that go through `run`'s checks like any other.

use super::{Chats, ClientCredentials};
use crate::credentials::{Claim, Purpose};
use crate::error::Error;

/// Packs the fields of a token's payload, each as a 16-bit big-endian length and its bytes;
/// `None` when a field is longer than that (no real id, tenant, alias or key is).
fn pack(fields: [&str; 5]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 2).sum());
    for field in fields {
        let len = u16::try_from(field.len()).ok()?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    Some(out)
}

/// The fields of a [`pack`]ed payload, or `None` when it is not one.
fn unpack(mut bytes: &[u8]) -> Option<[String; 5]> {
    let mut fields: [String; 5] = Default::default();
    for field in &mut fields {
        let (len, rest) = bytes.split_first_chunk::<2>()?;
        let len = u16::from_be_bytes(*len) as usize;
        let value = rest.get(..len)?;
        *field = String::from_utf8(value.to_vec()).ok()?;
        bytes = &rest[len..];
    }
    bytes.is_empty().then_some(fields)
}

/// The payload a stream token seals: the chat id, the user id, the tenant, the alias and the
/// client's sealed secureKey. Public for tests that seal tokens a gateway would not hand out
/// (expired ones).
pub fn stream_payload(chat_id: &str, creds: &ClientCredentials) -> Vec<u8> {
    pack([
        chat_id,
        &creds.user_id,
        &creds.tenant_name,
        &creds.alias,
        &creds.secure_key,
    ])
    // A field past 64 KiB cannot come from a reply; such credentials seal to an empty
    // payload, which never opens.
    .unwrap_or_default()
}

/// A stream token for the chat `chat_id` with these credentials, valid for the configured
/// lifetime.
pub(super) fn stream_token(gw: &Chats, chat_id: &str, creds: &ClientCredentials) -> String {
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
    let [c, user_id, tenant_name, alias, secure_key] = unpack(&bytes)?;
    (c == chat_id).then_some(ClientCredentials {
        user_id,
        secure_key,
        alias,
        tenant_name,
    })
}

/// Seals a chat's credentials into a chat token. The credentials are checked (tenant aside:
/// the token only carries them) so a token always opens to credentials that pass the MAC.
pub fn seal_chat_token(
    gw: &Chats,
    chat_id: &str,
    creds: &ClientCredentials,
) -> Result<String, Error> {
    let backend_key = gw.backend_key(chat_id, creds)?;
    let payload = pack([
        chat_id,
        &creds.user_id,
        &creds.tenant_name,
        &creds.alias,
        &backend_key,
    ])
    .ok_or(Error::BadCredentials)?;
    Ok(gw
        .credentials()
        .tokens()
        .seal(Purpose::Chat, &payload, None))
}

/// The chat id and credentials a chat token carries; [`Error::BadCredentials`] for anything
/// that is not a token this gateway's secret sealed. Opening touches no backend.
pub fn open_chat_token(gw: &Chats, token: &str) -> Result<(String, ClientCredentials), Error> {
    let payload = gw
        .credentials()
        .tokens()
        .open(Purpose::Chat, token)
        .ok_or(Error::BadCredentials)?;
    let [chat_id, user_id, tenant_name, alias, backend_key] =
        unpack(&payload).ok_or(Error::BadCredentials)?;
    let claim = Claim {
        chat_id: &chat_id,
        user_id: &user_id,
        tenant_name: &tenant_name,
    };
    let secure_key = gw.credentials().seal(claim, &backend_key);
    Ok((
        chat_id,
        ClientCredentials {
            user_id,
            secure_key,
            alias,
            tenant_name,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_back_and_anything_else_does_not() {
        let payload = pack(["chat", "u", "Environment", "117", "KEY"]).unwrap();
        assert_eq!(
            unpack(&payload).unwrap(),
            ["chat", "u", "Environment", "117", "KEY"].map(String::from)
        );
        assert_eq!(unpack(&payload[..payload.len() - 1]), None);
        let mut longer = payload.clone();
        longer.push(0);
        assert_eq!(unpack(&longer), None);
        assert_eq!(unpack(b""), None);
        let huge = "x".repeat(70_000);
        assert_eq!(pack(["chat", "u", "t", "a", &huge]), None);
    }
}
