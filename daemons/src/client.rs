//! The client commands (`push`, `where`): talk to a publisher's HTTP API, by
//! default the one of the local network `dandelion up` started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use dandelion_core::config::Config;
use dandelion_core::http::HttpClient;
use futures_util::StreamExt;
use http::Method;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio_util::io::ReaderStream;

use crate::cli::{PushArgs, WhereArgs};
use crate::publisher::api::check_name;
use crate::server::admin_token_path;

/// What `dandelion up` writes into its data directory so the client commands and
/// the console find the network without flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalNetwork {
    pub entrance: String,
    pub publisher: String,
    pub boxes: Vec<String>,
    pub entrance_dir: PathBuf,
    pub publisher_dir: PathBuf,
    pub box_dirs: Vec<PathBuf>,
}

pub const NETWORK_FILE: &str = "network.json";

impl LocalNetwork {
    pub fn load(data_dir: &Path) -> Option<LocalNetwork> {
        let text = std::fs::read_to_string(data_dir.join(NETWORK_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// The publisher URL and admin token to use.
fn publisher_target(
    config: &Config,
    to: Option<&str>,
    token: Option<&str>,
) -> anyhow::Result<(String, String)> {
    let local = LocalNetwork::load(&config.data_dir);
    let url = match (to, &local) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(net)) => net.publisher.clone(),
        (None, None) => bail!(
            "no publisher given: pass --to http://HOST:7072, set DANDELION_PUBLISHER, or start a local network \
             with `dandelion up` (looked for {})",
            config.data_dir.join(NETWORK_FILE).display()
        ),
    };
    let token = match (token, &local) {
        (Some(t), _) => t.to_owned(),
        (None, Some(net)) if to.is_none() => read_token(&admin_token_path(&net.publisher_dir))?,
        _ => read_token(&admin_token_path(&config.data_dir))
            .context("pass --token or set DANDELION_ADMIN_TOKEN (the publisher's admin token)")?,
    };
    Ok((url, token))
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the admin token {}", path.display()))?;
    Ok(text.trim().to_owned())
}

/// A file to push and the name it is published under.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub path: PathBuf,
    pub name: String,
    pub size: u64,
}

/// Expands the command line into files and names, checking everything before
/// anything is sent: a bad argument queues nothing.
pub fn plan(paths: &[PathBuf], name: Option<&str>) -> anyhow::Result<Vec<Upload>> {
    if name.is_some() && (paths.len() != 1 || paths.first().is_some_and(|p| p.is_dir())) {
        bail!("--as names a single file; it cannot be used with several paths or a directory");
    }
    let mut uploads = Vec::new();
    for path in paths {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            let base = path
                .canonicalize()
                .with_context(|| format!("cannot read {}", path.display()))?;
            let prefix = base
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut files = Vec::new();
            walk(&base, &mut files)?;
            files.sort();
            for file in files {
                let rel = file
                    .strip_prefix(&base)
                    .unwrap_or(&file)
                    .to_string_lossy()
                    .into_owned();
                let name = if prefix.is_empty() {
                    rel
                } else {
                    format!("{prefix}/{rel}")
                };
                uploads.push(upload(&file, name)?);
            }
        } else {
            let name = match name {
                Some(n) => n.to_owned(),
                None => path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .with_context(|| format!("{} has no file name", path.display()))?,
            };
            uploads.push(upload(path, name)?);
        }
    }
    Ok(uploads)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot read {}", path.display()))?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if kind.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

fn upload(path: &Path, name: String) -> anyhow::Result<Upload> {
    let name = check_name(&name).map_err(anyhow::Error::msg)?;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    Ok(Upload {
        path: path.to_owned(),
        name,
        size,
    })
}

/// `dandelion push`.
pub async fn push(config: &Config, args: &PushArgs) -> anyhow::Result<()> {
    if args.watch {
        bail!("--watch is not available in this build yet; push the files once, or run push again");
    }
    if let Some(ttl) = args.ttl
        && ttl < Duration::from_secs(1)
    {
        bail!("--ttl must be at least 1s");
    }
    let uploads = plan(&args.paths, args.name.as_deref())?;
    let (base, token) = publisher_target(config, args.to.as_deref(), args.token.as_deref())?;
    let http = HttpClient::default();
    let bars = MultiProgress::new();
    let total: u64 = uploads.iter().map(|u| u.size).sum();
    let overall = bars.add(ProgressBar::new(total));
    overall.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    overall.set_prefix("total");
    let auth = format!("Bearer {token}");
    for u in &uploads {
        let bar = bars.insert_before(&overall, ProgressBar::new(u.size));
        bar.set_style(
            ProgressStyle::with_template("{msg:>30!} [{bar:30}] {bytes}/{total_bytes}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(u.name.clone());
        let file = tokio::fs::File::open(&u.path)
            .await
            .with_context(|| format!("cannot read {}", u.path.display()))?;
        let (b, o) = (bar.clone(), overall.clone());
        let stream = ReaderStream::with_capacity(file, 256 * 1024).inspect(move |chunk| {
            if let Ok(c) = chunk {
                b.inc(c.len() as u64);
                o.inc(c.len() as u64);
            }
        });
        let mut url = format!("{base}/api/files/{}", u.name);
        let mut query = Vec::new();
        if let Some(ttl) = args.ttl {
            query.push(format!("ttl={}", ttl.as_secs()));
        }
        if let Some(r) = args.replicas {
            query.push(format!("replicas={r}"));
        }
        if !query.is_empty() {
            url = format!("{url}?{}", query.join("&"));
        }
        let response = http
            .request_stream(Method::PUT, &url, &[("authorization", &auth)], stream)
            .await?;
        bar.finish();
        if response.status != http::StatusCode::ACCEPTED {
            let detail = serde_json::from_slice::<serde_json::Value>(&response.body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| response.text());
            bail!(
                "{} was refused ({}): {}",
                u.name,
                response.status,
                detail.trim()
            );
        }
        bars.suspend(|| println!("queued {} ({} bytes)", u.name, u.size));
    }
    overall.finish();
    Ok(())
}

/// `dandelion where`.
pub async fn where_is(config: &Config, args: &WhereArgs) -> anyhow::Result<()> {
    let (base, _) = publisher_target(config, args.to.as_deref(), Some(""))?;
    let response = HttpClient::default()
        .get(&format!("{base}/api/files/{}", args.name), &[])
        .await?;
    if response.status == http::StatusCode::NOT_FOUND {
        bail!("the publisher has no file named `{}`", args.name);
    }
    let v: serde_json::Value = response
        .json()
        .context("the publisher's answer does not decode")?;
    println!(
        "{}  {} bytes  state {}  TTL left {}s",
        args.name,
        v["size"],
        v["state"].as_str().unwrap_or("?"),
        v["ttl_left"]
    );
    let placements = v["placements"].as_array().cloned().unwrap_or_default();
    if placements.is_empty() {
        println!("no box holds it yet; viewers are served by the publisher itself");
    }
    for p in placements {
        println!(
            "  {}  TTL left {}s  {}\n      why: {}",
            p["box"].as_str().unwrap_or("?"),
            p["ttl_left"],
            p["url"].as_str().unwrap_or("?"),
            p["why"].as_str().unwrap_or("")
        );
    }
    for f in v["failures"].as_array().cloned().unwrap_or_default() {
        println!(
            "  failed on {}: {}",
            f["box_id"].as_str().unwrap_or("-"),
            f["reason"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}
