//! Operational and admin endpoints in process, the routing and auth
//! policy, and arbitrary input that must never panic.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;
use vpcbox::client::ClientKey;
use vpcbox::stats::{ClientRow, DropReason, Snapshot};

use crate::api_support::{mac, Api, TOKEN};

#[tokio::test]
async fn health_ready_metrics_spec() {
    let api = Api::new();
    let h = api.get("/healthz").await;
    assert_eq!(
        (h.status.as_u16(), h.json()),
        (200, json!({"status": "ok"}))
    );
    assert_eq!(h.headers["content-type"], "application/json");
    assert_eq!(api.get("/readyz").await.status, 200);
    api.ctx.ready.store(false, Ordering::Release);
    let r = api.get("/readyz").await;
    assert_eq!((r.status.as_u16(), r.code()), (503, "not_ready".into()));
    assert_eq!(api.get("/healthz").await.status, 200);

    let m = api.get("/metrics").await;
    assert_eq!(m.status, 200);
    assert!(m.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(m.raw.to_vec()).unwrap();
    assert!(text.contains("vpcbox_"), "{text}");

    let spec = api.get("/openapi.yaml").await;
    assert_eq!(spec.status, 200);
    let yaml = String::from_utf8(spec.raw.to_vec()).unwrap();
    assert!(yaml.starts_with("openapi: 3.0"));
    for path in [
        "/healthz:",
        "/readyz:",
        "/metrics:",
        "/openapi.yaml:",
        "/v1/subnets:",
        "/v1/subnets/{id}:",
        "/v1/subnets/{id}/usage:",
        "/v1/subnets/{id}/allocations:",
        "/v1/subnets/{id}/allocations/{ip}:",
        "/v1/leases:",
        "/v1/leases/{ip}:",
        "/v1/reservations:",
        "/v1/clients:",
        "/v1/isolations:",
        "/v1/isolations/{client}:",
    ] {
        assert!(
            yaml.contains(&format!("\n  {path}\n")),
            "{path} missing from the spec"
        );
    }
    api.stop().await;
}

#[tokio::test]
async fn routing_and_auth_policy() {
    let api = Api::new();
    let r = api.get("/v1/nothing").await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "not_found".into()));
    assert_eq!(api.get("/v1/subnets/").await.status, 404);

    let r = api.call("PUT", "/v1/subnets", Some(TOKEN), "").await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (405, "method_not_allowed".into())
    );
    assert_eq!(r.headers["allow"], "GET, POST");
    assert_eq!(
        api.call("POST", "/healthz", None, "").await.headers["allow"],
        "GET"
    );
    assert_eq!(
        api.call("GET", "/v1/isolations/ip:1.2.3.4", None, "")
            .await
            .headers["allow"],
        "DELETE"
    );

    // Admin endpoints and IPAM writes: 401 with WWW-Authenticate and no data.
    for (m, p) in [
        ("GET", "/v1/clients"),
        ("GET", "/v1/isolations"),
        ("POST", "/v1/isolations"),
        ("DELETE", "/v1/isolations/ip:1.2.3.4"),
        ("POST", "/v1/subnets"),
        ("DELETE", "/v1/subnets/lab"),
        ("POST", "/v1/subnets/lab/allocations"),
        ("POST", "/v1/reservations"),
    ] {
        for token in [
            None,
            Some("wrong"),
            Some(""),
            Some("s3cret-token-but-longer"),
        ] {
            let r = api.call(m, p, token, "{}").await;
            assert_eq!(
                (r.status.as_u16(), r.code()),
                (401, "unauthorized".into()),
                "{m} {p} {token:?}"
            );
            assert!(r.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"));
        }
    }
    // IPAM reads are open.
    assert_eq!(api.get("/v1/subnets").await.status, 200);
    assert_eq!(api.get("/v1/leases").await.status, 200);
    assert_eq!(api.get("/v1/reservations").await.status, 200);
    api.stop().await;
}

#[tokio::test]
async fn isolation_round_trip() {
    let api = Api::new();
    let body = json!({ "client": mac(9) }).to_string();
    let r = api.admin("POST", "/v1/isolations", &body).await;
    assert_eq!(r.status, 201);
    assert_eq!(
        (r.json()["client"].clone(), r.json()["source"].clone()),
        (json!(mac(9)), json!("api"))
    );
    assert!(api.ctx.isolation.is_isolated(&mac(9).parse().unwrap()));
    assert_eq!(api.admin("POST", "/v1/isolations", &body).await.status, 200);
    let ip = api
        .admin("POST", "/v1/isolations", "{\"client\":\"ip:192.0.2.7\"}")
        .await;
    assert_eq!(ip.status, 201);

    let list = api.admin("GET", "/v1/isolations", "").await.json();
    assert_eq!(list["isolations"].as_array().unwrap().len(), 2);
    assert_eq!(list["events"][0]["change"], "isolated");
    assert_eq!(api.ctx.stats.isolated_clients.load(Ordering::Relaxed), 2);

    let cli = api
        .admin(
            "POST",
            "/v1/isolations",
            "{\"client\":\"ip:192.0.2.8\",\"source\":\"cli\"}",
        )
        .await;
    assert_eq!(
        (cli.status.as_u16(), cli.json()["source"].clone()),
        (201, json!("cli"))
    );
    let null = api
        .admin(
            "POST",
            "/v1/isolations",
            "{\"client\":\"ip:192.0.2.9\",\"source\":null}",
        )
        .await;
    assert_eq!(null.json()["source"], "api");
    for b in [
        "{\"client\":\"bob\"}",
        "{}",
        "{\"client\":1}",
        "{\"client\":\"ip:192.0.2.10\",\"source\":\"root\"}",
    ] {
        let r = api.admin("POST", "/v1/isolations", b).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (422, "invalid".into()),
            "{b}"
        );
    }
    assert_eq!(api.admin("POST", "/v1/isolations", "{").await.status, 400);

    let path = format!("/v1/isolations/{}", mac(9).replace(':', "%3A"));
    assert_eq!(api.admin("DELETE", &path, "").await.status, 204);
    let r = api.admin("DELETE", &path, "").await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "not_isolated".into()));
    let r = api.admin("DELETE", "/v1/isolations/bogus", "").await;
    assert_eq!(r.status, 422);
    assert!(!api.ctx.isolation.is_isolated(&mac(9).parse().unwrap()));
    api.stop().await;
}

fn row(client: Option<&str>, rate: f64, served: f64, drops: u64) -> ClientRow {
    ClientRow {
        client: client.map(|c| c.parse::<ClientKey>().unwrap()),
        requests: 100,
        served: 90,
        drops,
        drops_by_reason: if drops > 0 {
            vec![(DropReason::RateLimited, drops)]
        } else {
            vec![]
        },
        pending: 2,
        rate_1s: rate,
        rate_10s: rate,
        served_rate_1s: served,
        error: 0,
    }
}

#[tokio::test]
async fn clients_from_the_latest_snapshot() {
    let api = Api::new();
    let snap = Snapshot {
        clients: vec![
            row(Some(&mac(1)), 500.0, 10.0, 4000),
            row(Some(&mac(2)), 2.0, 2.0, 0),
            row(Some(&mac(3)), 50.0, 0.0, 0),
            row(None, 1.0, 1.0, 0),
        ],
        ..Snapshot::default()
    };
    api.snap_tx.send(Arc::new(snap)).unwrap();
    api.ctx
        .isolation
        .isolate(&mac(3).parse().unwrap(), "test")
        .unwrap();

    let r = api.admin("GET", "/v1/clients", "").await;
    assert_eq!(r.status, 200);
    let rows = r.json()["clients"].as_array().unwrap().clone();
    let states: Vec<_> = rows
        .iter()
        .map(|r| r["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(states, ["limited", "ok", "isolated", "ok"]);
    assert_eq!(rows[0]["drops_by_reason"]["rate_limited"], 4000);
    assert_eq!(rows[0]["pending"], 2);
    assert_eq!(rows[3]["client"], serde_json::Value::Null);
    let two = api.admin("GET", "/v1/clients?limit=2", "").await.json();
    assert_eq!(two["clients"].as_array().unwrap().len(), 2);
    api.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// No path, method, token or body makes the API panic or answer
    /// anything but a complete response with a JSON error on failure.
    #[test]
    fn arbitrary_requests_never_panic(
        method in prop::sample::select(vec!["GET", "POST", "DELETE", "PUT", "PATCH"]),
        path in prop::sample::select(vec![
            "/v1/subnets", "/v1/subnets/lab", "/v1/subnets/lab/allocations",
            "/v1/subnets/lab/allocations/10.0.0.100", "/v1/leases", "/v1/reservations",
            "/v1/isolations", "/v1/isolations/x", "/v1/clients", "/v1/subnets/%ff/usage",
        ]),
        query in "[a-z=&%0-9]{0,24}",
        body in prop::collection::vec(any::<u8>(), 0..200),
        json_like in "\\{\"(id|client|subnet|ip|cidr|pools)\": ?(\"[a-z0-9:./]{0,20}\"|[0-9]{1,5}|null|\\[\\]|\\{\\})\\}",
        use_json in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let api = Api::new();
            api.lab(4).await;
            let body = if use_json { json_like.clone().into_bytes() } else { body.clone() };
            let body = String::from_utf8_lossy(&body).into_owned();
            let r = api.call(method, &format!("{path}?{query}"), Some(TOKEN), &body).await;
            assert!(r.status.as_u16() >= 200 && r.status.as_u16() < 600);
            if r.status.is_client_error() || r.status.is_server_error() {
                r.code();
            }
            assert!(!r.status.is_server_error(), "{method} {path} {body:?} -> {}", r.status);
            api.stop().await;
        });
    }
}
