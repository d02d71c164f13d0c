//! A Server-Sent Events client as `EventSource` reads a stream: frames separated by a blank
//! line, `id:`, `event:`, `data:`, `retry:` fields and `:` comments. Keeps the raw text read,
//! so a test can search all of it (for a secure key that must never be there).

use std::time::Duration;

use serde_json::Value;

/// One frame of a stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// An event: its `event:` name (`None`: a plain message), `id:` and `data:`.
    Event {
        name: Option<String>,
        id: Option<String>,
        data: String,
    },
    Comment(String),
    Retry(u64),
}

impl Frame {
    /// An event's data as JSON.
    pub fn json(&self) -> Value {
        match self {
            Frame::Event { data, .. } => serde_json::from_str(data).expect("JSON data"),
            other => panic!("not an event: {other:?}"),
        }
    }

    /// A plain message's id, as a number.
    pub fn id(&self) -> Option<u64> {
        match self {
            Frame::Event { id, .. } => id.as_deref().map(|i| i.parse().expect("numeric id")),
            _ => None,
        }
    }

    pub fn name(&self) -> Option<&str> {
        match self {
            Frame::Event { name, .. } => name.as_deref(),
            _ => None,
        }
    }
}

/// An open stream.
pub struct Sse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    resp: reqwest::Response,
    buf: String,
    /// Everything read so far.
    pub raw: String,
    ended: bool,
    /// The connection broke (the server went away) rather than ending the body.
    pub broken: bool,
}

/// `GET url` with `Last-Event-ID` when given, as `EventSource` reconnects.
pub async fn open(http: &reqwest::Client, url: &str, last_event_id: Option<u64>) -> Sse {
    let mut req = http.get(url).header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let resp = req.send().await.expect("stream request");
    Sse {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        resp,
        buf: String::new(),
        raw: String::new(),
        ended: false,
        broken: false,
    }
}

impl Sse {
    /// The next frame; `None` when the stream ended. Panics when nothing came `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Frame> {
        match tokio::time::timeout(within, self.next_frame()).await {
            Ok(frame) => frame,
            Err(_) => panic!("no frame within {within:?}; read so far:\n{}", self.raw),
        }
    }

    /// Whether the stream ended cleanly (the server finished the body).
    pub fn ended(&self) -> bool {
        self.ended && !self.broken
    }

    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                if let Some(frame) = parse(&block) {
                    return Some(frame);
                }
                continue;
            }
            if self.ended {
                return None;
            }
            match self.resp.chunk().await {
                Ok(Some(bytes)) => {
                    let text = std::str::from_utf8(&bytes).expect("UTF-8");
                    self.raw.push_str(text);
                    self.buf.push_str(text);
                }
                Ok(None) => self.ended = true,
                Err(_) => {
                    self.ended = true;
                    self.broken = true;
                }
            }
        }
    }

    /// Reads until a plain message arrives (skipping comments and `retry:`).
    pub async fn next_event(&mut self, within: Duration) -> Option<Frame> {
        loop {
            match self.next(within).await? {
                f @ Frame::Event { .. } => return Some(f),
                _ => continue,
            }
        }
    }

    /// The body of a reply that is not a stream (an error's JSON).
    pub async fn json(self) -> Value {
        let bytes = self.resp.bytes().await.unwrap();
        serde_json::from_slice(&bytes).expect("a JSON body")
    }
}

fn parse(block: &str) -> Option<Frame> {
    let mut name = None;
    let mut id = None;
    let mut data: Option<String> = None;
    let mut comment = None;
    let mut retry = None;
    for line in block.lines() {
        if let Some(c) = line.strip_prefix(':') {
            comment = Some(c.trim_start().to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = Some(value.to_owned()),
            "id" => id = Some(value.to_owned()),
            "data" => {
                let d = data.get_or_insert_with(String::new);
                if !d.is_empty() {
                    d.push('\n');
                }
                d.push_str(value);
            }
            "retry" => retry = value.parse().ok(),
            _ => {}
        }
    }
    if let Some(data) = data {
        return Some(Frame::Event { name, id, data });
    }
    if let Some(r) = retry {
        return Some(Frame::Retry(r));
    }
    comment.map(Frame::Comment)
}
