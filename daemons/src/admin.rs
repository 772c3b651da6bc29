//! `dandelion boxes` and `dandelion evict`: operator commands that talk to a
//! running entrance's HTTP API. The admin token comes from `--token` /
//! `DANDELION_ADMIN_TOKEN`, else from the `--context`'s entrance, else from the
//! entrance's admin token file (its `admin_token_file` or data directory),
//! which is where an operator on the entrance's own machine already has it.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use dandelion_core::console::contexts::Context as ConsoleContext;
use dandelion_core::http::{HttpClient, origin_of};
use dandelion_daemons::entrance::api::BoxView;

use dandelion_daemons::cli::{BoxesArgs, EvictArgs};

/// Where `dandelion up` runs its entrance, when no local network says otherwise.
const DEFAULT_ENTRANCE: &str = "http://127.0.0.1:7070";

/// The entrance given, else the context's, else the local network's in
/// `data_dir` (whose CA is then trusted), else [`DEFAULT_ENTRANCE`].
fn origin(
    url: Option<&str>,
    context: Option<&ConsoleContext>,
    data_dir: &Path,
) -> anyhow::Result<String> {
    let from_context = match (url, context) {
        (None, Some(c)) => Some(c.daemon_for("entrance")?.url.clone()),
        _ => None,
    };
    let local = match (url, &from_context) {
        (None, None) => dandelion_core::console::LocalNetwork::load_trusted(data_dir)?,
        _ => None,
    };
    let url = url
        .or(from_context.as_deref())
        .or(local.as_ref().map(|net| net.entrance.as_str()))
        .unwrap_or(DEFAULT_ENTRANCE);
    let http_url = url
        .replacen("ws://", "http://", 1)
        .replacen("wss://", "https://", 1);
    origin_of(&http_url)
        .with_context(|| format!("`{url}` is not an entrance URL like http://host:7070"))
}

pub async fn boxes(
    args: &BoxesArgs,
    context: Option<&ConsoleContext>,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let origin = origin(args.entrance.as_deref(), context, data_dir)?;
    let mut query = Vec::new();
    if let Some(s) = &args.state {
        query.push(format!("state={}", urlencode(s)));
    }
    if let Some(c) = &args.country {
        query.push(format!("country={}", urlencode(c)));
    }
    let url = format!("{origin}/api/boxes?{}", query.join("&"));
    let response = HttpClient::new(Duration::from_secs(10))
        .get(&url, &[])
        .await
        .with_context(|| format!("asking {origin} for its boxes"))?;
    anyhow::ensure!(
        response.status.is_success(),
        "{url} answered {}: {}",
        response.status,
        response.text().trim()
    );
    let boxes: Vec<BoxView> = response
        .json()
        .with_context(|| format!("{url} did not answer with a box list"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&boxes)?);
    } else {
        print!("{}", table(&boxes, now()));
    }
    Ok(())
}

/// `token_file`: where the entrance's admin token is read when `--token` is
/// not given (`Config::admin_token_file`).
pub async fn evict(
    args: &EvictArgs,
    context: Option<&ConsoleContext>,
    data_dir: &Path,
    token_file: &Path,
) -> anyhow::Result<()> {
    let origin = origin(args.entrance.as_deref(), context, data_dir)?;
    let token = match (&args.token, context) {
        (Some(t), _) => t.trim().to_owned(),
        (None, Some(c)) if args.entrance.is_none() => {
            let daemon = c.daemon_for("entrance")?;
            daemon.token().map_err(|why| {
                anyhow::anyhow!("context `{}`, daemon `{}`: {why}", c.name, daemon.name)
            })?
        }
        (None, _) => {
            let path = token_file;
            std::fs::read_to_string(path)
                .with_context(|| {
                    format!(
                        "cannot read the admin token {} (give --token or DANDELION_ADMIN_TOKEN, or \
                         --data-dir of the entrance)",
                        path.display()
                    )
                })?
                .trim()
                .to_owned()
        }
    };
    let url = format!("{origin}/api/boxes/{}/evict", args.box_id);
    let auth = format!("Bearer {token}");
    let body = serde_json::to_vec(&serde_json::json!({ "reason": args.reason }))?;
    let response = HttpClient::new(Duration::from_secs(10))
        .request(
            http::Method::POST,
            &url,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Bytes::from(body),
        )
        .await
        .with_context(|| format!("asking {origin} to evict {}", args.box_id))?;
    anyhow::ensure!(
        response.status.is_success(),
        "eviction refused: {}: {}",
        response.status,
        response.text().trim()
    );
    println!("evicted {}: {}", args.box_id, args.reason);
    Ok(())
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn ago(now: f64, then: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped non-negative
    let secs = (now - then).max(0.0) as u64;
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        _ => format!("{}h", secs / 3600),
    }
}

fn bytes(n: Option<u64>, per_second: bool) -> String {
    n.map_or_else(
        || "-".into(),
        |n| {
            let text = bytesize::ByteSize::b(n).display().si().to_string();
            if per_second {
                format!("{text}/s")
            } else {
                text
            }
        },
    )
}

/// The table `dandelion boxes` prints.
pub fn table(boxes: &[BoxView], now: f64) -> String {
    let mut rows = vec![
        [
            "ID",
            "STATE",
            "REASON",
            "AGE",
            "LOCATION",
            "UPLOAD",
            "FREE",
            "VERSION",
            "HEARTBEAT",
        ]
        .map(String::from),
    ];
    for b in boxes {
        let state = if b.legacy {
            format!("{} (legacy)", b.state.as_str())
        } else {
            b.state.as_str().to_owned()
        };
        let location = match (&b.geo.city, &b.geo.country) {
            (Some(c), Some(k)) => format!("{c}, {k}"),
            (Some(c), None) => c.clone(),
            (None, Some(k)) => k.clone(),
            (None, None) => "-".into(),
        };
        rows.push([
            b.id.clone(),
            state,
            b.reason.chars().take(40).collect(),
            ago(now, b.first_seen),
            location,
            bytes(b.upload_rate, true),
            bytes(b.free_storage, false),
            b.version.clone().unwrap_or_else(|| "-".into()),
            format!("{} ago", ago(now, b.last_heartbeat)),
        ]);
    }
    let widths: Vec<usize> = (0..9)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if boxes.is_empty() {
        out.push_str("(no boxes)\n");
    }
    out
}
