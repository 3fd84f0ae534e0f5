//! Invariants 1 and 2 under `kill -9`: a child process binds leases for
//! many clients concurrently (so group commit batches them) and prints each
//! one once `allocate` returned it as durable; the parent SIGKILLs it at a
//! random moment, reopens the store, and checks that every lease the child
//! reported is still bound to its client and that no address or client is
//! doubly bound. Repeated for many cycles on the same store. Each client
//! also binds a DHCPv6 address (IA_NA) and prefix (IA_PD), held to the same
//! invariants.
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
use vpcbox::ipam::{
    Ia6Key, Ia6Kind, Ia6Op, Ia6Result, Ipam, IpamError, IpamOptions, LeaseFilter, LeaseState,
    PdPoolSpec, PoolRange, Range6, Subnet6Spec, SubnetSpec,
};
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

/// A /64 of addresses and a /32 cut into /64 prefixes: never exhausted here.
fn subnet6() -> Subnet6Spec {
    Subnet6Spec {
        pools: vec![Range6 {
            start: "fd00:88::".parse().unwrap(),
            end: "fd00:88::ffff:ffff:ffff:ffff".parse().unwrap(),
        }],
        pd_pools: vec![PdPoolSpec {
            prefix: "fd00:99::/32".parse().unwrap(),
            delegated_len: 64,
        }],
        preferred_lifetime: Duration::from_secs(12 * 3600),
        valid_lifetime: Duration::from_secs(24 * 3600),
        ..Subnet6Spec::new("crash6", "fd00:88::/64".parse().unwrap())
    }
}

/// A durable v6 binding a child reported: client, kind, address or prefix.
type Bound6 = (ClientKey, Ia6Kind, String);

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
        ipam.apply_config6(&[subnet6()]).unwrap();
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
                    let client = ClientKey::Id(id.clone().into());
                    let lease = ipam
                        .allocate("crash", &client, SystemTime::now())
                        .await
                        .unwrap();
                    report(&format!("LEASE {client} {}", lease.ip));
                    let mut duid = vec![0, 4];
                    duid.extend_from_slice(&id);
                    for kind in [Ia6Kind::Na, Ia6Kind::Pd] {
                        let ia = Ia6Key {
                            client: ClientKey::Duid(duid.clone().into()),
                            kind,
                            iaid: 1,
                        };
                        let r = ipam
                            .ia6("crash6", &ia, Ia6Op::Commit, &[], None, SystemTime::now())
                            .await
                            .unwrap();
                        let Ia6Result::Held(held) = r else {
                            panic!("{r:?}")
                        };
                        let ip = Ipam::key6_text(held[0].prefix);
                        report(&format!("LEASE6 {} {} {ip}", ia.client, kind.as_str()));
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// One line to the parent, flushed at once (it is durable when printed).
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
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

/// Runs one child for a random time, SIGKILLs it, returns its durable
/// leases and v6 bindings.
fn run_child(dir: &Path, cycle: u32, rng: &mut Rng) -> (Vec<(ClientKey, Ipv4Addr)>, Vec<Bound6>) {
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
        let mut got6 = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("LEASE6 ") {
                let mut f = rest.split(' ');
                let (c, kind, ip) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
                let kind = if kind == "na" {
                    Ia6Kind::Na
                } else {
                    Ia6Kind::Pd
                };
                got6.push((c.parse::<ClientKey>().unwrap(), kind, ip.to_owned()));
            } else if let Some(rest) = line.strip_prefix("LEASE ") {
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
        (got, got6)
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

/// Every durable v6 binding is still its IA's; no address or prefix is
/// held twice, no IA holds two.
fn check6(ipam: &Arc<Ipam>, durable: &[Bound6]) {
    let listed = ipam.bindings6(&LeaseFilter::default(), None, usize::MAX, usize::MAX);
    let mut by_ip = HashMap::new();
    let mut by_ia = HashMap::new();
    for b in &listed.bindings {
        assert_eq!(b.state, LeaseState::Bound, "{b:?}");
        if let Some(o) = by_ip.insert(b.ip.clone(), b.client.clone()) {
            panic!("{} held by both {o} and {}", b.ip, b.client);
        }
        if let Some(o) = by_ia.insert((b.client.clone(), b.kind, b.iaid), b.ip.clone()) {
            panic!("{} {:?} holds both {o} and {}", b.client, b.kind, b.ip);
        }
    }
    for (client, kind, ip) in durable {
        let held = by_ia.get(&(client.clone(), *kind, 1));
        assert_eq!(
            held,
            Some(ip),
            "durable v6 binding {client} {kind:?} {ip} lost"
        );
    }
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
    let mut durable6 = Vec::new();
    for cycle in 0..CYCLES {
        let (got, got6) = run_child(dir.path(), cycle, &mut rng);
        durable6.extend(got6);
        let n = got.len();
        for (c, ip) in got {
            assert!(
                durable.insert(c, ip).is_none(),
                "a client was reported twice"
            );
        }
        let ipam = Ipam::open(dir.path(), IpamOptions::default(), Stats::new(4)).unwrap();
        check(&ipam, &durable);
        check6(&ipam, &durable6);
        eprintln!(
            "cycle {cycle}: {n} durable leases, {} in all, {} v6, {:?}",
            durable.len(),
            durable6.len(),
            started.elapsed()
        );
    }
    assert!(
        durable.len() > CYCLES as usize && durable6.len() > CYCLES as usize,
        "the child should bind many leases"
    );
}
