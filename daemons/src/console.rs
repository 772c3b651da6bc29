//! `/dandelion/console`: the feed every daemon serves to `dandelion-console`.
//!
//! Each role keeps a [`Hub`] in its [`Common`](crate::server::Common) state. The
//! role's code tells the hub what happened — an event for the log, a changed
//! box row, or just "something changed" — and every attached console gets it
//! pushed. A feed starts with the role's whole view (from its [`Source`]) and the
//! recent events, then carries changes: deltas where the fleet is large (an
//! entrance's boxes), a fresh whole view at most once a second where it is small
//! (a publisher's files, a box's own files). Nothing here costs anything while
//! no console is attached, beyond keeping the last events.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::listener::Remote;
use async_trait::async_trait;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use dandelion_core::console::{BoxView, CONSOLE_PATH, EntranceStatus, Event, Hello, Level, Update};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::server::Common;
use crate::ws::{self, ServerConnection};
use dandelion_core::connection::ws_config;

/// Events kept for a console that attaches later.
const RECENT_EVENTS: usize = 200;
/// Pushed updates a slow console may fall behind by before it is sent a fresh
/// whole view instead (it then misses nothing that matters: the view is current).
const BACKLOG: usize = 4096;
/// How often time-driven changes are looked for and whole views re-sent.
const TICK: Duration = Duration::from_secs(1);

/// Where a role's code reports to attached consoles.
#[derive(Debug)]
pub struct Hub {
    /// Made when the first console attaches: a channel allocates and fills all
    /// its slots up front (about 0.5 MiB for [`BACKLOG`] updates), which a box
    /// nobody watches should not carry (its idle RSS target is 10 MiB).
    updates: OnceLock<broadcast::Sender<Update>>,
    // A std Mutex: pushed to and copied from, never held across an await.
    recent: Mutex<VecDeque<Event>>,
    version: AtomicU64,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub {
            updates: OnceLock::new(),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_EVENTS)),
            version: AtomicU64::new(0),
        }
    }
}

impl Hub {
    /// Whether any console is attached: work done only for consoles can be skipped.
    pub fn watched(&self) -> bool {
        self.updates.get().is_some_and(|u| u.receiver_count() > 0)
    }

    /// A line for the event log of every console, now and later.
    pub fn event(&self, level: Level, text: impl Into<String>) {
        let event = Event {
            at: now(),
            level,
            text: text.into(),
        };
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        if let Some(updates) = self.updates.get() {
            let _ = updates.send(Update::Event(event));
        }
    }

    /// Pushes a delta to every attached console.
    pub fn send(&self, update: Update) {
        if let Some(updates) = self.updates.get() {
            let _ = updates.send(update);
        }
    }

    /// A new console's feed of pushed updates.
    fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates
            .get_or_init(|| broadcast::channel(BACKLOG).0)
            .subscribe()
    }

    /// Says the role's whole view changed; consoles get a fresh one within a tick.
    pub fn touch(&self) {
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    fn recent(&self) -> Vec<Event> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What one attached console has been told, for roles that send deltas.
#[derive(Debug, Default)]
pub struct Told {
    pub boxes: HashMap<String, BoxView>,
    pub status: Option<EntranceStatus>,
}

impl Told {
    fn note(&mut self, update: &Update) {
        match update {
            Update::Entrance(view) => {
                self.boxes = view
                    .boxes
                    .iter()
                    .map(|b| (b.id.clone(), b.clone()))
                    .collect();
                self.status = Some(view.status.clone());
            }
            Update::EntranceStatus(s) => self.status = Some(s.clone()),
            Update::BoxRow(b) => {
                self.boxes.insert(b.id.clone(), (**b).clone());
            }
            Update::BoxGone { id, .. } => {
                self.boxes.remove(id);
            }
            _ => {}
        }
    }
}

/// A role's side of the feed.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// The role's whole view, as one update.
    async fn view(&self) -> Result<Update, String>;

    /// Whether a changed view is re-sent whole (a small view that changes as a
    /// whole) rather than kept current by the deltas the role pushes.
    fn resend_whole(&self) -> bool {
        true
    }

    /// Changes due to the passing of time alone since the console was last
    /// told (a silent box turning stale); called once a tick.
    fn due(&self, _told: &Told, _now: f64) -> Vec<Update> {
        Vec::new()
    }
}

/// The `/dandelion/console` route of a role, to merge into its router.
pub fn routes<S: Source, T: Clone + Send + Sync + 'static>(
    common: Arc<Common>,
    source: Arc<S>,
) -> Router<T> {
    Router::new()
        .route(CONSOLE_PATH, any(handle::<S>))
        .with_state((common, source))
}

/// Checks the admin token, then runs the feed.
async fn handle<S: Source>(
    State((common, source)): State<(Arc<Common>, Arc<S>)>,
    ConnectInfo(Remote { addr: peer, .. }): ConnectInfo<Remote>,
    request: Request,
) -> Response {
    if let Err(refusal) = common.require_admin(request.headers()) {
        common.refusals.record(&common.metrics, peer.ip(), &refusal);
        return refusal.into_response();
    }
    let server = common.clone();
    ws::upgrade_for(request, &server, ws_config(), move |conn| {
        feed(common, source, conn, peer)
    })
}

async fn feed<S: Source>(
    common: Arc<Common>,
    source: Arc<S>,
    conn: ServerConnection,
    peer: SocketAddr,
) {
    let mut ws = conn.into_inner();
    // Subscribe before the view is read, so nothing between the two is lost.
    let mut updates = common.console.subscribe();
    let mut told = Told::default();
    let hello = Update::Hello(Hello {
        role: common.identity.role().to_string(),
        id: common.identity.id().to_string(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        now: now(),
    });
    let mut sent_version = common.console.version.load(Ordering::Relaxed);
    let mut first = vec![hello];
    match source.view().await {
        Ok(view) => first.push(view),
        Err(e) => first.push(Update::Event(Event {
            at: now(),
            level: Level::Error,
            text: format!("cannot read this daemon's state: {e}"),
        })),
    }
    first.extend(common.console.recent().into_iter().map(Update::Event));
    for update in &first {
        told.note(update);
        if ws.feed(WsMessage::text(update.encode())).await.is_err() {
            return;
        }
    }
    if ws.flush().await.is_err() {
        return;
    }
    tracing::info!(%peer, "console attached");
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = common.shutdown.clone();
    loop {
        let batch: Vec<Update> = tokio::select! {
            () = shutdown.cancelled() => break,
            incoming = ws.next() => match incoming {
                // The console sends nothing but pings and its close.
                Some(Ok(WsMessage::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => continue,
            },
            update = updates.recv() => match update {
                Ok(update) => {
                    // Drain what else is waiting, so a burst goes out as one flush.
                    let mut batch = vec![update];
                    while let Ok(more) = updates.try_recv() {
                        batch.push(more);
                        if batch.len() >= 256 {
                            break;
                        }
                    }
                    batch
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(%peer, missed, "console fell behind; sending a fresh view");
                    source.view().await.into_iter().collect()
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = tick.tick() => {
                let mut due = source.due(&told, now());
                let version = common.console.version.load(Ordering::Relaxed);
                if source.resend_whole() && version != sent_version {
                    sent_version = version;
                    due.extend(source.view().await);
                }
                due
            }
        };
        let mut failed = false;
        for update in &batch {
            told.note(update);
            if ws.feed(WsMessage::text(update.encode())).await.is_err() {
                failed = true;
                break;
            }
        }
        if failed || ws.flush().await.is_err() {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    tracing::info!(%peer, "console detached");
}
