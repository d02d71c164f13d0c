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
//! changes it. This module owns the scheme and nothing else: no I/O, no routing.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

mod config;
pub use config::CredentialsConfig;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of MAC kept: 128 bits, hex-encoded to 32 characters.
const MAC_BYTES: usize = 16;
const MAC_HEX: usize = MAC_BYTES * 2;
/// Domain separation: a version tag, so the scheme can change without ambiguity.
const CONTEXT: &[u8] = b"wag1";

/// Signs and checks client secure keys. Cheap to clone; holds the keyed MAC state.
#[derive(Clone)]
pub struct Credentials {
    keyed: HmacSha256,
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
        Credentials {
            keyed: HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length"),
        }
    }

    /// A per-process secret from the OS CSPRNG, for a single gateway without a configured one.
    pub fn random() -> Credentials {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Credentials::new(&secret)
    }

    /// The key to hand to the client for a chat whose backend key is `backend_key`.
    pub fn seal(&self, claim: Claim<'_>, backend_key: &str) -> String {
        let tag = self.mac(claim, backend_key).finalize().into_bytes();
        let mut out = String::with_capacity(backend_key.len() + MAC_HEX);
        out.push_str(backend_key);
        out.push_str(&hex::encode_upper(&tag[..MAC_BYTES]));
        out
    }

    /// Checks a client key in constant time and returns the backend's key inside it.
    pub fn open<'k>(&self, claim: Claim<'_>, client_key: &'k str) -> Option<&'k str> {
        if client_key.len() <= MAC_HEX || !client_key.is_char_boundary(client_key.len() - MAC_HEX) {
            return None;
        }
        let (backend_key, tag_hex) = client_key.split_at(client_key.len() - MAC_HEX);
        // Only the form `seal` writes: `hex` would also read lower case, and a key must have
        // one spelling (a case-folded copy is another key, not the same one).
        if !tag_hex
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
        {
            return None;
        }
        let mut tag = [0u8; MAC_BYTES];
        hex::decode_to_slice(tag_hex, &mut tag).ok()?;
        self.mac(claim, backend_key)
            .verify_truncated_left(&tag)
            .ok()
            .map(|()| backend_key)
    }

    fn mac(&self, claim: Claim<'_>, backend_key: &str) -> HmacSha256 {
        let mut mac = self.keyed.clone();
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
        assert_eq!(c.open(CLAIM, &key), Some("E1A17B94F802C330"));
        // Another replica with the same secret accepts it.
        let replica = Credentials::new(b"0123456789abcdef0123456789abcdef");
        assert_eq!(replica.open(CLAIM, &key), Some("E1A17B94F802C330"));
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
    fn only_the_canonical_spelling_of_the_mac_opens() {
        let c = Credentials::new(b"0123456789abcdef0123456789abcdef");
        // A backend key in any case is the backend's business; the MAC is ours.
        let key = c.seal(CLAIM, "e1a17b94f802c330");
        let (backend_key, mac) = key.split_at(16);
        assert!(mac.bytes().any(|b| b.is_ascii_alphabetic()), "{mac}");
        let folded = format!("{backend_key}{}", mac.to_ascii_lowercase());
        assert_eq!(c.open(CLAIM, &folded), None);
        // One lower-case digit is enough to refuse it.
        let i = mac.find(|ch: char| ch.is_ascii_alphabetic()).unwrap();
        let mut one = key.clone();
        one.replace_range(16 + i..17 + i, &mac[i..=i].to_ascii_lowercase());
        assert_eq!(c.open(CLAIM, &one), None);
        assert_eq!(c.open(CLAIM, &key), Some("e1a17b94f802c330"));
    }
}
