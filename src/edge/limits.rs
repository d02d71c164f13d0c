//! Limits against abuse that apply per request: header size, rate limits per client address,
//! on new chats per client address and per chat, and the throttle on repeated bad
//! credentials.
//!
//! Owns the limiters (governor's keyed GCRA limiters) and their memory bound: every keyed
//! map is swept of quiet keys periodically and when it reaches `limits.max_tracked_keys`.
//! Each refusal is an [`Error`] rendered by the edge's one error conversion. Connection-level
//! limits (connection count, timeouts, the hard header cap) belong to `server`.
//!
//! The per-chat limit and the bad-credentials throttle are keyed on chat *and* client
//! address: keyed on the chat alone, anyone who saw a chat id (it is in URLs, not a secret)
//! could starve or lock out its customer. Only the customer holds the chat's credentials,
//! so a chat's real traffic comes from its customer's address; requests from elsewhere
//! stop at the credentials check, which costs no backend I/O, and are throttled there.
//!
//! The throttle judges only requests whose key failed: the check is constant time and
//! cheap, so every request is checked, and a request with the right key goes on even when
//! others on the same address (a NAT neighbour) used up the allowance. What stops guessing
//! is the MAC's size; the throttle turns a stream of wrong keys into 429s and counts them.
//!
//! Every refusal here is counted in `gateway_refusals_total` by reason and logged at debug
//! (the access log samples them, see `layers`), in the error shape of the request's dialect.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use std::future::Future as _;

use axum::extract::{ConnectInfo, MatchedPath, RawPathParams, Request};
use axum::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, ORIGIN, VARY};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use parking_lot::Mutex;

use super::cors::Origins;
use super::error::BadCredentials;
use super::{Failure, GmsFailure};
use crate::error::Error;
use crate::telemetry::REFUSALS;

mod config;
mod forwarded;
pub use config::LimitsConfig;
pub use forwarded::{client_address, Cidr};

/// The name of the path parameter that carries a chat id, on every route that has one.
pub const CHAT_ID_PARAM: &str = "chat_id";

/// The request-level limiters of one gateway.
pub struct Guards {
    max_header_bytes: usize,
    per_ip: Option<Keyed<IpAddr>>,
    /// New chats per client address (Request Chat in either dialect).
    chat_starts: Option<Keyed<IpAddr>>,
    per_chat: Option<Keyed<(Box<str>, IpAddr)>>,
    /// Failed credential checks per chat and address: a failure past its allowance is
    /// answered 429 instead of 401.
    bad_credentials: Keyed<(Box<str>, IpAddr)>,
    /// The CORS allow-list, when there is one: a refusal here (which runs before the CORS
    /// layer, so that preflights count too) still carries the allowed origin, so a widget
    /// can read its 429.
    origins: Option<Arc<Origins>>,
}

/// A keyed limiter with a bound on the keys it remembers (also the e-mail routes' per-address
/// limit).
pub(crate) struct Keyed<K: Hash + Eq + Clone> {
    limiter: RateLimiter<K, BoundedStore<K>, DefaultClock>,
    max_tracked: usize,
    /// When the store was last swept because it was full: a sweep walks the whole map, so a
    /// flood of new keys must not cause one per request.
    last_full_sweep: Mutex<Option<Instant>>,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    pub(crate) fn new(quota: Quota, max_tracked: usize) -> Self {
        let store = BoundedStore {
            map: Mutex::new(HashMap::new()),
            max: max_tracked,
        };
        Keyed {
            limiter: RateLimiter::new(quota, store, DefaultClock::default()),
            max_tracked,
            last_full_sweep: Mutex::new(None),
        }
    }

    /// Whether `key` may go on, or how long until it may.
    pub(crate) fn allow(&self, key: &K) -> Result<(), Duration> {
        if self.limiter.len() >= self.max_tracked {
            if let Some(mut last) = self.last_full_sweep.try_lock() {
                if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    *last = Some(Instant::now());
                    self.sweep();
                }
            }
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// governor's keyed state with a bound: a key it has no room for is judged as a fresh one
/// (its first requests pass) but not remembered, while every remembered key stays limited.
/// So a flood of new keys can neither grow memory nor switch the limit off for known ones.
struct BoundedStore<K> {
    map: Mutex<HashMap<K, u64>>,
    max: usize,
}

impl<K: Hash + Eq + Clone> StateStore for BoundedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut map = self.map.lock();
        if let Some(state) = map.get_mut(key) {
            let (outcome, next) = f(Some(Nanos::from(*state)))?;
            *state = next.into();
            return Ok(outcome);
        }
        let (outcome, next) = f(None)?;
        if map.len() < self.max {
            map.insert(key.clone(), next.into());
        } else {
            metrics::counter!(REFUSALS, "reason" => "limiter_full").increment(1);
        }
        Ok(outcome)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for BoundedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        let drop_below = u64::from(drop_below);
        self.map.lock().retain(|_, state| *state > drop_below);
    }

    fn shrink_to_fit(&self) {
        self.map.lock().shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map.lock().len()
    }

    fn is_empty(&self) -> bool {
        self.map.lock().is_empty()
    }
}

fn quota(per_second: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

impl Guards {
    /// Builds the limiters and starts their sweeper, which stops when the guards are dropped.
    pub fn new(limits: &LimitsConfig) -> Arc<Guards> {
        Guards::with_origins(limits, None)
    }

    /// [`Guards::new`], with the CORS allow-list for the refusals' headers.
    pub fn with_origins(limits: &LimitsConfig, origins: Option<Arc<Origins>>) -> Arc<Guards> {
        let max = limits.max_tracked_keys;
        let bad_quota = Quota::with_period(limits.bad_credentials_period)
            .expect("validated: period > 0")
            .allow_burst(limits.bad_credentials_burst);
        let guards = Arc::new(Guards {
            max_header_bytes: limits.max_header_bytes,
            per_ip: quota(limits.per_ip_per_second, limits.per_ip_burst)
                .map(|q| Keyed::new(q, max)),
            chat_starts: quota(
                limits.chat_starts_per_ip_per_second,
                limits.chat_starts_per_ip_burst,
            )
            .map(|q| Keyed::new(q, max)),
            per_chat: quota(limits.per_chat_per_second, limits.per_chat_burst)
                .map(|q| Keyed::new(q, max)),
            bad_credentials: Keyed::new(bad_quota, max),
            origins,
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&guards);
            rt.spawn(sweeper(weak));
        }
        guards
    }

    fn sweep(&self) {
        if let Some(k) = &self.per_ip {
            k.sweep();
        }
        if let Some(k) = &self.chat_starts {
            k.sweep();
        }
        if let Some(k) = &self.per_chat {
            k.sweep();
        }
        self.bad_credentials.sweep();
    }

    /// A failed credential check on `key`: whether it is still within the allowance
    /// (answered 401) or past it (answered 429). Exactly `bad_credentials_burst` failures
    /// are answered 401 before the first 429; one allowance comes back per period.
    fn failed_check(&self, key: &(Box<str>, IpAddr)) -> bool {
        self.bad_credentials.allow(key).is_ok()
    }

    /// A refusal in the request's dialect, counted by reason; an allowed cross-origin
    /// request gets its origin back so the page can read the refusal.
    fn refuse(&self, req_head: &RequestHead, reason: &'static str, error: Error) -> Response {
        metrics::counter!(REFUSALS, "reason" => reason).increment(1);
        let mut response = if req_head.gms {
            GmsFailure::from(error).into_response()
        } else {
            Failure::from(error).into_response()
        };
        if let (Some(origins), Some(origin)) = (&self.origins, &req_head.origin) {
            if origin.to_str().is_ok_and(|o| origins.allows(o)) {
                let headers = response.headers_mut();
                headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
                headers.append(VARY, HeaderValue::from_static("origin"));
            }
        }
        response
    }
}

/// What a refusal needs of its request: the dialect and the page's origin.
struct RequestHead {
    gms: bool,
    origin: Option<HeaderValue>,
}

impl RequestHead {
    fn of(req: &Request) -> RequestHead {
        RequestHead {
            gms: req.uri().path().starts_with("/genesys/"),
            origin: req.headers().get(ORIGIN).cloned(),
        }
    }
}

async fn sweeper(guards: Weak<Guards>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    loop {
        tick.tick().await;
        match guards.upgrade() {
            Some(g) => g.sweep(),
            None => return,
        }
    }
}

/// The client a request comes from (see `forwarded`), left on the request by
/// [`resolve_client`] for the limits, the e-mail limiter and the access log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// The outermost step (in `layers::front`): finds the request's client address once, from
/// the TCP peer and, when the peer is one of `limits.trusted_proxies`, the forwarding headers.
pub fn resolve_client(req: &mut Request, trusted: &[Cidr]) {
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        let client = client_address(*peer, req.headers(), trusted);
        req.extensions_mut().insert(ClientAddress(client));
    }
}

/// The client address a limit is keyed on: the resolved client (the TCP peer unless a
/// trusted proxy forwarded the request), as [`address_key`] counts it. Every per-address
/// limit, the e-mail routes' included, keys on this and nothing else.
pub(crate) fn client_key(req: &Request) -> Option<IpAddr> {
    let ip = match req.extensions().get::<ClientAddress>() {
        Some(ClientAddress(ip)) => *ip,
        None => req.extensions().get::<ConnectInfo<SocketAddr>>()?.0.ip(),
    };
    Some(address_key(ip))
}

/// One client's address, as every per-address limit (here and the connection cap in
/// `server`) counts it: IPv6 clients by their /64, since one host usually has a whole /64
/// to pick addresses from; an IPv4-mapped address as the IPv4 one.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Whether a request starts a chat (Request Chat, in either dialect).
fn starts_chat(req: &Request) -> bool {
    req.method() == Method::POST
        && req.extensions().get::<MatchedPath>().is_some_and(|p| {
            p.as_str() == super::webapi::REQUEST_CHAT_ROUTE
                || p.as_str() == super::gms::REQUEST_CHAT_ROUTE
        })
}

/// Every request, preflights and requests from refused origins included: header size, then
/// the per-address rate limit. `Some` is the refusal to answer instead (in `layers::front`).
pub fn per_request(guards: &Guards, req: &Request) -> Option<Response> {
    let head: usize = uri_len(req.uri())
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head > guards.max_header_bytes {
        return Some(guards.refuse(
            &RequestHead::of(req),
            "header_size",
            Error::HeaderTooLarge(guards.max_header_bytes),
        ));
    }
    if let (Some(limiter), Some(ip)) = (&guards.per_ip, client_key(req)) {
        if limiter.allow(&ip).is_err() {
            return Some(guards.refuse(&RequestHead::of(req), "rate_ip", Error::RateLimitedClient));
        }
    }
    None
}

/// The length of the URI as written (its `Display`), counted without building the string.
fn uri_len(uri: &axum::http::Uri) -> usize {
    struct Count(usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = std::fmt::write(&mut count, format_args!("{uri}"));
    count.0
}

/// After routing (a route layer): a new chat is held to the per-address limit on new
/// chats; a request on a chat (routes with a `chat_id` parameter) to the per-chat rate
/// limit, and its answer, when its key failed, to the bad-credentials throttle.
/// Hand-written (issue 17): no boxed future or cloned boxed service per request, and the
/// chat's key is built only when a limit needs it.
#[derive(Clone)]
pub struct PerChatLayer(pub Arc<Guards>);

impl<S> tower::Layer<S> for PerChatLayer {
    type Service = PerChat<S>;
    fn layer(&self, inner: S) -> PerChat<S> {
        PerChat {
            inner,
            guards: Arc::clone(&self.0),
        }
    }
}

/// The service of [`PerChatLayer`].
#[derive(Clone)]
pub struct PerChat<S> {
    inner: S,
    guards: Arc<Guards>,
}

/// The key of one chat's limits: its id (at most 64 characters: chat ids are short, a
/// longer one is refused later anyway and must not grow the maps) and the client.
type ChatKey = (Box<str>, IpAddr);

fn chat_key(params: &RawPathParams, ip: IpAddr) -> Option<ChatKey> {
    let chat_id = params
        .iter()
        .find(|(name, _)| *name == CHAT_ID_PARAM)
        .map(|(_, v)| v)?;
    let end = chat_id
        .char_indices()
        .nth(64)
        .map_or(chat_id.len(), |(i, _)| i);
    Some((Box::from(&chat_id[..end]), ip))
}

/// The path parameters as the `RawPathParams` extractor reads them (it is ready at once).
fn path_params(req: Request) -> (Request, Result<RawPathParams, Response>) {
    use axum::extract::FromRequestParts;
    let (mut parts, body) = req.into_parts();
    let extracted = {
        let fut = RawPathParams::from_request_parts(&mut parts, &());
        let mut fut = std::pin::pin!(fut);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => r.map_err(IntoResponse::into_response),
            std::task::Poll::Pending => unreachable!("RawPathParams reads the request only"),
        }
    };
    (Request::from_parts(parts, body), extracted)
}

impl<S> tower::Service<Request> for PerChat<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = PerChatFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let refused = |response| PerChatFuture {
            state: PerChatState::Refused {
                response: Some(response),
            },
        };
        let (req, params) = path_params(req);
        let params = match params {
            Ok(params) => params,
            Err(rejection) => return refused(rejection),
        };
        let guards = &self.guards;
        let mut after = None;
        if starts_chat(&req) {
            if let (Some(limiter), Some(ip)) = (&guards.chat_starts, client_key(&req)) {
                if limiter.allow(&ip).is_err() {
                    return refused(guards.refuse(
                        &RequestHead::of(&req),
                        "chat_starts_ip",
                        Error::TooManyChatStarts,
                    ));
                }
            }
        } else if let Some(ip) = client_key(&req) {
            let has_chat = params.iter().any(|(name, _)| name == CHAT_ID_PARAM);
            if has_chat {
                let head = RequestHead::of(&req);
                let key = match &guards.per_chat {
                    Some(limiter) => {
                        let key = chat_key(&params, ip).expect("the route has a chat id");
                        if limiter.allow(&key).is_err() {
                            return refused(guards.refuse(
                                &head,
                                "rate_chat",
                                Error::RateLimitedChat,
                            ));
                        }
                        Key::Built(key)
                    }
                    None => Key::Later(params, ip),
                };
                after = Some(After {
                    guards: Arc::clone(guards),
                    key,
                    head,
                });
            }
        }
        PerChatFuture {
            state: PerChatState::Called {
                inner: self.inner.call(req),
                after,
            },
        }
    }
}

/// The chat's key, built when the request is let through (a per-chat limit) or only when
/// its answer needs it (the bad-credentials throttle).
enum Key {
    Built(ChatKey),
    Later(RawPathParams, IpAddr),
}

/// What the bad-credentials throttle needs once the answer is known.
struct After {
    guards: Arc<Guards>,
    key: Key,
    head: RequestHead,
}

pin_project_lite::pin_project! {
    #[project = PerChatProj]
    enum PerChatState<F> {
        Refused { response: Option<Response> },
        Called { #[pin] inner: F, after: Option<After> },
    }
}

pin_project_lite::pin_project! {
    /// The future of [`PerChat`].
    pub struct PerChatFuture<F> {
        #[pin]
        state: PerChatState<F>,
    }
}

impl<F, E> std::future::Future for PerChatFuture<F>
where
    F: std::future::Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let (inner, after) = match self.project().state.project() {
            PerChatProj::Refused { response } => {
                return std::task::Poll::Ready(Ok(response
                    .take()
                    .expect("a PerChatFuture is not polled after it finished")))
            }
            PerChatProj::Called { inner, after } => (inner, after),
        };
        let response = std::task::ready!(inner.poll(cx))?;
        if response.extensions().get::<BadCredentials>().is_some() {
            if let Some(After { guards, key, head }) = after.take() {
                let key = match key {
                    Key::Built(key) => Some(key),
                    Key::Later(params, ip) => chat_key(&params, ip),
                };
                if key.is_some_and(|key| !guards.failed_check(&key)) {
                    return std::task::Poll::Ready(Ok(guards.refuse(
                        &head,
                        "bad_credentials",
                        Error::CredentialsThrottled,
                    )));
                }
            }
        }
        std::task::Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uri_length_is_its_written_length() {
        for uri in [
            "/api/v2/chats/abc?x=1&y=%20",
            "http://example.com:8080/p?q",
            "*",
            "/",
        ] {
            let parsed: axum::http::Uri = uri.parse().unwrap();
            assert_eq!(uri_len(&parsed), parsed.to_string().len(), "{uri}");
        }
    }

    #[test]
    fn a_keyed_limiter_never_remembers_more_than_its_bound() {
        let quota = Quota::per_hour(NonZeroU32::new(1).unwrap());
        let keyed = Keyed::new(quota, 100);
        for i in 0..1000u32 {
            let _ = keyed.allow(&i);
            assert!(keyed.limiter.len() <= 100, "{} keys", keyed.limiter.len());
        }
        // A remembered key is still limited; one there is no room for is let through.
        assert!(keyed.allow(&5).is_err());
        assert!(keyed.allow(&5000).is_ok());
    }

    #[test]
    fn the_bad_credentials_throttle_allows_exactly_the_burst() {
        for burst in [1u32, 2, 5] {
            let guards = Guards::new(&LimitsConfig {
                bad_credentials_burst: NonZeroU32::new(burst).unwrap(),
                ..LimitsConfig::default()
            });
            let key = (Box::<str>::from("chat"), IpAddr::from([10, 0, 0, 1]));
            for n in 0..burst {
                assert!(
                    guards.failed_check(&key),
                    "failure {n} of a burst of {burst}"
                );
            }
            assert!(!guards.failed_check(&key), "past a burst of {burst}");
            assert!(!guards.failed_check(&key));
            let elsewhere = (Box::<str>::from("chat"), IpAddr::from([10, 0, 0, 2]));
            assert!(guards.failed_check(&elsewhere));
        }
    }

    #[test]
    fn an_address_is_keyed_by_its_ipv4_or_its_ipv6_64() {
        let v6 = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(v6("2001:db8:1:2:3:4:5:6"), v6("2001:db8:1:2:ffff::1"));
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"));
        assert_eq!(v6("::ffff:127.0.0.2"), v6("127.0.0.2"));
    }
}
