//! The backends: the only code that hands an e-mail to something outside the gateway.
//!
//! Owns the [`EmailBackend`] trait, [`DeliveryError`] (the one error type of this boundary,
//! carrying whether a retry can help) and the choice of backend from config. A backend
//! delivers one spooled e-mail per call; it must not touch the spool's bookkeeping (queue,
//! dead letters) nor retry on its own: the deliverer decides both.

mod compose;
mod http;
mod mock;
mod smtp;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;

use crate::config::{BackendKind, EmailConfig};
use crate::envelope::Envelope;

pub use compose::compose;
pub use http::HttpBackend;
pub use mock::MockBackend;
pub use smtp::SmtpBackend;

/// Something that takes e-mails off the gateway's hands.
#[async_trait]
pub trait EmailBackend: Send + Sync + 'static {
    /// `mock`, `smtp` or `http`, for the log.
    fn kind(&self) -> &'static str;

    /// Delivers one e-mail whose attachment bodies are files in `dir`. Returns `Ok` only once
    /// the other side has acknowledged it. Every delivery carries the interactionId
    /// (`Message-ID` and `X-Interaction-Id`), so a redelivery after a crash is recognisable.
    async fn deliver(&self, email: &Envelope, dir: &Path) -> Result<(), DeliveryError>;
}

/// A failed delivery. `retry` is decided here, where the cause is known: a refused recipient
/// will be refused again, a refused connection may not be.
#[derive(Debug, Error)]
#[error("{message}")]
pub struct DeliveryError {
    /// True when a later attempt may succeed.
    pub retry: bool,
    /// What happened, for the log and the dead-letter reason.
    pub message: String,
}

impl DeliveryError {
    pub fn transient(message: impl Into<String>) -> Self {
        DeliveryError {
            retry: true,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        DeliveryError {
            retry: false,
            message: message.into(),
        }
    }
}

/// Why the e-mail side could not start. Each message names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The `[email]` section breaks a rule.
    #[error("{0}")]
    Invalid(#[from] config_types::Invalid),
    /// A folder (the spool, the mock outbox) could not be created.
    #[error("{key} {}: {error}", path.display())]
    Folder {
        key: &'static str,
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    /// The SMTP backend's TLS settings were refused.
    #[error("email.backend.smtp TLS settings: {0}")]
    SmtpTls(lettre::transport::smtp::Error),
    /// The GMS e-mail backend's HTTP client (its TLS stack) could not start.
    #[error("email.backend.http client: {0}")]
    HttpClient(reqwest::Error),
}

/// Opens a spooled attachment to send it. Failing to is transient: the next attempt may
/// find it readable.
async fn open_attachment(
    dir: &Path,
    attachment: &crate::envelope::Attachment,
) -> Result<tokio::fs::File, DeliveryError> {
    tokio::fs::File::open(dir.join(&attachment.stored_as))
        .await
        .map_err(|e| {
            DeliveryError::transient(format!("opening attachment {}: {e}", attachment.stored_as))
        })
}

/// Builds the configured backend. `attempt_timeout` bounds each network exchange.
pub fn from_config(
    config: &EmailConfig,
    attempt_timeout: Duration,
) -> Result<Arc<dyn EmailBackend>, StartError> {
    let backend = &config.backend;
    Ok(match backend.kind {
        BackendKind::Mock => Arc::new(MockBackend::new(
            &backend.mock,
            &config.spool_dir,
            config.sender().unwrap_or(&backend.mock.default_mailbox),
        )?),
        BackendKind::Smtp => Arc::new(SmtpBackend::new(
            &backend.smtp,
            config.sender().unwrap_or(&backend.smtp.default_mailbox),
            attempt_timeout,
        )?),
        BackendKind::Http => Arc::new(HttpBackend::new(&backend.http, attempt_timeout)?),
    })
}
