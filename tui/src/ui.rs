//! Drawing: reads the [`App`] and the [`Theme`], never changes either. The frame
//! is a tab bar (one tab per daemon), a view bar, the current view, and a footer
//! with key hints or the status line; overlays (help, confirmation, file
//! picker) draw on top.

pub mod boxnode;
pub mod entrance;
pub mod events;
pub mod format;
pub mod publisher;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use crate::app::{App, Conn, Mode, View};
use crate::input::{KEYMAP, Scope};
use crate::theme::Theme;

/// Draws the whole screen.
pub fn draw(f: &mut Frame, app: &App, theme: &Theme) {
    let [tabs, views, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    tab_bar(f, tabs, app, theme);
    view_bar(f, views, app, theme);
    match app.tab() {
        None => {
            let text = Paragraph::new(
                "Not attached to any daemon. Type :connect http://HOST:PORT, or start a local network with `dandelion up`.",
            )
            .style(theme.dim())
            .wrap(Wrap { trim: true })
            .block(Block::bordered().border_style(theme.border()));
            f.render_widget(text, body);
        }
        Some(tab) => match tab.current_view() {
            View::Boxes => entrance::boxes(f, body, tab, app.now, theme),
            View::Geo => entrance::geo(f, body, tab, theme),
            View::Files => publisher::files(f, body, tab, app.now, theme),
            View::Ranking => publisher::ranking(f, body, tab, theme),
            View::Stored => boxnode::files(f, body, tab, app.now, theme),
            View::Events => events::log(f, body, tab, app.now, theme),
        },
    }
    footer_line(f, footer, app, theme);
    match &app.mode {
        Mode::Help => help(f, app, theme),
        Mode::Confirm { box_id, reason } => confirm(f, box_id, reason, theme),
        Mode::Picker(p) => publisher::picker(f, p, theme),
        _ => {}
    }
}

/// How a daemon's connection reads in its tab.
pub fn conn_text(conn: &Conn, now: f64) -> (String, bool) {
    match conn {
        Conn::Live => ("●".into(), false),
        Conn::Connecting => ("connecting…".into(), false),
        Conn::Down { retry_at, .. } => {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped ≥ 0
            let secs = (retry_at - now).max(0.0).ceil() as u64;
            (format!("✗ reconnecting in {secs}s"), true)
        }
    }
}

fn tab_bar(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let tabs: Vec<Vec<Span>> = app
        .tabs
        .iter()
        .enumerate()
        .map(|(i, tab)| {
            let style = if i == app.active {
                theme.tab_active()
            } else {
                theme.text()
            };
            let (conn, bad) = conn_text(&tab.conn, app.now);
            vec![
                Span::styled(format!("{} {}", i + 1, tab.label()), style),
                Span::raw(" "),
                Span::styled(conn, if bad { theme.bad() } else { theme.ok() }),
            ]
        })
        .collect();
    let widths: Vec<usize> = tabs
        .iter()
        .map(|t| t.iter().map(Span::width).sum())
        .collect();
    let shown = tab_window(&widths, app.active, usize::from(area.width));
    let mut spans = Vec::new();
    if shown.start > 0 {
        spans.push(Span::styled(format!("‹{} ", shown.start), theme.dim()));
    }
    for (n, tab) in tabs[shown.clone()].iter().enumerate() {
        if n > 0 {
            spans.push(Span::styled(TAB_GAP, theme.border()));
        }
        spans.extend(tab.iter().cloned());
    }
    if shown.end < tabs.len() {
        spans.push(Span::styled(
            format!(" {}›", tabs.len() - shown.end),
            theme.dim(),
        ));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

const TAB_GAP: &str = " │ ";

/// From this width on, a view's tables show their extra columns and longer
/// names; under it they keep to what an 80-column ssh window holds.
const WIDE_FROM: u16 = 110;

/// The tabs that fit in `width` cells, the active one among them: as many
/// before it as fit, then as many after. Room is kept for the markers that
/// say how many tabs are hidden on each side (`‹2 ` and ` 3›`).
pub fn tab_window(widths: &[usize], active: usize, width: usize) -> std::ops::Range<usize> {
    const MARKER: usize = 5;
    let active = active.min(widths.len().saturating_sub(1));
    let span = |r: &std::ops::Range<usize>| -> usize {
        let gaps = r.len().saturating_sub(1) * TAB_GAP.chars().count();
        let left = if r.start > 0 { MARKER } else { 0 };
        let right = if r.end < widths.len() { MARKER } else { 0 };
        widths[r.clone()].iter().sum::<usize>() + gaps + left + right
    };
    let mut shown = active..(active + 1).min(widths.len());
    // Earlier tabs first, so the first screen reads from tab 1.
    while shown.start > 0 && span(&(shown.start - 1..shown.end)) <= width {
        shown.start -= 1;
    }
    while shown.end < widths.len() && span(&(shown.start..shown.end + 1)) <= width {
        shown.end += 1;
    }
    shown
}

fn view_bar(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let Some(tab) = app.tab() else {
        return;
    };
    let mut spans = Vec::new();
    let current = tab.current_view();
    for (i, v) in tab.views().iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled(" · ", theme.dim()));
        }
        let style = if *v == current {
            theme.title()
        } else {
            theme.dim()
        };
        spans.push(Span::styled(v.title(), style));
    }
    if !tab.filter.is_empty() {
        spans.push(Span::styled(
            format!("   filter: {}", tab.filter),
            theme.dim(),
        ));
    }
    if let Conn::Down { error, .. } = &tab.conn {
        spans.push(Span::styled(format!("   {error}"), theme.bad()));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The scopes whose keys make sense on what is shown.
fn in_scope(scope: Scope, app: &App) -> bool {
    let view = app.tab().map(crate::app::Tab::current_view);
    match scope {
        Scope::Everywhere => true,
        Scope::Tables => view.is_some(),
        Scope::Entrance => matches!(view, Some(View::Boxes)),
        Scope::Publisher => matches!(view, Some(View::Files)),
        Scope::Events => matches!(view, Some(View::Events)),
    }
}

fn footer_line(f: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let line = match &app.mode {
        Mode::Filter(text) => Line::from(vec![
            Span::styled("/", theme.title()),
            Span::raw(text.clone()),
            Span::styled("▏", theme.title()),
            Span::styled("   Enter keep · Esc cancel", theme.dim()),
        ]),
        Mode::Command(text) => Line::from(vec![
            Span::styled(":", theme.title()),
            Span::raw(text.clone()),
            Span::styled("▏", theme.title()),
        ]),
        _ => {
            // The last status first, the keys after it: a message must not
            // hide what can be pressed until it is dismissed.
            let mut spans = Vec::new();
            if let Some((text, error)) = &app.status {
                spans.push(Span::styled(
                    text.clone(),
                    if *error { theme.bad() } else { theme.ok() },
                ));
                spans.push(Span::styled("   ", theme.dim()));
            }
            for b in KEYMAP.iter().filter(|b| in_scope(b.scope, app)) {
                if let Some(hint) = b.hint {
                    spans.push(Span::styled(b.label, theme.title()));
                    spans.push(Span::styled(format!(" {hint}  "), theme.dim()));
                }
            }
            Line::from(spans)
        }
    };
    f.render_widget(Paragraph::new(line), area);
}

/// A box of `width` × `height` cells in the middle of the screen, cleared.
fn popup(f: &mut Frame, width: u16, height: u16) -> Rect {
    let area = f.area();
    let w = width.min(area.width);
    let h = height.min(area.height);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, r);
    r
}

fn help(f: &mut Frame, app: &App, theme: &Theme) {
    let mut lines: Vec<Line> = Vec::new();
    for b in KEYMAP {
        let mut spans = vec![
            Span::styled(format!("{:>6} ", b.label), theme.title()),
            Span::styled(b.description, theme.text()),
        ];
        if !in_scope(b.scope, app) {
            spans[1] = Span::styled(b.description, theme.dim());
        }
        if b.dangerous {
            spans.push(Span::styled("  !", theme.bad()));
        }
        lines.push(Line::from(spans));
    }
    // Two columns when the terminal is too short for one.
    let rows_free = usize::from(f.area().height.saturating_sub(4));
    let columns = if lines.len() > rows_free { 2 } else { 1 };
    let per_column = lines.len().div_ceil(columns);
    let height = u16::try_from(per_column + 3).unwrap_or(u16::MAX);
    let width = if columns == 2 { 100 } else { 56 };
    let area = popup(f, width, height);
    let block = Block::bordered()
        .title(Span::styled(" Keys ", theme.title()))
        .title_bottom(Span::styled(
            " grey: works in another view · any key closes ",
            theme.dim(),
        ))
        .border_style(theme.border_focused());
    let inner = block.inner(area);
    f.render_widget(block, area);
    let halves =
        Layout::horizontal(vec![Constraint::Ratio(1, columns as u32); columns]).split(inner);
    let mut lines = lines.into_iter();
    for half in halves.iter() {
        let column: Vec<Line> = lines.by_ref().take(per_column).collect();
        f.render_widget(Paragraph::new(column), *half);
    }
}

fn confirm(f: &mut Frame, box_id: &str, reason: &str, theme: &Theme) {
    let lines = vec![
        Line::from(vec![
            Span::styled("Evict ", theme.text()),
            Span::styled(box_id.to_owned(), theme.bad()),
            Span::styled("?", theme.text()),
        ]),
        Line::styled(
            "It is removed at once and its heartbeats are refused for the ban period.",
            theme.dim(),
        ),
        Line::raw(""),
        Line::from(vec![
            Span::styled("Reason: ", theme.header()),
            Span::raw(reason.to_owned()),
            Span::styled("▏", theme.title()),
        ]),
        Line::raw(""),
        Line::styled("Enter evicts · Esc cancels", theme.dim()),
    ];
    let area = popup(f, 78, 9);
    let block = Block::bordered()
        .title(Span::styled(" Evict a box ", theme.bad()))
        .border_style(theme.bad());
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// A bordered block titled `title`, focused (it is the view being used).
pub fn panel<'a>(title: String, theme: &Theme) -> Block<'a> {
    Block::bordered()
        .title(Span::styled(format!(" {title} "), theme.title()))
        .border_style(theme.border_focused())
}

/// A style for a table's header row.
pub fn header_style(theme: &Theme) -> Style {
    theme.header()
}

#[cfg(test)]
mod tests;
