//! The wire protocol: a fixed 112-byte header, then `size` bytes of payload.
//!
//! Not transport: the codec frames bytes, the node and the client own sockets. Layout (all
//! little-endian): `id[64] group:u32 cmd:u32 status:i32 backend:u32 trace_id:u64 flags:u64
//! trans:u64 size:u64`. Requests are pipelined and multiplexed by `trans`; a reply echoes it
//! with `REPLY` set, multi-part replies carry `MORE` on every part but the last, and the last
//! part carries the final status. Invariants: decoding never panics and never allocates from an
//! untrusted length without a bound; an unknown command decodes (as `Command::Unknown`) so the
//! server can answer it with an error status; errors map to wire statuses only in `status.rs`.

pub mod cmd;
pub mod codec;
pub mod command;
pub mod header;
pub mod io_attr;
pub mod status;
#[cfg(feature = "client")]
pub mod writer;

pub use codec::{FileRegion, Frame, FrameCodec, DEFAULT_MAX_FRAME_BYTES};
pub use command::Command;
pub use header::{flags, Header, HEADER_SIZE};
pub use io_attr::{io_flags, IoAttr, IO_ATTR_SIZE};
pub use status::Status;
#[cfg(feature = "client")]
pub use writer::{FrameWriter, RegionSend, SendFile};

/// Why bytes did not decode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Fewer bytes than the structure needs.
    #[error("{what}: truncated (needs {needed} bytes, {available} left)")]
    Truncated {
        /// The structure.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// A count above its bound or larger than the remaining bytes.
    #[error("{what}: count {count} exceeds the limit {max} or the payload")]
    BadCount {
        /// The structure.
        what: &'static str,
        /// Count read.
        count: u64,
        /// Its bound.
        max: u64,
    },
    /// A field with an impossible value.
    #[error("{what}: {reason}")]
    Invalid {
        /// The structure.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A frame announces more payload than the receiver accepts.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced payload bytes.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The socket failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
