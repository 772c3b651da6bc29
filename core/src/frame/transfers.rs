//! The per-connection state of chunked transfers.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{Frame, FrameError, FrameHeader, Limits, StartHeader, TransferId, len_u64};

/// What one accepted frame means for the box. A frame can start, feed and finish a transfer
/// at once: the original's one-shot frame always does all three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `None` for the original's one-shot frame, which has no transfer id.
    pub transfer: Option<TransferId>,
    /// Set by a start frame: create the (temporary) file.
    pub started: Option<Started>,
    /// Bytes to write; `None` when the frame had an empty payload.
    pub data: Option<Chunk>,
    /// Set when the last byte arrived and the hash was checked: move the file into place.
    pub completed: Option<Completed>,
    /// Set by an abort frame: the transfer is closed, drop its partial file. The publisher's
    /// reason, for the log.
    pub aborted: Option<String>,
}

/// A new file, as announced by its start frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// `FILE_PATH` as sent; the box decides where (and whether) to store it.
    pub path: String,
    /// `None` = no `TTL` header, which means [`super::DEFAULT_TTL_SECS`].
    pub ttl: Option<u64>,
    /// Total bytes (for the one-shot frame, its payload's length).
    pub size: u64,
    /// `None` for the one-shot frame (the original sent no hash) and for a transfer whose hash
    /// comes in its final frame.
    pub expected_sha256: Option<String>,
    /// User metadata to return with the placement.
    pub extra: Map<String, Value>,
}

/// Bytes of a file at an offset, to write as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Where `bytes` go in the file.
    pub offset: u64,
    /// A slice of the received message.
    pub bytes: Bytes,
}

/// A file whose every byte has arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// Bytes received, equal to `SIZE`.
    pub size: u64,
    /// Lower-case hex SHA-256 of the bytes received.
    pub sha256: String,
    /// Whether `sha256` was compared with the publisher's `SHA256` (false only for the
    /// one-shot frame, which carries none; a final frame's `SHA256` counts).
    pub verified: bool,
}

/// An open transfer, for the box to clean up its partial file when the connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveTransfer {
    /// The publisher's id.
    pub transfer: TransferId,
    /// `FILE_PATH` from the start frame.
    pub path: String,
    /// `SIZE` from the start frame.
    pub size: u64,
    /// Bytes received so far.
    pub received: u64,
}

/// The chunked transfers open on one connection.
///
/// A box keeps one per publisher connection (the original kept such state on a handler shared
/// by all connections, which mixed publishers up). It holds no file data: each chunk is hashed
/// and handed back in the [`Event`] to be written, so memory stays bounded by
/// [`Limits::max_concurrent_transfers`] hashers whatever the file sizes.
#[derive(Debug)]
pub struct Transfers {
    limits: Limits,
    open: BTreeMap<TransferId, Open>,
}

struct Open {
    path: String,
    size: u64,
    received: u64,
    /// From the start frame, or from the final frame once it came.
    expected_sha256: Option<String>,
    hasher: Sha256,
}

impl fmt::Debug for Open {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Open")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("received", &self.received)
            .field("expected_sha256", &self.expected_sha256)
            .finish_non_exhaustive()
    }
}

impl Open {
    fn summary(&self, transfer: TransferId) -> ActiveTransfer {
        ActiveTransfer {
            transfer,
            path: self.path.clone(),
            size: self.size,
            received: self.received,
        }
    }
}

impl Transfers {
    /// No transfer open.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            open: BTreeMap::new(),
        }
    }

    /// The limits frames are checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Takes the next frame of the connection.
    ///
    /// On an error that names a transfer ([`FrameError::transfer`]), that transfer is closed:
    /// once one of its chunks is refused, every later one would be out of place anyway. Other
    /// transfers are untouched.
    pub fn accept(&mut self, frame: Frame) -> Result<Event, FrameError> {
        let result = self.accept_inner(frame);
        if let Err(error) = &result
            && let Some(transfer) = error.transfer()
        {
            self.open.remove(&transfer);
        }
        result
    }

    fn accept_inner(&mut self, frame: Frame) -> Result<Event, FrameError> {
        frame.validate(&self.limits)?;
        let Frame { header, payload } = frame;
        match header {
            FrameHeader::Start(start) => self.start(start, payload),
            FrameHeader::Continue { transfer, offset } => {
                self.chunk(transfer, offset, payload, None)
            }
            FrameHeader::Finish {
                transfer,
                offset,
                sha256,
            } => self.chunk(transfer, offset, payload, Some(sha256)),
            FrameHeader::Abort { transfer, reason } => {
                if self.open.remove(&transfer).is_none() {
                    return Err(FrameError::UnknownTransfer { transfer });
                }
                Ok(Event {
                    transfer: Some(transfer),
                    started: None,
                    data: None,
                    completed: None,
                    aborted: Some(reason),
                })
            }
        }
    }

    fn start(&mut self, start: StartHeader, payload: Bytes) -> Result<Event, FrameError> {
        let StartHeader {
            path,
            ttl,
            chunked,
            extra,
        } = start;
        let len = len_u64(payload.len());
        let Some(chunked) = chunked else {
            // The original's one-shot frame: the whole file, nothing to verify it against.
            let sha256 = format!("{:x}", Sha256::digest(&payload));
            return Ok(Event {
                transfer: None,
                started: Some(Started {
                    path,
                    ttl,
                    size: len,
                    expected_sha256: None,
                    extra,
                }),
                data: chunk(0, payload),
                completed: Some(Completed {
                    size: len,
                    sha256,
                    verified: false,
                }),
                aborted: None,
            });
        };
        let transfer = chunked.transfer;
        if self.open.contains_key(&transfer) {
            return Err(FrameError::DuplicateTransfer { transfer });
        }
        if self.open.len() >= self.limits.max_concurrent_transfers {
            return Err(FrameError::TooManyTransfers {
                max: self.limits.max_concurrent_transfers,
            });
        }
        if len > chunked.size {
            return Err(FrameError::PayloadPastSize {
                transfer,
                end: len,
                size: chunked.size,
            });
        }
        let mut hasher = Sha256::new();
        hasher.update(&payload);
        let open = Open {
            path: path.clone(),
            size: chunked.size,
            received: len,
            expected_sha256: chunked.sha256.clone(),
            hasher,
        };
        let completed = if len == chunked.size && open.expected_sha256.is_some() {
            Some(finish(transfer, open)?)
        } else {
            self.open.insert(transfer, open);
            None
        };
        Ok(Event {
            transfer: Some(transfer),
            started: Some(Started {
                path,
                ttl,
                size: chunked.size,
                expected_sha256: chunked.sha256,
                extra,
            }),
            data: chunk(0, payload),
            completed,
            aborted: None,
        })
    }

    fn chunk(
        &mut self,
        transfer: TransferId,
        offset: u64,
        payload: Bytes,
        sha256: Option<String>,
    ) -> Result<Event, FrameError> {
        let Some(open) = self.open.get_mut(&transfer) else {
            return Err(FrameError::UnknownTransfer { transfer });
        };
        if offset > open.size {
            return Err(FrameError::OffsetPastSize {
                transfer,
                offset,
                size: open.size,
            });
        }
        if offset != open.received {
            return Err(FrameError::OffsetMismatch {
                transfer,
                offset,
                expected: open.received,
            });
        }
        let len = len_u64(payload.len());
        let end = match offset.checked_add(len) {
            Some(end) if end <= open.size => end,
            _ => {
                return Err(FrameError::PayloadPastSize {
                    transfer,
                    end: offset.saturating_add(len),
                    size: open.size,
                });
            }
        };
        if let Some(sha256) = sha256 {
            if open.expected_sha256.is_some() {
                return Err(FrameError::HashGivenTwice { transfer });
            }
            if end != open.size {
                return Err(FrameError::HashBeforeEnd {
                    transfer,
                    end,
                    size: open.size,
                });
            }
            open.expected_sha256 = Some(sha256);
        }
        open.hasher.update(&payload);
        open.received = end;
        // A transfer whose hash comes last waits for it even with every byte in.
        let done = end == open.size && open.expected_sha256.is_some();
        let finished = if done {
            self.open.remove(&transfer)
        } else {
            None
        };
        let completed = match finished {
            Some(open) => Some(finish(transfer, open)?),
            None => None,
        };
        Ok(Event {
            transfer: Some(transfer),
            started: None,
            data: chunk(offset, payload),
            completed,
            aborted: None,
        })
    }

    /// Forgets a transfer, e.g. when the box gives up on it; returns it if it was open.
    pub fn abort(&mut self, transfer: TransferId) -> Option<ActiveTransfer> {
        self.open
            .remove(&transfer)
            .map(|open| open.summary(transfer))
    }

    /// Forgets every open transfer and returns them, for the box to delete their partial files
    /// when the connection ends. A file shorter than its `SIZE` shows up here, with `received`
    /// below `size`: transfers only complete on their last byte.
    pub fn abort_all(&mut self) -> Vec<ActiveTransfer> {
        std::mem::take(&mut self.open)
            .into_iter()
            .map(|(transfer, open)| open.summary(transfer))
            .collect()
    }

    /// The open transfers, by id.
    pub fn active(&self) -> Vec<ActiveTransfer> {
        self.open
            .iter()
            .map(|(transfer, open)| open.summary(*transfer))
            .collect()
    }

    /// Number of open transfers.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether no transfer is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

fn chunk(offset: u64, bytes: Bytes) -> Option<Chunk> {
    (!bytes.is_empty()).then_some(Chunk { offset, bytes })
}

fn finish(transfer: TransferId, open: Open) -> Result<Completed, FrameError> {
    let actual = format!("{:x}", open.hasher.finalize());
    let expected = open.expected_sha256.unwrap_or_default();
    if actual != expected {
        return Err(FrameError::HashMismatch {
            transfer,
            expected,
            actual,
        });
    }
    Ok(Completed {
        size: open.size,
        sha256: actual,
        verified: true,
    })
}
