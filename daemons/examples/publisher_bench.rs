//! Load and timing tool for the publisher benchmarks (`bench/publisher.sh`).
//! It talks to a running publisher over its HTTP API as a user would, and prints
//! figures; it never starts daemons itself.
//!
//! ```sh
//! # push-to-placed latency: COUNT files one after another, each waited for
//! publisher_bench latency --to http://127.0.0.1:7072 --token-file DIR/admin.token \
//!     [--count 200] [--size 102400] [--prefix bench/lat] [--poll-ms 2] [--ttl 900]
//! # throughput: COUNT files pushed CONCURRENCY at a time, until the last is placed
//! publisher_bench throughput --to URL --token-file F [--count 1000] [--concurrency 16] ...
//! # one big file streamed from disk (never held in memory), until placed
//! publisher_bench big --to URL --token-file F --file PATH [--name big/file.bin]
//! # the baseline: the same file copied over a plain loopback TCP connection
//! publisher_bench tcp --file PATH [--sink discard|DIR]
//! # viewers at a steady rate: GETs of NAMES in rotation at RATE per second over
//! # CONNECTIONS keep-alive connections, for SECONDS; latency percentiles
//! publisher_bench rate --to URL --names a,b --rate 10000 --seconds 10 [--connections 64]
//! ```
//!
//! `rate` is open-loop: each connection sends on a fixed schedule whether or not
//! the answers keep up, and reports each request's time from its send to the
//! end of its answer (what the server took, plus loopback) and from the moment
//! it was due (which adds any backlog: no coordinated omission).
//!
//! `latency` and `throughput` time each file from the `202` of
//! `PUT /api/files/{name}` until `GET /api/files/{name}` says `placed` (polled
//! every `--poll-ms`), and print the names they pushed (`names: a,b,...`) for the
//! redirect benchmark. The publisher's own view of the same interval (its
//! `accepted` and `placed` log lines) is read by `bench/publisher.sh`.
//! Every loop is bounded: by the file count, and by `--timeout` seconds per file.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use dandelion_core::http::HttpClient;
use http::Method;

struct Args {
    mode: String,
    to: String,
    token: String,
    count: usize,
    size: usize,
    concurrency: usize,
    prefix: String,
    poll: Duration,
    ttl: u64,
    timeout: Duration,
    file: Option<PathBuf>,
    name: String,
    sink: String,
    names: Vec<String>,
    rate: f64,
    seconds: f64,
    connections: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().context(
        "usage: publisher_bench latency|throughput|big|tcp|rate [options] (see the file's header)",
    )?;
    let mut a = Args {
        mode,
        to: "http://127.0.0.1:7072".into(),
        token: String::new(),
        count: 0,
        size: 100 * 1024,
        concurrency: 16,
        prefix: String::new(),
        poll: Duration::from_millis(2),
        ttl: 900,
        timeout: Duration::from_secs(120),
        file: None,
        name: "big/file.bin".into(),
        sink: "discard".into(),
        names: Vec::new(),
        rate: 10_000.0,
        seconds: 10.0,
        connections: 64,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--to" => a.to = value()?.trim_end_matches('/').to_owned(),
            "--token-file" => {
                let path = value()?;
                a.token = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {path}"))?
                    .trim()
                    .to_owned();
            }
            "--count" => a.count = value()?.parse()?,
            "--size" => a.size = value()?.parse()?,
            "--concurrency" => a.concurrency = value()?.parse::<usize>()?.max(1),
            "--prefix" => a.prefix = value()?,
            "--poll-ms" => a.poll = Duration::from_millis(value()?.parse()?),
            "--ttl" => a.ttl = value()?.parse()?,
            "--timeout" => a.timeout = Duration::from_secs(value()?.parse()?),
            "--file" => a.file = Some(PathBuf::from(value()?)),
            "--name" => a.name = value()?,
            "--sink" => a.sink = value()?,
            "--names" => a.names = value()?.split(',').map(str::to_owned).collect(),
            "--rate" => a.rate = value()?.parse()?,
            "--seconds" => a.seconds = value()?.parse()?,
            "--connections" => a.connections = value()?.parse::<usize>()?.max(1),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if args.mode == "tcp" {
        return tcp_copy(&args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match args.mode.as_str() {
            "latency" => latency(&args).await,
            "throughput" => throughput(&args).await,
            "big" => big(&args).await,
            "rate" => rate(&args).await,
            other => bail!("unknown mode {other}"),
        }
    })
}

/// Distinct bytes per file (xorshift), so every file has its own hash.
fn content(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

struct Client {
    http: HttpClient,
    to: String,
    auth: String,
    ttl: u64,
}

impl Client {
    fn new(a: &Args) -> Client {
        Client {
            http: HttpClient::new(Duration::from_secs(60)),
            to: a.to.clone(),
            auth: format!("Bearer {}", a.token),
            ttl: a.ttl,
        }
    }

    async fn put(&self, name: &str, body: Bytes) -> anyhow::Result<()> {
        let url = format!("{}/api/files/{name}?ttl={}", self.to, self.ttl);
        let r = self
            .http
            .request(Method::PUT, &url, &[("authorization", &self.auth)], body)
            .await?;
        if r.status.as_u16() != 202 {
            bail!("PUT {name}: {} {}", r.status, r.text());
        }
        Ok(())
    }

    async fn state(&self, name: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .get(
                &format!("{}/api/files/{name}", self.to),
                &[("authorization", &self.auth)],
            )
            .await?;
        let v: serde_json::Value = r.json()?;
        Ok(v["state"].as_str().unwrap_or("?").to_owned())
    }

    /// Polls until `name` is placed; bounded by `timeout`.
    async fn wait_placed(
        &self,
        name: &str,
        poll: Duration,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.state(name).await?.as_str() {
                "placed" => return Ok(()),
                "failed" => bail!("{name} failed to place"),
                _ if Instant::now() > deadline => bail!("{name} not placed within {timeout:?}"),
                _ => tokio::time::sleep(poll).await,
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(label: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
    println!(
        "{label}: n {} p50 {:.1} ms p90 {:.1} ms p99 {:.1} ms max {:.1} ms mean {:.1} ms",
        ms.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 90.0),
        percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(f64::NAN),
        mean
    );
}

fn names(a: &Args, default_prefix: &str) -> Vec<String> {
    let prefix = if a.prefix.is_empty() {
        default_prefix
    } else {
        &a.prefix
    };
    (0..a.count)
        .map(|i| format!("{prefix}/seg-{i:05}.ts"))
        .collect()
}

async fn latency(a: &Args) -> anyhow::Result<()> {
    let client = Client::new(a);
    let names = names(a, "bench/lat");
    let (mut put_ms, mut placed_ms) = (Vec::new(), Vec::new());
    for (i, name) in names.iter().enumerate() {
        let body = content(a.size, i as u64 + 1);
        let started = Instant::now();
        client.put(name, body).await?;
        let accepted = Instant::now();
        client.wait_placed(name, a.poll, a.timeout).await?;
        put_ms.push((accepted - started).as_secs_f64() * 1e3);
        placed_ms.push(accepted.elapsed().as_secs_f64() * 1e3);
    }
    summary("PUT until 202 (client)", put_ms);
    summary(
        &format!(
            "202 until GET says placed (client, polled every {} ms)",
            a.poll.as_millis()
        ),
        placed_ms,
    );
    println!("names: {}", names.join(","));
    Ok(())
}

async fn throughput(a: &Args) -> anyhow::Result<()> {
    let client = Arc::new(Client::new(a));
    let names = Arc::new(names(a, "bench/tp"));
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..a.count)
            .map(|i| content(a.size, 1_000_000 + i as u64))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut pushers = Vec::new();
    for _ in 0..a.concurrency {
        let (client, names, bodies, next, accepted) = (
            client.clone(),
            names.clone(),
            bodies.clone(),
            next.clone(),
            accepted.clone(),
        );
        pushers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = names.get(i) else {
                    return anyhow::Ok(());
                };
                client.put(name, bodies[i].clone()).await?;
                accepted.fetch_add(1, Ordering::Release);
            }
        }));
    }
    // The watcher follows the names in push order: one GET per placed file, and
    // one per poll interval while the oldest is still on its way.
    let watcher = {
        let (client, names, accepted) = (client.clone(), names.clone(), accepted.clone());
        let (poll, timeout) = (a.poll, a.timeout);
        tokio::spawn(async move {
            for (i, name) in names.iter().enumerate() {
                let deadline = Instant::now() + timeout;
                while accepted.load(Ordering::Acquire) <= i {
                    if Instant::now() > deadline {
                        bail!("only {i} files were accepted within {timeout:?}");
                    }
                    tokio::time::sleep(poll).await;
                }
                client.wait_placed(name, poll, timeout).await?;
            }
            anyhow::Ok(Instant::now())
        })
    };
    for p in pushers {
        p.await??;
    }
    let all_accepted = started.elapsed().as_secs_f64();
    let all_placed = (watcher.await?? - started).as_secs_f64();
    let n = a.count as f64;
    let mb = n * a.size as f64 / 1e6;
    println!(
        "pushed {} files of {} bytes, {} at a time: all accepted after {all_accepted:.2} s ({:.0} files/s), \
         all placed after {all_placed:.2} s: {:.0} files/s, {:.1} MB/s placed",
        a.count,
        a.size,
        a.concurrency,
        n / all_accepted,
        n / all_placed,
        mb / all_placed
    );
    Ok(())
}

async fn big(a: &Args) -> anyhow::Result<()> {
    let path = a.file.clone().context("big needs --file")?;
    let size = std::fs::metadata(&path)?.len();
    let client = Client::new(a);
    let file = tokio::fs::File::open(&path).await?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    let url = format!("{}/api/files/{}?ttl={}", a.to, a.name, a.ttl);
    let started = Instant::now();
    let r = client
        .http
        .request_stream(
            Method::PUT,
            &url,
            &[
                ("authorization", &client.auth),
                ("content-length", &size.to_string()),
            ],
            stream,
        )
        .await?;
    if r.status.as_u16() != 202 {
        bail!("PUT {}: {} {}", a.name, r.status, r.text());
    }
    let pushed = started.elapsed().as_secs_f64();
    let accepted = Instant::now();
    client
        .wait_placed(&a.name, Duration::from_millis(20), a.timeout)
        .await?;
    let placed = accepted.elapsed().as_secs_f64();
    let total = started.elapsed().as_secs_f64();
    let mbs = |s: f64| size as f64 / 1e6 / s;
    println!(
        "big: {size} bytes; PUT until 202 {pushed:.2} s ({:.0} MB/s); 202 until placed {placed:.2} s ({:.0} MB/s); \
         end to end {total:.2} s ({:.0} MB/s)",
        mbs(pushed),
        mbs(placed),
        mbs(total)
    );
    Ok(())
}

/// The baseline: the file read from disk and written to a loopback TCP socket in
/// 1 MiB pieces; the receiver drops the bytes (`--sink discard`) or writes them
/// to a file in DIR and fsyncs it, as a box does.
fn tcp_copy(a: &Args) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let path = a.file.clone().context("tcp needs --file")?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let sink = a.sink.clone();
    let receiver = std::thread::spawn(move || -> anyhow::Result<u64> {
        let (mut conn, _) = listener.accept()?;
        let mut out = match sink.as_str() {
            "discard" => None,
            dir => Some(std::fs::File::create(
                PathBuf::from(dir).join("tcp-copy.bin"),
            )?),
        };
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let k = conn.read(&mut buf)?;
            if k == 0 {
                break;
            }
            got += k as u64;
            if let Some(f) = out.as_mut() {
                f.write_all(&buf[..k])?;
            }
        }
        if let Some(f) = out {
            f.sync_all()?;
        }
        Ok(got)
    });
    let started = Instant::now();
    let mut file = std::fs::File::open(&path)?;
    let mut conn = std::net::TcpStream::connect(addr)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = file.read(&mut buf)?;
        if k == 0 {
            break;
        }
        conn.write_all(&buf[..k])?;
    }
    drop(conn);
    let got = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("the receiver panicked"))??;
    let secs = started.elapsed().as_secs_f64();
    if a.sink != "discard" {
        let _ = std::fs::remove_file(PathBuf::from(&a.sink).join("tcp-copy.bin"));
    }
    println!(
        "tcp ({}): {got} bytes in {secs:.2} s, {:.0} MB/s",
        if a.sink == "discard" {
            "file -> loopback TCP -> discard"
        } else {
            "file -> loopback TCP -> file + fsync"
        },
        got as f64 / 1e6 / secs
    );
    Ok(())
}

/// Viewers at a steady rate (see the header): per request, milliseconds from
/// its send and from the moment it was due, over every connection.
async fn rate(a: &Args) -> anyhow::Result<()> {
    if a.names.is_empty() {
        bail!("rate needs --names");
    }
    let addr =
        a.to.strip_prefix("http://")
            .context("rate speaks plain http:// only")?
            .to_owned();
    let per_connection = a.rate / a.connections as f64;
    let every = Duration::from_secs_f64(1.0 / per_connection);
    let count = (a.seconds * per_connection).ceil() as usize;
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for c in 0..a.connections {
        let (addr, names) = (addr.clone(), a.names.clone());
        // Connections start staggered across one interval, not all at once.
        let first = start + every.mul_f64(c as f64 / a.connections as f64);
        tasks.push(tokio::spawn(async move {
            one_connection(&addr, &names, c, first, every, count).await
        }));
    }
    let (mut served, mut due, mut codes) =
        (Vec::new(), Vec::new(), std::collections::BTreeMap::new());
    for t in tasks {
        let (s, d, c) = t.await??;
        served.extend(s);
        due.extend(d);
        for (code, n) in c {
            *codes.entry(code).or_insert(0usize) += n;
        }
    }
    let achieved = served.len() as f64 / a.seconds;
    println!(
        "rate: asked {:.0}/s, answered {:.0}/s over {} connections for {} s; statuses {codes:?}",
        a.rate, achieved, a.connections, a.seconds
    );
    fine_summary("from send", served);
    fine_summary("from due", due);
    Ok(())
}

fn fine_summary(label: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{label}: n {} p50 {:.3} ms p90 {:.3} ms p99 {:.3} ms p99.9 {:.3} ms max {:.3} ms",
        ms.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 90.0),
        percentile(&ms, 99.0),
        percentile(&ms, 99.9),
        ms.last().copied().unwrap_or(f64::NAN),
    );
}

type Timings = (Vec<f64>, Vec<f64>, Vec<(u16, usize)>);

async fn one_connection(
    addr: &str,
    names: &[String],
    offset: usize,
    first: tokio::time::Instant,
    every: Duration,
    count: usize,
) -> anyhow::Result<Timings> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut served, mut due) = (Vec::with_capacity(count), Vec::with_capacity(count));
    let mut codes: std::collections::HashMap<u16, usize> = std::collections::HashMap::new();
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    for k in 0..count {
        let at = first + every.mul_f64(k as f64);
        tokio::time::sleep_until(at).await;
        let name = &names[(offset + k) % names.len()];
        let request = format!("GET /{name} HTTP/1.1\r\nHost: bench\r\n\r\n");
        let sent = tokio::time::Instant::now();
        stream.write_all(request.as_bytes()).await?;
        // One answer: its head, then as many body bytes as it says.
        buf.clear();
        let (head_end, length) = loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let code = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                *codes.entry(code).or_default() += 1;
                break (end + 4, length);
            }
        };
        while buf.len() < head_end + length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("the server closed the connection mid-answer");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let done = tokio::time::Instant::now();
        served.push((done - sent).as_secs_f64() * 1000.0);
        due.push((done - at).as_secs_f64() * 1000.0);
    }
    Ok((served, due, codes.into_iter().collect()))
}
