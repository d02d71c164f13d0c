//! The chat token: a whole chat's credentials in one sealed value, for clients that carry
//! nothing else (the CometD dialect's `secureKey`: GMS's CometD operations send only it).
//!
//! Owns the token's payload (chat id, user id, tenant, alias, the backend's key) and its two
//! conversions: from a chat's [`ClientCredentials`] (checked first, so only a chat's own
//! credentials become a token) and back. Sealed under the shared secret (`credentials::
//! Tokens`, purpose `Chat`), so any replica opens it and nobody can read or change it. It
//! must not route or call a backend: a token opens into credentials that go through
//! `run`'s checks like any other.

use super::{Chats, ClientCredentials};
use crate::credentials::{Claim, Purpose};
use crate::error::Error;

/// Seals a chat's credentials into a chat token. The credentials are checked (tenant aside:
/// the token only carries them) so a token always opens to credentials that pass the MAC.
pub fn seal_chat_token(
    gw: &Chats,
    chat_id: &str,
    creds: &ClientCredentials,
) -> Result<String, Error> {
    let claim = Claim {
        chat_id,
        user_id: &creds.user_id,
        tenant_name: &creds.tenant_name,
    };
    let backend_key = gw
        .credentials()
        .open(claim, &creds.secure_key)
        .ok_or(Error::BadCredentials)?;
    let mut payload = Vec::with_capacity(128);
    for part in [
        chat_id,
        &creds.user_id,
        &creds.tenant_name,
        &creds.alias,
        &backend_key,
    ] {
        let len = u16::try_from(part.len()).map_err(|_| Error::BadCredentials)?;
        payload.extend_from_slice(&len.to_be_bytes());
        payload.extend_from_slice(part.as_bytes());
    }
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
    let mut parts = Vec::with_capacity(5);
    let mut rest = &payload[..];
    while rest.len() >= 2 {
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let text = rest.get(2..2 + len).ok_or(Error::BadCredentials)?;
        parts.push(String::from_utf8(text.to_vec()).map_err(|_| Error::BadCredentials)?);
        rest = &rest[2 + len..];
    }
    let [chat_id, user_id, tenant_name, alias, backend_key]: [String; 5] =
        parts.try_into().map_err(|_| Error::BadCredentials)?;
    if !rest.is_empty() {
        return Err(Error::BadCredentials);
    }
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
