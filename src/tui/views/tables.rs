//! The Subnets view (pool utilisation, leases by state) and the Leases view
//! (a searchable lease table), over the plain rows of `tui::data`.

use std::time::SystemTime;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, Widget};

use crate::tui::data::{Lease6Row, LeaseRow, Subnet6Row, SubnetRow};
use crate::tui::format;

pub struct SubnetsView<'a> {
    pub subnets: &'a [SubnetRow],
    pub subnets6: &'a [Subnet6Row],
}

/// Pools larger than this show "—": a count that big says nothing.
const HUGE_POOL: u64 = 1 << 32;

fn pool_size(n: u64) -> String {
    if n > HUGE_POOL {
        "—".to_owned()
    } else {
        n.to_string()
    }
}

/// The two lines of a v6 subnet: pool sizes, then slots by state.
fn subnet6_lines(s: &Subnet6Row) -> [String; 2] {
    let mut head = format!(
        "{} {}  addresses {}",
        s.id,
        s.prefix,
        pool_size(s.addresses)
    );
    if s.prefixes > 0 {
        head.push_str(&format!(
            "  pd {}/{} delegated",
            s.delegated,
            pool_size(s.prefixes)
        ));
    }
    let states = format!(
        "  bound {} · offered {} · declined {}",
        s.bound, s.offered, s.declined
    );
    [head, states]
}

impl Widget for &SubnetsView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let count = self.subnets.len() + self.subnets6.len();
        let block = Block::bordered().title(format!(" Subnets ({count}) "));
        let inner = block.inner(area);
        block.render(area, buf);
        if count == 0 {
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
        for (i, s) in self.subnets6.iter().enumerate() {
            let y = inner.y + ((self.subnets.len() + i) as u16) * 3;
            if y + 2 > inner.bottom() {
                break;
            }
            for (dy, line) in subnet6_lines(s).into_iter().enumerate() {
                Paragraph::new(line).render(Rect::new(inner.x, y + dy as u16, inner.width, 1), buf);
            }
        }
    }
}

pub struct LeasesView<'a> {
    pub leases: &'a [LeaseRow],
    /// Shown after the v4 leases.
    pub leases6: &'a [Lease6Row],
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
        let count = self.leases.len() + self.leases6.len();
        let mut title = format!(" Leases ({count}) ");
        if !self.search.is_empty() || self.editing {
            title.push_str(&format!("│ search '{}' ", self.search));
        }
        let block = Block::bordered().title(title);
        let inner = block.inner(area);
        block.render(area, buf);
        let visible = inner.height.saturating_sub(1) as usize;
        let start = self.scroll.min(count.saturating_sub(visible));
        // With v6 bindings: a kind column, and room for an address or prefix.
        let v6 = !self.leases6.is_empty();
        let v4_rows = self.leases.iter().map(|l| {
            [
                l.ip.to_string(),
                l.subnet.clone(),
                l.client.to_string(),
                String::new(),
                l.state.clone(),
                expires(l.expires_at, self.now),
            ]
        });
        let v6_rows = self.leases6.iter().map(|l| {
            [
                l.ip.clone(),
                l.subnet.clone(),
                l.client.to_string(),
                l.kind.clone(),
                l.state.clone(),
                expires(l.expires_at, self.now),
            ]
        });
        let rows: Vec<Row> = v4_rows
            .chain(v6_rows)
            .skip(start)
            .take(visible)
            .map(|[ip, subnet, client, kind, state, exp]| {
                let mut cells = vec![ip, subnet, client];
                if v6 {
                    cells.push(kind);
                }
                cells.extend([state, exp]);
                Row::new(cells)
            })
            .collect();
        let mut widths = vec![
            Constraint::Length(if v6 { 20 } else { 15 }),
            Constraint::Length(10),
            Constraint::Min(22),
            Constraint::Length(9),
            Constraint::Length(12),
        ];
        let mut names = vec!["address", "subnet", "client", "state", "expires"];
        if v6 {
            widths.insert(3, Constraint::Length(4));
            names.insert(3, "kind");
        }
        let header = Row::new(names).style(Style::new().add_modifier(Modifier::BOLD));
        if count == 0 {
            Paragraph::new(Line::from("no leases")).render(inner, buf);
            return;
        }
        Widget::render(Table::new(rows, widths).header(header), inner, buf);
    }
}
