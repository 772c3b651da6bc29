//! Load tool for the entrance: opens many simulated box sessions (each with its
//! own key pair, proving its ID and presenting the join token), heartbeats each
//! every interval with an exchange like a real box's (its usage figures change
//! every beat), and reports heartbeats/s held, reply latency
//! p50/p99 and — given the entrance's PID — its RSS and CPU time.
//!
//! ```text
//! cargo run --release --example entrance_load -- \
//!     --url ws://127.0.0.1:7070/dandelion/ws#ENTRANCE-ID --join TOKEN \
//!     --boxes 20000 --interval 5 --duration 60 [--pid PID] [--sources 8] \
//!     [--ca CA.pem]
//! ```
//!
//! `--ca FILE` trusts the CA certificates in FILE (PEM) besides the system's
//! roots, as a daemon's `ca_file` does, so that the tool can dial an entrance
//! on `wss://` whose certificate a private CA signed.
//!
//! Sessions connect from 127.0.0.2, .3, … (`--sources`) so that tens of
//! thousands of connections do not run out of ephemeral ports on one address.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dandelion_core::connection::{ConnectOptions, Incoming, connect_as_with};
use dandelion_core::identity::Identity;
use dandelion_core::ids::{NodeId, Role};
use dandelion_core::pinned::PinnedUrl;
use dandelion_core::protocol::{Exchange, Header, Message, SystemInfo, TrafficFlow};
use tokio::sync::{Mutex, Semaphore};

#[derive(Debug)]
struct Args {
    /// The entrance and the ID it must prove (`dandelion id entrance`).
    url: Option<PinnedUrl>,
    join: String,
    boxes: usize,
    interval: Duration,
    duration: Duration,
    pid: Option<u32>,
    sources: u8,
    /// A CA bundle to trust for `wss://` (`core::tls::trust`).
    ca: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        url: None,
        join: String::new(),
        boxes: 1000,
        interval: Duration::from_secs(5),
        duration: Duration::from_secs(30),
        pid: None,
        sources: 8,
        ca: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => args.url = Some(PinnedUrl::parse(&value)?),
            "--join" => args.join = value,
            "--boxes" => args.boxes = value.parse()?,
            "--interval" => args.interval = Duration::from_secs_f64(value.parse()?),
            "--duration" => args.duration = Duration::from_secs_f64(value.parse()?),
            "--pid" => args.pid = Some(value.parse()?),
            "--sources" => args.sources = value.parse()?,
            "--ca" => args.ca = Some(PathBuf::from(value)),
            other => bail!("unknown flag {other}"),
        }
    }
    if args.url.is_none() {
        bail!("--url WS-URL#ENTRANCE-ID is required (the ID as `dandelion id entrance` prints it)");
    }
    if args.join.is_empty() {
        bail!("--join TOKEN is required (the entrance's join.token)");
    }
    Ok(args)
}

/// RSS in bytes and CPU seconds (user + system) of a process, from /proc.
fn proc_stats(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the `)`.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((rss_kb * 1024, ticks / 100.0))
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted.get(i).copied().unwrap_or(0)) / 1000.0
}

/// What a real box sends (`boxnode::heartbeat::exchange`): its URLs, a system
/// reading whose usage figures change from beat to beat, and its traffic totals.
fn box_exchange(id: &NodeId, n: usize, beat: u64) -> Message {
    let port = 20_000 + (n % 40_000);
    let wobble = (beat * 7 + n as u64) % 100;
    let info = SystemInfo {
        cpu_cores: Some(4),
        cpu_usage: Some(wobble as f64 / 3.0),
        load_avg: Some([0.5, 0.4, 0.3]),
        mem_total: Some(4 << 30),
        mem_available: Some((3 << 30) - wobble * 4096),
        disk_total: Some(64 << 30),
        disk_available: Some(40 << 30),
        storage_quota: Some(10 << 30),
        storage_used: Some(1 << 30),
        net_tx_rate: Some(125_000 + wobble * 1000),
        net_rx_rate: Some(10_000 + wobble * 100),
        upload_cap: Some(2_500_000),
        upload_rate: Some(wobble * 10_000),
        uplink: Some(5_000_000),
        max_downloads: Some(64),
        extra: Default::default(),
    };
    Message::Exchange(Exchange {
        header: Header::new(id.clone()),
        connect_ws: Some(format!("ws://127.0.0.1:{port}/dandelion/ws")),
        data_url: Some(format!("http://127.0.0.1:{port}/")),
        system_info: Some(Box::new(info)),
        geoip: None,
        traffic_flow: Some(TrafficFlow {
            bytes_served: Some(beat * 1_000_000),
            requests: Some(beat * 10),
            extra: Default::default(),
        }),
        extra: Default::default(),
    })
}

/// The same allocator as the entrance under test, so that with
/// `--features mimalloc` the tool's own allocation costs do not decide the tail.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(parse_args()?);
    if let Some(ca) = &args.ca {
        dandelion_core::tls::trust(ca).with_context(|| format!("--ca {}", ca.display()))?;
    }
    let latencies = Arc::new(Mutex::new(Vec::<u32>::new()));
    let connected = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Handshakes at most this many at a time, as a fleet would trickle in.
    let gate = Arc::new(Semaphore::new(256));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..args.boxes {
        let (args, latencies, connected, failed, errors, measuring, gate) = (
            args.clone(),
            latencies.clone(),
            connected.clone(),
            failed.clone(),
            errors.clone(),
            measuring.clone(),
            gate.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let identity = Identity::generate(Role::Box)?;
            #[allow(clippy::cast_possible_truncation)]
            let source =
                IpAddr::from([127, 0, 0, 2 + (n % usize::from(args.sources.max(1))) as u8]);
            let options = ConnectOptions {
                local_addr: Some(source),
            };
            let permit = gate.acquire().await?;
            let Some(entrance) = &args.url else {
                bail!("no --url");
            };
            let conn = connect_as_with(
                entrance.url(),
                entrance.id(),
                &identity,
                Some(&args.join),
                options,
            )
            .await;
            drop(permit);
            let Ok(mut conn) = conn else {
                failed.fetch_add(1, Ordering::Relaxed);
                return anyhow::Ok(());
            };
            connected.fetch_add(1, Ordering::Relaxed);
            // Spread the first heartbeats over one interval.
            #[allow(clippy::cast_precision_loss)]
            let offset = args.interval.mul_f64((n as f64 * 0.618_034).fract());
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(args.interval);
            for beat in 0u64.. {
                tick.tick().await;
                let exchange = box_exchange(identity.id(), n, beat);
                let sent = Instant::now();
                if conn.send(&exchange).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                match conn.recv().await {
                    Ok(Some(Incoming::Message(Message::ExchangeReply(_)))) => {
                        if measuring.load(Ordering::Relaxed) {
                            let micros =
                                u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                            latencies.lock().await.push(micros);
                        }
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                }
            }
            Ok(())
        }));
    }
    // Let every session connect and settle one interval before measuring.
    while connected.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < args.boxes as u64 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ramp = started.elapsed();
    tokio::time::sleep(args.interval).await;
    let before = args.pid.and_then(proc_stats);
    measuring.store(true, Ordering::Relaxed);
    let window = Instant::now();
    tokio::time::sleep(args.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = window.elapsed().as_secs_f64();
    let after = args.pid.and_then(proc_stats);
    let mut l = latencies.lock().await.clone();
    l.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    let rate = l.len() as f64 / elapsed;
    println!(
        "boxes:        {} connected, {} refused/failed (ramp-up {:.1}s)",
        connected.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        ramp.as_secs_f64()
    );
    #[allow(clippy::cast_precision_loss)]
    let target = args.boxes as f64 / args.interval.as_secs_f64();
    println!("heartbeats/s: {rate:.0} held over {elapsed:.0}s (target {target:.0})");
    println!("reply p50:    {:.2} ms", percentile(&l, 0.50));
    println!("reply p99:    {:.2} ms", percentile(&l, 0.99));
    // A stall of a few hundred ms every few seconds (a worker held by a scan)
    // shows here long before it reaches p99.
    println!("reply p99.9:  {:.2} ms", percentile(&l, 0.999));
    println!("reply max:    {:.2} ms", percentile(&l, 1.0));
    println!("errors:       {}", errors.load(Ordering::Relaxed));
    if let (Some((_, cpu0)), Some((rss, cpu1))) = (before, after) {
        println!(
            "entrance:     RSS {:.0} MiB, CPU {:.0} % of one core",
            rss as f64 / (1 << 20) as f64,
            (cpu1 - cpu0) / elapsed * 100.0
        );
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}
