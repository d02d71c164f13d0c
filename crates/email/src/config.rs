//! The `email` section of the gateway's configuration.
//!
//! Owns the settings types of the e-mail side (intake limits, spool, retry policy, backend
//! choice) with their defaults and their one validation pass. It must not read files or the
//! environment: the gateway's config module loads the section and hands it over.

use std::path::PathBuf;
use std::time::Duration;

use config_types::{Invalid, Secret};
use serde::Deserialize;

/// The file extensions accepted when `file_types` is not set (the reference's list).
pub const DEFAULT_FILE_TYPES: &[&str] = &["pdf", "doc", "txt", "jpg", "png", "gif", "bmp", "zip"];

/// Settings of `POST /api/v2/emails` and of the delivery behind it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// Most attachments one e-mail may carry.
    pub max_files: usize,
    /// Most bytes of content (every field and attachment body, added up) one e-mail may carry.
    pub max_size: u64,
    /// Allowed attachment extensions, case-insensitive, without the dot. Setting it replaces
    /// the default list rather than extending it, as the reference says.
    pub file_types: Vec<String>,
    /// Most bytes of `text` (the message body) one e-mail may carry. `text` is held in memory
    /// until the e-mail is spooled, unlike attachments, so it has a small bound of its own
    /// (`max_size` still bounds the whole e-mail, text included).
    pub max_text_bytes: u64,
    /// Address e-mails are delivered to when the request names no `mailbox`; when neither is
    /// set the backend's own default applies.
    pub mailbox: Option<String>,
    /// The contact center's other mailboxes a request's `mailbox` may choose. The default
    /// mailbox (`mailbox`, else the backend's `default_mailbox`) is always allowed; any other
    /// address is refused, so the gateway cannot be used to mail anyone else.
    pub mailboxes: Vec<String>,
    /// The contact center's address every e-mail is sent from: the SMTP envelope sender
    /// (`MAIL FROM`) and the `From:` header. The customer's address goes into `Reply-To`.
    /// When unset, the default mailbox.
    pub sender: Option<String>,
    /// E-mails one client address may send per hour (sustained); 0 turns the limit off.
    pub per_address_per_hour: u32,
    /// E-mails one client address may send in a burst.
    pub per_address_burst: u32,
    /// E-mails all clients together may send per hour (sustained); 0 turns the limit off.
    pub global_per_hour: u32,
    /// E-mails all clients together may send in a burst.
    pub global_burst: u32,
    /// Most e-mails being received at once; one more is refused (503, retry later) before
    /// any of its body is read.
    pub max_concurrent_intakes: usize,
    /// Folder of the spool; created (mode 0700) when missing. Must be on one file system,
    /// since a message becomes visible by a rename.
    pub spool_dir: PathBuf,
    /// How long after acceptance (or a requeue) delivery is retried before an e-mail goes to
    /// the dead-letter folder, in seconds. Measured from the time stored with the e-mail, so
    /// restarts do not extend it.
    pub give_up_after_secs: u64,
    /// Deliveries under way at once, so one slow message or a server that stalls a
    /// connection does not hold up the rest of the queue.
    pub parallel_deliveries: usize,
    /// Wait after the first failed attempt, in milliseconds; doubled after each failure.
    pub backoff_initial_ms: u64,
    /// Longest wait between two attempts, in milliseconds.
    pub backoff_max_ms: u64,
    /// Longest one delivery attempt may take, in seconds, before it counts as failed.
    pub attempt_timeout_secs: u64,
    /// Where delivered e-mails go.
    pub backend: BackendConfig,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            max_files: 10,
            max_size: 10 * 1024 * 1024,
            max_text_bytes: 256 * 1024,
            file_types: DEFAULT_FILE_TYPES.iter().map(|s| s.to_string()).collect(),
            mailbox: None,
            mailboxes: Vec::new(),
            sender: None,
            per_address_per_hour: 30,
            per_address_burst: 5,
            global_per_hour: 3_600,
            global_burst: 100,
            max_concurrent_intakes: 64,
            spool_dir: PathBuf::from("spool/email"),
            give_up_after_secs: 4 * 24 * 3600,
            parallel_deliveries: 4,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 300_000,
            attempt_timeout_secs: 60,
            backend: BackendConfig::default(),
        }
    }
}

impl EmailConfig {
    /// Checks what serde cannot; called once when the configuration is loaded.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.max_size == 0 {
            return Err(Invalid::new("email.max_size", "must be above 0"));
        }
        if self.max_text_bytes == 0 {
            return Err(Invalid::new("email.max_text_bytes", "must be above 0"));
        }
        if self.give_up_after_secs == 0 {
            return Err(Invalid::new("email.give_up_after_secs", "must be above 0"));
        }
        if !(1..=64).contains(&self.parallel_deliveries) {
            return Err(Invalid::new(
                "email.parallel_deliveries",
                "must be between 1 and 64",
            ));
        }
        if self.max_concurrent_intakes == 0 {
            return Err(Invalid::new(
                "email.max_concurrent_intakes",
                "must be at least 1",
            ));
        }
        if self.per_address_per_hour > 0 && self.per_address_burst == 0 {
            return Err(Invalid::new(
                "email.per_address_burst",
                "must be at least 1 while email.per_address_per_hour is set",
            ));
        }
        if self.global_per_hour > 0 && self.global_burst == 0 {
            return Err(Invalid::new(
                "email.global_burst",
                "must be at least 1 while email.global_per_hour is set",
            ));
        }
        if self.backoff_initial_ms == 0 || self.backoff_max_ms < self.backoff_initial_ms {
            return Err(Invalid::new(
                "email.backoff_initial_ms",
                "must be above 0 and at most email.backoff_max_ms",
            ));
        }
        if self.attempt_timeout_secs == 0 {
            return Err(Invalid::new(
                "email.attempt_timeout_secs",
                "must be above 0",
            ));
        }
        for ext in &self.file_types {
            if ext.is_empty() || !ext.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(Invalid::new(
                    "email.file_types",
                    format!("{ext:?} is not an extension (letters and digits, no dot)"),
                ));
            }
        }
        if let Some(mailbox) = &self.mailbox {
            address("email.mailbox", mailbox)?;
        }
        for mailbox in &self.mailboxes {
            address("email.mailboxes", mailbox)?;
        }
        if let Some(sender) = &self.sender {
            address("email.sender", sender)?;
        }
        self.backend.validate()
    }

    /// The retry policy of the deliverer.
    pub fn retry(&self) -> crate::RetryPolicy {
        crate::RetryPolicy {
            give_up_after: Duration::from_secs(self.give_up_after_secs),
            initial: Duration::from_millis(self.backoff_initial_ms),
            max: Duration::from_millis(self.backoff_max_ms),
            attempt_timeout: Duration::from_secs(self.attempt_timeout_secs),
            parallel: self.parallel_deliveries,
        }
    }

    /// Where an e-mail goes when the request names no mailbox: `email.mailbox`, else the
    /// mock or SMTP backend's `default_mailbox`; `None` for the HTTP backend (GMS decides).
    pub fn default_mailbox(&self) -> Option<&str> {
        self.mailbox.as_deref().or(match self.backend.kind {
            BackendKind::Mock => Some(self.backend.mock.default_mailbox.as_str()),
            BackendKind::Smtp => Some(self.backend.smtp.default_mailbox.as_str()),
            BackendKind::Http => None,
        })
    }

    /// The mailboxes a request may choose: the default one and `email.mailboxes`.
    pub fn mailbox_policy(&self) -> crate::Mailboxes {
        crate::Mailboxes::new(self.default_mailbox(), &self.mailboxes)
    }

    /// The address e-mails are sent from: `email.sender`, else the default mailbox. The HTTP
    /// backend has neither necessarily: GMS then sends as it is configured to.
    pub fn sender(&self) -> Option<&str> {
        self.sender.as_deref().or(self.default_mailbox())
    }
}

fn address(key: &str, value: &str) -> Result<(), Invalid> {
    value
        .parse::<lettre::Address>()
        .map(|_| ())
        .map_err(|e| Invalid::new(key, format!("{value:?} is not an address: {e}")))
}

/// Which backend delivers, and its settings. Only the chosen kind's table is read.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// `mock`, `smtp` or `http`.
    pub kind: BackendKind,
    /// Settings of the `mock` backend.
    pub mock: MockConfig,
    /// Settings of the `smtp` backend.
    pub smtp: SmtpConfig,
    /// Settings of the `http` (GMS Email API) backend.
    pub http: HttpConfig,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            kind: BackendKind::Mock,
            mock: MockConfig::default(),
            smtp: SmtpConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

impl BackendConfig {
    fn validate(&self) -> Result<(), Invalid> {
        match self.kind {
            BackendKind::Mock => {
                self.mock
                    .default_mailbox
                    .parse::<lettre::Address>()
                    .map_err(|e| {
                        Invalid::new(
                            "email.backend.mock.default_mailbox",
                            format!("is not an address: {e}"),
                        )
                    })?;
            }
            BackendKind::Smtp => {
                let smtp = &self.smtp;
                if smtp.host.is_empty() {
                    return Err(Invalid::new("email.backend.smtp.host", "must be set"));
                }
                smtp.default_mailbox
                    .parse::<lettre::Address>()
                    .map_err(|e| {
                        Invalid::new(
                            "email.backend.smtp.default_mailbox",
                            format!("is not an address: {e}"),
                        )
                    })?;
                if smtp.username.is_some() != smtp.password.is_some() {
                    return Err(Invalid::new(
                        "email.backend.smtp.password",
                        "must be set together with email.backend.smtp.username",
                    ));
                }
            }
            BackendKind::Http => {
                let http = &self.http;
                if !(http.base_url.starts_with("http://") || http.base_url.starts_with("https://"))
                {
                    return Err(Invalid::new(
                        "email.backend.http.base_url",
                        "must be an http(s) URL",
                    ));
                }
                if http.service_name.is_empty()
                    || !http
                        .service_name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(Invalid::new(
                        "email.backend.http.service_name",
                        "must be letters, digits, '-', '_' or '.'",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The backend kinds.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Writes `.eml` files into a folder (development and tests).
    Mock,
    /// Sends through an SMTP server.
    Smtp,
    /// Posts to the GMS Email API.
    Http,
}

/// Settings of the `mock` backend.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockConfig {
    /// Folder the `.eml` files are written to (one per interactionId); when unset,
    /// `mock-outbox` inside `email.spool_dir`.
    pub dir: Option<PathBuf>,
    /// The `To` address when neither the request nor `email.mailbox` names one.
    pub default_mailbox: String,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            dir: None,
            default_mailbox: "contact-center@localhost".into(),
        }
    }
}

/// Settings of the `smtp` backend.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Host name of the SMTP server; also the name checked against its certificate.
    pub host: String,
    /// Port; when unset 25 (plain), 587 (starttls) or 465 (tls).
    pub port: Option<u16>,
    /// `plain`, `starttls` (required, never downgraded) or `tls` (implicit TLS).
    pub security: SmtpSecurity,
    /// User name for SMTP AUTH; set with `password` or not at all.
    pub username: Option<String>,
    /// Password for SMTP AUTH. Prefer the environment override to the file. Never logged.
    pub password: Option<Secret>,
    /// The `To` address when neither the request nor `email.mailbox` names one.
    pub default_mailbox: String,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: String::new(),
            port: None,
            security: SmtpSecurity::Starttls,
            username: None,
            password: None,
            default_mailbox: "contact-center@localhost".into(),
        }
    }
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// No TLS: only for a relay on the same host or a trusted network.
    Plain,
    /// STARTTLS, required.
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

/// Settings of the `http` backend (GMS Email API).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Base URL of GMS, e.g. `https://gms.example.com`; the path
    /// `/genesys/2/email/{service_name}` is appended.
    pub base_url: String,
    /// The GMS e-mail service name.
    pub service_name: String,
    /// Sent as `x-api-key` when set (an API gateway in front of GMS). Never logged.
    pub api_key: Option<Secret>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            base_url: String::new(),
            service_name: "email".into(),
            api_key: None,
        }
    }
}
