//! The fixed frame header.

use crate::id::{Id, ID_SIZE};
use crate::protocol::{Command, ProtocolError, Status};
use crate::wire::{Reader, Writer};

/// Header bytes on the wire.
pub const HEADER_SIZE: usize = 112;
const _: () = assert!(HEADER_SIZE == ID_SIZE + 4 * 4 + 8 * 4);

/// Header flag bits.
pub mod flags {
    /// This frame is a reply.
    pub const REPLY: u64 = 1;
    /// More reply frames follow for this `trans`.
    pub const MORE: u64 = 1 << 1;
    /// Elliptics' "send me a final acknowledgement". Accepted and ignored: every request here
    /// gets its final acknowledgement carrying the status, asked for or not, so a client
    /// can always tell a finished request from a lost one.
    pub const NEED_ACK: u64 = 1 << 2;
    /// Do not forward: the receiving node handles the key itself or fails.
    pub const DIRECT: u64 = 1 << 3;
    /// The request is sampled for call-tree tracing.
    pub const TRACE: u64 = 1 << 4;
    /// Skip the per-key lock (server-internal reads).
    pub const NOLOCK: u64 = 1 << 5;
    /// The request was forwarded by a node (not from a client).
    pub const FORWARDED: u64 = 1 << 6;
    /// Every flag this version knows.
    pub const KNOWN: u64 = REPLY | MORE | NEED_ACK | DIRECT | TRACE | NOLOCK | FORWARDED;
}

/// A frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// Key id (or the node's/route id for commands without a key).
    pub id: Id,
    /// Replica group the request is for.
    pub group: u32,
    /// Command.
    pub cmd: Command,
    /// Status (requests: 0; replies: the result).
    pub status: Status,
    /// Backend id on the receiving node (when addressed to one).
    pub backend: u32,
    /// Trace id linking call trees across nodes.
    pub trace_id: u64,
    /// `flags::*` bits.
    pub flags: u64,
    /// Transaction id, echoed by replies.
    pub trans: u64,
    /// Payload bytes that follow.
    pub size: u64,
}

impl Header {
    /// A request header.
    pub fn request(cmd: Command, id: Id, group: u32, trans: u64) -> Header {
        Header {
            id,
            group,
            cmd,
            trans,
            ..Header::default()
        }
    }

    /// The reply header to this request, with `status`.
    pub fn reply(&self, status: Status) -> Header {
        Header {
            status,
            flags: (self.flags & (flags::TRACE | flags::DIRECT)) | flags::REPLY,
            size: 0,
            ..*self
        }
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: u64) -> bool {
        self.flags & flag != 0
    }

    /// Encode into 112 bytes.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut w = Writer::new();
        w.bytes(&self.id.0)
            .u32(self.group)
            .u32(self.cmd.code())
            .i32(self.status.0)
            .u32(self.backend)
            .u64(self.trace_id)
            .u64(self.flags)
            .u64(self.trans)
            .u64(self.size);
        let mut out = [0u8; HEADER_SIZE];
        out.copy_from_slice(&w.buf);
        out
    }

    /// Decode from at least 112 bytes.
    pub fn decode(b: &[u8]) -> Result<Header, ProtocolError> {
        let mut r = Reader::new(b, "header");
        Ok(Header {
            id: Id(r.array()?),
            group: r.u32()?,
            cmd: Command::from_code(r.u32()?),
            status: Status(r.i32()?),
            backend: r.u32()?,
            trace_id: r.u64()?,
            flags: r.u64()?,
            trans: r.u64()?,
            size: r.u64()?,
        })
    }
}
