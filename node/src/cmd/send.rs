//! SEND (server-send, admin): copy records this node holds to target groups, from here.
//!
//! Two sources (see `ellipsis_core::protocol::cmd::send`):
//! - a key list: the keys this node owns in the header's group; a key it does not hold (not
//!   its owner here, or absent) gets NOT_FOUND;
//! - a backend: every committed record of one of this node's backends that passes the
//!   request's key ranges and timestamp range, in the engine's order.
//!
//! One MORE frame per (key, target group) with a `SendResult`, then the final frame (OK after
//! the whole list or pass, CANCELLED after a cancel). Default mode never overwrites a newer
//! copy (NEWER_EXISTS = skipped, not failed); overwrite writes whatever is there; move removes
//! the local copy only after every target acknowledged: OK, or NEWER_EXISTS (the target already
//! holds this version or a newer one, so nothing is lost, and a retried move whose first try
//! reached some targets can finish). Any failed target keeps the local copy.
//!
//! Each request runs as a `server-send` job in the worker registry (`/stats/workers`, `GET
//! /admin/jobs`) on a thread of its own, not the engine-call pool (a backend pass can last
//! hours, and a paused or resting job must not hold a pool slot or an executor thread):
//! progress in keys (a backend pass counts every record it looks at, filtered ones too, against
//! the backend's live records) and bytes sent, errors; pause and cancel through
//! `/admin/jobs/{id}/...`, checked before each batch of keys; throttled by the node's
//! `work_share.server_send`. The keys of a batch ([`SEND_BATCH`]) are copied up to
//! [`SENDS_IN_FLIGHT`] at once, so the round trips of one key overlap another's.
//!
//! Invariants: memory is [`SENDS_IN_FLIGHT`] records (or parts of large ones) and one batch
//! of key ids, whatever the backend's size;
//! every result frame waits for room in the connection's bounded send queue, so a client that
//! stops reading stops the pass; at most [`MAX_SENDS`] run per node.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ellipsis_core::client::Client;
use ellipsis_core::protocol::cmd::iterator::DEFAULT_KEEPALIVE_SKIPPED;
use ellipsis_core::protocol::cmd::send::{SendBackend, SendMode, SendRequest, SendResult};
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{flags, Frame, Header, Status};
use ellipsis_core::stats::JobKind;
use ellipsis_core::Id;
use tokio::sync::{mpsc, oneshot};

use super::{blocking, key, Reply, Responder};
use crate::backend::{Backend, BackendError};
use crate::counters::Source;
use crate::error::NodeError;
use crate::node::Node;
use crate::recovery::{copy, Target};
use crate::worker::{JobHandle, Pacer};

/// Server-send jobs running at once on one node (each holds a thread).
pub const MAX_SENDS: usize = 16;
/// A keep-alive goes out when nothing was sent for this long while skipping.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Keys gathered before they are sent (the unit of pause, cancel and throttle checks).
const SEND_BATCH: usize = 64;
/// Keys of a batch copied at once; each holds one record or one part of a large one.
const SENDS_IN_FLIGHT: usize = 16;
/// How often a sender blocked on a full queue re-checks for cancellation.
const CANCEL_POLL: Duration = Duration::from_millis(100);

pub(super) async fn handle(
    node: &Arc<Node>,
    out: &Responder<'_>,
    f: &Frame,
) -> Result<Reply, NodeError> {
    let req = SendRequest::decode(&f.payload)?;
    let (group, what) = match &req.backend {
        Some(src) => {
            let b = node
                .backend(src.backend)
                .ok_or(NodeError::NoBackend(src.backend))?;
            (b.group(), format!("backend {}", src.backend))
        }
        None => (
            f.header.group,
            format!("{} keys of group {}", req.ids.len(), f.header.group),
        ),
    };
    let targets: Vec<u32> = req.groups.iter().copied().filter(|g| *g != group).collect();
    if targets.is_empty() {
        return Err(NodeError::Invalid(format!(
            "no target group other than the source group {group}"
        )));
    }
    if node.workers.running_of(JobKind::ServerSend) >= MAX_SENDS {
        return Err(NodeError::Busy(format!(
            "{MAX_SENDS} server-send jobs already running"
        )));
    }
    let client = node.client().await?;
    let job = node.workers.register(
        JobKind::ServerSend,
        format!("{what} to groups {targets:?} ({:?})", req.mode),
    );
    let ctx = Ctx {
        node: node.clone(),
        client,
        rt: tokio::runtime::Handle::current(),
        out: Sender {
            tx: out.ctx.tx.clone(),
            header: out.header,
        },
        mode: req.mode,
        group,
        targets,
        pacer: Pacer::new(node.config.work_share.server_send),
        report: SendReport::default(),
    };
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("server-send-{}", job.id()))
        .spawn(move || {
            let mut ctx = ctx;
            job.start();
            let r = match req.backend {
                Some(src) => ctx.run_backend(&job, &src),
                None => ctx.run_keys(&job, req.ids),
            };
            let bytes = ctx.report.bytes;
            job.finish(match &r {
                Ok(()) => Ok(ctx.report.to_string()),
                Err(e) => Err(format!("{e} ({})", ctx.report)),
            });
            let _ = done_tx.send(r.map(|()| bytes));
        })
        .map_err(NodeError::Io)?;
    let bytes = done_rx
        .await
        .map_err(|_| NodeError::Invalid("server-send thread ended without a result".into()))??;
    Ok(Reply {
        bytes,
        source: Some(Source::Disk),
        ..Reply::default()
    })
}

/// Counters of one server-send (the job's result message).
#[derive(Debug, Default)]
struct SendReport {
    /// Keys asked for, or records of the backend looked at.
    keys: u64,
    /// Records left out by the backend pass's filters.
    filtered: u64,
    copied: u64,
    /// Targets holding the same or a newer version.
    skipped: u64,
    failed: u64,
    /// Local copies removed (move mode).
    removed: u64,
    bytes: u64,
}

impl std::fmt::Display for SendReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} keys, {} filtered, {} copied, {} skipped (newer exists), {} failed, {} removed, {} bytes sent",
            self.keys, self.filtered, self.copied, self.skipped, self.failed, self.removed, self.bytes
        )
    }
}

/// Why a pass stopped early.
enum Stop {
    Cancelled,
    ClientGone,
}

impl From<Stop> for NodeError {
    fn from(s: Stop) -> NodeError {
        match s {
            Stop::Cancelled => NodeError::Cancelled("server-send job cancelled".into()),
            Stop::ClientGone => NodeError::Unreachable("client connection closed".into()),
        }
    }
}

/// Puts result frames on the connection's bounded queue from the job's thread.
struct Sender {
    tx: mpsc::Sender<Frame>,
    header: Header,
}

impl Sender {
    /// Waits for room in the queue (the flow control), re-checking cancellation while the
    /// client is not reading, so a cancel is never stuck behind a full queue.
    fn send(
        &self,
        rt: &tokio::runtime::Handle,
        r: &SendResult,
        job: &JobHandle,
    ) -> Result<(), Stop> {
        let mut h = self.header.reply(r.status);
        h.flags |= flags::MORE;
        h.id = r.id;
        let frame = Frame::new(h, Bytes::from(r.encode()));
        rt.block_on(async {
            loop {
                match tokio::time::timeout(CANCEL_POLL, self.tx.reserve()).await {
                    Ok(Ok(permit)) => {
                        permit.send(frame);
                        return Ok(());
                    }
                    Ok(Err(_)) => return Err(Stop::ClientGone),
                    Err(_) if job.is_cancelled() => return Err(Stop::Cancelled),
                    Err(_) => {}
                }
            }
        })
    }
}

/// What one key's send did.
struct KeyOutcome {
    /// Per target group, its status.
    statuses: Vec<(u32, Status)>,
    copied: u64,
    skipped: u64,
    failed: u64,
    bytes: u64,
    removed: bool,
    /// Why it failed, for the job's last error.
    error: Option<String>,
}

/// Everything a server-send job's thread works with.
struct Ctx {
    node: Arc<Node>,
    client: Arc<Client>,
    rt: tokio::runtime::Handle,
    out: Sender,
    mode: SendMode,
    /// The source group (left out of the targets).
    group: u32,
    targets: Vec<u32>,
    pacer: Pacer,
    report: SendReport,
}

impl Ctx {
    fn keepalive(&self, job: &JobHandle) -> SendResult {
        SendResult {
            job: job.id(),
            keepalive: true,
            ..SendResult::default()
        }
    }

    /// Streams one result per target group for key `id`.
    fn results(&self, job: &JobHandle, id: Id, statuses: &[(u32, Status)]) -> Result<(), Stop> {
        for (g, status) in statuses {
            let r = SendResult {
                id,
                group: *g,
                status: *status,
                job: job.id(),
                keepalive: false,
            };
            self.out.send(&self.rt, &r, job)?;
        }
        Ok(())
    }

    /// Sends keys `ids` of backend `b` (up to [`SENDS_IN_FLIGHT`] at once), then rests what
    /// the throttle owes for the batch, then streams the keys' results.
    fn send_batch(&mut self, job: &JobHandle, b: &Arc<Backend>, ids: Vec<Id>) -> Result<(), Stop> {
        use futures::StreamExt;
        if ids.is_empty() {
            return Ok(());
        }
        let (node, client, targets, mode) = (&self.node, &self.client, &self.targets, self.mode);
        let outcomes: Vec<(Id, KeyOutcome)> = self.rt.block_on(
            futures::stream::iter(ids)
                .map(|id| async move { (id, send_one(node, client, b, id, targets, mode).await) })
                .buffer_unordered(SENDS_IN_FLIGHT)
                .collect(),
        );
        for (id, o) in &outcomes {
            let r = &mut self.report;
            r.copied += o.copied;
            r.skipped += o.skipped;
            r.failed += o.failed;
            r.bytes += o.bytes;
            r.removed += u64::from(o.removed);
            job.progress(1, o.bytes);
            if let Some(e) = &o.error {
                job.error(format!("{}: {e}", id.short()));
            }
        }
        // The copies were the work; rest what the throttle owes for them.
        self.pacer.after_unit(job).map_err(|_| Stop::Cancelled)?;
        for (id, o) in &outcomes {
            self.results(job, *id, &o.statuses)?;
        }
        // The results waited on the client: not work the throttle owes rest for.
        self.pacer.idle();
        Ok(())
    }

    fn run_keys(&mut self, job: &JobHandle, ids: Vec<Id>) -> Result<(), NodeError> {
        job.set_totals(Some(ids.len() as u64), None);
        // Held keys wait here per backend until a batch is full.
        let mut pending: Vec<(Arc<Backend>, Vec<Id>)> = Vec::new();
        for id in ids {
            self.report.keys += 1;
            let local = self
                .node
                .routes
                .read()
                .owner(self.group, &id)
                .filter(|o| o.node == self.node.addr)
                .and_then(|o| self.node.backend(o.backend));
            let Some(b) = local else {
                // Not held here: as for a key the owner does not have.
                let statuses: Vec<(u32, Status)> = self
                    .targets
                    .iter()
                    .map(|g| (*g, Status::NOT_FOUND))
                    .collect();
                self.results(job, id, &statuses)?;
                job.progress(1, 0);
                continue;
            };
            let at = match pending.iter().position(|(p, _)| Arc::ptr_eq(p, &b)) {
                Some(at) => at,
                None => {
                    pending.push((b, Vec::new()));
                    pending.len() - 1
                }
            };
            pending[at].1.push(id);
            if pending[at].1.len() >= SEND_BATCH {
                let (b, batch) = pending.swap_remove(at);
                self.flush(job, &b, batch)?;
            }
        }
        for (b, batch) in pending {
            self.flush(job, &b, batch)?;
        }
        Ok(())
    }

    /// A batch's pause / cancel check, then the batch.
    fn flush(&mut self, job: &JobHandle, b: &Arc<Backend>, batch: Vec<Id>) -> Result<(), Stop> {
        if batch.is_empty() {
            return Ok(());
        }
        job.checkpoint().map_err(|_| Stop::Cancelled)?;
        self.pacer.idle();
        self.send_batch(job, b, batch)
    }

    fn run_backend(&mut self, job: &JobHandle, src: &SendBackend) -> Result<(), NodeError> {
        let b = self
            .node
            .backend(src.backend)
            .ok_or(NodeError::NoBackend(src.backend))?;
        let engine = b.engine()?;
        job.set_totals(Some(engine.stats().total.live_records), None);
        // The first frame names the job, so the client can cancel it before any match.
        self.out.send(&self.rt, &self.keepalive(job), job)?;
        let mut last_sent = Instant::now();
        let mut skipped_run = 0u32;
        let mut stop: Option<Stop> = None;
        let mut batch: Vec<Id> = Vec::with_capacity(SEND_BATCH);
        let pass = engine.iterate(&eblob::IterateOptions::default(), &mut |rec| {
            let l = rec.lookup;
            let id = Id(l.key.0);
            self.report.keys += 1;
            let step = if src.matches(&id, l.timestamp.sec) {
                skipped_run = 0;
                batch.push(id);
                if batch.len() >= SEND_BATCH {
                    let r = self.flush(job, &b, std::mem::take(&mut batch));
                    last_sent = Instant::now();
                    r
                } else {
                    Ok(())
                }
            } else {
                self.report.filtered += 1;
                job.progress(1, 0);
                skipped_run += 1;
                // Skipping reads the index: work the throttle counts too.
                let rested = self.pacer.after_unit(job).map_err(|_| Stop::Cancelled);
                let quiet = skipped_run >= DEFAULT_KEEPALIVE_SKIPPED
                    || last_sent.elapsed() >= KEEPALIVE_INTERVAL;
                if rested.is_ok() && quiet {
                    skipped_run = 0;
                    last_sent = Instant::now();
                    let sent = job
                        .checkpoint()
                        .map_err(|_| Stop::Cancelled)
                        .and_then(|()| self.out.send(&self.rt, &self.keepalive(job), job));
                    self.pacer.idle();
                    sent
                } else {
                    rested
                }
            };
            match step {
                Ok(()) => ControlFlow::Continue(()),
                Err(s) => {
                    stop = Some(s);
                    ControlFlow::Break(())
                }
            }
        });
        pass.map_err(|e| NodeError::Backend(BackendError::Engine(e)))?;
        if let Some(s) = stop {
            return Err(s.into());
        }
        // The pass's last keys, fewer than a batch.
        self.flush(job, &b, batch)?;
        Ok(())
    }
}

/// Copy key `id` of backend `b` to `targets` under its key lock, and in move mode remove it
/// here once every target acknowledged.
async fn send_one(
    node: &Arc<Node>,
    client: &Arc<Client>,
    b: &Arc<Backend>,
    id: Id,
    targets: &[u32],
    mode: SendMode,
) -> KeyOutcome {
    let _g = node.keylocks.lock((b.id(), id)).await;
    let b2 = b.clone();
    let l = match blocking(node, move || Ok(b2.lookup(&key(&id))?)).await {
        Ok(l) => l,
        Err(e) => {
            // Absent (or removed since the pass saw it): not a failure.
            let s = Status::from(&e);
            let failed = s != Status::NOT_FOUND;
            return KeyOutcome {
                statuses: targets.iter().map(|g| (*g, s)).collect(),
                copied: 0,
                skipped: 0,
                failed: if failed { targets.len() as u64 } else { 0 },
                bytes: 0,
                removed: false,
                error: failed.then(|| s.to_string()),
            };
        }
    };
    let to: Vec<Target> = targets.iter().map(|g| Target::Group(*g)).collect();
    let r = copy(node, client, b, &id, &l, &to, mode).await;
    let mut o = KeyOutcome {
        statuses: r
            .statuses
            .iter()
            .filter_map(|(t, s)| match t {
                Target::Group(g) => Some((*g, *s)),
                Target::Backend(_) => None,
            })
            .collect(),
        copied: r.copied,
        skipped: r.skipped,
        failed: r.failed,
        bytes: r.bytes,
        removed: false,
        error: (r.failed > 0).then(|| format!("{} targets failed", r.failed)),
    };
    // Every target holds this version or a newer one (OK or NEWER_EXISTS): safe to remove.
    if mode == SendMode::Move && r.failed == 0 {
        let b2 = b.clone();
        match blocking(node, move || Ok(b2.remove(&key(&id))?)).await {
            Ok(()) => o.removed = true,
            Err(e) => {
                o.failed += 1;
                o.error = Some(format!("copied, but the local remove failed: {e}"));
            }
        }
    }
    o
}
