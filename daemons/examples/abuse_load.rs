//! An abuse client for benchmarks: what issue 15's attacker did to a daemon,
//! at the rates it did it, from addresses of its own, so that a load
//! benchmark can run with and without it (`bench/entrance-abuse.sh`).
//!
//! - a handshake flood: `GET /dandelion/nonce` pipelined on keep-alive
//!   connections, `--burst` requests in the first `--burst-secs`, then
//!   `--rate` a second;
//! - idle connections: `--idle` connections that send nothing, opened again
//!   whenever the daemon closes one;
//! - half-sent requests: `--half` connections that send part of a request's
//!   headers and stop, opened again likewise (`--reopen-after`, 5 s, after
//!   the daemon closed one).
//!
//! ```text
//! cargo run --release --example abuse_load -- --target 127.0.0.1:7070 \
//!     [--burst 100000] [--burst-secs 5] [--rate 100] [--idle 4000] [--half 200] \
//!     [--sources 4] [--duration 40] [--reopen-after 5]
//! ```
//!
//! Connections come from 127.0.1.1, .2, … (`--sources`), apart from the load
//! tool's 127.0.0.x. At the end it prints the answers by status and how often
//! the daemon closed its idle and half-sent connections.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Mutex;

#[derive(Debug, Clone)]
struct Args {
    target: SocketAddr,
    burst: u64,
    burst_secs: f64,
    rate: u64,
    idle: usize,
    half: usize,
    sources: u8,
    duration: Duration,
    reopen_after: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        target: SocketAddr::from(([127, 0, 0, 1], 7070)),
        burst: 100_000,
        burst_secs: 5.0,
        rate: 100,
        idle: 4000,
        half: 200,
        sources: 4,
        duration: Duration::from_secs(40),
        reopen_after: Duration::from_secs(5),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--target" => args.target = value.parse()?,
            "--burst" => args.burst = value.parse()?,
            "--burst-secs" => args.burst_secs = value.parse()?,
            "--rate" => args.rate = value.parse()?,
            "--idle" => args.idle = value.parse()?,
            "--half" => args.half = value.parse()?,
            "--sources" => args.sources = value.parse()?,
            "--duration" => args.duration = Duration::from_secs_f64(value.parse()?),
            "--reopen-after" => args.reopen_after = Duration::from_secs_f64(value.parse()?),
            other => bail!("unknown flag {other}"),
        }
    }
    if args.sources == 0 {
        bail!("--sources must be at least 1");
    }
    Ok(args)
}

fn source(n: usize, sources: u8) -> Ipv4Addr {
    #[allow(clippy::cast_possible_truncation)]
    let last = 1 + (n % usize::from(sources)) as u8;
    Ipv4Addr::new(127, 0, 1, last)
}

async fn connect(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}

#[derive(Debug, Default)]
struct Tally {
    sent: AtomicU64,
    closed: AtomicU64,
    statuses: Mutex<BTreeMap<String, u64>>,
}

/// Requests the flood should have sent `elapsed` into the run.
fn due(args: &Args, elapsed: f64) -> u64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    if elapsed < args.burst_secs {
        (args.burst as f64 * elapsed / args.burst_secs) as u64
    } else {
        args.burst + (args.rate as f64 * (elapsed - args.burst_secs)) as u64
    }
}

/// One flooding connection: writes what is due (its share), reads and
/// tallies the answers, reconnects when closed.
async fn flood(args: Arc<Args>, n: usize, share: u64, tally: Arc<Tally>, started: Instant) {
    const REQUEST: &[u8] = b"GET /dandelion/nonce HTTP/1.1\r\nHost: x\r\n\r\n";
    let deadline = started + args.duration;
    let mut written = 0u64;
    while Instant::now() < deadline {
        let Ok(stream) = connect(source(n, args.sources), args.target).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (mut rd, mut wr) = stream.into_split();
        let reader_tally = tally.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 << 10];
            let mut carry = Vec::new();
            while let Ok(got @ 1..) = rd.read(&mut buf).await {
                carry.extend_from_slice(&buf[..got]);
                let text = String::from_utf8_lossy(&carry).into_owned();
                let mut counts = BTreeMap::new();
                let mut rest = text.as_str();
                let mut consumed = 0;
                while let Some(i) = rest.find("HTTP/1.1 ") {
                    let Some(code) = rest.get(i + 9..i + 12) else {
                        break;
                    };
                    *counts.entry(code.to_owned()).or_insert(0u64) += 1;
                    consumed += i + 12;
                    rest = &rest[i + 12..];
                }
                carry.drain(..consumed.min(carry.len()));
                let mut statuses = reader_tally.statuses.lock().await;
                for (code, k) in counts {
                    *statuses.entry(code).or_insert(0) += k;
                }
            }
        });
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let target = due(&args, started.elapsed().as_secs_f64()) / args.sources as u64;
            let target = target.min(share);
            let batch = target.saturating_sub(written).min(500);
            if batch > 0 {
                let many = REQUEST.repeat(usize::try_from(batch).unwrap_or(500));
                if wr.write_all(&many).await.is_err() {
                    break;
                }
                written += batch;
                tally.sent.fetch_add(batch, Ordering::Relaxed);
            } else {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        reader.abort();
    }
}

/// One idle (or half-sent) connection, opened again each time it is closed.
async fn hold(args: Arc<Args>, n: usize, half: bool, tally: Arc<Tally>, started: Instant) {
    let deadline = started + args.duration;
    while Instant::now() < deadline {
        let Ok(mut stream) = connect(source(n, args.sources), args.target).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if half {
            let _ = stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await;
        }
        let mut byte = [0u8; 1];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut byte)).await {
            Ok(_) => {
                tally.closed.fetch_add(1, Ordering::Relaxed);
                // It keeps its connections topped up; a hot reconnect loop
                // would be another attack, a connection flood.
                tokio::time::sleep(args.reopen_after).await;
            }
            Err(_) => return,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(parse_args()?);
    let started = Instant::now();
    let flood_tally = Arc::new(Tally::default());
    let idle_tally = Arc::new(Tally::default());
    let half_tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    let share = (args.burst + args.rate * args.duration.as_secs()) / u64::from(args.sources) + 1;
    for n in 0..usize::from(args.sources) {
        tasks.push(tokio::spawn(flood(
            args.clone(),
            n,
            share,
            flood_tally.clone(),
            started,
        )));
    }
    for n in 0..args.idle {
        tasks.push(tokio::spawn(hold(
            args.clone(),
            n,
            false,
            idle_tally.clone(),
            started,
        )));
    }
    for n in 0..args.half {
        tasks.push(tokio::spawn(hold(
            args.clone(),
            n,
            true,
            half_tally.clone(),
            started,
        )));
    }
    for task in tasks {
        let _ = task.await;
    }
    let statuses = flood_tally.statuses.lock().await.clone();
    println!(
        "abuse: {:.0}s from {} addresses; nonce requests sent {}, answered {:?}; idle connections \
         closed by the daemon {} times, half-sent {} times",
        started.elapsed().as_secs_f64(),
        args.sources,
        flood_tally.sent.load(Ordering::Relaxed),
        statuses,
        idle_tally.closed.load(Ordering::Relaxed),
        half_tally.closed.load(Ordering::Relaxed),
    );
    Ok(())
}
