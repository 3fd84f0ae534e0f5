//! The terminal as a guarded resource (STYLE rule 9): raw mode and the
//! alternate screen are undone when the guard drops, when anything panics
//! (a hook restores the terminal, then runs the previous hook so the panic
//! message lands on a usable screen), and on `q`. Restoring twice is a
//! no-op, so all three paths can fire in any order.

use std::io::{self, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crossterm::cursor::{Hide, Show};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

/// Whether raw mode / the alternate screen are currently on.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

pub type CrosstermTerminal = Terminal<CrosstermBackend<Stdout>>;

/// Owns the terminal while the dashboard runs.
pub struct TerminalGuard {
    terminal: CrosstermTerminal,
}

impl TerminalGuard {
    /// Enters raw mode and the alternate screen; undoes any step that
    /// succeeded if a later one fails.
    pub fn enter() -> io::Result<Self> {
        install_panic_hook();
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let terminal = execute!(io::stdout(), EnterAlternateScreen, Hide)
            .and_then(|()| Terminal::new(CrosstermBackend::new(io::stdout())));
        match terminal {
            Ok(mut terminal) => {
                terminal.clear()?;
                Ok(Self { terminal })
            }
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    pub fn terminal(&mut self) -> &mut CrosstermTerminal {
        &mut self.terminal
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Resolves once something else (the panic hook) has restored the
/// terminal: the dashboard must stop drawing then, or it would scribble
/// over the panic message on the main screen.
pub async fn restored_elsewhere() {
    while ACTIVE.load(Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Leaves the alternate screen, shows the cursor and turns raw mode off, if
/// they are on. Safe to call from a panic hook; errors are ignored there is
/// nobody left to tell.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
        let _ = disable_raw_mode();
    }
}

/// Chains a restoring hook in front of whatever hook is installed. Once per
/// process: the hook does nothing while the dashboard is not running.
fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}
