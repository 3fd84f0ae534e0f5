//! Pure views: each is a small struct borrowing what it shows, rendered with
//! `impl Widget for &View` (STYLE rule 8). [`Dashboard`] lays them out.

mod clients;
mod events;
mod gauge;
mod header;
mod pending;
mod tables;

pub use clients::ClientsView;
pub use events::{EventsView, HelpView, HELP};
pub use header::{Header, Rates};
pub use pending::PendingView;
pub use tables::{LeasesView, SubnetsView};

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Tabs, Widget, Wrap};

use super::format;
use super::state::{Input, Status, UiState, View};

/// Smallest terminal the dashboard draws in.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 15;
/// From this width on, the Pending panel sits beside the client table.
const SIDE_PANEL: u16 = 130;

/// The whole screen.
pub struct Dashboard<'a> {
    pub ui: &'a UiState,
}

impl Widget for &Dashboard<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
            TooSmall.render(area, buf);
            return;
        }
        let ui = self.ui;
        let rates_h = if area.height >= 22 { 6 } else { 0 };
        let [header, rates, tabs, body, status] = Layout::vertical([
            Constraint::Length(6),
            Constraint::Length(rates_h),
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(area);
        (&Header { ui }).render(header, buf);
        if rates_h > 0 {
            (&Rates {
                history: &ui.history,
            })
                .render(rates, buf);
        }
        tab_bar(ui, tabs, buf);
        match ui.view {
            View::Clients => clients(ui, body, buf),
            View::Subnets => (&SubnetsView {
                subnets: &ui.data.subnets,
                subnets6: &ui.data.subnets6,
            })
                .render(body, buf),
            View::Leases => (&LeasesView {
                leases: &ui.data.leases,
                leases6: &ui.data.leases6,
                search: &ui.lease_search,
                editing: ui.editing == Some(Input::LeaseSearch),
                scroll: ui.scroll,
                now: ui.snapshot.taken_at,
            })
                .render(body, buf),
            View::Events => (&EventsView {
                events: &ui.events,
                scroll: ui.scroll,
            })
                .render(body, buf),
        }
        status_line(ui).render(status, buf);
        if ui.help {
            (&HelpView).render(area, buf);
        }
    }
}

fn clients(ui: &UiState, area: Rect, buf: &mut Buffer) {
    if area.width >= SIDE_PANEL {
        let [left, right] =
            Layout::horizontal([Constraint::Fill(1), Constraint::Length(38)]).areas(area);
        (&ClientsView { ui, footer: None }).render(left, buf);
        (&PendingView {
            snapshot: &ui.snapshot,
        })
            .render(right, buf);
    } else {
        let footer = Some(pending::summary(&ui.snapshot));
        (&ClientsView { ui, footer }).render(area, buf);
    }
}

fn tab_bar(ui: &UiState, area: Rect, buf: &mut Buffer) {
    let selected = View::ALL.iter().position(|v| *v == ui.view).unwrap_or(0);
    Tabs::new(View::ALL.iter().map(|v| v.title()))
        .select(selected)
        .highlight_style(Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD))
        .render(area, buf);
}

/// The bottom line: the text being typed, the last action, or key hints.
pub fn status_line(ui: &UiState) -> Line<'static> {
    let ok = Style::new().fg(Color::Green);
    let warn = Style::new().fg(Color::Yellow);
    match (ui.editing, &ui.status) {
        (Some(Input::Filter), _) => {
            Line::from(format!("filter: {}█  (Enter keeps, Esc clears)", ui.filter))
        }
        (Some(Input::LeaseSearch), _) => Line::from(format!(
            "search: {}█  (Enter keeps, Esc clears)",
            ui.lease_search
        )),
        (None, Some(s)) => match s {
            Status::Isolating(c) => Line::styled(format!("isolating {c}…"), warn),
            Status::Isolated { client, since } => {
                let dhcp6 = matches!(client, crate::client::ClientKey::Duid(_));
                let unit = if client.is_dhcp() || dhcp6 {
                    "packets/s"
                } else {
                    "requests/s"
                };
                let rate = match since.as_ref().and_then(|s| s.rate) {
                    Some(r) => format::rate(r),
                    None => "…".to_owned(),
                };
                Line::styled(
                    format!("isolated {client} — {rate} {unit} served since  (i again releases)"),
                    Style::new().fg(Color::Red),
                )
            }
            Status::Released(c) => Line::styled(format!("released {c}"), ok),
            Status::Info(m) => Line::styled(m.clone(), warn),
            Status::Error(m) => Line::styled(
                format!("error: {m}"),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
        },
        (None, None) => Line::from(vec![Span::styled(
            "↑↓ select  i isolate  s sort  / filter  Tab view  ? help  q quit",
            Style::new().fg(Color::DarkGray),
        )]),
    }
}

/// Shown instead of the dashboard below [`MIN_WIDTH`]×[`MIN_HEIGHT`].
pub struct TooSmall;

impl Widget for &TooSmall {
    fn render(self, area: Rect, buf: &mut Buffer) {
        Paragraph::new(vec![
            Line::from("terminal too small"),
            Line::from(format!(
                "{}×{}, need {MIN_WIDTH}×{MIN_HEIGHT}",
                area.width, area.height
            )),
            Line::from("q quits"),
        ])
        .wrap(Wrap { trim: true })
        .render(area, buf);
    }
}
