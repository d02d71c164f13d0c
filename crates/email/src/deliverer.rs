//! The deliverer: one background task that takes queued e-mails to the backend.
//!
//! Owns when each e-mail is tried (at once when accepted or found on start-up, then after an
//! exponential backoff), how often (up to `max_attempts`, counted in memory, so a restart gives
//! every e-mail a fresh count), and the outcome: delivered e-mails leave the queue, given-up ones
//! go to the dead-letter folder with their reason. One e-mail is in flight at a time, which
//! bounds the memory a delivery takes to one message.
//!
//! It must not know how a backend talks to its server, nor write spool files itself.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backend::{DeliveryError, EmailBackend};
use crate::id::InteractionId;
use crate::spool::Spool;

/// How often and how patiently the deliverer tries.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts before an e-mail is dead-lettered (at least 1).
    pub max_attempts: u32,
    /// Wait after the first failure.
    pub initial: Duration,
    /// Cap on the wait between attempts.
    pub max: Duration,
    /// Longest one attempt may take.
    pub attempt_timeout: Duration,
}

impl RetryPolicy {
    /// The wait after the `failures`-th failed attempt: initial, 2×initial, 4×… up to `max`.
    pub fn backoff(&self, failures: u32) -> Duration {
        backoff::Backoff::new(self.initial, self.max).delay(failures)
    }
}

/// Tells the deliverer that an e-mail was committed to the queue.
#[derive(Clone, Debug)]
pub struct DeliveryQueue {
    tx: mpsc::UnboundedSender<InteractionId>,
}

impl DeliveryQueue {
    /// Schedules `id` for delivery now. If the deliverer has stopped (shutdown), the e-mail
    /// stays in the spool and the next start picks it up.
    pub fn push(&self, id: InteractionId) {
        let _ = self.tx.send(id);
    }
}

/// Starts the deliverer: it first schedules everything already in the queue (what a previous
/// run accepted but did not deliver), then whatever is pushed. It stops when `shutdown`
/// completes; an attempt cut short that way is simply made again by the next run.
pub fn spawn(
    spool: Spool,
    backend: Arc<dyn EmailBackend>,
    policy: RetryPolicy,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (DeliveryQueue, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = Deliverer {
        spool,
        backend,
        policy,
        schedule: BinaryHeap::new(),
        failures: HashMap::new(),
        seq: 0,
    };
    let handle = tokio::spawn(task.run(rx, shutdown));
    (DeliveryQueue { tx }, handle)
}

struct Deliverer {
    spool: Spool,
    backend: Arc<dyn EmailBackend>,
    policy: RetryPolicy,
    /// Next attempts, soonest first; `seq` keeps first-come order among equal times.
    schedule: BinaryHeap<Reverse<(Instant, u64, InteractionId)>>,
    /// Every scheduled e-mail and its failed attempts so far; also stops double scheduling.
    failures: HashMap<InteractionId, u32>,
    seq: u64,
}

impl Deliverer {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<InteractionId>,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        tokio::pin!(shutdown);
        match self.spool.queued().await {
            Ok(ids) => {
                if !ids.is_empty() {
                    tracing::info!(
                        count = ids.len(),
                        backend = self.backend.kind(),
                        "recovered queued e-mails from the spool"
                    );
                }
                for id in ids {
                    self.schedule(id, Instant::now());
                }
            }
            // Without the listing, e-mails from the last run wait for the next start; new ones
            // still flow.
            Err(e) => tracing::error!(error = %e, "could not list the e-mail spool queue"),
        }
        loop {
            let next = self.schedule.peek().map(|Reverse((at, _, _))| *at);
            tokio::select! {
                _ = &mut shutdown => break,
                Some(id) = rx.recv() => self.schedule(id, Instant::now()),
                _ = sleep_until(next), if next.is_some() => {
                    let Some(Reverse((_, _, id))) = self.schedule.pop() else { continue };
                    // A delivery under way is the one thing worth finishing on shutdown: cut
                    // off after the backend took the e-mail, it would be sent again on the
                    // next start. The process's shutdown deadline still bounds the wait.
                    self.attempt(id).await;
                }
            }
        }
        tracing::info!("e-mail deliverer stopped");
    }

    fn schedule(&mut self, id: InteractionId, at: Instant) {
        if self.failures.contains_key(&id) {
            return;
        }
        self.failures.insert(id.clone(), 0);
        self.enqueue(id, at);
        self.publish_depth();
    }

    /// Every e-mail the deliverer holds is in `failures` (from scheduling to delivery or
    /// dead letter): that is the spool's depth.
    fn publish_depth(&self) {
        metrics::gauge!(crate::SPOOL_DEPTH_METRIC).set(self.failures.len() as f64);
    }

    fn enqueue(&mut self, id: InteractionId, at: Instant) {
        self.seq += 1;
        self.schedule.push(Reverse((at, self.seq, id)));
    }

    async fn attempt(&mut self, id: InteractionId) {
        self.try_delivery(id).await;
        self.publish_depth();
    }

    async fn try_delivery(&mut self, id: InteractionId) {
        let result = match self.spool.load(&id).await {
            Ok(envelope) => {
                let dir = self.spool.queued_dir(&id);
                tokio::time::timeout(
                    self.policy.attempt_timeout,
                    self.backend.deliver(&envelope, &dir),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(DeliveryError::transient(format!(
                        "no answer within {:?}",
                        self.policy.attempt_timeout
                    )))
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Gone from the queue (an operator removed it): nothing to deliver.
                self.failures.remove(&id);
                return;
            }
            Err(e) => Err(DeliveryError::permanent(format!(
                "unreadable spool entry: {e}"
            ))),
        };
        match result {
            Ok(()) => {
                self.failures.remove(&id);
                match self.spool.mark_delivered(&id).await {
                    Ok(()) => {
                        tracing::info!(interaction_id = %id, backend = self.backend.kind(), "e-mail delivered")
                    }
                    // Delivered but still queued: the next start delivers it again, with the
                    // same interactionId for the receiver to recognise.
                    Err(e) => {
                        tracing::error!(interaction_id = %id, error = %e, "e-mail delivered but could not be taken out of the spool")
                    }
                }
            }
            Err(e) => {
                metrics::counter!(crate::DELIVERY_FAILURES_METRIC).increment(1);
                let failures = {
                    let count = self.failures.entry(id.clone()).or_insert(0);
                    *count += 1;
                    *count
                };
                if e.retry && failures < self.policy.max_attempts {
                    let wait = self.policy.backoff(failures);
                    tracing::warn!(interaction_id = %id, attempt = failures, retry_in = ?wait, error = %e, "e-mail delivery failed; will retry");
                    self.enqueue(id, Instant::now() + wait);
                    return;
                }
                self.failures.remove(&id);
                let reason = if e.retry {
                    format!("gave up after {failures} attempts; last error: {e}")
                } else {
                    format!("refused permanently at attempt {failures}: {e}")
                };
                tracing::error!(interaction_id = %id, backend = self.backend.kind(), reason = %reason, "e-mail moved to the dead-letter folder");
                if let Err(io) = self.spool.dead_letter(&id, &reason).await {
                    tracing::error!(interaction_id = %id, error = %io, "could not dead-letter the e-mail; it stays queued for the next start");
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            attempt_timeout: Duration::from_secs(1),
        };
        let waits: Vec<_> = (1..=5).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 500, 500]);
        assert_eq!(policy.backoff(200), Duration::from_millis(500));
    }
}
