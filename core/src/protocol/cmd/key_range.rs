//! READ_RANGE / DEL_RANGE request: every key with `start <= id < end` on the addressed
//! backend, at most `limit` of them (0 = no limit), replies streamed with MORE.

use super::{read_id, write_id, Payload};
use crate::id::Id;
use crate::protocol::ProtocolError;
use crate::wire::{Reader, Writer};

/// A key range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRange {
    /// First id (inclusive).
    pub start: Id,
    /// End id (exclusive).
    pub end: Id,
    /// Most keys (0 = all).
    pub limit: u32,
    /// `io_flags` (NO_DATA for keys only).
    pub io_flags: u64,
}

impl Payload for KeyRange {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        write_id(&mut w, &self.start);
        write_id(&mut w, &self.end);
        w.u32(self.limit).u64(self.io_flags);
        w.finish()
    }
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "key range");
        let v = KeyRange {
            start: read_id(&mut r)?,
            end: read_id(&mut r)?,
            limit: r.u32()?,
            io_flags: r.u64()?,
        };
        r.finish()?;
        if v.start > v.end {
            return Err(ProtocolError::Invalid {
                what: "key range",
                reason: "start is after end".into(),
            });
        }
        Ok(v)
    }
}
