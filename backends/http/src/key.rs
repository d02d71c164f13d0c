//! The adapter's key for a chat: `alias:service:secureKey`.
//!
//! The gateway's alias names the gateway's instance (this GMS cluster), so the GMS alias
//! (the GMS node that hosts the chat) and the service name the chat lives under travel in
//! the backend key, which the gateway seals with its MAC: a client can neither read a
//! changed alias into it nor forge one. When GMS answers with another alias (its own
//! failover), the adapter hands the gateway a new key. Alias and service are
//! percent-encoded, so neither holds a `:`; the GMS key is the rest.

use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};

/// A chat's GMS coordinates, as unpacked from the sealed key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RemoteKey {
    pub alias: String,
    pub service: String,
    pub secure_key: String,
}

impl RemoteKey {
    pub fn pack(&self) -> String {
        format!(
            "{}:{}:{}",
            utf8_percent_encode(&self.alias, NON_ALPHANUMERIC),
            utf8_percent_encode(&self.service, NON_ALPHANUMERIC),
            self.secure_key
        )
    }

    /// `None` for a key this adapter did not make.
    pub fn unpack(key: &str) -> Option<RemoteKey> {
        let mut parts = key.splitn(3, ':');
        let alias = percent_decode_str(parts.next()?).decode_utf8().ok()?;
        let service = percent_decode_str(parts.next()?).decode_utf8().ok()?;
        let secure_key = parts.next()?;
        if service.is_empty() || secure_key.is_empty() {
            return None;
        }
        Some(RemoteKey {
            alias: alias.into_owned(),
            service: service.into_owned(),
            secure_key: secure_key.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_awkward_characters() {
        let k = RemoteKey {
            alias: "11:7".into(),
            service: "customer support/é".into(),
            secure_key: "4ee1:5d7e".into(),
        };
        let packed = k.pack();
        assert_eq!(packed.matches(':').count(), 3);
        assert_eq!(RemoteKey::unpack(&packed), Some(k));
        assert_eq!(RemoteKey::unpack("117:svc:"), None);
        assert_eq!(RemoteKey::unpack("no-colons"), None);
        assert_eq!(
            RemoteKey::unpack("117:customer-support:4ee15d7e1c343c8e")
                .unwrap()
                .alias,
            "117"
        );
    }
}
