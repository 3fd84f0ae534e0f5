//! The IPAM API in process: every endpoint's happy path and error paths,
//! against a real sled-backed `Ipam`.

use serde_json::{json, Value};

use crate::api_support::{mac, subnet_json, Api, TOKEN};

#[tokio::test]
async fn subnets_crud_and_errors() {
    let api = Api::new();
    let r = api.lab(100).await;
    let v = r.json();
    assert_eq!(v["id"], "lab");
    assert_eq!(v["cidr"], "10.0.0.0/24");
    assert_eq!(v["usage"]["size"], 100);
    assert_eq!(v["usage"]["free"], 100);

    let list = api.get("/v1/subnets").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["subnets"].as_array().unwrap().len(), 1);
    assert_eq!(api.get("/v1/subnets/lab").await.json()["lease_time"], "1h");
    assert_eq!(api.get("/v1/subnets/lab/usage").await.json()["size"], 100);

    // Conflicts: same id, overlapping CIDR.
    let dup = subnet_json("lab", "10.9.0.0/24", "10.9.0.10", "10.9.0.20");
    let r = api.admin("POST", "/v1/subnets", &dup).await;
    assert_eq!((r.status.as_u16(), r.code()), (409, "subnet_exists".into()));
    let over = subnet_json("lab2", "10.0.0.0/16", "10.0.1.10", "10.0.1.20");
    let r = api.admin("POST", "/v1/subnets", &over).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (409, "subnet_overlap".into())
    );

    // Bad input: not json, wrong types, missing fields, invalid values.
    for (body, status, code) in [
        ("{\"id\":", 400, "bad_json"),
        ("", 400, "bad_json"),
        ("{\"id\": 5}", 422, "invalid"),
        ("[1,2]", 422, "invalid"),
        ("{\"id\": \"x\"}", 422, "invalid"),
        (
            &*subnet_json("x", "10.1.0.0/33", "10.1.0.1", "10.1.0.2"),
            422,
            "invalid",
        ),
        (
            &*subnet_json("x", "10.1.0.1/24", "10.1.0.5", "10.1.0.9"),
            422,
            "invalid",
        ),
        (
            &*subnet_json("x", "10.1.0.0/24", "10.2.0.5", "10.2.0.9"),
            422,
            "invalid",
        ),
        (
            &*subnet_json("", "10.1.0.0/24", "10.1.0.5", "10.1.0.9"),
            422,
            "invalid",
        ),
    ] {
        let r = api.admin("POST", "/v1/subnets", body).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (status, code.into()),
            "{body}"
        );
    }
    let r = api.admin("POST", "/v1/subnets", "{\"id\": 5}").await;
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("id:"));

    // No partial writes: still exactly one subnet, unchanged.
    let after = api.get("/v1/subnets").await.json();
    assert_eq!(after, list.json());

    let r = api.get("/v1/subnets/nope").await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (404, "unknown_subnet".into())
    );
    let r = api.admin("DELETE", "/v1/subnets/nope", "").await;
    assert_eq!(r.status, 404);
    let r = api.admin("DELETE", "/v1/subnets/lab", "").await;
    assert_eq!(r.status, 204);
    assert!(r.raw.is_empty());
    assert_eq!(api.get("/v1/subnets/lab").await.status, 404);
    api.stop().await;
}

#[tokio::test]
async fn allocations_are_idempotent_and_exhaust_cleanly() {
    let api = Api::new();
    api.lab(2).await;
    let body = |c: &str| json!({ "client": c }).to_string();
    let path = "/v1/subnets/lab/allocations";

    let a = api.admin("POST", path, &body(&mac(1))).await;
    assert_eq!(a.status, 201);
    let lease = a.json();
    assert_eq!(lease["state"], "bound");
    assert_eq!(lease["subnet"], "lab");
    assert_eq!(lease["client"], mac(1));
    let again = api.admin("POST", path, &body(&mac(1))).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["ip"], lease["ip"]);

    assert_eq!(api.admin("POST", path, &body(&mac(2))).await.status, 201);
    let before = api.get("/v1/leases").await.json();
    let r = api.admin("POST", path, &body(&mac(3))).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (409, "pool_exhausted".into())
    );
    assert_eq!(
        api.get("/v1/leases").await.json(),
        before,
        "exhaustion wrote nothing"
    );
    assert_eq!(api.get("/v1/subnets/lab/usage").await.json()["free"], 0);

    for (p, b, status, code) in [
        (
            "/v1/subnets/nope/allocations",
            body(&mac(4)),
            404,
            "unknown_subnet",
        ),
        (path, body("mac:zz"), 422, "invalid"),
        (path, "{\"client\": 7}".into(), 422, "invalid"),
        (path, "{}".into(), 422, "invalid"),
        (path, "not json".into(), 400, "bad_json"),
    ] {
        let r = api.admin("POST", p, &b).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (status, code.into()),
            "{p} {b}"
        );
    }

    // One lease, then release it.
    let ip = lease["ip"].as_str().unwrap().to_owned();
    let one = api.get(&format!("/v1/leases/{ip}")).await;
    assert_eq!(
        (one.status.as_u16(), one.json()["client"].clone()),
        (200, Value::from(mac(1)))
    );
    let del = format!("{path}/{ip}");
    assert_eq!(api.call("DELETE", &del, None, "").await.status, 401);
    assert_eq!(api.admin("DELETE", &del, "").await.status, 204);
    let r = api.admin("DELETE", &del, "").await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "no_lease".into()));
    assert_eq!(
        api.get(&format!("/v1/leases/{ip}")).await.json()["state"],
        "released"
    );
    let r = api.admin("DELETE", &format!("{path}/10.0.0.5x"), "").await;
    assert_eq!((r.status.as_u16(), r.code()), (422, "invalid".into()));
    let r = api
        .admin("DELETE", "/v1/subnets/nope/allocations/10.0.0.100", "")
        .await;
    assert_eq!(r.status, 404);
    // The freed address goes to the next client.
    assert_eq!(api.admin("POST", path, &body(&mac(3))).await.status, 201);
    api.stop().await;
}

#[tokio::test]
async fn lease_queries_filter_and_validate() {
    let api = Api::new();
    api.lab(10).await;
    for n in 1..=5 {
        let b = json!({ "client": mac(n) }).to_string();
        assert_eq!(
            api.admin("POST", "/v1/subnets/lab/allocations", &b)
                .await
                .status,
            201
        );
    }
    let all = api.get("/v1/leases").await.json();
    assert_eq!(all["leases"].as_array().unwrap().len(), 5);
    assert_eq!(all["truncated"], false);
    let two = api.get("/v1/leases?limit=2").await.json();
    assert_eq!(
        (
            two["leases"].as_array().unwrap().len(),
            two["truncated"].clone()
        ),
        (2, Value::Bool(true))
    );
    let by_client = api
        .get(&format!("/v1/leases?client={}", mac(3).replace(':', "%3A")))
        .await
        .json();
    assert_eq!(by_client["leases"][0]["client"], mac(3));
    let bound = api.get("/v1/leases?state=bound&subnet=lab").await.json();
    assert_eq!(bound["leases"].as_array().unwrap().len(), 5);
    assert_eq!(
        api.get("/v1/leases?state=released").await.json()["leases"],
        json!([])
    );

    for (q, status, code) in [
        ("subnet=nope", 404, "unknown_subnet"),
        ("state=sleepy", 422, "invalid"),
        ("client=bob", 422, "invalid"),
        ("limit=0", 422, "invalid"),
        ("limit=-1", 422, "invalid"),
        ("limit=99999999", 422, "invalid"),
        ("limit=%zz", 422, "invalid"),
    ] {
        let r = api.get(&format!("/v1/leases?{q}")).await;
        assert_eq!((r.status.as_u16(), r.code()), (status, code.into()), "{q}");
    }
    let r = api.get("/v1/leases/10.0.0.250").await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "no_lease".into()));
    let r = api.get("/v1/leases/banana").await;
    assert_eq!((r.status.as_u16(), r.code()), (422, "invalid".into()));
    api.stop().await;
}

#[tokio::test]
async fn reservations_add_list_delete() {
    let api = Api::new();
    api.lab(10).await;
    let res = |c: &str, ip: &str| json!({ "subnet": "lab", "client": c, "ip": ip }).to_string();
    let r = api
        .admin("POST", "/v1/reservations", &res(&mac(1), "10.0.0.10"))
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["ip"], "10.0.0.10");
    assert_eq!(
        api.admin("POST", "/v1/reservations", &res(&mac(1), "10.0.0.10"))
            .await
            .status,
        200
    );

    let before = api.get("/v1/reservations").await.json();
    for (b, status, code) in [
        (res(&mac(2), "10.0.0.10"), 409, "reservation_conflict"),
        (res(&mac(2), "10.0.0.0"), 422, "not_in_subnet"),
        (res(&mac(2), "10.9.0.1"), 422, "not_in_subnet"),
        (
            json!({"subnet": "nope", "client": mac(2), "ip": "10.0.0.11"}).to_string(),
            404,
            "unknown_subnet",
        ),
        (
            json!({"subnet": "lab", "client": mac(2), "ip": 5}).to_string(),
            422,
            "invalid",
        ),
        ("{".into(), 400, "bad_json"),
    ] {
        let r = api.admin("POST", "/v1/reservations", &b).await;
        assert_eq!((r.status.as_u16(), r.code()), (status, code.into()), "{b}");
    }
    assert_eq!(
        api.get("/v1/reservations").await.json(),
        before,
        "no partial writes"
    );
    assert_eq!(before["reservations"].as_array().unwrap().len(), 1);
    assert_eq!(api.get("/v1/reservations?subnet=lab").await.json(), before);

    // The reserved client gets its address.
    let a = api
        .admin(
            "POST",
            "/v1/subnets/lab/allocations",
            &json!({"client": mac(1)}).to_string(),
        )
        .await;
    assert_eq!(a.json()["ip"], "10.0.0.10");

    assert_eq!(
        api.call("DELETE", "/v1/reservations?subnet=lab", Some(TOKEN), "")
            .await
            .status,
        422
    );
    let q = format!("/v1/reservations?subnet=lab&client={}", mac(1));
    assert_eq!(api.call("DELETE", &q, None, "").await.status, 401);
    assert_eq!(api.admin("DELETE", &q, "").await.status, 204);
    let r = api.admin("DELETE", &q, "").await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (404, "unknown_reservation".into())
    );

    // Delete by JSON body.
    api.admin("POST", "/v1/reservations", &res(&mac(5), "10.0.0.15"))
        .await;
    let key = json!({"subnet": "lab", "client": mac(5)}).to_string();
    assert_eq!(
        api.admin("DELETE", "/v1/reservations", &key).await.status,
        204
    );
    assert_eq!(
        api.get("/v1/reservations").await.json()["reservations"],
        json!([])
    );
    api.stop().await;
}
