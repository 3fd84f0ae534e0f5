//! Views on a `TestBackend` from fixed snapshots (insta snapshots under
//! `src/tui/snapshots/`), key handling as pure functions, and the event
//! loop driven with scripted keys.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::data::{DataCache, Lease6Row, LeaseRow, Subnet6Row, SubnetRow};
use super::keys::{on_key, Command};
use super::state::{ClientState, SortKey, Status, UiState, View};
use super::views::Dashboard;
use crate::client::ClientKey;
use crate::events::{Event, EventKind};
use crate::stats::snapshot::{MemorySnapshot, RouteSnapshot};
use crate::stats::{ClientRow, DropReason, Snapshot};

const MIB: u64 = 1024 * 1024;

pub(super) fn key(s: &str) -> ClientKey {
    s.parse().unwrap()
}

fn client(k: &str, rate_10s: f64, drops: u64, served_rate: f64) -> ClientRow {
    ClientRow {
        client: Some(key(k)),
        requests: (rate_10s * 10.0) as u64,
        served: (served_rate * 10.0) as u64,
        drops,
        drops_by_reason: if drops > 0 {
            vec![(DropReason::RateLimited, drops)]
        } else {
            vec![]
        },
        pending: 0,
        rate_1s: rate_10s,
        rate_10s,
        served_rate_1s: served_rate,
        error: 0,
    }
}

fn others() -> ClientRow {
    ClientRow {
        client: None,
        requests: 1234,
        ..client("mac:00:00:00:00:00:00", 3.0, 0, 3.0)
    }
}

/// A fixed scene at `secs` of uptime: a flooder, a few well-behaved DHCP and
/// API clients, the "others" row.
pub(super) fn snapshot(secs: u64, flood_drops: u64) -> Snapshot {
    let mut clients = vec![client("mac:02:00:00:00:00:01", 2000.0, flood_drops, 10.0)];
    for i in 1..=6 {
        clients.push(client(
            &format!("mac:02:00:00:00:01:{i:02x}"),
            1.0 + i as f64 / 10.0,
            0,
            1.0,
        ));
    }
    for i in 10..=12 {
        clients.push(client(&format!("ip:127.0.0.{i}"), 4.0, 0, 4.0));
    }
    clients.push(others());
    Snapshot {
        seq: secs,
        taken_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs),
        uptime: Duration::from_secs(secs),
        dhcp_total: secs * 2_050,
        dhcp_queue_depth: 12,
        dhcp_queue_capacity: 4096,
        ipam_commits_waiting: 3,
        routes: vec![
            RouteSnapshot {
                name: "/v1/leases".into(),
                pending: 4,
                max_pending: 100,
                codes: vec![(200, 10)],
                total: secs * 40,
            },
            RouteSnapshot {
                name: "/upstream/".into(),
                pending: 48,
                max_pending: 50,
                codes: vec![],
                total: 0,
            },
        ],
        gateway_requests_total: secs * 40,
        gateway_streams: 7,
        gateway_connections: 11,
        gateway_response_buffered: 0,
        gateway_response_budget: 16 * MIB,
        gateway_response_resets: [0; 3],
        memory: MemorySnapshot {
            rss_bytes: 180 * MIB,
            budget_bytes: 512 * MIB,
            heap_allocated: 60 * MIB,
            heap_resident: 90 * MIB,
            heap_retained: 10 * MIB,
            heap_shrinks: 3,
            last_reclaim_bytes: 24 * MIB,
            overload_state: 0,
            by_owner: crate::stats::MemoryByOwner {
                store: 40 * MIB,
                clients: 2 * MIB,
                gateway_buffers: 6 * MIB,
                dhcp_queues: 3 * MIB,
                allocator_retained: 20 * MIB,
                allocator_dirty: 10 * MIB,
                other: 99 * MIB,
                unowned_heap: 9 * MIB,
            },
        },
        drops: vec![
            (DropReason::RateLimited, flood_drops),
            (DropReason::Malformed, secs),
        ],
        isolated_clients: 0,
        clients,
        ..Snapshot::default()
    }
}

/// A state that has seen a few seconds of the scene.
fn scene() -> UiState {
    let mut ui = UiState::new(512 * MIB);
    for s in 0..=5 {
        ui.update(Arc::new(snapshot(100 + s, s * 1_990)));
    }
    ui.data = DataCache {
        subnets: vec![SubnetRow {
            id: "lab".into(),
            cidr: "10.0.0.0/24".into(),
            size: 100,
            used: 37,
            by_state: vec![
                ("bound".into(), 30),
                ("offered".into(), 6),
                ("declined".into(), 1),
            ],
        }],
        leases: (0..3)
            .map(|i| LeaseRow {
                ip: Ipv4Addr::new(10, 0, 0, 100 + i),
                subnet: "lab".into(),
                client: key(&format!("mac:02:00:00:00:01:{:02x}", i + 1)),
                state: "bound".into(),
                expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_003_000),
            })
            .collect(),
        lease_of: [(key("mac:02:00:00:00:01:01"), Ipv4Addr::new(10, 0, 0, 100))]
            .into_iter()
            .collect(),
        ..DataCache::default()
    };
    ui.events = vec![Event {
        at_ms: 1_800_000_100_000,
        kind: EventKind::Isolation,
        message: "isolated mac:02:00:00:00:00:09 (api)".into(),
    }];
    ui
}

pub(super) fn screen(buf: &ratatui::buffer::Buffer) -> String {
    let (w, h) = (buf.area.width, buf.area.height);
    (0..h)
        .map(|y| {
            let line: String = (0..w).map(|x| buf[(x, y)].symbol()).collect();
            line.trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn draw(ui: &UiState, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| f.render_widget(&Dashboard { ui }, f.area()))
        .unwrap();
    screen(t.backend().buffer())
}

fn press(ui: &mut UiState, code: KeyCode) -> Option<Command> {
    on_key(ui, KeyEvent::new(code, KeyModifiers::NONE))
}

fn typed(ui: &mut UiState, text: &str) {
    for c in text.chars() {
        press(ui, KeyCode::Char(c));
    }
}

#[test]
fn clients_view_wide_and_narrow() {
    let ui = scene();
    insta::assert_snapshot!("clients_120x40", draw(&ui, 120, 40));
    insta::assert_snapshot!("clients_80x24", draw(&ui, 80, 24));
    insta::assert_snapshot!("clients_160x48", draw(&ui, 160, 48));
}

#[test]
fn too_small() {
    insta::assert_snapshot!("too_small_50x12", draw(&scene(), 50, 12));
}

#[test]
fn other_views_and_help() {
    let mut ui = scene();
    for (name, view) in [
        ("subnets", View::Subnets),
        ("leases", View::Leases),
        ("events", View::Events),
    ] {
        ui.view = view;
        insta::assert_snapshot!(format!("{name}_80x24"), draw(&ui, 80, 24));
    }
    ui.view = View::Clients;
    press(&mut ui, KeyCode::Char('?'));
    insta::assert_snapshot!("help_120x40", draw(&ui, 120, 40));
}

/// The scene with a DHCPv6 subnet (a /64 address pool: too big to count)
/// and an IA_NA and an IA_PD bound after the v4 leases.
fn scene6() -> UiState {
    let mut ui = scene();
    ui.data.subnets6 = vec![Subnet6Row {
        id: "lab6".into(),
        prefix: "fd00:77::/64".into(),
        bound: 2,
        offered: 1,
        declined: 0,
        addresses: u64::MAX,
        prefixes: 256,
        delegated: 1,
    }];
    let expires_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_003_600);
    ui.data.leases6 = [("fd00:77::100", "na"), ("fd00:78:0:100::/56", "pd")]
        .into_iter()
        .map(|(ip, kind)| Lease6Row {
            ip: ip.into(),
            subnet: "lab6".into(),
            client: key("duid:0003000102000001"),
            kind: kind.into(),
            state: "bound".into(),
            expires_at,
        })
        .collect();
    ui
}

#[test]
fn v6_subnets_and_bindings() {
    let mut ui = scene6();
    ui.view = View::Subnets;
    let subnets = draw(&ui, 80, 24);
    insta::assert_snapshot!("subnets6_80x24", subnets);
    assert!(subnets.contains("lab6 fd00:77::/64  addresses —  pd 1/256 delegated"));
    ui.view = View::Leases;
    let leases = draw(&ui, 100, 30);
    insta::assert_snapshot!("leases6_100x30", leases);
    assert!(leases.contains("Leases (5)"));
    assert!(leases.contains("fd00:78:0:100::/56"));
}

#[test]
fn isolated_flooder_and_status_line() {
    let mut ui = scene();
    let cmd = press(&mut ui, KeyCode::Char('i'));
    let flooder = key("mac:02:00:00:00:00:01");
    assert_eq!(cmd, Some(Command::Isolate(flooder.clone())));
    ui.isolation_done(flooder.clone(), true, Ok(()));
    // Three snapshots after isolation with no new answers (the first may
    // still count packets admitted before it): 0 served since.
    for s in 6..=8 {
        ui.update(Arc::new(snapshot(100 + s, 5 * 1_990)));
    }
    assert_eq!(
        ui.status,
        Some(Status::Isolated {
            client: flooder,
            since: Some(super::state::ServedSince {
                at: Duration::from_secs(107),
                served: 100,
                rate: Some(0.0),
                settled: true,
            }),
        })
    );
    let screen = draw(&ui, 120, 40);
    assert!(
        screen.contains("isolated mac:02:00:00:00:00:01 — 0 packets/s served since"),
        "{screen}"
    );
    insta::assert_snapshot!("isolated_120x40", screen);
}

#[test]
fn selection_follows_the_client_across_resorts() {
    let mut ui = scene();
    press(&mut ui, KeyCode::Down);
    press(&mut ui, KeyCode::Down);
    let chosen = ui.selected_client().unwrap();
    assert_eq!(ui.selected_index(), Some(2));
    // The chosen client becomes the busiest: it moves to the top, and stays selected.
    let mut snap = snapshot(200, 0);
    for c in &mut snap.clients {
        if c.client.as_ref() == Some(&chosen) {
            c.rate_10s = 9_999.0;
        }
    }
    ui.update(Arc::new(snap));
    assert_eq!(ui.selected_index(), Some(0));
    assert_eq!(ui.selected_client(), Some(chosen.clone()));
    // And across a change of sort.
    press(&mut ui, KeyCode::Char('s'));
    assert_eq!(ui.sort, SortKey::Rate1s);
    press(&mut ui, KeyCode::Char('s'));
    press(&mut ui, KeyCode::Char('s'));
    press(&mut ui, KeyCode::Char('s'));
    assert_eq!(ui.sort, SortKey::Client);
    assert_eq!(ui.selected_client(), Some(chosen));
    // The "others" row stays last and is never selected.
    press(&mut ui, KeyCode::End);
    let last = ui.rows().last().copied().unwrap();
    assert!(ui.row(&last).unwrap().client.is_none());
    assert_eq!(ui.selected_index(), Some(ui.rows().len() - 2));
}

#[test]
fn i_isolates_then_releases_the_selected_client() {
    let mut ui = scene();
    press(&mut ui, KeyCode::Down);
    let second = ui.selected_client().unwrap();
    assert_eq!(
        press(&mut ui, KeyCode::Char('i')),
        Some(Command::Isolate(second.clone()))
    );
    ui.isolation_done(second.clone(), true, Ok(()));
    let row = ui.rows()[ui.selected_index().unwrap()];
    assert_eq!(ui.state_of(ui.row(&row).unwrap()), ClientState::Isolated);
    assert_eq!(
        press(&mut ui, KeyCode::Char('i')),
        Some(Command::Release(second.clone()))
    );
    ui.isolation_done(second.clone(), false, Ok(()));
    assert_eq!(ui.status, Some(Status::Released(second)));
    // With no selection, `i` takes the top row: the flooder.
    let mut ui = scene();
    assert_eq!(
        press(&mut ui, KeyCode::Char('i')),
        Some(Command::Isolate(key("mac:02:00:00:00:00:01")))
    );
}

#[test]
fn slash_filters_and_esc_clears() {
    let mut ui = scene();
    press(&mut ui, KeyCode::Char('/'));
    typed(&mut ui, "ip:127");
    // Keys typed into the filter are not commands.
    assert_eq!(press(&mut ui, KeyCode::Char('q')), None);
    press(&mut ui, KeyCode::Backspace);
    press(&mut ui, KeyCode::Enter);
    assert_eq!(ui.filter, "ip:127");
    assert_eq!(ui.rows().len(), 3);
    press(&mut ui, KeyCode::Esc);
    assert_eq!(ui.rows().len(), 11);
    // Filtering by lease address and by state.
    press(&mut ui, KeyCode::Char('/'));
    typed(&mut ui, "10.0.0.100");
    assert_eq!(ui.rows().len(), 1);
    press(&mut ui, KeyCode::Esc);
    press(&mut ui, KeyCode::Char('/'));
    typed(&mut ui, "limited");
    press(&mut ui, KeyCode::Enter);
    assert_eq!(ui.rows().len(), 1, "only the flooder drops");
}

#[test]
fn tab_help_and_quit() {
    let mut ui = scene();
    press(&mut ui, KeyCode::Tab);
    assert_eq!(ui.view, View::Subnets);
    assert_eq!(
        press(&mut ui, KeyCode::Char('i')),
        None,
        "i only in Clients"
    );
    press(&mut ui, KeyCode::BackTab);
    assert_eq!(ui.view, View::Clients);
    press(&mut ui, KeyCode::Char('?'));
    assert!(ui.help);
    press(&mut ui, KeyCode::Char('x'));
    assert!(!ui.help);
    assert_eq!(press(&mut ui, KeyCode::Char('q')), Some(Command::Quit));
    assert_eq!(
        on_key(
            &mut ui,
            KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)
        ),
        Some(Command::Quit)
    );
}

#[test]
fn tui_only_on_a_terminal_outside_systemd() {
    assert!(super::run::decide(false, true, false));
    assert!(!super::run::decide(true, true, false));
    assert!(!super::run::decide(false, false, false));
    assert!(!super::run::decide(false, true, true));
}

/// A random-MAC flood turns the table's rows over every snapshot; the
/// dashboard's drop marks follow the rows and never pile up.
#[test]
fn limited_marks_stay_within_one_snapshot_of_rows() {
    let mut ui = UiState::new(0);
    for seq in 1..200u64 {
        let mut snap = snapshot(seq, seq);
        for i in 0..50u64 {
            let n = seq * 100 + i;
            let mac = format!(
                "mac:02:ff:00:{:02x}:{:02x}:{:02x}",
                n >> 16 & 0xff,
                n >> 8 & 0xff,
                n & 0xff
            );
            snap.clients.insert(0, client(&mac, 5.0, 1, 0.0));
        }
        let rows = snap.clients.len();
        ui.update(Arc::new(snap));
        assert!(
            ui.limited_len() <= rows,
            "{} marks, {rows} rows",
            ui.limited_len()
        );
    }
}

mod event_loop {
    //! The event loop driven on a `TestBackend` with scripted keys: `i` isolates
    //! through the real `IsolationSet` and logs it, `q` ends the loop, a
    //! cancelled root token stops it.
    #![allow(clippy::unwrap_used)]

    use std::io;
    use std::sync::Arc;
    use std::time::Duration;

    use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
    use futures::channel::mpsc;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use tokio::sync::watch;

    use super::super::data::NoData;
    use super::super::event_loop::{drive, Ended};
    use super::{key, screen, snapshot};
    use crate::config::Config;
    use crate::events::EventKind;
    use crate::isolation::IsolationSet;
    use crate::shared::Shared;
    use crate::stats::Stats;

    fn shared() -> Shared {
        Shared::new(
            Arc::new(Config::embedded().unwrap()),
            Stats::new(100),
            IsolationSet::in_memory(),
        )
    }

    fn press(tx: &mpsc::UnboundedSender<io::Result<TermEvent>>, c: char) {
        let ev = KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
        tx.unbounded_send(Ok(TermEvent::Key(ev))).unwrap();
    }

    async fn until(mut f: impl FnMut() -> bool) {
        for _ in 0..200 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not met within 2 s");
    }

    #[tokio::test]
    async fn i_isolates_the_top_client_and_q_quits() {
        let shared = shared();
        let (_snap_tx, snaps) = watch::channel(Arc::new(snapshot(100, 0)));
        let (tx, rx) = mpsc::unbounded();
        let mut term = Terminal::new(TestBackend::new(120, 40)).unwrap();
        let flooder = key("mac:02:00:00:00:00:01");
        let script = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            press(&tx, 'i');
            until(|| shared.isolation.is_isolated(&flooder)).await;
            until(|| !shared.events.recent(1).is_empty()).await;
            // Let the result reach the loop and a frame be drawn.
            tokio::time::sleep(shared.config.tui.refresh * 2).await;
            press(&tx, 'q');
        };
        let (ended, ()) = tokio::join!(
            drive(&shared, &snaps, Arc::new(NoData), &mut term, rx),
            script
        );
        assert_eq!(ended.unwrap(), Ended::Quit);
        let events = shared.events.recent(10);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Isolation);
        assert_eq!(
            events[0].message,
            "isolated mac:02:00:00:00:00:01 (dashboard)"
        );
        let entry = shared.isolation.entry(&flooder).unwrap();
        assert_eq!(entry.source, "dashboard");
        let text = screen(term.backend().buffer());
        assert!(text.contains("isolated 1"), "{text}");
        assert!(text.contains("isolated mac:02:00:00:00:00:01 —"), "{text}");
        let row = text
            .lines()
            .find(|l| l.contains("▶ mac:02:00:00:00:00:01"))
            .unwrap();
        assert!(row.contains("isolated"), "{row}");
    }

    #[tokio::test]
    async fn cancelling_the_root_token_stops_the_loop() {
        let shared = shared();
        let (_snap_tx, snaps) = watch::channel(Arc::new(snapshot(100, 0)));
        let (_tx, rx) = mpsc::unbounded::<io::Result<TermEvent>>();
        let mut term = Terminal::new(TestBackend::new(80, 24)).unwrap();
        let cancel = shared.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cancel.cancel();
        });
        let ended = drive(&shared, &snaps, Arc::new(NoData), &mut term, rx).await;
        assert_eq!(ended.unwrap(), Ended::Stopped);
        assert!(screen(term.backend().buffer()).contains("Clients"));
    }
}
