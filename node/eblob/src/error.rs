//! The engine's error type: one enum for every failure a caller can see.
//!
//! Not a wire status: mapping these to protocol status codes is the node's job, in one place.
//! Invariant: data that failed a checksum is only ever reported through [`Error::Corrupted`],
//! never returned as bytes.

use std::path::PathBuf;

use crate::key::{Key, Timestamp};

/// Everything that can go wrong in the engine.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key is absent or removed.
    #[error("key not found")]
    NotFound,
    /// The record was prepared but not committed yet.
    #[error("record is uncommitted (prepared, waiting for commit)")]
    Uncommitted,
    /// A compare-and-swap write found a stored copy with the same or a newer timestamp.
    #[error("a newer or equal copy exists (stored timestamp {stored})")]
    NewerExists {
        /// Timestamp of the stored copy.
        stored: Timestamp,
    },
    /// A record or index entry failed its checksum; its bytes are never returned.
    #[error("corrupted record for key {key} in base {base} at offset {offset_bytes}: {reason}")]
    Corrupted {
        /// The key whose record is damaged.
        key: Key,
        /// Base number (`data-N`).
        base: u32,
        /// Record offset inside the data file.
        offset_bytes: u64,
        /// What failed.
        reason: String,
    },
    /// Another handle (this or another process) holds the directory lock.
    #[error("database is locked: {path} is held by another open")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The configured size limit or the filesystem's free space does not allow this write.
    #[error("no space: {reason} (needed {needed_bytes} bytes, available {available_bytes} bytes)")]
    NoSpace {
        /// Which limit refused the write.
        reason: &'static str,
        /// Bytes the write needed.
        needed_bytes: u64,
        /// Bytes the limit leaves.
        available_bytes: u64,
    },
    /// The backend turned read-only after a write or fsync error (or was opened so).
    #[error("backend is read-only: {reason}")]
    ReadOnly {
        /// Why writes are refused.
        reason: String,
    },
    /// A read or write range lies outside the object or its reserved space.
    #[error("range out of bounds: offset {offset} + size {size} exceeds {limit} bytes")]
    OutOfRange {
        /// Requested offset.
        offset: u64,
        /// Requested size.
        size: u64,
        /// Object size (reads) or reserved capacity (plain writes).
        limit: u64,
    },
    /// A commit with an expected checksum found other data in the record (left uncommitted).
    #[error("commit refused: record checksum {found:#x}, expected {expected:#x}")]
    ChecksumMismatch {
        /// The checksum the commit asked for.
        expected: u64,
        /// The checksum of the data in the record.
        found: u64,
    },
    /// A write that named the checksum of its data ([`crate::WriteOptions::data_checksum`])
    /// carried other bytes: nothing was stored.
    #[error("write refused: its data has checksum {found:#x}, the writer expected {expected:#x}")]
    DataMismatch {
        /// The checksum the writer named.
        expected: u64,
        /// The checksum of the bytes that arrived.
        found: u64,
    },
    /// The request itself is malformed (bad flag combination, bad key length, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A data-sort is already running on this backend.
    #[error("a data-sort is already running")]
    SortRunning,
    /// An operating-system IO error.
    #[error("{op} {path}: {source}")]
    Io {
        /// What the engine was doing.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
