//! The deliverer: the background task that takes queued e-mails to the backend.
//!
//! Owns when each e-mail is tried (at once when accepted, requeued or found on start-up, then
//! after an exponential backoff), for how long (until `give_up_after` has passed since it was
//! accepted or requeued: a time stored with the e-mail, so restarts neither extend nor reset
//! it), how many at once (`parallel`, so one slow message or a server that stalls a
//! connection holds one slot, not the queue), and the outcome: delivered e-mails leave the
//! queue, given-up ones go to the dead-letter folder with their reason. A delivery holds at
//! most one message in memory, so `parallel` also bounds what delivery costs.
//!
//! It must not know how a backend talks to its server, nor write spool files itself.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::backend::{DeliveryError, EmailBackend};
use crate::envelope::now_ms;
use crate::id::InteractionId;
use crate::mailboxes::Mailboxes;
use crate::spool::Spool;

/// How patiently, how often and how many at once the deliverer tries.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// How long after acceptance (or a requeue) failed deliveries are retried.
    pub give_up_after: Duration,
    /// Wait after the first failure.
    pub initial: Duration,
    /// Cap on the wait between attempts.
    pub max: Duration,
    /// Longest one attempt may take.
    pub attempt_timeout: Duration,
    /// Deliveries under way at once (at least 1).
    pub parallel: usize,
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
/// completes, after the attempts under way have finished; one cut short by the process's
/// shutdown deadline is simply made again by the next run.
pub fn spawn(
    spool: Spool,
    backend: Arc<dyn EmailBackend>,
    policy: RetryPolicy,
    mailboxes: Mailboxes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (DeliveryQueue, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = Deliverer {
        attempt: Arc::new(Attempt {
            spool,
            backend,
            policy,
            mailboxes,
        }),
        schedule: BinaryHeap::new(),
        failures: HashMap::new(),
        seq: 0,
        in_flight: JoinSet::new(),
    };
    let handle = tokio::spawn(task.run(rx, shutdown));
    (DeliveryQueue { tx }, handle)
}

struct Deliverer {
    /// What one attempt needs; shared with the attempts under way.
    attempt: Arc<Attempt>,
    /// Next attempts, soonest first; `seq` keeps first-come order among equal times.
    schedule: BinaryHeap<Reverse<(Instant, u64, InteractionId)>>,
    /// Every e-mail the deliverer holds (scheduled or under way) and its failed attempts in
    /// this run; also stops double scheduling.
    failures: HashMap<InteractionId, u32>,
    seq: u64,
    /// The attempts under way, at most `policy.parallel`.
    in_flight: JoinSet<(InteractionId, Outcome)>,
}

impl Deliverer {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<InteractionId>,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        tokio::pin!(shutdown);
        match self.attempt.spool.queued().await {
            Ok(ids) => {
                if !ids.is_empty() {
                    tracing::info!(
                        count = ids.len(),
                        backend = self.attempt.backend.kind(),
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
            let room = self.in_flight.len() < self.attempt.policy.parallel;
            let next = room
                .then(|| self.schedule.peek().map(|Reverse((at, _, _))| *at))
                .flatten();
            tokio::select! {
                _ = &mut shutdown => break,
                Some(id) = rx.recv() => self.schedule(id, Instant::now()),
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    self.finished(done);
                }
                _ = sleep_until(next), if next.is_some() => {
                    let Some(Reverse((_, _, id))) = self.schedule.pop() else { continue };
                    let failures = self.failures.get(&id).copied().unwrap_or(0);
                    let attempt = Arc::clone(&self.attempt);
                    self.in_flight
                        .spawn(async move { (id.clone(), attempt.run(&id, failures).await) });
                }
            }
        }
        // A delivery under way is the one thing worth finishing on shutdown: cut off after
        // the backend took the e-mail, it would be sent again on the next start. The
        // process's shutdown deadline still bounds the wait.
        while let Some(done) = self.in_flight.join_next().await {
            self.finished(done);
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

    /// Books an attempt's outcome: done, or scheduled again after the backoff.
    fn finished(&mut self, done: Result<(InteractionId, Outcome), tokio::task::JoinError>) {
        let (id, outcome) = match done {
            Ok(done) => done,
            // An attempt panicked (a bug): the e-mail stays queued for the next start, and
            // the deliverer goes on with the others.
            Err(e) => {
                tracing::error!(error = %e, "an e-mail delivery attempt failed unexpectedly");
                return;
            }
        };
        match outcome {
            Outcome::Done => {
                self.failures.remove(&id);
            }
            Outcome::Retry => {
                let failures = self.failures.entry(id.clone()).or_insert(0);
                *failures += 1;
                let wait = self.attempt.policy.backoff(*failures);
                self.enqueue(id, Instant::now() + wait);
            }
        }
        self.publish_depth();
    }
}

/// What became of one attempt.
enum Outcome {
    /// Delivered, dead-lettered, or gone from the queue: nothing more to do.
    Done,
    /// Failed in a way a later attempt may not: try again after the backoff.
    Retry,
}

/// One delivery attempt's inputs, shared by the attempts under way.
struct Attempt {
    spool: Spool,
    backend: Arc<dyn EmailBackend>,
    policy: RetryPolicy,
    mailboxes: Mailboxes,
}

impl Attempt {
    /// Tries `id` once; `failures` is how many attempts on it failed before in this run.
    async fn run(&self, id: &InteractionId, failures: u32) -> Outcome {
        let envelope = match self.spool.load(id).await {
            Ok(envelope) => envelope,
            // Gone from the queue (an operator removed it): nothing to deliver.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Outcome::Done,
            Err(e) => {
                let error = DeliveryError::permanent(format!("unreadable spool entry: {e}"));
                return self.dead_letter(id, failures + 1, &error, None).await;
            }
        };
        // Checked again here, not only at intake: an e-mail spooled before the allow-list
        // changed, or an edited spool entry, must not reach another address either.
        if let Some(mailbox) = &envelope.mailbox {
            if !self.mailboxes.allows(mailbox) {
                let error = DeliveryError::permanent(format!(
                    "mailbox {mailbox:?} is not one of email.mailbox / email.mailboxes"
                ));
                return self.dead_letter(id, failures + 1, &error, None).await;
            }
        }
        let dir = self.spool.queued_dir(id);
        let result = tokio::time::timeout(
            self.policy.attempt_timeout,
            self.backend.deliver(&envelope, &dir),
        )
        .await
        .unwrap_or_else(|_| {
            Err(DeliveryError::transient(format!(
                "no answer within {:?}",
                self.policy.attempt_timeout
            )))
        });
        let error = match result {
            Ok(()) => {
                match self.spool.mark_delivered(id).await {
                    Ok(()) => {
                        tracing::info!(interaction_id = %id, backend = self.backend.kind(), "e-mail delivered")
                    }
                    // Delivered but still queued: the next start delivers it again, with the
                    // same interactionId for the receiver to recognise.
                    Err(e) => {
                        tracing::error!(interaction_id = %id, error = %e, "e-mail delivered but could not be taken out of the spool")
                    }
                }
                return Outcome::Done;
            }
            Err(error) => error,
        };
        metrics::counter!(crate::DELIVERY_FAILURES_METRIC).increment(1);
        let attempts = failures + 1;
        let tried_for = Duration::from_millis(now_ms().saturating_sub(envelope.tried_since_ms()));
        if error.retry && tried_for < self.policy.give_up_after {
            tracing::warn!(interaction_id = %id, attempt = attempts, retry_in = ?self.policy.backoff(attempts), error = %error, "e-mail delivery failed; will retry");
            return Outcome::Retry;
        }
        self.dead_letter(id, attempts, &error, Some(tried_for))
            .await
    }

    /// Moves `id` to the dead-letter folder with the reason; `tried_for` is set when it was
    /// given up for time rather than refused.
    async fn dead_letter(
        &self,
        id: &InteractionId,
        attempts: u32,
        error: &DeliveryError,
        tried_for: Option<Duration>,
    ) -> Outcome {
        let reason = match tried_for {
            Some(tried_for) if error.retry => format!(
                "gave up after {}s of failed attempts (email.give_up_after_secs = {}; {attempts} \
                 attempts in this run); last error: {error}",
                tried_for.as_secs(),
                self.policy.give_up_after.as_secs()
            ),
            _ => format!("refused permanently at attempt {attempts}: {error}"),
        };
        tracing::error!(interaction_id = %id, backend = self.backend.kind(), reason = %reason, "e-mail moved to the dead-letter folder");
        if let Err(io) = self.spool.dead_letter(id, &reason).await {
            tracing::error!(interaction_id = %id, error = %io, "could not dead-letter the e-mail; it stays queued for the next start");
        }
        Outcome::Done
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
            give_up_after: Duration::from_secs(3600),
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            attempt_timeout: Duration::from_secs(1),
            parallel: 1,
        };
        let waits: Vec<_> = (1..=5).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 500, 500]);
        assert_eq!(policy.backoff(200), Duration::from_millis(500));
    }
}
