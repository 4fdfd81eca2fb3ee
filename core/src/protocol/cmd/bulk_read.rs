//! BULK_READ request: a list of key ids; one streamed READ reply per key.

use super::{read_ids, write_ids, Payload, MAX_IDS};
use crate::id::Id;
use crate::protocol::ProtocolError;
use crate::wire::{Reader, Writer};

/// Keys to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BulkRead {
    /// Key ids (at most [`MAX_IDS`]).
    pub ids: Vec<Id>,
}

impl Payload for BulkRead {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        write_ids(&mut w, &self.ids);
        w.finish()
    }
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "bulk read");
        let ids = read_ids(&mut r, MAX_IDS)?;
        r.finish()?;
        Ok(BulkRead { ids })
    }
}
