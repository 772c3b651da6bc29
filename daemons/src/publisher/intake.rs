//! Intake: the body of a push becomes the publisher's copy — a temporary
//! file, hashed on the way, synced and renamed into place — and, cut through,
//! goes on to the boxes ([`super::cutthrough`]) as it arrives. A small file
//! (up to `publisher.store_files_up_to`) never touches the disk here: its bytes
//! go into the store with its job, in the commit that acknowledges the push.
//! Nothing is left behind when the upload fails.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use dandelion_core::fsio;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::Publisher;
use super::api::error;
use super::cutthrough::Forwards;

/// Bytes gathered from the request body before they go to the file (and, cut
/// through, to the boxes) in one piece: one trip to the blocking pool per
/// piece, and a whole live segment (100 KiB – 1 MiB) in a single trip that
/// also hashes, syncs and renames it.
pub const PIECE: usize = 1024 * 1024;

/// The publisher's copy while it is written. Each piece is written and
/// hashed on the blocking pool, the two side by side, while the intake
/// receives the next piece: the network, the disk and the hash each keep
/// going instead of taking turns. The file goes past the page cache where the
/// filesystem allows it ([`fsio::DirectFile`]); otherwise its pages are
/// written back as it grows ([`fsio::WriteBehind`]).
struct Copy {
    /// `None` while a piece is being written.
    file: Option<fsio::DirectFile>,
    /// `None` while a piece is being hashed.
    hasher: Option<Sha256>,
    behind: fsio::WriteBehind,
    writing: Option<Writing>,
    hashing: Option<tokio::task::JoinHandle<Sha256>>,
    /// Bytes of the piece under way.
    under_way: u64,
}

/// A piece being written: the file comes back with the outcome.
type Writing = tokio::task::JoinHandle<(fsio::DirectFile, std::io::Result<()>)>;

impl Copy {
    async fn create(tmp: &std::path::Path) -> std::io::Result<Copy> {
        let tmp = tmp.to_owned();
        let file = fsio::blocking(move || fsio::DirectFile::create(&tmp)).await?;
        Ok(Copy {
            file: Some(file),
            hasher: Some(Sha256::new()),
            behind: fsio::WriteBehind::default(),
            writing: None,
            hashing: None,
            under_way: 0,
        })
    }

    /// Waits for the previous piece, then starts writing and hashing `piece`.
    async fn push(&mut self, piece: Bytes) -> std::io::Result<()> {
        self.done().await?;
        let mut hasher = self.hasher.take().unwrap_or_default();
        let mut file = self.file.take().ok_or_else(gone)?;
        let bytes = piece.clone();
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let written = file.write_all(&bytes);
            (file, written)
        }));
        self.under_way = piece.len() as u64;
        self.hashing = Some(tokio::task::spawn_blocking(move || {
            hasher.update(&piece);
            hasher
        }));
        Ok(())
    }

    /// Waits for the piece under way.
    async fn done(&mut self) -> std::io::Result<()> {
        if let Some(hashing) = self.hashing.take() {
            self.hasher = Some(hashing.await.map_err(std::io::Error::other)?);
        }
        if let Some(writing) = self.writing.take() {
            let (file, written) = writing.await.map_err(std::io::Error::other)?;
            written?;
            if !file.is_direct() {
                self.behind.wrote(file.file(), self.under_way)?;
            }
            self.file = Some(file);
        }
        Ok(())
    }

    /// Every piece handed over: the file (its last block still to be written
    /// by [`fsio::DirectFile::finish`]), its hash, and no flush under way.
    async fn finish(mut self) -> std::io::Result<(fsio::DirectFile, String)> {
        self.done().await?;
        self.behind.settle().await?;
        let hasher = self.hasher.take().unwrap_or_default();
        let file = self.file.take().ok_or_else(gone)?;
        Ok((file, format!("{:x}", hasher.finalize())))
    }
}

/// The file is not back from its last write: that write failed (or its task
/// panicked), and [`Copy::done`] already returned the error.
fn gone() -> std::io::Error {
    std::io::Error::other("the file was lost by an earlier failed write")
}

/// An upload received whole.
#[derive(Debug)]
pub struct Received {
    pub size: u64,
    pub sha256: String,
    /// The bytes, when they are to be kept in the store with the job: nothing
    /// of them is on disk yet. `None`: the file is durable in the origin
    /// directory.
    pub for_store: Option<Bytes>,
}

/// Streams the request body into the publisher's copy: a temporary file, hashed
/// on the way, fsynced and renamed into place, and into `forwards` — or, for a
/// small file, into memory for the store. Nothing is left behind on failure.
pub async fn receive(
    p: &Publisher,
    name: &str,
    body: Body,
    forwards: &mut Forwards,
) -> Result<Received, Response> {
    let max = p.config.max_file_size.as_u64();
    let final_path = p.origin_path(name);
    let tmp = final_path.with_extension(format!("partial-{}", p.draw(usize::MAX)));
    let stored = |e: std::io::Error| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot store the upload: {e}"),
        )
    };
    let result = async {
        let mut size: u64 = 0;
        // The bytes not in the file yet.
        let mut gathered = BytesMut::new();
        let mut copy: Option<Copy> = None;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("the upload was cut off: {e}"),
                )
            })?;
            size += chunk.len() as u64;
            if size > max {
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the file is over the {max}-byte limit"),
                ));
            }
            gathered.extend_from_slice(&chunk);
            if gathered.len() >= PIECE {
                let piece = gathered.split().freeze();
                if copy.is_none() {
                    copy = Some(Copy::create(&tmp).await.map_err(stored)?);
                }
                if let Some(copy) = copy.as_mut() {
                    let (pushed, ()) =
                        tokio::join!(copy.push(piece.clone()), forwards.feed(&piece));
                    pushed.map_err(stored)?;
                }
            }
        }
        let rest = gathered.freeze();
        let (from, to) = (tmp.clone(), final_path.clone());
        let Some(mut copy) = copy else {
            let keep = p.config.store_files_up_to(p.common.store.shared());
            if keep > 0 && size <= keep {
                // Durable with the job, in the store's commit.
                let bytes = rest.clone();
                let sha256 = fsio::blocking(move || Ok(format!("{:x}", Sha256::digest(&bytes))))
                    .await
                    .map_err(stored)?;
                return Ok(Received {
                    size,
                    sha256,
                    for_store: Some(rest),
                });
            }
            // Small enough for one trip: written, hashed and made durable at once.
            return fsio::blocking(move || {
                use std::io::Write;
                let mut file = std::fs::File::create(&from)?;
                file.write_all(&rest)?;
                make_durable(&file, &from, &to)?;
                Ok(Received {
                    size,
                    sha256: format!("{:x}", Sha256::digest(&rest)),
                    for_store: None,
                })
            })
            .await
            .map_err(stored);
        };
        let (pushed, ()) = tokio::join!(copy.push(rest.clone()), forwards.feed(&rest));
        pushed.map_err(stored)?;
        let (file, sha256) = copy.finish().await.map_err(stored)?;
        // The boxes verify and land while the publisher's copy is synced.
        let (durable, ()) = tokio::join!(
            fsio::blocking(move || make_durable(&file.finish()?, &from, &to)),
            forwards.end(&sha256)
        );
        durable.map_err(stored)?;
        Ok(Received {
            size,
            sha256,
            for_store: None,
        })
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// The upload's bytes synced, the file renamed into place and the rename
/// synced too (its directory): only then may the push be acknowledged, or a
/// crash could leave a queued job whose copy is gone. One trip to the blocking
/// pool for all three.
pub(super) fn make_durable(
    file: &std::fs::File,
    tmp: &std::path::Path,
    target: &std::path::Path,
) -> std::io::Result<()> {
    file.sync_all()?;
    std::fs::rename(tmp, target)?;
    if let Some(dir) = target.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
