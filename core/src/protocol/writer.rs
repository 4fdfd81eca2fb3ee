//! [`FrameWriter`]: frames onto an async byte stream, large payloads uncopied.
//!
//! Not a codec: decoding stays with [`FrameCodec`](super::FrameCodec), which also still encodes
//! for anyone who wants one contiguous buffer. The writer copies headers and small payloads
//! into one buffer (many small frames under pipelining cost one syscall) and hands large
//! payloads (and a frame's `tail`) to the socket as they are, in vectored writes: a 1 MiB
//! record read for a copy goes from its read buffer to the kernel without a user-space copy.
//!
//! Invariants: frames go out whole and in the order fed; what is buffered is bounded by
//! [`FLUSH_AT_BYTES`] plus one frame (a feed past it writes first); a frame above the payload
//! limit is refused before any of it is queued.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::protocol::{Frame, Header, ProtocolError, HEADER_SIZE};

/// Payload parts shorter than this are copied next to their header (a syscall's and an
/// `iovec`'s cost is more than copying a few KiB); longer ones are queued uncopied.
pub const COPY_BELOW_BYTES: usize = 16 << 10;

/// Queued bytes past which [`FrameWriter::feed`] writes before taking more.
pub const FLUSH_AT_BYTES: usize = 256 << 10;

/// Buffers per vectored write (Linux takes up to 1024; a handful is what a batch needs).
const MAX_IOVECS: usize = 64;

/// Writes [`Frame`]s to `W`; see the module docs.
#[derive(Debug)]
pub struct FrameWriter<W> {
    io: W,
    max_payload_bytes: u64,
    /// Headers and small payloads, copied together.
    small: BytesMut,
    /// Buffers to write, in order: filled parts of `small` and large payload parts.
    queue: VecDeque<Bytes>,
    queued_bytes: usize,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer refusing payloads above `max_payload_bytes`.
    pub fn new(io: W, max_payload_bytes: u64) -> FrameWriter<W> {
        FrameWriter {
            io,
            max_payload_bytes,
            small: BytesMut::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
        }
    }

    /// Queue `frame` (its header's `size` is set from its payload); writes queued frames
    /// first if they pass [`FLUSH_AT_BYTES`]. Nothing is sent for sure until [`flush`].
    ///
    /// [`flush`]: FrameWriter::flush
    pub async fn feed(&mut self, frame: Frame) -> io::Result<()> {
        let size = frame.payload_len();
        if size > self.max_payload_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                ProtocolError::FrameTooLarge {
                    size,
                    max: self.max_payload_bytes,
                },
            ));
        }
        let header = Header {
            size,
            ..frame.header
        };
        self.small.reserve(HEADER_SIZE);
        self.small.put_slice(&header.encode());
        self.queued_bytes += HEADER_SIZE;
        for part in [frame.payload, frame.tail] {
            self.queued_bytes += part.len();
            if part.len() < COPY_BELOW_BYTES {
                self.small.put_slice(&part);
            } else {
                self.seal_small();
                self.queue.push_back(part);
            }
        }
        if self.queued_bytes >= FLUSH_AT_BYTES {
            self.write_queued().await?;
        }
        Ok(())
    }

    /// Write everything queued and flush the stream.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.write_queued().await?;
        self.io.flush().await
    }

    /// Flush, then shut the stream's write side down (the peer reads EOF).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.write_queued().await?;
        self.io.shutdown().await
    }

    /// The stream.
    pub fn get_ref(&self) -> &W {
        &self.io
    }

    /// Move the filled part of `small` to the queue (keeping frame order).
    fn seal_small(&mut self) {
        if !self.small.is_empty() {
            self.queue.push_back(self.small.split().freeze());
        }
    }

    async fn write_queued(&mut self) -> io::Result<()> {
        self.seal_small();
        while !self.queue.is_empty() {
            let n = {
                let slices: Vec<IoSlice<'_>> = self
                    .queue
                    .iter()
                    .take(MAX_IOVECS)
                    .map(|b| IoSlice::new(b))
                    .collect();
                self.io.write_vectored(&slices).await?
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.consume(n);
        }
        self.queued_bytes = 0;
        Ok(())
    }

    /// Drop `n` written bytes from the front of the queue.
    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.queue.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Command, FrameCodec};
    use crate::Id;
    use tokio_util::codec::Decoder;

    fn frame(trans: u64, payload: Vec<u8>, tail: Vec<u8>) -> Frame {
        let h = Header::request(Command::Write, Id::for_key(b"", b"k"), 1, trans);
        Frame::with_tail(h, payload, tail.into())
    }

    /// A sink that takes at most `step` bytes per write, so partial vectored writes happen.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<io::Result<usize>> {
            let mut left = self.step;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(left);
                self.out.extend_from_slice(&b[..take]);
                left -= take;
                n += take;
                if left == 0 {
                    break;
                }
            }
            std::task::Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn frames_of_every_size_arrive_whole_and_in_order_through_partial_writes() {
        let sizes = [
            0usize,
            1,
            100,
            COPY_BELOW_BYTES - 1,
            COPY_BELOW_BYTES,
            300 << 10,
        ];
        let mut sent = Vec::new();
        for (i, &p) in sizes.iter().enumerate() {
            for &t in &sizes {
                let payload: Vec<u8> = (0..p).map(|j| (i + j) as u8).collect();
                let tail: Vec<u8> = (0..t).map(|j| (j * 7) as u8).collect();
                sent.push(frame(sent.len() as u64, payload, tail));
            }
        }
        for step in [1usize, 4093, 1 << 20] {
            let mut w = FrameWriter::new(
                Trickle {
                    out: Vec::new(),
                    step,
                },
                u64::MAX,
            );
            for f in &sent {
                w.feed(f.clone()).await.unwrap();
            }
            w.flush().await.unwrap();
            let mut wire = BytesMut::from(&w.get_ref().out[..]);
            let mut codec = FrameCodec::new(u64::MAX);
            for f in &sent {
                let got = codec.decode(&mut wire).unwrap().expect("a whole frame");
                assert_eq!(got.header.trans, f.header.trans);
                assert_eq!(got.header.size, f.payload_len());
                let mut whole = f.payload.to_vec();
                whole.extend_from_slice(&f.tail);
                assert_eq!(
                    got.payload, whole,
                    "frame {} at step {step}",
                    f.header.trans
                );
            }
            assert!(wire.is_empty(), "nothing after the last frame");
        }
    }

    #[tokio::test]
    async fn a_frame_above_the_limit_is_refused_and_nothing_of_it_is_sent() {
        let mut w = FrameWriter::new(
            Trickle {
                out: Vec::new(),
                step: 1 << 20,
            },
            100,
        );
        w.feed(frame(1, vec![1; 10], vec![])).await.unwrap();
        let e = w
            .feed(frame(2, vec![2; 60], vec![3; 60]))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("exceeds the limit of 100"), "{e}");
        w.flush().await.unwrap();
        assert_eq!(w.get_ref().out.len(), HEADER_SIZE + 10);
    }
}
