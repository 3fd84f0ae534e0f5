//! API token identities with real clients: a token is named `token:` + 16
//! hex digits of its SHA-256. The verified (admin) token is a client of its
//! own in the per-client table; any token the operator isolates is refused
//! by that name; isolation goes through the admin API and survives a
//! restart of the store. The quota is always the source IP's.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sha2::Digest;
use vpcbox::client::ClientKey;
use vpcbox::stats::DropReason;

use super::support::*;

/// `(status, body)` of one request with an optional bearer token.
async fn send_as(
    c: &TestClient,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Bytes) {
    let mut req = http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), c.request(req))
        .await
        .expect("answered in time")
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// The identity text computed independently of the gateway.
fn identity(token: &str) -> String {
    let d = sha2::Sha256::digest(token.as_bytes());
    let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("token:{hex}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_identity_is_isolated_through_the_api_before_any_routing() {
    let _s = serial().await;
    // A route to an upstream that never answers: a request that got past
    // admission would hang, so a prompt 403 shows nothing was routed.
    let stall = upstream(Upstream::Stall).await;
    let gw = TestGateway::start(config("", &route("/up/", stall, 16, "30s"))).await;
    let c = client("127.0.0.1", true);
    let (alpha, beta) = ("alpha-secret-token", "beta-secret-token");
    let id = identity(alpha);
    assert_eq!(id, ClientKey::token(alpha.as_bytes()).to_string());

    assert_eq!(
        send_as(&c, "GET", &gw.url("/healthz"), Some(alpha), "")
            .await
            .0,
        200
    );
    let body = format!("{{\"client\":\"{id}\"}}");
    let (code, resp) = send_as(
        &c,
        "POST",
        &gw.url("/v1/isolations"),
        Some(TEST_TOKEN),
        &body,
    )
    .await;
    assert_eq!(code, 201, "{resp:?}");
    let v: serde_json::Value = serde_json::from_slice(&resp).unwrap();
    assert_eq!(v["client"], id.as_str());
    let (_, list) = send_as(&c, "GET", &gw.url("/v1/isolations"), Some(TEST_TOKEN), "").await;
    let list = String::from_utf8_lossy(&list).into_owned();
    assert!(list.contains(&id) && !list.contains(alpha), "{list}");

    for (method, path, body) in [("GET", "/healthz", ""), ("POST", "/up/x", "payload")] {
        let started = Instant::now();
        let (code, resp) = send_as(&c, method, &gw.url(path), Some(alpha), body).await;
        assert_eq!(
            (code, error_code(&resp).as_str()),
            (403, "isolated"),
            "{path}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path} answered at once"
        );
    }
    // The same IP without the token, and another token, are still served.
    assert_eq!(
        send_as(&c, "GET", &gw.url("/healthz"), None, "").await.0,
        200
    );
    assert_eq!(
        send_as(&c, "GET", &gw.url("/healthz"), Some(beta), "")
            .await
            .0,
        200
    );

    assert!(gw.stats().drops(DropReason::Isolated) >= 2);
    let key: ClientKey = id.parse().unwrap();
    let row = gw
        .stats()
        .clients
        .get(&key, Instant::now())
        .expect("token row");
    assert!(row.drops >= 2, "drops attributed to the token: {row:?}");
    assert!(
        row.drops_by_reason
            .iter()
            .any(|(r, n)| *r == DropReason::Isolated && *n >= 2),
        "{row:?}"
    );
    assert_eq!(
        gw.stats()
            .gateway
            .route("up", 0)
            .pending
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let rows = gw.stats().clients.rows(Instant::now());
    assert!(rows.iter().all(|r| r
        .client
        .as_ref()
        .is_none_or(|k| !k.to_string().contains(alpha))));

    let path = format!("/v1/isolations/{}", id.replace(':', "%3A"));
    assert_eq!(
        send_as(&c, "DELETE", &gw.url(&path), Some(TEST_TOKEN), "")
            .await
            .0,
        204
    );
    assert_eq!(
        send_as(&c, "GET", &gw.url("/healthz"), Some(alpha), "")
            .await
            .0,
        200
    );
    // Unparseable identities are 422 like any bad client key.
    let (code, _) = send_as(
        &c,
        "POST",
        &gw.url("/v1/isolations"),
        Some(TEST_TOKEN),
        "{\"client\":\"token:xyz\"}",
    )
    .await;
    assert_eq!(code, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_is_the_ips_whatever_token_it_sends() {
    let _s = serial().await;
    let gw = TestGateway::start(config(
        "per_client_rate = \"3/s\"\nper_client_burst = 3",
        "",
    ))
    .await;
    let c = client("127.0.0.1", false);
    let mut limited = 0;
    for _ in 0..8 {
        let (code, resp) = send_as(&c, "GET", &gw.url("/healthz"), Some("flood-token"), "").await;
        if code == 429 {
            assert_eq!(error_code(&resp), "rate_limited");
            limited += 1;
        }
    }
    assert!(limited >= 4, "the IP hit its quota: {limited}");
    // Same source IP, another token, no token, even the admin token: the
    // same spent quota.
    for token in [Some("calm-token"), None, Some(TEST_TOKEN)] {
        let (code, _) = send_as(&c, "GET", &gw.url("/healthz"), token, "").await;
        assert_eq!(code, 429, "{token:?}");
    }
    // Another IP has its own.
    let other = client("127.0.0.2", false);
    for token in [Some("calm-token"), None, Some(TEST_TOKEN)] {
        let (code, _) = send_as(&other, "GET", &gw.url("/healthz"), token, "").await;
        assert_eq!(code, 200, "{token:?}");
    }
    // The invented token is no client; its requests are the IP's.
    let now = Instant::now();
    assert!(gw
        .stats()
        .clients
        .get(&ClientKey::token(b"flood-token"), now)
        .is_none());
    let ip = ClientKey::Ip("127.0.0.1".parse().unwrap());
    let row = gw.stats().clients.get(&ip, now).expect("ip row");
    assert_eq!(row.requests, 10, "{row:?}");
    assert!(row.drops >= 6, "{row:?}");
    // The verified token is a client of its own.
    let admin = ClientKey::token(TEST_TOKEN.as_bytes());
    let row = gw.stats().clients.get(&admin, now).expect("admin row");
    assert_eq!((row.requests, row.drops), (2, 1), "{row:?}");
}

#[tokio::test]
async fn token_isolation_survives_a_store_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = config("", "");
    let key = ClientKey::token(b"persisted-token");
    for round in 0..2 {
        // sled's flush thread may keep the first round's file lock for a
        // moment after the last handle is gone: retry `Locked` for up to 1 s.
        let open = || {
            let opts = vpcbox::app::store::ipam_options(&config);
            vpcbox::ipam::Ipam::open(dir.path(), opts, vpcbox::stats::Stats::new(16))
        };
        let mut ipam = open();
        for _ in 0..200 {
            if !matches!(ipam, Err(vpcbox::ipam::IpamError::Locked { .. })) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
            ipam = open();
        }
        let ipam = ipam.unwrap();
        let set = vpcbox::isolation::IsolationSet::open(ipam.isolation_store()).unwrap();
        if round == 0 {
            assert!(set.isolate(&key, "api").unwrap());
        } else {
            assert!(set.is_isolated(&key), "loaded back after reopening");
            assert_eq!(set.entries()[0].client.to_string(), key.to_string());
        }
    }
}
