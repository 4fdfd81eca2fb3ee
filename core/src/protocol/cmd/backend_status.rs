//! BACKEND_STATUS reply: every backend of the node, briefly (details are in the JSON stats).

use super::Payload;
use crate::protocol::ProtocolError;
use crate::wire::{Reader, Writer};

/// Most backends in a reply.
pub const MAX_BACKENDS: u32 = 1024;

/// One backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendStatusEntry {
    /// Backend id.
    pub backend: u32,
    /// Group.
    pub group: u32,
    /// Serving requests.
    pub enabled: bool,
    /// Refusing writes.
    pub read_only: bool,
    /// A data-sort is running.
    pub defrag_running: bool,
    /// Artificial delay.
    pub delay_ms: u32,
    /// Ring ids.
    pub ids: u32,
}

/// The reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendStatusReply {
    /// Backends.
    pub backends: Vec<BackendStatusEntry>,
}

impl Payload for BackendStatusReply {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.count(self.backends.len());
        for b in &self.backends {
            w.u32(b.backend)
                .u32(b.group)
                .u8(u8::from(b.enabled))
                .u8(u8::from(b.read_only))
                .u8(u8::from(b.defrag_running))
                .u32(b.delay_ms)
                .u32(b.ids);
        }
        w.finish()
    }
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "backend status");
        let n = r.count(MAX_BACKENDS, 19)?;
        let mut backends = Vec::with_capacity(n);
        for _ in 0..n {
            backends.push(BackendStatusEntry {
                backend: r.u32()?,
                group: r.u32()?,
                enabled: super::read_bool(&mut r, "backend status")?,
                read_only: super::read_bool(&mut r, "backend status")?,
                defrag_running: super::read_bool(&mut r, "backend status")?,
                delay_ms: r.u32()?,
                ids: r.u32()?,
            });
        }
        r.finish()?;
        Ok(BackendStatusReply { backends })
    }
}
