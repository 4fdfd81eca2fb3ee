//! ITERATOR: start / pause / continue / cancel an iteration over one backend, and the
//! records it streams back (with MORE; keep-alive records while it skips).
//!
//! A start request gets, in order: one keep-alive frame carrying the new iterator id (so a
//! client can pause or cancel before the first match), one MORE frame per matching record,
//! keep-alive frames while records are skipped, then the final frame (OK, or CANCELLED when
//! cancelled). Control requests (pause / continue / cancel) name the iterator id and get one
//! reply, an [`IteratorRecord`] keep-alive with the progress so far. Not a snapshot: records
//! written while it runs may or may not be seen.

use bytes::Bytes;

use super::{read_id, write_id, Payload};
use crate::id::Id;
use crate::protocol::{IoAttr, ProtocolError, Status};
use crate::wire::{Reader, Writer};

/// Most key ranges in one request.
pub const MAX_RANGES: u32 = 1024;
/// Skipped records between two keep-alives when the request leaves it at 0.
pub const DEFAULT_KEEPALIVE_SKIPPED: u32 = 4096;

/// What to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IteratorAction {
    /// Start a new iterator.
    #[default]
    Start,
    /// Pause a running one.
    Pause,
    /// Continue a paused one.
    Continue,
    /// Cancel.
    Cancel,
}

impl IteratorAction {
    fn code(self) -> u32 {
        match self {
            IteratorAction::Start => 1,
            IteratorAction::Pause => 2,
            IteratorAction::Continue => 3,
            IteratorAction::Cancel => 4,
        }
    }
    fn from_code(c: u32) -> Result<Self, ProtocolError> {
        Ok(match c {
            1 => IteratorAction::Start,
            2 => IteratorAction::Pause,
            3 => IteratorAction::Continue,
            4 => IteratorAction::Cancel,
            _ => {
                return Err(ProtocolError::Invalid {
                    what: "iterator request",
                    reason: format!("action {c}"),
                })
            }
        })
    }
}

/// An iterator request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IteratorRequest {
    /// Which iterator (ignored by Start; the first reply carries the new id).
    pub iterator_id: u64,
    /// What to do.
    pub action: IteratorAction,
    /// Backend to iterate.
    pub backend: u32,
    /// Send record data too.
    pub with_data: bool,
    /// Key ranges `[start, end)`; empty = all keys.
    pub ranges: Vec<(Id, Id)>,
    /// Only records with timestamp in `[from, to]` (seconds); `None` = any.
    pub time_range: Option<(u64, u64)>,
    /// Also stream prepared, not yet committed records (flagged in `record_flags`).
    pub include_uncommitted: bool,
    /// Send a keep-alive after this many skipped records in a row (0 = the default, 4096);
    /// the node also sends one when nothing went out for a second.
    pub keepalive_skipped: u32,
}

impl Payload for IteratorRequest {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.iterator_id)
            .u32(self.action.code())
            .u32(self.backend)
            .u8(u8::from(self.with_data));
        w.count(self.ranges.len());
        for (a, b) in &self.ranges {
            write_id(&mut w, a);
            write_id(&mut w, b);
        }
        match self.time_range {
            Some((from, to)) => w.u8(1).u64(from).u64(to),
            None => w.u8(0),
        };
        w.u8(u8::from(self.include_uncommitted))
            .u32(self.keepalive_skipped);
        w.finish()
    }
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "iterator request");
        let iterator_id = r.u64()?;
        let action = IteratorAction::from_code(r.u32()?)?;
        let backend = r.u32()?;
        let with_data = super::read_bool(&mut r, "iterator request")?;
        let n = r.count(MAX_RANGES, 128)?;
        let mut ranges = Vec::with_capacity(n);
        for _ in 0..n {
            let (a, b) = (read_id(&mut r)?, read_id(&mut r)?);
            if a > b {
                return Err(ProtocolError::Invalid {
                    what: "iterator request",
                    reason: "key range start is after its end".into(),
                });
            }
            ranges.push((a, b));
        }
        let time_range = if super::read_bool(&mut r, "iterator request")? {
            Some((r.u64()?, r.u64()?))
        } else {
            None
        };
        if let Some((from, to)) = time_range {
            if from > to {
                return Err(ProtocolError::Invalid {
                    what: "iterator request",
                    reason: "time range start is after its end".into(),
                });
            }
        }
        let include_uncommitted = super::read_bool(&mut r, "iterator request")?;
        let keepalive_skipped = r.u32()?;
        r.finish()?;
        Ok(IteratorRequest {
            iterator_id,
            action,
            backend,
            with_data,
            ranges,
            time_range,
            include_uncommitted,
            keepalive_skipped,
        })
    }
}

/// One streamed iterator reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IteratorRecord {
    /// Iterator id.
    pub iterator_id: u64,
    /// Key of the record (zero for keep-alives).
    pub key: Id,
    /// Status of this record (a read error of one record does not end the iteration).
    pub status: Status,
    /// Nothing matched lately; sent so the client knows the iterator is alive.
    pub keepalive: bool,
    /// Records iterated so far and in all (for progress).
    pub iterated: u64,
    /// Total records of the backend when the iterator started.
    pub total: u64,
    /// Size, timestamp, flags.
    pub attr: IoAttr,
    /// Data when requested.
    pub data: Bytes,
}

impl Payload for IteratorRecord {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.iterator_id);
        write_id(&mut w, &self.key);
        w.i32(self.status.0)
            .u8(u8::from(self.keepalive))
            .u64(self.iterated)
            .u64(self.total);
        self.attr.write(&mut w);
        w.bytes(&self.data);
        w.finish()
    }
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "iterator record");
        Ok(IteratorRecord {
            iterator_id: r.u64()?,
            key: read_id(&mut r)?,
            status: Status(r.i32()?),
            keepalive: super::read_bool(&mut r, "iterator record")?,
            iterated: r.u64()?,
            total: r.u64()?,
            attr: IoAttr::read(&mut r)?,
            data: Bytes::copy_from_slice(r.bytes(r.remaining())?),
        })
    }
}
