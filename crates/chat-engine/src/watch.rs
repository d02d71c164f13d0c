//! The per-chat wake-up behind the long poll (`ChatBackend::watch`): each chat's [`Slot`]
//! holds its record and a bell rung whenever what a reader sees changes (an event appended,
//! a scheduled event materialised, a record published or adopted, the chat ended, discarded
//! or forgotten), and [`Engine::wait_for_change`] waits on it, or on the chat's next
//! scheduled event falling due, or on a deadline.
//!
//! It owns only waiting: it must not change a chat (a waiter that wakes reads the chat
//! through the normal path, which materialises due events, and in the chat server saves
//! them before anyone sees them) and must not poll. The bell is per process: a waiter hears
//! about changes made by this engine only (the mock is per gateway process; a chat server's
//! watchers hear about that server's chats).

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{now_ms, ChatRecord, Engine};

/// One chat as the engine holds it: its record, under its lock, and its bell.
pub(crate) struct Slot {
    record: Mutex<ChatRecord>,
    bell: Notify,
}

impl Slot {
    pub(crate) fn new(record: ChatRecord) -> Arc<Slot> {
        Arc::new(Slot {
            record: Mutex::new(record),
            bell: Notify::new(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ChatRecord> {
        self.record.lock()
    }

    /// Wakes every waiter registered now: they read the chat again.
    pub(crate) fn ring(&self) {
        self.bell.notify_waiters();
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a reader of a chat sees change: where the transcript ends and whether it ended.
pub(crate) fn seen(record: &ChatRecord) -> (u64, bool) {
    (record.next_position(), record.is_ended())
}

/// Why [`Engine::wait_for_change`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The transcript's end is not where the caller saw it, or the chat has ended: read it.
    Changed,
    /// The chat's next scheduled event (the simulated agent joining or replying) fell due:
    /// read it, and the read materialises it.
    Due,
    /// The deadline passed.
    Deadline,
    /// The chat is not (or no longer) held here.
    Gone,
}

impl Engine {
    /// Waits until chat `chat_id` has changed from what a reader saw (its transcript ending
    /// at `seen_next_position`, not ended), its next scheduled event falls due, half the
    /// disconnect timeout has passed since the customer's last activity, or `until`.
    /// No polling: the waiter registers on the chat's bell before it looks, so a change
    /// between its last read and this call is not missed. It reads nothing for the caller and
    /// changes nothing: the caller reads the chat again (and so counts as the customer's
    /// activity only when it does).
    pub async fn wait_for_change(
        &self,
        chat_id: &str,
        seen_next_position: u64,
        until: Instant,
    ) -> Wake {
        let Some(slot) = self.slot(chat_id) else {
            return Wake::Gone;
        };
        let mut rung = pin!(slot.bell.notified());
        rung.as_mut().enable();
        let due = {
            let record = slot.lock();
            if record.next_position() != seen_next_position || record.is_ended() {
                return Wake::Changed;
            }
            // A held watch is the customer's presence: it reads the chat again (activity)
            // halfway to the disconnect timeout, so an open stream never lets the chat end as
            // idle, whatever its wait.
            let keep_alive = record.last_activity + ms(self.behaviour().disconnect_timeout) / 2;
            Some(
                record
                    .next_due()
                    .map_or(keep_alive, |due| due.min(keep_alive)),
            )
        };
        // The engine's clock is wall time in ms; the wait is on Tokio's clock.
        let due = due.map(|at| Instant::now() + Duration::from_millis(at.saturating_sub(now_ms())));
        let (wake_at, at_wake) = match due {
            Some(due) if due < until => (due, Wake::Due),
            _ => (until, Wake::Deadline),
        };
        tokio::select! {
            _ = rung => Wake::Changed,
            _ = tokio::time::sleep_until(wake_at) => at_wake,
        }
    }
}
