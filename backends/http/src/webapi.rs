//! The Web API v2 dialect of the adapter (`dialect = "webapi"`): a Web API Server's Chat API
//! (`/api/v2/chats…`, JSON) as the remote, e.g. an existing Web API Server, or another
//! gateway's Web API front end, behind this gateway.
//!
//! Each action is its Web API operation (`operationName`); the transcript comes from Get
//! Messages and GetChat's state, participants, user data and read marker from GetChat, each
//! one more call after the action. The remote's alias and the chat's tenant ride in the key
//! the gateway seals (`key`, the tenant in the service's place). Errors: statusCode 1/2
//! and codes pass through ([`BackendError::Remote`]), except the remote's own "unknown chat"
//! (210) and "chat ended" (211), which become [`BackendError::UnknownChat`] and
//! [`BackendError::ChatEnded`] so the client hears them exactly as the remote said them.
//! No file transfer: the Web API has none.

use std::sync::atomic::Ordering;

use backend_api::{
    Action, BackendError, ChatCreated, ChatRef, ChatUpdate, NewChat, Refresh, Transcript,
};
use reqwest::Url;
use serde_json::{json, Map, Value};

use crate::adapter::{interpret, HttpBackend};
use crate::key::RemoteKey;
use crate::wire::Reply;

/// The remote's code for a chat it does not know, and for a chat that has ended.
const UNKNOWN_CHAT: i64 = 210;
const CHAT_ENDED: i64 = 211;

impl HttpBackend {
    /// `{base}/api/v2/chats[/{tail…}]`, each segment escaped.
    fn chats_url(&self, tail: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .extend(["api", "v2", "chats"])
                .extend(tail);
        }
        url
    }

    /// One JSON POST and the remote's reply.
    async fn post_json(&self, url: Url, body: &Value) -> Result<Reply, BackendError> {
        let request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let (status, bytes) = self.exchange(request).await?;
        web_api_interpret(status, &bytes)
    }

    pub(crate) async fn web_api_create(&self, chat: NewChat) -> Result<ChatCreated, BackendError> {
        let mut body = Map::new();
        body.insert("operationName".into(), "RequestChat".into());
        body.insert("tenantName".into(), chat.tenant_name.clone().into());
        body.insert("nickname".into(), chat.nickname.into());
        for (k, v) in [
            ("firstName", chat.first_name),
            ("lastName", chat.last_name),
            ("emailAddress", chat.email_address),
            ("subject", chat.subject),
            // Empty: the remote tenant's default endpoint.
            ("endpoint", Some(chat.endpoint).filter(|e| !e.is_empty())),
        ] {
            if let Some(v) = v {
                body.insert(k.into(), v.into());
            }
        }
        body.insert("userData".into(), json!(chat.user_data));
        let reply = self
            .post_json(self.chats_url(&[]), &Value::Object(body))
            .await?;
        let created = reply.into_created(chat.tenant_name, "Web API")?;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(created)
    }

    pub(crate) async fn web_api_refresh(
        &self,
        chat: &ChatRef,
        request: Refresh,
    ) -> Result<ChatUpdate, BackendError> {
        // The key was sealed by the gateway: one it cannot unpack was not made here.
        let key = RemoteKey::unpack(&chat.secure_key).ok_or(BackendError::BadCredentials)?;
        let credentials = |key: &RemoteKey| {
            let mut body = Map::new();
            body.insert("userId".into(), chat.user_id.clone().into());
            body.insert("secureKey".into(), key.secure_key.clone().into());
            body.insert("alias".into(), key.alias.clone().into());
            body.insert("tenantName".into(), key.service.clone().into());
            body
        };
        let completes = request.action == Action::Complete;
        let idempotent = request.action.is_idempotent();
        let mut key_now = key.clone();
        let mut last: Option<Reply> = None;
        if let Some((name, fields)) = operation(request.action)? {
            let mut body = credentials(&key);
            body.insert("operationName".into(), name.into());
            body.extend(fields);
            let url = self.chats_url(&[&chat.chat_id]);
            let reply = self.post_json(url, &Value::Object(body)).await?;
            if completes {
                let _ = self
                    .open
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
            follow(&mut key_now, &reply);
            last = Some(reply);
        }
        // The reads after an action: a failure there must not fail an action that was
        // applied (its client would send it again), so the update goes without them.
        let acted = last.is_some();
        let read = |result: Result<Reply, BackendError>| match result {
            Ok(reply) => Ok(Some(reply)),
            Err(e) if acted && !idempotent => {
                tracing::debug!(error = %e, "read after a Web API action failed; answered without it");
                Ok(None)
            }
            Err(e) => Err(e),
        };
        let mut details = None;
        if request.details {
            let mut body = credentials(&key_now);
            body.insert("operationName".into(), "GetChat".into());
            let url = self.chats_url(&[&chat.chat_id]);
            if let Some(reply) = read(self.post_json(url, &Value::Object(body)).await)? {
                follow(&mut key_now, &reply);
                details = Some(reply.web_api_details());
                last = Some(reply);
            }
        }
        let mut messages = Vec::new();
        let mut unread = None;
        // A bare poll without a transcript still needs the position: Get Messages from 0.
        let wanted = match request.transcript {
            Transcript::From(n) => Some(n),
            Transcript::None if last.is_none() => Some(0),
            Transcript::None => None,
        };
        if let Some(n) = wanted {
            let mut body = credentials(&key_now);
            body.insert("transcriptPosition".into(), n.into());
            let url = self.chats_url(&[&chat.chat_id, "messages"]);
            match read(self.post_json(url, &Value::Object(body)).await)? {
                Some(reply) => {
                    follow(&mut key_now, &reply);
                    messages = reply.events();
                    messages.retain(|e| e.index >= n);
                    last = Some(reply);
                }
                // The transcript read failed after the action: the client asks from where
                // it asked again (the action's own `nextPosition` would skip events).
                None => unread = Some(n.max(1)),
            }
        }
        let last = last.unwrap_or_default();
        let next_position = unread.unwrap_or_else(|| last.next_position(&messages));
        if key_now.alias != key.alias {
            tracing::info!(from = %key.alias, to = %key_now.alias, "the Web API remote moved the chat");
        }
        Ok(ChatUpdate {
            messages,
            next_position,
            chat_ended: last.chat_ended.unwrap_or(false),
            details,
            secure_key: (key_now != key).then(|| key_now.pack()),
        })
    }
}

impl HttpBackend {
    /// Takes over a chat from another instance: Web API front ends of the same chats (Web
    /// API Servers before one chat server cluster, or gateway replicas sharing a secret and
    /// chat servers) serve each other's chats, so this asks the remote whether it serves
    /// this one (Get Messages from 0, which changes nothing). A remote that does not is
    /// the answer it gives (unknown chat, bad credentials…), and the chat does not move.
    pub(crate) async fn web_api_restore(&self, chat: &ChatRef) -> Result<(), BackendError> {
        let update = self
            .web_api_refresh(
                chat,
                Refresh {
                    action: Action::Poll,
                    transcript: Transcript::None,
                    details: false,
                },
            )
            .await?;
        if update.secure_key.is_some() {
            // The remote would hand out another key: the gateway's restore cannot carry it,
            // and the next request on the chat learns it anyway.
            tracing::debug!(chat_id = %chat.chat_id, "the remote renewed the chat's key on restore");
        }
        Ok(())
    }
}

/// A new alias or key the remote handed out (its chat moved, or its key was renewed).
fn follow(key: &mut RemoteKey, reply: &Reply) {
    if let Some(alias) = reply.alias.as_ref().filter(|a| !a.is_empty()) {
        key.alias.clone_from(alias);
    }
    if let Some(secure_key) = reply.secure_key.as_ref().filter(|k| !k.is_empty()) {
        key.secure_key.clone_from(secure_key);
    }
}

/// A Web API operation: its `operationName` and its own fields.
type Operation = (&'static str, Map<String, Value>);

/// The Web API operation of an action and its fields; `None` for a poll (only reads).
fn operation(action: Action) -> Result<Option<Operation>, BackendError> {
    let mut fields = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            fields.insert(k.to_owned(), v);
        }
    };
    let name = match action {
        Action::Poll => return Ok(None),
        Action::SendMessage { text, message_type } => {
            put("text", Some(text.into()));
            put("messageType", message_type.map(Into::into));
            "SendMessage"
        }
        Action::StartTyping { text } => {
            put("text", text.map(Into::into));
            "SendStartTypingNotification"
        }
        Action::StopTyping { text } => {
            put("text", text.map(Into::into));
            "SendStopTypingNotification"
        }
        Action::UpdateNickname { nickname } => {
            put("nickname", Some(nickname.into()));
            "UpdateUserNickname"
        }
        Action::PushUrl { url } => {
            put("pushUrl", Some(url.into()));
            "SendUrl"
        }
        Action::UpdateUserData { data, text } => {
            put("userData", Some(json!(data)));
            put("text", text.map(Into::into));
            "UpdateUserData"
        }
        Action::Complete => "Complete",
        Action::ReadReceipt { position } => {
            put("transcriptPosition", Some(position.into()));
            "ReadReceipt"
        }
        // The Web API has no custom notice: refused before anything is sent.
        Action::CustomNotice { .. } => {
            return Err(BackendError::Unsupported("customNotice over the Web API"))
        }
    };
    Ok(Some((name, fields)))
}

/// The remote's reply: its own "unknown chat" and "chat ended" as the domain's errors, any
/// other refusal passed through (`adapter::interpret`).
fn web_api_interpret(status: reqwest::StatusCode, body: &[u8]) -> Result<Reply, BackendError> {
    if let Ok(reply) = serde_json::from_slice::<Reply>(body) {
        if reply.status_code == Some(2) {
            match reply.errors.first().and_then(|e| e.code) {
                Some(UNKNOWN_CHAT) => return Err(BackendError::UnknownChat),
                Some(CHAT_ENDED) => {
                    return Err(BackendError::ChatEnded {
                        next_position: reply.next_position.unwrap_or(1),
                    })
                }
                _ => {}
            }
        }
    }
    interpret(status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_map_to_web_api_operations() {
        let (name, fields) = operation(Action::SendMessage {
            text: "hi".into(),
            message_type: None,
        })
        .unwrap()
        .unwrap();
        assert_eq!(name, "SendMessage");
        assert_eq!(Value::Object(fields), json!({"text": "hi"}));
        let (name, fields) = operation(Action::ReadReceipt { position: 4 })
            .unwrap()
            .unwrap();
        assert_eq!(name, "ReadReceipt");
        assert_eq!(Value::Object(fields), json!({"transcriptPosition": 4}));
        assert_eq!(operation(Action::Poll).unwrap(), None);
        assert!(matches!(
            operation(Action::CustomNotice { text: "n".into() }),
            Err(BackendError::Unsupported(_))
        ));
    }

    #[test]
    fn the_remotes_unknown_and_ended_chats_are_the_domains() {
        let ok = reqwest::StatusCode::OK;
        let ended = br#"{"statusCode":2,"errors":[{"code":211,"message":"ended"}],
            "chatEnded":true,"nextPosition":9}"#;
        assert_eq!(
            web_api_interpret(reqwest::StatusCode::CONFLICT, ended).unwrap_err(),
            BackendError::ChatEnded { next_position: 9 }
        );
        let unknown = br#"{"statusCode":2,"errors":[{"code":210,"message":"no"}]}"#;
        assert_eq!(
            web_api_interpret(reqwest::StatusCode::NOT_FOUND, unknown).unwrap_err(),
            BackendError::UnknownChat
        );
        let busy = br#"{"statusCode":1,"errors":[{"code":503,"message":"busy"}]}"#;
        let e = web_api_interpret(ok, busy).unwrap_err();
        assert!(e.retryable() && !e.never_arrived());
        assert!(matches!(e, BackendError::Remote { code: 503, .. }));
    }
}
