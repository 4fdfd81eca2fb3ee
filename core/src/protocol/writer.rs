//! [`FrameWriter`]: frames onto an async byte stream, large payloads uncopied.
//!
//! Not a codec: decoding stays with [`FrameCodec`](super::FrameCodec), which also still encodes
//! for anyone who wants one contiguous buffer. The writer copies headers and small payloads
//! into one buffer (many small frames under pipelining cost one syscall) and hands large
//! payloads (and a frame's `tail`) to the socket as they are, in vectored writes: a 1 MiB
//! record read for a copy goes from its read buffer to the kernel without a user-space copy.
//! A frame's [`FileRegion`] (a record copied from a blob file) goes with `sendfile`
//! ([`RegionSend::Sendfile`], the default, on streams that implement [`SendFile`]), or is read
//! and written [`STAGE_BYTES`] at a time through one reused buffer ([`RegionSend::Copy`], and
//! on streams without `sendfile`).
//!
//! Why both: `sendfile` copies nothing on the sending side but hands the socket 4 KiB page
//! references, 16 pages per `sendmsg`; the copy pays a `pread` and a socket copy per byte but
//! sends 1 MiB per call from a buffer that stays in the CPU cache. On the loopback benchmark
//! machine neither wins reliably (node/BENCHMARKS.md, 2026-12-07, "sendfile or a buffer");
//! between machines, where the receiving side's work is not on the same CPUs, `sendfile` is
//! the usual choice. Node config `sendfile` picks.
//!
//! The region's bytes are read on the writer's (async) thread: whoever hands a region over has
//! it in the page cache (the node reads it in on a blocking thread first), so the read copies
//! memory, as `sendfile` would walk the same pages.
//!
//! Invariants: frames go out whole and in the order fed; what is buffered is bounded by
//! [`FLUSH_AT_BYTES`] plus one frame (a feed past it writes first) plus one stage buffer while
//! a region is being copied; a frame above the payload limit is refused before any of it is
//! queued. A file region that ends early fails the writer mid-frame: the stream is then
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

/// Bytes of a file region read, then written, at a time by [`RegionSend::Copy`]: one buffer,
/// reused while it stays in the CPU cache (a 1 MiB record is one read and one write).
pub const STAGE_BYTES: usize = 1 << 20;

/// Stage buffers kept for reuse when no writer holds them, process-wide (more in use at once
/// are allocated and freed): a writer takes one only while it copies a region.
const IDLE_STAGES: usize = 4;

static IDLE: parking_lot::Mutex<Vec<Box<[u8]>>> = parking_lot::Mutex::new(Vec::new());

/// How a [`FrameWriter`] puts a frame's [`FileRegion`] on its stream; see the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RegionSend {
    /// `sendfile` where the stream can ([`SendFile::can_send_file`]); elsewhere as `Copy`.
    #[default]
    Sendfile,
    /// `pread` into a [`STAGE_BYTES`] buffer, then `write`.
    Copy,
}

/// A region's bytes read into a stage buffer: file bytes `from..from + len`.
#[derive(Debug)]
struct Stage {
    buf: Box<[u8]>,
    from: u64,
    len: usize,
}

impl Stage {
    fn take() -> Stage {
        let buf = IDLE
            .lock()
            .pop()
            .unwrap_or_else(|| vec![0u8; STAGE_BYTES].into_boxed_slice());
        Stage {
            buf,
            from: 0,
            len: 0,
        }
    }

    fn holds(&self, at: u64) -> bool {
        self.from <= at && at < self.from + self.len as u64
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let mut idle = IDLE.lock();
        if idle.len() < IDLE_STAGES {
            idle.push(std::mem::take(&mut self.buf));
        }
    }
}

/// A stream that can take bytes straight from a file (`sendfile`): what a [`FrameWriter`]
/// with [`RegionSend::Sendfile`] uses for frames with a [`FileRegion`]. The provided methods
/// say "cannot".
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
    region_send: RegionSend,
    /// Held while the front part is a region being copied ([`RegionSend::Copy`]).
    stage: Option<Stage>,
}

impl<W: AsyncWrite + SendFile + Unpin> FrameWriter<W> {
    /// A writer refusing payloads above `max_payload_bytes`, sending file regions as
    /// [`RegionSend::default`] does.
    pub fn new(io: W, max_payload_bytes: u64) -> FrameWriter<W> {
        FrameWriter {
            io,
            max_payload_bytes,
            small: BytesMut::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            region_send: RegionSend::default(),
            stage: None,
        }
    }

    /// Put file regions on the stream as `how` says.
    pub fn with_region_send(mut self, how: RegionSend) -> FrameWriter<W> {
        self.region_send = how;
        self
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
                let (file, at, left) = (file.clone(), *offset, *left);
                let n = if self.region_send == RegionSend::Sendfile && self.io.can_send_file() {
                    // Bounded per call so one region cannot make `usize` overflow on 32 bits.
                    let len = left.min(1 << 30) as usize;
                    let io = &mut self.io;
                    std::future::poll_fn(|cx| Pin::new(&mut *io).poll_send_file(cx, &file, at, len))
                        .await?
                } else {
                    self.write_staged(&file, at, left).await?
                };
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
                    // Back to the idle buffers: a writer between regions holds none.
                    self.stage = None;
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

    /// Write from the stage what it holds of `file` from `at` (reading up to [`STAGE_BYTES`]
    /// of the `left` bytes first when it holds nothing there); `Ok(0)`: the file ended. A
    /// partial write leaves the rest staged for the next call.
    async fn write_staged(&mut self, file: &File, at: u64, left: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let stage = self.stage.get_or_insert_with(Stage::take);
        if !stage.holds(at) {
            let want = left.min(STAGE_BYTES as u64) as usize;
            let mut got = 0;
            while got < want {
                match file.read_at(&mut stage.buf[got..want], at + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            stage.from = at;
            stage.len = got;
            if got == 0 {
                return Ok(0);
            }
        }
        let start = (at - stage.from) as usize;
        match self.io.write(&stage.buf[start..stage.len]).await? {
            0 => Err(io::ErrorKind::WriteZero.into()),
            n => Ok(n),
        }
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
    async fn trickled(sent: &[Frame], step: usize, how: RegionSend) -> BytesMut {
        let mut w = FrameWriter::new(
            Trickle {
                out: Vec::new(),
                step,
            },
            u64::MAX,
        )
        .with_region_send(how);
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
        for how in [RegionSend::Copy, RegionSend::Sendfile] {
            for step in [1usize, 4093, 1 << 20] {
                let mut wire = trickled(&sent, step, how).await;
                let mut codec = FrameCodec::new(u64::MAX);
                for f in &sent {
                    let got = codec.decode(&mut wire).unwrap().expect("a whole frame");
                    assert_eq!(got.header.trans, f.header.trans);
                    assert_eq!(got.header.size, f.payload_len());
                    assert_eq!(
                        got.payload,
                        wire_payload(f, &file_bytes),
                        "step {step}, {how:?}"
                    );
                }
                assert!(wire.is_empty(), "nothing after the last frame");
            }
        }
        // The codec's contiguous encoding reads the file: the same bytes.
        let mut codec = FrameCodec::new(u64::MAX);
        let mut dst = BytesMut::new();
        codec.encode(sent[6].clone(), &mut dst).unwrap();
        let got = codec.decode(&mut dst).unwrap().unwrap();
        assert_eq!(got.payload, wire_payload(&sent[6], &file_bytes));
    }

    #[tokio::test]
    async fn file_regions_go_through_a_real_socket_copied_and_with_sendfile() {
        for how in [RegionSend::Copy, RegionSend::Sendfile] {
            regions_through_a_real_socket(how).await;
        }
    }

    async fn regions_through_a_real_socket(how: RegionSend) {
        let file_bytes: Vec<u8> = (0..(3usize << 20)).map(|i| (i * 31) as u8).collect();
        let file = file_of(&file_bytes);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let (_read_half, write_half) = client.into_split();
        // Regions below, at and above one stage buffer (several reads for the last).
        let sizes = [1u64 << 20, 7, STAGE_BYTES as u64, (5 << 20) / 2, 100_000];
        let sent: Vec<Frame> = (0..8u64)
            .map(|i| {
                let off = i * (64 << 10);
                let size = sizes[i as usize % sizes.len()];
                with_file(frame(i, vec![i as u8; 80], vec![]), &file, off, size)
            })
            .collect();
        let expect: Vec<Vec<u8>> = sent.iter().map(|f| wire_payload(f, &file_bytes)).collect();
        let writer = tokio::spawn(async move {
            let mut w = FrameWriter::new(write_half, u64::MAX).with_region_send(how);
            for f in sent {
                w.feed(f).await.unwrap();
            }
            w.flush().await.unwrap();
            assert!(w.stage.is_none(), "no stage buffer held between regions");
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
            assert_eq!(&got.payload[..], &want[..], "frame {i}, {how:?}");
        }
        assert!(wire.is_empty());
    }

    #[tokio::test]
    async fn a_file_region_past_the_end_of_its_file_fails_the_writer() {
        let file = file_of(&[1u8; 1000]);
        for how in [RegionSend::Copy, RegionSend::Sendfile] {
            let mut w = FrameWriter::new(
                Trickle {
                    out: Vec::new(),
                    step: 1 << 20,
                },
                u64::MAX,
            )
            .with_region_send(how);
            w.feed(with_file(frame(1, vec![2; 80], vec![]), &file, 500, 600))
                .await
                .unwrap();
            let e = w.flush().await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{how:?}");
            // What the file had was sent, nothing more.
            assert_eq!(w.get_ref().out.len(), HEADER_SIZE + 80 + 500, "{how:?}");
        }
    }

    #[tokio::test]
    async fn a_stream_without_sendfile_gets_file_regions_copied() {
        let file_bytes: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let file = file_of(&file_bytes);
        let sent = [
            frame(1, vec![1; 10], vec![]),
            with_file(frame(2, vec![2; 10], vec![]), &file, 100, 2000),
        ];
        let mut w =
            FrameWriter::new(Plain(Vec::new()), u64::MAX).with_region_send(RegionSend::Sendfile);
        for f in &sent {
            w.feed(f.clone()).await.unwrap();
        }
        w.flush().await.unwrap();
        let mut wire = BytesMut::from(&w.get_ref().0[..]);
        let mut codec = FrameCodec::new(u64::MAX);
        for f in &sent {
            let got = codec.decode(&mut wire).unwrap().expect("a whole frame");
            assert_eq!(got.payload, wire_payload(f, &file_bytes));
        }
        assert!(wire.is_empty());
    }

    #[test]
    fn idle_stage_buffers_are_bounded() {
        let held: Vec<Stage> = (0..IDLE_STAGES + 3).map(|_| Stage::take()).collect();
        assert!(held.iter().all(|s| s.buf.len() == STAGE_BYTES));
        drop(held);
        assert!(IDLE.lock().len() <= IDLE_STAGES);
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
            let mut wire = trickled(&sent, step, RegionSend::Copy).await;
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
