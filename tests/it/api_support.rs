//! In-process API fixture: a real `Ipam` on a temp dir (committer and
//! reaper running), an in-memory isolation set, a snapshot channel the test
//! can publish on, and `call` to drive `gateway::api::handle` directly.

use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vpcbox::gateway::api::{handle, ApiContext};
use vpcbox::ipam::{Ipam, IpamOptions};
use vpcbox::isolation::IsolationSet;
use vpcbox::stats::{Snapshot, Stats};

pub const TOKEN: &str = "s3cret-token";

pub struct Api {
    pub ctx: ApiContext,
    pub snap_tx: watch::Sender<Arc<Snapshot>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    _dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub raw: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.raw)
            .unwrap_or_else(|e| panic!("not json ({e}): {:?}", String::from_utf8_lossy(&self.raw)))
    }
    /// The error code of an error reply (checks the error shape too).
    pub fn code(&self) -> String {
        let v = self.json();
        assert!(v["error"]["message"].is_string(), "{v}");
        v["error"]["code"].as_str().expect("code").to_owned()
    }
}

impl Api {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::new(64);
        let ipam = Ipam::open(dir.path(), IpamOptions::default(), stats.clone()).unwrap();
        let (cancel, tracker) = (CancellationToken::new(), TaskTracker::new());
        ipam.spawn(&tracker, cancel.clone());
        let (snap_tx, snapshots) = watch::channel(Arc::new(Snapshot::default()));
        let ctx = ApiContext {
            ipam,
            isolation: IsolationSet::in_memory(),
            snapshots,
            admin_token: Arc::from(TOKEN),
            ready: Arc::new(AtomicBool::new(true)),
            public_client_metrics: Arc::new(AtomicBool::new(false)),
            stats,
        };
        Self {
            ctx,
            snap_tx,
            cancel,
            tracker,
            _dir: dir,
        }
    }

    /// Sends one request; `token` goes into `Authorization: Bearer`.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> Reply {
        let mut b = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = b.body(Bytes::from(body.to_owned())).unwrap();
        let client: IpAddr = "127.0.0.1".parse().unwrap();
        let res = handle(&self.ctx, req, client).await;
        let (parts, body) = res.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            raw: body.collect().await.unwrap().to_bytes(),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None, "").await
    }
    pub async fn admin(&self, method: &str, path: &str, body: &str) -> Reply {
        self.call(method, path, Some(TOKEN), body).await
    }

    /// Creates `lab` = 10.0.0.0/24 with the pool `.100`–`.{100+n-1}`.
    pub async fn lab(&self, n: u8) -> Reply {
        let body = subnet_json(
            "lab",
            "10.0.0.0/24",
            "10.0.0.100",
            &format!("10.0.0.{}", 99 + n),
        );
        let r = self.admin("POST", "/v1/subnets", &body).await;
        assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.raw));
        r
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// DHCPv6 subnet "lab6" (fd00:77::/64, addresses ::100–::1ff, fd00:78::/48
/// by /56) in `ipam`, and `n` clients each with an IA_NA and an IA_PD bound
/// (the DHCPv6 server's calls, made directly).
pub async fn lab6(ipam: &vpcbox::ipam::Ipam, n: u8) {
    use vpcbox::ipam::{Ia6Key, Ia6Kind, Ia6Op, PdPoolSpec, Range6, Subnet6Spec};
    let spec = Subnet6Spec {
        pools: vec![Range6 {
            start: "fd00:77::100".parse().unwrap(),
            end: "fd00:77::1ff".parse().unwrap(),
        }],
        pd_pools: vec![PdPoolSpec {
            prefix: "fd00:78::/48".parse().unwrap(),
            delegated_len: 56,
        }],
        ..Subnet6Spec::new("lab6", "fd00:77::/64".parse().unwrap())
    };
    ipam.apply_config6(&[spec]).unwrap();
    for c in 1..=n {
        for kind in [Ia6Kind::Na, Ia6Kind::Pd] {
            let ia = Ia6Key {
                client: duid(c).parse().unwrap(),
                kind,
                iaid: 1,
            };
            let now = std::time::SystemTime::now();
            ipam.ia6("lab6", &ia, Ia6Op::Commit, &[], None, now)
                .await
                .unwrap();
        }
    }
}

pub fn duid(n: u8) -> String {
    format!("duid:00030001020000{n:02x}")
}

pub fn subnet_json(id: &str, cidr: &str, start: &str, end: &str) -> String {
    serde_json::json!({
        "id": id, "cidr": cidr, "pools": [{"start": start, "end": end}],
        "gateway": null, "lease_time": "1h",
    })
    .to_string()
}

pub fn mac(n: u8) -> String {
    format!("mac:02:00:00:00:00:{n:02x}")
}
