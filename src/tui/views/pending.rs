//! Pending work against its caps: gateway in-flight per route, the DHCP
//! work queue, IPAM commits waiting. A panel beside the Clients view on wide
//! terminals, one line under it on narrow ones.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Widget};

use crate::stats::Snapshot;
use crate::tui::format;

pub struct PendingView<'a> {
    pub snapshot: &'a Snapshot,
}

/// `[████░░░░░░]`-style bar of `used` against `cap`.
fn bar(used: i64, cap: u64, width: usize) -> Span<'static> {
    let ratio = match cap {
        0 => 0.0,
        c => (used.max(0) as f64 / c as f64).clamp(0.0, 1.0),
    };
    let filled = (ratio * width as f64).round() as usize;
    let color = match ratio {
        r if r >= 0.9 => Color::Red,
        r if r >= 0.5 => Color::Yellow,
        _ => Color::Green,
    };
    Span::styled(
        format!("{}{}", "█".repeat(filled), "░".repeat(width - filled)),
        Style::new().fg(color),
    )
}

fn item(name: &str, used: i64, cap: Option<u64>, label_w: usize) -> Line<'static> {
    let mut spans = vec![Span::raw(format!(
        "{:<label_w$} {:>5}",
        format::truncate(name, label_w),
        used
    ))];
    // A cap of 0 means none is configured.
    if let Some(cap) = cap.filter(|c| *c > 0) {
        spans.push(Span::raw(format!("/{:<6} ", format::count(cap))));
        spans.push(bar(used, cap, 8));
    }
    Line::from(spans)
}

impl Widget for &PendingView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let s = self.snapshot;
        let block = Block::bordered().title(" Pending ");
        let inner = block.inner(area);
        block.render(area, buf);
        let w = 14;
        let mut lines = vec![
            item(
                "dhcp queue",
                s.dhcp_queue_depth,
                Some(s.dhcp_queue_capacity),
                w,
            ),
            item("ipam commits", s.ipam_commits_waiting, None, w),
            item("h2 streams", s.gateway_streams, None, w),
            item("connections", s.gateway_connections, None, w),
            Line::from(Span::styled("routes", Style::new().fg(Color::DarkGray))),
        ];
        lines.extend(
            s.routes
                .iter()
                .map(|r| item(&r.name, r.pending, Some(r.max_pending), w)),
        );
        Paragraph::new(lines).render(inner, buf);
    }
}

/// The one-line form: `queue 3/4096 · commits 0 · routes 2/100 0/50`.
pub fn summary(s: &Snapshot) -> Line<'static> {
    let routes: Vec<String> = s
        .routes
        .iter()
        .map(|r| format!("{}/{}", r.pending, format::count(r.max_pending)))
        .collect();
    Line::from(format!(
        " pending: queue {}/{} · commits {} · routes {} ",
        s.dhcp_queue_depth,
        format::count(s.dhcp_queue_capacity),
        s.ipam_commits_waiting,
        if routes.is_empty() {
            "-".to_owned()
        } else {
            routes.join(" ")
        }
    ))
}
