//! A real HTTP listener in front of `gateway::api::handle` on its own
//! thread and runtime, for clients that need sockets (schemathesis, the
//! admin CLI). It stands in for the gateway core: HTTP/1.1 and h2c on one
//! port, bodies collected up to 1 MiB, no admission.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use vpcbox::gateway::api::ApiContext;

use crate::api_support::Api;

pub struct ApiServer {
    pub addr: SocketAddr,
    pub ctx: ApiContext,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiServer {
    /// Serves a fresh [`Api`] (real Ipam on a temp dir) on 127.0.0.1:0.
    pub fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let api = Api::new();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send((listener.local_addr().unwrap(), api.ctx.clone()))
                    .unwrap();
                let ctx = Arc::new(api.ctx.clone());
                tokio::select! {
                    _ = accept_loop(listener, ctx) => {}
                    _ = stopped => {}
                }
                api.stop().await;
            });
        });
        let (addr, ctx) = rx.recv().unwrap();
        Self {
            addr,
            ctx,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, ctx: Arc<ApiContext>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let ctx = ctx.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let resp = match Limited::new(body, 1 << 20).collect().await {
                        Ok(b) => {
                            let req = http::Request::from_parts(parts, b.to_bytes());
                            vpcbox::gateway::api::handle(&ctx, req, peer.ip()).await
                        }
                        Err(_) => {
                            let mut r = http::Response::new(Full::new(Bytes::from_static(
                                b"{\"error\":{\"code\":\"too_large\",\"message\":\"body too large\"}}",
                            )));
                            *r.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
                            r
                        }
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
