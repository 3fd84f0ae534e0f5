//! The top of the screen: process health (uptime, overload, memory) and the
//! rate sparklines.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Sparkline, Widget};

use crate::stats::{MemoryByOwner, OverloadState};
use crate::tui::data::ClusterRow;
use crate::tui::format;
use crate::tui::history::History;
use crate::tui::state::UiState;

/// Uptime, overload state, RSS against the budget, heap, isolated count.
pub struct Header<'a> {
    pub ui: &'a UiState,
}

pub fn overload_label(state: u64) -> (&'static str, Color) {
    match OverloadState::from_gauge(state) {
        OverloadState::Normal => ("normal", Color::Green),
        OverloadState::Shrink => ("shrinking", Color::Yellow),
        OverloadState::Shed => ("shedding load", Color::Red),
    }
}

impl Widget for &Header<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let s = &self.ui.snapshot;
        let m = &s.memory;
        let mut block = Block::bordered().title(Span::styled(
            " vpcbox ",
            Style::new().add_modifier(Modifier::BOLD),
        ));
        if let Some(c) = &self.ui.cluster {
            block = block.title_bottom(cluster_line(c));
        }
        let inner = block.inner(area);
        block.render(area, buf);
        let [top, mem, owners, gauge] = Layout::vertical([Constraint::Length(1); 4]).areas(inner);
        let (state, color) = overload_label(m.overload_state);
        let dim = Style::new().fg(Color::DarkGray);
        let isolated = self.ui.isolated.len();
        let line = Line::from(vec![
            Span::raw(format!("up {}", format::uptime(s.uptime))),
            Span::styled(" │ ", dim),
            Span::styled(state, Style::new().fg(color).add_modifier(Modifier::BOLD)),
            Span::styled(" │ ", dim),
            Span::styled(
                format!("isolated {isolated}"),
                match isolated {
                    0 => Style::new(),
                    _ => Style::new().fg(Color::Red),
                },
            ),
            Span::styled(" │ ", dim),
            Span::raw(format!(
                "clients {} · streams {} · connections {}",
                s.clients.len(),
                s.gateway_streams,
                s.gateway_connections
            )),
        ]);
        Paragraph::new(line).render(top, buf);
        let heap = Line::from(vec![
            Span::raw(format!(
                "jemalloc {} allocated, {} resident, {} retained",
                format::bytes(m.heap_allocated),
                format::bytes(m.heap_resident),
                format::bytes(m.heap_retained)
            )),
            Span::styled(" │ ", dim),
            Span::raw(format!(
                "heap shrinks {} (last reclaimed {})",
                m.heap_shrinks,
                format::bytes(m.last_reclaim_bytes)
            )),
        ]);
        Paragraph::new(heap).render(mem, buf);
        Paragraph::new(owners_line(&m.by_owner)).render(owners, buf);
        let budget = match m.budget_bytes {
            0 => self.ui.budget,
            b => b,
        };
        let label = format!(
            "RSS {} / {}",
            format::bytes(m.rss_bytes),
            format::bytes(budget)
        );
        super::gauge::usage(m.rss_bytes, budget, &label).render(gauge, buf);
    }
}

/// `cluster node a │ writing │ 2 nodes: a 4 blk 120.5 ack/s 3 api/s · b 3 blk`
/// (rates as each node last published them), red
/// while this node is fenced or the cluster cannot be read.
pub fn cluster_line(c: &ClusterRow) -> Line<'static> {
    let dim = Style::new().fg(Color::DarkGray);
    let red = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
    let (state, style) = match &c.fenced {
        Some(_) => ("fenced: not writing", red),
        None => ("writing", Style::new().fg(Color::Green)),
    };
    let nodes: Vec<String> = c
        .nodes
        .iter()
        .map(|n| {
            let rates = n.rates.map_or(String::new(), |(acks, api)| {
                format!(" {acks} ack/s {api} api/s")
            });
            format!("{} {} blk{rates}", n.name, n.blocks)
        })
        .collect();
    let mut spans = vec![
        Span::raw(format!(" cluster node {}", c.node)),
        Span::styled(" │ ", dim),
        Span::styled(state, style),
        Span::styled(" │ ", dim),
        Span::raw(format!("{} nodes: {} ", c.nodes.len(), nodes.join(" · "))),
    ];
    if let Some(e) = &c.error {
        spans.push(Span::styled(
            format!("│ etcd: {} ", format::truncate(e, 40)),
            red,
        ));
    }
    Line::from(spans)
}

/// RSS by owner in one line: `memory store 12M · clients 1.5M · … · other 30M`.
pub fn owners_line(o: &MemoryByOwner) -> Line<'static> {
    let dim = Style::new().fg(Color::DarkGray);
    let mut spans = vec![Span::styled("memory ", dim)];
    for (i, (label, bytes)) in o.labelled().into_iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled(" · ", dim));
        }
        // "retained" alone would read as jemalloc's (virtual) retained of the line above.
        let short = match label {
            "allocator_retained" => "allocator",
            "allocator_dirty" => "dirty",
            l => l.split('_').next().unwrap_or(l),
        };
        spans.push(Span::raw(format!("{short} {}", format::bytes_short(bytes))));
    }
    Line::from(spans)
}

/// Sparklines of DHCP packets/s and API requests/s, and drops/s by reason.
pub struct Rates<'a> {
    pub history: &'a History,
}

impl Widget for &Rates<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let h = self.history;
        let (dhcp, api, drops) = h.latest();
        let [a, b, c] = Layout::horizontal([
            Constraint::Ratio(3, 8),
            Constraint::Ratio(3, 8),
            Constraint::Ratio(2, 8),
        ])
        .areas(area);
        spark(
            &format!(" DHCP {}/s ", format::count(dhcp)),
            &h.dhcp,
            Color::Cyan,
            a,
            buf,
        );
        spark(
            &format!(" API {}/s ", format::count(api)),
            &h.api,
            Color::Magenta,
            b,
            buf,
        );
        let block = Block::bordered().title(format!(" drops {}/s ", format::count(drops)));
        let inner = block.inner(c);
        block.render(c, buf);
        let lines: Vec<Line> = h
            .drops_by_reason
            .iter()
            .take(inner.height as usize)
            .map(|(r, n)| {
                let w = (inner.width as usize).saturating_sub(7).max(1);
                Line::from(vec![
                    Span::raw(format!("{:<w$}", format::truncate(r.as_str(), w))),
                    Span::styled(
                        format!("{:>7}", format::count(*n)),
                        Style::new().fg(Color::Red),
                    ),
                ])
            })
            .collect();
        Paragraph::new(lines).render(inner, buf);
    }
}

fn spark(
    title: &str,
    data: &std::collections::VecDeque<u64>,
    color: Color,
    area: Rect,
    buf: &mut Buffer,
) {
    let block = Block::bordered().title(title.to_owned());
    let inner = block.inner(area);
    block.render(area, buf);
    // Newest at the right edge: only the last `width` points fit.
    let skip = data.len().saturating_sub(inner.width as usize);
    let points: Vec<u64> = data.iter().skip(skip).copied().collect();
    Sparkline::default()
        .data(&points)
        .style(Style::new().fg(color))
        .render(inner, buf);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::tui::data::ClusterNodeRow;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn screen(ui: &UiState) -> String {
        let mut t = Terminal::new(TestBackend::new(100, 5)).unwrap();
        t.draw(|f| f.render_widget(&Header { ui }, f.area()))
            .unwrap();
        let buf = t.backend().buffer().clone();
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol())
                    .collect::<String>()
                    + "\n"
            })
            .collect()
    }

    /// Outside a cluster nothing is shown; in one, the nodes and their
    /// blocks, and whether this node may write.
    #[test]
    fn the_header_shows_the_cluster_and_the_fence() {
        let mut ui = UiState::new(1 << 30);
        assert!(!screen(&ui).contains("cluster"));
        ui.cluster = Some(ClusterRow {
            node: "a".into(),
            fenced: None,
            nodes: vec![
                ClusterNodeRow {
                    name: "a".into(),
                    blocks: 4,
                    rates: Some((120.5, 3.0)),
                },
                ClusterNodeRow {
                    name: "b".into(),
                    blocks: 3,
                    rates: None,
                },
            ],
            error: None,
        });
        let s = screen(&ui);
        assert!(
            s.contains("cluster node a │ writing │ 2 nodes: a 4 blk 120.5 ack/s 3 api/s · b 3 blk"),
            "{s}"
        );
        ui.cluster = Some(ClusterRow {
            fenced: Some("no keepalive".into()),
            error: Some("etcd: timed out".into()),
            nodes: Vec::new(),
            ..ui.cluster.clone().unwrap()
        });
        let s = screen(&ui);
        assert!(
            s.contains("fenced: not writing") && s.contains("etcd: timed out"),
            "{s}"
        );
    }
}
