//! A slow backend for `bench/gateway.sh`'s h2c runs: answers every request
//! with a small JSON body after `--delay` seconds, over HTTP/1.1 or h2c
//! prior knowledge on one port (like the harness's Python slow backend,
//! which speaks HTTP/1.1 only). `--sleep-first` sleeps before reading the
//! request body, so bodies pile up in the proxy in front.
//!
//! Usage: slow_backend PORT DELAY_S [--sleep-first]; writes its PID to
//! `$PID_FILE` when set.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

const BODY: &[u8] = b"{\"ok\":true,\"svc\":\"slow-backend\"}\n";

async fn answer(
    req: hyper::Request<Incoming>,
    delay: Duration,
    sleep_first: bool,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    if sleep_first {
        tokio::time::sleep(delay).await;
    }
    let _ = req.into_body().collect().await;
    if !sleep_first {
        tokio::time::sleep(delay).await;
    }
    let mut resp = hyper::Response::new(Full::new(Bytes::from_static(BODY)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).map_or(Ok(18082), |p| p.parse())?;
    let delay = Duration::from_secs_f64(args.get(2).map_or(Ok(5.0), |d| d.parse())?);
    let sleep_first = args.iter().any(|a| a == "--sleep-first");
    if let Ok(path) = std::env::var("PID_FILE") {
        std::fs::write(path, std::process::id().to_string())?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http2().max_concurrent_streams(100_000);
        loop {
            let (stream, _) = listener.accept().await?;
            let builder = builder.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| answer(req, delay, sleep_first));
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}
