//! What a CometD client carries instead of a session on one replica: its sealed `clientId`,
//! the chats it follows (a cookie) and how far it has read each (another cookie).
//!
//! Owns the three sealed values (`credentials::Tokens`, purposes `Client` and `Follow`),
//! their payloads, the cookie names derived from the client id, and the bounds (chats per
//! client, cookie size). Two cookies, because two kinds of request write them: a publish
//! (requestChat, requestNotifications, disconnect) changes the list of chats, and only a
//! `/meta/connect` reply moves positions. Bayeux has one connect in flight per client, so
//! positions never race; a publish never rewrites positions, and a connect never rewrites
//! the list. Each followed chat has an `epoch`: a position recorded for another epoch of the
//! chat (before a requestNotifications started it again) is ignored. Nothing here is kept
//! on the replica. It must not run operations or know the Bayeux message shapes.

use axum::http::header::COOKIE;
use axum::http::{HeaderMap, HeaderValue};
use rand::RngCore;

use super::config::CometdConfig;
use crate::credentials::{Purpose, Tokens};

/// Bytes of a client's random identity.
const CLIENT_ID_BYTES: usize = 16;
/// The longest cookie value written: browsers keep at least 4096 bytes per cookie, name and
/// attributes included.
pub const MAX_COOKIE_VALUE: usize = 3800;
/// Where the cookies are sent back: the CometD routes only.
const COOKIE_PATH: &str = "/genesys/cometd";
/// The cookies' names start so, then `c_` (chats) or `p_` (positions) and the client's tag.
const COOKIE_PREFIX: &str = "wag_cometd_";
/// How long a browser keeps a client's cookies after their last write (`Max-Age`).
const COOKIE_MAX_AGE_SECS: u64 = 24 * 3600;
/// Other CometD clients of the same browser (tabs, reloaded pages) whose cookies a request
/// may carry: past it, the least recently written go, so the `Cookie` header stays bounded.
pub const MAX_OTHER_CLIENTS: usize = 4;

/// A CometD client's identity: random, tenant-agnostic, sealed into its `clientId`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientId([u8; CLIENT_ID_BYTES]);

impl ClientId {
    /// A new identity and its `clientId`.
    pub fn new(tokens: &Tokens) -> (ClientId, String) {
        let mut id = [0u8; CLIENT_ID_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut id);
        (ClientId(id), tokens.seal(Purpose::Client, &id, None))
    }

    /// The identity a `clientId` carries, if this gateway's secret sealed it.
    pub fn open(tokens: &Tokens, client_id: &str) -> Option<ClientId> {
        let payload = tokens.open(Purpose::Client, client_id)?;
        Some(ClientId(payload.try_into().ok()?))
    }

    /// The names of this client's two cookies: the chats it follows, and its positions.
    fn cookie_names(&self) -> (String, String) {
        let tag = hex::encode(&self.0[..8]);
        (
            format!("{COOKIE_PREFIX}c_{tag}"),
            format!("{COOKIE_PREFIX}p_{tag}"),
        )
    }
}

/// One chat a client follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Followed {
    /// The chat's CometD `secureKey` (an `operation` chat token).
    pub token: String,
    /// The chat id inside the token (kept beside it, so cookies match without opening it).
    pub chat_id: String,
    /// The service whose channel its messages go on.
    pub service: String,
    /// Changes each time the chat is (re)started by a publish.
    pub epoch: u32,
    /// The position to watch from when no connect has moved it yet.
    pub start: u64,
}

/// How far a connect has delivered one chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub chat_id: String,
    pub epoch: u32,
    pub position: u64,
    /// Delivered its end (or a final error): not watched again.
    pub ended: bool,
    /// Where the chat lives now (failover moves it), when a connect learnt it.
    pub alias: String,
}

/// The client's view of its chats, from the request's cookies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Follows {
    pub chats: Vec<Followed>,
    pub positions: Vec<Position>,
    /// Cookies of this browser's other CometD clients to remove: those that do not open, and
    /// the least recently written past [`MAX_OTHER_CLIENTS`].
    pub stale: Vec<String>,
}

impl Follows {
    /// The client's cookies from a request. A cookie that does not open for this client
    /// (another secret, another client, changed) counts as absent.
    pub fn read(tokens: &Tokens, client: &ClientId, headers: &HeaderMap) -> Follows {
        let (chats_name, positions_name) = client.cookie_names();
        let mut follows = Follows::default();
        // Other clients' cookies by tag: their names and their latest write.
        let mut others: Vec<(String, Vec<String>, u64)> = Vec::new();
        for (name, value) in cookies(headers) {
            if name == chats_name {
                if let Some(chats) =
                    open(tokens, client, b'C', value).and_then(|p| decode_chats(&p))
                {
                    follows.chats = chats;
                }
            } else if name == positions_name {
                if let Some(positions) =
                    open(tokens, client, b'P', value).and_then(|p| decode_positions(&p))
                {
                    follows.positions = positions;
                }
            } else if let Some(rest) = name.strip_prefix(COOKIE_PREFIX) {
                let tag = rest.get(2..).unwrap_or_default();
                match written_at(tokens, value) {
                    // Another secret's, changed, expired: it can never serve again.
                    None => follows.stale.push(name.to_owned()),
                    Some(at) => match others.iter_mut().find(|(t, _, _)| t == tag) {
                        Some((_, names, latest)) => {
                            names.push(name.to_owned());
                            *latest = (*latest).max(at);
                        }
                        None => others.push((tag.to_owned(), vec![name.to_owned()], at)),
                    },
                }
            }
        }
        if others.len() > MAX_OTHER_CLIENTS {
            others.sort_by_key(|(_, _, latest)| std::cmp::Reverse(*latest));
            for (_, names, _) in others.drain(MAX_OTHER_CLIENTS..) {
                follows.stale.extend(names);
            }
        }
        follows
    }

    /// The `Set-Cookie`s that remove [`Follows::stale`] cookies.
    pub fn stale_cookies(&self, config: &CometdConfig) -> Vec<HeaderValue> {
        self.stale
            .iter()
            .filter(|name| name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .map(|name| set_cookie(name, "", config, true))
            .collect()
    }

    /// Where to watch a followed chat from, and whether it is over: its position of the
    /// same epoch, else its start.
    pub fn position(&self, chat: &Followed) -> (u64, bool, Option<&str>) {
        match self
            .positions
            .iter()
            .find(|p| p.chat_id == chat.chat_id && p.epoch == chat.epoch)
        {
            Some(p) => (p.position, p.ended, Some(p.alias.as_str())),
            None => (chat.start, false, None),
        }
    }

    /// Follows a chat from `start` (a new chat, or requestNotifications on one): a new
    /// epoch, at the end of the list; the oldest go past `max_follow`.
    pub fn follow(
        &mut self,
        token: String,
        chat_id: String,
        service: &str,
        start: u64,
        max_follow: usize,
    ) {
        self.unfollow(&chat_id);
        self.chats.push(Followed {
            token,
            chat_id,
            service: service.to_owned(),
            epoch: rand::random(),
            start,
        });
        while self.chats.len() > max_follow {
            self.chats.remove(0);
        }
    }

    pub fn unfollow(&mut self, chat_id: &str) {
        self.chats.retain(|c| c.chat_id != chat_id);
    }

    /// Records what a connect delivered for a chat.
    pub fn advance(&mut self, chat: &Followed, position: u64, ended: bool, alias: &str) {
        self.positions.retain(|p| p.chat_id != chat.chat_id);
        self.positions.push(Position {
            chat_id: chat.chat_id.clone(),
            epoch: chat.epoch,
            position,
            ended,
            alias: alias.to_owned(),
        });
    }

    /// The `Set-Cookie` of the chats list. The oldest chats go until it fits.
    pub fn chats_cookie(
        &mut self,
        tokens: &Tokens,
        client: &ClientId,
        config: &CometdConfig,
    ) -> HeaderValue {
        let (name, _) = client.cookie_names();
        loop {
            let value = seal(tokens, client, b'C', &encode_chats(&self.chats));
            if value.len() <= MAX_COOKIE_VALUE || self.chats.is_empty() {
                return set_cookie(&name, &value, config, false);
            }
            self.chats.remove(0);
        }
    }

    /// The `Set-Cookie` of the positions, for the chats still followed.
    pub fn positions_cookie(
        &mut self,
        tokens: &Tokens,
        client: &ClientId,
        config: &CometdConfig,
    ) -> HeaderValue {
        let (_, name) = client.cookie_names();
        let chats = &self.chats;
        self.positions.retain(|p| {
            chats
                .iter()
                .any(|c| c.chat_id == p.chat_id && c.epoch == p.epoch)
        });
        let value = seal(tokens, client, b'P', &encode_positions(&self.positions));
        set_cookie(&name, &value, config, false)
    }

    /// The `Set-Cookie`s that remove both cookies (`/meta/disconnect`).
    pub fn clear(client: &ClientId, config: &CometdConfig) -> [HeaderValue; 2] {
        let (chats, positions) = client.cookie_names();
        [
            set_cookie(&chats, "", config, true),
            set_cookie(&positions, "", config, true),
        ]
    }
}

/// Every `name=value` pair of the request's `Cookie` headers.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            Some((name.trim(), value.trim().trim_matches('"')))
        })
}

fn set_cookie(name: &str, value: &str, config: &CometdConfig, remove: bool) -> HeaderValue {
    let mut text = format!(
        "{name}={value}; Path={COOKIE_PATH}; HttpOnly; SameSite={}",
        config.cookie_same_site.attribute()
    );
    if config.cookie_secure {
        text.push_str("; Secure");
    }
    if remove {
        text.push_str("; Max-Age=0");
    } else {
        text.push_str(&format!("; Max-Age={COOKIE_MAX_AGE_SECS}"));
    }
    // Names are hex and values base64url: always a valid header.
    HeaderValue::from_str(&text).expect("a cookie of token characters")
}

/// A cookie's payload: its kind, the client it belongs to, when it was written (Unix
/// seconds), then its entries. Sealed for as long as the browser keeps it.
fn seal(tokens: &Tokens, client: &ClientId, kind: u8, entries: &[u8]) -> String {
    let mut payload = Vec::with_capacity(HEAD + entries.len());
    payload.push(kind);
    payload.extend_from_slice(&client.0);
    payload.extend_from_slice(&now_secs().to_be_bytes());
    payload.extend_from_slice(entries);
    let ttl = std::time::Duration::from_secs(COOKIE_MAX_AGE_SECS);
    tokens.seal(Purpose::Follow, &payload, Some(ttl))
}

/// Kind, client id, written at.
const HEAD: usize = 1 + CLIENT_ID_BYTES + 8;

fn open(tokens: &Tokens, client: &ClientId, kind: u8, value: &str) -> Option<Vec<u8>> {
    let payload = tokens.open(Purpose::Follow, value)?;
    let (head, entries) = payload.split_at_checked(HEAD)?;
    (head[0] == kind && head[1..1 + CLIENT_ID_BYTES] == client.0).then(|| entries.to_vec())
}

/// When any client's cookie was written, if it opens.
fn written_at(tokens: &Tokens, value: &str) -> Option<u64> {
    let payload = tokens.open(Purpose::Follow, value)?;
    let at = payload.get(1 + CLIENT_ID_BYTES..HEAD)?;
    Some(u64::from_be_bytes(at.try_into().ok()?))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Reads a cookie payload front to back.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

fn encode_chats(chats: &[Followed]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chats {
        put_str(&mut out, &c.token);
        put_str(&mut out, &c.chat_id);
        put_str(&mut out, &c.service);
        out.extend_from_slice(&c.epoch.to_be_bytes());
        out.extend_from_slice(&c.start.to_be_bytes());
    }
    out
}

fn decode_chats(payload: &[u8]) -> Option<Vec<Followed>> {
    let mut r = Reader(payload);
    let mut chats = Vec::new();
    while !r.0.is_empty() {
        chats.push(Followed {
            token: r.string()?,
            chat_id: r.string()?,
            service: r.string()?,
            epoch: r.u32()?,
            start: r.u64()?,
        });
    }
    Some(chats)
}

fn encode_positions(positions: &[Position]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in positions {
        put_str(&mut out, &p.chat_id);
        out.extend_from_slice(&p.epoch.to_be_bytes());
        out.extend_from_slice(&p.position.to_be_bytes());
        out.push(u8::from(p.ended));
        put_str(&mut out, &p.alias);
    }
    out
}

fn decode_positions(payload: &[u8]) -> Option<Vec<Position>> {
    let mut r = Reader(payload);
    let mut positions = Vec::new();
    while !r.0.is_empty() {
        positions.push(Position {
            chat_id: r.string()?,
            epoch: r.u32()?,
            position: r.u64()?,
            ended: r.u8()? != 0,
            alias: r.string()?,
        });
    }
    Some(positions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Credentials;

    fn tokens() -> Tokens {
        Credentials::new(b"0123456789abcdef0123456789abcdef")
            .tokens()
            .clone()
    }

    fn request_with(cookies: &[HeaderValue]) -> HeaderMap {
        let pairs: Vec<String> = cookies
            .iter()
            .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_owned())
            .collect();
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(&pairs.join("; ")).unwrap());
        headers
    }

    #[test]
    fn cookies_round_trip_on_any_replica_and_only_for_their_client() {
        let (t, config) = (tokens(), CometdConfig::default());
        let (client, client_id) = ClientId::new(&t);
        assert_eq!(ClientId::open(&tokens(), &client_id), Some(client));
        assert_eq!(ClientId::open(&t, &client_id[1..]), None);
        let mut f = Follows::default();
        f.follow("tok-a".into(), "A".into(), "svc", 3, 8);
        f.follow("tok-b".into(), "B".into(), "svc", 1, 8);
        let chat_b = f.chats[1].clone();
        f.advance(&chat_b, 7, false, "118");
        let cookies = [
            f.chats_cookie(&t, &client, &config),
            f.positions_cookie(&t, &client, &config),
        ];
        let text = cookies[0].to_str().unwrap();
        assert!(
            text.contains("Path=/genesys/cometd; HttpOnly; SameSite=Lax"),
            "{text}"
        );
        let read = Follows::read(&tokens(), &client, &request_with(&cookies));
        assert_eq!(read, f);
        assert_eq!(read.position(&read.chats[0]), (3, false, None));
        assert_eq!(read.position(&read.chats[1]), (7, false, Some("118")));
        // Another client's cookies, even under this client's names, count as absent.
        let (other, _) = ClientId::new(&t);
        assert_eq!(
            Follows::read(&t, &other, &request_with(&cookies)),
            Follows::default()
        );
    }

    #[test]
    fn a_browser_keeps_the_cookies_of_a_few_other_clients_only() {
        let (t, config) = (tokens(), CometdConfig::default());
        let (me, _) = ClientId::new(&t);
        let mut all = Vec::new();
        for _ in 0..MAX_OTHER_CLIENTS + 2 {
            let (other, _) = ClientId::new(&t);
            let mut f = Follows::default();
            f.follow("tok".into(), "A".into(), "svc", 1, 8);
            all.push(f.chats_cookie(&t, &other, &config));
            all.push(f.positions_cookie(&t, &other, &config));
        }
        let forged = HeaderValue::from_static("wag_cometd_c_0011223344556677=garbage");
        all.push(forged);
        let read = Follows::read(&t, &me, &request_with(&all));
        // Two clients too many (both their cookies), and the one that never opens.
        assert_eq!(read.stale.len(), 2 * 2 + 1, "{:?}", read.stale);
        assert!(read
            .stale
            .contains(&"wag_cometd_c_0011223344556677".to_owned()));
        let removals = read.stale_cookies(&config);
        assert!(removals
            .iter()
            .all(|c| c.to_str().unwrap().contains("Max-Age=0")));
        let few = Follows::read(&t, &me, &request_with(&all[..4]));
        assert!(few.stale.is_empty(), "{:?}", few.stale);
    }

    #[test]
    fn a_restarted_chat_ignores_its_old_position_and_the_list_is_bounded() {
        let t = tokens();
        let (client, _) = ClientId::new(&t);
        let mut f = Follows::default();
        f.follow("tok-a".into(), "A".into(), "svc", 1, 2);
        let old = f.chats[0].clone();
        f.follow("tok-a".into(), "A".into(), "svc", 9, 2);
        f.advance(&old, 5, true, "117");
        assert_eq!(f.position(&f.chats[0].clone()), (9, false, None));
        f.follow("tok-b".into(), "B".into(), "svc", 1, 2);
        f.follow("tok-c".into(), "C".into(), "svc", 1, 2);
        let ids: Vec<&str> = f.chats.iter().map(|c| c.chat_id.as_str()).collect();
        assert_eq!(ids, ["B", "C"]);
        // However long the tokens, the cookie stays within a browser's bound.
        let config = CometdConfig::default();
        let mut big = Follows::default();
        for i in 0..8 {
            big.follow("t".repeat(1000), format!("chat{i}"), "svc", 1, 8);
        }
        let cookie = big.chats_cookie(&t, &client, &config);
        assert!(cookie.len() <= MAX_COOKIE_VALUE + 200, "{}", cookie.len());
        assert!(big.chats.len() < 8);
    }
}
