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

use super::data::NoData;
use super::event_loop::{drive, Ended};
use super::tests::{key, screen, snapshot};
use crate::app::Shared;
use crate::config::Config;
use crate::events::EventKind;
use crate::isolation::IsolationSet;
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
