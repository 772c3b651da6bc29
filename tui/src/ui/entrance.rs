//! The entrance's views: its boxes as a table (with a live upload sparkline
//! each), and where they are: a country → region → city table beside a world
//! map with a dot per box coloured by state.

use dandelion_core::console::BoxState;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::canvas::{Canvas, Map, MapResolution};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};

use super::format::{age, bytes, of_limit, opt_bytes, rate, short_id, sparkline};
use super::{header_style, panel};
use crate::app::entrance::{EntranceData, location};
use crate::app::{Data, Tab};
use crate::theme::Theme;

/// The self-preservation banner over the view, when it is on; returns the rest.
fn banner(f: &mut Frame, area: Rect, data: &EntranceData, theme: &Theme) -> Rect {
    let Some(reason) = &data.status.self_preservation else {
        return area;
    };
    let [top, rest] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let text = format!(" SELF-PRESERVATION: not expiring boxes — {reason} ");
    f.render_widget(Paragraph::new(text).style(theme.banner()), top);
    rest
}

pub fn boxes(f: &mut Frame, area: Rect, tab: &Tab, now: f64, theme: &Theme) {
    let Data::Entrance(data) = &tab.data else {
        return waiting(f, area, tab, theme);
    };
    let area = banner(f, area, data, theme);
    let [table_area, detail] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(2)]).areas(area);
    let now = now + tab.offset;
    let rows = tab.box_rows();
    let wide = table_area.width >= 110;
    let (id_w, spark_w) = if wide { (21, 16) } else { (13, 8) };
    let mut header = vec!["ID", "STATE", "AGE", "LOCATION", "UPLOAD", "CAP"];
    if wide {
        header.push("SERVED");
    }
    header.extend(["FREE", "HB"]);
    if wide {
        header.push("VERSION");
    }
    let table_rows = rows.iter().map(|entry| {
        let b = &entry.view;
        let state = if b.legacy && b.state == BoxState::Active {
            "legacy".to_owned()
        } else {
            b.state.as_str().to_owned()
        };
        let mut cells = vec![
            Cell::from(short_id(&b.id, id_w)),
            Cell::from(state).style(theme.box_state(b.state, b.legacy)),
            Cell::from(age(now - b.since)),
            Cell::from(location(b)),
            Cell::from(sparkline(
                entry.upload.iter().copied(),
                spark_w,
                b.upload_cap,
            ))
            .style(theme.spark()),
            Cell::from(rate(b.upload_cap)),
        ];
        if wide {
            cells.push(Cell::from(opt_bytes(b.bytes_served)));
        }
        cells.push(Cell::from(opt_bytes(b.free_storage)));
        cells.push(Cell::from(age(now - b.last_heartbeat)));
        if wide {
            cells.push(Cell::from(b.version.clone().unwrap_or_else(|| "-".into())));
        }
        Row::new(cells).style(theme.text())
    });
    let mut widths = vec![
        Constraint::Length(u16::try_from(id_w).unwrap_or(13)),
        Constraint::Length(11),
        Constraint::Length(4),
        Constraint::Min(12),
        Constraint::Length(u16::try_from(spark_w).unwrap_or(8)),
        Constraint::Length(10),
    ];
    if wide {
        widths.push(Constraint::Length(9));
    }
    widths.extend([Constraint::Length(8), Constraint::Length(4)]);
    if wide {
        widths.push(Constraint::Length(12));
    }
    let title = format!(
        "Boxes {} · sort {}{}",
        rows.len(),
        sort_name(tab),
        if tab.descending { " ↓" } else { " ↑" }
    );
    let table = Table::new(table_rows, widths)
        .header(Row::new(header).style(header_style(theme)))
        .row_highlight_style(theme.selection())
        .block(panel(title, theme));
    let mut state = TableState::default().with_selected(Some(tab.selected_row()));
    f.render_stateful_widget(table, table_area, &mut state);

    let lines = match rows.get(tab.selected_row()) {
        Some(entry) => {
            let b = &entry.view;
            vec![
                Line::from(vec![
                    Span::styled(b.id.clone(), theme.header()),
                    Span::raw("  "),
                    Span::styled(
                        format!(
                            "{} for {}: {}",
                            b.state.as_str(),
                            age(now - b.since),
                            b.reason
                        ),
                        theme.box_state(b.state, b.legacy),
                    ),
                ]),
                Line::styled(
                    format!(
                        "{} · {} · location from {} · upload {} {}",
                        b.observed_ip.as_deref().unwrap_or("-"),
                        b.data_url.as_deref().unwrap_or("-"),
                        b.geo_source,
                        rate(b.upload_rate),
                        of_limit(b.upload_cap.map(|c| rate(Some(c))), "no cap"),
                    ),
                    theme.dim(),
                ),
            ]
        }
        None => vec![Line::styled("No boxes.", theme.dim())],
    };
    f.render_widget(Paragraph::new(lines), detail);
}

fn sort_name(tab: &Tab) -> &'static str {
    use crate::input::SortKey as K;
    match tab.sort {
        K::Id => "ID",
        K::State => "state",
        K::Location => "location",
        K::Upload => "upload",
        K::Free => "free",
        K::Heartbeat => "heartbeat",
        K::Name => "name",
        K::Size => "size",
        K::Ttl => "TTL",
    }
}

/// What a tab shows before the daemon's first view arrived.
pub fn waiting(f: &mut Frame, area: Rect, tab: &Tab, theme: &Theme) {
    let text = match &tab.conn {
        crate::app::Conn::Down { error, .. } => format!("Cannot reach {}: {error}", tab.url),
        _ => format!("Waiting for {}…", tab.url),
    };
    f.render_widget(
        Paragraph::new(text)
            .style(theme.dim())
            .block(panel(tab.url.clone(), theme)),
        area,
    );
}

pub fn geo(f: &mut Frame, area: Rect, tab: &Tab, theme: &Theme) {
    let Data::Entrance(data) = &tab.data else {
        return waiting(f, area, tab, theme);
    };
    let area = banner(f, area, data, theme);
    let table_width = if area.width >= 110 { 56 } else { 42 };
    let [left, right] =
        Layout::horizontal([Constraint::Length(table_width), Constraint::Min(20)]).areas(area);
    let rows = data.geo();
    let table_rows = rows.iter().map(|r| {
        let indent = "  ".repeat(usize::from(r.depth));
        let style = if r.depth == 0 {
            theme.header()
        } else {
            theme.text()
        };
        Row::new(vec![
            Cell::from(format!("{indent}{}", r.label)),
            Cell::from(format!("{}/{}", r.totals.active, r.totals.boxes)),
            Cell::from(if r.totals.capped == 0 {
                "-".to_owned()
            } else {
                format!("{}/s", bytes(r.totals.spare_upload))
            }),
            Cell::from(bytes(r.totals.free_storage)),
        ])
        .style(style)
    });
    let table = Table::new(
        table_rows,
        [
            Constraint::Min(12),
            Constraint::Length(5),
            Constraint::Length(9),
            Constraint::Length(7),
        ],
    )
    .header(Row::new(["PLACE", "LIVE", "SPARE", "FREE"]).style(header_style(theme)))
    .row_highlight_style(theme.selection())
    .block(panel("Where the boxes are".into(), theme));
    let mut state = TableState::default().with_selected(Some(tab.selected_row()));
    f.render_stateful_widget(table, left, &mut state);
    world_map(f, right, data, theme);
}

fn world_map(f: &mut Frame, area: Rect, data: &EntranceData, theme: &Theme) {
    let dots: Vec<(f64, f64, Style)> = data
        .boxes
        .values()
        .filter_map(|b| {
            let (lat, lon) = b.view.lat_lon()?;
            Some((lon, lat, theme.box_state(b.view.state, b.view.legacy)))
        })
        .collect();
    let land = theme.map_land();
    let canvas = Canvas::default()
        .block(panel("Map".into(), theme))
        .marker(ratatui::symbols::Marker::Braille)
        .x_bounds([-180.0, 180.0])
        .y_bounds([-90.0, 90.0])
        .paint(move |ctx| {
            ctx.draw(&Map {
                color: land,
                resolution: MapResolution::High,
            });
            // A printed dot is a whole cell, visible where a Braille point is not.
            ctx.layer();
            for (x, y, style) in &dots {
                ctx.print(*x, *y, Span::styled("●", *style));
            }
        });
    f.render_widget(canvas, area);
}
