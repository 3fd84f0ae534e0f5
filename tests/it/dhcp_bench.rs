//! Not a test: the DHCP server for `bench/dhcp.sh` until `vpcbox run`
//! serves DHCP (then the script runs the binary instead). Ignored, so it
//! only runs when asked for:
//! `VPCBOX_BENCH_CONFIG=bench.toml it --ignored --exact dhcp_bench::serve`.
//! Serves until SIGTERM/SIGINT, then prints the counters to stderr.

use std::time::Duration;

use vpcbox::stats::{DhcpKind, DhcpOutcome, DropReason};

use crate::dhcp_support::InProcess;

#[test]
#[ignore = "a benchmark server, run by bench/dhcp.sh"]
fn serve() {
    let path = std::env::var("VPCBOX_BENCH_CONFIG").expect("VPCBOX_BENCH_CONFIG");
    let text = std::fs::read_to_string(&path).expect("read config");
    let data = std::env::var("VPCBOX_BENCH_DATA").expect("VPCBOX_BENCH_DATA");
    let mut server = InProcess::start_in(&text, std::path::Path::new(&data), None);
    eprintln!("serving on {:?}", server.addrs);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("signal");
        let mut int = signal(SignalKind::interrupt()).expect("signal");
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    });
    let s = server.shared.stats.clone();
    let packets: Vec<String> = DhcpKind::ALL
        .iter()
        .flat_map(|k| DhcpOutcome::ALL.iter().map(move |o| (k, o)))
        .filter_map(|(k, o)| {
            let n = s.dhcp.packets(*k, *o);
            (n > 0).then(|| format!("{}/{}={n}", k.as_str(), o.as_str()))
        })
        .collect();
    let drops: Vec<String> = DropReason::ALL
        .iter()
        .filter(|r| s.drops(**r) > 0)
        .map(|r| format!("{}={}", r.as_str(), s.drops(*r)))
        .collect();
    let writes = s
        .ipam
        .writes_total
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("packets: {}", packets.join(" "));
    eprintln!("drops: {}", drops.join(" "));
    eprintln!("ipam writes: {writes}");
    let t = std::thread::spawn(move || server.stop());
    let t0 = std::time::Instant::now();
    while !t.is_finished() && t0.elapsed() < Duration::from_millis(800) {
        std::thread::sleep(Duration::from_millis(20));
    }
}
