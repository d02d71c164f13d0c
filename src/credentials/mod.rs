//! Chat credentials: the `secureKey` the client holds, and its check.
//!
//! The key handed to a client is the backend's own key followed by a MAC over the chat id,
//! the user id, the tenant and that key, under a secret shared by every gateway replica:
//!
//! ```text
//! client secureKey = backend_key || hex(HMAC-SHA256(secret, "wag1" 0 chatId 0 userId 0 tenant 0 backend_key)[..16])
//! ```
//!
//! So any replica checks any chat's credentials without state of its own, a wrong or
//! borrowed key is refused before a backend sees it (a Genesys Chat Server would remove the
//! real customer on a wrong key), and the alias is left out of the MAC because failover
//! changes it. `token` seals whole payloads (the push channels' tokens) under the same
//! secret. During a rotation (`credentials.previous_secrets`) everything is sealed under the
//! current secret and opens under it or any previous one. This module owns the schemes and
//! nothing else: no I/O, no routing.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

mod config;
mod token;
pub use config::CredentialsConfig;
pub use token::{Purpose, Tokens, MAX_TOKEN_CHARS};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of MAC kept: 128 bits, hex-encoded to 32 characters.
const MAC_BYTES: usize = 16;
const MAC_HEX: usize = MAC_BYTES * 2;
/// Domain separation: a version tag, so the scheme can change without ambiguity.
const CONTEXT: &[u8] = b"wag1";

/// Signs and checks client secure keys. Cheap to clone; holds the keyed MAC state.
#[derive(Clone)]
pub struct Credentials {
    /// The current secret's keyed MAC: every new key is sealed under it.
    keyed: HmacSha256,
    /// The secrets of a rotation in progress, tried after the current one when a key does
    /// not open under it. Nothing is sealed under them.
    previous: Vec<HmacSha256>,
    tokens: Tokens,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

/// The identity a client claims on every request inside a chat.
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    pub chat_id: &'a str,
    pub user_id: &'a str,
    pub tenant_name: &'a str,
}

impl Credentials {
    pub fn new(secret: &[u8]) -> Credentials {
        Credentials::rotating(secret, &[])
    }

    /// Seals under `secret` and opens what was sealed under it or under any of `previous`
    /// (a rotation in progress: chats and tokens sealed under the old secret carry on).
    pub fn rotating(secret: &[u8], previous: &[&[u8]]) -> Credentials {
        let key =
            |s: &[u8]| HmacSha256::new_from_slice(s).expect("HMAC accepts keys of any length");
        let keyed = key(secret);
        let previous: Vec<HmacSha256> = previous.iter().map(|s| key(s)).collect();
        Credentials {
            tokens: Tokens::new(&keyed, &previous),
            keyed,
            previous,
        }
    }

    /// Sealed tokens under the same secret (see `token`).
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// A per-process secret from the OS CSPRNG, for a single gateway without a configured one.
    pub fn random() -> Credentials {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Credentials::new(&secret)
    }

    /// The key to hand to the client for a chat whose backend key is `backend_key`.
    pub fn seal(&self, claim: Claim<'_>, backend_key: &str) -> String {
        let tag = mac(&self.keyed, claim, backend_key).finalize().into_bytes();
        let mut out = String::with_capacity(backend_key.len() + MAC_HEX);
        out.push_str(backend_key);
        out.push_str(&hex::encode_upper(&tag[..MAC_BYTES]));
        out
    }

    /// Checks a client key in constant time and returns the backend's key inside it.
    ///
    /// Hex is compared case-insensitively (some clients lower-case the whole key): the MAC's
    /// hex is read in either case, and a backend key of hex digits that does not open as
    /// given is tried in its upper- and lower-case spelling, so the backend gets its key in
    /// the one spelling that was sealed. Anything else about the key must be exact.
    pub fn open<'k>(&self, claim: Claim<'_>, client_key: &'k str) -> Option<Cow<'k, str>> {
        if client_key.len() <= MAC_HEX || !client_key.is_char_boundary(client_key.len() - MAC_HEX) {
            return None;
        }
        let (backend_key, tag_hex) = client_key.split_at(client_key.len() - MAC_HEX);
        if !tag_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        // Canonical inside: the MAC's hex upper-cased, as `seal` writes it, then read.
        let canonical = tag_hex.to_ascii_uppercase();
        let mut tag = [0u8; MAC_BYTES];
        hex::decode_to_slice(&canonical, &mut tag).ok()?;
        // The current secret first, then each previous one; every comparison in constant
        // time. Which secret opened a key says nothing the client did not already know.
        let opens = |key: &str| {
            std::iter::once(&self.keyed)
                .chain(&self.previous)
                .any(|keyed| mac(keyed, claim, key).verify_truncated_left(&tag).is_ok())
        };
        if opens(backend_key) {
            return Some(Cow::Borrowed(backend_key));
        }
        if !backend_key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        [
            backend_key.to_ascii_uppercase(),
            backend_key.to_ascii_lowercase(),
        ]
        .into_iter()
        .filter(|k| k != backend_key)
        .find(|k| opens(k))
        .map(Cow::Owned)
    }
}

/// The MAC of a claim and backend key under one secret's keyed state.
fn mac(keyed: &HmacSha256, claim: Claim<'_>, backend_key: &str) -> HmacSha256 {
    let mut mac = keyed.clone();
    for part in [
        CONTEXT,
        claim.chat_id.as_bytes(),
        claim.user_id.as_bytes(),
        claim.tenant_name.as_bytes(),
        backend_key.as_bytes(),
    ] {
        // Length-prefixing keeps ("ab","c") and ("a","bc") apart.
        mac.update(&(part.len() as u32).to_be_bytes());
        mac.update(part);
    }
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLAIM: Claim<'static> = Claim {
        chat_id: "00019a9SXTQW001N",
        user_id: "007553ADB4D9001A",
        tenant_name: "Environment",
    };

    #[test]
    fn sealed_key_opens_to_the_backend_key() {
        let c = Credentials::new(b"0123456789abcdef0123456789abcdef");
        let key = c.seal(CLAIM, "E1A17B94F802C330");
        assert_eq!(key.len(), 16 + 32);
        assert_eq!(c.open(CLAIM, &key).as_deref(), Some("E1A17B94F802C330"));
        // Another replica with the same secret accepts it.
        let replica = Credentials::new(b"0123456789abcdef0123456789abcdef");
        assert_eq!(
            replica.open(CLAIM, &key).as_deref(),
            Some("E1A17B94F802C330")
        );
    }

    #[test]
    fn anything_else_is_refused() {
        let c = Credentials::new(b"0123456789abcdef0123456789abcdef");
        let key = c.seal(CLAIM, "E1A17B94F802C330");
        let other_chat = Claim {
            chat_id: "00019a9SXTQW001M",
            ..CLAIM
        };
        let other_user = Claim {
            user_id: "007553ADB4D9001B",
            ..CLAIM
        };
        let other_tenant = Claim {
            tenant_name: "Other",
            ..CLAIM
        };
        for claim in [other_chat, other_user, other_tenant] {
            assert_eq!(c.open(claim, &key), None);
        }
        let mut tampered = key.clone().into_bytes();
        tampered[0] = b'F';
        assert_eq!(c.open(CLAIM, std::str::from_utf8(&tampered).unwrap()), None);
        assert_eq!(c.open(CLAIM, "E1A17B94F802C330"), None);
        assert_eq!(c.open(CLAIM, ""), None);
        assert_eq!(c.open(CLAIM, &"é".repeat(40)), None);
        assert_eq!(Credentials::random().open(CLAIM, &key), None);
    }

    #[test]
    fn hex_opens_in_either_case_to_the_key_that_was_sealed() {
        let c = Credentials::new(b"0123456789abcdef0123456789abcdef");
        for backend_key in ["E1A17B94F802C330", "e1a17b94f802c330"] {
            let key = c.seal(CLAIM, backend_key);
            for spelling in [key.to_ascii_lowercase(), key.to_ascii_uppercase()] {
                assert_eq!(c.open(CLAIM, &spelling).as_deref(), Some(backend_key));
            }
            // One lower-case digit of the MAC is the same MAC.
            let (head, mac) = key.split_at(16);
            let i = mac.find(|ch: char| ch.is_ascii_alphabetic()).unwrap();
            let mut one = key.clone();
            one.replace_range(16 + i..17 + i, &mac[i..=i].to_ascii_lowercase());
            assert_eq!(c.open(CLAIM, &one).as_deref(), Some(backend_key));
            // A changed digit is another key.
            let mut changed = format!("{head}{mac}").into_bytes();
            changed[20] = if changed[20] == b'0' { b'1' } else { b'0' };
            assert_eq!(c.open(CLAIM, std::str::from_utf8(&changed).unwrap()), None);
            assert_eq!(c.open(CLAIM, &format!("{head}{}", &mac[..31])), None);
            assert_eq!(c.open(CLAIM, &format!("{head}{}g", &mac[..31])), None);
        }
        // A backend key that is not hex is exact: its case is the backend's business.
        let key = c.seal(CLAIM, "Alias-7:Key");
        assert_eq!(c.open(CLAIM, &key).as_deref(), Some("Alias-7:Key"));
        let (head, mac) = key.split_at(key.len() - 32);
        assert_eq!(
            c.open(CLAIM, &format!("{}{mac}", head.to_ascii_lowercase())),
            None
        );
    }

    #[test]
    fn during_a_rotation_old_keys_open_and_new_ones_are_sealed_under_the_current_secret() {
        let a: &[u8] = b"the old secret, 0123456789abcdef";
        let b: &[u8] = b"the new secret, 0123456789abcdef";
        let old = Credentials::new(a);
        let rotating = Credentials::rotating(b, &[a]);
        let after = Credentials::new(b);
        let old_key = old.seal(CLAIM, "E1A17B94F802C330");
        // A key sealed under the old secret opens during the rotation, in either case...
        assert_eq!(
            rotating.open(CLAIM, &old_key).as_deref(),
            Some("E1A17B94F802C330")
        );
        assert_eq!(
            rotating
                .open(CLAIM, &old_key.to_ascii_lowercase())
                .as_deref(),
            Some("E1A17B94F802C330")
        );
        // ...for its own claim only, and no longer once the old secret is dropped.
        let other_user = Claim {
            user_id: "007553ADB4D9001B",
            ..CLAIM
        };
        assert_eq!(rotating.open(other_user, &old_key), None);
        assert_eq!(after.open(CLAIM, &old_key), None);
        // New keys are sealed under the new secret: the old gateways cannot open them.
        let new_key = rotating.seal(CLAIM, "E1A17B94F802C330");
        assert_eq!(new_key, after.seal(CLAIM, "E1A17B94F802C330"));
        assert_eq!(old.open(CLAIM, &new_key), None);
        assert_eq!(
            after.open(CLAIM, &new_key).as_deref(),
            Some("E1A17B94F802C330")
        );
        // Tokens likewise: an old token opens during the rotation, a new one only under B.
        let token = old.tokens().seal(Purpose::Stream, b"chat", None);
        assert_eq!(
            rotating.tokens().open(Purpose::Stream, &token).as_deref(),
            Some(&b"chat"[..])
        );
        assert_eq!(rotating.tokens().open(Purpose::Chat, &token), None);
        assert_eq!(after.tokens().open(Purpose::Stream, &token), None);
        let token = rotating.tokens().seal(Purpose::Stream, b"chat", None);
        assert_eq!(old.tokens().open(Purpose::Stream, &token), None);
        assert!(after.tokens().open(Purpose::Stream, &token).is_some());
    }
}
