//! The publisher's views: its files (uploads from this console first, then the
//! queue and the placed), the selected file's placements with TTL countdown
//! and the reason each box won, the ranking with every factor; and the file
//! picker for pushes.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, TableState, Wrap};

use super::entrance::waiting;
use super::format::{bar, bytes, countdown, short_id};
use super::{WIDE_FROM, header_style, panel, popup};
use crate::app::picker::Picker;
use crate::app::{Data, Tab};
use crate::theme::Theme;

fn state_style(state: &str, theme: &Theme) -> ratatui::style::Style {
    match state {
        "placed" => theme.ok(),
        "failed" => theme.bad(),
        _ => theme.text(),
    }
}

pub fn files(f: &mut Frame, area: Rect, tab: &Tab, now: f64, theme: &Theme) {
    let Data::Publisher(p) = &tab.data else {
        return waiting(f, area, tab, theme);
    };
    let [table_area, detail] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Min(4)]).areas(area);
    let files = tab.file_rows();
    let mut rows: Vec<Row> = tab
        .uploads
        .iter()
        .map(|u| {
            #[allow(clippy::cast_precision_loss)] // a display share
            let share = u.sent as f64 * 100.0 / u.size.max(1) as f64;
            Row::new(vec![
                Cell::from(u.name.clone()),
                Cell::from(format!("upload {share:.0}%")),
                Cell::from(bytes(u.size)),
                Cell::from(bar(u.sent, u.size, 8)),
                Cell::from(""),
                Cell::from("from this console"),
            ])
            .style(theme.title())
        })
        .collect();
    let name_w = if table_area.width >= WIDE_FROM {
        34
    } else {
        18
    };
    rows.extend(files.iter().map(|file| {
        let state = if file.state == "queued" && p.sending.contains(&file.name) {
            "sending"
        } else {
            file.state.as_str()
        };
        let boxes: Vec<String> = file
            .placements
            .iter()
            .map(|pl| short_id(&pl.box_id, 13))
            .collect();
        Row::new(vec![
            Cell::from(short_id(&file.name, name_w)),
            Cell::from(state.to_owned()).style(state_style(state, theme)),
            Cell::from(bytes(file.size)),
            Cell::from(format!("{}/{}", file.placements.len(), file.replicas)),
            Cell::from(countdown(tab.ttl_now(file.ttl_left, now))),
            Cell::from(boxes.join(" ")),
        ])
        .style(theme.text())
    }));
    // The offload share: what operators look at first.
    let offload = p
        .offload
        .as_ref()
        .and_then(|o| {
            let share = o.box_share? * 100.0;
            Some(if table_area.width >= WIDE_FROM {
                format!(
                    " · {share:.1}% from boxes ({} / {} origin)",
                    bytes(o.total.box_bytes),
                    bytes(o.total.origin_bytes)
                )
            } else {
                format!(" · {share:.1}% from boxes")
            })
        })
        .unwrap_or_default();
    let title = format!(
        "Files {} · queued {} · sending {} · boxes known {}{offload}",
        files.len(),
        p.queue.len(),
        p.sending.len(),
        p.known_boxes
    );
    let table = Table::new(
        rows,
        [
            Constraint::Length(u16::try_from(name_w).unwrap_or(18)),
            Constraint::Length(11),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Min(10),
        ],
    )
    .header(
        Row::new(["NAME", "STATE", "SIZE", "COPIES", "TTL", "BOXES"]).style(header_style(theme)),
    )
    .row_highlight_style(theme.selection())
    .block(panel(title, theme));
    // Uploads are listed above the files; the selection moves over the files.
    let mut state =
        TableState::default().with_selected(Some(tab.uploads.len() + tab.selected_row()));
    f.render_stateful_widget(table, table_area, &mut state);

    let mut lines = Vec::new();
    if let Some(file) = files.get(tab.selected_row()) {
        lines.push(Line::from(vec![
            Span::styled(file.name.clone(), theme.header()),
            Span::styled(
                format!(
                    "  sha-256 {}  attempts {}",
                    short_id(&file.sha256, 17),
                    file.attempts
                ),
                theme.dim(),
            ),
        ]));
        for pl in &file.placements {
            lines.push(Line::from(vec![
                Span::styled(format!("{} ", short_id(&pl.box_id, 13)), theme.ok()),
                Span::styled(
                    format!("TTL {} ", countdown(tab.ttl_now(pl.ttl_left, now))),
                    theme.text(),
                ),
                Span::styled(pl.url.clone(), theme.dim()),
            ]));
            lines.push(Line::styled(format!("  why: {}", pl.why), theme.dim()));
        }
        // Once placed, earlier failures are history, not alarms.
        let (prefix, style) = if file.state == "placed" {
            ("earlier, ", theme.dim())
        } else {
            ("", theme.bad())
        };
        for failure in &file.failures {
            let on = failure.box_id.as_deref().map_or_else(
                || "before any box".to_owned(),
                |b| format!("on {}", short_id(b, 13)),
            );
            lines.push(Line::styled(
                format!("{prefix}failed {on}: {}", failure.reason),
                style,
            ));
        }
        if file.placements.is_empty() && file.failures.is_empty() {
            lines.push(Line::styled("not placed yet", theme.dim()));
        }
    } else {
        lines.push(Line::styled(
            "No files. Press p to push one from this console.",
            theme.dim(),
        ));
    }
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .border_style(theme.border())
                .title(" Placements "),
        ),
        detail,
    );
}

pub fn ranking(f: &mut Frame, area: Rect, tab: &Tab, theme: &Theme) {
    let Data::Publisher(p) = &tab.data else {
        return waiting(f, area, tab, theme);
    };
    let wide = area.width >= WIDE_FROM;
    let rows = p.ranking.iter().enumerate().map(|(i, r)| {
        Row::new(vec![
            Cell::from(format!("{}", i + 1)),
            Cell::from(short_id(&r.box_id, if wide { 38 } else { 17 })),
            Cell::from(format!("{:.2}", r.score)),
            Cell::from(format!("{:.2}", r.nearness)),
            Cell::from(format!("{:.2}", r.spare_upload)),
            Cell::from(format!("{:.2}", r.storage)),
            Cell::from(format!("{:.2}", r.reliability)),
            Cell::from(format!("{:.2}", r.throughput)),
        ])
        .style(theme.text())
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(3),
            Constraint::Min(17),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(6),
        ],
    )
    .header(
        Row::new([
            "#", "BOX", "SCORE", "NEAR", "SPARE", "STORAGE", "RELIAB", "THRU",
        ])
        .style(header_style(theme)),
    )
    .row_highlight_style(theme.selection())
    .block(panel(
        format!("Ranking of {} boxes", p.ranking.len()),
        theme,
    ));
    let mut state = TableState::default().with_selected(Some(tab.selected_row()));
    f.render_stateful_widget(table, area, &mut state);
}

pub fn picker(f: &mut Frame, p: &Picker, theme: &Theme) {
    let area = popup(f, 70, 18);
    let [list, help] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)])
        .areas(area.inner(ratatui::layout::Margin::new(1, 1)));
    // Where the list is when it does not fit: the entry's number of all, and
    // arrows on the side that scrolls on.
    let fits = p.entries.len() <= usize::from(list.height);
    let position = if fits || p.entries.is_empty() {
        String::new()
    } else {
        let above = if p.selected >= usize::from(list.height) {
            "↑ "
        } else {
            ""
        };
        let below = if p.entries.len() > (p.selected + 1).max(usize::from(list.height)) {
            " ↓"
        } else {
            ""
        };
        format!(" {above}{}/{}{below} ", p.selected + 1, p.entries.len())
    };
    let block = Block::bordered()
        .title(Span::styled(
            format!(" Push a file · {} ", p.dir.display()),
            theme.title(),
        ))
        .title_bottom(Line::from(Span::styled(position, theme.dim())).right_aligned())
        .border_style(theme.border_focused());
    f.render_widget(block, area);
    if let Some(error) = &p.error {
        f.render_widget(Paragraph::new(error.clone()).style(theme.bad()), list);
    }
    let rows = p.entries.iter().map(|e| {
        let (name, size) = if e.dir {
            (format!("{}/", e.name), String::new())
        } else {
            (e.name.clone(), bytes(e.size))
        };
        Row::new(vec![Cell::from(name), Cell::from(size)]).style(if e.dir {
            theme.header()
        } else {
            theme.text()
        })
    });
    let table = Table::new(rows, [Constraint::Min(20), Constraint::Length(9)])
        .row_highlight_style(theme.selection());
    if p.error.is_none() {
        let mut state = TableState::default().with_selected(Some(p.selected));
        f.render_stateful_widget(table, list, &mut state);
    }
    f.render_widget(
        Paragraph::new("Enter opens or pushes · g/G first/last · Esc cancels").style(theme.dim()),
        help,
    );
}
