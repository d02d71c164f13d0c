//! Test fixtures: a gateway on a real socket (127.0.0.1:0) and a Chat API v2 client.
#![allow(dead_code)]

pub mod chaos;
pub mod cluster;
pub mod gms;
pub mod sse;

use std::sync::Arc;
use std::time::Duration;

use chat_engine::{Behaviour, Engine, MockBackend};
use serde_json::{json, Value};
use webapi_gateway::{Config, Gateway};

pub const SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// A gateway config as TOML text, from the repository's default plus changes.
pub struct GatewayBuilder {
    toml: String,
    behaviour: Behaviour,
    aliases: Vec<String>,
    env: Vec<(String, String)>,
    /// Keys of the `[email]` section (and its sub-tables) beyond `spool_dir`.
    email: String,
    /// This gateway's own e-mail spool (and mock outbox), so tests never share one.
    email_dir: std::path::PathBuf,
    cors_origins: Vec<String>,
}

pub fn gateway() -> GatewayBuilder {
    GatewayBuilder {
        toml: String::new(),
        behaviour: Behaviour {
            agent_join_delay: Duration::from_millis(0),
            agent_reply_delay: Duration::from_millis(0),
            ..Behaviour::default()
        },
        aliases: vec!["117".into(), "118".into()],
        email: String::new(),
        email_dir: std::env::temp_dir().join(format!("gwmail-{}", rand::random::<u64>())),
        // Rate limits off unless a test turns them on: they have tests of their own.
        env: [
            // Several gateways run at once: each takes its own admin port.
            ("GATEWAY__ADMIN__LISTEN", "127.0.0.1:0"),
            ("GATEWAY__LIMITS__PER_IP_PER_SECOND", "0"),
            ("GATEWAY__LIMITS__PER_CHAT_PER_SECOND", "0"),
            ("GATEWAY__LIMITS__CHAT_STARTS_PER_IP_PER_SECOND", "0"),
            ("GATEWAY__LIMITS__MAX_CONNECTIONS_PER_IP", "0"),
            ("GATEWAY__LIMITS__BAD_CREDENTIALS_BURST", "1000"),
            ("GATEWAY__EMAIL__PER_ADDRESS_PER_HOUR", "0"),
            ("GATEWAY__EMAIL__GLOBAL_PER_HOUR", "0"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec(),
        cors_origins: Vec::new(),
    }
}

/// A running gateway: its address and the engines behind its aliases.
pub struct TestGateway {
    pub base: String,
    /// The admin listener (`/metrics`); empty when `admin.enabled = false`.
    pub admin: String,
    pub engines: Vec<(String, Arc<Engine>)>,
    pub gateway: Arc<Gateway>,
    /// Holds `spool/` (email.spool_dir) and, for the mock backend, `spool/mock-outbox/`.
    pub email_dir: std::path::PathBuf,
    task: tokio::task::JoinHandle<()>,
}

/// A gateway's application in this process (see [`GatewayBuilder::in_process`]).
pub struct InProcess {
    pub app: axum::Router,
    pub gateway: Arc<Gateway>,
    pub engines: Vec<(String, Arc<Engine>)>,
    email_dir: std::path::PathBuf,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.email_dir);
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.email_dir);
    }
}

impl GatewayBuilder {
    pub fn behaviour(mut self, f: impl FnOnce(&mut Behaviour)) -> Self {
        f(&mut self.behaviour);
        self
    }

    /// The aliases of the embedded mock instances (default `117` and `118`); other instances
    /// can be added with [`GatewayBuilder::toml`].
    pub fn aliases(mut self, aliases: &[&str]) -> Self {
        self.aliases = aliases.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Extra TOML appended to the generated file.
    pub fn toml(mut self, extra: &str) -> Self {
        self.toml.push_str(extra);
        self.toml.push('\n');
        self
    }

    /// Extra TOML for the `[email]` section: keys first, then sub-tables.
    pub fn email(mut self, extra: &str) -> Self {
        self.email.push_str(extra);
        self.email.push('\n');
        self
    }

    /// The `cors_origins` of tenant "Environment".
    pub fn cors_origins(mut self, origins: &[&str]) -> Self {
        self.cors_origins = origins.iter().map(|o| o.to_string()).collect();
        self
    }

    /// An environment override (a later one for the same key wins).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn config(&self) -> Config {
        Config::from_toml_str_with_env(&self.toml_text(), self.env.clone()).expect("test config")
    }

    /// The config file this builder makes (environment overrides aside).
    pub fn toml_text(&self) -> String {
        let mut toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[credentials]\nsecret = \"{SECRET}\"\n\
             [[tenants]]\nname = \"Environment\"\ncors_origins = {:?}\n\
             [[tenants]]\nname = \"Other\"\n",
            self.cors_origins
        );
        for alias in &self.aliases {
            toml.push_str(&format!(
                "[[chat.instances]]\nalias = \"{alias}\"\nkind = \"mock\"\n"
            ));
        }
        toml.push_str(&self.toml);
        toml.push_str(&format!(
            "\n[email]\nspool_dir = \"{}\"\n{}",
            self.email_dir.join("spool").display(),
            self.email
        ));
        toml
    }

    /// Starts the gateway, sharing the given engines (a second gateway over the same chat
    /// servers) or making new ones.
    pub async fn start_with(self, engines: Option<Vec<(String, Arc<Engine>)>>) -> TestGateway {
        let config = self.config();
        let (engines, backends) = self.mock_backends(engines);
        self.serve(config, backends, engines).await
    }

    /// The embedded mock instances' engines (given, or new ones) and their adapters.
    #[allow(clippy::type_complexity)]
    fn mock_backends(
        &self,
        engines: Option<Vec<(String, Arc<Engine>)>>,
    ) -> (
        Vec<(String, Arc<Engine>)>,
        Vec<(String, Arc<dyn backend_api::ChatBackend>)>,
    ) {
        let engines = engines.unwrap_or_else(|| {
            self.aliases
                .iter()
                .map(|a| {
                    let engine = Engine::new(self.behaviour.clone());
                    engine.spawn_sweeper(Duration::from_millis(50));
                    (a.clone(), engine)
                })
                .collect()
        });
        let backends = engines
            .iter()
            .map(|(a, e)| {
                let backend: Arc<dyn backend_api::ChatBackend> =
                    Arc::new(MockBackend::new(Arc::clone(e)));
                (a.clone(), backend)
            })
            .collect();
        (engines, backends)
    }

    /// The whole application in this process, without a socket, for
    /// `tower::ServiceExt::oneshot` (needs a tokio runtime: the gateway starts its tasks).
    pub fn in_process(self) -> InProcess {
        let config = self.config();
        let (engines, backends) = self.mock_backends(None);
        let gateway = Gateway::with_backends(config, backends).expect("gateway starts");
        InProcess {
            app: webapi_gateway::app(Arc::clone(&gateway)),
            gateway,
            engines,
            email_dir: self.email_dir.clone(),
        }
    }

    /// Starts the gateway with the given adapters behind its aliases (fakes that script a
    /// backend's failures).
    pub async fn start_over(
        self,
        backends: Vec<(String, Arc<dyn backend_api::ChatBackend>)>,
    ) -> TestGateway {
        let config = self.config();
        self.serve(config, backends, Vec::new()).await
    }

    async fn serve(
        &self,
        config: Config,
        backends: Vec<(String, Arc<dyn backend_api::ChatBackend>)>,
        engines: Vec<(String, Arc<Engine>)>,
    ) -> TestGateway {
        let gateway = Gateway::with_backends(config, backends).expect("gateway starts");
        let listener = webapi_gateway::server::bind(&gateway.config.server)
            .await
            .unwrap();
        let admin = webapi_gateway::server::bind_admin(&gateway.config.admin)
            .await
            .unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let admin_base = admin.as_ref().map_or(String::new(), |a| {
            format!("http://{}", a.local_addr().unwrap())
        });
        let gw = Arc::clone(&gateway);
        let task = tokio::spawn(async move {
            let never = std::future::pending();
            let _ = webapi_gateway::server::serve_with(listener, admin, gw, never).await;
        });
        TestGateway {
            base,
            admin: admin_base,
            engines,
            gateway,
            email_dir: self.email_dir.clone(),
            task,
        }
    }

    pub async fn start(self) -> TestGateway {
        self.start_with(None).await
    }
}

impl TestGateway {
    pub fn client(&self) -> Client {
        Client {
            base: self.base.clone(),
            http: reqwest::Client::new(),
        }
    }

    /// Requests on existing chats that reached any engine.
    pub fn backend_requests(&self) -> u64 {
        self.engines.iter().map(|(_, e)| e.requests_seen()).sum()
    }

    pub fn engine(&self, alias: &str) -> &Arc<Engine> {
        &self.engines.iter().find(|(a, _)| a == alias).unwrap().1
    }
}

/// What a reply said.
#[derive(Debug)]
pub struct Reply {
    pub http: u16,
    pub body: Value,
}

impl Reply {
    /// The alias the reply names: the instance the client talks to from now on.
    pub fn alias(&self) -> String {
        self.body["alias"].as_str().unwrap().to_string()
    }

    /// Reads a reply, asserting it is JSON (as every gateway reply must be).
    pub async fn read(resp: reqwest::Response) -> Reply {
        let http = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = resp.bytes().await.unwrap();
        assert_eq!(
            ct.as_deref(),
            Some("application/json"),
            "reply {http} {bytes:?}"
        );
        Reply {
            http,
            body: serde_json::from_slice(&bytes).expect("a JSON body"),
        }
    }

    pub fn status_code(&self) -> i64 {
        self.body["statusCode"].as_i64().expect("statusCode")
    }

    pub fn error_code(&self) -> i64 {
        self.body["errors"][0]["code"]
            .as_i64()
            .expect("errors[0].code")
    }

    /// Asserts a refusal: the HTTP status, statusCode and error code.
    #[track_caller]
    pub fn assert_error(&self, http: u16, status_code: i64, code: i64) {
        assert_eq!(
            (self.http, self.status_code(), self.error_code()),
            (http, status_code, code),
            "{:#}",
            self.body
        );
        assert!(self.body["errors"][0]["message"].as_str().is_some());
    }

    pub fn messages(&self) -> &Vec<Value> {
        self.body["messages"].as_array().expect("messages")
    }
}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

/// A chat as the client holds it: the credentials of its latest reply.
#[derive(Clone, Debug)]
pub struct Chat {
    pub chat_id: String,
    pub user_id: String,
    pub secure_key: String,
    pub alias: String,
    pub tenant: String,
}

impl Chat {
    /// The chat a Request Chat reply with statusCode 0 created.
    pub fn created(r: &Reply) -> Chat {
        Chat {
            chat_id: r.body["chatId"].as_str().unwrap().into(),
            user_id: r.body["userId"].as_str().unwrap().into(),
            secure_key: r.body["secureKey"].as_str().unwrap().into(),
            alias: r.body["alias"].as_str().unwrap().into(),
            tenant: r.body["tenantName"].as_str().unwrap().into(),
        }
    }

    pub fn credentials(&self) -> Value {
        json!({"userId": self.user_id, "secureKey": self.secure_key,
               "alias": self.alias, "tenantName": self.tenant})
    }
}

impl Client {
    pub async fn post_raw(&self, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Reply {
        let mut req = self.http.post(format!("{}{path}", self.base)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        Reply::read(req.send().await.expect("request")).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.post_raw(
            path,
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await
    }

    pub async fn request_chat(&self, nickname: &str) -> Chat {
        let r = self.post_request_chat(nickname).await;
        assert_eq!((r.http, r.status_code()), (200, 0), "{:#}", r.body);
        Chat::created(&r)
    }

    /// Requests a chat, retrying statusCode 1 (a gateway whose chat servers are still being
    /// connected to, or a fault the test is recovering from).
    pub async fn request_chat_retrying(&self, nickname: &str) -> Chat {
        eventually("a new chat", Duration::from_secs(30), || async {
            let r = self.post_request_chat(nickname).await;
            match r.status_code() {
                0 => Some(Chat::created(&r)),
                1 => None,
                _ => panic!("request chat refused: {:#}", r.body),
            }
        })
        .await
    }

    async fn post_request_chat(&self, nickname: &str) -> Reply {
        self.post(
            "/api/v2/chats",
            json!({"tenantName": "Environment", "nickname": nickname}),
        )
        .await
    }

    /// The texts of the customer's messages in the chat's transcript from position 1.
    pub async fn customer_texts(&self, chat: &Chat) -> Vec<String> {
        let r = self.messages(chat, Some(1)).await;
        assert_eq!(r.status_code(), 0, "{:#}", r.body);
        r.messages()
            .iter()
            .filter(|m| m["type"] == "Message" && m["from"]["type"] == "Client")
            .map(|m| m["text"].as_str().unwrap().to_string())
            .collect()
    }

    /// An operation on the chat: `extra` fields are merged with the credentials.
    pub async fn op(&self, chat: &Chat, operation: &str, extra: Value) -> Reply {
        let mut body = chat.credentials();
        body["operationName"] = operation.into();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        self.post(&format!("/api/v2/chats/{}", chat.chat_id), body)
            .await
    }

    pub async fn messages(&self, chat: &Chat, position: Option<u64>) -> Reply {
        let mut body = chat.credentials();
        if let Some(p) = position {
            body["transcriptPosition"] = p.into();
        }
        self.post(&format!("/api/v2/chats/{}/messages", chat.chat_id), body)
            .await
    }
}

/// The one polling helper, shared with the crates' tests.
pub use testkit::eventually;

/// The `type` of each event, for comparing a transcript with a list.
pub fn types(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect()
}

/// Transcript indexes run from `from` by one, without gaps.
#[track_caller]
pub fn assert_contiguous(messages: &[Value], from: u64) {
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(m["index"].as_u64(), Some(from + i as u64), "{messages:#?}");
    }
}

/// Every Chat API v2 operation on a fresh chat (created by `Ann`, no agent yet), with what
/// the client must see after each, through Complete and the refusals that follow. The same
/// scenario runs against every kind of backend, so they are held to one behaviour.
pub async fn every_operation(c: &Client, chat: &Chat) {
    let r = c.op(chat, "GetChat", json!({})).await;
    assert_eq!((r.http, r.status_code()), (200, 0));
    assert_eq!(r.body["state"], "WaitingForAgent");
    assert_eq!(r.body["chatEnded"], false);
    assert_eq!(r.body["alias"], chat.alias.as_str());
    assert_eq!(r.body["secureKey"], chat.secure_key.as_str());
    assert_eq!(r.body["userId"], chat.user_id.as_str());
    assert_eq!(r.body["tenantName"], "Environment");
    assert_eq!(r.body["chatId"], chat.chat_id.as_str());
    assert_eq!(
        r.body["participants"],
        json!([{"nickname":"Ann","participantId":1,"type":"Client"},
               {"nickname":"system","participantId":2,"type":"External"}])
    );
    let start = r.body["nextPosition"].as_u64().unwrap();
    assert_eq!(start, 4);

    for (op, extra) in [
        (
            "SendMessage",
            json!({"text": "hello", "messageType": "text"}),
        ),
        ("SendStartTypingNotification", json!({"text": "typing"})),
        ("SendStopTypingNotification", json!({})),
        ("UpdateUserNickname", json!({"nickname": "Annie"})),
        ("SendUrl", json!({"pushUrl": "https://example.com/page"})),
        (
            "UpdateUserData",
            json!({"userData": {"key1": "new", "key3": "v3"}}),
        ),
    ] {
        let r = c.op(chat, op, extra).await;
        assert_eq!((r.http, r.status_code()), (200, 0), "{op}: {:#}", r.body);
        assert_eq!(r.body["alias"], chat.alias.as_str());
        assert_eq!(r.body["chatEnded"], false);
        assert!(r.body["nextPosition"].as_u64().is_some());
    }
    let r = c.messages(chat, Some(start)).await;
    let msgs = r.messages();
    assert_contiguous(msgs, start);
    assert_eq!(
        types(msgs),
        [
            "Message",
            "TypingStarted",
            "TypingStopped",
            "Notice",
            "Notice"
        ]
    );
    assert_eq!(msgs[0]["text"], "hello");
    assert_eq!(msgs[0]["messageType"], "text");
    assert_eq!(msgs[0]["from"]["type"], "Client");
    assert_eq!(msgs[1]["text"], "typing");
    assert_eq!(msgs[3]["text"], "Annie");
    assert_eq!(msgs[3]["from"]["nickname"], "Annie");
    assert_eq!(
        msgs[0]["from"]["nickname"], "Ann",
        "earlier events keep the old nickname"
    );
    assert_eq!(msgs[4]["text"], "https://example.com/page");

    let r = c.op(chat, "GetChat", json!({})).await;
    assert_eq!(r.body["participants"][0]["nickname"], "Annie");
    assert_eq!(
        r.body["userData"],
        json!({"key1":"new","key3":"v3"}),
        "given keys overwritten, others kept"
    );

    let r = c.op(chat, "Complete", json!({})).await;
    assert_eq!((r.http, r.status_code()), (200, 0));
    assert_eq!(r.body["chatEnded"], true);
    let r = c.messages(chat, Some(start + 5)).await;
    assert_eq!(types(r.messages()), ["ParticipantLeft"]);
    assert_eq!(r.body["chatEnded"], true);

    // After Complete: a second Complete is answered (the chat has ended already: statusCode
    // 0, chatEnded), other writes refused with chatEnded, reads still work.
    let r = c.op(chat, "Complete", json!({})).await;
    assert_eq!((r.http, r.status_code()), (200, 0), "{:#}", r.body);
    assert_eq!(r.body["chatEnded"], true);
    assert_eq!(r.body["nextPosition"].as_u64(), Some(start + 6));
    for (op, extra) in [
        ("SendMessage", json!({"text": "late"})),
        ("SendUrl", json!({"pushUrl": "https://example.com/late"})),
    ] {
        let r = c.op(chat, op, extra).await;
        r.assert_error(409, 2, 211);
        assert_eq!(r.body["chatEnded"], true);
        assert_eq!(r.body["chatId"], chat.chat_id.as_str());
        assert_eq!(r.body["nextPosition"].as_u64(), Some(start + 6));
    }
    let r = c.op(chat, "GetChat", json!({})).await;
    assert_eq!((r.status_code(), &r.body["chatEnded"]), (0, &json!(true)));
    assert_eq!(r.body["participants"].as_array().unwrap().len(), 1);
}
