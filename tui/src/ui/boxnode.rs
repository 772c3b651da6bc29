//! A box's own view: upload against its cap (sparkline), storage against its
//! quota, the publishers connected, and its files with TTL left and bytes
//! served each.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};

use super::entrance::waiting;
use super::format::{bar, bytes, countdown, of_limit, rate, short_id, sparkline};
use super::{header_style, panel};
use crate::app::{Data, Tab};
use crate::theme::Theme;

pub fn files(f: &mut Frame, area: Rect, tab: &Tab, now: f64, theme: &Theme) {
    let Data::BoxNode(data) = &tab.data else {
        return waiting(f, area, tab, theme);
    };
    let v = &data.view;
    let [summary, table_area] =
        Layout::vertical([Constraint::Length(6), Constraint::Min(3)]).areas(area);
    let spark_w = usize::from(summary.width.saturating_sub(40)).clamp(8, 60);
    let quota = v.storage_quota;
    let publishers = if v.publishers.is_empty() {
        "none".to_owned()
    } else {
        v.publishers
            .iter()
            .map(|p| short_id(p, 19))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let lines = vec![
        Line::from(vec![
            Span::styled("upload  ", theme.header()),
            Span::styled(
                format!(
                    "{:>10} {:<13} ",
                    rate(Some(v.upload_rate)),
                    of_limit(v.upload_cap.map(|c| rate(Some(c))), "no cap")
                ),
                theme.text(),
            ),
            Span::styled(
                sparkline(data.rate.iter().copied(), spark_w, v.upload_cap),
                theme.spark(),
            ),
        ]),
        Line::from(vec![
            Span::styled("storage ", theme.header()),
            Span::styled(
                format!(
                    "{:>10} {:<13} ",
                    bytes(v.storage_used),
                    of_limit(quota.map(bytes), "no quota")
                ),
                theme.text(),
            ),
            Span::styled(
                quota.map_or_else(String::new, |q| bar(v.storage_used, q, 20)),
                theme.spark(),
            ),
        ]),
        Line::from(vec![
            Span::styled("served  ", theme.header()),
            Span::styled(
                format!("{} in {} requests", bytes(v.bytes_served), v.requests),
                theme.text(),
            ),
        ]),
        Line::from(vec![
            Span::styled("publishers connected  ", theme.header()),
            Span::styled(publishers, theme.text()),
        ]),
    ];
    let title = tab
        .hello
        .as_ref()
        .map_or_else(|| tab.url.clone(), |h| h.id.clone());
    f.render_widget(Paragraph::new(lines).block(panel(title, theme)), summary);

    let files = tab.stored_rows();
    let rows = files.iter().map(|file| {
        Row::new(vec![
            Cell::from(file.path.clone()),
            Cell::from(bytes(file.size)),
            Cell::from(countdown(tab.ttl_now(file.ttl_left, now))),
            Cell::from(bytes(file.bytes_served)),
            Cell::from(file.requests.to_string()),
        ])
        .style(theme.text())
    });
    let table = Table::new(
        rows,
        [
            Constraint::Min(20),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(8),
            Constraint::Length(6),
        ],
    )
    .header(Row::new(["FILE", "SIZE", "TTL", "SERVED", "REQS"]).style(header_style(theme)))
    .row_highlight_style(theme.selection())
    .block(panel(format!("Stored files {}", files.len()), theme));
    let mut state = TableState::default().with_selected(Some(tab.selected_row()));
    f.render_stateful_widget(table, table_area, &mut state);
}
