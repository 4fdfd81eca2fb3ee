//! IO attributes: the fixed 80-byte prefix of WRITE / READ / LOOKUP / DEL payloads and replies.
//!
//! Layout (LE): `offset:u64 size:u64 total_size:u64 ts_sec:u64 ts_nsec:u32 reserved:u32
//! user_flags:u64 record_flags:u64 io_flags:u64 num:u64 checksum:u64`.

use crate::protocol::ProtocolError;
use crate::wire::{Reader, Writer};

/// Bytes of an encoded [`IoAttr`].
pub const IO_ATTR_SIZE: usize = 80;
const _: () = assert!(IO_ATTR_SIZE == 8 * 9 + 4 + 4);

/// IO flag bits.
pub mod io_flags {
    /// Append to the existing object.
    pub const APPEND: u64 = 1;
    /// Reserve `total_size` bytes, UNCOMMITTED until COMMIT.
    pub const PREPARE: u64 = 1 << 1;
    /// Write into a prepared record without committing.
    pub const PLAIN_WRITE: u64 = 1 << 2;
    /// Finish a prepared record (`total_size` = final size).
    pub const COMMIT: u64 = 1 << 3;
    /// Write only if the stored checksum equals `checksum`; with COMMIT: seal only if the
    /// record's data comes out with this checksum (else it stays uncommitted).
    pub const CAS_CHECKSUM: u64 = 1 << 4;
    /// Write only if no stored copy is newer than (or as new as) the given timestamp.
    pub const CAS_TIMESTAMP: u64 = 1 << 5;
    /// Also keep the object in the node's cache.
    pub const CACHE: u64 = 1 << 6;
    /// Keep the object only in the cache (lifetime `num` seconds), never on disk.
    pub const CACHE_ONLY: u64 = 1 << 7;
    /// Store without checksums.
    pub const NOCSUM: u64 = 1 << 8;
    /// Reply without data (lookups, iterators).
    pub const NO_DATA: u64 = 1 << 9;
    /// LOOKUP: verify the whole record (data header and every chunk checksum) before
    /// answering; a damaged record answers CORRUPTED. Costs a read of the object.
    pub const VERIFY: u64 = 1 << 10;
    /// Write only if this version `(timestamp, size)` is newer than the stored copy's, or
    /// equal while the stored copy is uncommitted or fails verification (recovery's rule:
    /// replicas are ranked by `(timestamp, size)`, and an equal but damaged copy is repaired).
    pub const CAS_VERSION: u64 = 1 << 11;
    /// WRITE of a whole object: `checksum` is the record checksum its data must have (the
    /// hash of its chunk hashes, as LOOKUP reports it); other bytes are refused with
    /// CORRUPTED and nothing is stored. A copy sent from a blob file as a file region, never
    /// verified by its sender, is checked this way. Not with CAS_CHECKSUM (one `checksum` field).
    pub const DATA_CHECKSUM: u64 = 1 << 12;
    /// Every flag this version knows.
    pub const KNOWN: u64 = (1 << 13) - 1;
}

/// Attributes of one IO.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoAttr {
    /// Offset inside the object.
    pub offset: u64,
    /// Bytes (requests: 0 = to the end; replies: bytes returned).
    pub size: u64,
    /// PREPARE: reserved size; COMMIT: final size; replies: the object's total size.
    pub total_size: u64,
    /// Record timestamp, seconds.
    pub ts_sec: u64,
    /// Record timestamp, nanoseconds (< 10^9).
    pub ts_nsec: u32,
    /// Application flags stored with the record.
    pub user_flags: u64,
    /// Record flags (replies).
    pub record_flags: u64,
    /// `io_flags::*`.
    pub io_flags: u64,
    /// Command-specific number (cache lifetime in seconds for CACHE_ONLY).
    pub num: u64,
    /// Record checksum (replies; CAS_CHECKSUM requests).
    pub checksum: u64,
}

impl IoAttr {
    /// Whether `flag` is set in `io_flags`.
    pub fn has(&self, flag: u64) -> bool {
        self.io_flags & flag != 0
    }

    /// Append the encoding to `w`.
    pub fn write(&self, w: &mut Writer) {
        w.u64(self.offset)
            .u64(self.size)
            .u64(self.total_size)
            .u64(self.ts_sec)
            .u32(self.ts_nsec)
            .u32(0)
            .u64(self.user_flags)
            .u64(self.record_flags)
            .u64(self.io_flags)
            .u64(self.num)
            .u64(self.checksum);
    }

    /// Read and validate one.
    pub fn read(r: &mut Reader<'_>) -> Result<IoAttr, ProtocolError> {
        let a = IoAttr {
            offset: r.u64()?,
            size: r.u64()?,
            total_size: r.u64()?,
            ts_sec: r.u64()?,
            ts_nsec: {
                let n = r.u32()?;
                let _reserved = r.u32()?;
                n
            },
            user_flags: r.u64()?,
            record_flags: r.u64()?,
            io_flags: r.u64()?,
            num: r.u64()?,
            checksum: r.u64()?,
        };
        let bad = |reason: &str| ProtocolError::Invalid {
            what: "io attributes",
            reason: reason.to_owned(),
        };
        if a.ts_nsec >= 1_000_000_000 {
            return Err(bad("timestamp nanoseconds out of range"));
        }
        if a.io_flags & !io_flags::KNOWN != 0 {
            return Err(bad("unknown io flags"));
        }
        if a.offset.checked_add(a.size).is_none() {
            return Err(bad("offset + size overflows"));
        }
        Ok(a)
    }
}
