//! Filesystem work off the async runtime.

use std::io;

mod direct;

pub use direct::{DirectFile, STAGE};

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

/// Starts writing a big file's pages to disk while the file is still being
/// written, so that the fsync that makes it durable at the end waits for the
/// last few MiB instead of all of it. Without it the kernel keeps up to a tenth
/// of RAM dirty before it starts (`vm.dirty_background_ratio`), and a 1 GiB
/// upload paid for its whole writeback after its last byte — on the publisher
/// and on each box, one after the other.
///
/// One background `fdatasync` runs at a time, on a duplicate of the file's
/// descriptor; the writer never waits for it until [`WriteBehind::settle`].
#[derive(Debug, Default)]
pub struct WriteBehind {
    unflushed: u64,
    running: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl WriteBehind {
    /// Bytes written between two background flushes: a few per second at disk
    /// speed, so each flush has work that is worth a thread wake-up.
    pub const EVERY: u64 = 32 * 1024 * 1024;

    /// Notes `n` more bytes written to `file`, and starts a background flush
    /// once [`Self::EVERY`] piled up and the previous one is done. Call it from
    /// async code, after the write. An error of a finished flush is returned
    /// here: the file cannot be made durable.
    pub fn wrote(&mut self, file: &std::fs::File, n: u64) -> io::Result<()> {
        use futures_util::FutureExt;
        self.unflushed = self.unflushed.saturating_add(n);
        if self.unflushed < Self::EVERY {
            return Ok(());
        }
        if let Some(running) = self.running.as_mut() {
            if !running.is_finished() {
                return Ok(());
            }
            if let Some(done) = running.now_or_never() {
                done.map_err(io::Error::other)??;
            }
        }
        let handle = file.try_clone()?;
        self.unflushed = 0;
        self.running = Some(tokio::task::spawn_blocking(move || handle.sync_data()));
        Ok(())
    }

    /// Waits for the flush under way, if any; its failure is the file's.
    pub async fn settle(&mut self) -> io::Result<()> {
        match self.running.take() {
            Some(running) => running.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn write_behind_flushes_in_the_background_once_enough_is_written() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let mut file = std::fs::File::create(dir.path().join("f")).unwrap();
        let mut behind = WriteBehind::default();
        let piece = vec![7u8; 1024 * 1024];
        for _ in 0..(WriteBehind::EVERY / (1024 * 1024)) - 1 {
            file.write_all(&piece).unwrap();
            behind.wrote(&file, piece.len() as u64).unwrap();
        }
        assert!(
            behind.running.is_none(),
            "nothing flushed below the threshold"
        );
        file.write_all(&piece).unwrap();
        behind.wrote(&file, piece.len() as u64).unwrap();
        assert!(behind.running.is_some(), "a flush started at the threshold");
        behind.settle().await.unwrap();
        assert!(behind.running.is_none());
        behind.settle().await.unwrap();
    }
}
