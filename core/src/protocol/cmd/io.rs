//! WRITE / READ / DEL requests and READ replies: IO attributes, then the data.

use bytes::Bytes;

use super::Payload;
use crate::protocol::{IoAttr, ProtocolError};
use crate::wire::{Reader, Writer};

/// IO attributes and data (empty for READ and DEL requests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoPayload {
    /// Attributes.
    pub attr: IoAttr,
    /// Object bytes.
    pub data: Bytes,
}

impl IoPayload {
    /// [`Payload::decode`] of a frame's payload without copying the data: `data` is a slice
    /// of `b` (what the node's WRITE and the client's READ use; `decode` copies, as it only
    /// has a borrowed slice).
    pub fn decode_shared(b: &Bytes) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "io payload");
        let attr = IoAttr::read(&mut r)?;
        let data = b.slice(b.len() - r.remaining()..);
        Ok(IoPayload { attr, data })
    }

    /// The encoding split in two, attributes then data, without copying the data: the
    /// frame's `payload` and `tail` ([`Frame::with_tail`](crate::protocol::Frame::with_tail)).
    pub fn into_parts(self) -> (Vec<u8>, Bytes) {
        let mut w = Writer::new();
        self.attr.write(&mut w);
        (w.finish(), self.data)
    }
}

impl Payload for IoPayload {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.attr.write(&mut w);
        w.bytes(&self.data);
        w.finish()
    }
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "io payload");
        let attr = IoAttr::read(&mut r)?;
        let data = Bytes::copy_from_slice(r.bytes(r.remaining())?);
        Ok(IoPayload { attr, data })
    }
}
