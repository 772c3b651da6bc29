//! A publish session with one box: open it (proving the publisher's ID), then
//! stream files over it, up to [`PIPELINE`] waiting for the box's verdict at
//! once.
//!
//! Each link is a task that owns its WebSocket; senders talk to it through a
//! channel, so one slow box never holds up transfers to another. A link that
//! breaks answers its pending request with the reason and ends; the pool
//! ([`super::pool`]) opens a new one on the next use. A link counts the transfers
//! using it and when it was last used, so the pool never closes a session under
//! a transfer and keeps one that is in regular use.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dandelion_core::connection::{ClientConnection, ConnectionError, Incoming, connect_as};
use dandelion_core::frame::{ChunkedStart, Frame, FrameHeader, StartHeader};
use dandelion_core::identity::Identity;
use dandelion_core::ids::NodeId;
use dandelion_core::protocol::{Header, Message, Publish, TransferOutcome, TransferResult};
use serde_json::{Map, Value};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Bytes per frame, unless the box asks for less: a box's default
/// `max_chunk_bytes`. 1 MiB frames placed a 1 GiB file 40 % faster than 256 KiB
/// ones (fewer reads, copies and wake-ups per byte on both sides) for 5 MiB
/// more peak RSS (docs/performance.md, "Issue 17").
pub const DEFAULT_CHUNK: usize = 1024 * 1024;

/// How long a box may take to answer after the last byte, beyond the time the
/// bytes themselves need at a pessimistic rate.
const VERDICT_GRACE: Duration = Duration::from_secs(30);
/// The pessimistic rate for the transfer deadline: 64 KiB/s.
const SLOWEST_RATE: u64 = 64 * 1024;

/// A file to send.
#[derive(Debug)]
pub struct SendFile {
    /// The published name; the box gets it as `FILE_PATH` with a leading `/`.
    pub name: String,
    /// The publisher's own copy of the bytes.
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub ttl: u64,
}

/// A file and where its verdict goes.
#[derive(Debug)]
struct Request {
    file: SendFile,
    reply: oneshot::Sender<Result<Stored, String>>,
}

/// The box's confirmation.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub url: String,
    pub headers: Map<String, Value>,
    pub seconds: f64,
}

/// The sending side of a link.
#[derive(Debug, Clone)]
pub struct Link {
    pub box_id: NodeId,
    tx: mpsc::Sender<Request>,
    usage: Arc<Usage>,
}

/// How a link is used, shared by its clones.
#[derive(Debug)]
struct Usage {
    opened_at: u64,
    in_flight: AtomicUsize,
    last_used: AtomicU64,
}

/// Counts one transfer for as long as it runs, however `send` ends (a cancelled
/// sender included).
struct InFlight<'a>(&'a Usage);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.last_used.store(super::now_secs(), Ordering::Relaxed);
    }
}

impl Link {
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// When the session was opened (Unix seconds).
    pub fn opened_at(&self) -> u64 {
        self.usage.opened_at
    }

    /// Transfers running over the session now.
    pub fn in_flight(&self) -> usize {
        self.usage.in_flight.load(Ordering::Relaxed)
    }

    /// When the last transfer ended, or the session opened (Unix seconds).
    pub fn last_used(&self) -> u64 {
        self.usage.last_used.load(Ordering::Relaxed)
    }

    /// A link to no box whose session counts as open while the link lives, for
    /// tests of the pool.
    #[cfg(test)]
    pub fn detached(box_id: NodeId) -> Link {
        let (tx, rx) = mpsc::channel(1);
        // Leaked on purpose: the receiver keeps the channel open.
        std::mem::forget(rx);
        Link {
            box_id,
            tx,
            usage: Arc::new(Usage {
                opened_at: 0,
                in_flight: AtomicUsize::new(0),
                last_used: AtomicU64::new(0),
            }),
        }
    }

    /// Sends a file and waits for the box's verdict.
    pub async fn send(&self, file: SendFile) -> Result<Stored, String> {
        self.usage.in_flight.fetch_add(1, Ordering::Relaxed);
        let _counted = InFlight(&self.usage);
        let (reply, verdict) = oneshot::channel();
        self.tx
            .send(Request { file, reply })
            .await
            .map_err(|_| "the connection to the box is closed".to_owned())?;
        verdict
            .await
            .unwrap_or_else(|_| Err("the connection to the box closed mid-transfer".to_owned()))
    }
}

/// Why a publish session did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The daemon at the box's URL did not prove it is that box: nothing was
    /// signed for it.
    #[error("{0}")]
    Unproven(String),
    #[error("{0}")]
    Failed(String),
}

/// Opens a publish session to `box_id` at `connect_ws`: the box must prove that
/// ID before the publisher signs anything, so a box cannot relay another box's
/// challenge and borrow the publisher's signature. The returned future runs
/// the link until the box goes away or `stop` resolves.
pub async fn open(
    box_id: NodeId,
    connect_ws: &str,
    identity: &Identity,
    stop: CancellationToken,
) -> Result<(Link, impl Future<Output = Ended> + Send + 'static), OpenError> {
    let failed = |e: String| OpenError::Failed(e);
    let mut conn = connect_as(connect_ws, &box_id, identity, None)
        .await
        .map_err(|e| match e {
            ConnectionError::Unproven { .. } => OpenError::Unproven(e.to_string()),
            other => OpenError::Failed(other.to_string()),
        })?;
    conn.send(&Message::Publish(Publish {
        header: Header::new(identity.id().clone()),
        extra: Default::default(),
    }))
    .await
    .map_err(|e| failed(e.to_string()))?;
    let chunk = match conn.recv().await {
        Ok(Some(Incoming::Message(Message::PublishReply(reply)))) => reply
            .max_frame
            .and_then(|m| usize::try_from(m).ok())
            .map_or(DEFAULT_CHUNK, |m| m.clamp(4096, DEFAULT_CHUNK)),
        Ok(Some(Incoming::Message(Message::Error(e)))) => {
            return Err(failed(format!("the box refused: {}", e.error)));
        }
        Ok(Some(other)) => return Err(failed(format!("unexpected answer to PUBLISH: {other:?}"))),
        Ok(None) => return Err(failed("the box closed the session".into())),
        Err(e) => return Err(failed(e.to_string())),
    };
    let (tx, rx) = mpsc::channel(1);
    let now = super::now_secs();
    let link = Link {
        box_id: box_id.clone(),
        tx,
        usage: Arc::new(Usage {
            opened_at: now,
            in_flight: AtomicUsize::new(0),
            last_used: AtomicU64::new(now),
        }),
    };
    Ok((link, run(box_id, conn, rx, chunk, stop)))
}

/// How a publish session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The publisher stopped or dropped the link, or a transfer broke it (the
    /// sender already counted that failure).
    Closed,
    /// The box closed the session or the connection died while idle: the box
    /// probably went away, and viewers should not be sent to it meanwhile.
    Lost,
}

/// Transfers one session carries at once: the next file's bytes go out while
/// the box makes the previous ones durable. A box lands up to
/// `boxnode::session::MAX_LANDINGS` at once; an older box lands one at a time
/// and answers in order, which the ids match just the same.
pub const PIPELINE: usize = 4;

/// A transfer sent and waiting for its verdict.
struct Waiting {
    file: SendFile,
    reply: oneshot::Sender<Result<Stored, String>>,
    /// When its first frame went out.
    started: Instant,
    deadline: tokio::time::Instant,
    /// How long the transfer had from its first frame to its verdict.
    limit: Duration,
}

/// What woke the session. Short-lived, one at a time: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Request(Option<Request>),
    Incoming(Result<Option<Incoming>, ConnectionError>),
    Deadline,
}

async fn run(
    box_id: NodeId,
    mut conn: ClientConnection,
    mut rx: mpsc::Receiver<Request>,
    chunk: usize,
    stop: CancellationToken,
) -> Ended {
    let mut next_transfer: u64 = 1;
    let mut waiting: HashMap<u64, Waiting> = HashMap::new();
    let mut ended = Ended::Closed;
    let mut why = "the connection to the box closed mid-transfer".to_owned();
    loop {
        let earliest = waiting.values().map(|w| w.deadline).min();
        // While idle the session is read too, so a box that dies (`kill -9`, a
        // power cut: the kernel resets the connection) is noticed at once
        // instead of at the next transfer or when an entrance expires it.
        // `recv` is cancel-safe: its only wait is the WebSocket stream's `next`.
        let wake = tokio::select! {
            () = stop.cancelled() => break,
            request = rx.recv(), if waiting.len() < PIPELINE => Wake::Request(request),
            incoming = conn.recv() => Wake::Incoming(incoming),
            () = sleep_until(earliest), if earliest.is_some() => Wake::Deadline,
        };
        match wake {
            Wake::Request(None) => break,
            Wake::Request(Some(Request { file, reply })) => {
                let transfer = next_transfer;
                next_transfer += 1;
                let limit = VERDICT_GRACE + Duration::from_secs(file.size / SLOWEST_RATE);
                let deadline = tokio::time::Instant::now() + limit;
                // From the first byte: what the ranking measures as throughput.
                let started = Instant::now();
                let sent = tokio::time::timeout_at(
                    deadline,
                    send_frames(&mut conn, &file, transfer, chunk),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "connection: the file was not sent within {}s",
                        limit.as_secs()
                    ))
                });
                match sent {
                    Ok(()) => {
                        waiting.insert(
                            transfer,
                            Waiting {
                                file,
                                reply,
                                started,
                                deadline,
                                limit,
                            },
                        );
                    }
                    Err(e) => {
                        let broken = e.starts_with("connection:");
                        let _ = reply.send(Err(e));
                        if broken {
                            break;
                        }
                    }
                }
            }
            Wake::Incoming(Ok(Some(Incoming::Message(Message::Transfer(result))))) => {
                let Some(w) = result.transfer.and_then(|t| waiting.remove(&t)) else {
                    continue;
                };
                let verdict = judge(&w.file, result).map(|(url, headers)| Stored {
                    url,
                    headers,
                    seconds: w.started.elapsed().as_secs_f64(),
                });
                let _ = w.reply.send(verdict);
            }
            Wake::Incoming(Ok(Some(Incoming::Message(Message::Error(e))))) => {
                if !waiting.is_empty() {
                    why = format!("connection: box error: {}", e.error);
                    break;
                }
            }
            Wake::Incoming(Ok(Some(_))) => {}
            Wake::Incoming(Ok(None)) => {
                why = "connection: the box closed the session".into();
                ended = if waiting.is_empty() {
                    Ended::Lost
                } else {
                    Ended::Closed
                };
                break;
            }
            Wake::Incoming(Err(e)) if e.is_fatal() => {
                why = format!("connection: {e}");
                ended = if waiting.is_empty() {
                    Ended::Lost
                } else {
                    Ended::Closed
                };
                break;
            }
            Wake::Incoming(Err(e)) => tracing::debug!("ignoring a bad message from a box: {e}"),
            Wake::Deadline => {
                let now = tokio::time::Instant::now();
                let late: Vec<u64> = waiting
                    .iter()
                    .filter(|(_, w)| w.deadline <= now)
                    .map(|(t, _)| *t)
                    .collect();
                for t in late {
                    if let Some(w) = waiting.remove(&t) {
                        let _ = w.reply.send(Err(format!(
                            "no verdict from the box within {}s",
                            w.limit.as_secs()
                        )));
                    }
                }
            }
        }
    }
    for (_, w) in waiting.drain() {
        let _ = w.reply.send(Err(why.clone()));
    }
    tracing::debug!(box_id = %box_id, ?ended, "publish session ended");
    conn.close().await;
    ended
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Streams one file as chunked frames. Errors that leave the connection
/// unusable start with `connection:`.
async fn send_frames(
    conn: &mut ClientConnection,
    file: &SendFile,
    transfer: u64,
    chunk: usize,
) -> Result<(), String> {
    if file.size <= chunk as u64 {
        return send_whole(conn, file, transfer).await;
    }
    let mut source = tokio::fs::File::open(&file.path).await.map_err(|e| {
        format!(
            "cannot read the publisher's copy {}: {e}",
            file.path.display()
        )
    })?;
    let mut offset: u64 = 0;
    let mut buf = vec![0u8; chunk];
    loop {
        let n = read_full(&mut source, &mut buf).await.map_err(|e| {
            // Once frames went out, the box waits for the rest: only a new
            // session clears that transfer.
            let broken = if offset > 0 { "connection: " } else { "" };
            format!(
                "{broken}cannot read the publisher's copy {}: {e}",
                file.path.display()
            )
        })?;
        let payload = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
        let header = if offset == 0 {
            start_header(file, transfer)
        } else {
            FrameHeader::Continue { transfer, offset }
        };
        conn.send_binary(Frame { header, payload }.encode())
            .await
            .map_err(|e| format!("connection: {e}"))?;
        offset += n as u64;
        if n == 0 || offset >= file.size {
            break;
        }
    }
    if offset != file.size {
        // The box waits for bytes that will never come: only a new session
        // clears that transfer.
        return Err(format!(
            "connection: the publisher's copy changed: {offset} bytes read, {} expected",
            file.size
        ));
    }
    Ok(())
}

/// A file that fits one frame (a live segment): read in one trip to the
/// blocking pool and sent without a copy.
async fn send_whole(
    conn: &mut ClientConnection,
    file: &SendFile,
    transfer: u64,
) -> Result<(), String> {
    let path = file.path.clone();
    let bytes = dandelion_core::fsio::blocking(move || std::fs::read(path))
        .await
        .map_err(|e| {
            format!(
                "cannot read the publisher's copy {}: {e}",
                file.path.display()
            )
        })?;
    if bytes.len() as u64 != file.size {
        return Err(format!(
            "the publisher's copy changed: {} bytes, {} expected",
            bytes.len(),
            file.size
        ));
    }
    let header = start_header(file, transfer);
    conn.send_binary(
        Frame {
            header,
            payload: Bytes::from(bytes),
        }
        .encode(),
    )
    .await
    .map_err(|e| format!("connection: {e}"))
}

/// The frame header that opens a file's transfer.
fn start_header(file: &SendFile, transfer: u64) -> FrameHeader {
    FrameHeader::Start(StartHeader {
        path: format!("/{}", file.name),
        ttl: Some(file.ttl),
        chunked: Some(ChunkedStart {
            transfer,
            size: file.size,
            sha256: file.sha256.clone(),
        }),
        extra: Map::new(),
    })
}

/// The box's verdict on a file, checked against what was sent.
fn judge(file: &SendFile, result: TransferResult) -> Result<(String, Map<String, Value>), String> {
    match result.outcome {
        TransferOutcome::Stored { size, sha256, url }
            if size == file.size && sha256 == file.sha256 =>
        {
            Ok((url, result.headers))
        }
        TransferOutcome::Stored { size, sha256, .. } => Err(format!(
            "the box stored {size} bytes with SHA-256 {sha256}, not what was sent"
        )),
        TransferOutcome::Refused { reason, code } => Err(format!("refused ({code}): {reason}")),
    }
}

/// Fills `buf` unless the file ends first; returns the bytes read.
async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let Some(rest) = buf.get_mut(filled..) else {
            break;
        };
        let n = file.read(rest).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}
