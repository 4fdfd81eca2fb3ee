//! Framing for tokio: [`FrameCodec`] turns a byte stream into [`Frame`]s and back.
//!
//! Invariants: a frame whose header announces more than `max_payload_bytes` is refused with
//! `FrameTooLarge` before any of its payload is buffered; partial frames wait for more bytes;
//! no input makes the decoder panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::protocol::{Header, ProtocolError, HEADER_SIZE};

/// Default payload limit: 64 MiB (one chunked upload part).
pub const DEFAULT_MAX_FRAME_BYTES: u64 = 64 << 20;

/// A header and its payload.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Frame {
    /// The header (`size` is set from the payload when encoding).
    pub header: Header,
    /// The payload.
    pub payload: Bytes,
}

impl Frame {
    /// A frame of `header` with `payload`.
    pub fn new(header: Header, payload: impl Into<Bytes>) -> Frame {
        Frame {
            header,
            payload: payload.into(),
        }
    }
}

/// Length-prefixed frames with a payload bound.
#[derive(Clone, Debug)]
pub struct FrameCodec {
    max_payload_bytes: u64,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl FrameCodec {
    /// A codec refusing payloads above `max_payload_bytes`.
    pub fn new(max_payload_bytes: u64) -> FrameCodec {
        FrameCodec { max_payload_bytes }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        if src.len() < HEADER_SIZE {
            src.reserve(HEADER_SIZE - src.len());
            return Ok(None);
        }
        let header = Header::decode(&src[..HEADER_SIZE])?;
        if header.size > self.max_payload_bytes {
            return Err(ProtocolError::FrameTooLarge {
                size: header.size,
                max: self.max_payload_bytes,
            });
        }
        // Bounded by max_payload_bytes just above.
        let total = HEADER_SIZE + header.size as usize;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(HEADER_SIZE);
        let payload = src.split_to(header.size as usize).freeze();
        Ok(Some(Frame { header, payload }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        let size = frame.payload.len() as u64;
        if size > self.max_payload_bytes {
            return Err(ProtocolError::FrameTooLarge {
                size,
                max: self.max_payload_bytes,
            });
        }
        let header = Header {
            size,
            ..frame.header
        };
        dst.reserve(HEADER_SIZE + frame.payload.len());
        dst.put_slice(&header.encode());
        dst.put_slice(&frame.payload);
        Ok(())
    }
}
