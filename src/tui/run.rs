//! The live dashboard (issue 7): per-client rates, pending work, memory,
//! and one-key isolation of a misbehaving client.
//!
//! - [`state`]: everything drawn, derived from snapshots; [`keys`]: key
//!   handling as a pure function of that state returning [`Command`]s.
//! - [`views`]: pure widgets over the state (`impl Widget for &View`).
//! - [`event_loop`]: ticks, keys, resizes; blocking work off the draw path.
//! - [`terminal`]: raw mode and the alternate screen as a guarded resource.
//! - [`data`]: the rows the Subnets and Leases views show, and the
//!   [`DataSource`] trait the composition root implements over the IPAM.

pub mod data;
pub mod event_loop;
pub mod format;
pub mod history;
pub mod ipam_source;
pub mod keys;
pub mod kinds;
pub mod state;
pub mod terminal;
pub mod views;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use crossterm::event::EventStream;
use tokio::sync::watch;

pub use data::{DataSource, LeaseQuery, LeaseRow, NoData, SubnetRow};
pub use event_loop::Ended;
pub use ipam_source::IpamSource;
pub use keys::{on_key, Command};
pub use state::UiState;

use crate::shared::Shared;
use crate::stats::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
    #[error("drawing: {0}")]
    Draw(String),
    #[error("a panic restored the terminal; dashboard stopped")]
    Panicked,
}

impl TuiError {
    fn draw(e: impl std::fmt::Display) -> Self {
        Self::Draw(e.to_string())
    }
}

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

fn decide(headless: bool, stdout_is_terminal: bool, under_systemd: bool) -> bool {
    !headless && stdout_is_terminal && !under_systemd
}

/// Runs the dashboard on the real terminal until `q` (then cancels
/// `shared.cancel`, so the process drains and exits; never
/// `process::exit`), until the root token is cancelled, or until the
/// terminal fails. The terminal is restored before this returns, on panic,
/// and if the future is dropped.
///
/// An error (no terminal, stdin closed, a write failing) does not stop the
/// appliance: the caller logs it and carries on headless.
pub async fn run(
    shared: Shared,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    data: impl DataSource,
) -> Result<(), TuiError> {
    let mut guard = terminal::TerminalGuard::enter()?;
    let ended = tokio::select! {
        ended = event_loop::drive(
            &shared,
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
            shared.cancel.cancel();
        }
        Ended::Stopped => tracing::info!("dashboard stopped"),
    }
    Ok(())
}
