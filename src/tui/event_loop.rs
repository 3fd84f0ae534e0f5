//! The dashboard's event loop: redraws every `[tui] refresh` from the latest
//! snapshot, reacts to keys and resizes at once, and runs everything that
//! may block (the isolation store, IPAM reads) on blocking threads whose
//! results come back over a channel. It never holds a lock across a draw:
//! the snapshot is an `Arc` cloned out of the watch channel, the isolation
//! set and the event log are copied out before drawing.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::Event as TermEvent;
use futures::{Stream, StreamExt};
use ratatui::backend::Backend;
use ratatui::Terminal;
use tokio::sync::{mpsc, watch};

use super::data::{fetch, DataRequest, DataSource, DataUpdate};
use super::error::TuiError;
use super::handles::Handles;
use super::keys::{on_key, Command};
use super::state::UiState;
use super::views::Dashboard;
use crate::client::ClientKey;
use crate::stats::Snapshot;

/// Data for the Subnets/Leases views and lease lookups is refetched this often.
const DATA_EVERY: Duration = Duration::from_secs(1);
/// Events shown in the Events view.
const EVENTS: usize = 200;

/// Results of work done off the loop.
enum Done {
    Isolation {
        client: ClientKey,
        isolate: bool,
        result: Result<(), String>,
    },
    Data(DataUpdate),
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The operator pressed `q`.
    Quit,
    /// The root token was cancelled (signal) or input ended.
    Stopped,
}

struct Fetcher {
    source: Arc<dyn DataSource>,
    busy: bool,
    last: Option<(Instant, DataRequest)>,
}

impl Fetcher {
    /// Starts a fetch if none is running and the last one is stale or asked
    /// for something else.
    fn poll(&mut self, ui: &UiState, tx: &mpsc::Sender<Done>) {
        let req = ui.data_request();
        let fresh = self
            .last
            .as_ref()
            .is_some_and(|(at, r)| at.elapsed() < DATA_EVERY && *r == req);
        if self.busy || fresh || req.is_empty() {
            return;
        }
        self.busy = true;
        self.last = Some((Instant::now(), req.clone()));
        let (source, tx) = (self.source.clone(), tx.clone());
        tokio::task::spawn_blocking(move || {
            let _ = tx.blocking_send(Done::Data(fetch(&*source, &req)));
        });
    }
}

/// Runs the loop on any backend and input stream (a real terminal, or a
/// `TestBackend` and scripted keys in tests). Cancel-safe: dropping it
/// leaves nothing half-done except fetches whose results are discarded.
pub async fn drive<B, S>(
    handles: impl Into<Handles>,
    snapshots: &watch::Receiver<Arc<Snapshot>>,
    data: Arc<dyn DataSource>,
    terminal: &mut Terminal<B>,
    mut input: S,
) -> Result<Ended, TuiError>
where
    B: Backend,
    S: Stream<Item = io::Result<TermEvent>> + Unpin,
{
    let h = handles.into();
    let mut ui = UiState::new(h.budget);
    let mut tick = tokio::time::interval(h.refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (tx, mut rx) = mpsc::channel::<Done>(16);
    let mut fetcher = Fetcher {
        source: data,
        busy: false,
        last: None,
    };
    let mut events_seen = u64::MAX;
    loop {
        tokio::select! {
            _ = h.cancel.cancelled() => return Ok(Ended::Stopped),
            _ = tick.tick() => {
                refresh(&mut ui, &h, snapshots, &mut events_seen);
                fetcher.poll(&ui, &tx);
            }
            ev = input.next() => match ev {
                None => return Ok(Ended::Stopped),
                Some(Err(e)) => return Err(TuiError::Terminal(e)),
                Some(Ok(TermEvent::Key(key))) => match on_key(&mut ui, key) {
                    Some(Command::Quit) => return Ok(Ended::Quit),
                    Some(Command::Isolate(c)) => spawn_isolation(&h, c, true, &tx),
                    Some(Command::Release(c)) => spawn_isolation(&h, c, false, &tx),
                    None => {}
                },
                Some(Ok(TermEvent::Resize(..))) => {
                    terminal.autoresize().map_err(TuiError::draw)?;
                }
                Some(Ok(_)) => continue,
            },
            Some(done) = rx.recv() => match done {
                Done::Data(u) => {
                    fetcher.busy = false;
                    ui.apply_data(u);
                }
                Done::Isolation { client, isolate, result } => {
                    ui.isolation_done(client, isolate, result);
                    refresh(&mut ui, &h, snapshots, &mut events_seen);
                }
            },
        }
        terminal
            .draw(|f| f.render_widget(&Dashboard { ui: &ui }, f.area()))
            .map_err(TuiError::draw)?;
    }
}

/// Copies in the latest snapshot, isolation set and events.
fn refresh(
    ui: &mut UiState,
    h: &Handles,
    snapshots: &watch::Receiver<Arc<Snapshot>>,
    events_seen: &mut u64,
) {
    // The watch read lock is held only for the Arc clone.
    let snap = snapshots.borrow().clone();
    ui.update(snap);
    let isolated: HashSet<ClientKey> = h
        .isolation
        .entries()
        .into_iter()
        .map(|e| e.client)
        .collect();
    ui.set_isolated(isolated);
    let version = h.events.version();
    if version != *events_seen {
        *events_seen = version;
        ui.events = h.events.recent(EVENTS);
    }
}

/// Isolates or releases on a blocking thread (the store write is durable,
/// so it may fsync) and reports back.
fn spawn_isolation(h: &Handles, client: ClientKey, isolate: bool, tx: &mpsc::Sender<Done>) {
    let (set, tx) = (h.isolation.clone(), tx.clone());
    tokio::task::spawn_blocking(move || {
        let result = if isolate {
            set.isolate(&client, "dashboard")
        } else {
            set.release(&client, "dashboard")
        };
        // The set writes the change to the event log itself.
        let result = result.map(|_| ()).map_err(|e| e.to_string());
        let _ = tx.blocking_send(Done::Isolation {
            client,
            isolate,
            result,
        });
    });
}
