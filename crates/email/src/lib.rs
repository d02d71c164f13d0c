//! The e-mail side of the gateway: what happens to a "Send Email" request after the HTTP edge
//! has parsed its multipart framing.
//!
//! # Layout
//!
//! The modules follow an e-mail's path:
//!
//! - `intake`: the rules (required fields, address check, limits, file types, file-name
//!   sanitising) applied while the parts stream into a spool draft; [`IntakeError`].
//! - `mailboxes`: the contact center's own mailboxes, the only addresses mail goes to.
//! - `spool`: the durable folder tree (`tmp/`, `queue/`, `dead/`); the only code that writes,
//!   moves or deletes spooled e-mails.
//! - `deliverer`: the background task that takes queued e-mails to the backend, a few at a
//!   time, with retries and exponential backoff until `give_up_after_secs`, and dead-letters
//!   the ones it gives up on.
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
mod mailboxes;
mod spool;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

pub use backend::{DeliveryError, EmailBackend, StartError};
pub use config::EmailConfig;
pub use deliverer::{DeliveryQueue, RetryPolicy};
pub use envelope::{Attachment, Envelope};
pub use id::InteractionId;
pub use intake::{
    sanitize_file_name, AttachmentSink, Intake, IntakeError, Limits, TextField, MAX_USER_DATA_BYTES,
};
pub use mailboxes::Mailboxes;
pub use spool::{DeadLetter, Draft, Spool};

/// Gauge: e-mails accepted and not yet delivered or dead-lettered (the `metrics` facade; the
/// gateway's exporter publishes it).
pub const SPOOL_DEPTH_METRIC: &str = "gateway_email_spool_depth";
/// Counter: failed delivery attempts.
pub const DELIVERY_FAILURES_METRIC: &str = "gateway_email_delivery_failures_total";

/// What [`EmailService::requeue_dead`] did.
#[derive(Debug, Default)]
pub struct Requeued {
    /// The e-mails moved back into the queue.
    pub ids: Vec<InteractionId>,
    /// Dead letters that could not be moved.
    pub failed: usize,
}

/// The running e-mail side: what the edge needs to accept e-mails. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EmailService {
    spool: Spool,
    limits: Arc<Limits>,
    queue: DeliveryQueue,
    /// One permit per e-mail being received (`max_concurrent_intakes`).
    intakes: Arc<Semaphore>,
    /// The section it was started from (the edge reads its rate limits).
    config: Arc<EmailConfig>,
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
        let backend = backend::from_config(config, policy.attempt_timeout)?;
        Ok(Self::with_backend(config, spool, backend, shutdown))
    }

    /// As [`EmailService::start`], with a backend built by the caller.
    pub fn with_backend(
        config: &EmailConfig,
        spool: Spool,
        backend: Arc<dyn EmailBackend>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> (EmailService, JoinHandle<()>) {
        let (queue, handle) = deliverer::spawn(
            spool.clone(),
            backend,
            config.retry(),
            config.mailbox_policy(),
            shutdown,
        );
        let service = EmailService {
            spool,
            limits: Arc::new(Limits::from(config)),
            queue,
            intakes: Arc::new(Semaphore::new(config.max_concurrent_intakes)),
            config: Arc::new(config.clone()),
        };
        (service, handle)
    }

    /// Starts receiving one e-mail; refused with [`IntakeError::Busy`] at once when
    /// `max_concurrent_intakes` are under way.
    pub async fn intake(&self) -> Result<Intake, IntakeError> {
        let permit = Arc::clone(&self.intakes)
            .try_acquire_owned()
            .map_err(|_| IntakeError::Busy)?;
        Intake::begin(&self.spool, self.limits.clone(), self.queue.clone(), permit).await
    }

    /// The dead letters, oldest first, with the reason each was given up.
    pub async fn dead_letters(&self) -> std::io::Result<Vec<DeadLetter>> {
        self.spool.dead_letters().await
    }

    /// Moves every dead letter back into the queue and schedules it at once, with a fresh
    /// `give_up_after_secs`. One that cannot be moved (unreadable `meta.json`, a disk error)
    /// stays in `dead/`, is logged and counted in [`Requeued::failed`]; only a `dead/` that
    /// cannot be listed fails the whole call.
    pub async fn requeue_dead(&self) -> std::io::Result<Requeued> {
        let mut requeued = Requeued::default();
        for id in self.spool.dead().await? {
            match self.spool.requeue(&id).await {
                Ok(()) => {
                    tracing::info!(interaction_id = %id, "dead letter requeued");
                    self.queue.push(id.clone());
                    requeued.ids.push(id);
                }
                // Requeued or removed meanwhile by someone else: nothing to do.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::error!(interaction_id = %id, error = %e, "could not requeue a dead letter; it stays in dead/");
                    requeued.failed += 1;
                }
            }
        }
        Ok(requeued)
    }

    /// The `email` section the service was started from.
    pub fn config(&self) -> &EmailConfig {
        &self.config
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }
}
