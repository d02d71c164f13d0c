//! The SMTP backend (lettre): one connection per e-mail, plain, STARTTLS or implicit TLS,
//! optional AUTH.
//!
//! Owns the SMTP transport and the reading of SMTP failures as retryable (4xx, network) or not
//! (5xx).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{compose, DeliveryError, EmailBackend};
use crate::config::{SmtpConfig, SmtpSecurity};
use crate::envelope::Envelope;

/// Sends through an SMTP server.
pub struct SmtpBackend {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    default_mailbox: String,
    /// The envelope sender and `From:` of every message (`email.sender`).
    sender: String,
    server: String,
}

impl SmtpBackend {
    pub fn new(
        config: &SmtpConfig,
        sender: &str,
        timeout: Duration,
    ) -> Result<Self, super::StartError> {
        let tls_parameters =
            || TlsParameters::new(config.host.clone()).map_err(super::StartError::SmtpTls);
        let (tls, default_port) = match config.security {
            SmtpSecurity::Plain => (Tls::None, 25),
            SmtpSecurity::Starttls => (Tls::Required(tls_parameters()?), 587),
            SmtpSecurity::Tls => (Tls::Wrapper(tls_parameters()?), 465),
        };
        let port = config.port.unwrap_or(default_port);
        // `builder_dangerous` only means "no TLS preset": TLS is set explicitly just below.
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(port)
            .tls(tls)
            .timeout(Some(timeout));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(SmtpBackend {
            transport: builder.build(),
            default_mailbox: config.default_mailbox.clone(),
            sender: sender.to_owned(),
            server: format!("{}:{port}", config.host),
        })
    }
}

#[async_trait]
impl EmailBackend for SmtpBackend {
    fn kind(&self) -> &'static str {
        "smtp"
    }

    async fn deliver(&self, email: &Envelope, dir: &Path) -> Result<(), DeliveryError> {
        // lettre sends from one buffer: the message is in memory once while it is sent
        // (attachments base64-encoded, about 4/3 of `email.max_size` at most).
        let mut message = Vec::new();
        let envelope = compose(
            email,
            dir,
            &self.default_mailbox,
            &self.sender,
            &mut message,
        )
        .await?;
        match self.transport.send_raw(&envelope, &message).await {
            Ok(_) => Ok(()),
            Err(e) => Err(DeliveryError {
                // A 5xx reply will come again; everything else (4xx, refused connection,
                // timeout, TLS trouble that an operator may fix) is worth another try.
                retry: !e.is_permanent(),
                message: format!("SMTP {}: {e}", self.server),
            }),
        }
    }
}
