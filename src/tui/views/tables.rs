//! The Subnets view (pool utilisation, leases by state) and the Leases view
//! (a searchable lease table), over the plain rows of `tui::data`.

use std::time::SystemTime;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, Widget};

use crate::tui::data::{LeaseRow, SubnetRow};
use crate::tui::format;

pub struct SubnetsView<'a> {
    pub subnets: &'a [SubnetRow],
}

impl Widget for &SubnetsView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let block = Block::bordered().title(format!(" Subnets ({}) ", self.subnets.len()));
        let inner = block.inner(area);
        block.render(area, buf);
        if self.subnets.is_empty() {
            Paragraph::new("no subnet data (IPAM not attached yet)").render(inner, buf);
            return;
        }
        for (i, s) in self.subnets.iter().enumerate() {
            let y = inner.y + (i as u16) * 3;
            if y + 2 > inner.bottom() {
                break;
            }
            let label = format!("{} {}  {}/{} used", s.id, s.cidr, s.used, s.size);
            super::gauge::usage(s.used, s.size, &label)
                .render(Rect::new(inner.x, y, inner.width, 1), buf);
            let states: Vec<String> = s
                .by_state
                .iter()
                .map(|(st, n)| format!("{st} {n}"))
                .collect();
            Paragraph::new(format!("  {}", states.join(" · ")))
                .render(Rect::new(inner.x, y + 1, inner.width, 1), buf);
        }
    }
}

pub struct LeasesView<'a> {
    pub leases: &'a [LeaseRow],
    pub search: &'a str,
    pub editing: bool,
    pub scroll: usize,
    /// "Now" for the expiry column (the snapshot's time, so views stay pure).
    pub now: SystemTime,
}

fn expires(at: SystemTime, now: SystemTime) -> String {
    match at.duration_since(now) {
        Ok(d) => format!("in {}", format::uptime(d)),
        Err(e) => format!("{} ago", format::uptime(e.duration())),
    }
}

impl Widget for &LeasesView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let mut title = format!(" Leases ({}) ", self.leases.len());
        if !self.search.is_empty() || self.editing {
            title.push_str(&format!("│ search '{}' ", self.search));
        }
        let block = Block::bordered().title(title);
        let inner = block.inner(area);
        block.render(area, buf);
        let visible = inner.height.saturating_sub(1) as usize;
        let start = self.scroll.min(self.leases.len().saturating_sub(visible));
        let rows: Vec<Row> = self.leases[start..]
            .iter()
            .take(visible)
            .map(|l| {
                Row::new(vec![
                    l.ip.to_string(),
                    l.subnet.clone(),
                    l.client.to_string(),
                    l.state.clone(),
                    expires(l.expires_at, self.now),
                ])
            })
            .collect();
        let widths = [
            Constraint::Length(15),
            Constraint::Length(10),
            Constraint::Min(22),
            Constraint::Length(9),
            Constraint::Length(12),
        ];
        let header = Row::new(["address", "subnet", "client", "state", "expires"])
            .style(Style::new().add_modifier(Modifier::BOLD));
        if self.leases.is_empty() {
            Paragraph::new(Line::from("no leases")).render(inner, buf);
            return;
        }
        Widget::render(Table::new(rows, widths).header(header), inner, buf);
    }
}
