//! ITERATOR (admin): stream the records of one backend, filtered by key ranges and a timestamp
//! range, with or without data; pause, continue and cancel by iterator id.
//!
//! A start runs the iteration on its own blocking thread (not the engine-call pool: an
//! iteration can last hours and would starve foreground requests of pool slots), registered as
//! a Worker job of kind `iterator`, so it is listed in `/stats/workers` and the iterator id is
//! the job id. Control requests may come on any connection; they act on the job registry.
//!
//! Not a snapshot (records written meanwhile may or may not be seen), and not recovery (which
//! iterates the engine directly).
//!
//! Invariants:
//! - Flow control: every reply frame goes into the connection's bounded send queue, and the
//!   iterator thread waits for room in it before reading the next record. So the node holds at
//!   most that queue's worth of replies for a client that reads slowly (and one record in the
//!   thread); a client that stops reading stops the disk reads, instead of growing a buffer.
//! - Each record is admitted through [`JobHandle::admit`] before it is sent: the pause check
//!   and the progress count happen under one lock, so once the job is seen paused its
//!   `done_keys` is exactly the number of records sent, and no more are sent until continue.
//! - At most [`MAX_ITERATORS`] run per node; a pause longer than [`MAX_PAUSE`] cancels.
//! - Throttled by the node's `work_share.iterator`: the time spent reading records is paced
//!   against rests; the waits for the client (flow control, pause) are not counted as work.
//! - The final frame is OK after a full pass, CANCELLED after a cancel (or node shutdown).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ellipsis_core::protocol::cmd::iterator::{
    IteratorAction, IteratorRecord, IteratorRequest, DEFAULT_KEEPALIVE_SKIPPED,
};
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{flags, Frame, Header, Status};
use ellipsis_core::stats::JobKind;
use ellipsis_core::Id;
use tokio::sync::{mpsc, oneshot};

use super::{lookup_info, ConnCtx, Reply};
use crate::backend::BackendError;
use crate::counters::Source;
use crate::error::NodeError;
use crate::node::Node;
use crate::worker::{JobHandle, Pacer};

/// Iterators running at once on one node (each holds a thread).
pub const MAX_ITERATORS: usize = 16;
/// A paused iterator nobody continues within this is cancelled.
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);
/// A keep-alive goes out when nothing was sent for this long while skipping.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How often a sender blocked on a full queue re-checks for cancellation.
const CANCEL_POLL: Duration = Duration::from_millis(100);

pub(super) async fn handle(node: &Arc<Node>, ctx: &ConnCtx, f: &Frame) -> Result<Reply, NodeError> {
    let req = IteratorRequest::decode(&f.payload)?;
    match req.action {
        IteratorAction::Start => start(node, ctx, f.header, req).await,
        action => {
            let r = control(node, req.iterator_id, action);
            crate::auth::audit(
                &ctx.peer.to_string(),
                &format!("ITERATOR {action:?}"),
                &format!("iterator {}", req.iterator_id),
                &r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
            );
            r
        }
    }
}

/// Pause, continue or cancel iterator `id`; the reply carries its progress.
fn control(node: &Node, id: u64, action: IteratorAction) -> Result<Reply, NodeError> {
    let w = &node.workers;
    // Only iterators: this command must not pause a recovery or a data-sort.
    match w.get(id) {
        Some(j) if j.kind == JobKind::Iterator => {}
        _ => return Err(crate::worker::ControlError::NotFound(id).into()),
    }
    match action {
        IteratorAction::Pause => w.pause(id)?,
        IteratorAction::Continue => w.resume(id)?,
        _ => w.cancel(id)?,
    }
    let s = w.get(id).ok_or(crate::worker::ControlError::NotFound(id))?;
    let rec = IteratorRecord {
        iterator_id: id,
        keepalive: true,
        iterated: s.done_keys,
        total: s.total_keys.unwrap_or(0),
        ..IteratorRecord::default()
    };
    Ok(Reply::payload(rec.encode(), Source::Other))
}

/// Why the iteration stopped early.
enum Stop {
    Cancelled,
    ClientGone,
}

async fn start(
    node: &Arc<Node>,
    ctx: &ConnCtx,
    header: Header,
    req: IteratorRequest,
) -> Result<Reply, NodeError> {
    let peer = ctx.peer.to_string();
    let target = format!("backend {}", req.backend);
    let admitted = (|| {
        let b = node
            .backend(req.backend)
            .ok_or(NodeError::NoBackend(req.backend))?;
        let engine = b.engine()?;
        if node.workers.running_of(JobKind::Iterator) >= MAX_ITERATORS {
            return Err(NodeError::Busy(format!(
                "{MAX_ITERATORS} iterators already running"
            )));
        }
        Ok(engine)
    })();
    let engine = match admitted {
        Ok(e) => e,
        Err(e) => {
            crate::auth::audit(&peer, "ITERATOR Start", &target, &Err(e.to_string()));
            return Err(e);
        }
    };
    let job = node.workers.register(
        JobKind::Iterator,
        format!(
            "backend {}{}",
            req.backend,
            if req.with_data { " (with data)" } else { "" }
        ),
    );
    crate::auth::audit(
        &peer,
        "ITERATOR Start",
        &format!("{target} iterator {}", job.id()),
        &Ok(()),
    );
    let total = engine.stats().total.live_records;
    job.set_totals(Some(total), None);
    let sender = Sender {
        tx: ctx.tx.clone(),
        header,
        rt: tokio::runtime::Handle::current(),
    };
    let (done_tx, done_rx) = oneshot::channel();
    let share = node.config.work_share.iterator;
    std::thread::Builder::new()
        .name(format!("iterator-{}", job.id()))
        .spawn(move || {
            job.start();
            let pacer = Pacer::new(share);
            let r = run(&engine, &req, &job, &sender, total, pacer);
            let outcome = match &r {
                Ok(n) => Ok(format!("{n} records sent")),
                Err(e) => Err(e.to_string()),
            };
            job.finish(outcome);
            let _ = done_tx.send(r);
        })
        .map_err(NodeError::Io)?;
    let sent = done_rx
        .await
        .map_err(|_| NodeError::Invalid("iterator thread ended without a result".into()))??;
    Ok(Reply {
        bytes: sent,
        source: Some(Source::Disk),
        ..Reply::default()
    })
}

/// Puts frames on the connection's bounded queue from the iterator thread.
struct Sender {
    tx: mpsc::Sender<Frame>,
    header: Header,
    rt: tokio::runtime::Handle,
}

impl Sender {
    /// Waits for room in the queue (the flow control), re-checking cancellation while the
    /// client is not reading so a cancel or shutdown is never stuck behind a full queue.
    fn send(&self, rec: &IteratorRecord, job: &JobHandle) -> Result<u64, Stop> {
        let mut h = self.header.reply(rec.status);
        h.flags |= flags::MORE;
        h.id = rec.key;
        let payload = Bytes::from(rec.encode());
        let len = payload.len() as u64;
        let frame = Frame::new(h, payload);
        self.rt.block_on(async {
            loop {
                match tokio::time::timeout(CANCEL_POLL, self.tx.reserve()).await {
                    Ok(Ok(permit)) => {
                        permit.send(frame);
                        return Ok(len);
                    }
                    Ok(Err(_)) => return Err(Stop::ClientGone),
                    Err(_) if job.is_cancelled() => return Err(Stop::Cancelled),
                    Err(_) => {}
                }
            }
        })
    }
}

fn matches(req: &IteratorRequest, l: &eblob::Lookup) -> bool {
    let in_keys = req.ranges.is_empty()
        || req
            .ranges
            .iter()
            .any(|(a, b)| a.0 <= l.key.0 && l.key.0 < b.0);
    let in_time = req
        .time_range
        .is_none_or(|(from, to)| from <= l.timestamp.sec && l.timestamp.sec <= to);
    in_keys && in_time
}

/// The iteration itself (blocking). Returns the payload bytes sent.
fn run(
    engine: &eblob::Eblob,
    req: &IteratorRequest,
    job: &JobHandle,
    out: &Sender,
    total: u64,
    mut pacer: Pacer,
) -> Result<u64, NodeError> {
    let id = job.id();
    let keepalive_skipped = if req.keepalive_skipped == 0 {
        DEFAULT_KEEPALIVE_SKIPPED
    } else {
        req.keepalive_skipped
    };
    let keepalive = |iterated: u64| IteratorRecord {
        iterator_id: id,
        keepalive: true,
        iterated,
        total,
        ..IteratorRecord::default()
    };
    // The first frame names the iterator, so the client can control it before any match.
    let mut sent_bytes = out.send(&keepalive(0), job).map_err(stop_error)?;
    let opts = eblob::IterateOptions {
        include_uncommitted: req.include_uncommitted,
        ..eblob::IterateOptions::default()
    };
    let (mut iterated, mut skipped_run) = (0u64, 0u32);
    let mut last_sent = Instant::now();
    let mut stop: Option<Stop> = None;
    let report = engine.iterate(&opts, &mut |rec| {
        iterated += 1;
        let l = rec.lookup;
        if !matches(req, &l) {
            // The node's throttle: the time since the last record read this one; the waits
            // for the client (flow control, pause) are not counted (`idle` after them).
            if pacer.after_unit(job).is_err() {
                stop = Some(Stop::Cancelled);
                return ControlFlow::Break(());
            }
            skipped_run += 1;
            if skipped_run >= keepalive_skipped || last_sent.elapsed() >= KEEPALIVE_INTERVAL {
                // Keep-alives honour pause and cancel too, without counting as records.
                let r = job
                    .admit(0, 0, MAX_PAUSE)
                    .map_err(|_| Stop::Cancelled)
                    .and_then(|()| out.send(&keepalive(iterated), job));
                match r {
                    Ok(n) => sent_bytes += n,
                    Err(s) => {
                        stop = Some(s);
                        return ControlFlow::Break(());
                    }
                }
                skipped_run = 0;
                last_sent = Instant::now();
                pacer.idle();
            }
            return ControlFlow::Continue(());
        }
        skipped_run = 0;
        let mut status = Status::OK;
        let mut data = Bytes::new();
        if req.with_data {
            // Read by key now (not in the engine's pass) so skipped records cost no data
            // reads; an uncommitted or damaged record is reported and the pass goes on.
            match engine.read(&l.key) {
                Ok(d) => data = Bytes::from(d),
                Err(e) => status = Status::from(&NodeError::Backend(BackendError::Engine(e))),
            }
        }
        // The record and its data read: rest what the throttle owes before sending it.
        if pacer.after_unit(job).is_err() || job.admit(1, data.len() as u64, MAX_PAUSE).is_err() {
            stop = Some(Stop::Cancelled);
            return ControlFlow::Break(());
        }
        let mut attr = lookup_info(0, &l).attr;
        attr.size = data.len() as u64;
        let rec = IteratorRecord {
            iterator_id: id,
            key: Id(l.key.0),
            status,
            keepalive: false,
            iterated,
            total,
            attr,
            data,
        };
        match out.send(&rec, job) {
            Ok(n) => sent_bytes += n,
            Err(s) => {
                stop = Some(s);
                return ControlFlow::Break(());
            }
        }
        last_sent = Instant::now();
        pacer.idle();
        ControlFlow::Continue(())
    });
    report.map_err(|e| NodeError::Backend(BackendError::Engine(e)))?;
    match stop {
        Some(s) => Err(stop_error(s)),
        None => Ok(sent_bytes),
    }
}

fn stop_error(s: Stop) -> NodeError {
    match s {
        Stop::Cancelled => NodeError::Cancelled("iterator cancelled".into()),
        Stop::ClientGone => NodeError::Unreachable("client connection closed".into()),
    }
}
