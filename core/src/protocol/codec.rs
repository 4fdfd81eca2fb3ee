//! Framing for tokio: [`FrameCodec`] turns a byte stream into [`Frame`]s and back;
//! [`FrameWriter`] (feature `client`) sends frames without copying large payloads.
//!
//! Invariants: a frame whose header announces more than `max_payload_bytes` is refused with
//! `FrameTooLarge` before any of its payload is buffered; partial frames wait for more bytes;
//! no input makes the decoder panic. A frame's wire payload is `payload`, `tail`, then the
//! bytes of `file`; decoded frames always have an empty `tail` and no `file`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

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
    /// Last of the payload, after `tail`: bytes of an open file, which a [`FrameWriter`]
    /// reads into its buffer a piece at a time or sends with `sendfile` (see
    /// [`RegionSend`]). Always `None` when decoded.
    ///
    /// [`FrameWriter`]: super::FrameWriter
    /// [`RegionSend`]: super::RegionSend
    pub file: Option<FileRegion>,
}

/// `size_bytes` bytes of `file` from `offset_bytes`, sent as the end of a frame's payload.
/// The file must hold them for as long as the frame is queued: if it turns out shorter, the
/// frame cannot be finished and the writer fails (the connection closes).
#[derive(Clone, Debug)]
pub struct FileRegion {
    /// The open file.
    pub file: Arc<File>,
    /// Where the bytes start.
    pub offset_bytes: u64,
    /// How many bytes.
    pub size_bytes: u64,
}

impl PartialEq for FileRegion {
    fn eq(&self, o: &FileRegion) -> bool {
        Arc::ptr_eq(&self.file, &o.file)
            && (self.offset_bytes, self.size_bytes) == (o.offset_bytes, o.size_bytes)
    }
}

impl Eq for FileRegion {}

impl Frame {
    /// A frame of `header` with `payload`.
    pub fn new(header: Header, payload: impl Into<Bytes>) -> Frame {
        Frame {
            header,
            payload: payload.into(),
            tail: Bytes::new(),
            file: None,
        }
    }

    /// A frame whose payload is `payload` followed by `tail` (sent as two buffers).
    pub fn with_tail(header: Header, payload: impl Into<Bytes>, tail: Bytes) -> Frame {
        Frame {
            header,
            payload: payload.into(),
            tail,
            file: None,
        }
    }

    /// Payload bytes on the wire (`payload`, `tail` and `file`).
    pub fn payload_len(&self) -> u64 {
        (self.payload.len() + self.tail.len()) as u64
            + self.file.as_ref().map_or(0, |f| f.size_bytes)
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
            file: None,
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
        if let Some(f) = &frame.file {
            // One contiguous buffer was asked for: the file's bytes are read into it.
            let at = dst.len();
            dst.resize(at + f.size_bytes as usize, 0);
            if let Err(e) = f.file.read_exact_at(&mut dst[at..], f.offset_bytes) {
                dst.truncate(at - HEADER_SIZE - frame.payload.len() - frame.tail.len());
                return Err(e.into());
            }
        }
        Ok(())
    }
}
