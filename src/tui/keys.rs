//! Key handling as a pure function of the UI state: it changes the state
//! and may return a [`Command`] for the event loop to carry out (isolation
//! touches the persisted store, so it runs off the draw path).

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::state::{ClientState, Input, Status, UiState, View};
use crate::client::ClientKey;

/// What the event loop must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Quit,
    Isolate(ClientKey),
    Release(ClientKey),
}

/// Rows moved by PageUp / PageDown.
const PAGE: usize = 10;

pub fn on_key(ui: &mut UiState, key: KeyEvent) -> Option<Command> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Some(Command::Quit);
    }
    if let Some(input) = ui.editing {
        edit(ui, input, key.code);
        return None;
    }
    if ui.help {
        match key.code {
            KeyCode::Char('q') => return Some(Command::Quit),
            _ => ui.help = false,
        }
        return None;
    }
    match key.code {
        KeyCode::Char('q') => return Some(Command::Quit),
        KeyCode::Char('?') => ui.help = true,
        KeyCode::Tab => switch(ui, ui.view.next()),
        KeyCode::BackTab => switch(ui, ui.view.prev()),
        KeyCode::Char('s') if ui.view == View::Clients => {
            ui.sort = ui.sort.next();
            ui.refresh_rows();
        }
        KeyCode::Char('/') => match ui.view {
            View::Clients => ui.editing = Some(Input::Filter),
            View::Leases => ui.editing = Some(Input::LeaseSearch),
            _ => {}
        },
        KeyCode::Esc if ui.view == View::Clients && !ui.filter.is_empty() => {
            ui.filter.clear();
            ui.refresh_rows();
        }
        KeyCode::Up | KeyCode::Char('k') => move_by(ui, -1),
        KeyCode::Down | KeyCode::Char('j') => move_by(ui, 1),
        KeyCode::PageUp => move_by(ui, -(PAGE as isize)),
        KeyCode::PageDown => move_by(ui, PAGE as isize),
        KeyCode::Home => move_by(ui, isize::MIN / 2),
        KeyCode::End => move_by(ui, isize::MAX / 2),
        KeyCode::Char('i') if ui.view == View::Clients => return toggle_isolation(ui),
        _ => {}
    }
    None
}

fn switch(ui: &mut UiState, view: View) {
    ui.view = view;
    ui.scroll = 0;
}

fn edit(ui: &mut UiState, input: Input, code: KeyCode) {
    let text = match input {
        Input::Filter => &mut ui.filter,
        Input::LeaseSearch => &mut ui.lease_search,
    };
    match code {
        KeyCode::Enter => ui.editing = None,
        KeyCode::Esc => {
            text.clear();
            ui.editing = None;
        }
        KeyCode::Backspace => {
            text.pop();
        }
        KeyCode::Char(c) if text.len() < 64 => text.push(c),
        _ => {}
    }
    if input == Input::Filter {
        ui.refresh_rows();
    } else {
        ui.scroll = 0;
    }
}

fn move_by(ui: &mut UiState, delta: isize) {
    if ui.view != View::Clients {
        ui.scroll = ui.scroll.saturating_add_signed(delta).min(100_000);
        return;
    }
    // The "others" row (always last) has no key and is not selectable.
    let len = ui.selectable_rows();
    if len == 0 {
        return;
    }
    let next = match ui.selected_index() {
        None => 0,
        Some(i) => i.saturating_add_signed(delta).min(len - 1),
    };
    let client = ui
        .rows()
        .get(next)
        .and_then(|r| ui.row(r))
        .and_then(|c| c.client.clone());
    if client.is_some() {
        ui.selected = client;
    }
}

fn toggle_isolation(ui: &mut UiState) -> Option<Command> {
    let Some(i) = ui.selected_index() else {
        ui.status = Some(Status::Info("no client selected".into()));
        return None;
    };
    let row = ui.rows().get(i).copied()?;
    let Some(client) = ui.row(&row).and_then(|c| c.client.clone()) else {
        ui.status = Some(Status::Info(
            "\"others\" is many clients; it cannot be isolated".into(),
        ));
        return None;
    };
    // Pin the selection so a second `i` finds the same client after re-sorts.
    ui.selected = Some(client.clone());
    if ui
        .row(&row)
        .is_some_and(|c| ui.state_of(c) == ClientState::Isolated)
    {
        ui.status = Some(Status::Info(format!("releasing {client}…")));
        Some(Command::Release(client))
    } else {
        ui.status = Some(Status::Isolating(client.clone()));
        Some(Command::Isolate(client))
    }
}
