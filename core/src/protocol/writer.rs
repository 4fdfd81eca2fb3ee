//! [`FrameWriter`]: frames onto an async byte stream, large payloads uncopied.
//!
//! Not a codec: decoding stays with [`FrameCodec`](super::FrameCodec), which also still encodes
//! for anyone who wants one contiguous buffer. The writer copies headers and small payloads
//! into one buffer (many small frames under pipelining cost one syscall) and hands large
//! payloads (and a frame's `tail`) to the socket as they are, in vectored writes: a 1 MiB
//! record read for a copy goes from its read buffer to the kernel without a user-space copy.
//! A frame's [`FileRegion`] goes with `sendfile` (streams that implement [`SendFile`]): a
//! record copied from a blob file is not read into user space at all.
//!
//! Invariants: frames go out whole and in the order fed; what is buffered is bounded by
//! [`FLUSH_AT_BYTES`] plus one frame (a feed past it writes first); a frame above the payload
//! limit, or with a file region for a stream that cannot send files, is refused before any of
//! it is queued. A file region that ends early fails the writer mid-frame: the stream is then
//! unusable and its owner closes it.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

use crate::protocol::{FileRegion, Frame, Header, ProtocolError, HEADER_SIZE};

/// Payload parts shorter than this are copied next to their header (a syscall's and an
/// `iovec`'s cost is more than copying a few KiB); longer ones are queued uncopied.
pub const COPY_BELOW_BYTES: usize = 16 << 10;

/// Queued bytes past which [`FrameWriter::feed`] writes before taking more.
pub const FLUSH_AT_BYTES: usize = 256 << 10;

/// Buffers per vectored write (Linux takes up to 1024; a handful is what a batch needs).
const MAX_IOVECS: usize = 64;

/// A stream that can take bytes straight from a file (`sendfile`): what a [`FrameWriter`]
/// needs for frames with a [`FileRegion`]. The provided methods say "cannot".
pub trait SendFile {
    /// Whether [`SendFile::poll_send_file`] works on this stream.
    fn can_send_file(&self) -> bool {
        false
    }

    /// Send up to `len` bytes of `file` from `offset`; `Ok(0)` for `len > 0` means the file
    /// ended there.
    fn poll_send_file(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let _ = (cx, file, offset, len);
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }
}

/// `sendfile` on the non-blocking socket, waiting for writability through tokio.
impl SendFile for OwnedWriteHalf {
    fn can_send_file(&self) -> bool {
        true
    }

    fn poll_send_file(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let stream: &TcpStream = (*self).as_ref();
        loop {
            ready!(stream.poll_write_ready(cx))?;
            let sent = stream.try_io(Interest::WRITABLE, || loop {
                let mut at = offset;
                match rustix::fs::sendfile(stream, file, Some(&mut at), len) {
                    Err(rustix::io::Errno::INTR) => continue,
                    r => return r.map_err(io::Error::from),
                }
            });
            match sent {
                // The readiness was stale; try_io cleared it, so the next poll waits.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}

/// One queued piece of output.
#[derive(Debug)]
enum Part {
    Bytes(Bytes),
    File {
        file: Arc<File>,
        offset: u64,
        left: u64,
    },
}

/// Writes [`Frame`]s to `W`; see the module docs.
#[derive(Debug)]
pub struct FrameWriter<W> {
    io: W,
    max_payload_bytes: u64,
    /// Headers and small payloads, copied together.
    small: BytesMut,
    /// What to write, in order: filled parts of `small`, large payload parts, file regions.
    queue: VecDeque<Part>,
    queued_bytes: u64,
}

impl<W: AsyncWrite + SendFile + Unpin> FrameWriter<W> {
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
        if frame.file.is_some() && !self.io.can_send_file() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a frame with a file region on a stream that cannot send files",
            ));
        }
        let header = Header {
            size,
            ..frame.header
        };
        self.small.reserve(HEADER_SIZE);
        self.small.put_slice(&header.encode());
        self.queued_bytes += HEADER_SIZE as u64;
        for part in [frame.payload, frame.tail] {
            self.queued_bytes += part.len() as u64;
            if part.len() < COPY_BELOW_BYTES {
                self.small.put_slice(&part);
            } else {
                self.seal_small();
                self.queue.push_back(Part::Bytes(part));
            }
        }
        if let Some(FileRegion {
            file,
            offset_bytes,
            size_bytes,
        }) = frame.file
        {
            self.queued_bytes += size_bytes;
            if size_bytes > 0 {
                self.seal_small();
                self.queue.push_back(Part::File {
                    file,
                    offset: offset_bytes,
                    left: size_bytes,
                });
            }
        }
        if self.queued_bytes >= FLUSH_AT_BYTES as u64 {
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
            self.queue
                .push_back(Part::Bytes(self.small.split().freeze()));
        }
    }

    async fn write_queued(&mut self) -> io::Result<()> {
        self.seal_small();
        while let Some(front) = self.queue.front_mut() {
            if let Part::File { file, offset, left } = front {
                let (file, at) = (file.clone(), *offset);
                // Bounded per call so one region cannot make `usize` overflow on 32 bits.
                let len = (*left).min(1 << 30) as usize;
                let io = &mut self.io;
                let n = std::future::poll_fn(|cx| {
                    Pin::new(&mut *io).poll_send_file(cx, &file, at, len)
                })
                .await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file region ended before the bytes its frame announced",
                    ));
                }
                let Some(Part::File { offset, left, .. }) = self.queue.front_mut() else {
                    unreachable!("the front part is the file region just sent from")
                };
                *offset += n as u64;
                *left -= n as u64;
                if *left == 0 {
                    self.queue.pop_front();
                }
                continue;
            }
            let n = {
                let slices: Vec<IoSlice<'_>> = self
                    .queue
                    .iter()
                    .take(MAX_IOVECS)
                    .map_while(|p| match p {
                        Part::Bytes(b) => Some(IoSlice::new(b)),
                        Part::File { .. } => None,
                    })
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

    /// Drop `n` written bytes from the front of the queue (all of them in byte parts).
    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(Part::Bytes(front)) = self.queue.front_mut() else {
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
    use tokio_util::codec::{Decoder, Encoder};

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

    /// The bytes `sent` puts on the wire through a writer over a [`Trickle`] of `step`.
    async fn trickled(sent: &[Frame], step: usize) -> BytesMut {
        let mut w = FrameWriter::new(
            Trickle {
                out: Vec::new(),
                step,
            },
            u64::MAX,
        );
        for f in sent {
            w.feed(f.clone()).await.unwrap();
        }
        w.flush().await.unwrap();
        BytesMut::from(&w.get_ref().out[..])
    }

    /// Trickle sends files too, `step` bytes at a time, read with `pread`.
    impl SendFile for Trickle {
        fn can_send_file(&self) -> bool {
            true
        }
        fn poll_send_file(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            file: &File,
            offset: u64,
            len: usize,
        ) -> Poll<io::Result<usize>> {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; len.min(self.step)];
            let n = file.read_at(&mut buf, offset)?;
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
    }

    /// A stream without `sendfile`.
    struct Plain(Vec<u8>);

    impl SendFile for Plain {}

    impl AsyncWrite for Plain {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A temp file holding `bytes`.
    fn file_of(bytes: &[u8]) -> Arc<File> {
        use std::io::Write;
        let mut f = tempfile_in_target();
        f.write_all(bytes).unwrap();
        Arc::new(f)
    }

    fn tempfile_in_target() -> File {
        let dir = std::env::temp_dir();
        let path = dir.join(format!(
            "ellipsis-writer-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        // Unlinked at once: the open handle keeps it, nothing is left behind.
        std::fs::remove_file(&path).unwrap();
        f
    }

    /// `frame` with `size` bytes of `file` from `offset` after its payload.
    fn with_file(mut f: Frame, file: &Arc<File>, offset: u64, size: u64) -> Frame {
        f.file = Some(FileRegion {
            file: file.clone(),
            offset_bytes: offset,
            size_bytes: size,
        });
        f
    }

    /// The wire payload `f` stands for.
    fn wire_payload(f: &Frame, file_bytes: &[u8]) -> Vec<u8> {
        let mut whole = f.payload.to_vec();
        whole.extend_from_slice(&f.tail);
        if let Some(r) = &f.file {
            let (a, b) = (
                r.offset_bytes as usize,
                (r.offset_bytes + r.size_bytes) as usize,
            );
            whole.extend_from_slice(&file_bytes[a..b]);
        }
        whole
    }

    #[tokio::test]
    async fn frames_with_file_regions_arrive_whole_and_in_order_through_partial_sends() {
        let file_bytes: Vec<u8> = (0..(700usize << 10)).map(|i| (i * 13 + 5) as u8).collect();
        let file = file_of(&file_bytes);
        let mut sent = Vec::new();
        for (i, &(p, t, off, size)) in [
            (80usize, 0usize, 0u64, 0u64),
            (80, 0, 0, 1),
            (80, 0, 7, COPY_BELOW_BYTES as u64),
            (80, 20 << 10, 100, 300 << 10),
            (0, 0, 0, 700 << 10),
            (5, 3, 699 << 10, 1 << 10),
        ]
        .iter()
        .enumerate()
        {
            let payload: Vec<u8> = (0..p).map(|j| (i + j) as u8).collect();
            let tail: Vec<u8> = (0..t).map(|j| (j * 3) as u8).collect();
            sent.push(with_file(frame(i as u64, payload, tail), &file, off, size));
            // A plain frame between file frames keeps its place.
            sent.push(frame(100 + i as u64, vec![9; 10], vec![]));
        }
        for step in [1usize, 4093, 1 << 20] {
            let mut wire = trickled(&sent, step).await;
            let mut codec = FrameCodec::new(u64::MAX);
            for f in &sent {
                let got = codec.decode(&mut wire).unwrap().expect("a whole frame");
                assert_eq!(got.header.trans, f.header.trans);
                assert_eq!(got.header.size, f.payload_len());
                assert_eq!(got.payload, wire_payload(f, &file_bytes), "step {step}");
            }
            assert!(wire.is_empty(), "nothing after the last frame");
        }
        // The codec's contiguous encoding reads the file: the same bytes.
        let mut codec = FrameCodec::new(u64::MAX);
        let mut dst = BytesMut::new();
        codec.encode(sent[6].clone(), &mut dst).unwrap();
        let got = codec.decode(&mut dst).unwrap().unwrap();
        assert_eq!(got.payload, wire_payload(&sent[6], &file_bytes));
    }

    #[tokio::test]
    async fn file_regions_go_through_a_real_socket_with_sendfile() {
        let file_bytes: Vec<u8> = (0..(3usize << 20)).map(|i| (i * 31) as u8).collect();
        let file = file_of(&file_bytes);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let (_read_half, write_half) = client.into_split();
        let sent: Vec<Frame> = (0..8u64)
            .map(|i| {
                let off = i * (256 << 10);
                with_file(frame(i, vec![i as u8; 80], vec![]), &file, off, 1 << 20)
            })
            .collect();
        let expect: Vec<Vec<u8>> = sent.iter().map(|f| wire_payload(f, &file_bytes)).collect();
        let writer = tokio::spawn(async move {
            let mut w = FrameWriter::new(write_half, u64::MAX);
            for f in sent {
                w.feed(f).await.unwrap();
            }
            w.shutdown().await.unwrap();
        });
        // 8 MiB is more than the socket buffers hold: sends come back partial and the
        // writer waits for writability in between.
        let mut wire = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut server, &mut wire)
            .await
            .unwrap();
        writer.await.unwrap();
        let mut wire = BytesMut::from(&wire[..]);
        let mut codec = FrameCodec::new(u64::MAX);
        for (i, want) in expect.iter().enumerate() {
            let got = codec.decode(&mut wire).unwrap().expect("a whole frame");
            assert_eq!(got.header.trans, i as u64);
            assert_eq!(&got.payload[..], &want[..], "frame {i}");
        }
        assert!(wire.is_empty());
    }

    #[tokio::test]
    async fn a_file_region_past_the_end_of_its_file_fails_the_writer() {
        let file = file_of(&[1u8; 1000]);
        let mut w = FrameWriter::new(
            Trickle {
                out: Vec::new(),
                step: 1 << 20,
            },
            u64::MAX,
        );
        w.feed(with_file(frame(1, vec![2; 80], vec![]), &file, 500, 600))
            .await
            .unwrap();
        let e = w.flush().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn a_stream_that_cannot_send_files_refuses_file_frames_and_sends_nothing_of_them() {
        let file = file_of(&[1u8; 100]);
        let mut w = FrameWriter::new(Plain(Vec::new()), u64::MAX);
        w.feed(frame(1, vec![1; 10], vec![])).await.unwrap();
        let e = w
            .feed(with_file(frame(2, vec![2; 10], vec![]), &file, 0, 100))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        w.flush().await.unwrap();
        assert_eq!(w.get_ref().0.len(), HEADER_SIZE + 10);
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
            let mut wire = trickled(&sent, step).await;
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
