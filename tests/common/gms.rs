//! A GMS Chat API v2 client, as GMS web widgets and mobile SDKs talk: form-encoded POSTs,
//! `userData[key]=value`, polling `refresh` with each reply's `nextPosition`.

use std::time::Duration;

use serde_json::Value;

use super::{eventually, Reply};

#[derive(Clone)]
pub struct GmsClient {
    pub base: String,
    pub service: String,
    pub http: reqwest::Client,
    /// Headers sent on every request (`apikey`, `gms_user`…).
    pub headers: Vec<(String, String)>,
}

/// A chat as a GMS client holds it.
#[derive(Clone, Debug)]
pub struct GmsChat {
    pub chat_id: String,
    pub user_id: String,
    pub secure_key: String,
    pub alias: String,
    /// What to send as `transcriptPosition` next.
    pub next_position: u64,
}

impl GmsClient {
    pub fn new(base: &str, service: &str) -> GmsClient {
        GmsClient {
            base: base.into(),
            service: service.into(),
            http: reqwest::Client::new(),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> GmsClient {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/genesys/2/chat/{}{tail}", self.base, self.service)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let mut req = req;
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        Reply::read(req.send().await.expect("request")).await
    }

    /// A form-encoded POST to `/genesys/2/chat/{service}{tail}`.
    pub async fn post(&self, tail: &str, fields: &[(&str, &str)]) -> Reply {
        self.send(self.http.post(self.url(tail)).form(fields)).await
    }

    pub async fn request_chat(&self, fields: &[(&str, &str)]) -> GmsChat {
        let r = self.post("", fields).await;
        assert_eq!((r.http, r.status_code()), (200, 0), "{:#}", r.body);
        GmsChat {
            chat_id: r.body["chatId"].as_str().unwrap().into(),
            user_id: r.body["userId"].as_str().unwrap().into(),
            secure_key: r.body["secureKey"].as_str().unwrap().into(),
            alias: r.body["alias"].as_str().unwrap().into(),
            next_position: 1,
        }
    }

    fn with_credentials<'a>(
        chat: &'a GmsChat,
        extra: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut fields = vec![
            ("userId", chat.user_id.as_str()),
            ("secureKey", chat.secure_key.as_str()),
            ("alias", chat.alias.as_str()),
        ];
        fields.extend_from_slice(extra);
        fields
    }

    /// `/{chatId}/{op}` with the chat's credentials and `extra` fields.
    pub async fn op(&self, chat: &GmsChat, op: &str, extra: &[(&str, &str)]) -> Reply {
        let fields = Self::with_credentials(chat, extra);
        self.post(&format!("/{}/{op}", chat.chat_id), &fields).await
    }

    /// One poll as real clients do: `transcriptPosition` = the last `nextPosition`. Returns
    /// the reply; the chat's position (and alias) move on.
    pub async fn refresh(&self, chat: &mut GmsChat) -> Reply {
        let position = chat.next_position.to_string();
        let r = self
            .op(chat, "refresh", &[("transcriptPosition", &position)])
            .await;
        if r.status_code() == 0 {
            chat.next_position = r.body["nextPosition"].as_u64().expect("nextPosition");
            chat.alias = r.body["alias"].as_str().unwrap().into();
        }
        r
    }

    /// Polls (no faster than every 20 ms, for at most 10 s) until an event of `kind`
    /// arrives; returns every event seen on the way.
    pub async fn poll_until(&self, chat: &mut GmsChat, kind: &str) -> Vec<Value> {
        // Each poll's events are kept across polls; one poll at a time holds the lock.
        let state = tokio::sync::Mutex::new((chat, Vec::new()));
        eventually(
            &format!("a {kind} event"),
            Duration::from_secs(10),
            || async {
                let mut state = state.lock().await;
                let (chat, seen) = &mut *state;
                let r = self.refresh(chat).await;
                assert_eq!(r.status_code(), 0, "{:#}", r.body);
                let msgs = r.messages().clone();
                let found = msgs.iter().any(|m| m["type"] == kind);
                seen.extend(msgs);
                found.then(|| std::mem::take(seen))
            },
        )
        .await
    }

    /// Multipart upload: part `file` and `userData[file-description]`.
    pub async fn upload(
        &self,
        chat: &GmsChat,
        name: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Reply {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(name.to_owned())
            .mime_str(content_type)
            .unwrap();
        let form = reqwest::multipart::Form::new()
            .text("userId", chat.user_id.clone())
            .text("secureKey", chat.secure_key.clone())
            .text("alias", chat.alias.clone())
            .text("userData[file-description]", "a test file")
            .part("file", part);
        let url = self.url(&format!("/{}/file", chat.chat_id));
        self.send(self.http.post(url).multipart(form)).await
    }

    /// `file/{id}/download`: the HTTP status, content type and body bytes.
    pub async fn download(&self, chat: &GmsChat, file_id: &str) -> (u16, String, Vec<u8>) {
        let url = self.url(&format!("/{}/file/{file_id}/download", chat.chat_id));
        let fields = Self::with_credentials(chat, &[]);
        let mut req = self.http.post(url).form(&fields);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ct, resp.bytes().await.unwrap().to_vec())
    }
}
