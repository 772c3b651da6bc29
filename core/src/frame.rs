//! File frames: the binary WebSocket messages in which a publisher streams files to a box.
//!
//! One WebSocket binary message is one frame:
//!
//! ```text
//! <Dandelion>{"FILE_PATH": "/srv/video/hls/plain3.ts", "TTL": 60}</Dandelion>#EXTM3U segment…
//! ^ marker   ^ JSON object (UTF-8), the headers                   ^ end marker ^ payload = rest of message
//! ```
//!
//! The framing is the original Dandelion's, kept byte for byte so that its publishers keep
//! working. The original had exactly one kind of frame: `FILE_PATH` (an absolute path on the
//! publisher) and `TTL` (seconds, a JSON number or a numeric string; missing means 60 s and 0
//! meant "forever", which we read as "the box's maximum"), followed by the *whole file*. Any
//! other header key was user metadata that rode along (`"STREAM": "demo"`); we keep those
//! keys, in order, in [`StartHeader::extra`].
//!
//! Dandelion extends that framing so that a file of any size streams with bounded memory and
//! is checked before the box stores it:
//!
//! - a **start frame** adds `SIZE` (total bytes), `SHA256` (hex digest of the whole file) and
//!   `TRANSFER` (an id chosen by the publisher, unique among its open transfers on this
//!   connection); its payload is the first chunk, which may be empty or the whole file;
//! - **continue frames** carry only `TRANSFER` and `OFFSET`, and the bytes at that offset.
//!
//! A start frame with none of `SIZE`/`SHA256`/`TRANSFER` is the original's one-shot frame.
//!
//! Protocol `dandelion/2` (a box says so in its `PUBLISH` reply's `VERSION`) lets the hash come
//! last, so that a publisher can forward a file while it is still being uploaded to it
//! (cut-through), before it knows the hash:
//!
//! - a start frame may leave `SHA256` out;
//! - the **final frame** of such a transfer is a continue frame that also carries `SHA256`; its
//!   payload (often empty) ends exactly at `SIZE`. The transfer completes there, and only there,
//!   once the hash matches;
//! - an **abort frame**, `TRANSFER` and `ABORT` (a reason for the box's log), drops an open
//!   transfer without ending the connection: the upload feeding it failed.
//!
//! A `dandelion/1` publisher never sends either, and a box accepts both kinds of start frame
//! from anyone: a transfer whose hash comes last is verified all the same.
//!
//! Decoding has two layers. [`Frame::decode`] is stateless: it checks the framing, the header
//! fields and the per-frame [`Limits`], and hands back the payload as a zero-copy slice of the
//! message. [`Transfers`] is the per-connection state machine a box feeds frame after frame:
//! it checks that chunks arrive in order and within `SIZE`, hashes them as they pass, and
//! reports start, data and completion as an [`Event`], so the box writes chunks to disk as they
//! come and never holds a whole file. Every malformed input is a [`FrameError`], never a panic.
//! Deciding where a `FILE_PATH` may be stored (`..`, symlinks) is the box's job, not this
//! module's.

mod error;
mod header;
#[cfg(test)]
mod tests;
mod transfers;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value};

pub use error::FrameError;
pub use transfers::{ActiveTransfer, Chunk, Completed, Event, Started, Transfers};

/// Opens every frame. The original box ignored bytes before it; we refuse them, since no
/// publisher ever sent any and a frame that does not start with it is garbage.
pub const START_MARKER: &[u8] = b"<Dandelion>";
/// Closes the JSON header. The original split at its *first* occurrence, so the encoder escapes
/// `<` inside header strings to keep a header from ever containing it.
pub const END_MARKER: &[u8] = b"</Dandelion>";

/// Header keys with a meaning in the protocol; every other key is user metadata.
pub const FILE_PATH: &str = "FILE_PATH";
/// Seconds the box keeps the file.
pub const TTL: &str = "TTL";
/// Total size of a chunked file, in bytes.
pub const SIZE: &str = "SIZE";
/// Lower-case hex SHA-256 of the whole chunked file.
pub const SHA256: &str = "SHA256";
/// Publisher-chosen id tying continue frames to their start frame.
pub const TRANSFER: &str = "TRANSFER";
/// Byte offset of a continue frame's payload in the file.
pub const OFFSET: &str = "OFFSET";
/// Drops an open transfer; the value is the publisher's reason.
pub const ABORT: &str = "ABORT";
/// Keys that never end up in [`StartHeader::extra`] and that the encoder never writes from it,
/// so that user metadata cannot shadow a protocol field.
pub const RESERVED_KEYS: [&str; 7] = [FILE_PATH, TTL, SIZE, SHA256, TRANSFER, OFFSET, ABORT];

/// What a missing `TTL` means: the original box's hard-coded default.
pub const DEFAULT_TTL_SECS: u64 = 60;
/// Largest `TTL` accepted (100 years). Anything above is a bug or an attack, and refusing it
/// keeps the box's `now + ttl` arithmetic far from overflow.
pub const MAX_TTL_SECS: u64 = 100 * 365 * 24 * 60 * 60;

/// Transfer ids are chosen by the publisher and only need to be unique per connection.
pub type TransferId = u64;

/// Hard limits that bound what one connection can make a box parse, buffer and keep open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// JSON header bytes between the markers. The original's headers are about 60 bytes; 16 KiB
    /// leaves plenty of room for user metadata while bounding how far the decoder scans for the
    /// end marker and how much JSON it parses per message.
    pub max_header_bytes: usize,
    /// Payload bytes in one frame of a chunked transfer. 1 MiB keeps per-message memory small
    /// on a household box while still amortising the per-frame header and WebSocket overhead.
    pub max_chunk_bytes: usize,
    /// Payload bytes of the original's one-shot frame, which carries the whole file in one
    /// message (a 50 MiB frame was seen working). 64 MiB accepts what the original's users sent
    /// without letting a legacy peer make the box buffer arbitrarily large messages; the
    /// WebSocket layer's message size limit must be at least this for legacy publishers.
    pub max_oneshot_bytes: usize,
    /// Total size of one file. 4 GiB covers long video files while keeping one publisher from
    /// filling a household disk with a single transfer; boxes with more room can raise it.
    pub max_file_size: u64,
    /// Chunked transfers open at once on one connection. Each costs the box an open temporary
    /// file and a hasher; 8 lets a publisher interleave segments of several streams while
    /// keeping a misbehaving peer from exhausting file descriptors.
    pub max_concurrent_transfers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_chunk_bytes: 1024 * 1024,
            max_oneshot_bytes: 64 * 1024 * 1024,
            max_file_size: 4 * 1024 * 1024 * 1024,
            max_concurrent_transfers: 8,
        }
    }
}

impl Limits {
    /// The largest WebSocket message a frame within these limits makes when
    /// its payload is at most one chunk: a chunked publish session needs no
    /// larger one.
    pub fn max_chunked_message(&self) -> usize {
        START_MARKER.len() + self.max_header_bytes + END_MARKER.len() + self.max_chunk_bytes
    }
}

/// The headers of a frame that opens a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartHeader {
    /// As the publisher sent it, normally absolute (the original sent its local path). Never
    /// empty and never containing NUL; everything else about its safety is the box's call.
    pub path: String,
    /// `None` when the header had no `TTL`, which the caller treats as [`DEFAULT_TTL_SECS`].
    /// `Some(0)` is the original's "never expire", which a box caps at its maximum TTL.
    pub ttl: Option<u64>,
    /// `None` for the original's one-shot frame, whose payload is the whole file.
    pub chunked: Option<ChunkedStart>,
    /// User metadata the original passed through, in the order the publisher sent it.
    pub extra: Map<String, Value>,
}

/// What a start frame adds so that a file can stream in chunks and be verified at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedStart {
    /// Id that later continue frames refer to.
    pub transfer: TransferId,
    /// Total bytes; the transfer completes when this many bytes have arrived.
    pub size: u64,
    /// 64 lower-case hex digits; the decoder lower-cases what the publisher sent. `None`: the
    /// hash comes in the final frame (`dandelion/2`, cut-through).
    pub sha256: Option<String>,
}

/// The two kinds of frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameHeader {
    /// Opens a file (chunked) or carries all of it (the original's one-shot frame).
    Start(StartHeader),
    /// More bytes for an open chunked transfer.
    Continue {
        /// The id from the start frame.
        transfer: TransferId,
        /// Where the payload goes; must be exactly where the previous chunk ended.
        offset: u64,
    },
    /// The last bytes of a transfer whose start frame had no `SHA256`, and the hash.
    Finish {
        /// The id from the start frame.
        transfer: TransferId,
        /// Where the payload goes; the payload must end at `SIZE`.
        offset: u64,
        /// 64 lower-case hex digits.
        sha256: String,
    },
    /// Drops an open transfer.
    Abort {
        /// The id from the start frame.
        transfer: TransferId,
        /// Why, shortened: for the box's log.
        reason: String,
    },
}

/// One decoded WebSocket binary message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The parsed JSON header.
    pub header: FrameHeader,
    /// Everything after the end marker, sharing the message's buffer (no copy).
    pub payload: Bytes,
}

impl Frame {
    /// Parses one binary message and checks it against the per-frame `limits`.
    ///
    /// Only the framing and the frame's own fields are checked here; whether a chunk fits its
    /// transfer is [`Transfers::accept`]'s job.
    pub fn decode(msg: Bytes, limits: &Limits) -> Result<Frame, FrameError> {
        if msg.get(..START_MARKER.len()) != Some(START_MARKER) {
            return Err(FrameError::MissingStartMarker);
        }
        let body = msg.get(START_MARKER.len()..).unwrap_or_default();
        // Scan no further than a maximal header plus its end marker: a peer must not make us
        // search a whole megabyte of payload for a marker that is not there.
        let window_len = body
            .len()
            .min(limits.max_header_bytes.saturating_add(END_MARKER.len()));
        let window = body.get(..window_len).unwrap_or_default();
        let Some(header_len) = find(window, END_MARKER) else {
            return Err(if body.len() > window_len {
                FrameError::HeaderTooLarge {
                    max: limits.max_header_bytes,
                }
            } else {
                FrameError::MissingEndMarker
            });
        };
        if header_len > limits.max_header_bytes {
            return Err(FrameError::HeaderTooLarge {
                max: limits.max_header_bytes,
            });
        }
        let header = window.get(..header_len).unwrap_or_default();
        if find(header, START_MARKER).is_some() {
            return Err(FrameError::RepeatedStartMarker);
        }
        let header = header::parse(header)?;
        let payload_start = START_MARKER.len() + header_len + END_MARKER.len();
        if payload_start > msg.len() {
            // Cannot happen (the end marker was found inside the message); kept so that a
            // mistake here is an error instead of a panic in `slice`.
            return Err(FrameError::MissingEndMarker);
        }
        let frame = Frame {
            header,
            payload: msg.slice(payload_start..),
        };
        frame.validate(limits)?;
        Ok(frame)
    }

    /// Checks what can be checked on one frame alone. [`Frame::decode`] and
    /// [`Transfers::accept`] both call it, so a frame built by hand gets the same checks.
    pub fn validate(&self, limits: &Limits) -> Result<(), FrameError> {
        match &self.header {
            FrameHeader::Start(start) => {
                header::check_path(&start.path)?;
                if let Some(ttl) = start.ttl {
                    header::check_ttl(ttl)?;
                }
                match &start.chunked {
                    None => {
                        check_payload(&self.payload, limits.max_oneshot_bytes, None)?;
                        let size = len_u64(self.payload.len());
                        if size > limits.max_file_size {
                            return Err(FrameError::FileTooLarge {
                                size,
                                max: limits.max_file_size,
                            });
                        }
                    }
                    Some(chunked) => {
                        if let Some(sha256) = &chunked.sha256 {
                            check_sha256(sha256)?;
                        }
                        if chunked.size > limits.max_file_size {
                            return Err(FrameError::FileTooLarge {
                                size: chunked.size,
                                max: limits.max_file_size,
                            });
                        }
                        check_payload(&self.payload, limits.max_chunk_bytes, None)?;
                    }
                }
            }
            FrameHeader::Continue { transfer, .. } => {
                check_payload(&self.payload, limits.max_chunk_bytes, Some(*transfer))?;
            }
            FrameHeader::Finish {
                transfer, sha256, ..
            } => {
                check_sha256(sha256)?;
                check_payload(&self.payload, limits.max_chunk_bytes, Some(*transfer))?;
            }
            FrameHeader::Abort { transfer, .. } => {
                check_payload(&self.payload, 0, Some(*transfer))?;
            }
        }
        Ok(())
    }

    /// Serialises the frame as one binary message.
    ///
    /// Numbers (`TTL`, `SIZE`, `TRANSFER`, `OFFSET`) are written as JSON numbers, as the
    /// original wrote `TTL`. Keys of [`StartHeader::extra`] that are [`RESERVED_KEYS`] are
    /// skipped. Every `<` in the JSON is written as `\u003c`, so that no header value can
    /// contain a marker and cut the header short.
    pub fn encode(&self) -> Bytes {
        let mut map = Map::new();
        match &self.header {
            FrameHeader::Start(start) => {
                map.insert(FILE_PATH.to_owned(), Value::from(start.path.as_str()));
                if let Some(ttl) = start.ttl {
                    map.insert(TTL.to_owned(), Value::from(ttl));
                }
                if let Some(chunked) = &start.chunked {
                    map.insert(SIZE.to_owned(), Value::from(chunked.size));
                    if let Some(sha256) = &chunked.sha256 {
                        map.insert(SHA256.to_owned(), Value::from(sha256.as_str()));
                    }
                    map.insert(TRANSFER.to_owned(), Value::from(chunked.transfer));
                }
                for (key, value) in &start.extra {
                    if !RESERVED_KEYS.contains(&key.as_str()) {
                        map.insert(key.clone(), value.clone());
                    }
                }
            }
            FrameHeader::Continue { transfer, offset } => {
                map.insert(TRANSFER.to_owned(), Value::from(*transfer));
                map.insert(OFFSET.to_owned(), Value::from(*offset));
            }
            FrameHeader::Finish {
                transfer,
                offset,
                sha256,
            } => {
                map.insert(TRANSFER.to_owned(), Value::from(*transfer));
                map.insert(OFFSET.to_owned(), Value::from(*offset));
                map.insert(SHA256.to_owned(), Value::from(sha256.as_str()));
            }
            FrameHeader::Abort { transfer, reason } => {
                map.insert(TRANSFER.to_owned(), Value::from(*transfer));
                map.insert(ABORT.to_owned(), Value::from(reason.as_str()));
            }
        }
        // `<` only ever occurs inside JSON strings, where `\u003c` means the same thing.
        let json = Value::Object(map).to_string().replace('<', "\\u003c");
        let mut out = BytesMut::with_capacity(
            START_MARKER.len() + json.len() + END_MARKER.len() + self.payload.len(),
        );
        out.put_slice(START_MARKER);
        out.put_slice(json.as_bytes());
        out.put_slice(END_MARKER);
        out.put_slice(&self.payload);
        out.freeze()
    }
}

fn check_sha256(sha256: &str) -> Result<(), FrameError> {
    if header::is_lower_hex_sha256(sha256) {
        Ok(())
    } else {
        Err(FrameError::BadSha256 {
            value: header::snippet(sha256),
        })
    }
}

fn check_payload(
    payload: &Bytes,
    max: usize,
    transfer: Option<TransferId>,
) -> Result<(), FrameError> {
    if payload.len() > max {
        return Err(FrameError::PayloadTooLarge {
            transfer,
            len: payload.len(),
            max,
        });
    }
    Ok(())
}

/// Payload lengths are at most `isize::MAX`, so this never saturates in practice.
fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// Position of the first `needle` in `haystack`. Headers are capped at a few KiB, so the
/// naive scan is fine.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}
