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

/// A v6 subnet body as the API takes it: `[[subnet6]]`'s fields, pools as
/// `{start, end}`, `family` 6 (or left out: detected from `prefix`).
fn subnet6_json(id: &str, prefix: &str, start: &str, end: &str) -> serde_json::Value {
    serde_json::json!({
        "family": 6, "id": id, "prefix": prefix,
        "pools": [{"start": start, "end": end}],
        "pd_pools": [{"prefix": "fd00:98::/48", "delegated_len": 56}],
        "dns": ["fd00:97::1"], "preferred_lifetime": "30m", "valid_lifetime": "1h",
        "relays": ["fd00:97::2"],
    })
}

/// `POST /v1/subnets` with a v6 body: 201 with the subnet as listed
/// (family 6), in the DHCPv6 server's list at once, `GET` and `/usage`
/// find it; every bad body is refused with its status and nothing
/// written; `DELETE` removes it.
#[tokio::test]
async fn v6_subnets_are_created_checked_and_deleted() {
    let api = Api::new();
    api.lab(4).await;
    let body = subnet6_json("api6", "fd00:97::/64", "fd00:97::10", "fd00:97::13");
    let r = api.admin("POST", "/v1/subnets", &body.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.json());
    let v = r.json();
    assert_eq!(
        (v["family"].as_u64(), v["id"].as_str()),
        (Some(6), Some("api6"))
    );
    assert_eq!(v["usage"]["size"], 4 + 256);
    assert_eq!(v["relays"][0], "fd00:97::2");
    assert_eq!(api.get("/v1/subnets/api6").await.json(), v);
    assert_eq!(api.get("/v1/subnets/api6/usage").await.json()["size"], 260);
    let listed = api.get("/v1/subnets").await.json();
    assert_eq!(listed["subnets"].as_array().unwrap().len(), 2, "{listed}");
    let specs = api.ctx.ipam.subnets6_shared();
    assert_eq!(
        specs[0].dns,
        ["fd00:97::1".parse::<std::net::Ipv6Addr>().unwrap()]
    );
    // `family` may be left out: a `prefix` and no `cidr` is v6.
    let mut bare = subnet6_json("bare6", "fd00:96::/64", "fd00:96::10", "fd00:96::20");
    bare.as_object_mut().unwrap().remove("family");
    bare["pd_pools"] = serde_json::json!([]);
    let r = api.admin("POST", "/v1/subnets", &bare.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.json());
    let before = api.get("/v1/subnets").await.json();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = subnet6_json("x6", "fd00:95::/64", "fd00:95::10", "fd00:95::20");
        b["pd_pools"][0]["prefix"] = "fd00:94::/48".into();
        f(&mut b);
        b.to_string()
    };
    let cases = [
        (with(&|b| b["id"] = "api6".into()), 409, "subnet_exists"),
        (with(&|b| b["id"] = "lab".into()), 409, "subnet_exists"),
        (
            with(&|b| {
                b["prefix"] = "fd00:97::/48".into();
                b["pools"] = serde_json::json!([]);
            }),
            409,
            "subnet_overlap",
        ),
        (
            with(&|b| {
                b["pd_pools"] = serde_json::json!([{"prefix": "fd00:97::/56", "delegated_len": 64}])
            }),
            409,
            "subnet_overlap",
        ),
        (
            with(&|b| b["pools"][0]["end"] = "fd00:99::1".into()),
            422,
            "invalid",
        ),
        (
            with(&|b| b["pd_pools"][0]["delegated_len"] = 40.into()),
            422,
            "invalid",
        ),
        (
            with(&|b| b["pd_pools"][0]["delegated_len"] = 65.into()),
            422,
            "invalid",
        ),
        (
            with(&|b| b["prefix"] = "fd00:95::1/64".into()),
            422,
            "invalid",
        ),
        (
            with(&|b| b["prefix"] = "10.0.0.0/24".into()),
            422,
            "invalid",
        ),
        (
            with(&|b| b["valid_lifetime"] = "10m".into()),
            422,
            "invalid",
        ),
        (with(&|b| b["id"] = "a/b".into()), 422, "invalid"),
        (with(&|b| b["family"] = 5.into()), 422, "invalid"),
        (
            with(&|b| b["dns"] = serde_json::json!(["x"])),
            422,
            "invalid",
        ),
    ];
    for (body, status, code) in cases {
        let r = api.admin("POST", "/v1/subnets", &body).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (status, code.into()),
            "{body}"
        );
    }
    let r = api
        .admin(
            "POST",
            "/v1/subnets",
            &with(&|b| b["pools"][0]["end"] = "fd00:99::1".into()),
        )
        .await;
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("pools[0]: 'fd00:95::10-fd00:99::1' must lie inside fd00:95::/64"),
        "{msg}"
    );
    assert_eq!(
        api.get("/v1/subnets").await.json(),
        before,
        "nothing written"
    );
    assert_eq!(
        api.call("POST", "/v1/subnets", None, &with(&|_| {}))
            .await
            .status,
        401
    );
    // DELETE: 204, gone from the API and from the DHCPv6 server's list.
    assert_eq!(
        api.admin("DELETE", "/v1/subnets/bare6", "").await.status,
        204
    );
    assert_eq!(api.get("/v1/subnets/bare6").await.status, 404);
    assert!(api
        .ctx
        .ipam
        .subnets6_shared()
        .iter()
        .all(|s| s.id != "bare6"));
    assert_eq!(
        api.admin("DELETE", "/v1/subnets/bare6", "").await.status,
        404
    );
    api.stop().await;
}

/// Allocations in a v6 subnet: the client key's IA_NA 0, 201 then 200
/// with the same address (idempotent), listed as a binding (kind na,
/// iaid 0); 409 once the pool is empty; DELETE of the address frees it
/// (204, then 404); a subnet deleted with bindings takes them with it.
#[tokio::test]
async fn v6_allocations_are_idempotent_durable_and_released() {
    let api = Api::new();
    let body = subnet6_json("api6", "fd00:97::/64", "fd00:97::10", "fd00:97::11");
    assert_eq!(
        api.admin("POST", "/v1/subnets", &body.to_string())
            .await
            .status,
        201
    );
    let path = "/v1/subnets/api6/allocations";
    let alloc = |c: String| serde_json::json!({ "client": c }).to_string();
    let a = api.admin("POST", path, &alloc(duid(1))).await;
    assert_eq!(a.status, 201, "{}", a.json());
    let lease = a.json();
    assert_eq!(
        (
            lease["kind"].as_str(),
            lease["iaid"].as_u64(),
            lease["state"].as_str()
        ),
        (Some("na"), Some(0), Some("bound"))
    );
    let ip = lease["ip"].as_str().unwrap().to_owned();
    assert!(ip == "fd00:97::10" || ip == "fd00:97::11", "{ip}");
    let again = api.admin("POST", path, &alloc(duid(1))).await;
    assert_eq!(
        (again.status.as_u16(), again.json()["ip"].as_str()),
        (200, Some(&*ip))
    );
    assert_eq!(api.admin("POST", path, &alloc(mac(2))).await.status, 201);
    let r = api.admin("POST", path, &alloc(duid(3))).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (409, "pool_exhausted".into())
    );
    let listed = api.get(&format!("/v1/leases/{ip}")).await;
    assert_eq!(listed.json(), lease);
    // Release by address: 204; again, or an address nobody holds: 404.
    let one = format!("{path}/{ip}");
    assert_eq!(api.call("DELETE", &one, None, "").await.status, 401);
    assert_eq!(api.admin("DELETE", &one, "").await.status, 204);
    let r = api.admin("DELETE", &one, "").await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "no_lease".into()));
    let r = api.admin("DELETE", &format!("{path}/10.0.0.5"), "").await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "no_lease".into()));
    let r = api.admin("DELETE", &format!("{path}/fd00:97::x"), "").await;
    assert_eq!((r.status.as_u16(), r.code()), (422, "invalid".into()));
    assert_eq!(api.admin("POST", path, &alloc(duid(3))).await.status, 201);
    // The subnet goes with its bindings (as a v4 subnet with its leases).
    assert_eq!(
        api.admin("DELETE", "/v1/subnets/api6", "").await.status,
        204
    );
    let left = api.get("/v1/leases").await.json();
    assert_eq!(left["leases"].as_array().unwrap().len(), 0, "{left}");
    assert_eq!(api.admin("POST", path, &alloc(duid(1))).await.status, 404);
    assert_eq!(
        api.admin("POST", "/v1/subnets", &body.to_string())
            .await
            .status,
        201
    );
    assert_eq!(api.ctx.ipam.usage6()[0].bound, 0);
    api.stop().await;
}
