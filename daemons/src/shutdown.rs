//! Two-phase shutdown: tell every task to stop, then wait for them, bounded by a
//! grace period. Background sweepers and connection tasks are spawned on the
//! tracker so they cannot outlive the daemon that owns them.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long tasks get to finish after shutdown is requested.
pub const GRACE_PERIOD: Duration = Duration::from_secs(10);

/// Cheap to clone; all clones share one token and one tracker.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Requests shutdown; every [`Shutdown::cancelled`] future resolves.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Spawns a task that shutdown waits for.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Waits for every tracked task, at most `grace`; returns whether they all ended.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C): what `main` passes to a role.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the daemon can still be stopped by SIGKILL;
        // never resolving is the honest fallback.
        return std::future::pending().await;
    };
    // SIGHUP (`systemctl reload`) asks TLS listeners to read their certificates
    // again (see `listener`); it must never stop a daemon, TLS or not.
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            _ = term.recv() => return tracing::info!("SIGTERM received; shutting down"),
            _ = int.recv() => return tracing::info!("SIGINT received; shutting down"),
            Some(()) = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => tracing::info!("SIGHUP received: TLS listeners read their certificates again; nothing else reloads"),
        }
    }
}
