//! What the spool records about one accepted e-mail (`meta.json`), and what the backends read.
//!
//! Owns the on-disk shape of a message's fields. It must not hold attachment bodies: those stay
//! in their own files and are read by the backend when it delivers.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// An accepted e-mail, as written to `meta.json` once every attachment is on disk.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Same as the spool folder's name; repeated so a lone `meta.json` is self-describing.
    pub interaction_id: String,
    pub first_name: String,
    pub last_name: String,
    pub tenant_name: String,
    /// The customer's address, checked by intake's address rule (the `Reply-To`).
    pub from_address: String,
    /// The display name the client gave with the address (`John Doe <john@doe.com>`), its
    /// quotes removed; the `From` / `Reply-To` name in place of first and last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_name: Option<String>,
    pub subject: String,
    pub text: String,
    /// The request's `mailbox` (one of the allowed mailboxes, as configured), else the
    /// configured `email.mailbox`; `None` leaves the choice to the backend. The customer's
    /// address is never a recipient.
    pub mailbox: Option<String>,
    /// `userData` pairs in the order received (keys may repeat, as in the form).
    pub user_data: Vec<(String, String)>,
    pub attachments: Vec<Attachment>,
    /// Milliseconds since the Unix epoch when the gateway accepted it: delivery order on
    /// recovery, and the `Date` header.
    pub accepted_at_ms: u64,
    /// Milliseconds since the Unix epoch when an operator last requeued it from the
    /// dead-letter folder: the give-up time counts from here then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeued_at_ms: Option<u64>,
}

impl Envelope {
    /// Since when delivery has been tried: acceptance, or the latest requeue.
    pub fn tried_since_ms(&self) -> u64 {
        self.requeued_at_ms.unwrap_or(0).max(self.accepted_at_ms)
    }
}

/// Milliseconds since the Unix epoch, now (0 if the clock is before 1970).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One attachment of a spooled e-mail.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// The sanitised name shown to the recipient; never used as a path.
    pub file_name: String,
    /// Derived from the extension, never from what the client claimed.
    pub content_type: String,
    /// Name of the body's file inside the message's spool folder (`att-0`, `att-1`, ...).
    pub stored_as: String,
    pub size: u64,
}

#[cfg(test)]
impl Envelope {
    /// A minimal accepted e-mail for unit tests: customer Ann Lee at `from_address`, tenant
    /// Environment, no mailbox, user data or attachments.
    pub(crate) fn sample(interaction_id: &str, from_address: &str) -> Envelope {
        Envelope {
            interaction_id: interaction_id.into(),
            first_name: "Ann".into(),
            last_name: "Lee".into(),
            tenant_name: "Environment".into(),
            from_address: from_address.into(),
            from_name: None,
            subject: "Hi".into(),
            text: "Text".into(),
            mailbox: None,
            user_data: vec![],
            attachments: vec![],
            accepted_at_ms: 0,
            requeued_at_ms: None,
        }
    }
}
