//! The publisher: takes files from users, places them on the best boxes and sends
//! viewers there.
//!
//! Decisions are plain functions and data — [`ranking`], [`redirect`],
//! [`directory`] — and the daemon around them is a handful of tasks sharing one
//! [`Publisher`]: the search loop ([`search`]), the senders ([`sender`]) that take
//! jobs off the reliable [`queue`] and stream them over publish sessions
//! ([`link`]) that the [`pool`] keeps open to the best boxes, the serve
//! [`probe`]s, and the HTTP API for users and viewers ([`api`]). Everything a
//! restart must not lose — jobs, placements, the last-known boxes — is in the
//! store ([`jobs`]); the bytes of each accepted file are kept in the data
//! directory until its TTL has run out, for re-placement and as the origin of
//! last resort.

pub mod api;
pub mod byte_range;
pub mod console;
pub mod cutthrough;
pub mod directory;
pub mod front;
pub mod homes;
pub mod intake;
pub mod jobs;
pub mod ledger;
pub mod link;
pub mod origin_cache;
pub mod pathway_cache;
pub mod pool;
pub mod probe;
pub mod queue;
pub mod ranking;
pub mod redirect;
pub mod refetch;
pub mod search;
pub mod sender;
pub mod steering;
pub mod steering_api;

use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use dandelion_core::config::{Config, PublisherConfig};
use dandelion_core::http::HttpClient;
use dandelion_core::ids::{NodeId, Role};
use dandelion_core::pinned::PinnedUrl;
use dandelion_core::protocol::{Exchange, Message};
use dandelion_core::store::keys::Keys;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::{Notify, RwLock};

use crate::listener::Listener;
use crate::server::{self, Common};
use crate::shutdown::{GRACE_PERIOD, Shutdown};
use directory::Directory;
use jobs::Records;
use link::Link;
use queue::Queue;
use ranking::Weights;

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix time in milliseconds, for latencies that cross a restart or another
/// front end (a job's acknowledgement to its placements).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct PublisherMetrics {
    /// Bytes the publisher served itself because no box held the file yet: the
    /// number Dandelion exists to keep small.
    pub origin_bytes: Counter,
    /// Playlist bytes: always served by the publisher (they change under one
    /// name), so kept apart from the origin traffic boxes should have carried.
    pub playlist_bytes: Counter,
    pub redirects: Counter,
    pub placements: Counter,
    pub transfer_failures: Counter,
    pub accepted: Counter,
    pub probe_failures: Counter,
    pub search_failures: Counter,
    /// Searches of an entrance, answered or not: one per entrance a round.
    pub searches: Counter,
    /// The offload ledger's figures per stream ([`ledger`]).
    pub offload_box_bytes: Family<StreamLabel, Counter>,
    pub offload_origin_bytes: Family<StreamLabel, Counter>,
    pub offload_uploaded_bytes: Family<StreamLabel, Counter>,
    pub offload_box_share: Gauge<f64, AtomicU64>,
    /// From a viewer's request read to its redirect decided.
    pub redirect: crate::metrics::Latency,
    /// From a push acknowledged to each copy a sender then placed.
    pub push_to_placed: crate::metrics::Latency,
    /// The files this front end knows, by state: `queued` is the sending
    /// queue's depth.
    pub jobs: Family<StateLabel, Gauge>,
}

/// A job's state as a metric label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

/// A stream's name as a metric label; the ledger bounds how many there are.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    pub stream: String,
}

/// Everything the publisher's tasks share.
#[derive(Debug)]
pub struct Publisher {
    pub common: Arc<Common>,
    pub config: PublisherConfig,
    pub keys: Keys,
    pub queue: Queue,
    pub records: Records,
    // An async RwLock: the senders read it while ranking, the search loop writes
    // once per interval; neither holds it across network I/O.
    pub directory: Arc<RwLock<Directory>>,
    /// The publish sessions, at most one per box.
    pub links: Arc<pool::Pool>,
    pub http: HttpClient,
    /// Where the audience is, for ranking boxes by nearness.
    pub audience: Option<(f64, f64)>,
    pub weights: Weights,
    /// Locates viewers for nearest-box redirects, when configured.
    pub geo: Option<dandelion_core::geo::GeoDb>,
    pub origin_dir: PathBuf,
    pub metrics: PublisherMetrics,
    /// Signalled after every search round, so senders can wait for the first.
    pub searched: Notify,
    /// Asks the search loop for a round before its interval is up (see
    /// [`search::EARLY_SEARCH_GAP`]): a push that must be placed before it is
    /// acknowledged found no box to place it on.
    pub search_now: Notify,
    /// Wakes the serve prober early: an entrance said a box left or came back.
    pub probe_wake: Notify,
    /// Who served viewers what. A std Mutex: short sums, never held across an await.
    ledger: std::sync::Mutex<ledger::Ledger>,
    /// Small origin files in memory, for the front path.
    pub origin_cache: origin_cache::OriginCache,
    /// Content steering's pathway playlists as written, for the next viewer.
    pub pathways: pathway_cache::PathwayCache,
    /// The boxes each stream's segments go to. A std Mutex, never held across
    /// an await.
    homes: std::sync::Mutex<homes::Homes>,
    entrances: std::sync::RwLock<Vec<PinnedUrl>>,
    draws: AtomicU64,
}

impl Publisher {
    pub fn ledger(&self) -> std::sync::MutexGuard<'_, ledger::Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn homes(&self) -> std::sync::MutexGuard<'_, homes::Homes> {
        self.homes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The publisher served `bytes` of `name` to a viewer itself.
    pub fn served_itself(&self, name: &str, bytes: u64) {
        let stream = self
            .ledger()
            .origin(dandelion_core::paths::stream_of(name), bytes);
        self.metrics
            .offload_origin_bytes
            .get_or_create(&StreamLabel { stream })
            .inc_by(bytes);
    }

    /// A box confirmed storing a copy of `name`, `bytes` long.
    pub fn uploaded(&self, name: &str, bytes: u64) {
        let stream = self
            .ledger()
            .uploaded(dandelion_core::paths::stream_of(name), bytes);
        self.metrics
            .offload_uploaded_bytes
            .get_or_create(&StreamLabel { stream })
            .inc_by(bytes);
    }

    /// Entrances, each with the ID it must prove: configured plus learned from
    /// the `ENTRANCES` of replies.
    pub fn entrances(&self) -> Vec<PinnedUrl> {
        self.entrances
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Learns `URL#entrance-ID` entries of an entrance's reply; one entry per
    /// entrance ID, the first URL learned for it kept.
    pub fn learn_entrances(&self, entries: &[String]) {
        let mut known = self.entrances.write().unwrap_or_else(|p| p.into_inner());
        for entry in entries {
            let Ok(pin) = PinnedUrl::parse(entry) else {
                tracing::debug!(entry = %entry.escape_debug(), "ignoring an ENTRANCES entry that is not URL#ID");
                continue;
            };
            if pin.id().role() == dandelion_core::ids::Role::Entrance
                && !known.iter().any(|k| k.id() == pin.id())
            {
                tracing::info!(entrance = %pin, "learned an entrance");
                known.push(pin);
            }
        }
    }

    /// A random index below `n` for the ranking draw. std's `RandomState` is
    /// randomly keyed per process, which is all a load-spreading draw needs.
    pub fn draw(&self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let count = self.draws.fetch_add(1, Ordering::Relaxed);
        let r = std::hash::RandomState::new().hash_one(count);
        (r % n as u64) as usize
    }

    /// The open publish session to a box, opening one if needed ([`pool::link`]).
    pub async fn link(&self, box_id: &NodeId) -> Result<Link, String> {
        pool::link(self, box_id).await
    }

    /// Where a viewer at `ip` is, when the GeoIP database says.
    pub fn locate(&self, ip: std::net::IpAddr) -> Option<(f64, f64)> {
        self.geo.as_ref()?.lookup(ip)?.lat_lon()
    }

    /// Whether this viewer may be sent to a box on probation although a
    /// measured one holds the file (`ranking::PROBATION_PER_MILLE`).
    pub fn admit_probation(&self) -> bool {
        self.draw(1000) < ranking::PROBATION_PER_MILLE
    }

    /// The publisher's copy of a name's bytes.
    pub fn origin_path(&self, name: &str) -> PathBuf {
        use sha2::{Digest, Sha256};
        self.origin_dir
            .join(format!("{:x}", Sha256::digest(name.as_bytes())))
    }

    /// Queues every `queued` job that is neither waiting nor in flight. The API
    /// records a job before it queues it, so a crash between the two leaves a job
    /// that no sender would ever take; a job re-queued by the sweep has the same
    /// window. Call at start-up, after [`Queue::recover`] and before any sender runs.
    async fn queue_orphans(&self) -> anyhow::Result<usize> {
        let (waiting, in_flight) = self.queue.snapshot().await?;
        let listed: std::collections::HashSet<String> =
            waiting.into_iter().chain(in_flight).collect();
        let mut queued = 0;
        for job in self.records.jobs() {
            if job.state == jobs::JobState::Queued && !listed.contains(&job.name) {
                self.queue.push(&job.name).await?;
                queued += 1;
            }
        }
        Ok(queued)
    }

    async fn load_known_boxes(&self) -> anyhow::Result<usize> {
        let prefix = self.keys.search("");
        let keys = self.common.store.scan_prefix(&prefix).await?;
        let mut boxes = Vec::new();
        for key in keys {
            if let Some(json) = self.common.store.hget(&key, "EXCHANGE").await?
                && let Ok(Message::Exchange(exchange)) = Message::decode(&json)
            {
                boxes.push(exchange);
            }
        }
        let count = boxes.len();
        self.directory.write().await.update(boxes, now_secs());
        Ok(count)
    }
}

fn parse_location(text: &str) -> anyhow::Result<(f64, f64)> {
    let geo = dandelion_core::protocol::GeoIp {
        loc: Some(text.to_owned()),
        ..Default::default()
    };
    geo.lat_lon().with_context(|| {
        format!("publisher.audience_location `{text}` is not \"latitude,longitude\"")
    })
}

/// Runs the publisher on `listener` until `shutdown`.
pub async fn run(listener: TcpListener, config: &Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let common = Arc::new(Common::open(config, Role::Publisher, shutdown.clone()).await?);
    let pc = config.publisher.clone();
    let keys = Keys::new(common.identity.id().as_str());
    let origin_dir = config.data_dir.join("origin");
    std::fs::create_dir_all(&origin_dir)
        .with_context(|| format!("cannot create {}", origin_dir.display()))?;
    let swept = sweep_partial_uploads(&origin_dir);
    if swept > 0 {
        tracing::info!(
            files = swept,
            "removed uploads a previous run left half-written"
        );
    }
    let audience = pc
        .audience_location
        .as_deref()
        .map(parse_location)
        .transpose()?;
    let geo = match &pc.geoip_db {
        Some(path) => Some(
            dandelion_core::geo::GeoDb::open(path, None)
                .with_context(|| format!("publisher.geoip_db {}", path.display()))?,
        ),
        None => None,
    };
    for entrance in pc.entrances.iter().filter(|e| e.is_plain_remote()) {
        tracing::warn!(
            entrance = %entrance,
            "this entrance is reached without TLS: anyone on the path can answer as it and \
             choose the boxes files go to; give it a certificate and use wss://"
        );
    }
    let mut directory = Directory::default();
    directory.allow_legacy = pc.unverified_boxes;
    directory.replace_after_secs = pc.replace_after.as_secs();
    let records = Records::open(common.store.clone(), &keys)
        .await
        .context("cannot read the publisher's records")?;
    let queue = match records.instance() {
        Some(instance) => Queue::shared_by(
            common.store.clone(),
            &keys,
            instance,
            pc.front_end_dead_after,
        ),
        None => Queue::new(common.store.clone(), &keys),
    };
    let publisher = Arc::new(Publisher {
        queue,
        records,
        directory: Arc::new(RwLock::new(directory)),
        links: Arc::default(),
        http: HttpClient::default(),
        audience,
        weights: Weights::default(),
        geo,
        origin_dir,
        metrics: PublisherMetrics::default(),
        searched: Notify::new(),
        search_now: Notify::new(),
        probe_wake: Notify::new(),
        ledger: std::sync::Mutex::default(),
        origin_cache: origin_cache::OriginCache::default(),
        pathways: pathway_cache::PathwayCache::default(),
        homes: std::sync::Mutex::default(),
        entrances: std::sync::RwLock::new(pc.entrances.clone()),
        draws: AtomicU64::new(0),
        config: pc,
        keys,
        common: common.clone(),
    });
    register_metrics(&publisher);
    let recovered = publisher.queue.recover().await?;
    if recovered > 0 {
        tracing::info!(
            jobs = recovered,
            "re-queued jobs that were in flight when the publisher stopped"
        );
    }
    let orphans = publisher.queue_orphans().await?;
    if orphans > 0 {
        tracing::info!(
            jobs = orphans,
            "queued jobs that were recorded but never queued before the publisher stopped"
        );
    }
    let known = publisher.load_known_boxes().await?;
    let local = listener.local_addr()?;
    let pc = &config.publisher;
    let tls = server::load_tls("publisher", pc.tls_cert.as_deref(), pc.tls_key.as_deref())?;
    let listener = Listener::new(listener, tls, &common).context("the publisher's listener")?;
    tracing::info!(
        id = %common.identity.id(),
        listen = %local,
        scheme = listener.scheme(),
        known_boxes = known,
        admin_token = %common.admin_token.path().display(),
        "publisher started"
    );
    shutdown.spawn(search::run(publisher.clone()));
    for worker in 0..publisher.config.max_transfers.max(1) {
        shutdown.spawn(sender::run(publisher.clone(), worker));
    }
    shutdown.spawn(sender::sweep(publisher.clone()));
    shutdown.spawn(pool::keep(publisher.clone()));
    shutdown.spawn(probe::run(publisher.clone()));
    shutdown.spawn(ledger::collect(publisher.clone()));
    {
        let records = publisher.records.clone();
        let stop = shutdown.clone();
        shutdown.spawn(async move { records.follow(stop).await });
        let queue = publisher.queue.clone();
        let stop = shutdown.clone();
        shutdown.spawn(async move { queue.keep_alive(stop).await });
    }
    let router = api::router(publisher.clone())
        .merge(crate::console::routes(
            common.clone(),
            Arc::new(console::Feed(publisher.clone())),
        ))
        .merge(server::common_routes(common.clone()));
    let front: Arc<dyn server::Front> = Arc::new(front::RedirectFront::new(publisher.clone()));
    server::serve_role(listener, router, &common, Some(front)).await?;
    shutdown.trigger();
    if !shutdown.drain(GRACE_PERIOD).await {
        tracing::warn!("some tasks did not finish within the grace period");
    }
    tracing::info!("publisher stopped");
    Ok(())
}

/// Removes temporary upload files (`<name>.partial-<n>`) left by a crash in the
/// middle of an upload: they were never acknowledged, so nothing refers to them.
pub fn sweep_partial_uploads(origin_dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(origin_dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

fn register_metrics(p: &Arc<Publisher>) {
    let m = &p.common.metrics;
    m.register(
        "origin_bytes",
        "Bytes of files (not playlists) the publisher served itself because no box held them yet",
        p.metrics.origin_bytes.clone(),
    );
    m.register(
        "playlist_bytes",
        "Playlist bytes the publisher served (playlists are never placed on boxes for viewers)",
        p.metrics.playlist_bytes.clone(),
    );
    m.register(
        "redirects",
        "Viewers redirected to a box",
        p.metrics.redirects.clone(),
    );
    m.register(
        "placements",
        "Copies confirmed stored by a box",
        p.metrics.placements.clone(),
    );
    m.register(
        "transfer_failures",
        "Transfers to a box that failed or were refused",
        p.metrics.transfer_failures.clone(),
    );
    m.register(
        "accepted",
        "Files accepted from users",
        p.metrics.accepted.clone(),
    );
    m.register(
        "serve_probe_failures",
        "Serve probes of a box that failed (refused, timed out, not 2xx, wrong size)",
        p.metrics.probe_failures.clone(),
    );
    m.register(
        "offload_box_bytes",
        "Viewer bytes boxes say they served of this publisher's files, by stream",
        p.metrics.offload_box_bytes.clone(),
    );
    m.register(
        "offload_origin_bytes",
        "Viewer bytes the publisher served itself (fallbacks and playlists), by stream",
        p.metrics.offload_origin_bytes.clone(),
    );
    m.register(
        "offload_uploaded_bytes",
        "Bytes of copies boxes confirmed storing, by stream",
        p.metrics.offload_uploaded_bytes.clone(),
    );
    m.register(
        "offload_box_share",
        "Share of viewer bytes served by boxes (0 to 1; 0 before any)",
        p.metrics.offload_box_share.clone(),
    );
    m.register(
        "searches",
        "Searches of an entrance, answered or not: one per entrance every search_interval, \
         and at most once a second more while a push waits for a box",
        p.metrics.searches.clone(),
    );
    m.register(
        "search_failures",
        "Searches of an entrance that failed (unreachable, refused, an oversized or malformed answer)",
        p.metrics.search_failures.clone(),
    );
    m.register(
        "redirect_seconds",
        "From a viewer's request read to its redirect to a box decided",
        p.metrics.redirect.0.clone(),
    );
    m.register(
        "push_to_placed_seconds",
        "From a push acknowledged to each copy placed after it (copies made while it arrived are not counted)",
        p.metrics.push_to_placed.0.clone(),
    );
    m.register(
        "jobs",
        "Files this front end knows, by state (queued: waiting for boxes)",
        p.metrics.jobs.clone(),
    );
    // The top-level files' stream (`""`) at 0, so the ledger's families exist
    // for dashboards and alerts before the first stream.
    let top = StreamLabel {
        stream: String::new(),
    };
    for family in [
        &p.metrics.offload_box_bytes,
        &p.metrics.offload_origin_bytes,
        &p.metrics.offload_uploaded_bytes,
    ] {
        family.get_or_create(&top).inc_by(0);
    }
    // Present from the start, at 0, so alerts on them need no special case.
    for state in [
        jobs::JobState::Queued,
        jobs::JobState::Placed,
        jobs::JobState::Failed,
    ] {
        p.metrics
            .jobs
            .get_or_create(&StateLabel {
                state: state.as_str(),
            })
            .set(0);
    }
}

/// Used by the API and `where`: a box's exchange, if known.
pub async fn known_exchange(p: &Publisher, id: &NodeId) -> Option<Exchange> {
    p.directory.read().await.get(id).map(|b| b.exchange.clone())
}

#[cfg(test)]
mod tests {
    #[test]
    fn half_written_uploads_are_swept_and_accepted_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ab12"), b"accepted").unwrap();
        std::fs::write(dir.path().join("ab12.partial-77"), b"half").unwrap();
        assert_eq!(super::sweep_partial_uploads(dir.path()), 1);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["ab12"]);
    }
}
