//! [`HttpBackend`]: each chat action as one GMS Chat API v2 call.

use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

use async_trait::async_trait;
use backend_api::{
    watch_by_polling, Action, BackendError, ChatBackend, ChatCreated, ChatRef, ChatUpdate,
    FileContent, FileLimits, Load, NewChat, NewFile, Refresh, Transcript,
};
use bytes::Bytes;
use config_types::Invalid;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;

use crate::key::RemoteKey;
use crate::wire::{self, Reply};
use crate::{Dialect, HttpConfig};

/// Why [`HttpBackend::new`] could not build the adapter.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration was refused (the key is relative to the instance's `http` table).
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// The HTTP client (its TLS stack) could not start.
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
}

/// A GMS cluster as one chat instance. Cheap to share; one connection pool for all chats.
pub struct HttpBackend {
    pub(crate) config: HttpConfig,
    pub(crate) base: Url,
    pub(crate) client: reqwest::Client,
    /// Chats started here and not completed here: an estimate for placement only (GMS
    /// reports no load, and chats that end on their own are not seen ending).
    pub(crate) open: AtomicU64,
}

type Form = Vec<(String, String)>;

impl HttpBackend {
    /// Builds the client. Fails only on a configuration [`HttpConfig::validate`] refuses,
    /// or when the TLS stack cannot start.
    pub fn new(config: HttpConfig) -> Result<HttpBackend, BuildError> {
        config.validate()?;
        let base =
            Url::parse(&config.base_url).map_err(|e| Invalid::new("base_url", e.to_string()))?;
        let mut headers = HeaderMap::new();
        if let Some(key) = &config.api_key {
            // Both were checked by `validate`.
            let name = HeaderName::from_bytes(config.api_key_header.as_bytes())
                .map_err(|e| Invalid::new("api_key_header", e.to_string()))?;
            let mut value = HeaderValue::from_str(key.expose())
                .map_err(|_| Invalid::new("api_key", "must be a non-empty header value"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .build()
            .map_err(BuildError::Client)?;
        Ok(HttpBackend {
            config,
            base,
            client,
            open: AtomicU64::new(0),
        })
    }

    /// `{base}/genesys/2/chat/{service}[/{chatId}/{op}]`, each segment escaped.
    fn url(&self, service: &str, chat: Option<(&str, &str)>) -> Url {
        match chat {
            Some((chat_id, op)) => self.url_of(service, &[chat_id, op]),
            None => self.url_of(service, &[]),
        }
    }

    /// `{base}/genesys/2/chat/{service}/{tail…}`, each segment escaped.
    fn url_of(&self, service: &str, tail: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .extend(["genesys", "2", "chat", service])
                .extend(tail);
        }
        url
    }

    /// One form-encoded POST and its GMS reply.
    async fn call(&self, url: Url, form: &Form) -> Result<Reply, BackendError> {
        let (status, body) = self.exchange(self.client.post(url).form(form)).await?;
        interpret(status, &body)
    }

    /// A read receipt: a GMS that predates `readReceipt` answers 404 without a GMS reply.
    /// The receipt is advisory, so that is taken as done (logged) rather than failing the
    /// client's call (widgets throw on it).
    async fn read_receipt(&self, url: Url, form: &Form) -> Result<Reply, BackendError> {
        let (status, body) = self.exchange(self.client.post(url).form(form)).await?;
        match interpret(status, &body) {
            Err(BackendError::Rejected { .. }) if status == reqwest::StatusCode::NOT_FOUND => {
                tracing::debug!("GMS has no readReceipt operation; the receipt is dropped");
                Ok(Reply::default())
            }
            other => other,
        }
    }

    /// One request. Never retried here: whoever calls decides, from the error.
    pub(crate) async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, Bytes), BackendError> {
        // The client request's id, so GMS's logs can be matched with the gateway's.
        let request = match backend_api::request_id::current() {
            Some(id) => request.header("x-request-id", &*id),
            None => request,
        };
        let response = request.send().await.map_err(|e| transport_error(&e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| BackendError::Interrupted(format!("GMS reply cut short: {e}")))?;
        Ok((status, body))
    }

    /// File transfer is a GMS operation: a Web API remote has none.
    fn files_supported(&self) -> Result<(), BackendError> {
        match self.config.dialect {
            Dialect::Gms => Ok(()),
            Dialect::Webapi => Err(BackendError::Unsupported("file transfer over the Web API")),
        }
    }

    /// The chat's GMS coordinates and its form credentials.
    fn chat_form(chat: &ChatRef) -> Result<(RemoteKey, Form), BackendError> {
        let key = RemoteKey::unpack(&chat.secure_key).ok_or(BackendError::BadCredentials)?;
        let form = vec![
            ("userId".to_owned(), chat.user_id.clone()),
            ("secureKey".to_owned(), key.secure_key.clone()),
            ("alias".to_owned(), key.alias.clone()),
        ];
        Ok((key, form))
    }
}

/// What a GMS answer means: its reply, whatever the HTTP status, or the HTTP status alone.
pub(crate) fn interpret(status: reqwest::StatusCode, body: &[u8]) -> Result<Reply, BackendError> {
    match serde_json::from_slice::<Reply>(body) {
        // A GMS reply says what happened, whatever the HTTP status.
        Ok(reply) if reply.status_code.is_some() => reply.into_success(),
        _ if status.is_server_error() || status.as_u16() == 429 => Err(BackendError::Interrupted(
            format!("GMS answered HTTP {status}"),
        )),
        _ => Err(BackendError::Rejected {
            field: None,
            message: format!("GMS answered HTTP {status} without a GMS reply"),
        }),
    }
}

/// Connection refused or no route: the request cannot have arrived. Anything later may
/// have.
fn transport_error(e: &reqwest::Error) -> BackendError {
    if e.is_connect() {
        BackendError::Unreachable(format!("cannot connect to GMS: {e}"))
    } else if e.is_timeout() {
        BackendError::Interrupted(format!("GMS did not answer in time: {e}"))
    } else {
        BackendError::Interrupted(format!("GMS request failed: {e}"))
    }
}

fn user_data_fields(form: &mut Form, data: &backend_api::UserData) {
    form.extend(
        data.iter()
            .map(|(k, v)| (format!("userData[{k}]"), v.clone())),
    );
}

/// The GMS operation of an action and its fields (Web API → GMS mapping, docs/gms.md).
fn action_call(action: Action) -> (&'static str, Form) {
    let mut form = Form::new();
    let mut field = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            form.push((k.to_owned(), v));
        }
    };
    let op = match action {
        Action::Poll => "refresh",
        Action::SendMessage { text, message_type } => {
            field("message", Some(text));
            field("messageType", message_type);
            "send"
        }
        Action::StartTyping { text } => {
            field("message", text);
            "startTyping"
        }
        Action::StopTyping { text } => {
            field("message", text);
            "stopTyping"
        }
        Action::UpdateNickname { nickname } => {
            field("nickname", Some(nickname));
            "updateNickname"
        }
        Action::PushUrl { url } => {
            field("pushUrl", Some(url));
            "pushUrl"
        }
        Action::UpdateUserData { data, text } => {
            field("message", text);
            user_data_fields(&mut form, &data);
            "updateData"
        }
        Action::CustomNotice { text } => {
            field("message", Some(text));
            "customNotice"
        }
        Action::Complete => "disconnect",
        Action::ReadReceipt { position } => {
            field("transcriptPosition", Some(position.to_string()));
            "readReceipt"
        }
    };
    (op, form)
}

#[async_trait]
impl ChatBackend for HttpBackend {
    async fn create(&self, chat: NewChat) -> Result<ChatCreated, BackendError> {
        if self.config.dialect == Dialect::Webapi {
            return self.web_api_create(chat).await;
        }
        let service = self
            .config
            .service_for(&chat.tenant_name, &chat.endpoint)
            .to_owned();
        let mut form: Form = vec![("nickname".into(), chat.nickname)];
        for (k, v) in [
            ("firstName", chat.first_name),
            ("lastName", chat.last_name),
            ("emailAddress", chat.email_address),
            ("subject", chat.subject),
        ] {
            if let Some(v) = v {
                form.push((k.into(), v));
            }
        }
        user_data_fields(&mut form, &chat.user_data);
        let reply = self.call(self.url(&service, None), &form).await?;
        let created = reply.into_created(service, "GMS")?;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(created)
    }

    async fn refresh(&self, chat: &ChatRef, request: Refresh) -> Result<ChatUpdate, BackendError> {
        if self.config.dialect == Dialect::Webapi {
            return self.web_api_refresh(chat, request).await;
        }
        // The key was sealed by the gateway: one it cannot unpack was not made here.
        let key = RemoteKey::unpack(&chat.secure_key).ok_or(BackendError::BadCredentials)?;
        let credentials = |form: &mut Form, key: &RemoteKey| {
            form.push(("userId".into(), chat.user_id.clone()));
            form.push(("secureKey".into(), key.secure_key.clone()));
            form.push(("alias".into(), key.alias.clone()));
        };
        let completes = request.action == Action::Complete;
        let is_poll = request.action == Action::Poll;
        // GetChat needs the whole transcript; a poll can fetch it in the same call.
        let position = match request.transcript {
            _ if request.details && is_poll => Some(1),
            Transcript::None => None,
            Transcript::From(n) => Some(n),
        };
        let receipt = matches!(request.action, Action::ReadReceipt { .. });
        let (op, mut form) = action_call(request.action);
        credentials(&mut form, &key);
        if let Some(p) = position {
            form.push(("transcriptPosition".into(), p.to_string()));
        }
        let url = self.url(&key.service, Some((&chat.chat_id, op)));
        let mut reply = if receipt {
            self.read_receipt(url, &form).await?
        } else {
            self.call(url, &form).await?
        };
        let mut key_now = RemoteKey {
            alias: reply.alias.clone().unwrap_or_else(|| key.alias.clone()),
            secure_key: reply
                .secure_key
                .clone()
                .unwrap_or_else(|| key.secure_key.clone()),
            ..key.clone()
        };
        if completes {
            let _ = self
                .open
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
        let mut events = reply.events();
        let details = if request.details {
            if !is_poll {
                // The action's reply does not carry the transcript: read it.
                let mut form = Form::new();
                credentials(&mut form, &key_now);
                form.push(("transcriptPosition".into(), "1".into()));
                let url = self.url(&key.service, Some((&chat.chat_id, "refresh")));
                reply = self.call(url, &form).await?;
                events = reply.events();
                if let Some(alias) = reply.alias.clone() {
                    key_now.alias = alias;
                }
            }
            let ended = reply.chat_ended.unwrap_or(false);
            Some(wire::details(&events, ended, reply.user_data()))
        } else {
            None
        };
        let next_position = reply.next_position(&events);
        match request.transcript {
            Transcript::None => events.clear(),
            Transcript::From(n) => events.retain(|e| e.index >= n),
        }
        if key_now.alias != key.alias {
            tracing::info!(from = %key.alias, to = %key_now.alias, "GMS moved the chat");
        }
        Ok(ChatUpdate {
            messages: events,
            next_position,
            chat_ended: reply.chat_ended.unwrap_or(false),
            details,
            secure_key: (key_now != key).then(|| key_now.pack()),
        })
    }

    async fn file_limits(&self, chat: &ChatRef) -> Result<FileLimits, BackendError> {
        self.files_supported()?;
        let (key, form) = Self::chat_form(chat)?;
        let url = self.url_of(&key.service, &[&chat.chat_id, "file", "limits"]);
        let reply = self.call(url, &form).await?;
        Ok(wire::file_limits(&reply.limits_data()))
    }

    async fn upload_file(&self, chat: &ChatRef, file: NewFile) -> Result<String, BackendError> {
        self.files_supported()?;
        let (key, form) = Self::chat_form(chat)?;
        let mut multipart = reqwest::multipart::Form::new();
        for (k, v) in form {
            multipart = multipart.text(k, v);
        }
        if let Some(d) = file.description {
            multipart = multipart.text("userData[file-description]", d);
        }
        let mut part = reqwest::multipart::Part::bytes(file.bytes.to_vec()).file_name(file.name);
        if let Some(t) = file.content_type {
            part = part.mime_str(&t).map_err(|_| BackendError::Rejected {
                field: Some("file".into()),
                message: format!("content type `{t}` cannot be sent"),
            })?;
        }
        multipart = multipart.part("file", part);
        let url = self.url_of(&key.service, &[&chat.chat_id, "file"]);
        let (status, body) = self
            .exchange(self.client.post(url).multipart(multipart))
            .await?;
        let reply = interpret(status, &body)?;
        reply
            .user_data()
            .remove("file-id")
            .ok_or_else(|| BackendError::Interrupted("GMS upload reply without file-id".into()))
    }

    async fn download_file(
        &self,
        chat: &ChatRef,
        file_id: &str,
    ) -> Result<FileContent, BackendError> {
        self.files_supported()?;
        let (key, form) = Self::chat_form(chat)?;
        let url = self.url_of(&key.service, &[&chat.chat_id, "file", file_id, "download"]);
        let response = self
            .client
            .post(url)
            .form(&form)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let disposition = header(reqwest::header::CONTENT_DISPOSITION);
        let body = response
            .bytes()
            .await
            .map_err(|e| BackendError::Interrupted(format!("GMS download cut short: {e}")))?;
        // A refusal is a GMS reply with statusCode 1 or 2, or any non-2xx; a file is
        // anything else (a JSON file included).
        match interpret(status, &body) {
            Err(e) if !status.is_success() || matches!(e, BackendError::Remote { .. }) => {
                return Err(e)
            }
            Ok(_) if !status.is_success() => {
                return Err(BackendError::Rejected {
                    field: None,
                    message: format!("GMS answered HTTP {status} to a download"),
                })
            }
            _ => {}
        }
        Ok(FileContent {
            name: disposition
                .as_deref()
                .and_then(wire::disposition_file_name)
                .unwrap_or_else(|| file_id.to_owned()),
            content_type,
            bytes: Arc::from(&body[..]),
        })
    }

    async fn delete_file(&self, chat: &ChatRef, file_id: &str) -> Result<(), BackendError> {
        self.files_supported()?;
        let (key, form) = Self::chat_form(chat)?;
        let url = self.url_of(&key.service, &[&chat.chat_id, "file", file_id, "delete"]);
        self.call(url, &form).await.map(drop)
    }

    /// GMS pushes nothing to the gateway: a watch reads the chat every `watch_poll_ms`
    /// (the trait's polling, at this instance's own interval).
    async fn watch(
        &self,
        chat: &ChatRef,
        from: u64,
        wait: std::time::Duration,
    ) -> Result<ChatUpdate, BackendError> {
        watch_by_polling(self, chat, from, wait, self.config.watch_poll).await
    }

    async fn restore(&self, chat: &ChatRef) -> Result<(), BackendError> {
        match self.config.dialect {
            Dialect::Webapi => self.web_api_restore(chat).await,
            // A GMS cluster moves its chats itself (a new alias in its replies).
            Dialect::Gms => Err(BackendError::Unsupported("restore")),
        }
    }

    fn load(&self) -> Load {
        Load {
            active: self.open.load(Ordering::Relaxed),
            limit: u64::MAX,
            accepting: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(base: &str) -> HttpConfig {
        HttpConfig {
            services: [("Other/sales".to_string(), "sales".to_string())].into(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            ..HttpConfig::new(base)
        }
    }

    #[test]
    fn urls_keep_a_prefix_and_escape_segments() {
        let b = HttpBackend::new(config("http://gms.example:8080/prefix/")).unwrap();
        assert_eq!(
            b.url("customer support", Some(("00048aAPEQJ8000U", "send")))
                .as_str(),
            "http://gms.example:8080/prefix/genesys/2/chat/customer%20support/00048aAPEQJ8000U/send"
        );
        assert_eq!(b.config.service_for("Other", "sales"), "sales");
        assert_eq!(b.config.service_for("Other", "x"), "customer-support");
        assert!(HttpBackend::new(config("ftp://x")).is_err());
    }

    #[test]
    fn actions_map_to_gms_calls() {
        let (op, form) = action_call(Action::UpdateUserData {
            data: [("k".to_string(), "v".to_string())].into(),
            text: None,
        });
        assert_eq!(op, "updateData");
        assert_eq!(form, vec![("userData[k]".to_string(), "v".to_string())]);
        assert_eq!(action_call(Action::Complete).0, "disconnect");
        let (op, form) = action_call(Action::PushUrl { url: "u".into() });
        assert_eq!((op, &form[0].0[..]), ("pushUrl", "pushUrl"));
    }

    #[tokio::test]
    async fn connection_refused_is_unreachable() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let b = HttpBackend::new(config(&format!("http://127.0.0.1:{port}"))).unwrap();
        let e = b.create(NewChat::default()).await.unwrap_err();
        assert!(matches!(e, BackendError::Unreachable(_)), "{e:?}");
        assert!(e.never_arrived());
    }
}
