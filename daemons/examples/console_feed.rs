//! A fake entrance for the console's benchmarks: it serves one console feed at
//! `/dandelion/console` (any bearer token), sends a `Hello` and an `Entrance`
//! view of `--boxes` boxes, then `BoxRow` heartbeats at `--rate` per second
//! (0: none, the feed stays idle) until the console detaches or `--duration`
//! seconds have passed. Then it prints how many updates it sent and exits.
//!
//! ```text
//! cargo run --release -p dandelion-daemons --example console_feed -- \
//!     [--listen 127.0.0.1:0] [--boxes 2000] [--rate 2000] [--duration 300]
//! ```
//!
//! Its first line on stdout is `listening on ADDR`. Loopback only.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dandelion_core::console::{
    BoxState, BoxView, CONSOLE_PATH, EntranceStatus, EntranceView, Hello, Update,
};
use dandelion_core::protocol::GeoIp;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    boxes: u32,
    rate: u32,
    duration: Duration,
}

fn parse() -> anyhow::Result<Args> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        boxes: 2000,
        rate: 2000,
        duration: Duration::from_secs(300),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => args.listen = value.parse()?,
            "--boxes" => args.boxes = value.parse()?,
            "--rate" => args.rate = value.parse()?,
            "--duration" => args.duration = Duration::from_secs(value.parse()?),
            _ => bail!(
                "unknown flag {flag}; usage: console_feed [--listen ADDR] [--boxes N] [--rate N] [--duration S]"
            ),
        }
    }
    if !args.listen.ip().is_loopback() {
        bail!("--listen must be a loopback address");
    }
    args.boxes = args.boxes.clamp(1, 100_000);
    args.rate = args.rate.min(100_000);
    args.duration = args.duration.min(Duration::from_secs(3600));
    Ok(args)
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn box_view(i: u32, at: f64) -> BoxView {
    const COUNTRIES: [(&str, f64, f64); 4] = [
        ("TW", 25.0, 121.5),
        ("DE", 50.1, 8.7),
        ("US", 40.7, -74.0),
        ("BR", -23.5, -46.6),
    ];
    let (country, lat, lon) = COUNTRIES[(i % 4) as usize];
    let mut geo = GeoIp {
        country: Some(country.into()),
        region: Some(format!("Region {} of {country}", i % 3)),
        city: Some(format!("City {} of {country}", i % 10)),
        ..GeoIp::default()
    };
    geo.set_lat_lon(lat + f64::from(i % 5), lon + f64::from(i % 7));
    BoxView {
        id: format!("box-{:08x}{:024x}", i.wrapping_mul(0x9e37_79b1), i),
        state: BoxState::Active,
        reason: "heartbeating".into(),
        since: at - 600.0,
        legacy: false,
        first_seen: at - 600.0,
        last_heartbeat: at,
        expires_at: Some(at + 15.0),
        ban_until: None,
        observed_ip: Some("127.0.0.1".into()),
        geo,
        geo_source: "override".into(),
        version: Some("0.1.0".into()),
        data_url: Some(format!("http://127.0.0.1:{}", 20_000 + i % 1000)),
        connect_ws: None,
        upload_rate: Some(u64::from(i % 97) * 20_000),
        upload_cap: Some(2_000_000),
        free_storage: Some(8_000_000_000),
        bytes_served: Some(u64::from(i) * 1_000_000),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let listener = TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let deadline = tokio::time::Instant::now() + args.duration;
    let (stream, peer) = tokio::time::timeout_at(deadline, listener.accept())
        .await
        .context("no console attached within --duration")??;
    stream.set_nodelay(true)?;
    // tungstenite's callback type fixes the error's shape.
    #[allow(clippy::result_large_err)]
    let check = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let bearer = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer "));
        if request.uri().path() != CONSOLE_PATH || !bearer {
            let mut refusal =
                ErrorResponse::new(Some("console feed with a bearer token only".into()));
            *refusal.status_mut() = http::StatusCode::FORBIDDEN;
            return Err(refusal);
        }
        Ok(response)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async(stream, check).await?;
    eprintln!("console attached from {peer}");

    let at = now();
    let first = [
        Update::Hello(Hello {
            role: "entrance".into(),
            id: "entrance-00000000000000000000000000000bee".into(),
            version: "0.1.0".into(),
            now: at,
        }),
        Update::Entrance(EntranceView {
            status: EntranceStatus {
                self_preservation: None,
                heartbeat_interval: 5.0,
            },
            boxes: (0..args.boxes).map(|i| box_view(i, at)).collect(),
        }),
    ];
    for u in &first {
        ws.feed(Message::text(u.encode())).await?;
    }
    ws.flush().await?;

    // Heartbeats paced against the clock: every 5 ms, whatever is due since the start.
    let started = Instant::now();
    // Updates due so far by the clock, and those really written.
    let mut planned = 0u64;
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let why = loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break "--duration passed",
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => break "the console detached",
                Some(Ok(_)) => {} // pings: answered by tungstenite on the next write
            },
            _ = tick.tick(), if args.rate > 0 => {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a count
                let due = (started.elapsed().as_secs_f64() * f64::from(args.rate)) as u64;
                let at = now();
                // At most a second's worth in one go if the machine stalled.
                let from = planned.max(due.saturating_sub(u64::from(args.rate)));
                for n in from..due {
                    #[allow(clippy::cast_possible_truncation)] // modulo a u32
                    let i = (n % u64::from(args.boxes)) as u32;
                    let mut b = box_view(i, at);
                    #[allow(clippy::cast_possible_truncation)] // modulo 97
                    let wobble = ((n / u64::from(args.boxes)) % 97) as u32;
                    b.upload_rate = Some(u64::from((i + wobble * 13) % 97) * 20_000);
                    let u = Update::BoxRow(Box::new(b));
                    if ws.feed(Message::text(u.encode())).await.is_err() {
                        break;
                    }
                    sent += 1;
                }
                planned = due.max(planned);
                if ws.flush().await.is_err() {
                    break "the console detached";
                }
            }
        }
    };
    let secs = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)] // a count
    let per_second = sent as f64 / secs.max(1e-9);
    println!("sent {sent} box_row updates in {secs:.1} s ({per_second:.0}/s); stopped: {why}");
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    Ok(())
}
