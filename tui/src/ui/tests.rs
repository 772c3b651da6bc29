//! Every screen drawn from fixture state at 80×24 and 120×40, compared with its
//! snapshot; colours are checked where they carry meaning (a box's state).

#![allow(clippy::unwrap_used)]

use dandelion_core::console::BoxState;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;

use crate::app::{App, Input, Mode, Net};
use crate::fixtures::{self, NOW};
use crate::input::Action;
use crate::theme::Theme;

fn render(app: &App, width: u16, height: u16) -> Buffer {
    let theme = Theme::load("dark", false).unwrap();
    let mut t = Terminal::new(TestBackend::new(width, height)).unwrap();
    t.draw(|f| super::draw(f, app, &theme)).unwrap();
    t.backend().buffer().clone()
}

fn text(buffer: &Buffer) -> String {
    let w = usize::from(buffer.area.width);
    buffer
        .content
        .chunks(w)
        .map(|row| {
            let line: String = row.iter().map(|c| c.symbol()).collect();
            line.trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn act(app: &mut App, actions: &[Action]) {
    for a in actions {
        app.update(Input::Action(*a));
    }
}

/// Both sizes of one screen.
fn snap(name: &str, app: &App) {
    for (w, h) in [(80, 24), (120, 40)] {
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), text(&render(app, w, h)));
    }
}

#[test]
fn entrance_boxes() {
    snap("entrance_boxes", &fixtures::app(false));
}

#[test]
fn entrance_boxes_in_self_preservation() {
    snap("entrance_self_preservation", &fixtures::app(true));
}

#[test]
fn entrance_geo() {
    let mut app = fixtures::app(false);
    act(&mut app, &[Action::NextView]);
    snap("entrance_geo", &app);
}

#[test]
fn entrance_events() {
    let mut app = fixtures::app(false);
    act(&mut app, &[Action::NextView, Action::NextView]);
    snap("entrance_events", &app);
}

#[test]
fn publisher_files() {
    let mut app = fixtures::app(false);
    act(&mut app, &[Action::GoTab(1)]);
    app.update(Input::Uploading {
        tab: 1,
        name: "clip.ts".into(),
        sent: 300_000,
        size: 1_000_000,
    });
    snap("publisher_files", &app);
}

#[test]
fn publisher_ranking() {
    let mut app = fixtures::app(false);
    act(&mut app, &[Action::GoTab(1), Action::NextView]);
    snap("publisher_ranking", &app);
}

#[test]
fn box_files() {
    let mut app = fixtures::app(false);
    act(&mut app, &[Action::GoTab(2)]);
    snap("box_files", &app);
}

#[test]
fn help_overlay() {
    let mut app = fixtures::app(false);
    act(&mut app, &[Action::Help]);
    snap("help", &app);
}

#[test]
fn eviction_confirmation() {
    let mut app = fixtures::app(false);
    act(
        &mut app,
        &[Action::Evict, Action::Char('f'), Action::Char('l')],
    );
    assert!(matches!(app.mode, Mode::Confirm { .. }));
    snap("evict_confirm", &app);
}

#[test]
fn file_picker() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("live")).unwrap();
    std::fs::write(root.path().join("trailer.mp4"), vec![0u8; 1500]).unwrap();
    let mut app = fixtures::app(false);
    app.start_dir = root.path().to_owned();
    act(&mut app, &[Action::GoTab(1), Action::Push, Action::Down]);
    let screen = text(&render(&app, 80, 24));
    // The temporary directory's name changes every run; the rest must not.
    let screen = screen.replace(&root.path().display().to_string(), "/tmp/picked");
    insta::assert_snapshot!("picker_80x24", screen);
}

#[test]
fn a_dead_daemon_says_when_it_reconnects_and_the_rest_still_draws() {
    let mut app = fixtures::app(false);
    app.update(Input::Net {
        tab: 1,
        net: Net::Down {
            error: "connection refused".into(),
            retry_at: NOW + 4.0,
        },
    });
    let screen = text(&render(&app, 120, 40));
    assert!(screen.contains("✗ reconnecting in 4s"), "{screen}");
    assert!(screen.contains("Taipei, TW"), "{screen}");
}

#[test]
fn box_states_have_their_colours() {
    let theme = Theme::load("dark", false).unwrap();
    let app = fixtures::app(false);
    let buffer = render(&app, 120, 40);
    for (word, state) in [
        ("active", BoxState::Active),
        ("stale", BoxState::Stale),
        ("unreachable", BoxState::Unreachable),
        ("evicted", BoxState::Evicted),
    ] {
        let expected = theme.box_state(state, false).fg;
        let found = find(&buffer, word).unwrap_or_else(|| panic!("{word} is not on screen"));
        assert_eq!(buffer[found].fg, expected.unwrap(), "{word}");
    }
    // Without colours the states are still told apart by their words.
    let plain = Theme::load("dark", true).unwrap();
    assert_eq!(plain.box_state(BoxState::Stale, false).fg, None);
}

/// Where `word` starts in the table (below the tab and view bars).
fn find(buffer: &Buffer, word: &str) -> Option<(u16, u16)> {
    let w = buffer.area.width;
    for y in 3..buffer.area.height {
        let line: String = (0..w).map(|x| buffer[(x, y)].symbol().to_owned()).collect();
        if let Some(byte) = line.find(&format!(" {word} ")) {
            let x = line[..byte].chars().count() + 1;
            return Some((u16::try_from(x).ok()?, y));
        }
    }
    None
}

#[test]
fn a_frame_of_ten_thousand_boxes_draws() {
    let mut app = fixtures::app(false);
    let mut view = fixtures::entrance_view(false);
    let template = view.boxes[0].clone();
    view.boxes = (0..10_000u32)
        .map(|i| {
            let mut b = template.clone();
            b.id = format!("box-{i:032x}");
            b.geo
                .set_lat_lon(f64::from(i % 180) - 90.0, f64::from(i % 360) - 180.0);
            b
        })
        .collect();
    app.update(Input::Net {
        tab: 0,
        net: Net::Update(dandelion_core::console::Update::Entrance(view)),
    });
    let screen = text(&render(&app, 120, 40));
    assert!(screen.contains("Boxes 10000"), "{screen}");
    act(&mut app, &[Action::NextView]);
    render(&app, 120, 40);
}

#[test]
fn a_wide_boxes_table_shows_whole_ids_and_each_current_rate() {
    let app = fixtures::app(false);
    let screen = text(&render(&app, 160, 40));
    let row = screen
        .lines()
        .find(|l| l.contains("Kaohsiung"))
        .unwrap_or_else(|| panic!("{screen}"));
    assert!(
        row.contains("box-17156075000000000000000000000005 "),
        "{row}"
    );
    assert!(row.contains("1.5 MB/s"), "the current rate: {row}");
    // Narrower, the ID is cut and the rate is under the table, for the selection.
    let screen = text(&render(&app, 120, 40));
    let row = screen.lines().find(|l| l.contains("Kaohsiung")).unwrap();
    assert!(row.contains("box-1715607500000000…"), "{row}");
}

#[test]
fn the_geo_table_and_map_show_only_what_the_filter_matches() {
    let mut app = fixtures::app(false);
    act(&mut app, &[Action::NextView]);
    let all = text(&render(&app, 120, 40));
    act(&mut app, &[Action::Filter]);
    for c in "tw".chars() {
        app.update(Input::Action(Action::Char(c)));
    }
    act(&mut app, &[Action::Submit]);
    let tw = text(&render(&app, 120, 40));
    assert!(all.contains("Tokyo") && all.contains("London"), "{all}");
    assert!(tw.contains("Taipei") && tw.contains("Kaohsiung"), "{tw}");
    assert!(!tw.contains("Tokyo") && !tw.contains("London"), "{tw}");
    assert!(tw.contains("filter: tw"), "{tw}");
    let dots = |s: &str| s.matches('●').count();
    assert!(dots(&tw) < dots(&all), "the map keeps every box:\n{tw}");
}

#[test]
fn tabs_past_the_width_are_counted_at_the_edges() {
    assert_eq!(super::tab_window(&[10, 10, 10], 0, 80), 0..3);
    // 10 + 3 + 10 + 3 + 10 = 36: two fit in 30 with a marker, the active one among them.
    assert_eq!(super::tab_window(&[10, 10, 10], 0, 30), 0..2);
    assert_eq!(super::tab_window(&[10, 10, 10], 2, 30), 1..3);
    assert_eq!(super::tab_window(&[10, 10, 10, 10, 10], 2, 30), 2..3);
    let mut app = fixtures::app(false);
    for port in 7100..7106 {
        app.attach(&format!("http://10.0.0.9:{port}"));
    }
    let top = |app: &App| {
        text(&render(app, 80, 24))
            .lines()
            .next()
            .unwrap()
            .to_owned()
    };
    let line = top(&app);
    assert!(
        line.contains("9 10.0.0.9:7105"),
        "the active tab is shown: {line}"
    );
    assert!(
        line.starts_with('‹'),
        "hidden tabs before it are counted: {line}"
    );
    act(&mut app, &[Action::GoTab(0)]);
    let line = top(&app);
    assert!(line.starts_with("1 "), "{line}");
    assert!(
        line.ends_with('›'),
        "hidden tabs after it are counted: {line}"
    );
}

#[test]
fn a_status_message_leaves_the_key_hints_on_the_footer() {
    let mut app = fixtures::app(false);
    app.say_error("cannot push: the publisher said no");
    let screen = text(&render(&app, 120, 40));
    let footer = screen.lines().last().unwrap();
    assert!(footer.starts_with("cannot push"), "{footer}");
    assert!(footer.contains("? help"), "{footer}");
}

#[test]
fn a_long_picker_says_where_it_is() {
    let (mut app, _root) = fixtures::app_with_segments(30);
    act(&mut app, &[Action::GoTab(1), Action::Push]);
    let screen = text(&render(&app, 80, 24));
    assert!(screen.contains(" 1/31 ↓ "), "{screen}");
    act(&mut app, &[Action::Bottom]);
    let screen = text(&render(&app, 80, 24));
    assert!(screen.contains(" ↑ 31/31 "), "{screen}");
}

/// The pictures in screenshots/ show the views as they look now: take.sh
/// records, beside them, the hash of each view's snapshot as it was when it
/// took them. A change to how a view looks changes its snapshot, and then
/// this fails until the pictures are taken again.
#[test]
fn every_screenshot_shows_the_look_its_view_has_now() {
    use sha2::{Digest, Sha256};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shots = root.join("screenshots");
    let recorded = std::fs::read_to_string(shots.join("views.sha256")).unwrap();
    let mut pictures = Vec::new();
    let mut stale = Vec::new();
    for line in recorded.lines().filter(|l| !l.starts_with('#')) {
        let [hash, png, snap] = <[&str; 3]>::try_from(line.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_else(|_| panic!("views.sha256: not `hash picture snapshot`: {line}"));
        let text = std::fs::read_to_string(root.join("tui/src/ui/snapshots").join(snap))
            .unwrap_or_else(|e| panic!("views.sha256 names {snap}: {e}"));
        // insta's header (between the first two `---` lines) is not the view.
        let body = text
            .strip_prefix("---\n")
            .and_then(|t| t.split_once("\n---\n"))
            .map_or(text.as_str(), |(_, body)| body);
        if format!("{:x}", Sha256::digest(body.as_bytes())) != hash {
            stale.push(format!("{png} (view: {snap})"));
        }
        pictures.push(png.to_owned());
    }
    assert!(
        stale.is_empty(),
        "screenshots show an older look of their views; run `bash screenshots/take.sh`: {}",
        stale.join(", ")
    );
    for entry in std::fs::read_dir(&shots).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".png") {
            assert!(
                pictures.contains(&name),
                "{name} is in screenshots/ but not in views.sha256 (take.sh's list)"
            );
        }
    }
}
