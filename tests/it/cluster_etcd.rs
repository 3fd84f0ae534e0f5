//! The etcd fixture itself (tests/common/etcd.rs): one and three members on
//! loopback, writes through etcdctl, the leader of three killed and
//! replaced, a killed member restarted on its data.

use std::time::{Duration, Instant};

use crate::etcd::Etcd;

#[test]
fn etcd_one_member_puts_and_gets() {
    let mut e = Etcd::start(1);
    assert_eq!(e.endpoints().len(), 1);
    assert!(e.put("/c20n/k", "v1"), "{}", e.logs());
    assert_eq!(e.get("/c20n/k").as_deref(), Some("v1"));
    assert_eq!(e.get("/c20n/absent"), None);
    assert_eq!(e.wait_leader(Duration::from_secs(5)), 0);
}

#[test]
fn etcd_three_members_survive_the_leader_killed() {
    let mut e = Etcd::start(3);
    assert!(e.put("/c20n/before", "1"), "{}", e.logs());
    let old = e.wait_leader(Duration::from_secs(10));
    e.kill(old);
    assert!(!e.is_running(old));
    // A new leader among the two survivors, and writes commit again.
    let t0 = Instant::now();
    let new = e.wait_leader(Duration::from_secs(10));
    assert_ne!(new, old);
    let mut wrote = false;
    while !wrote && t0.elapsed() < Duration::from_secs(10) {
        wrote = e.put("/c20n/after", "2");
    }
    assert!(wrote, "no write after the leader's death:\n{}", e.logs());
    eprintln!(
        "etcd: new leader and a write {:?} after kill -9",
        t0.elapsed()
    );
    assert_eq!(e.get("/c20n/before").as_deref(), Some("1"));
    // Restarted on its data, the old leader rejoins and serves reads that
    // include the write it missed.
    e.restart(old);
    assert!(e.is_running(old));
    let out = e.etcdctl_at(&[old], &["get", "/c20n/after", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
}

/// Dropped, or unwound by a panicking test, the fixture leaves no member.
#[test]
fn etcd_members_die_with_the_fixture() {
    let gone = |port: u16| {
        crate::support::eventually(Duration::from_secs(5), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        })
    };
    let e = Etcd::start(1);
    let port = e.client_ports()[0];
    drop(e);
    assert!(gone(port), "etcd still listens on {port} after drop");
    let (tx, rx) = std::sync::mpsc::channel();
    let test = std::thread::spawn(move || {
        let e = Etcd::start(1);
        tx.send(e.client_ports()[0]).unwrap();
        panic!("a failing test");
    });
    assert!(test.join().is_err());
    let port = rx.recv().unwrap();
    assert!(gone(port), "etcd still listens on {port} after a panic");
}
