//! Entering the dashboard: whether to show it, and running it on the real
//! terminal until `q`, the root token, or a terminal failure.

use std::sync::Arc;

use crossterm::event::EventStream;
use tokio::sync::watch;

use super::data::DataSource;
use super::error::TuiError;
use super::event_loop::{self, Ended};
use super::handles::Handles;
use super::terminal;
use crate::stats::Snapshot;

/// Whether `vpcbox run` should show the dashboard: stdout is a terminal,
/// `--headless` is absent, and systemd is not running us (it sets
/// `INVOCATION_ID` for services and `JOURNAL_STREAM` when stdout is the
/// journal).
pub fn should_use_tui(headless: bool) -> bool {
    use std::io::IsTerminal;
    decide(
        headless,
        std::io::stdout().is_terminal(),
        std::env::var_os("INVOCATION_ID").is_some() || std::env::var_os("JOURNAL_STREAM").is_some(),
    )
}

pub(super) fn decide(headless: bool, stdout_is_terminal: bool, under_systemd: bool) -> bool {
    !headless && stdout_is_terminal && !under_systemd
}

/// Runs the dashboard on the real terminal until `q` (then cancels the
/// root token, so the process drains and exits; never
/// `process::exit`), until the root token is cancelled, or until the
/// terminal fails. The terminal is restored before this returns, on panic,
/// and if the future is dropped.
///
/// An error (no terminal, stdin closed, a write failing) does not stop the
/// appliance: the caller logs it and carries on headless.
pub async fn run(
    handles: impl Into<Handles>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    data: impl DataSource,
) -> Result<(), TuiError> {
    let handles = handles.into();
    let cancel = handles.cancel.clone();
    let mut guard = terminal::TerminalGuard::enter()?;
    let ended = tokio::select! {
        ended = event_loop::drive(
            handles,
            &snapshots,
            Arc::new(data),
            guard.terminal(),
            EventStream::new(),
        ) => ended,
        // A panic anywhere in the process restored the terminal.
        () = terminal::restored_elsewhere() => Err(TuiError::Panicked),
    };
    // Restore the screen before anything else runs.
    drop(guard);
    match ended? {
        Ended::Quit => {
            tracing::info!("dashboard: quit; stopping");
            cancel.cancel();
        }
        Ended::Stopped => tracing::info!("dashboard stopped"),
    }
    Ok(())
}
