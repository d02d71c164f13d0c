//! Running an operation: tenant and credentials check, routing, then the adapter call.
//!
//! Invariant: nothing reaches a backend before the tenant, the alias and the credentials'
//! MAC have been checked.

use std::future::Future;
use std::sync::Arc;

use backend_api::{BackendError, ChatRef, ChatUpdate, Event, NewChat, Refresh, Transcript};

use super::{ChatOperation, ClientCredentials, OnChat, RequestChat};
use crate::credentials::Claim;
use crate::error::Error;
use crate::router::Instance;
use crate::Gateway;

/// A new chat, as the client will see it.
pub struct Created {
    pub chat_id: String,
    pub user_id: String,
    /// The sealed key for the client (see `credentials`).
    pub secure_key: String,
    pub alias: Arc<str>,
    pub tenant_name: String,
    pub messages: Vec<Event>,
    pub next_position: u64,
}

/// The outcome of an operation on an existing chat.
pub struct ChatReply {
    /// The instance that served the request: the client's alias from now on.
    pub alias: Arc<str>,
    /// The client's credentials, echoed in the reply.
    pub credentials: ClientCredentials,
    pub update: ChatUpdate,
}

/// Request Chat: place the chat on an instance and start it there.
pub async fn request_chat(gw: &Gateway, req: RequestChat) -> Result<Created, Error> {
    let tenant = gw
        .config
        .tenant(&req.tenant_name)
        .ok_or_else(|| Error::UnknownTenant(req.tenant_name.clone()))?;
    let router = gw.router();
    let instance = router.place(&req.tenant_name).ok_or(Error::NoInstance)?;
    let endpoint = req
        .endpoint
        .unwrap_or_else(|| tenant.default_endpoint.clone());
    let chat = NewChat {
        tenant_name: req.tenant_name,
        nickname: req.nickname,
        first_name: req.first_name,
        last_name: req.last_name,
        email_address: req.email_address,
        subject: req.subject,
        endpoint,
        user_data: req.user_data,
    };
    let tenant_name = chat.tenant_name.clone();
    let created = gw.deadline(instance.backend.create(chat)).await?;
    let claim = Claim {
        chat_id: &created.chat.chat_id,
        user_id: &created.chat.user_id,
        tenant_name: &tenant_name,
    };
    let secure_key = gw.credentials.seal(claim, &created.chat.secure_key);
    tracing::debug!(chat_id = %created.chat.chat_id, alias = %instance.alias, "chat created");
    Ok(Created {
        secure_key,
        chat_id: created.chat.chat_id,
        user_id: created.chat.user_id,
        alias: Arc::clone(&instance.alias),
        tenant_name,
        messages: created.messages,
        next_position: created.next_position,
    })
}

/// Any operation on an existing chat.
pub async fn on_chat(gw: &Gateway, chat_id: &str, mut req: OnChat) -> Result<ChatReply, Error> {
    let (instance, chat) = open_chat(gw, chat_id, &req.credentials)?;
    let refresh = match req.operation {
        ChatOperation::Act(action) => Refresh {
            action,
            transcript: Transcript::None,
            details: false,
        },
        ChatOperation::GetChat => Refresh {
            action: backend_api::Action::Poll,
            transcript: Transcript::None,
            details: true,
        },
        ChatOperation::GetMessages(transcript) => Refresh {
            action: backend_api::Action::Poll,
            transcript,
            details: false,
        },
        ChatOperation::Refresh(refresh) => refresh,
    };
    let update = gw
        .deadline(instance.backend.refresh(&chat, refresh))
        .await?;
    if let Some(new_key) = &update.secure_key {
        // The backend's key changed (GMS moved the chat): the client gets it sealed.
        let claim = Claim {
            chat_id,
            user_id: &chat.user_id,
            tenant_name: &req.credentials.tenant_name,
        };
        req.credentials.secure_key = gw.credentials.seal(claim, new_key);
    }
    Ok(ChatReply {
        alias: Arc::clone(&instance.alias),
        credentials: req.credentials,
        update,
    })
}

/// The check every request on a chat passes before any backend sees it: tenant, the
/// credentials' MAC, the alias. Returns the instance and the backend's own credentials.
pub(super) fn open_chat(
    gw: &Gateway,
    chat_id: &str,
    creds: &ClientCredentials,
) -> Result<(Arc<Instance>, ChatRef), Error> {
    if gw.config.tenant(&creds.tenant_name).is_none() {
        return Err(Error::UnknownTenant(creds.tenant_name.clone()));
    }
    let claim = Claim {
        chat_id,
        user_id: &creds.user_id,
        tenant_name: &creds.tenant_name,
    };
    let backend_key = gw
        .credentials
        .open(claim, &creds.secure_key)
        .ok_or(Error::BadCredentials)?;
    let router = gw.router();
    let instance = router
        .get(&creds.alias)
        .ok_or_else(|| Error::UnknownAlias(creds.alias.clone()))?;
    let chat = ChatRef {
        chat_id: chat_id.to_owned(),
        user_id: creds.user_id.clone(),
        secure_key: backend_key.to_owned(),
    };
    Ok((Arc::clone(instance), chat))
}

impl Gateway {
    /// Bounds a backend call by the configured request timeout. A call cut off may have
    /// reached the backend, so it is `Interrupted`, never `Unreachable`.
    pub(super) async fn deadline<T>(
        &self,
        call: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.request_timeout, call).await {
            Ok(result) => result.map_err(Error::Backend),
            Err(_) => Err(Error::Timeout),
        }
    }
}
