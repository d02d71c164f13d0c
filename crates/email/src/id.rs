//! The interactionId: the name of an accepted e-mail everywhere (spool folder, headers, the
//! `.eml` file name, the reply to the client).
//!
//! Owns generation (CSPRNG) and the check that a string is one, so that an id read back from
//! disk or a folder name can be used as a path component without further thought.

use std::fmt;

use rand::distributions::Alphanumeric;
use rand::Rng;

/// Length of an id, as in the reference (`0000KaAOC8XH003X`).
pub const ID_LEN: usize = 16;

/// A 16-character alphanumeric id, about 95 bits from the OS CSPRNG: unguessable and, in
/// practice, never repeated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InteractionId(String);

impl InteractionId {
    /// A fresh id.
    pub fn generate() -> Self {
        let id: String = rand::rngs::OsRng
            .sample_iter(&Alphanumeric)
            .take(ID_LEN)
            .map(char::from)
            .collect();
        InteractionId(id)
    }

    /// The id if `s` is one; `None` otherwise (a stray folder in the spool, say).
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| InteractionId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InteractionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_differ() {
        let a = InteractionId::generate();
        let b = InteractionId::generate();
        assert_ne!(a, b);
        assert_eq!(InteractionId::parse(a.as_str()), Some(a));
        assert_eq!(InteractionId::parse("../../etc/passwd"), None);
        assert_eq!(
            InteractionId::parse("0000KaAOC8XH003X").unwrap().as_str(),
            "0000KaAOC8XH003X"
        );
    }
}
