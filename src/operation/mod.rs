//! Operations: what a request asks for, as one typed value below both dialects, and the one
//! place that runs it (`run`: credentials check → router → adapter).
//!
//! A new chat is a `backend_api::NewChat`, a request on a chat an [`OnChat`] (the client's
//! credentials and a `backend_api::Refresh`); the dialects at the edge (`edge::webapi`,
//! `edge::gms`) parse their bodies into these. This module knows the credentials scheme and
//! the router, and reads only [`Chats`]; it knows no JSON, forms or HTTP.

mod chats;
mod files;
mod run;
#[cfg(test)]
mod tests;
mod token;

pub use chats::Chats;
pub use files::{delete_file, download_file, file_limits, upload_file, Served};
pub use run::{on_chat, request_chat, watch, ChatReply, Created};
pub use token::{open_chat_token, open_stream_token, seal_chat_token, stream_payload};

use backend_api::Refresh;

/// The four credentials every request inside a chat carries.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    pub user_id: String,
    pub secure_key: String,
    pub alias: String,
    pub tenant_name: String,
}

/// Leaves the secure key out: it is a credential, and a `Debug` line can reach a log.
impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("user_id", &self.user_id)
            .field("secure_key", &"[REDACTED]")
            .field("alias", &self.alias)
            .field("tenant_name", &self.tenant_name)
            .finish()
    }
}

/// A request on an existing chat: an action and the part of the transcript wanted back
/// (GetChat is a poll asking for details, Get Messages a poll from a position).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnChat {
    pub credentials: ClientCredentials,
    pub operation: Refresh,
}
