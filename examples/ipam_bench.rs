//! IPAM benchmark (run through `bench/ipam.sh`, release build).
//!
//! - `binds DIR CONCURRENCY SECONDS`: durable allocations/s from
//!   CONCURRENCY tasks, each allocating for fresh clients; mean batch size.
//! - `populate DIR N`: writes N bound leases (through `import`).
//! - `open DIR`: open time and RSS of a process that only opens the store.
//! - `sled DIR`: sled alone opening and scanning the same store, to show
//!   how much of the RSS is sled's.
//!
//! - `etcd-binds ENDPOINT CONCURRENCY SECONDS BLOCK_SIZE` (feature
//!   `cluster`): the same binds on one cluster node over etcd, with etcd
//!   txns per bind (its revision counts them).
//!
//! `CACHE_MIB` sets the sled cache (default 32).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use vpcbox::client::ClientKey;
use vpcbox::ipam::{Dump, Ipam, IpamOptions, Lease, LeaseState, PoolRange, SubnetSpec};
use vpcbox::stats::Stats;

fn subnet() -> SubnetSpec {
    let pool = PoolRange {
        start: "10.0.0.1".parse().unwrap(),
        end: "10.15.255.254".parse().unwrap(),
    };
    SubnetSpec::new("bench", "10.0.0.0/12".parse().unwrap(), pool)
        .with_lease_time(Duration::from_secs(7 * 24 * 3600))
}

fn client(n: u64) -> ClientKey {
    let b = n.to_be_bytes();
    ClientKey::Mac([2, b[3], b[4], b[5], b[6], b[7]])
}

/// sled cache in MiB: `CACHE_MIB` (default 32, the shipped config's).
fn cache_mib() -> u64 {
    std::env::var("CACHE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

/// `[storage] commit_interval` in ms: `COMMIT_INTERVAL_MS` (default: the shipped one).
fn commit_interval() -> Duration {
    std::env::var("COMMIT_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(
            IpamOptions::default().commit_interval,
            Duration::from_millis,
        )
}

fn opts() -> IpamOptions {
    IpamOptions {
        cache_capacity: cache_mib() << 20,
        commit_interval: commit_interval(),
        ..IpamOptions::default()
    }
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn binds(dir: &Path, conc: u64, secs: u64) {
    let stats = Stats::new(16);
    let ipam = Ipam::open(dir, opts(), stats.clone()).unwrap();
    ipam.apply_config(&[subnet()], &[], SystemTime::now())
        .unwrap();
    run_binds(ipam, stats, conc, secs).await;
}

/// One node on etcd at `endpoint` (a fresh prefix), binding as `binds` does.
#[cfg(feature = "cluster")]
async fn etcd_binds(endpoint: &str, conc: u64, secs: u64, block_size: u32) {
    use vpcbox::config::ClusterConfig;
    let stats = Stats::new(16);
    let config = ClusterConfig {
        node: "bench".into(),
        etcd: vec![endpoint.into()],
        prefix: format!("/bench/{}", std::process::id()),
        lease_ttl: Duration::from_secs(10),
        block_size,
    };
    let (cluster, store) =
        tokio::task::block_in_place(|| vpcbox::cluster::Cluster::join(&config, stats.clone()))
            .unwrap();
    let ipam = Ipam::with_store("etcd".into(), store, opts(), stats.clone()).unwrap();
    tokio::task::block_in_place(|| ipam.apply_config(&[subnet()], &[], SystemTime::now())).unwrap();
    cluster.start(&ipam, None, None);
    // Let the first block be claimed before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cluster.etcd.revision().unwrap();
    let total = run_binds(ipam, stats, conc, secs).await;
    let txns = cluster.etcd.revision().unwrap() - before;
    println!(
        "etcd block_size={block_size} txns={txns} txns_per_bind={:.3}",
        txns as f64 / total.max(1) as f64
    );
    tokio::task::block_in_place(|| cluster.leave());
}

/// `conc` tasks allocating for fresh clients for `secs`; prints the rates
/// and returns the binds made.
async fn run_binds(ipam: Arc<Ipam>, stats: Arc<Stats>, conc: u64, secs: u64) -> u64 {
    let tracker = tokio_util::task::TaskTracker::new();
    let cancel = tokio_util::sync::CancellationToken::new();
    ipam.spawn(&tracker, cancel.clone());
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..conc)
        .map(|_| {
            let (ipam, next) = (ipam.clone(), next.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let c = client(next.fetch_add(1, Relaxed));
                    // On etcd a node may wait a moment for its next block.
                    while ipam.allocate("bench", &c, SystemTime::now()).await.is_err() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let b = stats.ipam.batch_size.snapshot();
    let c = stats.ipam.commit_seconds.snapshot();
    println!(
        "binds concurrency={conc} total={total} secs={elapsed:.2} binds_per_sec={:.0} mean_batch={:.1} mean_commit_ms={:.2} flushes={}",
        total as f64 / elapsed,
        b.sum / b.count.max(1) as f64,
        1e3 * c.sum / c.count.max(1) as f64,
        b.count
    );
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    total
}

async fn populate(dir: &Path, n: u64) {
    let ipam = Ipam::open(dir, opts(), Stats::new(16)).unwrap();
    let now = SystemTime::now();
    let leases = (0..n)
        .map(|i| Lease {
            ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 1)) + i as u32),
            subnet: "bench".into(),
            client: client(i),
            state: LeaseState::Bound,
            expires_at: now + Duration::from_secs(7 * 24 * 3600),
            updated_at: now,
            hostname: None,
        })
        .collect();
    let dump = Dump {
        schema: vpcbox::ipam::SCHEMA,
        subnets: vec![subnet()],
        reservations: vec![],
        leases,
        isolations: vec![],
        subnets6: vec![],
        leases6: vec![],
        server_duid: None,
    };
    let t = Instant::now();
    ipam.import(dump, true).await.unwrap();
    println!(
        "populate leases={n} secs={:.2} size_on_disk={}",
        t.elapsed().as_secs_f64(),
        ipam.size_on_disk()
    );
}

fn open(dir: &Path) {
    let before = rss_kib("VmRSS:");
    let t = Instant::now();
    let ipam = Ipam::open(dir, opts(), Stats::new(16)).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let usage = ipam.utilisation();
    let bound = usage
        .iter()
        .flat_map(|u| &u.by_state)
        .filter(|(s, _)| *s == LeaseState::Bound)
        .map(|(_, n)| n)
        .sum::<u64>();
    // A lookup and a lease_of, to show the index answers.
    assert!(ipam.lease_of(&client(0)).is_some() || bound == 0);
    println!(
        "open cache_mib={} bound={bound} secs={secs:.2} rss_before_kib={before} rss_kib={} peak_rss_kib={}",
        cache_mib(),
        rss_kib("VmRSS:"),
        rss_kib("VmHWM:")
    );
}

/// Returns jemalloc's dirty pages to the OS, as vpcbox's memory governor
/// does (`src/memory/`); RSS after it is what the store really holds.
fn purge() {
    let call = |name: &std::ffi::CStr| {
        // SAFETY: "void" mallctl operations: no input, no output.
        #[allow(unsafe_code)]
        unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        }
    };
    call(c"thread.tcache.flush");
    call(c"arena.4096.purge");
}

/// Where open-time memory goes: sled alone, then a scan of the leases tree.
fn sled_only(dir: &Path) {
    let t = Instant::now();
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(cache_mib() << 20)
        .open()
        .unwrap();
    let leases = db.open_tree("leases").unwrap();
    println!(
        "sled open secs={:.2} rss_kib={}",
        t.elapsed().as_secs_f64(),
        rss_kib("VmRSS:")
    );
    let n = leases.iter().count();
    println!(
        "sled scan n={n} secs={:.2} rss_kib={}",
        t.elapsed().as_secs_f64(),
        rss_kib("VmRSS:")
    );
    let clients = db.open_tree("clients").unwrap();
    let n = clients.iter().count();
    println!(
        "sled scan2 n={n} secs={:.2} rss_kib={} peak={}",
        t.elapsed().as_secs_f64(),
        rss_kib("VmRSS:"),
        rss_kib("VmHWM:")
    );
    purge();
    println!("sled purged rss_kib={}", rss_kib("VmRSS:"));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let dir = Path::new(args.get(2).map(String::as_str).unwrap_or("bench-data"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match arg(1).as_str() {
        "binds" => rt.block_on(binds(
            dir,
            arg(3).parse().unwrap(),
            arg(4).parse().unwrap_or(5),
        )),
        "populate" => rt.block_on(populate(dir, arg(3).parse().unwrap())),
        "open" => open(dir),
        "sled" => sled_only(dir),
        #[cfg(feature = "cluster")]
        "etcd-binds" => rt.block_on(etcd_binds(
            &arg(2),
            arg(3).parse().unwrap(),
            arg(4).parse().unwrap_or(5),
            arg(5).parse().unwrap_or(256),
        )),
        _ => eprintln!("usage: ipam_bench binds DIR CONC SECS | populate DIR N | open DIR"),
    }
}
