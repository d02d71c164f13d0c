//! The e-mail side of the gateway: what happens to a "Send Email" request after the HTTP edge
//! has parsed its multipart framing.
//!
//! # Layout
//!
//! The modules follow an e-mail's path:
//!
//! - `intake`: the rules (required fields, address check, limits, file types, file-name
//!   sanitising) applied while the parts stream into a spool draft; [`IntakeError`].
//! - `spool`: the durable folder tree (`tmp/`, `queue/`, `dead/`); the only code that writes,
//!   moves or deletes spooled e-mails.
//! - `deliverer`: the background task that takes queued e-mails to the backend with retries and
//!   exponential backoff, and dead-letters the ones it gives up on.
//! - `backend`: [`EmailBackend`] and its three kinds, `mock` (`.eml` files), `smtp` (lettre)
//!   and `http` (the GMS Email API).
//! - `config`: the `email` config section; `envelope`: the spooled fields (`meta.json`);
//!   `id`: the interactionId.
//!
//! **Invariant**: an interactionId is handed out only by [`Intake::commit`], which returns
//! after the e-mail is fsync'd into `queue/`; an e-mail leaves `queue/` only after the backend
//! acknowledged it or it was dead-lettered.
//!
//! This crate knows nothing of HTTP requests or the Web API's JSON error shape: the edge maps
//! [`IntakeError`] to replies.

pub mod backend;
pub mod config;
mod deliverer;
mod envelope;
mod id;
mod intake;
mod spool;

use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinHandle;

pub use backend::{DeliveryError, EmailBackend, StartError};
pub use config::EmailConfig;
pub use deliverer::{DeliveryQueue, RetryPolicy};
pub use envelope::{Attachment, Envelope};
pub use id::InteractionId;
pub use intake::{sanitize_file_name, AttachmentSink, Intake, IntakeError, Limits, TextField};
pub use spool::{Draft, Spool};

/// Gauge: e-mails accepted and not yet delivered or dead-lettered (the `metrics` facade; the
/// gateway's exporter publishes it).
pub const SPOOL_DEPTH_METRIC: &str = "gateway_email_spool_depth";
/// Counter: failed delivery attempts.
pub const DELIVERY_FAILURES_METRIC: &str = "gateway_email_delivery_failures_total";

/// The running e-mail side: what the edge needs to accept e-mails. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EmailService {
    spool: Spool,
    limits: Arc<Limits>,
    queue: DeliveryQueue,
}

impl EmailService {
    /// Opens the spool (clearing a crash's leftovers), builds the backend and starts the
    /// deliverer, which first picks up every e-mail a previous run left queued. The deliverer
    /// stops when `shutdown` completes.
    pub fn start(
        config: &EmailConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(EmailService, JoinHandle<()>), StartError> {
        config.validate()?;
        let spool = Spool::open(&config.spool_dir).map_err(|error| StartError::Folder {
            key: "email.spool_dir",
            path: config.spool_dir.clone(),
            error,
        })?;
        let policy = config.retry();
        let backend =
            backend::from_config(&config.backend, &config.spool_dir, policy.attempt_timeout)?;
        Ok(Self::with_backend(config, spool, backend, shutdown))
    }

    /// As [`EmailService::start`], with a backend built by the caller.
    pub fn with_backend(
        config: &EmailConfig,
        spool: Spool,
        backend: Arc<dyn EmailBackend>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> (EmailService, JoinHandle<()>) {
        let (queue, handle) = deliverer::spawn(spool.clone(), backend, config.retry(), shutdown);
        let service = EmailService {
            spool,
            limits: Arc::new(Limits::from(config)),
            queue,
        };
        (service, handle)
    }

    /// Starts receiving one e-mail.
    pub async fn intake(&self) -> Result<Intake, IntakeError> {
        Intake::begin(&self.spool, self.limits.clone(), self.queue.clone()).await
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }
}
