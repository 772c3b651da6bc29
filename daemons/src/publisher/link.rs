//! A publish session with one box: open it (proving the publisher's ID), then
//! stream files over it, up to [`PIPELINE`] waiting for the box's verdict at
//! once.
//!
//! A file goes either from the publisher's copy ([`Link::send`]) or, with a box
//! that speaks `dandelion/2`, piece by piece while it is still being uploaded
//! ([`Link::stream`], cut-through): its hash then goes in the final frame.
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
use dandelion_core::protocol::{
    HASH_LAST_SINCE, Header, Message, Publish, TransferOutcome, TransferResult,
};
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
    pub source: Source,
    pub size: u64,
    pub sha256: String,
    pub ttl: u64,
}

/// Where the bytes of a [`SendFile`] are read from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file in the origin directory.
    File(PathBuf),
    /// Bytes kept in the store, already read.
    Memory(Bytes),
}

/// A file forwarded while it is still arriving: its hash comes at the end.
#[derive(Debug, Clone)]
pub struct StreamFile {
    /// The published name; the box gets it as `FILE_PATH` with a leading `/`.
    pub name: String,
    pub size: u64,
    pub ttl: u64,
}

/// What the intake feeds a stream, in order. Dropping the sender before
/// [`Piece::End`] aborts the transfer on the box.
#[derive(Debug)]
pub enum Piece {
    /// The next bytes of the file.
    Data(Bytes),
    /// Every byte was fed; the file's SHA-256 (lower-case hex).
    End { sha256: String },
}

/// A stream being fed: where its pieces go and where its verdict comes.
#[derive(Debug)]
pub struct Stream {
    pub pieces: mpsc::Sender<Piece>,
    pub verdict: oneshot::Receiver<Result<Stored, Failed>>,
    _counted: InFlight,
}

/// Pieces buffered per stream: with the intake's 1 MiB pieces, what the
/// publisher holds for one box while that box is slower than the upload.
const STREAM_BUFFER: usize = 2;

/// What a link is asked to send.
#[derive(Debug)]
enum Outgoing {
    File(SendFile),
    Stream(StreamFile, mpsc::Receiver<Piece>),
}

/// A file and where its verdict goes.
#[derive(Debug)]
struct Request {
    outgoing: Outgoing,
    reply: oneshot::Sender<Result<Stored, Failed>>,
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
    /// The box's protocol level, from its `PUBLISH` reply.
    level: u32,
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
#[derive(Debug)]
struct InFlight(Arc<Usage>);

impl InFlight {
    fn new(usage: &Arc<Usage>) -> InFlight {
        usage.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(usage.clone())
    }
}

impl Drop for InFlight {
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
            level: 0,
        }
    }

    /// Whether the box takes a file's hash in its final frame, which
    /// [`Link::stream`] needs.
    pub fn takes_hash_last(&self) -> bool {
        self.level >= HASH_LAST_SINCE
    }

    /// Sends a file and waits for the box's verdict.
    pub async fn send(&self, file: SendFile) -> Result<Stored, String> {
        let _counted = InFlight::new(&self.usage);
        let (reply, verdict) = oneshot::channel();
        self.tx
            .send(Request {
                outgoing: Outgoing::File(file),
                reply,
            })
            .await
            .map_err(|_| "the connection to the box is closed".to_owned())?;
        match verdict.await {
            Ok(verdict) => verdict.map_err(|f| f.reason),
            Err(_) => Err(closed_mid_transfer()),
        }
    }

    /// Opens a transfer fed piece by piece (cut-through). Only for a box that
    /// [`takes_hash_last`](Link::takes_hash_last). The session may still be
    /// busy with earlier transfers: the pieces wait in the stream's buffer.
    pub async fn stream(&self, file: StreamFile) -> Result<Stream, String> {
        if !self.takes_hash_last() {
            return Err(format!(
                "box {} speaks protocol level {}: it cannot take a file's hash last",
                self.box_id, self.level
            ));
        }
        let counted = InFlight::new(&self.usage);
        let (pieces, rx) = mpsc::channel(STREAM_BUFFER);
        let (reply, verdict) = oneshot::channel();
        self.tx
            .send(Request {
                outgoing: Outgoing::Stream(file, rx),
                reply,
            })
            .await
            .map_err(|_| "the connection to the box is closed".to_owned())?;
        Ok(Stream {
            pieces,
            verdict,
            _counted: counted,
        })
    }
}

impl Stream {
    /// The box's verdict, once [`Piece::End`] was fed.
    pub async fn verdict(self) -> Result<Stored, Failed> {
        let Stream { verdict, .. } = self;
        verdict
            .await
            .unwrap_or_else(|_| Err(closed_mid_transfer().into()))
    }
}

/// Why a transfer placed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub reason: String,
    /// The upload feeding a stream stalled or ended early: nothing the box
    /// did, so not held against it.
    pub upload: bool,
}

impl From<String> for Failed {
    fn from(reason: String) -> Failed {
        Failed {
            reason,
            upload: false,
        }
    }
}

fn closed_mid_transfer() -> String {
    "the connection to the box closed mid-transfer".to_owned()
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
    stall: Duration,
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
    let (chunk, level) = match conn.recv().await {
        Ok(Some(Incoming::Message(Message::PublishReply(reply)))) => (
            reply
                .max_frame
                .and_then(|m| usize::try_from(m).ok())
                .map_or(DEFAULT_CHUNK, |m| m.clamp(4096, DEFAULT_CHUNK)),
            reply.header.level(),
        ),
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
        level,
    };
    Ok((link, run(box_id, conn, rx, chunk, stall, stop)))
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
    /// What the box must confirm.
    size: u64,
    sha256: String,
    reply: oneshot::Sender<Result<Stored, Failed>>,
    /// When its first frame went out.
    started: Instant,
    deadline: tokio::time::Instant,
    /// How long the transfer had from its first frame to its verdict.
    limit: Duration,
}

/// A transfer whose bytes are still arriving from the intake.
struct Streaming {
    transfer: u64,
    file: StreamFile,
    pieces: mpsc::Receiver<Piece>,
    reply: oneshot::Sender<Result<Stored, Failed>>,
    /// Bytes sent so far.
    sent: u64,
    /// Whether the start frame went out.
    begun: bool,
    started: Instant,
    /// When the stream is given up if no piece came (`upload_stall_timeout`):
    /// an upload that stalls must not hold one of the session's [`PIPELINE`]
    /// places for ever.
    idle_until: tokio::time::Instant,
}

/// What woke the session. Short-lived, one at a time: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Request(Option<Request>),
    /// The next piece of `streams[i]`; `None` when the intake dropped it.
    Piece(usize, Option<Piece>),
    Incoming(Result<Option<Incoming>, ConnectionError>),
    Deadline,
}

/// The next piece of any stream being fed, with the stream's index; the
/// streams are asked in turn from `first`, so that two uploads to one box
/// share it instead of the first starving the second. Cancel-safe: it only
/// polls the receivers.
async fn next_piece(streams: &mut [Streaming], first: usize) -> (usize, Option<Piece>) {
    std::future::poll_fn(|cx| {
        let n = streams.len();
        for k in 0..n {
            let i = (first + k) % n;
            if let Some(s) = streams.get_mut(i)
                && let std::task::Poll::Ready(piece) = s.pieces.poll_recv(cx)
            {
                return std::task::Poll::Ready((i, piece));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// How long one piece may take to reach the box.
fn piece_limit(len: usize) -> Duration {
    VERDICT_GRACE + Duration::from_secs(len as u64 / SLOWEST_RATE)
}

async fn run(
    box_id: NodeId,
    mut conn: ClientConnection,
    mut rx: mpsc::Receiver<Request>,
    chunk: usize,
    stall: Duration,
    stop: CancellationToken,
) -> Ended {
    let mut next_transfer: u64 = 1;
    let mut waiting: HashMap<u64, Waiting> = HashMap::new();
    let mut streams: Vec<Streaming> = Vec::new();
    // Which stream is asked first for its next piece.
    let mut turn = 0;
    let mut ended = Ended::Closed;
    let mut why = "the connection to the box closed mid-transfer".to_owned();
    loop {
        let earliest = waiting
            .values()
            .map(|w| w.deadline)
            .chain(streams.iter().map(|s| s.idle_until))
            .min();
        let busy = waiting.len() + streams.len();
        // While idle the session is read too, so a box that dies (`kill -9`, a
        // power cut: the kernel resets the connection) is noticed at once
        // instead of at the next transfer or when an entrance expires it.
        // `recv` is cancel-safe: its only wait is the WebSocket stream's `next`.
        let wake = tokio::select! {
            () = stop.cancelled() => break,
            request = rx.recv(), if busy < PIPELINE => Wake::Request(request),
            (i, piece) = next_piece(&mut streams, turn), if !streams.is_empty() => Wake::Piece(i, piece),
            incoming = conn.recv() => Wake::Incoming(incoming),
            () = sleep_until(earliest), if earliest.is_some() => Wake::Deadline,
        };
        match wake {
            Wake::Request(None) => break,
            Wake::Request(Some(Request {
                outgoing: Outgoing::Stream(file, pieces),
                reply,
            })) => {
                let transfer = next_transfer;
                next_transfer += 1;
                streams.push(Streaming {
                    transfer,
                    file,
                    pieces,
                    reply,
                    sent: 0,
                    begun: false,
                    started: Instant::now(),
                    idle_until: tokio::time::Instant::now() + stall,
                });
            }
            Wake::Request(Some(Request {
                outgoing: Outgoing::File(file),
                reply,
            })) => {
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
                                size: file.size,
                                sha256: file.sha256,
                                reply,
                                started,
                                deadline,
                                limit,
                            },
                        );
                    }
                    Err(e) => {
                        let broken = e.starts_with("connection:");
                        let _ = reply.send(Err(e.into()));
                        if broken {
                            break;
                        }
                    }
                }
            }
            Wake::Piece(i, piece) => {
                if i >= streams.len() {
                    continue;
                }
                turn = i + 1;
                let fed = match piece {
                    Some(piece) => feed(&mut conn, &mut streams[i], piece, chunk).await,
                    None => Fed::Abort("the upload ended before the whole file came".into()),
                };
                match fed {
                    Fed::More => {
                        streams[i].idle_until = tokio::time::Instant::now() + stall;
                    }
                    Fed::Sent(sha256) => {
                        let s = streams.swap_remove(i);
                        let deadline = tokio::time::Instant::now() + VERDICT_GRACE;
                        waiting.insert(
                            s.transfer,
                            Waiting {
                                size: s.file.size,
                                sha256,
                                reply: s.reply,
                                started: s.started,
                                deadline,
                                limit: VERDICT_GRACE,
                            },
                        );
                    }
                    Fed::Abort(reason) => {
                        let s = streams.swap_remove(i);
                        if let Err(e) = abort(&mut conn, s, reason).await {
                            why = e;
                            break;
                        }
                    }
                    Fed::Broken(e) => {
                        let s = streams.swap_remove(i);
                        let _ = s.reply.send(Err(e.clone().into()));
                        why = e;
                        break;
                    }
                }
            }
            Wake::Incoming(Ok(Some(Incoming::Message(Message::Transfer(result))))) => {
                // A verdict before the end of a stream is a refusal (quota, a
                // path the box will not store): stop feeding it.
                if let Some(i) = streams
                    .iter()
                    .position(|s| Some(s.transfer) == result.transfer)
                {
                    let s = streams.swap_remove(i);
                    let verdict = match result.outcome {
                        TransferOutcome::Refused { reason, code } => {
                            format!("refused ({code}): {reason}")
                        }
                        TransferOutcome::Stored { .. } => {
                            "the box confirmed a file before its last byte".to_owned()
                        }
                    };
                    let _ = s.reply.send(Err(verdict.into()));
                    continue;
                }
                let Some(w) = result.transfer.and_then(|t| waiting.remove(&t)) else {
                    continue;
                };
                let verdict = judge(w.size, &w.sha256, result).map(|(url, headers)| Stored {
                    url,
                    headers,
                    seconds: w.started.elapsed().as_secs_f64(),
                });
                let _ = w.reply.send(verdict.map_err(Failed::from));
            }
            Wake::Incoming(Ok(Some(Incoming::Message(Message::Error(e))))) => {
                if !waiting.is_empty() || !streams.is_empty() {
                    why = format!("connection: box error: {}", e.error);
                    break;
                }
            }
            Wake::Incoming(Ok(Some(_))) => {}
            Wake::Incoming(Ok(None)) => {
                why = "connection: the box closed the session".into();
                ended = if waiting.is_empty() && streams.is_empty() {
                    Ended::Lost
                } else {
                    Ended::Closed
                };
                break;
            }
            Wake::Incoming(Err(e)) if e.is_fatal() => {
                why = format!("connection: {e}");
                ended = if waiting.is_empty() && streams.is_empty() {
                    Ended::Lost
                } else {
                    Ended::Closed
                };
                break;
            }
            Wake::Incoming(Err(e)) => tracing::debug!("ignoring a bad message from a box: {e}"),
            Wake::Deadline => {
                let now = tokio::time::Instant::now();
                let (stalled, going): (Vec<_>, Vec<_>) =
                    streams.drain(..).partition(|s| s.idle_until <= now);
                streams = going;
                let mut broken = None;
                for s in stalled {
                    let reason = format!("the upload sent nothing for {}s", stall.as_secs());
                    if let Err(e) = abort(&mut conn, s, reason).await {
                        broken = Some(e);
                        break;
                    }
                }
                if let Some(e) = broken {
                    why = e;
                    break;
                }
                let late: Vec<u64> = waiting
                    .iter()
                    .filter(|(_, w)| w.deadline <= now)
                    .map(|(t, _)| *t)
                    .collect();
                for t in late {
                    if let Some(w) = waiting.remove(&t) {
                        let _ = w.reply.send(Err(Failed::from(format!(
                            "no verdict from the box within {}s",
                            w.limit.as_secs()
                        ))));
                    }
                }
            }
        }
    }
    for (_, w) in waiting.drain() {
        let _ = w.reply.send(Err(why.clone().into()));
    }
    for s in streams.drain(..) {
        let _ = s.reply.send(Err(why.clone().into()));
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

/// What feeding a stream one piece led to.
enum Fed {
    /// Waiting for more pieces.
    More,
    /// The final frame went out: wait for the verdict on this hash.
    Sent(String),
    /// The transfer must be dropped on the box (if it began there), for this reason.
    Abort(String),
    /// The connection is unusable.
    Broken(String),
}

/// Sends what one piece of a stream makes: its bytes in frames of at most
/// `chunk`, the first of them the start frame (no `SHA256`: it comes last),
/// or the final frame with the hash.
async fn feed(conn: &mut ClientConnection, s: &mut Streaming, piece: Piece, chunk: usize) -> Fed {
    match piece {
        Piece::Data(mut bytes) => {
            let end = s.sent + bytes.len() as u64;
            if end > s.file.size {
                return Fed::Abort(format!(
                    "the upload is longer than the {} bytes announced",
                    s.file.size
                ));
            }
            while !bytes.is_empty() {
                let payload = bytes.split_to(bytes.len().min(chunk));
                let len = payload.len();
                let header = if s.begun {
                    FrameHeader::Continue {
                        transfer: s.transfer,
                        offset: s.sent,
                    }
                } else {
                    stream_start(&s.file, s.transfer)
                };
                let frame = Frame { header, payload }.encode();
                if let Err(e) = send_in_time(conn, frame, piece_limit(len)).await {
                    return Fed::Broken(e);
                }
                s.begun = true;
                s.sent += len as u64;
            }
            Fed::More
        }
        Piece::End { sha256 } => {
            if s.sent != s.file.size {
                return Fed::Abort(format!(
                    "the upload ended at {} of the {} bytes announced",
                    s.sent, s.file.size
                ));
            }
            if !s.begun {
                let start = Frame {
                    header: stream_start(&s.file, s.transfer),
                    payload: Bytes::new(),
                };
                if let Err(e) = send_in_time(conn, start.encode(), piece_limit(0)).await {
                    return Fed::Broken(e);
                }
                s.begun = true;
            }
            let last = Frame {
                header: FrameHeader::Finish {
                    transfer: s.transfer,
                    offset: s.sent,
                    sha256: sha256.clone(),
                },
                payload: Bytes::new(),
            };
            match send_in_time(conn, last.encode(), piece_limit(0)).await {
                Ok(()) => Fed::Sent(sha256),
                Err(e) => Fed::Broken(e),
            }
        }
    }
}

/// Drops a stream whose upload failed: tells the box, if its transfer began
/// there, and the intake. An error means the session is unusable.
async fn abort(conn: &mut ClientConnection, s: Streaming, reason: String) -> Result<(), String> {
    let sent = if s.begun {
        let frame = Frame {
            header: FrameHeader::Abort {
                transfer: s.transfer,
                reason: reason.clone(),
            },
            payload: Bytes::new(),
        };
        send_in_time(conn, frame.encode(), piece_limit(0)).await
    } else {
        Ok(())
    };
    let _ = s.reply.send(Err(Failed {
        reason,
        upload: true,
    }));
    sent
}

/// Sends one message; an error starts with `connection:`, for the session is
/// unusable after it.
async fn send(conn: &mut ClientConnection, message: Bytes) -> Result<(), String> {
    conn.send_binary(message)
        .await
        .map_err(|e| format!("connection: {e}"))
}

/// Sends one message unless the box takes longer than `limit` to accept it.
/// Errors start with `connection:`: the session is unusable after them.
async fn send_in_time(
    conn: &mut ClientConnection,
    message: Bytes,
    limit: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(limit, send(conn, message)).await {
        Ok(sent) => sent,
        Err(_) => Err(format!(
            "connection: the box took more than {}s to take a frame",
            limit.as_secs()
        )),
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
    let path = match &file.source {
        Source::Memory(bytes) => return send_memory(conn, file, bytes, transfer, chunk).await,
        Source::File(path) => path,
    };
    if file.size <= chunk as u64 {
        return send_whole(conn, file, path, transfer).await;
    }
    let mut source = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("cannot read the publisher's copy {}: {e}", path.display()))?;
    let mut offset: u64 = 0;
    let mut buf = vec![0u8; chunk];
    loop {
        let n = read_full(&mut source, &mut buf).await.map_err(|e| {
            // Once frames went out, the box waits for the rest: only a new
            // session clears that transfer.
            let broken = if offset > 0 { "connection: " } else { "" };
            format!(
                "{broken}cannot read the publisher's copy {}: {e}",
                path.display()
            )
        })?;
        let payload = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
        let header = chunk_header(file, transfer, offset);
        send(conn, Frame { header, payload }.encode()).await?;
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
    path: &std::path::Path,
    transfer: u64,
) -> Result<(), String> {
    let owned = path.to_owned();
    let bytes = dandelion_core::fsio::blocking(move || std::fs::read(owned))
        .await
        .map_err(|e| format!("cannot read the publisher's copy {}: {e}", path.display()))?;
    if bytes.len() as u64 != file.size {
        return Err(format!(
            "the publisher's copy changed: {} bytes, {} expected",
            bytes.len(),
            file.size
        ));
    }
    let header = start_header(file, transfer);
    let frame = Frame {
        header,
        payload: Bytes::from(bytes),
    };
    send(conn, frame.encode()).await
}

/// A file kept in the store: its bytes in frames of at most `chunk`, each a
/// slice of the one buffer.
async fn send_memory(
    conn: &mut ClientConnection,
    file: &SendFile,
    bytes: &Bytes,
    transfer: u64,
    chunk: usize,
) -> Result<(), String> {
    if bytes.len() as u64 != file.size {
        return Err(format!(
            "the publisher's copy in the store has {} bytes, {} expected",
            bytes.len(),
            file.size
        ));
    }
    let mut offset = 0;
    loop {
        let end = bytes.len().min(offset + chunk.max(1));
        let header = chunk_header(file, transfer, offset as u64);
        let payload = bytes.slice(offset..end);
        send(conn, Frame { header, payload }.encode()).await?;
        offset = end;
        if offset >= bytes.len() {
            return Ok(());
        }
    }
}

/// The header of the frame carrying `file`'s bytes from `offset`: the first
/// opens the transfer.
fn chunk_header(file: &SendFile, transfer: u64, offset: u64) -> FrameHeader {
    if offset == 0 {
        start_header(file, transfer)
    } else {
        FrameHeader::Continue { transfer, offset }
    }
}

/// The frame header that opens a file's transfer.
fn start_header(file: &SendFile, transfer: u64) -> FrameHeader {
    opening(
        &file.name,
        file.ttl,
        transfer,
        file.size,
        Some(file.sha256.clone()),
    )
}

/// The frame header that opens a stream's transfer: the hash comes last.
fn stream_start(file: &StreamFile, transfer: u64) -> FrameHeader {
    opening(&file.name, file.ttl, transfer, file.size, None)
}

fn opening(name: &str, ttl: u64, transfer: u64, size: u64, sha256: Option<String>) -> FrameHeader {
    FrameHeader::Start(StartHeader {
        path: format!("/{name}"),
        ttl: Some(ttl),
        chunked: Some(ChunkedStart {
            transfer,
            size,
            sha256,
        }),
        extra: Map::new(),
    })
}

/// The box's verdict on a file, checked against what was sent.
fn judge(
    sent_size: u64,
    sent_sha256: &str,
    result: TransferResult,
) -> Result<(String, Map<String, Value>), String> {
    match result.outcome {
        TransferOutcome::Stored { size, sha256, url }
            if size == sent_size && sha256 == sent_sha256 =>
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn streaming(transfer: u64, pieces: usize) -> Streaming {
        let (tx, rx) = mpsc::channel(pieces);
        for _ in 0..pieces {
            tx.try_send(Piece::Data(Bytes::from_static(b"x"))).unwrap();
        }
        Streaming {
            transfer,
            file: StreamFile {
                name: format!("f{transfer}"),
                size: 10,
                ttl: 60,
            },
            pieces: rx,
            reply: oneshot::channel().0,
            sent: 0,
            begun: false,
            started: Instant::now(),
            idle_until: tokio::time::Instant::now(),
        }
    }

    #[tokio::test]
    async fn two_uploads_to_one_box_take_turns() {
        let mut streams = vec![streaming(1, 3), streaming(2, 3)];
        let mut turn = 0;
        let mut order = Vec::new();
        for _ in 0..4 {
            let (i, piece) = next_piece(&mut streams, turn).await;
            assert!(matches!(piece, Some(Piece::Data(_))));
            order.push(streams[i].transfer);
            turn = i + 1;
        }
        assert_eq!(order, [1, 2, 1, 2], "neither upload starves the other");
    }
}
