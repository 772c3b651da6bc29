//! How long the console takes to draw one frame of an entrance with 10 000
//! boxes, in the Boxes table and on the Geo view's map, against the same with
//! 10 boxes measured in the same run (the machine is shared, so the ratio is
//! what to compare across runs).
//!
//! The state is built the way the console builds it — an `Entrance` view, then
//! heartbeats as `BoxRow` updates so every box has a full upload history — and
//! drawn with the console's own `ui::draw` into ratatui's `TestBackend`.
//!
//! ```sh
//! cargo run --release -p dandelion-console --example render_bench [-- --frames 200]
//! ```

#[path = "common/machine.rs"]
mod machine;
use machine::machine_load;

use std::time::{Duration, Instant};

use anyhow::Context;
use dandelion_console::app::{App, Input, Net, Tokens};
use dandelion_console::input::Action;
use dandelion_console::theme::Theme;
use dandelion_core::console::{BoxState, BoxView, EntranceStatus, EntranceView, Hello, Update};
use dandelion_core::protocol::GeoIp;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const NOW: f64 = 1_800_000_000.0;
const SIZES: [(u16, u16); 2] = [(120, 40), (200, 60)];

fn main() -> anyhow::Result<()> {
    let mut frames = 200usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--frames" => {
                frames = args
                    .next()
                    .context("--frames needs a number")?
                    .parse()
                    .context("--frames needs a number")?;
            }
            other => anyhow::bail!("unknown argument {other}; usage: render_bench [--frames N]"),
        }
    }
    let frames = frames.clamp(10, 100_000);
    println!("{}", machine_load());
    println!("frames per case: {frames} (after 10 unmeasured)");
    let theme = Theme::load("dark", false)?;
    let mut results = Vec::new();
    for boxes in [10u32, 10_000] {
        let started = Instant::now();
        let app = app_with(boxes);
        println!(
            "state with {boxes} boxes built in {:.0} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        for (view, app) in [("Boxes", app.clone()), ("Geo", geo_view(app))] {
            for (w, h) in SIZES {
                let stats = measure(&app, &theme, w, h, frames)?;
                println!(
                    "{boxes:>6} boxes  {view:<5} {w}x{h}  mean {:6.2} ms  p50 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms",
                    stats.mean, stats.p50, stats.p99, stats.max
                );
                results.push((boxes, view, w, h, stats));
            }
        }
    }
    println!("ratio of 10 000 boxes to 10 boxes (mean / p99), same run:");
    for (boxes, view, w, h, big) in &results {
        if *boxes != 10_000 {
            continue;
        }
        if let Some((_, _, _, _, small)) = results
            .iter()
            .find(|(b, v, bw, bh, _)| *b == 10 && v == view && bw == w && bh == h)
        {
            let verdict = if big.p99 < 10.0 { "under" } else { "OVER" };
            println!(
                "  {view:<5} {w}x{h}  {:5.1}x / {:5.1}x   (p99 {:.2} ms: {verdict} the 10 ms target)",
                big.mean / small.mean,
                big.p99 / small.p99,
                big.p99
            );
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    mean: f64,
    p50: f64,
    p99: f64,
    max: f64,
}

/// Draws `app` `frames` times at `w`×`h`; milliseconds per frame.
fn measure(app: &App, theme: &Theme, w: u16, h: u16, frames: usize) -> anyhow::Result<Stats> {
    let mut terminal = Terminal::new(TestBackend::new(w, h))?;
    let mut times = Vec::with_capacity(frames);
    for i in 0..frames + 10 {
        let started = Instant::now();
        terminal.draw(|f| dandelion_console::ui::draw(f, app, theme))?;
        let took = started.elapsed();
        if i >= 10 {
            times.push(took);
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let total: Duration = times.iter().sum();
    #[allow(clippy::cast_precision_loss)] // a count of frames
    let mean = ms(total) / times.len() as f64;
    let at = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )] // an index into a short list
        let i = ((times.len() - 1) as f64 * q).round() as usize;
        ms(times[i])
    };
    Ok(Stats {
        mean,
        p50: at(0.5),
        p99: at(0.99),
        max: at(1.0),
    })
}

/// Where the fake boxes are: 8 countries × 5 regions × 5 cities = 200 places.
fn place(i: u32) -> GeoIp {
    const COUNTRIES: [(&str, f64, f64); 8] = [
        ("TW", 25.0, 121.5),
        ("JP", 35.7, 139.7),
        ("DE", 50.1, 8.7),
        ("BR", -23.5, -46.6),
        ("US", 40.7, -74.0),
        ("AU", -33.9, 151.2),
        ("KE", -1.3, 36.8),
        ("IS", 64.1, -21.9),
    ];
    let p = i % 200;
    let (country, lat, lon) = COUNTRIES[(p / 25) as usize];
    let region = (p / 5) % 5;
    let city = p % 5;
    let mut geo = GeoIp {
        country: Some(country.into()),
        region: Some(format!("Region {region} of {country}")),
        city: Some(format!("City {city} of {country}-{region}")),
        ..GeoIp::default()
    };
    // Spread within a few degrees of the country, so dots land in many cells.
    geo.set_lat_lon(
        lat + f64::from(region) - 2.0 + f64::from(i % 7) * 0.3,
        lon + f64::from(city) * 2.0 - 4.0 + f64::from(i % 11) * 0.3,
    );
    geo
}

fn box_view(i: u32) -> BoxView {
    let state = match i % 20 {
        0 => BoxState::Stale,
        1 => BoxState::Unreachable,
        2 => BoxState::Evicted,
        _ => BoxState::Active,
    };
    BoxView {
        id: format!("box-{:08x}{:024x}", i.wrapping_mul(0x9e37_79b1), i),
        state,
        reason: "heartbeating".into(),
        since: NOW - f64::from(i % 5000),
        legacy: i % 50 == 7,
        first_seen: NOW - 3600.0,
        last_heartbeat: NOW - 200.0,
        expires_at: Some(NOW + 118.0),
        ban_until: None,
        observed_ip: Some(format!("198.51.{}.{}", (i / 256) % 256, i % 256)),
        geo: place(i),
        geo_source: "geoip".into(),
        version: Some("0.1.0".into()),
        data_url: Some(format!("http://198.51.100.{}:7071", i % 256)),
        connect_ws: None,
        upload_rate: Some(u64::from(i % 97) * 20_000),
        upload_cap: Some(2_000_000),
        free_storage: Some(8_000_000_000 - u64::from(i) * 1000),
        bytes_served: Some(u64::from(i) * 1_234_567),
    }
}

/// An app attached to one entrance with `boxes` boxes, each heartbeat history full.
fn app_with(boxes: u32) -> App {
    let mut app = App::new(Tokens::default(), std::path::Path::new("/tmp"), NOW);
    app.attach("http://127.0.0.1:7070");
    let net = |net| Input::Net { tab: 0, net };
    app.update(net(Net::Update(Update::Hello(Hello {
        role: "entrance".into(),
        id: "entrance-0000000000000000000000000000000a".into(),
        version: "0.1.0".into(),
        now: NOW,
    }))));
    app.update(net(Net::Update(Update::Entrance(EntranceView {
        status: EntranceStatus {
            self_preservation: None,
            heartbeat_interval: 5.0,
        },
        boxes: (0..boxes).map(box_view).collect(),
    }))));
    // 24 heartbeats each: every sparkline full.
    for beat in 0..24u32 {
        for i in 0..boxes {
            let mut b = box_view(i);
            b.last_heartbeat = NOW - 200.0 + f64::from(beat) * 5.0;
            b.upload_rate = Some(u64::from((i + beat * 13) % 97) * 20_000);
            app.update(net(Net::Update(Update::BoxRow(Box::new(b)))));
        }
    }
    app.update(Input::Tick(NOW));
    app
}

fn geo_view(mut app: App) -> App {
    app.update(Input::Action(Action::NextView));
    app
}
