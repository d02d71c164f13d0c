//! The contact center's own mailboxes: the only addresses the gateway sends e-mail to.
//!
//! Owns the allow-list and its comparison. A request's `mailbox` chooses among these (the
//! reference's meaning: one of the contact center's mailboxes); anything else is refused at
//! intake, and the deliverer checks again, so an e-mail spooled before the list changed (or a
//! hand-edited spool entry) cannot reach another address either. It must not parse requests
//! or talk to a backend.

/// The allow-list: the default mailbox (when there is one) and the configured others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailboxes {
    /// Where an e-mail goes when it names no mailbox, if the gateway decides that (the HTTP
    /// backend leaves it to GMS).
    default: Option<String>,
    /// Every allowed address as configured, the default included.
    allowed: Vec<String>,
}

impl Mailboxes {
    /// `default` and `others` are addresses already validated by the config.
    pub fn new(default: Option<&str>, others: &[String]) -> Mailboxes {
        let mut allowed: Vec<String> = default.into_iter().map(str::to_owned).collect();
        for other in others {
            if !allowed.iter().any(|a| same(a, other)) {
                allowed.push(other.trim().to_owned());
            }
        }
        Mailboxes {
            default: default.map(str::to_owned),
            allowed,
        }
    }

    /// The configured spelling of `requested`, if it is one of the allowed mailboxes.
    /// Addresses compare without regard to ASCII case: mail systems treat them so in
    /// practice, and a customer's form should not fail over a capital letter.
    pub fn find(&self, requested: &str) -> Option<&str> {
        self.allowed
            .iter()
            .find(|a| same(a, requested))
            .map(String::as_str)
    }

    /// Whether `mailbox` is allowed.
    pub fn allows(&self, mailbox: &str) -> bool {
        self.find(mailbox).is_some()
    }

    /// The default mailbox, if the gateway has one.
    pub fn default_mailbox(&self) -> Option<&str> {
        self.default.as_deref()
    }

    /// Every allowed mailbox, as configured.
    pub fn all(&self) -> &[String] {
        &self.allowed
    }
}

fn same(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_mailboxes_are_allowed() {
        let only_default = Mailboxes::new(Some("inbox@company.com"), &[]);
        assert_eq!(
            only_default.find("Inbox@Company.com"),
            Some("inbox@company.com")
        );
        assert!(!only_default.allows("victim@elsewhere.example"));
        assert!(!only_default.allows("inbox@company.com.evil.example"));

        let several = Mailboxes::new(
            Some("inbox@company.com"),
            &["sales@company.com".into(), "INBOX@company.com".into()],
        );
        assert_eq!(several.all().len(), 2);
        assert!(several.allows("sales@company.com"));

        let none = Mailboxes::new(None, &[]);
        assert!(!none.allows("inbox@company.com"));
        assert_eq!(none.default_mailbox(), None);
    }
}
