//! The shared secret of the version-2 handshake: nonces and proofs.
//!
//! The secret never crosses the wire. The server sends a fresh nonce; the client answers with
//! an HMAC-SHA256 under the secret over both nonces and its role, and the server answers with
//! its own over the same nonces and its role. So a listener learns nothing reusable (every
//! connection has new nonces), neither side's proof can be replayed as the other's, and each
//! side knows the other holds the secret. Proofs are compared in constant time.
//!
//! ```text
//! proof(role) = hex(HMAC-SHA256(secret, for each of ("chat-protocol-2", role, serverNonce, clientNonce): u32_be(len) || bytes))
//! role = "client" | "server"; clientNonce is "" when the client sent none
//! ```
//!
//! Pure functions: no sockets, no clock. The two ends decide what to do with a failure.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Shortest secret either end accepts, in bytes: 256 bits as hex, or a passphrase as long.
pub const MIN_SECRET_BYTES: usize = 32;

/// Bytes of randomness in a nonce (64 hex digits on the wire).
pub const NONCE_BYTES: usize = 32;

/// Domain separation: a proof of this handshake is no MAC of anything else under the secret.
const CONTEXT: &[u8] = b"chat-protocol-2";

/// Which end a proof comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Client => b"client",
            Role::Server => b"server",
        }
    }
}

/// A fresh nonce from the OS CSPRNG, as hex.
pub fn nonce() -> String {
    let mut bytes = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The proof `role` sends on a connection with these nonces.
pub fn proof(secret: &[u8], role: Role, server_nonce: &str, client_nonce: &str) -> String {
    hex::encode(
        mac(secret, role, server_nonce, client_nonce)
            .finalize()
            .into_bytes(),
    )
}

/// Whether `proof` is `role`'s proof for these nonces, compared in constant time. Only the
/// form [`proof`] writes is accepted (64 lower-case hex digits).
pub fn verify(
    secret: &[u8],
    role: Role,
    server_nonce: &str,
    client_nonce: &str,
    proof: &str,
) -> bool {
    let canonical = proof.len() == 64
        && proof
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let mut tag = [0u8; 32];
    if !canonical || hex::decode_to_slice(proof, &mut tag).is_err() {
        return false;
    }
    mac(secret, role, server_nonce, client_nonce)
        .verify_slice(&tag)
        .is_ok()
}

/// Which of `secrets` `proof` is `role`'s proof under: the first that verifies, or `None`.
/// A server in a rotation holds its current secret and the previous one and accepts a peer
/// holding either; it answers with its proof under the secret that matched, the one the peer
/// holds. Every secret is tried, each in constant time, so the time taken does not tell
/// which one matched.
pub fn verify_any<'s>(
    secrets: &[&'s [u8]],
    role: Role,
    server_nonce: &str,
    client_nonce: &str,
    proof: &str,
) -> Option<&'s [u8]> {
    secrets
        .iter()
        .map(|secret| {
            (
                *secret,
                verify(secret, role, server_nonce, client_nonce, proof),
            )
        })
        .fold(None, |found, (secret, ok)| found.or(ok.then_some(secret)))
}

fn mac(secret: &[u8], role: Role, server_nonce: &str, client_nonce: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    for part in [
        CONTEXT,
        role.label(),
        server_nonce.as_bytes(),
        client_nonce.as_bytes(),
    ] {
        // Length-prefixed, so no two different inputs run together into the same bytes.
        mac.update(&(part.len() as u32).to_be_bytes());
        mac.update(part);
    }
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_proof_holds_only_for_its_secret_role_and_nonces() {
        let (server, client) = (nonce(), nonce());
        assert_eq!(server.len(), 64);
        assert_ne!(server, client, "nonces are fresh");
        let p = proof(SECRET, Role::Client, &server, &client);
        assert!(verify(SECRET, Role::Client, &server, &client, &p));
        assert!(!verify(
            b"another secret, just as long....",
            Role::Client,
            &server,
            &client,
            &p
        ));
        assert!(
            !verify(SECRET, Role::Server, &server, &client, &p),
            "roles differ"
        );
        assert!(
            !verify(SECRET, Role::Client, &nonce(), &client, &p),
            "replayed"
        );
        assert!(!verify(SECRET, Role::Client, &server, "", &p));
        assert!(!verify(
            SECRET,
            Role::Client,
            &server,
            &client,
            &p.to_uppercase()
        ));
        assert!(!verify(SECRET, Role::Client, &server, &client, &p[..63]));
        assert!(!verify(SECRET, Role::Client, &server, &client, ""));
        assert!(!verify(
            SECRET,
            Role::Client,
            &server,
            &client,
            &"é".repeat(32)
        ));
        // Pinned: the spec's formula, computed independently (Python's hmac), so another
        // implementation can be checked against it.
        assert_eq!(
            proof(SECRET, Role::Client, "aa", "bb"),
            "c87e4e76b5d2f7530936196ca67e9988e1e6c6d90e127135b46e5f8f98ff7e6e"
        );
    }

    #[test]
    fn during_a_rotation_either_secret_proves_and_the_matching_one_is_named() {
        let old: &[u8] = b"the previous secret, 0123456789abcdef";
        let (server, client) = (nonce(), nonce());
        let both = [SECRET, old];
        for secret in both {
            let p = proof(secret, Role::Client, &server, &client);
            assert_eq!(
                verify_any(&both, Role::Client, &server, &client, &p),
                Some(secret)
            );
        }
        let p = proof(old, Role::Client, &server, &client);
        assert_eq!(
            verify_any(&[SECRET], Role::Client, &server, &client, &p),
            None
        );
        assert_eq!(verify_any(&both, Role::Server, &server, &client, &p), None);
        assert_eq!(verify_any(&[], Role::Client, &server, &client, &p), None);
    }
}
