//! A node started before etcd answers (systemd ordering, an etcd still
//! starting) waits for it instead of exiting: a real `vpcbox run` and a
//! real etcd started after it.
#![cfg(feature = "cluster")]

use std::time::Duration;

use crate::cluster_ops::{allocate, get, node_config, status};
use crate::etcd::Etcd;
use crate::support::{eventually, Running};

/// The node stays up past the 2 s it used to give etcd, unready (`/readyz`
/// 503 `cluster`, `vpcbox_cluster_fenced 1`) and writing nothing (an
/// allocation is refused); once
/// etcd answers it registers, stores its config, becomes ready and binds.
#[test]
fn a_node_started_before_etcd_waits_and_serves_once_registered() {
    let mut etcd = Etcd::start(1);
    etcd.kill(0);
    let dir = tempfile::tempdir().unwrap();
    let (cfg, http) = node_config(dir.path(), &etcd, "a", "/vpcbox/wait", "5s");
    let mut a = Running::start(&cfg);
    let unready = eventually(Duration::from_secs(30), || {
        let r = get(http, "/readyz");
        r.ends_with("503") && r.contains("\"cluster\"")
    });
    assert!(unready, "{}", get(http, "/readyz"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(a.wait(Duration::ZERO), None, "exited: {}", a.stderr());
    let fenced = eventually(Duration::from_secs(10), || {
        get(http, "/metrics").contains("vpcbox_cluster_fenced 1")
    });
    assert!(fenced, "{}", get(http, "/metrics"));
    let refused = allocate(http, "mac:02:00:00:00:03:01");
    assert_ne!(refused["state"], "bound", "{refused}");

    etcd.restart(0);
    let ready = eventually(Duration::from_secs(60), || {
        get(http, "/readyz").ends_with("200")
    });
    assert!(ready, "{}", get(http, "/readyz"));
    let unfenced = eventually(Duration::from_secs(10), || {
        get(http, "/metrics").contains("vpcbox_cluster_fenced 0")
    });
    assert!(unfenced, "{}", get(http, "/metrics"));
    let lease = allocate(http, "mac:02:00:00:00:03:02");
    assert_eq!(lease["state"], "bound", "{lease}");
    let s = status(&cfg);
    assert_eq!(s["nodes"][0]["name"], "a", "{s}");
    assert_eq!(s["subnets"], serde_json::json!(["lab"]), "{s}");
}
