//! The event log of a daemon: registrations, expiries, evictions, placements,
//! refusals — newest first, from the chosen level up.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::{Cell, Row, Table, TableState};

use super::format::age;
use super::{header_style, panel};
use crate::app::Tab;
use crate::theme::Theme;

pub fn log(f: &mut Frame, area: Rect, tab: &Tab, now: f64, theme: &Theme) {
    let now = now + tab.offset;
    let events = tab.event_rows();
    let rows = events.iter().map(|e| {
        Row::new(vec![
            Cell::from(age(now - e.at)),
            Cell::from(e.level.as_str()),
            Cell::from(e.text.clone()),
        ])
        .style(theme.level(e.level))
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(4),
            Constraint::Length(5),
            Constraint::Min(20),
        ],
    )
    .header(Row::new(["AGO", "LEVEL", "EVENT"]).style(header_style(theme)))
    .row_highlight_style(theme.selection())
    .block(panel(
        format!(
            "Events {} · {} and up (l)",
            events.len(),
            tab.level.as_str()
        ),
        theme,
    ));
    let mut state = TableState::default().with_selected(Some(tab.selected_row()));
    f.render_stateful_widget(table, area, &mut state);
}
