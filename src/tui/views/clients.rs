//! The Clients view: the busiest clients with their rates, drops, pending
//! work and state. Only the rows that fit are formatted, so 10,000 tracked
//! clients cost the same to draw as 20.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Row, Table, Widget};

use crate::stats::ClientRow;
use crate::tui::format;
use crate::tui::state::{ClientState, UiState};

/// The lease column is shown from this width on.
const WIDE: u16 = 96;

pub struct ClientsView<'a> {
    pub ui: &'a UiState,
    /// One-line pending summary for the bottom border (narrow terminals).
    pub footer: Option<Line<'a>>,
}

pub fn state_style(s: ClientState) -> Style {
    match s {
        ClientState::Ok => Style::new().fg(Color::Green),
        ClientState::Limited => Style::new().fg(Color::Yellow),
        ClientState::Isolated => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

impl Widget for &ClientsView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let ui = self.ui;
        let rows = ui.rows();
        let mut title = format!(" Clients ({}) ▼ {} ", rows.len(), ui.sort.label());
        if !ui.filter.is_empty() {
            title.push_str(&format!("│ filter '{}' ", ui.filter));
        }
        let mut block = Block::bordered().title(title);
        if let Some(f) = &self.footer {
            block = block.title_bottom(f.clone());
        }
        let inner = block.inner(area);
        block.render(area, buf);
        let wide = area.width >= WIDE;
        let visible = inner.height.saturating_sub(1) as usize;
        let sel = ui.selected_index();
        let start = match sel {
            Some(i) if i >= visible => i + 1 - visible,
            _ => 0,
        };
        let body: Vec<Row> = rows
            .iter()
            .enumerate()
            .skip(start)
            .take(visible)
            .filter_map(|(i, r)| {
                let c = ui.row(r)?;
                Some(row(ui, c, ui.state_of(c), sel == Some(i), wide))
            })
            .collect();
        let mut header = vec![
            "  client", "rate 1s", "rate 10s", "served/s", "drops", "pend", "state",
        ];
        let mut widths = vec![
            Constraint::Length(24),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(5),
            Constraint::Length(8),
        ];
        if wide {
            header.insert(1, "lease");
            widths.insert(1, Constraint::Length(16));
        }
        let header = Row::new(header).style(Style::new().add_modifier(Modifier::BOLD));
        Widget::render(Table::new(body, widths).header(header), inner, buf);
    }
}

fn row<'a>(ui: &UiState, c: &ClientRow, state: ClientState, selected: bool, wide: bool) -> Row<'a> {
    let name = match &c.client {
        Some(k) => format::truncate(&k.to_string(), 40),
        None => "(others)".to_owned(),
    };
    let marker = if selected { "▶ " } else { "  " };
    let right = |s: String| Cell::from(Line::from(s).right_aligned());
    let mut cells = vec![
        Cell::from(format!("{marker}{name}")),
        right(format::rate(c.rate_1s)),
        right(format::rate(c.rate_10s)),
        right(format::rate(c.served_rate_1s)),
        right(format::count(c.drops)),
        right(c.pending.to_string()),
        Cell::from(match c.client {
            Some(_) => state.label(),
            None => "",
        })
        .style(state_style(state)),
    ];
    if wide {
        let lease = c
            .client
            .as_ref()
            .and_then(|k| ui.data.lease_of.get(k))
            .map_or_else(String::new, |ip| ip.to_string());
        cells.insert(1, Cell::from(lease));
    }
    let style = if selected {
        Style::new().add_modifier(Modifier::REVERSED)
    } else {
        Style::new()
    };
    Row::new(cells).style(style)
}
