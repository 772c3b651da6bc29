//! Tasks that talk to daemons, so the screen never waits on the network: one
//! feed per tab that reconnects by itself with backoff, and one task per
//! eviction or push. Each reports to the main loop as an [`Input`].

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dandelion_core::console::{self, Feed};
use dandelion_core::http::HttpClient;
use tokio::sync::mpsc;

use crate::app::{Effect, Input, Net};

/// First wait after a failure; doubled each time up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// A feed that says nothing for this long is pinged…
const QUIET: Duration = Duration::from_secs(5);
/// …and one silent this long (pongs included) is taken for dead.
const DEAD: Duration = Duration::from_secs(15);

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Carries out an effect of the state (all but `Quit` and `SwitchContext`,
/// which the shell handles).
pub fn spawn(effect: Effect, tx: mpsc::Sender<Input>) {
    match effect {
        Effect::Connect { tab, url, token } => {
            tokio::spawn(feed(tab, url, token.unwrap_or_default(), tx));
        }
        Effect::Evict {
            tab,
            url,
            token,
            box_id,
            reason,
        } => {
            tokio::spawn(async move {
                let result = match token {
                    None => Err(no_token(&url)),
                    Some(token) => {
                        console::evict(&HttpClient::default(), &url, &token, &box_id, &reason)
                            .await
                            .map(|()| format!("evicted {box_id}: {reason}"))
                            .map_err(|e| format!("eviction of {box_id} failed: {e}"))
                    }
                };
                let _ = tx.send(Input::Done { tab, result }).await;
            });
        }
        Effect::Push {
            tab,
            url,
            token,
            path,
            name,
        } => {
            tokio::spawn(push(tab, url, token, path, name, tx));
        }
        Effect::SwitchContext(_) | Effect::Rewire | Effect::Quit => {}
    }
}

fn no_token(url: &str) -> String {
    format!("no admin token for {url}: pass --token or --token-file")
}

async fn feed(tab: usize, url: String, token: String, tx: mpsc::Sender<Input>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if tx
            .send(Input::Net {
                tab,
                net: Net::Connecting,
            })
            .await
            .is_err()
        {
            return;
        }
        let error = match console::attach(&url, &token).await {
            Ok(mut feed) => {
                tracing::info!(%url, "attached");
                backoff = FIRST_BACKOFF;
                match follow(tab, &mut feed, &tx).await {
                    Some(error) => error,
                    None => return, // the console is quitting
                }
            }
            Err(e) => e.to_string(),
        };
        tracing::info!(%url, "feed down: {error}; again in {}s", backoff.as_secs());
        let down = Net::Down {
            error,
            retry_at: now() + backoff.as_secs_f64(),
        };
        if tx.send(Input::Net { tab, net: down }).await.is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Forwards a feed's updates until it ends; why it ended, or `None` when the
/// console itself is going away.
async fn follow(tab: usize, feed: &mut Feed, tx: &mpsc::Sender<Input>) -> Option<String> {
    loop {
        match tokio::time::timeout(QUIET, feed.next()).await {
            Ok(Ok(Some(update))) => {
                let net = Net::Update(update);
                tx.send(Input::Net { tab, net }).await.ok()?;
            }
            Ok(Ok(None)) => return Some("the daemon closed the feed".into()),
            Ok(Err(e)) => return Some(e.to_string()),
            Err(_) if feed.silent_for() >= DEAD => {
                return Some(format!("no word from the daemon for {}s", DEAD.as_secs()));
            }
            Err(_) => {
                if let Err(e) = feed.ping().await {
                    return Some(e.to_string());
                }
            }
        }
    }
}

async fn push(
    tab: usize,
    url: String,
    token: Option<String>,
    path: PathBuf,
    name: String,
    tx: mpsc::Sender<Input>,
) {
    let result = match token {
        None => Err(no_token(&url)),
        Some(token) => {
            let size = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
            let progress = {
                let (tx, name) = (tx.clone(), name.clone());
                // At most a hundred progress steps per file, whatever its size.
                let step = (size / 100).max(64 * 1024);
                let mut reported = 0u64;
                move |sent: u64| {
                    if sent >= reported + step || sent == size {
                        reported = sent;
                        let _ = tx.try_send(Input::Uploading {
                            tab,
                            name: name.clone(),
                            sent,
                            size,
                        });
                    }
                }
            };
            let progress = std::sync::Mutex::new(progress);
            console::push_file(
                &HttpClient::default(),
                &url,
                &token,
                &path,
                &name,
                "",
                move |sent| (progress.lock().unwrap_or_else(|p| p.into_inner()))(sent),
            )
            .await
            .map(|a| {
                format!(
                    "pushed {}: {} accepted, queued for placement",
                    a.name,
                    crate::ui::format::bytes(a.size)
                )
            })
            .map_err(|e| format!("push of {name} failed: {e}"))
        }
    };
    let _ = tx.send(Input::Done { tab, result }).await;
}
