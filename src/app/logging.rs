//! Logs: to stderr in headless mode (journald picks them up; `--log-format
//! json` for machines), to `<data>/vpcbox.log` while the dashboard owns the
//! terminal, so nothing ever writes over the screen.

use std::path::Path;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;
use crate::exit::Exit;

/// Installs the global subscriber. A second call (tests that run the app
/// twice in one process) keeps the first subscriber.
pub fn init(format: LogFormat, to_file: Option<&Path>) -> Result<(), Exit> {
    let filter = EnvFilter::try_from_env("VPCBOX_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match to_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Exit::unavailable(format!("log file '{}': {e}", path.display())))?;
            let b = builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file));
            match format {
                LogFormat::Json => b.json().try_init(),
                LogFormat::Text => b.try_init(),
            }
        }
        None => {
            // No colour codes into journald or a log file: only on a terminal.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let b = builder.with_ansi(ansi).with_writer(std::io::stderr);
            match format {
                LogFormat::Json => b.json().try_init(),
                LogFormat::Text => b.try_init(),
            }
        }
    };
    let _ = result;
    Ok(())
}
