//! The one-line usage gauge shared by the header (RSS) and the Subnets view.

use ratatui::style::{Color, Style};
use ratatui::widgets::LineGauge;

/// `part` of `whole` as a filled line labelled `"{label} ({percent}%) "`:
/// green, yellow from 70 %, red from 90 %.
pub fn usage(part: u64, whole: u64, label: &str) -> LineGauge<'static> {
    let ratio = match whole {
        0 => 0.0,
        w => (part as f64 / w as f64).clamp(0.0, 1.0),
    };
    let fill = match ratio {
        r if r >= 0.9 => Color::Red,
        r if r >= 0.7 => Color::Yellow,
        _ => Color::Green,
    };
    LineGauge::default()
        .ratio(ratio)
        .label(format!("{label} ({:.0}%) ", ratio * 100.0))
        .filled_symbol("█")
        .unfilled_symbol("░")
        .filled_style(Style::new().fg(fill))
        .unfilled_style(Style::new().fg(Color::DarkGray))
}
