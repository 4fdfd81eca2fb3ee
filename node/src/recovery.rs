//! Recovery and server-send jobs: data moves node to node, from the node holding each record.
//!
//! - `dc` (across groups): for each record of this node's backends in the listed groups, the
//!   copies in the other listed groups are looked up; groups that lack the key or hold an
//!   older `(timestamp, size)` get this node's copy, written with CAS on that same version
//!   (`CAS_VERSION`) so a newer copy is never overwritten and an equal one is left alone.
//!   With `verify`, the lookups check whole records and a damaged copy counts as missing
//!   (the CAS lets an equal version replace a copy that fails verification). Run on every node of those groups (the starting node fans the
//!   job out), all groups converge on the newest copy.
//! - `merge` (within a group): records held by a backend that no longer owns them (after a ring
//!   change) are written to the owner (DIRECT, CAS on timestamp) and removed here unless
//!   `safe`.
//! - server-send (`cmd/send.rs`: a key list or a whole backend) copies each record with
//!   [`copy`] (default CAS / overwrite; move removes after every target acknowledged).
//! - A copy of a record that fits one request is sent from its data file (by the connection's
//!   writer, with `sendfile` or through its buffer: node config `sendfile`): the source's
//!   engine neither reads nor hashes it, and the target stores it only if it hashes to the
//!   record checksum the source names (`DATA_CHECKSUM`). A refusal (the record was rewritten
//!   in place during the send, or its bytes rotted on the source's disk) sends the record
//!   again read and verified, so damage at the source is found and reported there and never
//!   copied. Cached objects and NOCSUM records are read and sent from memory.
//! - Uncommitted records (prepared, never committed) are visited too, as in Elliptics: when
//!   every newest replica of a key is uncommitted and older than the prepare timeout (node
//!   config `prepare_timeout_s`, or the request's), the key is removed from every group (an
//!   upload that was abandoned); when a committed replica is the newest, it wins as usual (and
//!   overwrites older uncommitted ones); a fresh uncommitted record is left alone (an upload may
//!   still be in progress) and counted.
//!
//! Not a scheduler. Invariants: memory is bounded by one batch of `batch` record locations
//! plus the record parts of the copies in flight (at most `COPY_BYTES_IN_FLIGHT`, each part
//! at most `COPY_PART_BYTES_MAX`; a part sent from its file holds no buffer, but counts)
//! whatever the key count and object size; `dry_run` changes
//! nothing; each job runs on its own thread and is visible in `/stats/workers` while it runs.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ellipsis_core::client::{Body, Client};
use ellipsis_core::protocol::cmd::io::IoPayload;
use ellipsis_core::protocol::cmd::send::SendMode;
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{io_flags, Command, FileRegion, IoAttr, Status};
use ellipsis_core::route::BackendAddr;
use ellipsis_core::stats::{JobKind, JobStatus, RecoveryJob, RemoteJob};
use ellipsis_core::Id;
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, CacheUse, CopySource, ReadOutcome};
use crate::error::NodeError;
use crate::node::Node;
use crate::worker::{JobHandle, RateLimit, Throttle};

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
    /// Share of wall time the job may work (0.01..=1.0; 1.0 = no pauses): after each batch
    /// it rests in proportion, so foreground requests keep the disk and CPUs most of the time.
    /// Unset: the node's `work_share.recovery`.
    pub work_share: Option<f64>,
    /// Merge: keep the local copy after moving it.
    pub safe: bool,
    /// Run only on this node (set by the fan-out; a client leaves it false).
    pub local_only: bool,
    /// Uncommitted records older than this are abandoned uploads (default: the node's
    /// `prepare_timeout_s`, one hour unless configured).
    pub prepare_timeout_s: Option<u64>,
    /// dc: look the other groups' copies up with VERIFY, which reads each whole record and
    /// checks its checksums, so a copy whose bytes rotted (same version as the intact one,
    /// headers intact) is found and replaced. Off by default: it reads every replica of every
    /// key in full (the cost of a scrub: with two groups, each group's data is read once
    /// more), where a plain dc reads only the records it copies. Use it after damage is
    /// suspected (`/stats` counts corrupted reads) or as a periodic scrub.
    pub verify: bool,
}

/// The UNCOMMITTED bit of a LOOKUP reply's `record_flags` (see `cmd::lookup_info`).
const RECORD_UNCOMMITTED: u64 = 1 << 2;

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
            work_share: None,
            safe: false,
            local_only: false,
            prepare_timeout_s: None,
            verify: false,
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
    /// Keys removed because every newest replica was uncommitted past the prepare timeout
    /// (or that would be, in a dry run).
    pub uncommitted_removed: u64,
    /// Uncommitted records left alone: younger than the prepare timeout, or not the newest.
    pub uncommitted_skipped: u64,
}

impl RecoveryReport {
    /// Adds `o`'s counters to these.
    pub fn add(&mut self, o: &RecoveryReport) {
        self.iterated += o.iterated;
        self.filtered += o.filtered;
        self.copied += o.copied;
        self.skipped += o.skipped;
        self.failed += o.failed;
        self.removed += o.removed;
        self.bytes += o.bytes;
        self.uncommitted_removed += o.uncommitted_removed;
        self.uncommitted_skipped += o.uncommitted_skipped;
    }
}

/// Start a recovery job on this node (and, unless `local_only`, on every other node of the
/// cluster through their admin HTTP). Returns this node's job and the fanned-out ones, which
/// are also kept with the job so that [`cancel`] reaches them.
pub async fn start(node: &Arc<Node>, req: RecoveryRequest) -> Result<RecoveryJob, NodeError> {
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
    let fanned_out = if req.local_only {
        Vec::new()
    } else {
        let (started, refused) = fan_out(node, &req).await;
        // A node that did not take its share is this job's error: it would otherwise end
        // "done" with that node's backends never looked at.
        for why in refused {
            job.error(why);
        }
        started
    };
    for r in &fanned_out {
        job.add_remote(r.clone());
    }
    let node2 = node.clone();
    let rt = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name(format!("recovery-{}", job.id()))
        .spawn(move || {
            job.start();
            let mut rep = RecoveryReport::default();
            let r = run(&node2, &client, &req, &groups, &job, &rt, &mut rep);
            // A cancelled or failed job keeps the counters of what it did before it stopped.
            let mut report = serde_json::to_value(&rep).unwrap_or_default();
            let outcome = match r {
                Ok(()) => Ok(report.to_string()),
                Err(e) => {
                    job.error(e.to_string());
                    report["error"] = serde_json::Value::String(e.to_string());
                    Err(report.to_string())
                }
            };
            job.finish(outcome);
        })
        .map_err(NodeError::Io)?;
    Ok(RecoveryJob {
        job: status,
        fanned_out,
    })
}

/// Cancel job `id` of this node and every job it fanned out to other nodes (through their
/// admin HTTP). A local job that already ended is not an error while fanned-out ones remain:
/// they may still be copying. Returns the local job and the remote ones asked.
pub async fn cancel(node: &Arc<Node>, id: u64) -> Result<RecoveryJob, NodeError> {
    let remote = node.workers.remote_jobs(id);
    match node.workers.cancel(id) {
        Ok(()) => {}
        Err(crate::worker::ControlError::Finished { .. }) if !remote.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    let token = node.config.effective_admin_token().unwrap_or_default();
    let http = reqwest::Client::new();
    for r in &remote {
        let sent = http
            .post(format!(
                "http://{}/admin/jobs/{}/cancel",
                r.http_addr, r.job
            ))
            .bearer_auth(&token)
            .timeout(std::time::Duration::from_millis(
                node.config.wait_timeout_ms,
            ))
            .send()
            .await;
        match sent {
            // 409: it had already finished.
            Ok(resp) if resp.status().is_success() || resp.status().as_u16() == 409 => {}
            Ok(resp) => {
                tracing::warn!(node = %r.http_addr, job = r.job, status = %resp.status(), "recovery cancel fan-out refused")
            }
            Err(e) => {
                tracing::warn!(node = %r.http_addr, job = r.job, error = %e, "recovery cancel fan-out failed")
            }
        }
    }
    let job = node
        .workers
        .get(id)
        .ok_or(NodeError::Job(crate::worker::ControlError::NotFound(id)))?;
    Ok(RecoveryJob {
        job,
        fanned_out: remote,
    })
}

/// Ask every other node to run the same recovery on its own backends; returns the jobs they
/// started and why each node that started none did not.
async fn fan_out(node: &Node, req: &RecoveryRequest) -> (Vec<RemoteJob>, Vec<String>) {
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
    let mut started = Vec::new();
    let mut refused = Vec::new();
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
        let job = match r.and_then(|r| r.error_for_status()) {
            Ok(resp) => resp.json::<JobStatus>().await,
            Err(e) => Err(e),
        };
        match job {
            Ok(j) => started.push(RemoteJob {
                http_addr: t.to_string(),
                job: j.id,
            }),
            Err(e) => {
                tracing::warn!(node = %t, error = %e, "recovery fan-out failed");
                refused.push(format!("node {t} did not start its part: {e}"));
            }
        }
    }
    (started, refused)
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
    rep: &mut RecoveryReport,
) -> Result<(), NodeError> {
    let mut limit = RateLimit::new(req.bytes_per_s);
    let throttle = Throttle::new(req.work_share.unwrap_or(node.config.work_share.recovery));
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
            let started = Instant::now();
            let moved = rt.block_on(process_batch(
                node, client, req, groups, &b, items, rep, job,
            ));
            job.progress(n, moved);
            let pause = limit
                .pause_for(moved, Instant::now())
                .max(throttle.pause_after(started.elapsed()));
            // The rate limit and throttle themselves; a cancel ends the rest at once.
            pause.is_zero() || job.rest(pause).is_ok()
        };
        // Uncommitted records too: abandoned uploads are recovery's to clean up.
        let opts = eblob::IterateOptions {
            include_uncommitted: true,
            ..eblob::IterateOptions::default()
        };
        let r = engine.iterate(&opts, &mut |rec| {
            rep.iterated += 1;
            if !in_filters(req, &rec.lookup) {
                rep.filtered += 1;
                // Progress is through the backend's records, filtered ones included.
                job.progress(1, 0);
                return std::ops::ControlFlow::Continue(());
            }
            batch.push(rec.lookup);
            if batch.len() >= batch_size && !flush(&mut batch, rep) {
                failure = Some(NodeError::Cancelled("recovery cancelled".into()));
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
        if !batch.is_empty() && !flush(&mut batch, rep) {
            return Err(NodeError::Cancelled("recovery cancelled".into()));
        }
    }
    Ok(())
}

/// The record's version for newest-wins comparisons.
fn version(ts_sec: u64, ts_nsec: u32, size: u64) -> (u64, u32, u64) {
    (ts_sec, ts_nsec, size)
}

fn now_unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One replica of a key as seen by recovery.
#[derive(Clone, Copy, Debug)]
struct Replica {
    group: u32,
    version: (u64, u32, u64),
    uncommitted: bool,
}

/// What to do with a key whose newest replicas are all uncommitted.
#[derive(Debug, PartialEq, Eq)]
enum Uncommitted {
    /// A committed replica is the newest (or shares the newest version): the usual rules.
    NotNewest,
    /// Abandoned upload: remove every replica.
    Stale,
    /// May still be committed: leave it.
    Fresh,
}

/// Elliptics' rule: only when every newest replica is uncommitted does the key's uncommitted
/// state decide, by the age of the newest one.
fn classify(replicas: &[Replica], now_s: u64, prepare_timeout_s: u64) -> Uncommitted {
    let Some(newest) = replicas.iter().map(|r| r.version).max() else {
        return Uncommitted::NotNewest;
    };
    let all_uncommitted = replicas
        .iter()
        .filter(|r| r.version == newest)
        .all(|r| r.uncommitted);
    if !all_uncommitted {
        Uncommitted::NotNewest
    } else if newest.0.saturating_add(prepare_timeout_s) <= now_s {
        Uncommitted::Stale
    } else {
        Uncommitted::Fresh
    }
}

/// Keys of one batch copied at once, at most. Many in flight keep the disk, both nodes' CPUs
/// and the connection busy at the same time instead of one round trip after another, and give
/// the target's write queue batches to drain: on loopback, 1 MiB records copied at 1575 MB/s
/// with 128 in flight against 1403 MB/s with 16 (means of 4 alternating runs of
/// `recovery-bench --only-recovery`, node/BENCHMARKS.md, 2026-12-04).
const COPIES_IN_FLIGHT: usize = 128;

/// Record bytes of one job in flight at once, at most: each copy holds at most one part of its
/// record (see [`copy_part_bytes`]) and takes room for it here first, so a job's memory stays
/// within this bound whatever the record sizes.
const COPY_BYTES_IN_FLIGHT: u64 = 128 << 20;

#[allow(clippy::too_many_arguments)]
async fn process_batch(
    node: &Arc<Node>,
    client: &Arc<Client>,
    req: &RecoveryRequest,
    groups: &[u32],
    b: &Arc<Backend>,
    items: Vec<eblob::Lookup>,
    rep: &mut RecoveryReport,
    job: &JobHandle,
) -> u64 {
    use futures::StreamExt;
    let prepare_timeout_s = req
        .prepare_timeout_s
        .unwrap_or(node.config.prepare_timeout_s);
    let now_s = now_unix_s();
    let part_bytes = copy_part_bytes(node.config.max_frame_bytes);
    // In KiB, so a bound of any size fits the semaphore's u32 requests.
    let room_kib = tokio::sync::Semaphore::new((COPY_BYTES_IN_FLIGHT >> 10) as usize);
    let room_kib = &room_kib;
    let mut results = futures::stream::iter(items)
        .map(|l| async move {
            let key = l.key;
            let kib = l.data_size_bytes.min(part_bytes).div_ceil(1024).max(1);
            let kib = kib.min(COPY_BYTES_IN_FLIGHT >> 10) as u32;
            // Never closed, so the acquire cannot fail; the room goes back with the permit.
            let _room = room_kib.acquire_many(kib).await.ok();
            let (r, m) =
                process_key(node, client, req, groups, b, l, now_s, prepare_timeout_s).await;
            (key, r, m)
        })
        .buffer_unordered(COPIES_IN_FLIGHT);
    let mut moved = 0;
    while let Some((key, r, m)) = results.next().await {
        if r.failed > 0 {
            // Counted in the job's errors too, naming the key (its steps logged the causes).
            job.error(format!(
                "key {}: {} step(s) failed",
                Id(key.0).short(),
                r.failed
            ));
        }
        rep.add(&r);
        moved += m;
    }
    moved
}

/// Recovery of one key; returns its counters and the bytes it moved.
#[allow(clippy::too_many_arguments)]
async fn process_key(
    node: &Arc<Node>,
    client: &Arc<Client>,
    req: &RecoveryRequest,
    groups: &[u32],
    b: &Arc<Backend>,
    l: eblob::Lookup,
    now_s: u64,
    prepare_timeout_s: u64,
) -> (RecoveryReport, u64) {
    let mut rep = RecoveryReport::default();
    let mut moved = 0;
    let id = Id(l.key.0);
    let local_v = version(l.timestamp.sec, l.timestamp.nsec, l.data_size_bytes);
    let local = Replica {
        group: b.group(),
        version: local_v,
        uncommitted: l.uncommitted,
    };
    let targets: Vec<Target> = match req.kind {
        RecoveryKind::Dc => {
            let others: Vec<u32> = groups.iter().copied().filter(|g| *g != b.group()).collect();
            let mut replicas = vec![local];
            let mut missing = Vec::new();
            let mut lookup_failed = false;
            let found = if req.verify {
                client.lookup_verified_in(&others, &id).await
            } else {
                client.lookup_in(&others, &id).await
            };
            for r in found {
                match (r.status, r.info) {
                    (s, Some(info)) if s.is_ok() => replicas.push(Replica {
                        group: r.group,
                        version: version(info.attr.ts_sec, info.attr.ts_nsec, info.attr.total_size),
                        uncommitted: info.attr.record_flags & RECORD_UNCOMMITTED != 0,
                    }),
                    // A damaged copy (found by a verifying lookup) is as good as none: the
                    // copy replaces it (CAS on version lets an equal version replace a copy
                    // that fails verification).
                    (Status::NOT_FOUND | Status::CORRUPTED, _) => missing.push(r.group),
                    _ => {
                        rep.failed += 1;
                        lookup_failed = true;
                    }
                }
            }
            match classify(&replicas, now_s, prepare_timeout_s) {
                Uncommitted::Stale if !lookup_failed => {
                    // Every holder reaches the same verdict; removing twice is harmless.
                    rep.uncommitted_removed += 1;
                    if !req.dry_run {
                        remove_everywhere(node, client, b, &l.key, &replicas, &mut rep).await;
                    }
                    return (rep, moved);
                }
                Uncommitted::Stale | Uncommitted::Fresh => {
                    rep.uncommitted_skipped += 1;
                    return (rep, moved);
                }
                Uncommitted::NotNewest => {}
            }
            if local.uncommitted {
                // Not a source: a committed newer replica elsewhere reaches this group
                // from its own holder.
                rep.uncommitted_skipped += 1;
                return (rep, moved);
            }
            let mut t: Vec<Target> = missing.into_iter().map(Target::Group).collect();
            for r in &replicas[1..] {
                // An unfinished upload or copy of this very version is overwritten too.
                if r.version < local_v || (r.uncommitted && r.version == local_v) {
                    t.push(Target::Group(r.group));
                } else {
                    rep.skipped += 1;
                }
            }
            t
        }
        RecoveryKind::Merge => {
            let owner = client.routes().owner(b.group(), &id);
            match owner {
                Some(o) if o.node == node.addr && o.backend == b.id() => vec![],
                Some(_) if l.uncommitted => {
                    // An uncommitted record cannot be moved (it cannot be read); an
                    // abandoned one is dropped, a fresh one waits for its commit.
                    let replicas = [local];
                    if classify(&replicas, now_s, prepare_timeout_s) == Uncommitted::Stale
                        && !req.safe
                    {
                        rep.uncommitted_removed += 1;
                        if !req.dry_run {
                            let (b2, k) = (b.clone(), l.key);
                            if crate::cmd::blocking(node, move || Ok(b2.remove(&k)?))
                                .await
                                .is_err()
                            {
                                rep.failed += 1;
                            }
                        }
                    } else {
                        rep.uncommitted_skipped += 1;
                    }
                    return (rep, moved);
                }
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
        return (rep, moved);
    }
    if req.dry_run {
        rep.copied += targets.len() as u64;
        rep.bytes += l.data_size_bytes * targets.len() as u64;
        return (rep, moved);
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
    (rep, moved)
}

/// Remove an abandoned upload from every other group holding a replica, then from this
/// backend. NOT_FOUND counts as done: another holder may have removed it first.
///
/// Remote replicas go first: while this node's copy exists, a concurrent dc on another holder
/// still sees the uncommitted newest replica here and reaches the same verdict, instead of
/// finding it missing and copying an older committed version back.
async fn remove_everywhere(
    node: &Arc<Node>,
    client: &Arc<Client>,
    b: &Arc<Backend>,
    key: &eblob::Key,
    replicas: &[Replica],
    rep: &mut RecoveryReport,
) {
    let others: Vec<u32> = replicas
        .iter()
        .map(|r| r.group)
        .filter(|g| *g != b.group())
        .collect();
    let payload: Bytes = IoPayload::default().encode().into();
    for r in client
        .to_groups(Command::Del, &others, &Id(key.0), payload)
        .await
    {
        match r.status {
            Status::OK => rep.removed += 1,
            Status::NOT_FOUND => {}
            _ => rep.failed += 1,
        }
    }
    let (b2, k) = (b.clone(), *key);
    match crate::cmd::blocking(node, move || Ok(b2.remove(&k)?)).await {
        Ok(()) => rep.removed += 1,
        Err(e) if Status::from(&e) == Status::NOT_FOUND => {}
        Err(_) => rep.failed += 1,
    }
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

/// Largest part of a record one copy request carries (the rest follow as plain writes): a
/// copy's memory is one part, and a record larger than the frame limit still moves.
const COPY_PART_BYTES_MAX: u64 = 4 << 20;

/// Bytes of a record per copy request for this node: at most [`COPY_PART_BYTES_MAX`], and
/// small enough that header, IO attributes and part fit a frame of `max_frame_bytes`.
pub(crate) fn copy_part_bytes(max_frame_bytes: u64) -> u64 {
    let overhead =
        (ellipsis_core::protocol::HEADER_SIZE + ellipsis_core::protocol::IO_ATTR_SIZE) as u64;
    max_frame_bytes
        .saturating_sub(overhead)
        .clamp(1, COPY_PART_BYTES_MAX)
}

/// Why a source record cannot be read for a copy, as the status every target gets.
fn read_failure(e: &NodeError, targets: &[Target]) -> CopyResult {
    let s = Status::from(e);
    let mut out = CopyResult::default();
    // Removed since the pass saw it (a concurrent recovery on another node removed an
    // abandoned upload, or a client deleted it): nothing left to copy.
    if s == Status::NOT_FOUND {
        out.skipped += targets.len() as u64;
    } else {
        out.failed += targets.len() as u64;
    }
    out.statuses = targets.iter().map(|t| (*t, s)).collect();
    out
}

impl CopyResult {
    /// The result of a copy of `bytes` bytes that ended with `statuses` (NEWER_EXISTS is a
    /// skip, not a failure).
    fn tally(statuses: Vec<(Target, Status)>, bytes: u64) -> CopyResult {
        let mut out = CopyResult::default();
        for (_, s) in &statuses {
            match *s {
                Status::OK => {
                    out.copied += 1;
                    out.bytes += bytes;
                }
                Status::NEWER_EXISTS => out.skipped += 1,
                _ => out.failed += 1,
            }
        }
        out.statuses = statuses;
        out
    }

    fn merge(mut self, o: CopyResult) -> CopyResult {
        self.copied += o.copied;
        self.skipped += o.skipped;
        self.failed += o.failed;
        self.bytes += o.bytes;
        self.statuses.extend(o.statuses);
        self
    }
}

/// Send one write (a whole record or one part of it) to `t`.
async fn write_part(client: &Arc<Client>, group: u32, id: &Id, t: Target, body: Body) -> Status {
    match t {
        Target::Group(g) => {
            let r = client.to_groups(Command::Write, &[g], id, body).await;
            r.first().map_or(Status::UNREACHABLE, |x| x.status)
        }
        Target::Backend(addr) => match client.direct(Command::Write, addr, group, id, body).await {
            Ok(_) => Status::OK,
            Err(e) => e.status(),
        },
    }
}

/// Send `body` to each of `targets` in turn; per target, its status.
async fn write_each(
    client: &Arc<Client>,
    group: u32,
    id: &Id,
    targets: &[Target],
    body: &Body,
) -> Vec<(Target, Status)> {
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        out.push((*t, write_part(client, group, id, *t, body.clone()).await));
    }
    out
}

/// Read the local record and write it to `targets`, keeping its timestamp and user flags as
/// read together with the data (not as seen when the key was listed: a client write in
/// between must not be sent under the old timestamp).
///
/// Default and move mode write with CAS on the version `(timestamp, size)`, the order dc
/// ranks replicas by, so a newer copy is never overwritten and an equal one only when it is
/// damaged; overwrite mode writes unconditionally. A record larger than one part
/// ([`copy_part_bytes`]) goes as PREPARE (first part, CAS) / PLAIN_WRITE / COMMIT (last part,
/// sealed only if the target's checksum equals the source's), one part in memory at a time;
/// if the record changes while it is copied the copy stops (AGAIN) and the next pass sends
/// the new version; an interrupted copy leaves an uncommitted record, which dc overwrites or
/// (past the prepare timeout, if it is all that is left) removes.
pub(crate) async fn copy(
    node: &Arc<Node>,
    client: &Arc<Client>,
    b: &Arc<Backend>,
    id: &Id,
    l: &eblob::Lookup,
    targets: &[Target],
    mode: SendMode,
) -> CopyResult {
    let part = copy_part_bytes(node.config.max_frame_bytes);
    let cas = if mode == SendMode::Overwrite {
        0
    } else {
        io_flags::CAS_VERSION
    };
    if l.data_size_bytes <= part {
        return copy_whole(node, client, b, id, l, targets, cas).await;
    }
    copy_in_parts(node, client, b, id, l, targets, cas, part).await
}

/// A record that fits one request. From the data file it goes as a file region, unread, and
/// each target checks it against the record checksum (`DATA_CHECKSUM`); a target that
/// refuses it (CORRUPTED: the record was rewritten in place while it was sent, or the
/// source's copy is damaged) gets it again read and verified here, so a damaged source is
/// reported as the read's failure and never sent.
async fn copy_whole(
    node: &Arc<Node>,
    client: &Arc<Client>,
    b: &Arc<Backend>,
    id: &Id,
    l: &eblob::Lookup,
    targets: &[Target],
    cas: u64,
) -> CopyResult {
    let (b2, k) = (b.clone(), l.key);
    let source = crate::cmd::blocking(node, move || Ok(b2.copy_source(&k)?)).await;
    let (refused, done) = match source {
        Ok(CopySource::Read(r)) => return copy_read(client, b, id, r, targets, cas).await,
        Err(e) => return read_failure(&e, targets),
        Ok(CopySource::Region(region)) => {
            let attr = IoAttr {
                ts_sec: region.lookup.timestamp.sec,
                ts_nsec: region.lookup.timestamp.nsec,
                user_flags: region.lookup.user_flags,
                io_flags: cas | io_flags::DATA_CHECKSUM,
                checksum: region.lookup.checksum,
                ..IoAttr::default()
            };
            let body = Body::io_file(
                attr,
                FileRegion {
                    file: region.file,
                    offset_bytes: region.offset_bytes,
                    size_bytes: region.size_bytes,
                },
            );
            let statuses = write_each(client, b.group(), id, targets, &body).await;
            let (refused, done): (Vec<_>, Vec<_>) = statuses
                .into_iter()
                .partition(|(_, s)| *s == Status::CORRUPTED);
            (refused, CopyResult::tally(done, region.size_bytes))
        }
    };
    if refused.is_empty() {
        return done;
    }
    let refused: Vec<Target> = refused.into_iter().map(|(t, _)| t).collect();
    let (b2, k) = (b.clone(), l.key);
    let again =
        match crate::cmd::blocking(node, move || Ok(b2.read(&k, 0, 0, CacheUse::default())?)).await
        {
            Ok(r) => copy_read(client, b, id, r, &refused, cas).await,
            Err(e) => read_failure(&e, &refused),
        };
    done.merge(again)
}

/// Write the record `r` (read into memory) to `targets`.
async fn copy_read(
    client: &Arc<Client>,
    b: &Backend,
    id: &Id,
    r: ReadOutcome,
    targets: &[Target],
    cas: u64,
) -> CopyResult {
    let attr = IoAttr {
        ts_sec: r.timestamp.sec,
        ts_nsec: r.timestamp.nsec,
        user_flags: r.user_flags,
        io_flags: cas,
        ..IoAttr::default()
    };
    let size = r.data.len() as u64;
    let body = Body::io(attr, r.data);
    let statuses = write_each(client, b.group(), id, targets, &body).await;
    CopyResult::tally(statuses, size)
}

/// One part of the source record, with the lookup it was read under.
fn read_part(
    b: &Backend,
    key: &eblob::Key,
    offset: u64,
    size: u64,
) -> Result<(eblob::Lookup, Bytes), NodeError> {
    let engine = b.engine()?;
    let (l, data) = engine
        .read_with_lookup(key, offset, size)
        .map_err(crate::backend::BackendError::from)?;
    Ok((l, Bytes::from(data)))
}

#[allow(clippy::too_many_arguments)]
async fn copy_in_parts(
    node: &Arc<Node>,
    client: &Arc<Client>,
    b: &Arc<Backend>,
    id: &Id,
    l: &eblob::Lookup,
    targets: &[Target],
    cas: u64,
    part: u64,
) -> CopyResult {
    let key = l.key;
    // A dirty cached copy reaches the engine first, so the parts are the newest version.
    let b2 = b.clone();
    if let Err(e) = crate::cmd::blocking(node, move || Ok(b2.lookup(&key)?)).await {
        return read_failure(&e, targets);
    }
    // Per target: its status so far (OK while it is still being written).
    let mut state: Vec<(Target, Status)> = targets.iter().map(|t| (*t, Status::OK)).collect();
    let mut first: Option<eblob::Lookup> = None;
    let mut offset = 0;
    loop {
        let size_now = first
            .as_ref()
            .map_or(l.data_size_bytes, |f| f.data_size_bytes);
        let want = part.min(size_now.saturating_sub(offset));
        let (b2, k) = (b.clone(), key);
        let read = crate::cmd::blocking(node, move || read_part(&b2, &k, offset, want)).await;
        let (this, data) = match read {
            Ok(x) => x,
            Err(e) => {
                // Shrunk or removed since it was listed: AGAIN or the read's own failure.
                let s = match Status::from(&e) {
                    Status::INVALID => Status::AGAIN,
                    s => s,
                };
                for st in state.iter_mut().filter(|s| s.1 == Status::OK) {
                    st.1 = s;
                }
                break;
            }
        };
        let f = first.get_or_insert_with(|| this.clone());
        let same = (f.timestamp, f.data_size_bytes, f.checksum, f.user_flags)
            == (
                this.timestamp,
                this.data_size_bytes,
                this.checksum,
                this.user_flags,
            );
        if !same {
            // Rewritten while being copied: the next pass copies the new version.
            for st in state.iter_mut().filter(|s| s.1 == Status::OK) {
                st.1 = Status::AGAIN;
            }
            break;
        }
        let size = f.data_size_bytes;
        let end = offset + data.len() as u64;
        let last = end >= size;
        let mode = match (offset == 0, last) {
            (true, _) => io_flags::PREPARE | cas,
            (false, false) => io_flags::PLAIN_WRITE,
            (false, true) => io_flags::COMMIT,
        };
        let seal = if last && !f.nocsum {
            io_flags::CAS_CHECKSUM
        } else {
            0
        };
        // PREPARE may carry COMMIT for a record that fits one part: not the case here.
        let attr = IoAttr {
            offset,
            ts_sec: f.timestamp.sec,
            ts_nsec: f.timestamp.nsec,
            user_flags: f.user_flags,
            io_flags: mode | seal,
            total_size: size,
            checksum: f.checksum,
            ..IoAttr::default()
        };
        let body = Body::io(attr, data.clone());
        let writes = state
            .iter()
            .filter(|(_, s)| *s == Status::OK)
            .map(|(t, _)| {
                let body = body.clone();
                async move { (*t, write_part(client, b.group(), id, *t, body).await) }
            });
        let done = futures::future::join_all(writes).await;
        for (t, s) in done {
            if let Some(st) = state.iter_mut().find(|x| same_target(&x.0, &t)) {
                st.1 = s;
            }
        }
        offset = end;
        if last || state.iter().all(|(_, s)| *s != Status::OK) || data.is_empty() {
            break;
        }
    }
    let size = first.as_ref().map_or(0, |f| f.data_size_bytes);
    CopyResult::tally(state, size)
}

fn same_target(a: &Target, b: &Target) -> bool {
    match (a, b) {
        (Target::Group(x), Target::Group(y)) => x == y,
        (Target::Backend(x), Target::Backend(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(ts: u64, uncommitted: bool) -> Replica {
        Replica {
            group: 1,
            version: version(ts, 0, 10),
            uncommitted,
        }
    }

    #[test]
    fn only_all_uncommitted_newest_replicas_are_judged_by_age() {
        let (now, timeout) = (10_000, 3600);
        // Every newest replica uncommitted and old: abandoned.
        assert_eq!(
            classify(&[r(100, true), r(100, true)], now, timeout),
            Uncommitted::Stale
        );
        // An older committed replica does not save a newer abandoned upload.
        assert_eq!(
            classify(&[r(300, true), r(200, false)], now, timeout),
            Uncommitted::Stale
        );
        // Young: may still be committed.
        assert_eq!(
            classify(&[r(now - 10, true), r(200, false)], now, timeout),
            Uncommitted::Fresh
        );
        // A committed replica is the newest, or shares the newest version: the usual rules.
        assert_eq!(
            classify(&[r(200, false), r(100, true)], now, timeout),
            Uncommitted::NotNewest
        );
        assert_eq!(
            classify(&[r(100, false), r(100, true)], now, timeout),
            Uncommitted::NotNewest
        );
        // Exactly at the timeout counts as stale.
        assert_eq!(
            classify(&[r(now - timeout, true)], now, timeout),
            Uncommitted::Stale
        );
        assert_eq!(classify(&[], now, timeout), Uncommitted::NotNewest);
    }
}
