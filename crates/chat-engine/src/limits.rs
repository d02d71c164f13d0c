//! The size rules of a chat: how long one thing a customer sends may be, how much a transcript
//! holds, and how much of it one reply carries.
//!
//! Owns the arithmetic only (lengths and budgets); [`crate::Behaviour`] holds the configured
//! limits and `chat` applies them. It must not serialise anything: a page is measured by
//! counting, not by encoding it twice.

use backend_api::{BackendError, Event, UserData};

use crate::Behaviour;

/// Most events one reply carries (a refresh, Get Messages, a new chat's first reply). The
/// rest is left for the next poll: the reply's `next_position` names the first event not sent.
pub const PAGE_MAX_EVENTS: usize = 500;

/// Most bytes of event JSON one reply carries: half of the chat-server protocol's 1 MiB frame,
/// so the reply's other parts (details, ids) fit beside it. A page holds at least one event
/// whatever its size; one event is at most about 6 × `max_message_bytes` (≤ 64 KiB) escaped.
pub const PAGE_MAX_BYTES: usize = 512 * 1024;

/// What an event costs beyond its strings: its keys, index, type, participant id and times,
/// rounded up generously (the longest fixed part of an event's JSON is under 200 bytes).
pub(crate) const EVENT_OVERHEAD: usize = 256;

/// The length of `s` once written as a JSON string (without the quotes): what escaping adds is
/// counted, so a text of control characters is measured at its true size.
pub(crate) fn json_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// An upper bound of an event's JSON size, in either the adapter's or the protocol's form.
pub(crate) fn event_json_len(e: &Event) -> usize {
    EVENT_OVERHEAD
        + json_len(&e.from.nickname)
        + e.text.as_deref().map_or(0, json_len)
        + e.message_type.as_deref().map_or(0, json_len)
        + user_data_json_len(&e.user_data)
}

fn user_data_json_len(data: &UserData) -> usize {
    data.iter()
        .map(|(k, v)| json_len(k) + json_len(v) + 6)
        .sum()
}

/// What an event counts against `max_transcript_bytes`: its strings as they are, plus the
/// fixed overhead. Cheap (no scan of the text), so it can be summed on every action.
pub(crate) fn content_len(e: &Event) -> usize {
    EVENT_OVERHEAD
        + e.from.nickname.len()
        + e.text.as_deref().map_or(0, str::len)
        + e.message_type.as_deref().map_or(0, str::len)
        + user_data_len(&e.user_data)
}

/// User data's size as raw keys and values.
pub(crate) fn user_data_len(data: &UserData) -> usize {
    data.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Refuses `value` when it is longer than `max_message_bytes`.
pub(crate) fn check_len(
    field: &str,
    value: &str,
    behaviour: &Behaviour,
) -> Result<(), BackendError> {
    check_size(field, value.len(), behaviour)
}

/// Refuses a field of `len` bytes when it is longer than `max_message_bytes`.
pub(crate) fn check_size(
    field: &str,
    len: usize,
    behaviour: &Behaviour,
) -> Result<(), BackendError> {
    if len > behaviour.max_message_bytes {
        return Err(BackendError::TooLong {
            field: field.to_owned(),
            limit: behaviour.max_message_bytes as u64,
        });
    }
    Ok(())
}

/// How many of `events` one reply carries within `budget` bytes and [`PAGE_MAX_EVENTS`]:
/// always at least one, so a client paging through makes progress.
pub(crate) fn page_len(events: &[Event], budget: usize) -> usize {
    let mut used = 0;
    for (n, e) in events.iter().take(PAGE_MAX_EVENTS).enumerate() {
        used += event_json_len(e);
        if used > budget && n > 0 {
            return n;
        }
    }
    events.len().min(PAGE_MAX_EVENTS)
}

/// The budget left for events in a reply that also carries details of this size.
pub(crate) fn events_budget(details: Option<&backend_api::ChatDetails>) -> usize {
    let details = details.map_or(0, |d| {
        user_data_json_len(&d.user_data)
            + d.participants
                .iter()
                .map(|p| json_len(&p.nickname) + 64)
                .sum::<usize>()
    });
    PAGE_MAX_BYTES.saturating_sub(details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_len_counts_escapes() {
        assert_eq!(json_len("abc"), 3);
        assert_eq!(json_len("a\"b"), 4);
        assert_eq!(json_len("\u{1}"), 6);
        assert_eq!(json_len("é"), 2);
        for s in ["plain", "q\"uo\\te\n\t", "\u{0}\u{1f}x", "ünï"] {
            assert_eq!(
                json_len(s) + 2,
                serde_json::to_string(s).unwrap().len(),
                "{s:?}"
            );
        }
    }
}
