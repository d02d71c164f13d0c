//! Running an operation: tenant and credentials check, routing, then the adapter call.
//!
//! Invariant: nothing reaches a backend before the tenant, the alias and the credentials'
//! MAC have been checked.

use std::sync::Arc;
use std::time::Duration;

use backend_api::{Action, BackendError, ChatRef, ChatUpdate, Event, NewChat, Refresh};

use super::token::stream_token;
use super::{Chats, ClientCredentials, OnChat};
use crate::config::AdminState;
use crate::credentials::Claim;
use crate::error::Error;
use crate::router::{Instance, Route, Router};

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
    /// Opens the chat's event stream (`operation::token`).
    pub stream_token: String,
}

/// The outcome of an operation on an existing chat.
pub struct ChatReply {
    /// The instance that served the request: the client's alias from now on.
    pub alias: Arc<str>,
    /// The client's credentials, echoed in the reply.
    pub credentials: ClientCredentials,
    pub update: ChatUpdate,
    /// Opens the chat's event stream with these credentials (`operation::token`).
    pub stream_token: String,
}

/// Request Chat: place the chat on an instance and start it there. A chat the chosen
/// instance certainly never received (connection refused, full) is tried on another one. An
/// empty `endpoint` (the client named none) becomes the tenant's default.
pub async fn request_chat(gw: &Chats, mut chat: NewChat) -> Result<Created, Error> {
    let tenant = gw
        .tenant(&chat.tenant_name)
        .ok_or_else(|| Error::UnknownTenant(chat.tenant_name.clone()))?;
    let router = gw.router();
    if chat.endpoint.is_empty() {
        chat.endpoint = tenant.default_endpoint.clone();
    }
    let tenant_name = chat.tenant_name.clone();
    let (instance, created) = gw
        .within(async {
            let mut tried: Vec<Arc<str>> = Vec::new();
            let mut last_error = None;
            loop {
                let except: Vec<&str> = tried.iter().map(|a| &**a).collect();
                let Some(instance) = router.place_except(&tenant_name, &except) else {
                    // Nowhere else to go: the failure met says more than "no instance".
                    return Err(last_error.map_or(Error::NoInstance, Error::Backend));
                };
                match instance.backend.create(chat.clone()).await {
                    Ok(created) => {
                        instance.health.request_ok();
                        return Ok((Arc::clone(instance), created));
                    }
                    Err(e) => {
                        note_failure(instance, &e);
                        if !e.never_arrived() || tried.len() >= MAX_ATTEMPTS {
                            return Err(Error::Backend(e));
                        }
                        tried.push(Arc::clone(&instance.alias));
                        last_error = Some(e);
                    }
                }
            }
        })
        .await?;
    let claim = Claim {
        chat_id: &created.chat.chat_id,
        user_id: &created.chat.user_id,
        tenant_name: &tenant_name,
    };
    let secure_key = gw.credentials().seal(claim, &created.chat.secure_key);
    tracing::debug!(chat_id = %created.chat.chat_id, alias = %instance.alias, "chat created");
    let stream_token = stream_token(
        gw,
        &created.chat.chat_id,
        &ClientCredentials {
            user_id: created.chat.user_id.clone(),
            secure_key: secure_key.clone(),
            alias: instance.alias.to_string(),
            tenant_name: tenant_name.clone(),
        },
    );
    Ok(Created {
        stream_token,
        secure_key,
        chat_id: created.chat.chat_id,
        user_id: created.chat.user_id,
        alias: Arc::clone(&instance.alias),
        tenant_name,
        messages: created.messages,
        next_position: created.next_position,
    })
}

/// Most instances one request tries (placement or failover) before it gives up.
pub(super) const MAX_ATTEMPTS: usize = 3;

/// Any operation on an existing chat. When the chat's instance is down, in maint or removed,
/// the chat is restored on another instance first. When the instance fails the request, the
/// request moves too if that is safe: always when it cannot have arrived (connection
/// refused), and for idempotent actions when it may have; otherwise the client gets
/// statusCode 1 and its retry finds the chat moved.
pub async fn on_chat(gw: &Chats, chat_id: &str, req: OnChat) -> Result<ChatReply, Error> {
    let OnChat {
        credentials,
        operation,
    } = req;
    serve(gw, chat_id, credentials, Call::Refresh(&operation)).await
}

/// The push channels' long poll on a chat: answers once the transcript has an event at
/// `from` or later, or the chat ended, or after `wait` with no events (see
/// `ChatBackend::watch`). The same checks, routing and moves as [`on_chat`] (a watch only
/// reads, so it moves after an interruption too); the deadline is `wait` plus the request
/// timeout. The reply's alias is where the chat lives now.
pub async fn watch(
    gw: &Chats,
    chat_id: &str,
    credentials: ClientCredentials,
    from: u64,
    wait: Duration,
) -> Result<ChatReply, Error> {
    serve(gw, chat_id, credentials, Call::Watch { from, wait }).await
}

/// What [`serve`] asks of the chat's instance.
#[derive(Clone, Copy)]
enum Call<'r> {
    Refresh(&'r Refresh),
    Watch { from: u64, wait: Duration },
}

impl Call<'_> {
    fn is_idempotent(&self) -> bool {
        match self {
            Call::Refresh(refresh) => refresh.action.is_idempotent(),
            Call::Watch { .. } => true,
        }
    }

    /// The request deadline, plus the wait of a watch.
    fn extra_time(&self) -> Duration {
        match self {
            Call::Refresh(_) => Duration::ZERO,
            Call::Watch { wait, .. } => *wait,
        }
    }

    async fn run(&self, instance: &Instance, chat: &ChatRef) -> Result<ChatUpdate, BackendError> {
        let refresh = match self {
            Call::Watch { from, wait } => return instance.backend.watch(chat, *from, *wait).await,
            Call::Refresh(refresh) => *refresh,
        };
        match instance.backend.refresh(chat, refresh.clone()).await {
            Err(e) if refresh.action == Action::Complete && ended(&e) => {
                // Complete ends the chat "if it hasn't been ended already": on an ended
                // chat it is answered as a read of it, with chatEnded.
                let read = Refresh {
                    action: Action::Poll,
                    ..refresh.clone()
                };
                instance
                    .backend
                    .refresh(chat, read)
                    .await
                    .map(|u| ChatUpdate {
                        chat_ended: true,
                        ..u
                    })
            }
            other => other,
        }
    }
}

/// The checks, the routing and the moves every request on a chat goes through (see
/// [`on_chat`]).
async fn serve(
    gw: &Chats,
    chat_id: &str,
    mut credentials: ClientCredentials,
    call: Call<'_>,
) -> Result<ChatReply, Error> {
    let opened = check_chat(gw, chat_id, &credentials)?;
    let tenant = credentials.tenant_name.as_str();
    let (instance, update) = gw
        .within_plus(call.extra_time(), async {
            let mut instance = settle(&opened, tenant).await?;
            let mut attempts = 0;
            loop {
                attempts += 1;
                let e = match call.run(&instance, &opened.chat).await {
                    Ok(update) => {
                        instance.health.request_ok();
                        return Ok((instance, update));
                    }
                    Err(e) => e,
                };
                note_failure(&instance, &e);
                // A store failure is not moved: every instance shares the store, so the
                // client hears statusCode 1 at once. `Moved` was refused before anything was
                // applied, so even a message may run again where the chat is restored.
                let movable = match &e {
                    BackendError::Unreachable(_) | BackendError::Moved(_) => true,
                    BackendError::Interrupted(_) => call.is_idempotent(),
                    // Everything else is an answer about this request. An oversize reply
                    // (`TooLarge`) above all: any instance would build the same one.
                    _ => false,
                };
                if !movable || attempts >= MAX_ATTEMPTS {
                    return Err(Error::Backend(e));
                }
                if matches!(e, BackendError::Moved(_)) && instance.serves_its_chats() {
                    // It answered and serves its chats: its copy was stale, or the answer to
                    // its own save was lost. It reloads the store's record and runs the
                    // request again; the chat stays where its alias points.
                    instance = reload_here(&instance, &opened.chat).await?;
                    continue;
                }
                tracing::info!(chat_id, alias = %instance.alias, error = %e,
                    "request failed; moving the chat");
                instance =
                    match failover(&opened.router, tenant, &instance.alias, &opened.chat).await {
                        Ok(target) => target,
                        // Nowhere else: a chat that moved away is reloaded where it was.
                        Err(Error::InstanceDown(_)) if matches!(e, BackendError::Moved(_)) => {
                            reload_here(&instance, &opened.chat).await?
                        }
                        // Nowhere to move: the client hears what went wrong where it was.
                        Err(Error::InstanceDown(_)) => return Err(Error::Backend(e)),
                        Err(other) => return Err(other),
                    };
            }
        })
        .await?;
    if let Some(new_key) = &update.secure_key {
        // The backend's key changed (GMS moved the chat): the client gets it sealed.
        let claim = Claim {
            chat_id,
            user_id: &opened.chat.user_id,
            tenant_name: &credentials.tenant_name,
        };
        credentials.secure_key = gw.credentials().seal(claim, new_key);
    }
    // The token carries the alias that served: where the chat lives now (copied only when
    // the chat moved).
    if credentials.alias != *instance.alias {
        credentials.alias = instance.alias.to_string();
    }
    let stream_token = stream_token(gw, chat_id, &credentials);
    Ok(ChatReply {
        alias: Arc::clone(&instance.alias),
        credentials,
        update,
        stream_token,
    })
}

/// The backend's answer that the chat has ended already (its own, or a GMS's).
fn ended(e: &BackendError) -> bool {
    matches!(
        e,
        BackendError::ChatEnded { .. }
            | BackendError::Remote {
                chat_ended: true,
                status_code: 2,
                ..
            }
    )
}

/// A request on a chat that passed every check: the table it was routed with, the instance
/// its alias names (`None` when a reload removed it) and the backend's own credentials.
pub(super) struct Opened {
    router: Arc<Router>,
    instance: Option<Arc<Instance>>,
    alias: String,
    chat: ChatRef,
}

/// The check every request on a chat passes before any backend sees it: tenant, the
/// credentials' MAC, the alias.
fn check_chat(gw: &Chats, chat_id: &str, creds: &ClientCredentials) -> Result<Opened, Error> {
    if gw.tenant(&creds.tenant_name).is_none() {
        return Err(Error::UnknownTenant(creds.tenant_name.clone()));
    }
    let backend_key = gw.backend_key(chat_id, creds)?;
    let router = gw.router();
    let instance = match router.route(&creds.alias) {
        Route::Live(instance) => Some(Arc::clone(instance)),
        Route::Retired => None,
        Route::Unknown => return Err(Error::UnknownAlias(creds.alias.clone())),
    };
    let chat = ChatRef {
        chat_id: chat_id.to_owned(),
        user_id: creds.user_id.clone(),
        secure_key: backend_key.into_owned(),
    };
    Ok(Opened {
        router,
        instance,
        alias: creds.alias.clone(),
        chat,
    })
}

/// The checks of [`check_chat`], then the instance that serves the chat now (moving it
/// there if its own instance cannot). For the file operations, which are never retried.
pub(super) async fn open_chat(
    gw: &Chats,
    chat_id: &str,
    creds: &ClientCredentials,
) -> Result<(Arc<Instance>, ChatRef), Error> {
    let opened = check_chat(gw, chat_id, creds)?;
    let instance = gw.within(settle(&opened, &creds.tenant_name)).await?;
    Ok((instance, opened.chat))
}

/// The instance the chat's alias names when it serves its chats, else where the chat moves.
/// A down instance with nowhere to move its chats is still tried (it may be back before its
/// checks say so); one in maint is not.
async fn settle(opened: &Opened, tenant: &str) -> Result<Arc<Instance>, Error> {
    let own = opened.instance.as_ref();
    if let Some(instance) = own.filter(|i| i.serves_its_chats()) {
        return Ok(Arc::clone(instance));
    }
    match failover(&opened.router, tenant, &opened.alias, &opened.chat).await {
        Err(Error::InstanceDown(_)) if own.is_some_and(|i| i.state() != AdminState::Maint) => {
            Ok(Arc::clone(own.expect("checked")))
        }
        moved => moved,
    }
}

/// Restores the chat on another ready, healthy instance of its tenant and returns it. The
/// credentials were checked by the caller; the restore carries the backend's own.
async fn failover(
    router: &Router,
    tenant: &str,
    from: &str,
    chat: &ChatRef,
) -> Result<Arc<Instance>, Error> {
    let mut tried: Vec<&str> = vec![from];
    while tried.len() <= MAX_ATTEMPTS {
        let Some(target) = router.place_chat_except(tenant, &chat.chat_id, &tried) else {
            break;
        };
        match target.backend.restore(chat).await {
            Ok(()) => {
                target.health.request_ok();
                tracing::info!(chat_id = %chat.chat_id, from, to = %target.alias, "chat moved");
                return Ok(Arc::clone(target));
            }
            Err(BackendError::Unsupported(_)) => {
                return Err(Error::CannotMove(from.to_owned()));
            }
            Err(e) => {
                note_failure(target, &e);
                if !e.never_arrived() {
                    return Err(Error::Backend(e));
                }
                tried.push(&target.alias);
            }
        }
    }
    Err(Error::InstanceDown(from.to_owned()))
}

/// Restores a chat on the instance that said it moved away (it dropped its stale copy): the
/// restore loads the store's newer record there.
async fn reload_here(instance: &Arc<Instance>, chat: &ChatRef) -> Result<Arc<Instance>, Error> {
    instance.backend.restore(chat).await.map_err(|e| {
        note_failure(instance, &e);
        Error::Backend(e)
    })?;
    tracing::info!(chat_id = %chat.chat_id, alias = %instance.alias, "chat reloaded from the store");
    Ok(Arc::clone(instance))
}

/// Tells an instance's health what a failed request says about it.
fn note_failure(instance: &Instance, e: &BackendError) {
    match e {
        BackendError::Unreachable(why) => instance.health.refused(why),
        BackendError::Interrupted(why) => instance.health.request_failed(why),
        // It answered: busy, a refusal of this request, a chat it no longer holds, or its
        // store failed (shared by every instance: no reason to eject this one).
        _ => instance.health.request_ok(),
    }
}
