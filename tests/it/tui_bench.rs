//! Dashboard cost per frame with 10,000 tracked clients, on a `TestBackend`
//! (the frame is built exactly as on a real terminal; only the final
//! escape-sequence write of changed cells is missing). Ignored by default:
//!
//!     cargo test --release --test it tui_bench -- --ignored --nocapture
//!
//! Prints CPU time per frame and the share of one core at 4 Hz; results
//! are recorded in bench/RESULTS-tui.md.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ratatui::backend::TestBackend;
use ratatui::Terminal;
use vpcbox::client::ClientKey;
use vpcbox::stats::{ClientRow, DropReason, Snapshot};
use vpcbox::tui::views::Dashboard;
use vpcbox::tui::UiState;

const CLIENTS: usize = 10_000;
const FRAMES: u64 = 400;

fn snapshot(seq: u64) -> Arc<Snapshot> {
    let mut clients: Vec<ClientRow> = (0..CLIENTS)
        .map(|i| {
            let b = (i as u32).to_be_bytes();
            let client = if i % 5 == 0 {
                ClientKey::Ip(std::net::IpAddr::from([10, b[1], b[2], b[3]]))
            } else {
                ClientKey::Mac([2, 0, b[0], b[1], b[2], b[3]])
            };
            // Rates shift every frame so the sort has real work to do.
            let rate = ((i as u64 * 7919 + seq * 104_729) % 10_000) as f64 / 10.0;
            let drops = (seq * i as u64) % 97;
            ClientRow {
                client: Some(client),
                requests: seq * 10 + i as u64,
                served: seq * 9,
                drops,
                drops_by_reason: vec![(DropReason::RateLimited, drops)],
                pending: (i % 3) as i64,
                rate_1s: rate,
                rate_10s: rate * 0.9,
                served_rate_1s: rate * 0.5,
                error: 0,
            }
        })
        .collect();
    clients.push(ClientRow {
        client: None,
        ..clients[0].clone()
    });
    Arc::new(Snapshot {
        seq,
        taken_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seq / 4),
        uptime: Duration::from_millis(seq * 250),
        dhcp_total: seq * 5_000,
        gateway_requests_total: seq * 100,
        drops: vec![(DropReason::RateLimited, seq * 900)],
        clients,
        ..Snapshot::default()
    })
}

/// CPU time of this process (user + system), from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    let ticks: u64 = f.iter().sum();
    Duration::from_millis(ticks * 10) // USER_HZ = 100 on Linux
}

#[test]
#[ignore = "benchmark; run with --release --ignored --nocapture"]
fn tui_bench_frame_cost_with_10k_clients() {
    // Snapshots are built outside the timed part: the publisher pays for them.
    let snaps: Vec<Arc<Snapshot>> = (1..=FRAMES).map(snapshot).collect();
    let isolated: HashSet<ClientKey> = [ClientKey::Mac([2, 0, 0, 0, 0, 5])].into_iter().collect();
    for filter in ["", "mac:02:00:00"] {
        let mut ui = UiState::new(512 << 20);
        ui.filter = filter.to_owned();
        let mut term = Terminal::new(TestBackend::new(160, 50)).unwrap();
        let (cpu0, wall0) = (cpu_time(), Instant::now());
        for s in &snaps {
            ui.update(s.clone());
            ui.set_isolated(isolated.clone());
            let _ = ui.data_request();
            term.draw(|f| f.render_widget(&Dashboard { ui: &ui }, f.area()))
                .unwrap();
        }
        let (cpu, wall) = (cpu_time() - cpu0, wall0.elapsed());
        let per_frame = cpu.as_secs_f64() / FRAMES as f64;
        println!(
            "{CLIENTS} clients, {FRAMES} frames at 160x50, filter '{filter}': cpu {:.3} ms/frame \
             (wall {:.3} ms/frame); at 4 Hz = {:.2} % of one core",
            per_frame * 1e3,
            wall.as_secs_f64() / FRAMES as f64 * 1e3,
            per_frame * 4.0 * 100.0
        );
        if filter.is_empty() {
            assert_eq!(ui.rows().len(), CLIENTS + 1);
        }
    }
}
