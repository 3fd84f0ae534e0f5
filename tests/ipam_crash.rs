//! Invariants 1 and 2 under `kill -9`: a child process binds leases for
//! many clients concurrently (so group commit batches them) and prints each
//! one once `allocate` returned it as durable; the parent SIGKILLs it at a
//! random moment, reopens the store, and checks that every lease the child
//! reported is still bound to its client and that no address or client is
//! doubly bound. Repeated for many cycles on the same store.
//!
//! The child is this test binary re-executed with `IPAM_CRASH_CHILD` set and
//! filtered to the `crash_child` test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use vpcbox::client::ClientKey;
use vpcbox::ipam::{Ipam, IpamError, IpamOptions, LeaseFilter, LeaseState, PoolRange, SubnetSpec};
use vpcbox::stats::Stats;

const CHILD_ENV: &str = "IPAM_CRASH_CHILD";
const CYCLES: u32 = 20;
const TASKS: u32 = 32;

fn subnet() -> SubnetSpec {
    let pool = PoolRange {
        start: "10.8.0.1".parse().unwrap(),
        end: "10.8.255.254".parse().unwrap(),
    };
    SubnetSpec::new("crash", "10.8.0.0/16".parse().unwrap(), pool)
        .with_lease_time(Duration::from_secs(24 * 3600))
}

/// The child: binds forever until killed. Not a real test when run normally.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (dir, cycle) = spec.split_once('|').unwrap();
    let cycle: u32 = cycle.parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ipam = Ipam::open(Path::new(dir), IpamOptions::default(), Stats::new(16)).unwrap();
        ipam.apply_config(&[subnet()], &[], SystemTime::now())
            .unwrap();
        let tracker = tokio_util::task::TaskTracker::new();
        ipam.spawn(&tracker, tokio_util::sync::CancellationToken::new());
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let ipam = ipam.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0u32.. {
                    let mut id = cycle.to_be_bytes().to_vec();
                    id.extend_from_slice(&t.to_be_bytes());
                    id.extend_from_slice(&n.to_be_bytes());
                    let client = ClientKey::Id(id.into());
                    let lease = ipam
                        .allocate("crash", &client, SystemTime::now())
                        .await
                        .unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "LEASE {client} {}", lease.ip).unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs one child for a random time, SIGKILLs it, returns its durable leases.
fn run_child(dir: &Path, cycle: u32, rng: &mut Rng) -> Vec<(ClientKey, Ipv4Addr)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{cycle}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("LEASE ") {
                let (c, ip) = rest.split_once(' ').unwrap();
                if got.is_empty() {
                    let _ = tx.send(());
                }
                got.push((
                    c.parse::<ClientKey>().unwrap(),
                    ip.parse::<Ipv4Addr>().unwrap(),
                ));
            }
        }
        got
    });
    // Wait for the first durable lease, then kill at a random moment.
    rx.recv_timeout(Duration::from_secs(30))
        .expect("child produced no lease");
    if cycle == 0 {
        let err = Ipam::open(dir, IpamOptions::default(), Stats::new(4)).unwrap_err();
        assert!(matches!(err, IpamError::Locked { .. }), "{err:?}");
    }
    std::thread::sleep(Duration::from_millis(rng.below(250)));
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap()
}

fn check(ipam: &Arc<Ipam>, durable: &HashMap<ClientKey, Ipv4Addr>) {
    for (client, ip) in durable {
        let l = ipam
            .lookup(*ip)
            .unwrap_or_else(|| panic!("durable lease {client} {ip} lost"));
        assert_eq!(
            (&l.client, l.state),
            (client, LeaseState::Bound),
            "lease on {ip}"
        );
        assert_eq!(ipam.lease_of(client).map(|l| l.ip), Some(*ip));
    }
    let mut by_client = HashMap::new();
    for l in ipam.leases(&LeaseFilter {
        state: Some(LeaseState::Bound),
        ..LeaseFilter::default()
    }) {
        if let Some(other) = by_client.insert(l.client.clone(), l.ip) {
            panic!("{} holds both {other} and {}", l.client, l.ip);
        }
    }
}

#[test]
fn kill_9_never_loses_a_durable_lease() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut durable = HashMap::new();
    for cycle in 0..CYCLES {
        let got = run_child(dir.path(), cycle, &mut rng);
        let n = got.len();
        for (c, ip) in got {
            assert!(
                durable.insert(c, ip).is_none(),
                "a client was reported twice"
            );
        }
        let ipam = Ipam::open(dir.path(), IpamOptions::default(), Stats::new(4)).unwrap();
        check(&ipam, &durable);
        eprintln!(
            "cycle {cycle}: {n} durable leases, {} in all, {:?}",
            durable.len(),
            started.elapsed()
        );
    }
    assert!(
        durable.len() > CYCLES as usize,
        "the child should bind many leases"
    );
}
