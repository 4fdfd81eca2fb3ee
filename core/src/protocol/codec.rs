//! Framing for tokio: [`FrameCodec`] turns a byte stream into [`Frame`]s and back;
//! [`FrameWriter`] (feature `client`) sends frames without copying large payloads.
//!
//! Invariants: a frame whose header announces more than `max_payload_bytes` is refused with
//! `FrameTooLarge` before any of its payload is buffered; partial frames wait for more bytes;
//! no input makes the decoder panic. A frame's wire payload is `payload` then `tail`; decoded
//! frames always have an empty `tail`.

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
    /// The payload (all of it in a decoded frame).
    pub payload: Bytes,
    /// More payload, sent right after `payload`: an IO request's data behind its attributes,
    /// so the data is never copied into one buffer with them. Always empty when decoded.
    pub tail: Bytes,
}

impl Frame {
    /// A frame of `header` with `payload`.
    pub fn new(header: Header, payload: impl Into<Bytes>) -> Frame {
        Frame {
            header,
            payload: payload.into(),
            tail: Bytes::new(),
        }
    }

    /// A frame whose payload is `payload` followed by `tail` (sent as two buffers).
    pub fn with_tail(header: Header, payload: impl Into<Bytes>, tail: Bytes) -> Frame {
        Frame {
            header,
            payload: payload.into(),
            tail,
        }
    }

    /// Payload bytes on the wire (`payload` and `tail`).
    pub fn payload_len(&self) -> u64 {
        (self.payload.len() + self.tail.len()) as u64
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
        Ok(Some(Frame {
            header,
            payload,
            tail: Bytes::new(),
        }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        let size = frame.payload_len();
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
        dst.reserve(HEADER_SIZE + size as usize);
        dst.put_slice(&header.encode());
        dst.put_slice(&frame.payload);
        dst.put_slice(&frame.tail);
        Ok(())
    }
}
