//! Filesystem work off the async runtime.

use std::io;

/// Runs blocking filesystem work on tokio's blocking pool, as one trip: a
/// task that panicked or was cancelled is an `io::Error` like any other
/// failure of the work.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}
