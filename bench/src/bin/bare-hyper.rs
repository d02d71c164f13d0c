//! The physical limit for the load benchmark: a bare hyper server that reads a POST body,
//! parses it as JSON and answers a small JSON reply — the least any gateway must do.
//!
//! `bare-hyper [ADDR]` (default 127.0.0.1:9100). Same runtime shape as the gateway (tokio's
//! multi-threaded runtime, one thread per core), HTTP/1.1 keep-alive.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const REPLY: &[u8] = br#"{"statusCode":0,"alias":"117","chatEnded":false,"nextPosition":5}"#;

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, b"{\"statusCode\":2}")),
    };
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) if v.is_object() => Ok(reply(StatusCode::OK, REPLY)),
        _ => Ok(reply(StatusCode::BAD_REQUEST, b"{\"statusCode\":2}")),
    }
}

fn reply(status: StatusCode, body: &'static [u8]) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body)))
        .expect("static response")
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9100".into());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("bare-hyper listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}
