#![allow(clippy::unwrap_used)]

use dandelion_core::console::{BoxState, Level, Update};

use super::*;
use crate::fixtures::{self, NOW};
use crate::input::{Action, SortKey};

fn act(app: &mut App, actions: &[Action]) -> Vec<Effect> {
    let mut effects = Vec::new();
    for a in actions {
        effects.extend(app.update(Input::Action(*a)));
    }
    effects
}

fn type_text(app: &mut App, text: &str) -> Vec<Effect> {
    let actions: Vec<Action> = text.chars().map(Action::Char).collect();
    act(app, &actions)
}

#[test]
fn attaching_makes_a_tab_that_connects_once() {
    let mut app = App::new(Tokens::default(), Path::new("/"), NOW);
    let e = app.attach("http://127.0.0.1:7070/");
    assert_eq!(
        e,
        [Effect::Connect {
            tab: 0,
            url: "http://127.0.0.1:7070".into(),
            token: None
        }]
    );
    assert!(app.attach("http://127.0.0.1:7070").is_empty());
    assert_eq!(app.tabs.len(), 1);
}

#[test]
fn tokens_come_from_the_flag_or_from_each_daemons_file() {
    let mut by_url = BTreeMap::new();
    by_url.insert("http://a:1".to_owned(), "token-a".to_owned());
    let tokens = Tokens {
        given: None,
        by_url,
    };
    assert_eq!(tokens.for_url("http://a:1/").as_deref(), Some("token-a"));
    assert_eq!(tokens.for_url("http://b:1"), None);
    let given = Tokens {
        given: Some("t".into()),
        ..tokens
    };
    assert_eq!(given.for_url("http://b:1").as_deref(), Some("t"));
}

#[test]
fn heartbeats_update_rows_and_grow_the_sparkline() {
    let mut app = fixtures::app(false);
    let mut row = fixtures::entrance_view(false).boxes[0].clone();
    for i in 1..=3 {
        row.last_heartbeat += 5.0;
        row.upload_rate = Some(i * 1000);
        app.update(Input::Net {
            tab: 0,
            net: Net::Update(Update::BoxRow(Box::new(row.clone()))),
        });
    }
    let Data::Entrance(e) = &app.tabs[0].data else {
        panic!()
    };
    let entry = &e.boxes[&row.id];
    assert_eq!(
        entry.upload.iter().copied().collect::<Vec<_>>(),
        [300_000, 1000, 2000, 3000]
    );
    // The same heartbeat again (a re-sent row) adds no reading.
    app.update(Input::Net {
        tab: 0,
        net: Net::Update(Update::BoxRow(Box::new(row.clone()))),
    });
    let Data::Entrance(e) = &app.tabs[0].data else {
        panic!()
    };
    assert_eq!(e.boxes[&row.id].upload.len(), 4);
}

#[test]
fn a_box_gone_leaves_the_table() {
    let mut app = fixtures::app(false);
    let id = fixtures::entrance_view(false).boxes[1].id.clone();
    app.update(Input::Net {
        tab: 0,
        net: Net::Update(Update::BoxGone {
            id: id.clone(),
            reason: "expired".into(),
        }),
    });
    assert!(app.tabs[0].box_rows().iter().all(|b| b.view.id != id));
    assert_eq!(app.tabs[0].box_rows().len(), 4);
}

#[test]
fn filter_and_sort_the_boxes() {
    let mut app = fixtures::app(false);
    act(&mut app, &[Action::Filter]);
    type_text(&mut app, "tw");
    act(&mut app, &[Action::Submit]);
    let rows: Vec<_> = app.tabs[0]
        .box_rows()
        .iter()
        .map(|b| b.view.geo.city.clone().unwrap())
        .collect();
    assert_eq!(rows, ["Kaohsiung", "Taipei"]);
    act(&mut app, &[Action::Back]);
    assert_eq!(app.tabs[0].box_rows().len(), 5);

    act(&mut app, &[Action::Sort(SortKey::Upload)]);
    let first = app.tabs[0].box_rows()[0].view.upload_rate;
    act(&mut app, &[Action::Sort(SortKey::Upload)]);
    let first_desc = app.tabs[0].box_rows()[0].view.upload_rate;
    assert!(first < first_desc, "{first:?} then {first_desc:?}");
    act(&mut app, &[Action::Sort(SortKey::Id)]);
    let ascending: Vec<_> = app.tabs[0]
        .box_rows()
        .iter()
        .map(|b| b.view.id.clone())
        .collect();
    act(&mut app, &[Action::Sort(SortKey::Id)]);
    let descending: Vec<_> = app.tabs[0]
        .box_rows()
        .iter()
        .map(|b| b.view.id.clone())
        .collect();
    assert_eq!(
        descending,
        ascending.iter().rev().cloned().collect::<Vec<_>>()
    );
    act(&mut app, &[Action::Sort(SortKey::State)]);
    assert_eq!(app.tabs[0].box_rows()[0].view.state, BoxState::Active);
}

#[test]
fn geo_rows_total_countries_regions_and_cities() {
    let app = fixtures::app(false);
    let Data::Entrance(e) = &app.tabs[0].data else {
        panic!()
    };
    let rows = e.geo("");
    let tw = rows.iter().find(|r| r.label == "TW").unwrap();
    assert_eq!((tw.depth, tw.totals.boxes, tw.totals.active), (0, 2, 2));
    // Spare upload of the two Taiwanese boxes: 2 MB/s cap minus 0.3 and 1.5 MB/s.
    assert_eq!(tw.totals.spare_upload, 1_700_000 + 500_000);
    assert!(rows.iter().any(|r| r.depth == 2 && r.label == "Kaohsiung"));
    // Evicted boxes are not part of the distribution.
    assert!(rows.iter().all(|r| r.label != "DE"));
}

/// The geo totals kept up to date box by box are those of the boxes as they are now.
#[test]
fn geo_totals_follow_changes_moves_evictions_and_removals() {
    let app = fixtures::app(false);
    let Data::Entrance(e) = &app.tabs[0].data else {
        panic!()
    };
    let mut e = e.clone();
    let view_of = |e: &entrance::EntranceData, state: BoxState, n: usize| {
        let mut of_state = e.boxes.values().filter(|b| b.view.state == state);
        of_state.nth(n).unwrap().view.clone()
    };
    // The evicted box (Frankfurt) comes back; an active one moves; another is evicted.
    let mut back = view_of(&e, BoxState::Evicted, 0);
    back.state = BoxState::Active;
    e.upsert(back);
    let mut moved = e
        .boxes
        .values()
        .find(|b| b.view.geo.country.as_deref() == Some("TW"))
        .unwrap()
        .view
        .clone();
    moved.geo = fixtures::geo("Osaka", "Osaka", "JP", "34.69,135.50");
    moved.upload_rate = Some(100);
    moved.last_heartbeat += 5.0;
    e.upsert(moved);
    let mut evicted = e
        .boxes
        .values()
        .find(|b| b.view.geo.country.as_deref() == Some("TW"))
        .unwrap()
        .view
        .clone();
    evicted.state = BoxState::Evicted;
    e.upsert(evicted);
    let gone = view_of(&e, BoxState::Stale, 0).id;
    e.remove(&gone);
    e.remove("no-such-box");
    let fresh = entrance::EntranceData::new(dandelion_core::console::EntranceView {
        status: e.status.clone(),
        boxes: e.boxes.values().map(|b| b.view.clone()).collect(),
    });
    assert_eq!(e.geo(""), fresh.geo(""));
    assert!(e.geo("").iter().any(|r| r.label == "Osaka"));
    assert!(
        e.geo("").iter().any(|r| r.label == "DE"),
        "the box back from eviction"
    );
}

#[test]
fn eviction_asks_for_a_reason_naming_the_box_then_evicts() {
    let mut app = fixtures::app(false);
    let target = app.tabs[0].box_rows()[1].view.id.clone();
    assert!(act(&mut app, &[Action::Down, Action::Evict]).is_empty());
    assert_eq!(
        app.mode,
        Mode::Confirm {
            box_id: target.clone(),
            reason: String::new()
        }
    );
    // An empty reason evicts nothing.
    assert!(act(&mut app, &[Action::Submit]).is_empty());
    assert!(app.status.as_ref().unwrap().1);
    act(&mut app, &[Action::Evict]);
    type_text(&mut app, "lies about its uplink");
    let effects = act(&mut app, &[Action::Submit]);
    assert_eq!(
        effects,
        [Effect::Evict {
            tab: 0,
            url: "http://127.0.0.1:7070".into(),
            token: None,
            box_id: target,
            reason: "lies about its uplink".into()
        }]
    );
    // Esc in the confirmation evicts nothing.
    act(&mut app, &[Action::Evict]);
    assert!(act(&mut app, &[Action::Cancel]).is_empty());
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn a_refused_action_shows_the_daemons_reason() {
    let mut app = fixtures::app(false);
    app.update(Input::Done {
        tab: 0,
        result: Err("refused (403 Forbidden): wrong admin token".into()),
    });
    assert_eq!(
        app.status,
        Some(("refused (403 Forbidden): wrong admin token".into(), true))
    );
}

#[test]
fn push_opens_the_picker_only_on_a_publisher() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("clip.ts"), b"bytes").unwrap();
    let mut app = fixtures::app(false);
    app.start_dir = root.path().to_owned();
    act(&mut app, &[Action::Push]);
    assert!(matches!(app.mode, Mode::Normal));
    assert!(app.status.as_ref().unwrap().1);
    act(&mut app, &[Action::GoTab(1), Action::Push]);
    assert!(matches!(app.mode, Mode::Picker(_)));
    // "..", then clip.ts.
    let effects = act(&mut app, &[Action::Down, Action::Open]);
    assert_eq!(
        effects,
        [Effect::Push {
            tab: 1,
            url: "http://127.0.0.1:7072".into(),
            token: None,
            path: root.path().join("clip.ts"),
            name: "clip.ts".into()
        }]
    );
    app.update(Input::Uploading {
        tab: 1,
        name: "clip.ts".into(),
        sent: 3,
        size: 5,
    });
    assert_eq!(app.tabs[1].uploads[0].sent, 3);
}

#[test]
fn views_cycle_per_role_and_tabs_by_number() {
    let mut app = fixtures::app(false);
    assert_eq!(app.tabs[0].current_view(), View::Boxes);
    act(&mut app, &[Action::NextView]);
    assert_eq!(app.tabs[0].current_view(), View::Geo);
    act(&mut app, &[Action::NextView, Action::NextView]);
    assert_eq!(app.tabs[0].current_view(), View::Boxes);
    act(&mut app, &[Action::GoTab(2)]);
    assert_eq!(app.tabs[app.active].current_view(), View::Stored);
    act(&mut app, &[Action::GoTab(8)]);
    assert_eq!(app.active, 2);
}

#[test]
fn events_are_newest_first_and_filter_by_level() {
    let mut app = fixtures::app(false);
    let texts: Vec<_> = app.tabs[0].event_rows().iter().map(|e| e.level).collect();
    assert_eq!(texts, [Level::Warn, Level::Warn, Level::Info]);
    act(&mut app, &[Action::Level]);
    assert_eq!(app.tabs[0].event_rows().len(), 2);
    act(&mut app, &[Action::Level]);
    assert!(app.tabs[0].event_rows().is_empty());
}

#[test]
fn commands_connect_and_unknown_ones_say_so() {
    let mut app = fixtures::app(false);
    act(&mut app, &[Action::Command]);
    type_text(&mut app, "connect http://10.0.0.9:7071");
    let e = act(&mut app, &[Action::Submit]);
    assert!(matches!(&e[..], [Effect::Connect { tab: 3, .. }]));
    act(&mut app, &[Action::Command]);
    type_text(&mut app, "frobnicate");
    act(&mut app, &[Action::Submit]);
    assert!(
        app.status
            .as_ref()
            .unwrap()
            .0
            .contains("unknown command `frobnicate`")
    );
    act(&mut app, &[Action::Command]);
    type_text(&mut app, "q");
    assert_eq!(act(&mut app, &[Action::Submit]), [Effect::Quit]);
}

#[test]
fn enter_on_a_box_opens_its_own_view() {
    let mut app = fixtures::app(false);
    let first = app.tabs[0].box_rows()[0].view.data_url.clone().unwrap();
    let e = act(&mut app, &[Action::Open]);
    assert!(matches!(&e[..], [Effect::Connect { tab: 3, url, .. }] if *url == first));
    assert_eq!(app.active, 3);
    // A box that has a tab already: Enter switches to it.
    let at = app.tabs[0]
        .box_rows()
        .iter()
        .position(|b| b.view.data_url.as_deref() == Some("http://198.51.100.1:7071"))
        .unwrap();
    app.tabs[0].selected = at;
    act(&mut app, &[Action::GoTab(0)]);
    assert!(act(&mut app, &[Action::Open]).is_empty());
    assert_eq!(app.active, 2);
}

/// The admin token the operator gave goes to the daemons they named, never to
/// a URL a box advertised (a box owner could name a server of their own).
#[test]
fn a_box_tab_opened_from_the_table_gets_no_token_the_operator_gave() {
    let mut app = fixtures::app(false);
    app.tokens = Tokens {
        given: Some("operator-secret".into()),
        by_url: [(
            "http://198.51.100.2:7071".to_owned(),
            "box-2-own".to_owned(),
        )]
        .into(),
    };
    let url = app.tabs[0].box_rows()[0].view.data_url.clone().unwrap();
    let e = act(&mut app, &[Action::Open]);
    let expected = app.tokens.by_url.get(&url).cloned();
    assert!(
        matches!(&e[..], [Effect::Connect { url: u, token, .. }] if *u == url && *token == expected),
        "{e:?}"
    );
    assert_ne!(expected.as_deref(), Some("operator-secret"));
    // Named by the operator, the same kind of URL gets the given token.
    let e = app.attach("http://198.51.100.9:7071");
    assert!(
        matches!(&e[..], [Effect::Connect { token: Some(t), .. }] if t == "operator-secret"),
        "{e:?}"
    );
}

#[test]
fn a_dead_daemon_is_shown_down_and_its_data_kept() {
    let mut app = fixtures::app(false);
    app.update(Input::Net {
        tab: 0,
        net: Net::Down {
            error: "connection refused".into(),
            retry_at: NOW + 4.0,
        },
    });
    assert!(matches!(app.tabs[0].conn, Conn::Down { .. }));
    assert_eq!(app.tabs[0].box_rows().len(), 5);
}

#[test]
fn ttls_count_down_from_when_the_view_arrived() {
    let mut app = fixtures::app(false);
    app.update(Input::Tick(NOW + 10.0));
    assert_eq!(app.tabs[1].ttl_now(58, app.now), 48);
    assert_eq!(app.tabs[1].ttl_now(5, app.now), 0);
}

#[test]
fn a_context_command_replaces_every_tab_with_the_contexts_daemons() {
    let mut app = fixtures::app(false);
    assert_eq!(app.tabs.len(), 3);
    act(&mut app, &[Action::Command]);
    type_text(&mut app, "context lab");
    let e = act(&mut app, &[Action::Submit]);
    assert_eq!(e, [Effect::SwitchContext("lab".into())]);

    // What the shell does once it has read the context.
    let mut by_url = BTreeMap::new();
    by_url.insert("https://e.lab:7070".to_owned(), "lab-entrance".to_owned());
    let tokens = Tokens {
        given: None,
        by_url,
    };
    let urls = [
        "https://e.lab:7070".to_owned(),
        "https://b.lab:7071#box-x".to_owned(),
    ];
    let e = app.open_context("lab", &urls, tokens);
    assert_eq!(
        e,
        [
            Effect::Connect {
                tab: 0,
                url: "https://e.lab:7070".into(),
                token: Some("lab-entrance".into()),
            },
            Effect::Connect {
                tab: 1,
                url: "https://b.lab:7071#box-x".into(),
                token: None,
            },
        ]
    );
    assert_eq!(app.tabs.len(), 2);
    assert_eq!(app.active, 0);
    assert!(
        app.status
            .as_ref()
            .unwrap()
            .0
            .contains("context lab: 2 daemon(s)")
    );

    act(&mut app, &[Action::Command]);
    type_text(&mut app, "context");
    assert!(act(&mut app, &[Action::Submit]).is_empty());
    assert!(app.status.as_ref().unwrap().1, "a missing name is an error");
}

#[test]
fn close_takes_the_active_tab_away_and_attaches_the_rest_again_under_their_numbers() {
    let mut app = fixtures::app(false);
    let urls: Vec<String> = app.tabs.iter().map(|t| t.url.clone()).collect();
    act(&mut app, &[Action::GoTab(1)]);
    act(&mut app, &[Action::Command]);
    type_text(&mut app, "close");
    let e = act(&mut app, &[Action::Submit]);
    assert_eq!(e.len(), 3, "{e:?}");
    assert_eq!(e[0], Effect::Rewire, "the old feeds are cut first");
    for (tab, url) in [(0, &urls[0]), (1, &urls[2])] {
        assert!(
            e.contains(&Effect::Connect {
                tab,
                url: url.clone(),
                token: app.tabs[tab].token.clone(),
            }),
            "{e:?}"
        );
    }
    assert_eq!(app.tabs.len(), 2);
    assert_eq!(app.tabs[1].url, urls[2]);
    assert_eq!(app.active, 1);
    assert!(app.status.as_ref().unwrap().0.contains(&urls[1]));

    // The last tab stays: :q is how to leave.
    for _ in 0..2 {
        act(&mut app, &[Action::Command]);
        type_text(&mut app, "close");
        act(&mut app, &[Action::Submit]);
    }
    assert_eq!(app.tabs.len(), 1);
    assert!(app.status.as_ref().unwrap().0.contains(":q quits"));
}

#[test]
fn the_picker_goes_to_its_first_and_last_entry() {
    let (mut app, _root) = fixtures::app_with_segments(30);
    act(&mut app, &[Action::GoTab(1), Action::Push, Action::Bottom]);
    let Mode::Picker(p) = &app.mode else {
        panic!("no picker: {:?}", app.mode)
    };
    assert_eq!(p.entries[p.selected].name, "seg29.ts");
    act(&mut app, &[Action::Top]);
    let Mode::Picker(p) = &app.mode else {
        panic!("no picker")
    };
    assert_eq!(p.selected, 0);
}

#[test]
fn the_geography_follows_the_filter() {
    let app = fixtures::app(false);
    let Data::Entrance(e) = &app.tabs[0].data else {
        panic!("not an entrance")
    };
    let labels = |rows: Vec<crate::app::entrance::GeoRow>| -> Vec<String> {
        rows.into_iter().map(|r| r.label).collect()
    };
    let all = labels(e.geo(""));
    assert!(
        all.contains(&"GB".to_owned()) && all.contains(&"TW".to_owned()),
        "{all:?}"
    );
    let tw = labels(e.geo("tw"));
    assert!(tw.contains(&"TW".to_owned()), "{tw:?}");
    assert!(
        !tw.contains(&"GB".to_owned()) && !tw.contains(&"JP".to_owned()),
        "{tw:?}"
    );
    assert_eq!(e.located("tw").count(), 2);
    let located = e.boxes.values().filter(|b| b.lat_lon.is_some()).count();
    assert!(located > 2);
    assert_eq!(e.located("").count(), located);
    assert!(e.geo("nowhere-at-all").is_empty());
}
