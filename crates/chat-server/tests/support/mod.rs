//! What the restore and fencing tests share: the adapter's calls a customer makes, and
//! waiting for the adapter to connect.

use std::time::Duration;

use backend_api::{Action, Refresh};
use backend_tcp::TcpBackend;
use testkit::eventually;

pub const PATIENCE: Duration = Duration::from_secs(10);

/// A poll reading the whole transcript.
pub fn poll() -> Refresh {
    Refresh {
        action: Action::Poll,
        transcript: backend_api::Transcript::From(1),
        details: false,
    }
}

/// A customer's message, answered with the whole transcript.
pub fn say(text: &str) -> Refresh {
    Refresh {
        action: Action::SendMessage {
            text: text.into(),
            message_type: None,
        },
        transcript: backend_api::Transcript::From(1),
        details: false,
    }
}

pub async fn connected(backend: &TcpBackend) {
    eventually("the adapter connected", PATIENCE, || async {
        backend.is_connected().then_some(())
    })
    .await;
}
