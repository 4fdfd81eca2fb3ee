//! LOOKUP reply: the record's attributes and where it lives.

use super::Payload;
use crate::protocol::{IoAttr, ProtocolError};
use crate::wire::{Reader, Writer};

/// Where a record is and what it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LookupInfo {
    /// Size (`total_size`), timestamp, flags, checksum.
    pub attr: IoAttr,
    /// Backend holding it.
    pub backend: u32,
    /// Data file path on the node.
    pub path: String,
    /// Offset of the object's data in that file.
    pub data_offset: u64,
}

impl Payload for LookupInfo {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.attr.write(&mut w);
        w.u32(self.backend)
            .blob(self.path.as_bytes())
            .u64(self.data_offset);
        w.finish()
    }
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "lookup reply");
        let v = LookupInfo {
            attr: IoAttr::read(&mut r)?,
            backend: r.u32()?,
            path: r.string(4096)?,
            data_offset: r.u64()?,
        };
        r.finish()?;
        Ok(v)
    }
}
