//! The Events view (isolations, overload, heap shrinks, reloads, port-cap
//! refusals; newest first) and the `?` help overlay.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Widget};

use crate::events::{Event, EventKind};
use crate::tui::format;

pub struct EventsView<'a> {
    /// Newest last, as `EventLog::recent` returns them.
    pub events: &'a [Event],
    pub scroll: usize,
}

fn kind(k: EventKind) -> (&'static str, Color) {
    match k {
        EventKind::Isolation => ("isolation", Color::Red),
        EventKind::Overload => ("overload", Color::Yellow),
        EventKind::HeapShrink => ("heap", Color::Cyan),
        EventKind::ConfigReload => ("config", Color::Blue),
        EventKind::Service => ("service", Color::DarkGray),
        EventKind::Storage => ("storage", Color::Red),
        EventKind::PortCap => ("port cap", Color::Magenta),
        EventKind::Cluster => ("cluster", Color::LightBlue),
    }
}

impl Widget for &EventsView<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let block = Block::bordered().title(format!(" Events ({}) UTC ", self.events.len()));
        let inner = block.inner(area);
        block.render(area, buf);
        let lines: Vec<Line> = self
            .events
            .iter()
            .rev()
            .skip(self.scroll)
            .take(inner.height as usize)
            .map(|e| {
                let (name, color) = kind(e.kind);
                Line::from(vec![
                    Span::raw(format!("{}  ", format::clock_utc(e.at_ms))),
                    Span::styled(format!("{name:<10}"), Style::new().fg(color)),
                    Span::raw(e.message.clone()),
                ])
            })
            .collect();
        if lines.is_empty() {
            Paragraph::new("no events yet").render(inner, buf);
        } else {
            Paragraph::new(lines).render(inner, buf);
        }
    }
}

pub const HELP: &[(&str, &str)] = &[
    ("↑/↓ j/k", "select a client (PgUp/PgDn, Home/End)"),
    ("i", "isolate / release the selected client"),
    ("s", "cycle the sort column"),
    ("/", "filter clients, or search leases"),
    ("Esc", "clear the filter"),
    ("Tab", "next view: clients, subnets, leases, events"),
    ("?", "this help (any key closes it)"),
    ("q", "quit (stops vpcbox)"),
];

pub struct HelpView;

impl Widget for &HelpView {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let h = HELP.len() as u16 + 2;
        let [_, mid, _] = Layout::vertical([
            Constraint::Fill(1),
            Constraint::Length(h),
            Constraint::Fill(1),
        ])
        .areas(area);
        let [_, rect, _] = Layout::horizontal([
            Constraint::Fill(1),
            Constraint::Length(58),
            Constraint::Fill(1),
        ])
        .areas(mid);
        Clear.render(rect, buf);
        let lines: Vec<Line> = HELP
            .iter()
            .map(|(k, what)| {
                Line::from(vec![
                    Span::styled(format!(" {k:<9}"), Style::new().fg(Color::Cyan)),
                    Span::raw(*what),
                ])
            })
            .collect();
        Paragraph::new(lines)
            .block(Block::bordered().title(" keys "))
            .render(rect, buf);
    }
}
