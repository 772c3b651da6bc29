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
use super::{WIDE_FROM, header_style, panel};
use crate::app::entrance::{BoxEntry, EntranceData, location};
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
    let selected = tab.selected.min(rows.len().saturating_sub(1));
    let Columns {
        wide,
        id: id_w,
        spark: spark_w,
        rate: with_rate,
    } = columns(table_area.width);
    let mut header = vec!["ID", "STATE", "AGE", "LOCATION", "UPLOAD", "CAP"];
    if wide {
        header.push("SERVED");
    }
    header.extend(["FREE", "HB"]);
    if wide {
        header.push("VERSION");
    }
    let title = format!(
        "Boxes {} · sort {}{}",
        rows.len(),
        sort_name(tab),
        if tab.descending { " ↓" } else { " ↑" }
    );
    let block = panel(title, theme);
    // Cells are made for the rows on screen only, not for the whole fleet.
    let shown = visible(rows.len(), selected, block.inner(table_area).height);
    let table_rows = rows[shown.clone()].iter().map(|entry| {
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
            Cell::from(upload_cell(entry, spark_w, with_rate, theme)),
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
        Constraint::Min(LOCATION_MIN),
        Constraint::Length(
            u16::try_from(spark_w + if with_rate { RATE_W + 1 } else { 0 }).unwrap_or(8),
        ),
        Constraint::Length(10),
    ];
    if wide {
        widths.push(Constraint::Length(9));
    }
    widths.extend([Constraint::Length(8), Constraint::Length(4)]);
    if wide {
        widths.push(Constraint::Length(12));
    }
    let table = Table::new(table_rows, widths)
        .header(Row::new(header).style(header_style(theme)))
        .row_highlight_style(theme.selection())
        .block(block);
    let mut state = TableState::default().with_selected(Some(selected - shown.start));
    f.render_stateful_widget(table, table_area, &mut state);

    let lines = match rows.get(selected) {
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

/// A box ID in full: `box-` and 32 hex digits.
const ID_FULL: usize = 36;
/// What the location column keeps before the ID takes more: "City, CC" fits.
const LOCATION_MIN: u16 = 12;
const LOCATION_WANTED: usize = 24;
/// The current upload rate beside the sparkline, `999.9 kB/s` at most.
const RATE_W: usize = 10;
/// Every other column of the wide table, with the spaces between columns and
/// the borders: STATE 11, AGE 4, UPLOAD 12 + 1 + RATE_W, CAP 10, SERVED 9,
/// FREE 8, HB 4, VERSION 12; 9 gaps; 2 borders.
const WIDE_REST: usize = 11 + 4 + 12 + 1 + RATE_W + 10 + 9 + 8 + 4 + 12 + 9 + 2;

/// The ID's and the sparkline's widths in a boxes table `width` wide: a wide
/// table gives the ID what the location does not need, up to the whole ID,
/// so that boxes told apart by their last digits are told apart here too.
fn columns(width: u16) -> Columns {
    let spare = usize::from(width).saturating_sub(WIDE_REST + LOCATION_WANTED);
    if width < WIDE_FROM {
        Columns {
            wide: false,
            id: 13,
            spark: 8,
            rate: false,
        }
    } else if spare < 21 {
        // Wide, but not enough for the rate beside the sparkline as well.
        Columns {
            wide: true,
            id: 21,
            spark: 16,
            rate: false,
        }
    } else {
        Columns {
            wide: true,
            id: spare.min(ID_FULL),
            spark: 12,
            rate: true,
        }
    }
}

/// Whether a boxes table has the wide table's extra columns (SERVED,
/// VERSION), how wide its ID and sparkline are, and whether the current rate
/// is written beside the sparkline.
struct Columns {
    wide: bool,
    id: usize,
    spark: usize,
    rate: bool,
}

/// The UPLOAD cell: the recent rates as a sparkline and, where the table has
/// room, the current rate beside it (else the detail line under the table says
/// it for the selected box).
fn upload_cell<'a>(entry: &BoxEntry, spark_w: usize, with_rate: bool, theme: &Theme) -> Line<'a> {
    let b = &entry.view;
    let spark = Span::styled(
        sparkline(entry.upload.iter().copied(), spark_w, b.upload_cap),
        theme.spark(),
    );
    if !with_rate {
        return Line::from(spark);
    }
    Line::from(vec![
        spark,
        Span::styled(format!(" {:>RATE_W$}", rate(b.upload_rate)), theme.text()),
    ])
}

/// The rows a bordered table with a one-line header shows in `inner_height`
/// lines (its block's inside) with row `selected` selected: ratatui, given a
/// fresh `TableState`, starts at the top and scrolls just far enough for the
/// selection to be on screen. Passing it only these rows draws the same.
pub fn visible(len: usize, selected: usize, inner_height: u16) -> std::ops::Range<usize> {
    let lines = usize::from(inner_height.saturating_sub(1)).max(1);
    let start = (selected + 1).saturating_sub(lines).min(len);
    start..len.min(start + lines)
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
    let table_width = if area.width >= WIDE_FROM { 56 } else { 42 };
    let [left, right] =
        Layout::horizontal([Constraint::Length(table_width), Constraint::Min(20)]).areas(area);
    let rows = data.geo(&tab.filter);
    let selected = tab.selected.min(rows.len().saturating_sub(1));
    let block = panel("Where the boxes are".into(), theme);
    let shown = visible(rows.len(), selected, block.inner(left).height);
    let table_rows = rows[shown.clone()].iter().map(|r| {
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
    .block(block);
    let mut state = TableState::default().with_selected(Some(selected - shown.start));
    f.render_stateful_widget(table, left, &mut state);
    world_map(f, right, data, &tab.filter, theme);
}

fn world_map(f: &mut Frame, area: Rect, data: &EntranceData, filter: &str, theme: &Theme) {
    let block = panel("Map".into(), theme);
    let dots = dots(data.located(filter), block.inner(area), theme);
    let land = theme.map_land();
    let canvas = Canvas::default()
        .block(block)
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

/// The boxes' dots for a map drawn inside `inner`, one per character cell: a
/// dot covers its whole cell, so the boxes in one cell can be printed as one
/// label, which draws the same map and, with a large fleet (most boxes sharing
/// a cell with others), saves thousands of labels.
fn dots<'a>(
    boxes: impl Iterator<Item = &'a BoxEntry>,
    inner: Rect,
    theme: &Theme,
) -> Vec<(f64, f64, Style)> {
    let (w, h) = (usize::from(inner.width), usize::from(inner.height));
    if w == 0 || h == 0 {
        return Vec::new();
    }
    // Where ratatui's canvas puts a label at (x, y) within bounds of 360° × 180°.
    let (rx, ry) = (f64::from(inner.width - 1), f64::from(inner.height - 1));
    let mut cells: Vec<Option<(f64, f64, Style)>> = vec![None; w * h];
    for b in boxes {
        let Some((lat, lon)) = b.lat_lon else {
            continue;
        };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // in bounds, ≥ 0
        let (x, y) = (
            ((lon - -180.0) * rx / 360.0) as usize,
            ((90.0 - lat) * ry / 180.0) as usize,
        );
        let cell = &mut cells[y.min(h - 1) * w + x.min(w - 1)];
        // Each label printed over a cell patches its style: the last colour
        // wins, modifiers (bold) add up. One label with the patched style does both.
        let style = theme.box_state(b.view.state, b.view.legacy);
        let style = cell.map_or(style, |(_, _, before)| before.patch(style));
        *cell = Some((lon, lat, style));
    }
    cells.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;
    use ratatui::widgets::canvas::Canvas;
    use ratatui::widgets::{Block, Row, Table, TableState};

    use super::visible;

    fn draw(w: u16, h: u16, paint: impl FnOnce(&mut ratatui::Frame)) -> Buffer {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(paint).unwrap();
        t.backend().buffer().clone()
    }

    /// A table given only the rows `visible` picks draws what it draws given them all.
    #[test]
    fn only_the_visible_rows_draw_the_same_table() {
        for len in [0usize, 1, 5, 17, 18, 19, 300] {
            for height in [0u16, 1, 2, 3, 4, 10, 20] {
                for selected in [0, 1, 5, 16, 17, 18, 19, 150, 299, 1000] {
                    let selected = selected.min(len.saturating_sub(1));
                    let rows: Vec<String> = (0..len).map(|i| format!("row {i}")).collect();
                    fn table(rows: &[String]) -> Table<'_> {
                        Table::new(rows.iter().map(|r| Row::new([r.as_str()])), [20])
                            .header(Row::new(["HEAD"]))
                            .row_highlight_style(ratatui::style::Style::new().bold())
                            .block(Block::bordered())
                    }
                    let all = draw(24, height, |f| {
                        let mut s = TableState::default().with_selected(Some(selected));
                        f.render_stateful_widget(table(&rows), f.area(), &mut s);
                    });
                    let inner = height.saturating_sub(2);
                    let shown = visible(len, selected, inner);
                    let some = draw(24, height, |f| {
                        let mut s =
                            TableState::default().with_selected(Some(selected - shown.start));
                        let t = table(&rows[shown.clone()]);
                        f.render_stateful_widget(t, f.area(), &mut s);
                    });
                    assert_eq!(
                        all, some,
                        "{len} rows, height {height}, row {selected} selected"
                    );
                }
            }
        }
    }

    /// One dot per cell draws the map that every box's dot draws.
    #[test]
    fn one_dot_per_cell_draws_the_same_map() {
        use crate::app::entrance::EntranceData;
        use dandelion_core::console::{EntranceStatus, EntranceView};

        let theme = crate::theme::Theme::load("dark", false).unwrap();
        let template = crate::fixtures::entrance_view(false).boxes;
        let boxes = (0..3000u32)
            .map(|i| {
                let mut b = template[(i % 5) as usize].clone();
                b.id = format!("box-{i:032x}");
                // Irregular spacing, edges included.
                let lat = (f64::from(i.wrapping_mul(7919) % 18_001) / 100.0) - 90.0;
                let lon = (f64::from(i.wrapping_mul(104_729) % 36_001) / 100.0) - 180.0;
                b.geo.set_lat_lon(lat, lon);
                b
            })
            .collect();
        let data = EntranceData::new(EntranceView {
            status: EntranceStatus {
                self_preservation: None,
                heartbeat_interval: 5.0,
            },
            boxes,
        });
        for (w, h) in [(20, 8), (64, 30), (150, 58), (3, 3)] {
            let canvas = |dots: Vec<(f64, f64, ratatui::style::Style)>| {
                Canvas::default()
                    .block(Block::bordered())
                    .x_bounds([-180.0, 180.0])
                    .y_bounds([-90.0, 90.0])
                    .paint(move |ctx| {
                        for (x, y, style) in &dots {
                            ctx.print(*x, *y, ratatui::text::Span::styled("●", *style));
                        }
                    })
            };
            let every: Vec<_> = data
                .boxes
                .values()
                .filter_map(|b| {
                    let (lat, lon) = b.lat_lon?;
                    Some((lon, lat, theme.box_state(b.view.state, b.view.legacy)))
                })
                .collect();
            let all = draw(w, h, |f| f.render_widget(canvas(every), f.area()));
            let area = ratatui::layout::Rect::new(0, 0, w, h);
            let fewer = super::dots(data.located(""), Block::bordered().inner(area), &theme);
            assert!(fewer.len() <= usize::from(w) * usize::from(h));
            let some = draw(w, h, |f| f.render_widget(canvas(fewer), f.area()));
            assert_eq!(all, some, "{w}x{h}");
        }
    }
}
