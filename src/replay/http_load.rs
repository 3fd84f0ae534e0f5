//! Open-loop HTTP/2 load: requests start on schedule whether or not earlier
//! ones have answered (a slow target does not slow the load down, as in the
//! incident). Each client is its own h2c connection (prior knowledge) from
//! its own loopback source address, so the target's per-IP quotas apply per
//! client, as they would to distinct machines; each client sends at most
//! half its quota ([`Load::per_client`]).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::phases::{Kind, Recorder, SKIPPED, TIMEOUT, TRANSPORT};

pub type H2Client = Client<HttpConnector, Full<Bytes>>;

/// Requests per second one legit client sends at most against a target
/// whose `gateway.per_client_rate` is `quota_per_sec`: half of it, so a
/// legit client never trips its own quota (100/s at the shipped 200/s).
pub fn per_client_rate(quota_per_sec: f64) -> u32 {
    (quota_per_sec / 2.0).clamp(1.0, f64::from(u32::MAX)) as u32
}

/// One load: what to send, how fast, from where.
#[derive(Debug, Clone)]
pub struct Load {
    pub kind: Kind,
    /// `http://host:port` of the target.
    pub base: String,
    pub rate: u32,
    /// Requests per second per client (see [`per_client_rate`]).
    pub per_client: u32,
    /// Source address of the first client; the others follow it.
    pub first_ip: Ipv4Addr,
    pub timeout: Duration,
    /// Subnet for allocations (API load).
    pub subnet: String,
    /// Bearer token for allocations; without one the API load only reads.
    pub token: Option<Arc<str>>,
    /// Path prefix of the slow route (upstream load).
    pub prefix: String,
    /// Requests in flight at most; past it a request counts as an error
    /// without being sent (bounds the replay's own memory).
    pub max_in_flight: usize,
}

/// An HTTP/2-only client whose connections leave from `ip`.
pub fn h2_client(ip: Ipv4Addr) -> H2Client {
    let mut conn = HttpConnector::new();
    conn.set_local_address(Some(IpAddr::V4(ip)));
    conn.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .pool_max_idle_per_host(1)
        .build(conn)
}

/// How many clients carry `rate` at `per_client` each (1..=200).
pub fn clients_for(rate: u32, per_client: u32) -> u32 {
    rate.div_ceil(per_client.max(1)).clamp(1, 200)
}

/// Runs `load` until `cancel`, then until its requests in flight have
/// answered or timed out (each counted).
pub async fn run(load: Load, rec: Arc<Recorder>, cancel: CancellationToken) {
    if load.rate == 0 {
        return;
    }
    let n = clients_for(load.rate, load.per_client);
    let clients: Vec<H2Client> = (0..n)
        .map(|i| {
            let [a, b, c, d] = load.first_ip.octets();
            h2_client(Ipv4Addr::new(a, b, c, d.saturating_add(i as u8)))
        })
        .collect();
    let load = Arc::new(load);
    let permits = Arc::new(Semaphore::new(load.max_in_flight));
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let in_flight = TaskTracker::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let due = (started.elapsed().as_secs_f64() * f64::from(load.rate)) as u64;
        // A replay that was not run for a while (a loaded machine) catches
        // up one second at most: more would burst past the clients' quota,
        // which no legit client does.
        sent = sent.max(due.saturating_sub(u64::from(load.rate)));
        // `is_cancelled`: a lagging runtime catches up in bursts; none may
        // start after the load was stopped.
        while sent < due && !cancel.is_cancelled() {
            let phase = rec.phase();
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                rec.fail(load.kind, phase, SKIPPED);
                sent += 1;
                continue;
            };
            let client = clients[(sent % u64::from(n)) as usize].clone();
            let req = request(&load, sent, (sent % u64::from(n)) as u32);
            let (rec, timeout) = (rec.clone(), load.timeout);
            let kind = load.kind;
            in_flight.spawn(async move {
                let t0 = Instant::now();
                match tokio::time::timeout(timeout, send(&client, req)).await {
                    Ok(Ok(())) => rec.ok(kind, phase, t0.elapsed()),
                    Ok(Err(reason)) => rec.fail(kind, phase, reason),
                    Err(_) => rec.fail(kind, phase, TIMEOUT),
                }
                drop(permit);
            });
            sent += 1;
        }
    }
    // Each ends within its timeout.
    in_flight.close();
    in_flight.wait().await;
}

/// Sends and reads the whole answer; a failure's reason is the status of a
/// non-2xx answer, or [`TRANSPORT`].
async fn send(client: &H2Client, req: http::Request<Full<Bytes>>) -> Result<(), u16> {
    let resp = client.request(req).await.map_err(|_| TRANSPORT)?;
    let status = resp.status();
    resp.into_body().collect().await.map_err(|_| TRANSPORT)?;
    if status.is_success() {
        Ok(())
    } else {
        Err(status.as_u16())
    }
}

/// The `seq`-th request of `load`, from client `client`.
pub fn request(load: &Load, seq: u64, client: u32) -> http::Request<Full<Bytes>> {
    let b = http::Request::builder().version(http::Version::HTTP_2);
    let built = match load.kind {
        // One allocation in five; each client cycles over 256 keys, so the
        // allocations are idempotent repeats after the first round.
        Kind::Api if seq % 5 == 0 && load.token.is_some() => {
            let body = format!(
                r#"{{"client":"mac:02:aa:{:02x}:00:00:{:02x}"}}"#,
                client & 0xff,
                (seq / 5) % 256
            );
            b.method("POST")
                .uri(format!(
                    "{}/v1/subnets/{}/allocations",
                    load.base, load.subnet
                ))
                .header("content-type", "application/json")
                .header(
                    "authorization",
                    format!("Bearer {}", load.token.as_deref().unwrap_or("")),
                )
                .body(Full::new(Bytes::from(body)))
        }
        Kind::Api => b
            .uri(format!("{}/v1/leases?limit=10", load.base))
            .body(Full::new(Bytes::new())),
        _ => b
            .uri(format!("{}{}{seq}", load.base, load.prefix))
            .body(Full::new(Bytes::new())),
    };
    built.unwrap_or_else(|_| http::Request::new(Full::new(Bytes::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(kind: Kind) -> Load {
        Load {
            kind,
            base: "http://127.0.0.1:8080".into(),
            rate: 2000,
            per_client: 100,
            first_ip: Ipv4Addr::new(127, 0, 0, 10),
            timeout: Duration::from_secs(2),
            subnet: "lab".into(),
            token: Some(Arc::from("t0k")),
            prefix: "/replay-slow/".into(),
            max_in_flight: 10,
        }
    }

    #[test]
    fn api_mixes_allocations_and_lease_lists() {
        let r = request(&load(Kind::Api), 0, 3);
        assert_eq!(r.method(), "POST");
        assert_eq!(r.uri(), "http://127.0.0.1:8080/v1/subnets/lab/allocations");
        assert_eq!(r.headers()["authorization"], "Bearer t0k");
        let anonymous = Load {
            token: None,
            ..load(Kind::Api)
        };
        assert_eq!(request(&anonymous, 0, 3).method(), "GET");
        let r = request(&load(Kind::Api), 1, 3);
        assert_eq!(r.method(), "GET");
        assert_eq!(r.uri(), "http://127.0.0.1:8080/v1/leases?limit=10");
        let r = request(&load(Kind::Upstream), 42, 0);
        assert_eq!(r.uri(), "http://127.0.0.1:8080/replay-slow/42");
    }

    #[test]
    fn clients_stay_under_their_quota() {
        assert_eq!(per_client_rate(200.0), 100);
        assert_eq!(per_client_rate(20.0), 10);
        assert_eq!(per_client_rate(0.5), 1);
        assert_eq!(clients_for(2000, 100), 20);
        assert_eq!(clients_for(4000, 100), 40);
        assert_eq!(clients_for(200, 10), 20);
        assert_eq!(clients_for(1, 100), 1);
        assert_eq!(clients_for(1_000_000, 100), 200);
        assert_eq!(clients_for(100, 0), 100);
    }
}
