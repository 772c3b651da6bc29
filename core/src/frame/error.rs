//! Why a frame was refused.

use super::TransferId;

/// Everything that can be wrong with a frame or with the sequence of frames of a transfer.
///
/// The messages are meant for the publisher (the box sends them back in its refusal) and for
/// logs; [`FrameError::reason_code`] is the stable label for metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The message does not begin with `<Dandelion>`.
    #[error("file frame does not start with the <Dandelion> marker")]
    MissingStartMarker,
    /// No `</Dandelion>` anywhere after the start marker.
    #[error("file frame has no </Dandelion> marker after its header")]
    MissingEndMarker,
    /// A second `<Dandelion>` before the end marker: two frames glued together, or a header the
    /// original would have misread.
    #[error("file frame has a second <Dandelion> marker before </Dandelion>")]
    RepeatedStartMarker,
    /// The header (between the markers) is longer than [`super::Limits::max_header_bytes`].
    #[error("file frame header is longer than {max} bytes")]
    HeaderTooLarge {
        /// The limit.
        max: usize,
    },
    /// The header bytes are not UTF-8.
    #[error("file frame header is not valid UTF-8")]
    HeaderNotUtf8,
    /// The header is not parseable JSON.
    #[error("file frame header is not valid JSON: {0}")]
    HeaderNotJson(String),
    /// The header is JSON, but not an object.
    #[error("file frame header is a JSON {found}, not an object")]
    HeaderNotObject {
        /// The JSON type found instead.
        found: &'static str,
    },
    /// A required header field is absent.
    #[error("file frame header lacks the {0} field")]
    MissingField(&'static str),
    /// A field that has no meaning in this kind of frame.
    #[error("file frame header field {field} is not allowed in a frame with FILE_PATH")]
    UnexpectedField {
        /// The field.
        field: &'static str,
    },
    /// A field of the wrong JSON type.
    #[error("file frame header field {field} must be {expected}, not a JSON {found}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// A count that is negative.
    #[error("file frame header field {field} must not be negative (got {value})")]
    Negative {
        /// The field.
        field: &'static str,
        /// The value as sent (shortened).
        value: String,
    },
    /// A count with a fraction or written as a decimal fraction.
    #[error(
        "file frame header field {field} must be a whole number in decimal digits (got {value})"
    )]
    NotInteger {
        /// The field.
        field: &'static str,
        /// The value as sent (shortened).
        value: String,
    },
    /// A count too large to be meaningful.
    #[error("file frame header field {field} is out of range (got {value}, at most {max})")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value as sent (shortened).
        value: String,
        /// The largest accepted value.
        max: u64,
    },
    /// `SIZE` (or the one-shot payload) is over [`super::Limits::max_file_size`].
    #[error("file of {size} bytes is larger than the {max}-byte limit")]
    FileTooLarge {
        /// The file's size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// `SHA256` is not 64 hex digits.
    #[error("SHA256 must be 64 hex digits (got {value:?})")]
    BadSha256 {
        /// The value as sent (shortened).
        value: String,
    },
    /// `FILE_PATH` is the empty string.
    #[error("FILE_PATH is empty")]
    EmptyPath,
    /// `FILE_PATH` contains a NUL character, which no file system path can hold.
    #[error("FILE_PATH contains a NUL character")]
    PathContainsNul,
    /// The frame's payload is over the per-frame limit.
    #[error("{}file frame payload of {len} bytes is larger than the {max}-byte limit", transfer_prefix(*.transfer))]
    PayloadTooLarge {
        /// The transfer the frame belongs to, when it is a continue frame.
        transfer: Option<TransferId>,
        /// The payload's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The chunk would make the file longer than its `SIZE`.
    #[error("transfer {transfer}: chunk ending at byte {end} runs past SIZE {size}")]
    PayloadPastSize {
        /// The transfer.
        transfer: TransferId,
        /// Where the chunk would end.
        end: u64,
        /// The transfer's `SIZE`.
        size: u64,
    },
    /// The chunk is not where the previous one ended (reordered, a gap, or an overlap).
    #[error(
        "transfer {transfer}: chunk at offset {offset}, but the next byte expected is {expected} \
         (chunks must arrive in order, without gaps or overlaps)"
    )]
    OffsetMismatch {
        /// The transfer.
        transfer: TransferId,
        /// The frame's `OFFSET`.
        offset: u64,
        /// Where the previous chunk ended.
        expected: u64,
    },
    /// `OFFSET` is beyond the end of the file.
    #[error("transfer {transfer}: OFFSET {offset} is past SIZE {size}")]
    OffsetPastSize {
        /// The transfer.
        transfer: TransferId,
        /// The frame's `OFFSET`.
        offset: u64,
        /// The transfer's `SIZE`.
        size: u64,
    },
    /// A continue frame for a transfer that was never started, already finished or aborted.
    #[error("transfer {transfer} is not open on this connection")]
    UnknownTransfer {
        /// The transfer.
        transfer: TransferId,
    },
    /// A start frame reusing the id of an open transfer. Both are dropped: the publisher has
    /// lost track of its own transfers.
    #[error("transfer {transfer} is already open on this connection")]
    DuplicateTransfer {
        /// The transfer.
        transfer: TransferId,
    },
    /// One more open transfer than [`super::Limits::max_concurrent_transfers`].
    #[error("too many transfers open on this connection (at most {max})")]
    TooManyTransfers {
        /// The limit.
        max: usize,
    },
    /// All `SIZE` bytes arrived but their SHA-256 is not the announced one.
    #[error(
        "transfer {transfer}: SHA-256 of the received file is {actual}, but SHA256 said {expected}"
    )]
    HashMismatch {
        /// The transfer.
        transfer: TransferId,
        /// The start frame's `SHA256`.
        expected: String,
        /// The hash of what arrived.
        actual: String,
    },
    /// A final frame whose payload does not end at `SIZE`: the hash may only follow the last
    /// byte.
    #[error(
        "transfer {transfer}: SHA256 came with bytes ending at {end}, but it may only come with \
         the frame that ends the file at SIZE {size}"
    )]
    HashBeforeEnd {
        /// The transfer.
        transfer: TransferId,
        /// Where the frame's bytes end.
        end: u64,
        /// The transfer's `SIZE`.
        size: u64,
    },
    /// A final frame for a transfer whose start frame already carried `SHA256`.
    #[error("transfer {transfer}: SHA256 was already given in its start frame")]
    HashGivenTwice {
        /// The transfer.
        transfer: TransferId,
    },
}

fn transfer_prefix(transfer: Option<TransferId>) -> String {
    transfer.map_or_else(String::new, |t| format!("transfer {t}: "))
}

impl FrameError {
    /// A short, stable, snake_case name of the error, for metrics labels and tests. It never
    /// contains data from the frame.
    pub fn reason_code(&self) -> &'static str {
        match self {
            Self::MissingStartMarker => "missing_start_marker",
            Self::MissingEndMarker => "missing_end_marker",
            Self::RepeatedStartMarker => "repeated_start_marker",
            Self::HeaderTooLarge { .. } => "header_too_large",
            Self::HeaderNotUtf8 => "header_not_utf8",
            Self::HeaderNotJson(_) => "header_not_json",
            Self::HeaderNotObject { .. } => "header_not_object",
            Self::MissingField(_) => "missing_field",
            Self::UnexpectedField { .. } => "unexpected_field",
            Self::WrongType { .. } => "wrong_type",
            Self::Negative { .. } => "negative_number",
            Self::NotInteger { .. } => "not_integer",
            Self::OutOfRange { .. } => "out_of_range",
            Self::FileTooLarge { .. } => "file_too_large",
            Self::BadSha256 { .. } => "bad_sha256",
            Self::EmptyPath => "empty_path",
            Self::PathContainsNul => "path_contains_nul",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::PayloadPastSize { .. } => "payload_past_size",
            Self::OffsetMismatch { .. } => "offset_mismatch",
            Self::OffsetPastSize { .. } => "offset_past_size",
            Self::UnknownTransfer { .. } => "unknown_transfer",
            Self::DuplicateTransfer { .. } => "duplicate_transfer",
            Self::TooManyTransfers { .. } => "too_many_transfers",
            Self::HashMismatch { .. } => "hash_mismatch",
            Self::HashBeforeEnd { .. } => "hash_before_end",
            Self::HashGivenTwice { .. } => "hash_given_twice",
        }
    }

    /// The transfer this error ends, if any. After such an error the transfer is no longer
    /// open in [`super::Transfers`] (call [`super::Transfers::abort`] for errors from
    /// [`super::Frame::decode`], which has no state), and the box should delete its partial
    /// file and tell the publisher.
    pub fn transfer(&self) -> Option<TransferId> {
        match self {
            Self::PayloadTooLarge { transfer, .. } => *transfer,
            Self::PayloadPastSize { transfer, .. }
            | Self::OffsetMismatch { transfer, .. }
            | Self::OffsetPastSize { transfer, .. }
            | Self::UnknownTransfer { transfer }
            | Self::DuplicateTransfer { transfer }
            | Self::HashMismatch { transfer, .. }
            | Self::HashBeforeEnd { transfer, .. }
            | Self::HashGivenTwice { transfer } => Some(*transfer),
            _ => None,
        }
    }
}
