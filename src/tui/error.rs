//! Why the dashboard stopped; the appliance carries on headless.

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
    pub(super) fn draw(e: impl std::fmt::Display) -> Self {
        Self::Draw(e.to_string())
    }
}
