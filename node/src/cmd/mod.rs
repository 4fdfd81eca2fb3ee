//! Request handling: one file per wire command, plus routing (local or forward) here.
//!
//! Not the socket loop (`server`). Invariants: every request gets exactly one final reply
//! (status + optional payload) after any MORE frames; errors become statuses only through
//! `Status::from(&NodeError)`; requests for one key on one backend run one at a time (key
//! lock), engine calls run on the bounded blocking pool; admin commands check the connection's
//! authentication first.

mod auth;
mod backend_control;
mod backend_status;
mod bulk_read;
mod del;
mod iterator;
mod key_range;
mod lookup;
mod monitor_stat;
pub(crate) mod notify;
mod ping;
mod read;
mod recovery;
mod route_list;
mod send;
mod write;

pub use write::{ArrivalHash, ArrivalHashes};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ellipsis_core::protocol::cmd::lookup::LookupInfo;
use ellipsis_core::protocol::{flags, Command, Frame, Header, IoAttr, Status};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::backend::Backend;
use crate::counters::Source;
use crate::error::NodeError;
use crate::node::Node;

/// The connection a request came on.
#[derive(Debug)]
pub struct ConnCtx {
    /// Unique per connection (NOTIFY bookkeeping).
    pub id: u64,
    /// Remote address.
    pub peer: SocketAddr,
    /// Replies go here (bounded; the writer task drains it).
    pub tx: mpsc::Sender<Frame>,
    /// AUTH succeeded on this connection.
    pub authed: AtomicBool,
}

/// What a handler produced.
#[derive(Debug, Default)]
pub struct Reply {
    /// Final payload.
    pub payload: Bytes,
    /// Sent right after `payload` (a READ's data behind its attributes, uncopied).
    pub tail: Bytes,
    /// Where it came from (for counters).
    pub source: Option<Source>,
    /// Payload bytes moved (in + out).
    pub bytes: u64,
    /// The handler already sent the final frame (forwarding relays the owner's).
    pub sent: bool,
}

impl Reply {
    fn payload(payload: Vec<u8>, source: Source) -> Reply {
        Reply {
            bytes: payload.len() as u64,
            payload: payload.into(),
            source: Some(source),
            ..Reply::default()
        }
    }

    /// IO attributes and data, sent without copying the data.
    fn io(io: ellipsis_core::protocol::cmd::io::IoPayload, source: Source) -> Reply {
        let (head, tail) = io.into_parts();
        Reply {
            bytes: (head.len() + tail.len()) as u64,
            payload: head.into(),
            tail,
            source: Some(source),
            sent: false,
        }
    }
}

/// Sends MORE frames of a streaming reply.
pub struct Responder<'a> {
    ctx: &'a ConnCtx,
    header: Header,
}

impl Responder<'_> {
    /// One intermediate frame; `id` sets the frame's key id (bulk replies).
    pub async fn more(
        &self,
        id: Option<ellipsis_core::Id>,
        status: Status,
        payload: Bytes,
    ) -> Result<(), NodeError> {
        self.more_parts(id, status, payload, Bytes::new()).await
    }

    /// One intermediate frame of IO attributes and data (the data uncopied); returns the
    /// payload bytes sent.
    pub async fn more_io(
        &self,
        id: Option<ellipsis_core::Id>,
        io: ellipsis_core::protocol::cmd::io::IoPayload,
    ) -> Result<u64, NodeError> {
        let (head, tail) = io.into_parts();
        let bytes = (head.len() + tail.len()) as u64;
        self.more_parts(id, Status::OK, head.into(), tail).await?;
        Ok(bytes)
    }

    async fn more_parts(
        &self,
        id: Option<ellipsis_core::Id>,
        status: Status,
        payload: Bytes,
        tail: Bytes,
    ) -> Result<(), NodeError> {
        let mut h = self.header.reply(status);
        h.flags |= flags::MORE;
        if let Some(id) = id {
            h.id = id;
        }
        self.ctx
            .tx
            .send(Frame::with_tail(h, payload, tail))
            .await
            .map_err(|_| NodeError::Unreachable("client connection closed".into()))
    }
}

/// A request's trace from the moment its header is in: the root span and its
/// `network.receive` action, which lasts until the whole frame has arrived.
#[derive(Debug)]
pub struct Arrival {
    trace_id: u64,
    root: tracing::Span,
    receive: tracing::Span,
}

impl Arrival {
    /// Open the request's trace for header `h` (its payload may still be arriving).
    pub fn begin(node: &Node, h: &Header) -> Arrival {
        // Every request gets a trace id here unless it brought one: replies echo it,
        // forwarded requests carry it, so a sampled request's trees on every node it crossed
        // share the id the client reads back from the reply.
        let trace_id = match h.trace_id {
            0 => rand::random::<u64>().max(1),
            t => t,
        };
        // The sampling decision is taken before the root exists: an unsampled request (all
        // but a few) then creates no span at all — a root costs a registry slot, lookups in
        // every layer on each enter and exit, and the formatting of its fields, per request.
        // Log lines of unsampled requests carry their own context (see `handle`). The rate is
        // this node's (`trace_sampling_rate`), not the process tracer's: nodes sharing a
        // process keep their own.
        let traced = node
            .tracer
            .as_ref()
            .is_none_or(|t| t.decide_at(h.has(flags::TRACE), node.config.trace_sampling_rate));
        if !traced {
            return Arrival {
                trace_id,
                root: tracing::Span::none(),
                receive: tracing::Span::none(),
            };
        }
        let sampled = node.tracer.is_some() || h.has(flags::TRACE);
        let root = react_trace::request!(
            h.cmd.name(),
            trace_id,
            sampled,
            node = %node.addr,
            group = h.group
        );
        let receive = root.in_scope(|| react_trace::action!("network.receive", bytes = h.size));
        Arrival {
            trace_id,
            root,
            receive,
        }
    }
}

/// Handle one request frame: route, run, reply, count. `arrived`: what the reader hashed of
/// the frame as it arrived (see [`ArrivalHash`]).
pub async fn handle(
    node: Arc<Node>,
    ctx: Arc<ConnCtx>,
    mut frame: Frame,
    arrival: Arrival,
    arrived: Option<ArrivalHashes>,
) {
    let started = Instant::now();
    let Arrival {
        trace_id,
        root: span,
        receive,
    } = arrival;
    // The frame is whole: its receive action ends here.
    drop(receive);
    frame.header.trace_id = trace_id;
    let h = frame.header;
    let result = dispatch(&node, &ctx, &frame, arrived)
        .instrument(span.clone())
        .await;
    let (status, reply) = match result {
        Ok(r) => (Status::OK, r),
        Err(e) => {
            let status = Status::from(&e);
            if status == Status::IO || status == Status::CORRUPTED {
                tracing::warn!(cmd = %h.cmd, trace_id, peer = %ctx.peer, error = %e, "request failed");
            }
            (
                status,
                Reply {
                    payload: Bytes::from(e.to_string().into_bytes()),
                    ..Reply::default()
                },
            )
        }
    };
    let bytes = reply.bytes;
    let source = reply.source;
    if !reply.sent {
        let action = span.in_scope(|| react_trace::action!("reply"));
        let _ = ctx
            .tx
            .send(Frame::with_tail(h.reply(status), reply.payload, reply.tail))
            .instrument(action)
            .await;
    }
    node.counters.record(
        h.cmd.name(),
        status,
        bytes + frame.payload.len() as u64,
        source.unwrap_or(Source::Other),
        started.elapsed(),
    );
}

async fn dispatch(
    node: &Arc<Node>,
    ctx: &ConnCtx,
    f: &Frame,
    arrived: Option<ArrivalHashes>,
) -> Result<Reply, NodeError> {
    let h = &f.header;
    if h.cmd.is_admin() && !authorized(node, ctx) {
        crate::auth::audit(
            &ctx.peer.to_string(),
            h.cmd.name(),
            &format!("group {} backend {}", h.group, h.backend),
            &Err("no valid token".into()),
        );
        return Err(NodeError::Unauthorized);
    }
    let out = Responder { ctx, header: *h };
    // Every request's task holds this future, so its size is moved into each spawned task:
    // the streaming and admin handlers (large state machines, rare) are boxed, keeping the
    // future of the hot keyed commands small.
    match h.cmd {
        Command::Ping => ping::handle(),
        Command::RouteList => route_list::handle(node, f),
        Command::Auth => auth::handle(node, ctx, f),
        Command::MonitorStat => monitor_stat::handle(node, f),
        Command::BackendStatus => backend_status::handle(node),
        Command::BackendControl => Box::pin(backend_control::handle(node, ctx, f)).await,
        Command::Lookup | Command::Write | Command::Read | Command::Del => {
            match resolve(node, h)? {
                Target::Forward(owner) => Box::pin(forward(node, ctx, f, owner)).await,
                Target::Local(b) => match h.cmd {
                    Command::Lookup => lookup::handle(node, b, f).await,
                    Command::Write => write::handle(node, b, f, arrived).await,
                    Command::Read => read::handle(node, b, f).await,
                    _ => del::handle(node, b, f).await,
                },
            }
        }
        // Keyed like the four above; the owner holds the subscription (cmd/notify.rs).
        Command::Notify => Box::pin(notify::handle(node, ctx, f)).await,
        Command::BulkRead => Box::pin(bulk_read::handle(node, &out, f)).await,
        Command::ReadRange => Box::pin(key_range::handle(node, &out, f)).await,
        // Admin commands that change data: one audit line each, with the outcome.
        Command::DelRange | Command::Send => {
            let r = if h.cmd == Command::Send {
                Box::pin(send::handle(node, &out, f)).await
            } else {
                Box::pin(key_range::handle(node, &out, f)).await
            };
            crate::auth::audit(
                &ctx.peer.to_string(),
                h.cmd.name(),
                &format!("group {} backend {}", h.group, h.backend),
                &r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
            );
            r
        }
        Command::Iterator => Box::pin(iterator::handle(node, ctx, f)).await,
        Command::Recovery => Box::pin(recovery::handle(node, ctx, f)).await,
        other => Err(NodeError::NotSupported(other.to_string())),
    }
}

fn authorized(node: &Node, ctx: &ConnCtx) -> bool {
    node.token.is_configured() && ctx.authed.load(Ordering::Acquire)
}

/// Where a keyed request runs.
enum Target {
    Local(Arc<Backend>),
    Forward(SocketAddr),
}

fn resolve(node: &Node, h: &Header) -> Result<Target, NodeError> {
    if h.has(flags::DIRECT) {
        // Addressed to one backend (recovery, server-send): no routing.
        let b = node
            .backend(h.backend)
            .ok_or(NodeError::NoBackend(h.backend))?;
        if b.group() != h.group {
            return Err(NodeError::Invalid(format!(
                "backend {} is in group {}, not {}",
                h.backend,
                b.group(),
                h.group
            )));
        }
        return Ok(Target::Local(b));
    }
    let owner = node
        .routes
        .read()
        .owner(h.group, &h.id)
        .ok_or_else(|| NodeError::Unreachable(format!("no route for group {}", h.group)))?;
    if owner.node == node.addr {
        return node
            .backend(owner.backend)
            .map(Target::Local)
            .ok_or(NodeError::NoBackend(owner.backend));
    }
    if h.has(flags::FORWARDED) {
        // Never forward twice: the sender's table and ours disagree; let it refresh.
        return Err(NodeError::Unreachable(format!(
            "{} is owned by {} here",
            h.id.short(),
            owner
        )));
    }
    Ok(Target::Forward(owner.node))
}

/// Relay the request to its owner and its replies back.
async fn forward(
    node: &Arc<Node>,
    ctx: &ConnCtx,
    f: &Frame,
    owner: SocketAddr,
) -> Result<Reply, NodeError> {
    let conn = node
        .peers
        .conn(owner)
        .await
        .map_err(|e| NodeError::Unreachable(e.to_string()))?;
    let mut h = f.header;
    h.flags |= flags::FORWARDED;
    // Sampled here (by rate or trace bit): the owner records its part under the same id.
    if react_trace::is_sampled() {
        h.flags |= flags::TRACE;
    }
    let mut replies = conn
        .request(h, f.payload.clone(), node.peers.timeout())
        .await
        .map_err(|e| NodeError::Unreachable(e.to_string()))?;
    let mut bytes = 0;
    while let Some(r) = replies.next().await {
        let mut reply = r.map_err(|e| NodeError::Unreachable(e.to_string()))?;
        // The client knows this request by its own transaction id.
        reply.header.trans = f.header.trans;
        reply.header.flags &= !flags::FORWARDED;
        bytes += reply.payload.len() as u64;
        ctx.tx
            .send(reply)
            .await
            .map_err(|_| NodeError::Unreachable("client connection closed".into()))?;
    }
    Ok(Reply {
        bytes,
        source: Some(Source::Forwarded),
        sent: true,
        ..Reply::default()
    })
}

/// Run a blocking engine call on the pool, inside the request's span.
pub(crate) async fn blocking<T: Send + 'static>(
    node: &Node,
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    let span = tracing::Span::current();
    node.pool
        .run(move || span.in_scope(f))
        .await
        .map_err(|e| NodeError::Busy(e.to_string()))?
}

/// Run a mutation of backend `b` (write, remove) on its write queue: after the mutations
/// submitted before it, batched with them on one blocking thread (see `write_queue`).
pub(crate) async fn mutation<T: Send + 'static>(
    node: &Node,
    b: &Backend,
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    let Some(queue) = node.write_queues.get(&b.id()) else {
        // A backend without a queue (not opened by this node's start) still works, unbatched.
        return blocking(node, f).await;
    };
    let span = tracing::Span::current();
    queue
        .run(move || span.in_scope(f))
        .await
        .map_err(|e| NodeError::Busy(e.to_string()))?
}

/// Honour a backend's artificial delay (an admin testing feature, not synchronisation).
pub(crate) async fn artificial_delay(b: &Backend) {
    let ms = b.delay_ms();
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// A LOOKUP-style reply from the engine's answer.
pub(crate) fn lookup_info(backend: u32, l: &eblob::Lookup) -> LookupInfo {
    LookupInfo {
        attr: IoAttr {
            size: l.data_size_bytes,
            total_size: l.data_size_bytes,
            ts_sec: l.timestamp.sec,
            ts_nsec: l.timestamp.nsec,
            user_flags: l.user_flags,
            record_flags: u64::from(l.uncommitted) << 2 | u64::from(l.nocsum) << 1,
            checksum: l.checksum,
            ..IoAttr::default()
        },
        backend,
        path: l.data_path.display().to_string(),
        data_offset: l.data_offset_bytes,
    }
}

/// The engine key for a wire id.
pub(crate) fn key(id: &ellipsis_core::Id) -> eblob::Key {
    eblob::Key(id.0)
}
