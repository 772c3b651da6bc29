//! The client commands (`push`, `where`): talk to a publisher's HTTP API, by
//! default the one of the local network `dandelion up` started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use dandelion_core::config::Config;
use dandelion_core::console::contexts::Context as ConsoleContext;
use dandelion_core::http::HttpClient;
use dandelion_core::ids::Role;
use dandelion_core::paths::url_path;
use futures_util::StreamExt;
use http::Method;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio_util::io::ReaderStream;

use crate::cli::{PushArgs, StatsArgs, WhereArgs};
use crate::publisher::api::check_name;
use crate::server::admin_token_path;

pub use dandelion_core::console::{LocalNetwork, NETWORK_FILE};

/// The publisher URL and admin token to use: given, else the context's
/// publisher, else the local network's, else the configured token file.
fn publisher_target(
    config: &Config,
    context: Option<&ConsoleContext>,
    access: &crate::cli::PublisherAccess,
) -> anyhow::Result<(String, String)> {
    let (to, token) = (access.to.as_deref(), access.token.as_deref());
    if let (Some(context), None) = (context, to) {
        let daemon = context.daemon_for("publisher")?;
        let token = match token {
            Some(t) => t.to_owned(),
            None => daemon.token().map_err(|why| {
                anyhow::anyhow!(
                    "context `{}`, daemon `{}`: {why}",
                    context.name,
                    daemon.name
                )
            })?,
        };
        return Ok((daemon.url.trim_end_matches('/').to_owned(), token));
    }
    let local = LocalNetwork::load_trusted(&config.data_dir)?;
    let url = match (to, &local) {
        (Some(url), _) => dandelion_core::http::with_scheme(url)
            .trim_end_matches('/')
            .to_owned(),
        (None, Some(net)) => net.publisher.clone(),
        (None, None) => bail!(
            "no publisher given: pass --to https://HOST:7072, set DANDELION_PUBLISHER, or start a local network \
             with `dandelion up` (looked for {})",
            config.data_dir.join(NETWORK_FILE).display()
        ),
    };
    let token = match (token, &local) {
        (Some(t), _) => t.to_owned(),
        (None, Some(net)) if to.is_none() => read_token(&admin_token_path(&net.publisher_dir))?,
        _ => {
            // On the publisher's own machine its token file is found; from
            // anywhere else the operator must say it, and should be told so
            // rather than about a file they never meant to read.
            let file = config.admin_token_file(Role::Publisher);
            if !file.exists() {
                bail!(
                    "the publisher at {url} needs its admin token: pass --token TOKEN or set \
                     DANDELION_ADMIN_TOKEN (the token is admin.token in the publisher's data \
                     directory, or its admin_token_file)"
                );
            }
            read_token(&file)?
        }
    };
    Ok((url, token))
}

/// What `push` prints for an accepted file: its name, size, and the URL to give
/// players when the publisher said one.
fn queued_line(name: &str, size: u64, url: Option<&str>) -> String {
    match url {
        Some(url) => format!("queued {name} ({size} bytes); players: {url}"),
        None => format!("queued {name} ({size} bytes)"),
    }
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

/// Where to push and how.
struct Target<'a> {
    http: HttpClient,
    base: String,
    auth: String,
    args: &'a PushArgs,
}

impl Target<'_> {
    fn url(&self, name: &str) -> String {
        let mut url = format!("{}/api/files/{}", self.base, url_path(name));
        let mut query = Vec::new();
        if let Some(ttl) = self.args.ttl {
            query.push(format!("ttl={}", ttl.as_secs()));
        }
        if let Some(r) = self.args.replicas {
            query.push(format!("replicas={r}"));
        }
        if !query.is_empty() {
            url = format!("{url}?{}", query.join("&"));
        }
        url
    }

    /// Streams one file to the publisher; `Ok` once it answered `202`, with the
    /// URL it says players are given, when it says one.
    async fn send(
        &self,
        u: &Upload,
        bars: Option<(&ProgressBar, &ProgressBar)>,
    ) -> anyhow::Result<Option<String>> {
        let file = tokio::fs::File::open(&u.path)
            .await
            .with_context(|| format!("cannot read {}", u.path.display()))?;
        let size = file
            .metadata()
            .await
            .with_context(|| format!("cannot read {}", u.path.display()))?
            .len();
        let bars = bars.map(|(b, o)| (b.clone(), o.clone()));
        // The length up front lets the publisher forward a big file to its
        // boxes while it arrives (cut-through); a file that changes size on
        // the way fails the push instead of sending other bytes than announced.
        let body = tokio::io::AsyncReadExt::take(file, size);
        let stream = ReaderStream::with_capacity(body, 256 * 1024).inspect(move |chunk| {
            if let (Ok(c), Some((b, o))) = (chunk, &bars) {
                b.inc(c.len() as u64);
                o.inc(c.len() as u64);
            }
        });
        let response = self
            .http
            .request_stream(
                Method::PUT,
                &self.url(&u.name),
                &[
                    ("authorization", &self.auth),
                    ("content-length", &size.to_string()),
                ],
                stream,
            )
            .await?;
        accepted(&u.name, &response)
    }

    /// Pushes `body` as `name`: a snapshot taken in memory, so what goes out
    /// is exactly what the caller checked, whatever the file became since.
    async fn send_bytes(&self, name: &str, body: bytes::Bytes) -> anyhow::Result<Option<String>> {
        let response = self
            .http
            .request(
                Method::PUT,
                &self.url(name),
                &[("authorization", &self.auth)],
                body,
            )
            .await?;
        accepted(name, &response)
    }

    /// Whether viewers asking for `name` are sent to a box: at least one copy
    /// confirmed (all replicas need not be there yet), if the publisher answers.
    async fn on_a_box(&self, name: &str) -> bool {
        let Ok(r) = self
            .http
            .get(
                &format!("{}/api/files/{}", self.base, url_path(name)),
                &[("authorization", &self.auth)],
            )
            .await
        else {
            return false;
        };
        let Ok(v) = r.json::<serde_json::Value>() else {
            return false;
        };
        v["state"] == "placed" || v["placements"].as_array().is_some_and(|p| !p.is_empty())
    }
}

/// The publisher's answer to a push: the file's viewer URL once accepted, or
/// why it was refused.
fn accepted(
    name: &str,
    response: &dandelion_core::http::Response,
) -> anyhow::Result<Option<String>> {
    if response.status != http::StatusCode::ACCEPTED {
        let detail = serde_json::from_slice::<serde_json::Value>(&response.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| response.text());
        if response.status == http::StatusCode::NOT_FOUND && detail.trim().is_empty() {
            // A publisher always says why; a bare 404 is another daemon.
            bail!(
                "{name} was refused (404 Not Found): no publisher answers there (entrances and \
                 boxes take no pushes); give --to the publisher's URL"
            );
        }
        bail!(
            "{} was refused ({}): {}",
            name,
            response.status,
            detail.trim()
        );
    }
    Ok(serde_json::from_slice::<serde_json::Value>(&response.body)
        .ok()
        .and_then(|v| v["url"].as_str().map(str::to_owned)))
}

/// `dandelion push`.
pub async fn push(
    config: &Config,
    context: Option<&ConsoleContext>,
    args: &PushArgs,
) -> anyhow::Result<()> {
    if let Some(ttl) = args.ttl
        && ttl < Duration::from_secs(1)
    {
        bail!("--ttl must be at least 1s");
    }
    let uploads = plan(&args.paths, args.name.as_deref())?;
    let (base, token) = publisher_target(config, context, &args.access)?;
    let target = Target {
        http: HttpClient::default(),
        base,
        auth: format!("Bearer {token}"),
        args,
    };
    if args.watch {
        if args.name.is_some() {
            bail!("--as cannot be used with --watch");
        }
        return watch::run(&target, &args.paths).await;
    }
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
    for u in &uploads {
        let bar = bars.insert_before(&overall, ProgressBar::new(u.size));
        bar.set_style(
            ProgressStyle::with_template("{msg:>30!} [{bar:30}] {bytes}/{total_bytes}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(u.name.clone());
        let result = target.send(u, Some((&bar, &overall))).await;
        bar.finish();
        let url = result?;
        bars.suspend(|| println!("{}", queued_line(&u.name, u.size, url.as_deref())));
    }
    overall.finish();
    Ok(())
}

/// `push --watch`: keeps pushing what appears or changes in directories, such
/// as a live HLS encoder's output.
///
/// Inotify events only wake the loop; each wake-up rescans the directories, so
/// an event lost or merged by the kernel or the debouncer costs nothing. A file
/// is pushed once it is finished: its size and modification time unchanged for
/// [`watch::SETTLE`], or — sooner — once a playlist lists it (an encoder adds a
/// segment to its playlist only after closing it). Ready files go out oldest
/// first, the order they were finished. A playlist goes out only after every
/// segment it lists was accepted, and after waiting (half a segment, at most
/// [`watch::PLACE_WAIT`]) until each is on a box, so viewers it sends for a
/// segment are redirected to a box rather than served by the publisher. What
/// goes out is the playlist as read before its segments were pushed.
mod watch {
    use std::collections::{HashMap, HashSet};
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant, SystemTime};

    use anyhow::Context;
    use notify::RecursiveMode;
    use notify_debouncer_full::new_debouncer;

    use dandelion_core::media::is_playlist;

    use super::{Target, Upload, walk};
    use crate::publisher::api::check_name;

    /// How long a file must stay unchanged to count as finished when no
    /// playlist lists it.
    pub const SETTLE: Duration = Duration::from_millis(800);
    /// Longest wait for a playlist's new segments to be placed before the
    /// playlist goes out anyway (the publisher serves them meanwhile).
    pub const PLACE_WAIT: Duration = Duration::from_secs(4);
    /// Rescan at least this often, for files that settle without a new event.
    const TICK: Duration = Duration::from_millis(200);
    /// Events closer together than this wake the loop once.
    const DEBOUNCE: Duration = Duration::from_millis(50);

    /// What a file looked like: size and modification time.
    type Version = (u64, Option<SystemTime>);

    struct Seen {
        path: PathBuf,
        name: String,
        version: Version,
        /// When this version was first seen.
        since: Instant,
    }

    /// Temporary files of encoders and editors are never pushed: hidden names,
    /// `*.tmp`, `*.part`, `*.partial`, `*~`.
    fn is_temporary(path: &Path) -> bool {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy()) else {
            return true;
        };
        name.starts_with('.')
            || name.ends_with('~')
            || [".tmp", ".part", ".partial", ".swp"]
                .iter()
                .any(|s| name.ends_with(s))
    }

    /// The files a playlist at `playlist` whose text is `text` lists that are
    /// local and relative: its segments (and variant playlists), as paths.
    fn listed(playlist: &Path, text: &str) -> Vec<PathBuf> {
        let dir = playlist.parent().unwrap_or(Path::new(""));
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.contains("://"))
            .map(|l| dir.join(l.split(['?', '#']).next().unwrap_or(l)))
            .collect()
    }

    /// Every file under the watched directories, with its published name.
    fn scan(roots: &[(PathBuf, String)]) -> Vec<(PathBuf, String, Version)> {
        let mut out = Vec::new();
        for (root, prefix) in roots {
            let mut files = Vec::new();
            if walk(root, &mut files).is_err() {
                continue;
            }
            for path in files {
                if is_temporary(&path) {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                let rel = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                let name = if prefix.is_empty() {
                    rel
                } else {
                    format!("{prefix}/{rel}")
                };
                out.push((path, name, (meta.len(), meta.modified().ok())));
            }
        }
        out
    }

    pub async fn run(target: &Target<'_>, paths: &[PathBuf]) -> anyhow::Result<()> {
        let mut roots = Vec::new();
        for path in paths {
            let base = path
                .canonicalize()
                .with_context(|| format!("cannot read {}", path.display()))?;
            if !base.is_dir() {
                anyhow::bail!("--watch takes directories; {} is not one", path.display());
            }
            let prefix = base
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            roots.push((base, prefix));
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut debouncer = new_debouncer(DEBOUNCE, None, move |_| {
            // A full channel already holds a wake-up; nothing is lost.
            let _ = tx.try_send(());
        })
        .context("cannot watch the directories")?;
        for (root, _) in &roots {
            debouncer
                .watch(root, RecursiveMode::Recursive)
                .with_context(|| format!("cannot watch {}", root.display()))?;
        }
        println!(
            "watching {}; Ctrl-C stops",
            roots
                .iter()
                .map(|(r, _)| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut state = Watch::default();
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            state.round(target, &roots).await;
            tokio::select! {
                _ = &mut ctrl_c => return Ok(()),
                _ = rx.recv() => {}
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    #[derive(Default)]
    struct Watch {
        /// The version of each path last accepted by the publisher.
        pushed: HashMap<PathBuf, Version>,
        /// Files seen but not pushed in their current version.
        pending: HashMap<PathBuf, Seen>,
        /// Names seen placed: no need to ask again.
        placed: HashSet<String>,
    }

    impl Watch {
        async fn round(&mut self, target: &Target<'_>, roots: &[(PathBuf, String)]) {
            let now = Instant::now();
            let files = scan(roots);
            let present: HashSet<&PathBuf> = files.iter().map(|(p, _, _)| p).collect();
            self.pending.retain(|p, _| present.contains(p));
            for (path, name, version) in &files {
                if self.pushed.get(path) == Some(version) {
                    continue;
                }
                match self.pending.get(path) {
                    Some(seen) if seen.version == *version => {}
                    _ => {
                        self.pending.insert(
                            path.clone(),
                            Seen {
                                path: path.clone(),
                                name: name.clone(),
                                version: *version,
                                since: now,
                            },
                        );
                    }
                }
            }
            // Segments some changed playlist lists are finished now.
            let playlists: Vec<PathBuf> = self
                .pending
                .values()
                .filter(|s| is_playlist(&s.name))
                .map(|s| s.path.clone())
                .collect();
            let listed_now: HashSet<PathBuf> = playlists
                .iter()
                .flat_map(|p| listed(p, &std::fs::read_to_string(p).unwrap_or_default()))
                .collect();
            let mut ready: Vec<&Seen> = self
                .pending
                .values()
                .filter(|s| {
                    !is_playlist(&s.name)
                        && (listed_now.contains(&s.path) || now.duration_since(s.since) >= SETTLE)
                })
                .collect();
            ready.sort_by_key(|s| (s.version.1, s.name.clone()));
            let ready: Vec<(PathBuf, String, Version)> = ready
                .into_iter()
                .map(|s| (s.path.clone(), s.name.clone(), s.version))
                .collect();
            for (path, name, version) in ready {
                self.push(target, &path, &name, version).await;
            }
            for playlist in playlists {
                self.push_playlist(target, &playlist).await;
            }
        }

        /// Pushes one version of a file; remembers it only once accepted, so a
        /// failed push is tried again on the next round.
        async fn push(
            &mut self,
            target: &Target<'_>,
            path: &Path,
            name: &str,
            version: Version,
        ) -> bool {
            let name = match check_name(name) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("skipping {}: {e}", path.display());
                    self.pushed.insert(path.to_owned(), version);
                    self.pending.remove(path);
                    return false;
                }
            };
            let upload = Upload {
                path: path.to_owned(),
                name: name.clone(),
                size: version.0,
            };
            match target.send(&upload, None).await {
                Ok(url) => {
                    println!("{}", super::queued_line(&name, version.0, url.as_deref()));
                    self.pushed.insert(path.to_owned(), version);
                    self.pending.remove(path);
                    self.placed.remove(&name);
                    true
                }
                Err(e) => {
                    eprintln!("{e:#}; trying again");
                    false
                }
            }
        }

        /// Pushes a playlist once everything it lists is accepted. The playlist
        /// is read once and that snapshot is what goes out: an encoder rewrites
        /// it every segment, and a newer text could list segments not pushed
        /// yet — a viewer would be refused them.
        async fn push_playlist(&mut self, target: &Target<'_>, playlist: &Path) {
            let Some(name) = self.pending.get(playlist).map(|s| s.name.clone()) else {
                return;
            };
            // The version before the bytes: a rewrite in between shows as a
            // newer version at the next round, which pushes it again.
            let Ok(meta) = std::fs::metadata(playlist) else {
                return;
            };
            let version = (meta.len(), meta.modified().ok());
            let Ok(text) = std::fs::read(playlist) else {
                return;
            };
            let mut names = Vec::new();
            for segment in listed(playlist, &String::from_utf8_lossy(&text)) {
                let Some(meta) = std::fs::metadata(&segment).ok() else {
                    // Deleted by the encoder already; its copies live out their TTL.
                    continue;
                };
                // Seen at the last scan, or written since: named from the playlist.
                let Some(seg_name) = self
                    .pending
                    .get(&segment)
                    .map(|s| s.name.clone())
                    .or_else(|| self.pending_name(&segment, playlist, &name))
                else {
                    continue;
                };
                let v = (meta.len(), meta.modified().ok());
                if self.pushed.get(&segment) != Some(&v)
                    && !self.push(target, &segment, &seg_name, v).await
                {
                    // A playlist must not list what the publisher does not have.
                    return;
                }
                names.push(seg_name);
            }
            let deadline = Instant::now() + place_wait(&text);
            for n in names {
                while !self.placed.contains(&n) && Instant::now() < deadline {
                    if target.on_a_box(&n).await {
                        self.placed.insert(n.clone());
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            let size = text.len() as u64;
            match target.send_bytes(&name, text.into()).await {
                Ok(url) => {
                    println!("{}", super::queued_line(&name, size, url.as_deref()));
                    self.pushed.insert(playlist.to_owned(), version);
                    self.pending.remove(playlist);
                }
                Err(e) => eprintln!("{e:#}; trying again"),
            }
        }

        /// A segment's published name, from the playlist's name and the
        /// segment's path relative to the playlist.
        fn pending_name(
            &self,
            segment: &Path,
            playlist: &Path,
            playlist_name: &str,
        ) -> Option<String> {
            let rel = segment.strip_prefix(playlist.parent()?).ok()?;
            let dir = playlist_name.rsplit_once('/').map_or("", |(d, _)| d);
            let rel = rel.to_string_lossy();
            Some(if dir.is_empty() {
                rel.into_owned()
            } else {
                format!("{dir}/{rel}")
            })
        }
    }

    /// How long a playlist waits for its new segments to reach a box: half a
    /// segment's duration, at most [`PLACE_WAIT`]. Longer, and the playlist
    /// falls behind the stream while a box that died holds up a placement.
    fn place_wait(playlist: &[u8]) -> Duration {
        String::from_utf8_lossy(playlist)
            .lines()
            .find_map(|l| l.trim().strip_prefix("#EXT-X-TARGETDURATION:"))
            .and_then(|d| d.trim().parse::<f64>().ok())
            .filter(|d| d.is_finite() && *d > 0.0)
            .map_or(PLACE_WAIT, |d| {
                Duration::from_secs_f64(d / 2.0).min(PLACE_WAIT)
            })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn temporary_files_are_skipped_and_playlists_list_their_local_segments() {
            assert!(is_temporary(Path::new("/x/index.m3u8.tmp")));
            assert!(is_temporary(Path::new("/x/.hidden.ts")));
            assert!(!is_temporary(Path::new("/x/index3.ts")));
            let dir = tempfile::tempdir().unwrap();
            let playlist = dir.path().join("index.m3u8");
            let text = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nindex3.ts\n#EXTINF:1.0,\nsub/index4.ts?x=1\nhttp://cdn/other.ts\n";
            assert_eq!(
                listed(&playlist, text),
                [
                    dir.path().join("index3.ts"),
                    dir.path().join("sub/index4.ts")
                ]
            );
        }

        #[test]
        fn a_playlist_waits_for_placement_at_most_half_a_segment() {
            let wait = |t: &str| place_wait(t.as_bytes());
            assert_eq!(
                wait("#EXTM3U\n#EXT-X-TARGETDURATION:1\n"),
                Duration::from_millis(500)
            );
            assert_eq!(wait("#EXTM3U\n#EXT-X-TARGETDURATION:20\n"), PLACE_WAIT);
            assert_eq!(wait("#EXTM3U\n#EXT-X-TARGETDURATION:-3\n"), PLACE_WAIT);
            assert_eq!(wait("#EXTM3U\n"), PLACE_WAIT);
        }
    }
}

/// `dandelion where`.
/// `dandelion stats`: the publisher's offload ledger as a table.
pub async fn stats(
    config: &Config,
    context: Option<&ConsoleContext>,
    args: &StatsArgs,
) -> anyhow::Result<()> {
    let (base, token) = publisher_target(config, context, &args.access)?;
    let auth = format!("Bearer {token}");
    let response = HttpClient::default()
        .get(&format!("{base}/api/ledger"), &[("authorization", &auth)])
        .await?;
    anyhow::ensure!(
        response.status.is_success(),
        "the publisher refused ({}): {}",
        response.status,
        response.text().trim()
    );
    if args.json {
        println!("{}", response.text().trim());
        return Ok(());
    }
    let ledger: dandelion_core::console::OffloadView = response
        .json()
        .context("the publisher's ledger does not decode")?;
    print!("{}", ledger_table(&ledger));
    Ok(())
}

fn share_text(share: Option<f64>) -> String {
    share.map_or_else(|| "-".to_owned(), |s| format!("{:.1}%", s * 100.0))
}

/// The ledger as `dandelion stats` prints it: the figure operators look at
/// first, then one row per stream.
fn ledger_table(l: &dandelion_core::console::OffloadView) -> String {
    use bytesize::ByteSize;
    let t = &l.total;
    let mut out = format!(
        "viewer bytes served by boxes: {}  (boxes {} in {} requests, publisher {}; uploaded to boxes {})\n",
        share_text(l.box_share),
        ByteSize(t.box_bytes),
        t.box_requests,
        ByteSize(t.origin_bytes),
        ByteSize(t.uploaded_bytes),
    );
    if l.streams.is_empty() {
        out.push_str("no viewer has been served yet\n");
        return out;
    }
    out.push_str(&format!(
        "{:<32} {:>10} {:>12} {:>10} {:>12} {:>12}\n",
        "STREAM", "FROM BOXES", "BOX BYTES", "REQUESTS", "PUBLISHER", "UPLOADED"
    ));
    for s in &l.streams {
        let name = if s.stream.is_empty() {
            "(top level)"
        } else {
            s.stream.as_str()
        };
        out.push_str(&format!(
            "{:<32} {:>10} {:>12} {:>10} {:>12} {:>12}\n",
            name,
            share_text(s.box_share),
            ByteSize(s.row.box_bytes).to_string(),
            s.row.box_requests,
            ByteSize(s.row.origin_bytes).to_string(),
            ByteSize(s.row.uploaded_bytes).to_string(),
        ));
    }
    out
}

pub async fn where_is(
    config: &Config,
    context: Option<&ConsoleContext>,
    args: &WhereArgs,
) -> anyhow::Result<()> {
    let (base, token) = publisher_target(config, context, &args.access)?;
    let auth = format!("Bearer {token}");
    let response = HttpClient::default()
        .get(
            &format!("{base}/api/files/{}", url_path(&args.name)),
            &[("authorization", &auth)],
        )
        .await?;
    if response.status == http::StatusCode::NOT_FOUND {
        bail!("the publisher has no file named `{}`", args.name);
    }
    anyhow::ensure!(
        response.status.is_success(),
        "the publisher refused ({}): {}",
        response.status,
        response.text().trim()
    );
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
