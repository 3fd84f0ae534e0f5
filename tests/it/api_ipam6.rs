//! DHCPv6 subnets and bindings through the IPAM API, in process, on a real
//! sled-backed `Ipam` (the bindings made as the DHCPv6 server makes them).

use serde_json::Value;

use crate::api_support::{duid, lab6, mac, Api};

/// `/v1/subnets` lists the v6 subnet (family 6) after the v4 ones, and
/// `/v1/subnets/{id}` finds it.
#[tokio::test]
async fn v6_subnets_are_listed_with_family_6() {
    let api = Api::new();
    api.lab(4).await;
    lab6(&api.ctx.ipam, 2).await;
    let all = api.get("/v1/subnets").await.json();
    let subnets = all["subnets"].as_array().unwrap();
    assert_eq!(subnets.len(), 2, "{all}");
    assert_eq!(
        (subnets[0]["id"].clone(), subnets[0]["family"].clone()),
        ("lab".into(), 4.into())
    );
    let v6 = &subnets[1];
    assert_eq!(
        (v6["id"].as_str(), v6["family"].as_u64()),
        (Some("lab6"), Some(6))
    );
    assert_eq!(v6["prefix"], "fd00:77::/64");
    assert_eq!(v6["pd_pools"][0]["delegated_len"], 56);
    assert_eq!(v6["usage"]["size"], 256 + 256);
    assert_eq!(v6["usage"]["by_state"]["bound"], 4);
    assert_eq!(v6["prefixes"], 256);
    let one = api.get("/v1/subnets/lab6").await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["family"], 6);
    // One id space: a v4 subnet may not take a v6 subnet's id.
    let body = crate::api_support::subnet_json("lab6", "10.9.0.0/24", "10.9.0.10", "10.9.0.20");
    assert_eq!(api.admin("POST", "/v1/subnets", &body).await.status, 409);
    api.stop().await;
}

/// `/v1/leases` pages through v4 leases, then v6 bindings (kind na/pd,
/// client duid:…), every lease once, whatever the page size; filters apply.
#[tokio::test]
async fn v6_bindings_follow_v4_leases_in_the_listing() {
    let api = Api::new();
    api.lab(4).await;
    for n in 1..=3 {
        let b = serde_json::json!({ "client": mac(n) }).to_string();
        let r = api.admin("POST", "/v1/subnets/lab/allocations", &b).await;
        assert_eq!(r.status, 201);
    }
    lab6(&api.ctx.ipam, 3).await;
    let all = api.get("/v1/leases").await.json();
    let leases = all["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 3 + 6, "{all}");
    assert!(leases[..3].iter().all(|l| l.get("kind").is_none()));
    let v6 = &leases[3..];
    assert_eq!(v6.iter().filter(|l| l["kind"] == "na").count(), 3);
    assert_eq!(v6.iter().filter(|l| l["kind"] == "pd").count(), 3);
    for l in v6 {
        let ip = l["ip"].as_str().unwrap();
        match l["kind"].as_str() {
            Some("na") => assert!(ip.starts_with("fd00:77::") && !ip.contains('/'), "{ip}"),
            _ => assert!(ip.starts_with("fd00:78:") && ip.ends_with("/56"), "{ip}"),
        }
        assert!(l["client"].as_str().unwrap().starts_with("duid:"));
        assert_eq!(l["state"], "bound");
    }
    for limit in [1, 2, 4] {
        let mut seen: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..50 {
            let q = match &cursor {
                Some(c) => format!("/v1/leases?limit={limit}&cursor={c}"),
                None => format!("/v1/leases?limit={limit}"),
            };
            let page = api.get(&q).await.json();
            seen.extend(page["leases"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.replace(':', "%3A")),
                None => break,
            }
        }
        assert_eq!(&seen, leases, "limit {limit}");
    }
    let only6 = api.get("/v1/leases?subnet=lab6").await.json();
    assert_eq!(only6["leases"].as_array().unwrap().len(), 6);
    let client = duid(2).replace(':', "%3A");
    let mine = api.get(&format!("/v1/leases?client={client}")).await.json();
    assert_eq!(mine["leases"].as_array().unwrap().len(), 2, "{mine}");
    for bad in ["banana", "6%3A00", "fd00%3A%3A1"] {
        let r = api.get(&format!("/v1/leases?cursor={bad}")).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (422, "invalid".into()),
            "{bad}"
        );
    }
    api.stop().await;
}

/// `/v1/leases/{ip}` answers a v6 address or (URL-encoded) prefix with the
/// binding as `/v1/leases` lists it; 404 on a free one, 422 on bad text.
#[tokio::test]
async fn v6_binding_is_looked_up_by_address_or_prefix() {
    let api = Api::new();
    api.lab(4).await;
    lab6(&api.ctx.ipam, 3).await;
    let all = api.get("/v1/leases?subnet=lab6").await.json();
    let listed = all["leases"].as_array().unwrap();
    assert_eq!(listed.len(), 6, "{all}");
    for l in listed {
        let ip = l["ip"].as_str().unwrap();
        let r = api
            .get(&format!("/v1/leases/{}", ip.replace('/', "%2F")))
            .await;
        assert_eq!(r.status, 200, "{ip}");
        assert_eq!(&r.json(), l, "{ip}");
    }
    let free = [
        "fd00:77::50",
        "fd00:79::%2F56",
        "fd00:77::%2F64",
        "fd00:99::1",
    ];
    for ip in free {
        let r = api.get(&format!("/v1/leases/{ip}")).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (404, "no_lease".into()),
            "{ip}"
        );
    }
    // Inside a delegated prefix is not the prefix.
    let pd = listed.iter().find(|l| l["kind"] == "pd").unwrap()["ip"]
        .as_str()
        .unwrap();
    let inside = pd.trim_end_matches("/56").replace("::", "::1");
    assert_eq!(
        api.get(&format!("/v1/leases/{inside}")).await.status,
        404,
        "{inside}"
    );
    let bad = [
        "banana",
        "fd00:77::1%2F129",
        "fd00:78:0:101::%2F56",
        "fd00%3A%3Ag",
        "%2F56",
    ];
    for ip in bad {
        let r = api.get(&format!("/v1/leases/{ip}")).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (422, "invalid".into()),
            "{ip}"
        );
    }
    api.stop().await;
}
