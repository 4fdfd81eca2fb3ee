//! Recovery and server-send jobs: data moves node to node, from the node holding each record.
//!
//! - `dc` (across groups): for each record of this node's backends in the listed groups, the
//!   copies in the other listed groups are looked up; groups that lack the key or hold an
//!   older `(timestamp, size)` get this node's copy, written with CAS on timestamp so a newer
//!   copy is never overwritten. Run on every node of those groups (the starting node fans the
//!   job out), all groups converge on the newest copy.
//! - `merge` (within a group): records held by a backend that no longer owns them (after a ring
//!   change) are written to the owner (DIRECT, CAS on timestamp) and removed here unless
//!   `safe`.
//! - server-send: a list of keys, copied to target groups (default CAS / overwrite / move).
//!
//! Not a scheduler. Invariants: memory is bounded by one batch of `batch` record locations
//! (plus one record's data per concurrent copy) whatever the key count; `dry_run` changes
//! nothing; each job runs on its own thread and is visible in `/stats/workers` while it runs.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ellipsis_core::client::Client;
use ellipsis_core::protocol::cmd::io::IoPayload;
use ellipsis_core::protocol::cmd::send::SendMode;
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{io_flags, Command, IoAttr, Status};
use ellipsis_core::route::BackendAddr;
use ellipsis_core::stats::{JobKind, JobStatus};
use ellipsis_core::Id;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, CacheUse};
use crate::error::NodeError;
use crate::node::Node;
use crate::worker::{JobHandle, RateLimit};

/// Which recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryKind {
    /// Within a group: move keys to their owner.
    Merge,
    /// Across groups: newest copy everywhere.
    Dc,
}

/// A recovery request (admin HTTP `POST /admin/recovery`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryRequest {
    /// Merge or dc.
    pub kind: RecoveryKind,
    /// Report what would move; change nothing.
    pub dry_run: bool,
    /// Groups to reconcile (dc) or check (merge); empty = every group of the route table.
    pub groups: Vec<u32>,
    /// Only keys in `[start, end]` (hex ids).
    pub key_range: Option<(Id, Id)>,
    /// Only records with a timestamp at or after this (Unix seconds).
    pub since_unix_s: Option<u64>,
    /// Record locations processed per batch.
    pub batch: usize,
    /// Throughput limit in bytes per second (0 = none).
    pub bytes_per_s: u64,
    /// Merge: keep the local copy after moving it.
    pub safe: bool,
    /// Run only on this node (set by the fan-out; a client leaves it false).
    pub local_only: bool,
}

impl Default for RecoveryRequest {
    fn default() -> Self {
        RecoveryRequest {
            kind: RecoveryKind::Dc,
            dry_run: false,
            groups: Vec::new(),
            key_range: None,
            since_unix_s: None,
            batch: 256,
            bytes_per_s: 0,
            safe: false,
            local_only: false,
        }
    }
}

/// Counters of one recovery run (the job's result, as JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecoveryReport {
    /// Records looked at.
    pub iterated: u64,
    /// Records left out by the key range / since filters or already in place.
    pub filtered: u64,
    /// Copies written (or that would be, in a dry run).
    pub copied: u64,
    /// Copies not needed: the target held the same or a newer version.
    pub skipped: u64,
    /// Copies or removes that failed.
    pub failed: u64,
    /// Local copies removed (merge without `safe`).
    pub removed: u64,
    /// Bytes copied.
    pub bytes: u64,
}

/// Start a recovery job on this node (and, unless `local_only`, on every other node of the
/// cluster through their admin HTTP). Returns this node's job.
pub async fn start(node: &Arc<Node>, req: RecoveryRequest) -> Result<JobStatus, NodeError> {
    let client = node.client().await?;
    client
        .refresh_routes()
        .await
        .map_err(|e| NodeError::Unreachable(e.to_string()))?;
    let kind = match req.kind {
        RecoveryKind::Merge => JobKind::RecoveryMerge,
        RecoveryKind::Dc => JobKind::RecoveryDc,
    };
    let groups = if req.groups.is_empty() {
        client.routes().group_ids()
    } else {
        req.groups.clone()
    };
    let job = node.workers.register(
        kind,
        format!(
            "groups {}{}",
            groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            if req.dry_run { " (dry run)" } else { "" }
        ),
    );
    let status = node
        .workers
        .get(job.id())
        .ok_or_else(|| NodeError::Invalid("job vanished".into()))?;
    if !req.local_only {
        fan_out(node, &req).await;
    }
    let node2 = node.clone();
    let rt = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name(format!("recovery-{}", job.id()))
        .spawn(move || {
            job.start();
            let r = run(&node2, &client, &req, &groups, &job, &rt);
            let outcome = r.map(|rep| serde_json::to_string(&rep).unwrap_or_default());
            job.finish(outcome.map_err(|e| e.to_string()));
        })
        .map_err(NodeError::Io)?;
    Ok(status)
}

/// Ask every other node to run the same recovery on its own backends.
async fn fan_out(node: &Node, req: &RecoveryRequest) {
    let local = RecoveryRequest {
        local_only: true,
        ..req.clone()
    };
    let token = node.config.effective_admin_token().unwrap_or_default();
    let targets: Vec<_> = node
        .known
        .read()
        .iter()
        .filter(|(a, _)| **a != node.addr)
        .filter_map(|(_, http)| *http)
        .collect();
    let http = reqwest::Client::new();
    for t in targets {
        let r = http
            .post(format!("http://{t}/admin/recovery"))
            .bearer_auth(&token)
            .json(&local)
            .timeout(std::time::Duration::from_millis(
                node.config.wait_timeout_ms,
            ))
            .send()
            .await;
        if let Err(e) = r.and_then(|r| r.error_for_status()) {
            tracing::warn!(node = %t, error = %e, "recovery fan-out failed");
        }
    }
}

fn in_filters(req: &RecoveryRequest, l: &eblob::Lookup) -> bool {
    if let Some((a, b)) = &req.key_range {
        if l.key.0 < a.0 || l.key.0 > b.0 {
            return false;
        }
    }
    req.since_unix_s.is_none_or(|s| l.timestamp.sec >= s)
}

fn run(
    node: &Arc<Node>,
    client: &Arc<Client>,
    req: &RecoveryRequest,
    groups: &[u32],
    job: &JobHandle,
    rt: &tokio::runtime::Handle,
) -> Result<RecoveryReport, NodeError> {
    let mut rep = RecoveryReport::default();
    let mut limit = RateLimit::new(req.bytes_per_s);
    let batch_size = req.batch.clamp(1, 4096);
    let backends: Vec<Arc<Backend>> = node
        .backends
        .values()
        .filter(|b| groups.contains(&b.group()))
        .cloned()
        .collect();
    let total: u64 = backends
        .iter()
        .filter_map(|b| b.engine().ok())
        .map(|e| e.stats().total.live_records)
        .sum();
    job.set_totals(Some(total), None);
    for b in backends {
        let engine = b.engine()?;
        let mut batch: Vec<eblob::Lookup> = Vec::with_capacity(batch_size);
        let mut failure: Option<NodeError> = None;
        let mut flush = |batch: &mut Vec<eblob::Lookup>, rep: &mut RecoveryReport| -> bool {
            if job.checkpoint().is_err() {
                return false;
            }
            let items = std::mem::take(batch);
            let n = items.len() as u64;
            let moved = rt.block_on(process_batch(node, client, req, groups, &b, items, rep));
            job.progress(n, moved);
            let pause = limit.pause_for(moved, Instant::now());
            if !pause.is_zero() {
                // The rate limit itself: this thread only moves data.
                std::thread::sleep(pause);
            }
            true
        };
        let opts = eblob::IterateOptions::default();
        let r = engine.iterate(&opts, &mut |rec| {
            rep.iterated += 1;
            if !in_filters(req, &rec.lookup) {
                rep.filtered += 1;
                return std::ops::ControlFlow::Continue(());
            }
            batch.push(rec.lookup);
            if batch.len() >= batch_size && !flush(&mut batch, &mut rep) {
                failure = Some(NodeError::Invalid("cancelled".into()));
                return std::ops::ControlFlow::Break(());
            }
            std::ops::ControlFlow::Continue(())
        });
        if let Err(e) = r {
            return Err(crate::backend::BackendError::from(e).into());
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if !batch.is_empty() {
            flush(&mut batch, &mut rep);
        }
    }
    Ok(rep)
}

/// The record's version for newest-wins comparisons.
fn version(ts_sec: u64, ts_nsec: u32, size: u64) -> (u64, u32, u64) {
    (ts_sec, ts_nsec, size)
}

async fn process_batch(
    node: &Arc<Node>,
    client: &Arc<Client>,
    req: &RecoveryRequest,
    groups: &[u32],
    b: &Arc<Backend>,
    items: Vec<eblob::Lookup>,
    rep: &mut RecoveryReport,
) -> u64 {
    let mut moved = 0;
    for l in items {
        let id = Id(l.key.0);
        let local_v = version(l.timestamp.sec, l.timestamp.nsec, l.data_size_bytes);
        let targets: Vec<Target> = match req.kind {
            RecoveryKind::Dc => {
                let others: Vec<u32> = groups.iter().copied().filter(|g| *g != b.group()).collect();
                let mut t = Vec::new();
                for r in client.lookup_in(&others, &id).await {
                    match (r.status, r.info) {
                        (s, Some(info)) if s.is_ok() => {
                            let v =
                                version(info.attr.ts_sec, info.attr.ts_nsec, info.attr.total_size);
                            if v < local_v {
                                t.push(Target::Group(r.group));
                            } else {
                                rep.skipped += 1;
                            }
                        }
                        (Status::NOT_FOUND, _) => t.push(Target::Group(r.group)),
                        _ => rep.failed += 1,
                    }
                }
                t
            }
            RecoveryKind::Merge => {
                let owner = client.routes().owner(b.group(), &id);
                match owner {
                    Some(o) if o.node == node.addr && o.backend == b.id() => vec![],
                    Some(o) => vec![Target::Backend(o)],
                    None => {
                        rep.failed += 1;
                        vec![]
                    }
                }
            }
        };
        if targets.is_empty() {
            rep.filtered += u64::from(req.kind == RecoveryKind::Merge);
            continue;
        }
        if req.dry_run {
            rep.copied += targets.len() as u64;
            rep.bytes += l.data_size_bytes * targets.len() as u64;
            continue;
        }
        let r = copy(node, client, b, &id, &l, &targets, SendMode::Default).await;
        rep.copied += r.copied;
        rep.skipped += r.skipped;
        rep.failed += r.failed;
        rep.bytes += r.bytes;
        moved += r.bytes;
        if req.kind == RecoveryKind::Merge && !req.safe && r.failed == 0 {
            let (b2, k) = (b.clone(), l.key);
            match crate::cmd::blocking(node, move || Ok(b2.remove(&k)?)).await {
                Ok(()) => rep.removed += 1,
                Err(_) => rep.failed += 1,
            }
        }
    }
    moved
}

/// Where a copy goes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    /// The owner in this group (routed).
    Group(u32),
    /// This backend, directly.
    Backend(BackendAddr),
}

#[derive(Default)]
pub(crate) struct CopyResult {
    pub copied: u64,
    pub skipped: u64,
    pub failed: u64,
    pub bytes: u64,
    /// Per target, its status.
    pub statuses: Vec<(Target, Status)>,
}

/// Read the local record and write it to `targets`, keeping its timestamp and flags.
pub(crate) async fn copy(
    node: &Arc<Node>,
    client: &Arc<Client>,
    b: &Arc<Backend>,
    id: &Id,
    l: &eblob::Lookup,
    targets: &[Target],
    mode: SendMode,
) -> CopyResult {
    let mut out = CopyResult::default();
    let (b2, k) = (b.clone(), l.key);
    let data =
        match crate::cmd::blocking(node, move || Ok(b2.read(&k, 0, 0, CacheUse::default())?)).await
        {
            Ok(r) => r.data,
            Err(e) => {
                out.failed += targets.len() as u64;
                let s = Status::from(&e);
                out.statuses = targets.iter().map(|t| (*t, s)).collect();
                return out;
            }
        };
    let attr = IoAttr {
        ts_sec: l.timestamp.sec,
        ts_nsec: l.timestamp.nsec,
        user_flags: l.user_flags,
        io_flags: if mode == SendMode::Overwrite {
            0
        } else {
            io_flags::CAS_TIMESTAMP
        },
        size: data.len() as u64,
        ..IoAttr::default()
    };
    for t in targets {
        let status = match t {
            Target::Group(g) => {
                let r = client.write_to(&[*g], id, data.clone(), attr).await;
                r.first().map_or(Status::UNREACHABLE, |x| x.status)
            }
            Target::Backend(addr) => {
                let payload: Bytes = IoPayload {
                    attr,
                    data: data.clone(),
                }
                .encode()
                .into();
                match client
                    .direct(Command::Write, *addr, b.group(), id, payload)
                    .await
                {
                    Ok(_) => Status::OK,
                    Err(e) => e.status(),
                }
            }
        };
        match status {
            Status::OK => {
                out.copied += 1;
                out.bytes += data.len() as u64;
            }
            Status::NEWER_EXISTS => out.skipped += 1,
            _ => out.failed += 1,
        }
        out.statuses.push((*t, status));
    }
    out
}
