//! The one error type of the store.
//!
//! Callers mostly need to tell three situations apart: their own mistake (a key of the
//! wrong type, a NaN score — nothing was changed, do not retry), a store that cannot be
//! reached or used (retry later, alert an operator), and a store whose content makes
//! no sense (stop, someone must look). The variants follow that split, and every
//! backend error keeps the operation and key it happened on, because "I/O error" alone
//! is useless in a log read at 3 a.m.

use std::sync::Arc;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key holds another type (a hash used as a list...). Nothing was changed.
    #[error("WRONGTYPE: the key {key:?} holds another type of value")]
    WrongType {
        /// The key, without the backend's prefix.
        key: String,
    },

    /// A batch's condition ([`Batch::only_if`](super::Batch::only_if)) did not hold:
    /// someone changed the record since it was read. Nothing was changed.
    #[error(
        "the batch's condition on {key:?} field {field:?} no longer holds; nothing was written"
    )]
    Conflict {
        /// The guarded key, without the backend's prefix.
        key: String,
        /// The guarded field.
        field: String,
    },

    /// A sorted-set score or bound was NaN, which has no place in an order.
    #[error("a sorted-set score or bound must be a number, not NaN")]
    InvalidScore,

    /// The embedded database failed (disk full, I/O error, file locked...).
    ///
    /// The cause is behind an `Arc` because one failed commit must be reported to
    /// every operation of its batch, and `redb::Error` is not `Clone`.
    #[error("embedded store: {context}: {cause}")]
    Embedded {
        /// What was being done, and on which key.
        context: String,
        /// The error redb reported.
        cause: Arc<redb::Error>,
    },

    /// The Redis server answered with an error, or the connection failed mid-way.
    #[cfg(feature = "redis")]
    #[error("Redis store: {context}: {cause}")]
    Redis {
        /// The command, and the key it was about.
        context: String,
        /// The error the redis client reported.
        cause: redis::RedisError,
    },

    /// The Redis store could not be reached at start-up.
    #[error("cannot reach the Redis store at {url}: {cause}")]
    Unreachable {
        /// The URL, with any password replaced by `***`.
        url: String,
        /// Why: connection refused, timed out, authentication failed...
        cause: String,
    },

    /// Stored data breaks an invariant of the store itself (a list without its
    /// metadata, an unreadable value).
    #[error("the store is corrupt at key {key:?}: {detail}")]
    Corrupt {
        /// The key whose data is inconsistent.
        key: String,
        /// What is wrong with it.
        detail: String,
    },

    /// The store was given a configuration it cannot use (unknown store spec,
    /// invalid prefix, a Redis URL in a build without Redis support).
    #[error("invalid store configuration: {0}")]
    Config(String),

    /// The embedded store's writer thread is gone (it panicked, or the process is
    /// shutting down), so no write can be acknowledged any more.
    #[error("the embedded store's writer has stopped; no write can be made")]
    WriterStopped,
}

impl StoreError {
    /// Whether the operation failed before changing anything, because of its own
    /// arguments rather than the state of the backend: such a failure must not take
    /// the other operations of an embedded write batch down with it.
    pub(crate) fn is_caller_error(&self) -> bool {
        matches!(
            self,
            Self::WrongType { .. } | Self::InvalidScore | Self::Conflict { .. }
        )
    }
}
