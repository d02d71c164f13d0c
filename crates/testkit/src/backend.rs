//! [`ScriptedBackend`]: the one fake chat backend of the tests. A test scripts what each call
//! answers ("refresh: `Interrupted`, then `Ok`") and afterwards reads every call the backend
//! received, in order, with the request id it came under.
//!
//! Owns no rules of its own: whatever the test did not script gets a plain success, and it
//! never decides anything a real adapter would (retries, health). Tests assert on what it
//! received, not on how the gateway got there.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use backend_api::{
    BackendError, ChatBackend, ChatCreated, ChatRef, ChatUpdate, Load, NewChat, Refresh,
};
use tokio::sync::Notify;

/// One call the backend received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Create(NewChat),
    Refresh(ChatRef, Refresh),
    Restore(ChatRef),
}

/// A call and the request id it came under (`backend_api::request_id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub call: Call,
    pub request_id: Option<String>,
}

/// The answers of one method: those queued with [`Script::then`] in order, then the
/// standing answer ([`Script::always`]; a success unless set).
pub struct Script<T> {
    queue: Mutex<VecDeque<Result<T, BackendError>>>,
    otherwise: Mutex<Option<Result<T, BackendError>>>,
}

impl<T: Clone> Script<T> {
    fn new() -> Script<T> {
        Script {
            queue: Mutex::new(VecDeque::new()),
            otherwise: Mutex::new(None),
        }
    }

    /// The next call answers this (after the answers queued before it).
    pub fn then(&self, answer: Result<T, BackendError>) -> &Script<T> {
        self.queue.lock().unwrap().push_back(answer);
        self
    }

    /// Every call answers this once the queue is empty (`None`: a plain success again).
    pub fn always(&self, answer: Option<Result<T, BackendError>>) {
        *self.otherwise.lock().unwrap() = answer;
    }

    fn next(&self, success: impl FnOnce() -> T) -> Result<T, BackendError> {
        if let Some(answer) = self.queue.lock().unwrap().pop_front() {
            return answer;
        }
        self.otherwise
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| Ok(success()))
    }
}

/// A chat backend whose answers the test scripts, recording every call.
pub struct ScriptedBackend {
    pub create: Script<ChatCreated>,
    pub refresh: Script<ChatUpdate>,
    pub restore: Script<()>,
    received: Mutex<Vec<Received>>,
    load: Mutex<Load>,
    /// While set, `create` stops until [`ScriptedBackend::resume`] (a request in flight).
    paused: AtomicBool,
    entered: Notify,
    released: Notify,
    chats: AtomicU64,
}

impl ScriptedBackend {
    /// A backend that accepts everything: new chats, refreshes with an empty transcript,
    /// restores; with room for 100 chats.
    pub fn new() -> Arc<ScriptedBackend> {
        Arc::new(ScriptedBackend {
            create: Script::new(),
            refresh: Script::new(),
            restore: Script::new(),
            received: Mutex::new(Vec::new()),
            load: Mutex::new(Load {
                active: 0,
                limit: 100,
                accepting: true,
            }),
            paused: AtomicBool::new(false),
            entered: Notify::new(),
            released: Notify::new(),
            chats: AtomicU64::new(0),
        })
    }

    /// What [`ChatBackend::load`] reports from now on.
    pub fn set_load(&self, load: Load) {
        *self.load.lock().unwrap() = load;
    }

    /// Every call received so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.received().into_iter().map(|r| r.call).collect()
    }

    /// Every call received so far with its request id.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn creates(&self) -> usize {
        self.count(|c| matches!(c, Call::Create(_)))
    }

    pub fn refreshes(&self) -> usize {
        self.count(|c| matches!(c, Call::Refresh(..)))
    }

    pub fn restores(&self) -> usize {
        self.count(|c| matches!(c, Call::Restore(_)))
    }

    fn count(&self, f: impl Fn(&Call) -> bool) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| f(&r.call))
            .count()
    }

    /// From now on `create` waits, once received, until [`ScriptedBackend::resume`].
    pub fn pause_creates(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Returns once a paused `create` has been received.
    pub async fn paused_call(&self) {
        self.entered.notified().await;
    }

    /// Lets the paused call answer, and later calls answer at once.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.released.notify_waiters();
    }

    fn record(&self, call: Call) {
        let request_id = backend_api::request_id::current().map(|id| id.to_string());
        self.received
            .lock()
            .unwrap()
            .push(Received { call, request_id });
    }
}

#[async_trait]
impl ChatBackend for ScriptedBackend {
    async fn create(&self, chat: NewChat) -> Result<ChatCreated, BackendError> {
        self.record(Call::Create(chat));
        if self.paused.load(Ordering::SeqCst) {
            let released = self.released.notified();
            self.entered.notify_one();
            released.await;
        }
        self.create.next(|| {
            let n = self.chats.fetch_add(1, Ordering::SeqCst) + 1;
            ChatCreated {
                chat: ChatRef {
                    chat_id: format!("C{n}"),
                    user_id: format!("U{n}"),
                    secure_key: format!("K{n}"),
                },
                messages: Vec::new(),
                next_position: 1,
            }
        })
    }

    async fn refresh(&self, chat: &ChatRef, request: Refresh) -> Result<ChatUpdate, BackendError> {
        self.record(Call::Refresh(chat.clone(), request));
        self.refresh.next(|| ChatUpdate {
            messages: Vec::new(),
            next_position: 1,
            chat_ended: false,
            details: None,
            secure_key: None,
        })
    }

    async fn restore(&self, chat: &ChatRef) -> Result<(), BackendError> {
        self.record(Call::Restore(chat.clone()));
        self.restore.next(|| ())
    }

    fn load(&self) -> Load {
        *self.load.lock().unwrap()
    }
}
