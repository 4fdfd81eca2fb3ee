//! SEND (server-send): copy keys held by the receiving node to other groups, node to node.

use super::{read_ids, write_ids, Payload, MAX_GROUPS, MAX_IDS};
use crate::id::Id;
use crate::protocol::{ProtocolError, Status};
use crate::wire::{Reader, Writer};

/// How to treat a target that already holds the key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SendMode {
    /// CAS on the version `(timestamp, size)`: never overwrite a newer or equal copy (skipped,
    /// not failed) unless the equal one fails verification (damaged: replaced).
    #[default]
    Default,
    /// Overwrite whatever is there.
    Overwrite,
    /// Copy, then remove locally once every target acknowledged.
    Move,
}

/// A server-send request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendRequest {
    /// Mode.
    pub mode: SendMode,
    /// Target groups.
    pub groups: Vec<u32>,
    /// Keys (the node sends those it holds; others get NOT_FOUND results, also when the node
    /// is not their owner in the request's group).
    pub ids: Vec<Id>,
}

impl Payload for SendRequest {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(match self.mode {
            SendMode::Default => 0,
            SendMode::Overwrite => 1,
            SendMode::Move => 2,
        });
        w.count(self.groups.len());
        for g in &self.groups {
            w.u32(*g);
        }
        write_ids(&mut w, &self.ids);
        w.finish()
    }
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "send request");
        let mode = match r.u32()? {
            0 => SendMode::Default,
            1 => SendMode::Overwrite,
            2 => SendMode::Move,
            m => {
                return Err(ProtocolError::Invalid {
                    what: "send request",
                    reason: format!("mode {m}"),
                })
            }
        };
        let n = r.count(MAX_GROUPS, 4)?;
        let groups = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
        let ids = read_ids(&mut r, MAX_IDS)?;
        r.finish()?;
        Ok(SendRequest { mode, groups, ids })
    }
}

/// The result for one key and one target group (streamed with MORE).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendResult {
    /// Key.
    pub id: Id,
    /// Target group.
    pub group: u32,
    /// OK, NEWER_EXISTS (skipped), or the failure.
    pub status: Status,
}

impl Payload for SendResult {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        super::write_id(&mut w, &self.id);
        w.u32(self.group).i32(self.status.0);
        w.finish()
    }
    fn decode(b: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(b, "send result");
        let v = SendResult {
            id: super::read_id(&mut r)?,
            group: r.u32()?,
            status: Status(r.i32()?),
        };
        r.finish()?;
        Ok(v)
    }
}
