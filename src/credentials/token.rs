//! Sealed tokens: a payload encrypted and authenticated under the shared secret, with a purpose
//! and an expiry, for credentials that must travel where a `secureKey` may not (an
//! `EventSource` URL, a CometD `secureKey` that names the whole chat, a cookie).
//!
//! ```text
//! token = base64url(nonce[24] || XChaCha20-Poly1305(key, nonce, aad = "wagt1" purpose,
//!                                                   expires_unix_secs[8] || payload))
//! key   = HMAC-SHA256(secret, "wag token key v1")
//! ```
//!
//! Any replica with the same secret opens any token; nothing in it can be read or changed
//! without the secret; a token sealed for one purpose never opens for another. Expiry is in
//! wall-clock seconds, so replicas' clocks must agree to within the token lifetimes (NTP).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::Mac;
use rand::RngCore;

use super::HmacSha256;

const NONCE: usize = 24;
const TAG: usize = 16;
const EXPIRY: usize = 8;
/// Domain separation for the additional data, ahead of the purpose.
const AAD_CONTEXT: &[u8] = b"wagt1";
/// The longest token `open` looks at: anything longer is refused before decoding.
pub const MAX_TOKEN_CHARS: usize = 4096;

/// What a token is for: part of its authenticated data, so one purpose's token never opens
/// as another's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Reads a chat's events from a URL (the SSE `streamToken`).
    Stream,
    /// A whole chat's credentials in one value (the CometD dialect's `secureKey`).
    Chat,
    /// A CometD client's identity (the Bayeux `clientId`).
    Client,
    /// What a CometD client follows, carried by the browser (a cookie).
    Follow,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Stream => b"stream",
            Purpose::Chat => b"chat",
            Purpose::Client => b"client",
            Purpose::Follow => b"follow",
        }
    }
}

/// Seals and opens tokens. Cheap to clone.
#[derive(Clone)]
pub struct Tokens {
    /// Seals, and opens first: the current secret's token key.
    aead: XChaCha20Poly1305,
    /// The token keys of a rotation's previous secrets: open only.
    previous: Vec<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(..)")
    }
}

impl Tokens {
    /// The token keys, derived from the shared secrets (never the secrets themselves):
    /// `keyed`'s seals and opens, each of `previous` only opens.
    pub fn new(keyed: &HmacSha256, previous: &[HmacSha256]) -> Tokens {
        Tokens {
            aead: token_key(keyed),
            previous: previous.iter().map(token_key).collect(),
        }
    }

    /// Seals `payload` for `purpose`, valid for `ttl` (`None`: until the secret changes).
    pub fn seal(&self, purpose: Purpose, payload: &[u8], ttl: Option<Duration>) -> String {
        let expires = ttl.map_or(u64::MAX, |ttl| now_secs().saturating_add(ttl.as_secs()));
        // One buffer, sized ahead, encrypted in place (issue 17: was four): nonce, then
        // the sealed expiry and payload, then the tag — what `encrypt` would have returned
        // after the nonce.
        let mut raw = Vec::with_capacity(NONCE + EXPIRY + payload.len() + TAG);
        let mut nonce = [0u8; NONCE];
        // The thread's CSPRNG (ChaCha, seeded and reseeded from the OS): every chat reply
        // seals a token, and a getrandom system call per reply is work the hot path need
        // not do. A nonce needs to be unique, not secret; 192 random bits are.
        rand::thread_rng().fill_bytes(&mut nonce);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&expires.to_be_bytes());
        raw.extend_from_slice(payload);
        let mut aad_buf = [0u8; AAD_MAX];
        let tag = self
            .aead
            .encrypt_in_place_detached(
                XNonce::from_slice(&nonce),
                aad(purpose, &mut aad_buf),
                &mut raw[NONCE..],
            )
            .expect("XChaCha20-Poly1305 seals any length we give it");
        raw.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The payload of a token sealed for `purpose` that has not expired; `None` for anything
    /// else (wrong secret or purpose, changed, truncated, expired, not base64url). Tried under
    /// the current secret, then each previous one of a rotation.
    pub fn open(&self, purpose: Purpose, token: &str) -> Option<Vec<u8>> {
        if token.len() > MAX_TOKEN_CHARS {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        if raw.len() < NONCE + TAG + EXPIRY {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE);
        let mut aad_buf = [0u8; AAD_MAX];
        let aad = aad(purpose, &mut aad_buf);
        let plain = std::iter::once(&self.aead)
            .chain(&self.previous)
            .find_map(|aead| {
                aead.decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
                    .ok()
            })?;
        let (expires, payload) = plain.split_at(EXPIRY);
        let expires = u64::from_be_bytes(expires.try_into().expect("8 bytes"));
        (now_secs() < expires).then(|| payload.to_vec())
    }
}

fn token_key(keyed: &HmacSha256) -> XChaCha20Poly1305 {
    let mut mac = keyed.clone();
    mac.update(b"wag token key v1");
    let key = mac.finalize().into_bytes();
    XChaCha20Poly1305::new_from_slice(&key).expect("32-byte key")
}

/// The longest additional data: the context and the longest purpose label.
const AAD_MAX: usize = AAD_CONTEXT.len() + 6;

/// The additional data for `purpose`, written into `buf` (no allocation).
fn aad(purpose: Purpose, buf: &mut [u8; AAD_MAX]) -> &[u8] {
    let label = purpose.label();
    let len = AAD_CONTEXT.len() + label.len();
    buf[..AAD_CONTEXT.len()].copy_from_slice(AAD_CONTEXT);
    buf[AAD_CONTEXT.len()..len].copy_from_slice(label);
    &buf[..len]
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Credentials;

    fn tokens(secret: &[u8]) -> Tokens {
        Credentials::new(secret).tokens().clone()
    }

    /// Sealing in place (issue 17) writes what sealing into fresh buffers wrote: a token
    /// made the earlier way opens, and a new one opens the earlier way.
    #[test]
    fn the_in_place_seal_keeps_the_token_format() {
        let t = tokens(b"0123456789abcdef0123456789abcdef");
        let nonce = [7u8; NONCE];
        let mut plain = u64::MAX.to_be_bytes().to_vec();
        plain.extend_from_slice(b"payload");
        let sealed = t
            .aead
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: b"wagt1stream",
                },
            )
            .unwrap();
        let earlier = URL_SAFE_NO_PAD.encode([&nonce[..], &sealed].concat());
        assert_eq!(
            t.open(Purpose::Stream, &earlier).as_deref(),
            Some(&b"payload"[..])
        );
        let now = URL_SAFE_NO_PAD
            .decode(t.seal(Purpose::Follow, b"payload", None))
            .unwrap();
        let (nonce, sealed) = now.split_at(NONCE);
        let opened = t
            .aead
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: b"wagt1follow",
                },
            )
            .unwrap();
        assert_eq!(&opened[EXPIRY..], b"payload");
    }

    #[test]
    fn a_token_opens_on_any_replica_with_the_secret_and_only_for_its_purpose() {
        let a = tokens(b"0123456789abcdef0123456789abcdef");
        let b = tokens(b"0123456789abcdef0123456789abcdef");
        let t = a.seal(Purpose::Stream, b"payload", Some(Duration::from_secs(60)));
        assert_eq!(
            b.open(Purpose::Stream, &t).as_deref(),
            Some(&b"payload"[..])
        );
        assert_eq!(b.open(Purpose::Chat, &t), None);
        let other = tokens(b"another secret, same length.....");
        assert_eq!(other.open(Purpose::Stream, &t), None);
        // Two seals of one payload differ (random nonce) and say nothing of it.
        let t2 = a.seal(Purpose::Stream, b"payload", Some(Duration::from_secs(60)));
        assert_ne!(t, t2);
        assert!(!t.contains("payload"));
    }

    #[test]
    fn a_changed_truncated_or_expired_token_never_opens() {
        let a = tokens(b"0123456789abcdef0123456789abcdef");
        let t = a.seal(Purpose::Chat, b"payload", None);
        for i in 0..t.len() {
            let mut changed: Vec<u8> = t.bytes().collect();
            changed[i] = if changed[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(changed).unwrap();
            if changed != t {
                assert_eq!(a.open(Purpose::Chat, &changed), None, "byte {i}");
            }
        }
        assert_eq!(a.open(Purpose::Chat, &t[..t.len() - 1]), None);
        assert_eq!(a.open(Purpose::Chat, ""), None);
        assert_eq!(a.open(Purpose::Chat, "not base64 !"), None);
        let expired = a.seal(Purpose::Chat, b"payload", Some(Duration::ZERO));
        assert_eq!(a.open(Purpose::Chat, &expired), None);
        assert_eq!(
            a.open(Purpose::Chat, &"A".repeat(MAX_TOKEN_CHARS + 4)),
            None
        );
    }
}
