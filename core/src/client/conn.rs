//! One multiplexed protocol connection: many requests in flight, matched to replies by `trans`.
//!
//! Used by the client library and by nodes talking to peers (forwarding, route exchange).
//! Not routing and not retries. Invariants: at most `MAX_IN_FLIGHT` requests wait for replies
//! and at most `SEND_QUEUE` frames wait to be written (both bounded); when the connection
//! drops, every waiting request fails at once with `Closed` instead of waiting for its timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;

use crate::protocol::cmd::io::IoPayload;
use crate::protocol::{
    flags, FileRegion, Frame, FrameCodec, FrameWriter, Header, IoAttr, RegionSend, Status,
};

/// Frames queued for the writer task.
pub const SEND_QUEUE: usize = 1024;
/// Requests waiting for replies on one connection.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Reply frames buffered per streaming request before the reader waits for the consumer.
const REPLY_QUEUE: usize = 64;

/// Why a request on a connection failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnError {
    /// Could not connect.
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// Peer.
        addr: SocketAddr,
        /// OS error text.
        reason: String,
    },
    /// The connection is gone.
    #[error("connection to {0} closed")]
    Closed(SocketAddr),
    /// No reply in time.
    #[error("request to {addr} timed out after {timeout_ms} ms")]
    TimedOut {
        /// Peer.
        addr: SocketAddr,
        /// The timeout.
        timeout_ms: u64,
    },
    /// Too many requests in flight or queued.
    #[error("connection to {0} is overloaded")]
    Busy(SocketAddr),
    /// The request is larger than a frame may be: refused before anything of it was sent
    /// (queueing it would fail the connection's writer, and every request on it).
    #[error(
        "request to {addr} of {size_bytes} payload bytes is over the {max_bytes}-byte frame limit"
    )]
    TooLarge {
        /// Peer.
        addr: SocketAddr,
        /// The request's payload size.
        size_bytes: u64,
        /// The frame limit.
        max_bytes: u64,
    },
    /// The peer answered with an error status.
    #[error("{addr} answered {status}")]
    Status {
        /// Peer.
        addr: SocketAddr,
        /// Its status.
        status: Status,
    },
}

impl ConnError {
    /// The wire status this failure corresponds to.
    pub fn status(&self) -> Status {
        match self {
            ConnError::Connect { .. } | ConnError::Closed(_) => Status::UNREACHABLE,
            ConnError::TimedOut { .. } => Status::TIMED_OUT,
            ConnError::Busy(_) => Status::AGAIN,
            ConnError::TooLarge { .. } => Status::TOO_BIG,
            ConnError::Status { status, .. } => *status,
        }
    }
}

/// Who waits for a request's replies.
#[derive(Debug)]
enum Waiter {
    /// [`Conn::call`]: only the final reply is wanted, so intermediate (MORE) frames are
    /// dropped by the reader and the final one goes through a oneshot — a per-request
    /// channel costs an allocation of a handful of bytes instead of a frame queue's block.
    Final(oneshot::Sender<Frame>),
    /// [`Conn::request`]: every frame, in order, through a bounded queue.
    Stream(mpsc::Sender<Frame>),
}

type Pending = Arc<Mutex<HashMap<u64, Waiter>>>;

/// Removes a request's entry from the connection's table when its caller stops waiting
/// (finished, timed out or cancelled): a request the peer never answers must not hold one of
/// the `MAX_IN_FLIGHT` slots for the connection's lifetime.
#[derive(Debug)]
struct PendingEntry {
    trans: u64,
    pending: Pending,
}

impl Drop for PendingEntry {
    fn drop(&mut self) {
        self.pending.lock().remove(&self.trans);
    }
}

/// What a request carries after its header: one buffer, or an IO request's attributes and
/// its data as two, sent back to back without being copied into one; the data may also be
/// a region of a file, which the connection's writer sends as its [`RegionSend`] says.
#[derive(Clone, Debug, Default)]
pub struct Body {
    /// The first part.
    pub head: Bytes,
    /// The part sent right after `head`.
    pub tail: Bytes,
    /// Bytes of a file sent after `tail`.
    pub file: Option<FileRegion>,
}

impl Body {
    /// `head` then `tail`.
    pub fn split(head: impl Into<Bytes>, tail: Bytes) -> Body {
        Body {
            head: head.into(),
            tail,
            file: None,
        }
    }

    /// An IO request (WRITE): `attr` (its `size` set to the data's) then `data`.
    pub fn io(attr: IoAttr, data: Bytes) -> Body {
        let attr = IoAttr {
            size: data.len() as u64,
            ..attr
        };
        let (head, tail) = IoPayload { attr, data }.into_parts();
        Body::split(head, tail)
    }

    /// An IO request whose data is `region` of a file: `attr` (its `size` set to the
    /// region's), then the file's bytes, which the connection sends without reading them.
    pub fn io_file(attr: IoAttr, region: FileRegion) -> Body {
        let attr = IoAttr {
            size: region.size_bytes,
            ..attr
        };
        let (head, _) = IoPayload {
            attr,
            data: Bytes::new(),
        }
        .into_parts();
        Body {
            file: Some(region),
            ..Body::split(head, Bytes::new())
        }
    }
}

impl From<Bytes> for Body {
    fn from(head: Bytes) -> Body {
        Body::split(head, Bytes::new())
    }
}

impl From<Vec<u8>> for Body {
    fn from(head: Vec<u8>) -> Body {
        Bytes::from(head).into()
    }
}

/// A connection; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Conn {
    addr: SocketAddr,
    max_frame_bytes: u64,
    tx: mpsc::Sender<Frame>,
    pending: Pending,
    next_trans: AtomicU64,
    closed: Arc<AtomicBool>,
}

/// Replies of one request, in order; the last one has no MORE flag.
#[derive(Debug)]
pub struct Replies {
    addr: SocketAddr,
    rx: mpsc::Receiver<Frame>,
    done: bool,
    /// How long to wait for each frame; `None` for a subscription, whose events come when
    /// they come (see [`Replies::without_timeout`]).
    timeout: Option<Duration>,
    /// This request's entry in the connection's table, removed when the replies are dropped.
    _entry: PendingEntry,
}

impl Replies {
    /// The next reply frame, `None` after the final one.
    pub async fn next(&mut self) -> Option<Result<Frame, ConnError>> {
        if self.done {
            return None;
        }
        let next = match self.timeout {
            Some(t) => tokio::time::timeout(t, self.rx.recv()).await.map_err(|_| t),
            None => Ok(self.rx.recv().await),
        };
        match next {
            Err(t) => {
                self.done = true;
                Some(Err(ConnError::TimedOut {
                    addr: self.addr,
                    timeout_ms: t.as_millis() as u64,
                }))
            }
            Ok(None) => {
                self.done = true;
                Some(Err(ConnError::Closed(self.addr)))
            }
            Ok(Some(f)) => {
                if !f.header.has(flags::MORE) {
                    self.done = true;
                }
                Some(Ok(f))
            }
        }
    }

    /// The rest of a subscription's stream (NOTIFY after its acknowledgement): each frame is
    /// waited for as long as the connection stays open, not for the request timeout. The
    /// stream still ends on its final frame or when the connection closes.
    pub fn without_timeout(mut self) -> Replies {
        self.timeout = None;
        self
    }

    /// Every reply until the final one (each frame keeps its own status), at most
    /// `max_frames` of them.
    pub async fn collect(mut self, max_frames: usize) -> Result<Vec<Frame>, ConnError> {
        let mut out = Vec::new();
        while let Some(f) = self.next().await {
            out.push(f?);
            if out.len() > max_frames {
                return Err(ConnError::Busy(self.addr));
            }
        }
        Ok(out)
    }
}

impl Conn {
    /// [`Conn::connect`], then AUTH with `token` when one is given: how the session's pooled
    /// connections and the dedicated connections of admin streams (iterators, server-send)
    /// authenticate.
    pub async fn connect_authed(
        addr: SocketAddr,
        max_frame_bytes: u64,
        region_send: RegionSend,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<Arc<Conn>, ConnError> {
        use crate::protocol::cmd::{auth::Auth, Payload};
        let c = Conn::connect_with(addr, max_frame_bytes, region_send, timeout).await?;
        if let Some(token) = token {
            let h = Header::request(crate::protocol::Command::Auth, crate::Id::ZERO, 0, 0);
            let auth = Auth {
                token: token.to_owned(),
            };
            c.call(h, auth.encode(), timeout).await?;
        }
        Ok(c)
    }

    /// Connect within `timeout`; file regions of requests go as [`RegionSend::default`] says.
    pub async fn connect(
        addr: SocketAddr,
        max_frame_bytes: u64,
        timeout: Duration,
    ) -> Result<Arc<Conn>, ConnError> {
        Conn::connect_with(addr, max_frame_bytes, RegionSend::default(), timeout).await
    }

    /// [`Conn::connect`], file regions of requests sent as `region_send` says.
    pub async fn connect_with(
        addr: SocketAddr,
        max_frame_bytes: u64,
        region_send: RegionSend,
        timeout: Duration,
    ) -> Result<Arc<Conn>, ConnError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(ConnError::Connect {
                    addr,
                    reason: e.to_string(),
                })
            }
            Err(_) => {
                return Err(ConnError::Connect {
                    addr,
                    reason: "timed out".into(),
                })
            }
        };
        let _ = stream.set_nodelay(true);
        let (read_half, write_half) = stream.into_split();
        let mut source = FramedRead::new(read_half, FrameCodec::new(max_frame_bytes));
        let mut sink = FrameWriter::new(write_half, max_frame_bytes).with_region_send(region_send);
        let (tx, mut rx) = mpsc::channel::<Frame>(SEND_QUEUE);
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let closed = Arc::new(AtomicBool::new(false));
        // Writer: drains the queue; ends when every sender is gone or the socket fails.
        let closed_w = closed.clone();
        tokio::spawn(async move {
            // Frames already queued go out in one write: a flush per frame costs a syscall
            // per request under pipelining. The writer writes past its buffer boundary, so
            // the batch stays bounded.
            'conn: while let Some(f) = rx.recv().await {
                if sink.feed(f).await.is_err() {
                    break;
                }
                while let Ok(f) = rx.try_recv() {
                    if sink.feed(f).await.is_err() {
                        break 'conn;
                    }
                }
                if sink.flush().await.is_err() {
                    break;
                }
            }
            closed_w.store(true, Ordering::Release);
            // Shut the write half down so the peer sees EOF and closes its side: the reader
            // task still holds the read half, so dropping the sink alone would leave the
            // socket (and the peer's connection, with its NOTIFY watches) open. Bounded: a
            // peer that does not read cannot hold the task.
            let _ = tokio::time::timeout(timeout, sink.shutdown()).await;
        });
        // Reader: routes replies to their request; on EOF or error fails everyone waiting.
        let pending_r = pending.clone();
        let closed_r = closed.clone();
        tokio::spawn(async move {
            while let Some(Ok(f)) = source.next().await {
                let trans = f.header.trans;
                let last = !f.header.has(flags::MORE);
                let waiter = {
                    let mut p = pending_r.lock();
                    match p.get(&trans) {
                        _ if last => p.remove(&trans),
                        Some(Waiter::Stream(tx)) => Some(Waiter::Stream(tx.clone())),
                        // An intermediate frame of a call, or of a request nobody waits for.
                        Some(Waiter::Final(_)) | None => None,
                    }
                };
                // A consumer that went away (timed out) just misses its replies.
                match waiter {
                    Some(Waiter::Final(tx)) => {
                        let _ = tx.send(f);
                    }
                    Some(Waiter::Stream(tx)) => {
                        let _ = tx.send(f).await;
                    }
                    None => {}
                }
            }
            closed_r.store(true, Ordering::Release);
            pending_r.lock().clear();
        });
        Ok(Arc::new(Conn {
            addr,
            max_frame_bytes,
            tx,
            pending,
            next_trans: AtomicU64::new(1),
            closed,
        }))
    }

    /// Peer address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The connection broke (reconnect).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.tx.is_closed()
    }

    /// Requests waiting for replies.
    pub fn in_flight(&self) -> usize {
        self.pending.lock().len()
    }

    /// Frames waiting to be written.
    pub fn send_queue(&self) -> usize {
        SEND_QUEUE - self.tx.capacity()
    }

    /// Send a request (its `trans` is assigned here) and get its replies.
    pub async fn request(
        &self,
        header: Header,
        payload: impl Into<Body>,
        timeout: Duration,
    ) -> Result<Replies, ConnError> {
        let (tx, rx) = mpsc::channel(REPLY_QUEUE);
        let entry = self
            .send(header, payload, Waiter::Stream(tx), timeout)
            .await?;
        Ok(Replies {
            addr: self.addr,
            rx,
            done: false,
            timeout: Some(timeout),
            _entry: entry,
        })
    }

    /// Send a request and wait for its single (final) reply; an error status is an error.
    /// Intermediate (MORE) replies are dropped; `timeout` bounds the whole call.
    pub async fn call(
        &self,
        header: Header,
        payload: impl Into<Body>,
        timeout: Duration,
    ) -> Result<Frame, ConnError> {
        let (tx, rx) = oneshot::channel();
        let _entry = self
            .send(header, payload, Waiter::Final(tx), timeout)
            .await?;
        let f = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(f)) => f,
            Ok(Err(_)) => return Err(ConnError::Closed(self.addr)),
            Err(_) => {
                return Err(ConnError::TimedOut {
                    addr: self.addr,
                    timeout_ms: timeout.as_millis() as u64,
                })
            }
        };
        if f.header.status.is_ok() {
            Ok(f)
        } else {
            Err(ConnError::Status {
                addr: self.addr,
                status: f.header.status,
            })
        }
    }

    /// Register `waiter` under a fresh `trans` and queue the request for the writer.
    async fn send(
        &self,
        header: Header,
        payload: impl Into<Body>,
        waiter: Waiter,
        timeout: Duration,
    ) -> Result<PendingEntry, ConnError> {
        if self.is_closed() {
            return Err(ConnError::Closed(self.addr));
        }
        let Body { head, tail, file } = payload.into();
        let mut frame = Frame {
            file,
            ..Frame::with_tail(header, head, tail)
        };
        if frame.payload_len() > self.max_frame_bytes {
            return Err(ConnError::TooLarge {
                addr: self.addr,
                size_bytes: frame.payload_len(),
                max_bytes: self.max_frame_bytes,
            });
        }
        let trans = self.next_trans.fetch_add(1, Ordering::Relaxed);
        frame.header.trans = trans;
        frame.header.flags &= !(flags::REPLY | flags::MORE);
        {
            let mut p = self.pending.lock();
            if p.len() >= MAX_IN_FLIGHT {
                return Err(ConnError::Busy(self.addr));
            }
            p.insert(trans, waiter);
        }
        let entry = PendingEntry {
            trans,
            pending: self.pending.clone(),
        };
        // Fast path: room in the queue now (no timer to arm); else wait up to `timeout`.
        let frame = match self.tx.try_send(frame) {
            Ok(()) => return Ok(entry),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(ConnError::Closed(self.addr)),
            Err(mpsc::error::TrySendError::Full(frame)) => frame,
        };
        match tokio::time::timeout(timeout, self.tx.send(frame)).await {
            Ok(Ok(())) => Ok(entry),
            Ok(Err(_)) => Err(ConnError::Closed(self.addr)),
            Err(_) => Err(ConnError::TimedOut {
                addr: self.addr,
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Dropping `tx` ends the writer, which closes the socket's write half; the reader
        // then sees EOF from the peer and exits.
        self.pending.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Command;
    use crate::Id;
    use futures::SinkExt;
    use tokio::net::TcpListener;
    use tokio_util::codec::Framed;

    /// A peer that answers PING with one MORE frame then the final reply (carrying the
    /// request's trans as payload), answers requests of group 7 in reverse order of arrival
    /// two at a time, and never answers group 9.
    async fn peer() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            let (mut sink, mut source) = Framed::new(s, FrameCodec::new(1 << 20)).split();
            let mut held: Option<Frame> = None;
            while let Some(Ok(f)) = source.next().await {
                let trans = f.header.trans.to_le_bytes().to_vec();
                match f.header.group {
                    9 => {}
                    7 => match held.take() {
                        None => held = Some(f),
                        Some(first) => {
                            let second = Frame::new(f.header.reply(Status::OK), trans);
                            let t = first.header.trans.to_le_bytes().to_vec();
                            sink.send(second).await.expect("send");
                            sink.send(Frame::new(first.header.reply(Status::OK), t))
                                .await
                                .expect("send");
                        }
                    },
                    _ => {
                        let mut more = f.header.reply(Status::OK);
                        more.flags |= flags::MORE;
                        sink.send(Frame::new(more, Bytes::from_static(b"partial")))
                            .await
                            .expect("send");
                        sink.send(Frame::new(f.header.reply(Status::OK), trans))
                            .await
                            .expect("send");
                    }
                }
            }
        });
        addr
    }

    async fn connected() -> Arc<Conn> {
        Conn::connect(peer().await, 1 << 20, Duration::from_secs(5))
            .await
            .expect("connect")
    }

    fn ping(group: u32) -> Header {
        Header::request(Command::Ping, Id::ZERO, group, 0)
    }

    #[tokio::test]
    async fn a_call_gets_its_final_reply_and_a_stream_gets_every_frame() {
        let c = connected().await;
        let t = Duration::from_secs(5);
        let f = c.call(ping(1), Bytes::new(), t).await.expect("call");
        assert!(!f.header.has(flags::MORE));
        assert_eq!(f.payload.len(), 8, "the final frame, not the MORE one");
        let frames = c
            .request(ping(1), Bytes::new(), t)
            .await
            .expect("request")
            .collect(16)
            .await
            .expect("frames");
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[0].payload[..], b"partial");
        assert_eq!(c.in_flight(), 0, "finished requests leave the table");
    }

    #[tokio::test]
    async fn replies_out_of_order_reach_their_own_callers() {
        let c = connected().await;
        let t = Duration::from_secs(5);
        let (a, b) = tokio::join!(
            c.call(ping(7), Bytes::new(), t),
            c.call(ping(7), Bytes::new(), t)
        );
        let (a, b) = (a.expect("a"), b.expect("b"));
        for f in [&a, &b] {
            let echoed = u64::from_le_bytes(f.payload[..8].try_into().expect("8 bytes"));
            assert_eq!(
                echoed, f.header.trans,
                "each caller got the reply to its trans"
            );
        }
        assert_ne!(a.header.trans, b.header.trans);
    }

    #[tokio::test]
    async fn an_unanswered_call_times_out_and_frees_its_slot() {
        let c = connected().await;
        let r = c
            .call(ping(9), Bytes::new(), Duration::from_millis(50))
            .await;
        assert!(
            matches!(r, Err(ConnError::TimedOut { timeout_ms: 50, .. })),
            "{r:?}"
        );
        assert_eq!(c.in_flight(), 0);
        // A cancelled call (its future dropped) frees its slot too.
        let pending = c.call(ping(9), Bytes::new(), Duration::from_secs(5));
        let r = tokio::time::timeout(Duration::from_millis(20), pending).await;
        assert!(r.is_err(), "still waiting when dropped");
        assert_eq!(c.in_flight(), 0);
        // The connection still serves.
        c.call(ping(1), Bytes::new(), Duration::from_secs(5))
            .await
            .expect("call after timeouts");
    }
}
