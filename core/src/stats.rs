//! The JSON schema of a node's monitoring HTTP (`GET /stats`, `/stats/{category}`), shared by
//! the node that fills it and the console that parses it.
//!
//! Plain serde data, no logic beyond small derived figures. Invariant: every struct
//! deserialises with defaults for missing fields and ignores unknown ones, so a console and
//! nodes of neighbouring versions keep understanding each other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::route::RouteTable;

/// Everything `GET /stats` returns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeStats {
    /// Who answers.
    pub node: NodeInfo,
    /// Per-command counters and latencies.
    pub commands: CommandStats,
    /// Queues and peer connections.
    pub io: IoStats,
    /// One entry per backend cache (plus the node-wide one, backend `None`).
    pub cache: Vec<CacheEntryStats>,
    /// Storage backends.
    pub backends: Vec<BackendStats>,
    /// The node process and host.
    pub procfs: ProcStats,
    /// Background jobs, running and recent.
    pub workers: Vec<JobStatus>,
    /// The node's route table, with peers' HTTP addresses.
    pub routes: RoutesStats,
}

/// What data-sort could do on one node, summed over its backends: the figures a data-sort
/// planner shows per node. Served as `GET /stats/defrag`; [`DefragSummary::of`] derives it
/// from the backends of a [`NodeStats`] (it is not a field there, so documents and literals
/// of earlier versions stay valid).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DefragSummary {
    /// Backends with at least one base that wants defrag.
    pub backends_want_defrag: u64,
    /// Bases that want defrag (removed bytes reached `defrag_percentage`).
    pub want_defrag_bases: u64,
    /// Bytes a compact data-sort would free: the removed bytes of the bases that want
    /// defrag (not of every base: bases below the threshold are left alone).
    pub defrag_reclaimable_bytes: u64,
    /// Removed bytes of every base (what a full data-sort would free).
    pub removed_bytes: u64,
    /// Data-sorts running now.
    pub sorts_running: u64,
}

impl DefragSummary {
    /// Sums the per-backend figures.
    pub fn of(backends: &[BackendStats]) -> DefragSummary {
        let mut d = DefragSummary::default();
        for b in backends {
            d.backends_want_defrag += u64::from(b.eblob.want_defrag_bases > 0);
            d.want_defrag_bases += b.eblob.want_defrag_bases;
            d.defrag_reclaimable_bytes += b.eblob.defrag_reclaimable_bytes;
            d.removed_bytes += b.eblob.removed_bytes;
            d.sorts_running += u64::from(!b.defrag.state.is_empty() && b.defrag.state != "idle");
        }
        d
    }
}

/// The answering node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeInfo {
    /// Protocol address.
    pub addr: String,
    /// HTTP address.
    pub http_addr: String,
    /// Software version.
    pub version: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Groups it serves.
    pub groups: Vec<u32>,
    /// Unix seconds when the stats were taken.
    pub now_unix_s: u64,
}

/// Counters and latency percentiles of one command.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommandStat {
    /// Requests answered OK.
    pub successes: u64,
    /// Requests answered with an error (NOT_FOUND is not one: see `not_found`).
    pub failures: u64,
    /// Requests answered NOT_FOUND: an answer about the key (never written, removed), not a
    /// fault of the node, so alerts on `failures` stay quiet on a healthy cluster.
    pub not_found: u64,
    /// Payload bytes received and sent.
    pub bytes: u64,
    /// Answered from the cache.
    pub cache_hits: u64,
    /// Answered from disk.
    pub disk: u64,
    /// Forwarded to the owner.
    pub forwarded: u64,
    /// Latency percentiles (microseconds).
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest.
    pub max_us: u64,
    /// Requests whose latency the percentiles describe (every answered request).
    pub latency_count: u64,
    /// Sum of their latencies (microseconds): with `latency_count`, the mean, and what a
    /// Prometheus summary needs for `rate(_sum) / rate(_count)`.
    pub latency_sum_us: u64,
}

/// Per-command statistics, keyed by command name (`READ`, `WRITE`, ...).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommandStats {
    /// By command.
    pub commands: BTreeMap<String, CommandStat>,
}

/// A peer connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerStats {
    /// Peer protocol address.
    pub addr: String,
    /// `connected`, `connecting`, `down`.
    pub state: String,
    /// Frames waiting to be sent.
    pub send_queue: u64,
    /// Its bound.
    pub send_queue_limit: u64,
    /// Requests waiting for the peer's reply.
    pub in_flight: u64,
}

/// Queues and connections.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IoStats {
    /// Engine calls admitted to the blocking pool: running plus waiting for a thread.
    pub blocking_queue: u64,
    /// Its bound: threads plus the waiting-queue limit.
    pub blocking_queue_limit: u64,
    /// Engine calls running on a blocking thread now (part of `blocking_queue`).
    pub blocking_active: u64,
    /// Blocking threads: how many engine calls run at once.
    pub blocking_threads: u64,
    /// Engine calls waiting for a thread (part of `blocking_queue`).
    pub blocking_waiting: u64,
    /// Bound of the waiting calls; one more is refused with AGAIN.
    pub blocking_waiting_limit: u64,
    /// Engine calls refused since start because the pool was full.
    pub blocking_refused: u64,
    /// Requests being handled (network side).
    pub nonblocking_queue: u64,
    /// Its bound.
    pub nonblocking_queue_limit: u64,
    /// Requests answered AGAIN at once since start because `nonblocking_queue` was at its
    /// bound (or the connection had too many requests in flight).
    pub nonblocking_refused: u64,
    /// Memory held for large frames' payloads, arriving or with their requests running.
    pub receive_buffer_bytes: u64,
    /// Its bound (node config `receive_buffer_bytes`).
    pub receive_buffer_bytes_limit: u64,
    /// Large frames that waited for `receive_buffer_bytes` (their connection stopped reading
    /// meanwhile), since start.
    pub receive_buffer_waits: u64,
    /// Client connections open.
    pub client_connections: u64,
    /// NOTIFY subscriptions held here (keys this node owns).
    pub notify_watchers: u64,
    /// Their bound.
    pub notify_watchers_limit: u64,
    /// NOTIFY subscriptions relayed to the keys' owners (one owner connection each).
    pub notify_relays: u64,
    /// Their bound.
    pub notify_relays_limit: u64,
    /// Outgoing peer connections.
    pub peers: Vec<PeerStats>,
}

/// Cache counters (one cache).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheStats {
    /// Bytes held, including per-object overhead and unwritten evicted objects.
    pub size_bytes: u64,
    /// Configured capacity.
    pub max_size_bytes: u64,
    /// Objects in the segments.
    pub objects: u64,
    /// Bytes per segment, lowest (probation) first.
    pub segment_sizes_bytes: Vec<u64>,
    /// `get` calls that found the object.
    pub hits: u64,
    /// `get` calls that did not.
    pub misses: u64,
    /// Objects pushed out of segment 0 to make room.
    pub evictions: u64,
    /// Objects dropped because their lifetime ended.
    pub expirations: u64,
    /// Write-backs confirmed by the caller.
    pub writebacks: u64,
    /// Write-backs the caller reported as failed (the object stays dirty and is retried).
    pub writeback_failures: u64,
    /// Inserts refused (the caller wrote through).
    pub refused: u64,
    /// Dirty objects not yet confirmed written.
    pub dirty_objects: u64,
}

impl CacheStats {
    /// Hits / (hits + misses), 0 when unused.
    pub fn hit_rate(&self) -> f64 {
        let all = self.hits + self.misses;
        if all == 0 {
            0.0
        } else {
            self.hits as f64 / all as f64
        }
    }
}

/// A cache and whose it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheEntryStats {
    /// Backend id, `None` for the node-wide cache.
    pub backend: Option<u32>,
    /// Its counters.
    pub stats: CacheStats,
}

/// One eblob base.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BaseSummary {
    /// Base number.
    pub index: u32,
    /// Records (removed included).
    pub records: u64,
    /// Removed records.
    pub removed: u64,
    /// Removed bytes.
    pub removed_bytes: u64,
    /// Data file bytes.
    pub size_bytes: u64,
    /// Sorted by data-sort.
    pub sorted: bool,
    /// Wants defrag.
    pub want_defrag: bool,
}

/// The engine's figures for one backend.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EblobSummary {
    /// Records (removed included).
    pub records: u64,
    /// Live records.
    pub live_records: u64,
    /// Removed records.
    pub removed_records: u64,
    /// Removed bytes (what a data-sort frees).
    pub removed_bytes: u64,
    /// Damaged records found.
    pub corrupted: u64,
    /// Bases whose write-order index was found damaged when the engine last opened and was
    /// rebuilt from the data file (no record is lost by that; the damage is reported here).
    pub indexes_rebuilt: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// RAM of hash indexes.
    pub ram_index_bytes: u64,
    /// RAM of bloom filters.
    pub ram_bloom_bytes: u64,
    /// RAM of index blocks.
    pub ram_index_blocks_bytes: u64,
    /// Successful reads / writes since open.
    pub reads: u64,
    /// Writes since open.
    pub writes: u64,
    /// Removes since open.
    pub removes: u64,
    /// Lookups since open.
    pub lookups: u64,
    /// Engine requests answered "not found" since open.
    pub not_found: u64,
    /// Reads that hit a checksum mismatch since open.
    pub corrupted_reads: u64,
    /// Writes refused since open because their data did not hash to the checksum they named
    /// (`DATA_CHECKSUM`: a copy damaged at its source or changed while it was sent).
    pub mismatched_writes: u64,
    /// Engine requests that failed for any other reason since open.
    pub errors: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Per base.
    pub bases: Vec<BaseSummary>,
    /// Sorted bases.
    pub sorted_bases: u64,
    /// Bases that want defrag.
    pub want_defrag_bases: u64,
    /// Removed bytes of the bases that want defrag: what a compact data-sort frees.
    pub defrag_reclaimable_bytes: u64,
    /// Open bases closed because they were full, since the engine opened (AUTO data-sort
    /// runs after each).
    pub rotations: u64,
}

impl EblobSummary {
    /// Index RAM per live record.
    pub fn ram_bytes_per_key(&self) -> f64 {
        let ram = self.ram_index_bytes + self.ram_bloom_bytes + self.ram_index_blocks_bytes;
        ram as f64 / self.live_records.max(1) as f64
    }
}

/// Data-sort mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefragMode {
    /// When a base is closed.
    #[default]
    Auto,
    /// Every `timeout_s`.
    Timed,
    /// Daily, in the window `time_hour` ± `splay_hours` (UTC), at a random start per node.
    Scheduled,
    /// Only on command.
    None,
}

impl DefragMode {
    /// Every mode, for exports that list each one (a 0/1 gauge per mode).
    pub const ALL: [DefragMode; 4] = [
        DefragMode::Auto,
        DefragMode::Timed,
        DefragMode::Scheduled,
        DefragMode::None,
    ];

    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DefragMode::Auto => "auto",
            DefragMode::Timed => "timed",
            DefragMode::Scheduled => "scheduled",
            DefragMode::None => "none",
        }
    }
}

/// Data-sort schedule and state of one backend.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DefragStats {
    /// Mode.
    pub mode: DefragMode,
    /// TIMED period.
    pub timeout_s: u64,
    /// SCHEDULED window centre, UTC hour.
    pub time_hour: u8,
    /// SCHEDULED window half-width, hours.
    pub splay_hours: u8,
    /// Compact mode.
    pub compact: bool,
    /// `idle`, `running`, `paused` (its job is paused between bases) or `stopping` (a stop
    /// or cancel was asked; it finishes the base it is writing).
    pub state: String,
    /// Next planned start, Unix seconds.
    pub next_start_unix_s: Option<u64>,
    /// Last start.
    pub last_start_unix_s: Option<u64>,
    /// Last duration.
    pub last_duration_ms: Option<u64>,
    /// Last result.
    pub last_result: Option<String>,
    /// Bases done in the running sort / bases planned.
    pub progress_bases: Option<(u64, u64)>,
    /// Source bytes done in the running sort / planned.
    pub progress_bytes: Option<(u64, u64)>,
    /// The running data-sort's job (`/stats/workers`, `/admin/jobs/{id}/...`).
    pub job_id: Option<u64>,
}

/// Serving state of a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendState {
    /// Serving reads and writes.
    #[default]
    Enabled,
    /// Closed, not in the route table.
    Disabled,
    /// Serving reads only.
    ReadOnly,
}

impl BackendState {
    /// Every state, for exports that list each one (a 0/1 gauge per state).
    pub const ALL: [BackendState; 3] = [
        BackendState::Enabled,
        BackendState::Disabled,
        BackendState::ReadOnly,
    ];

    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Enabled => "enabled",
            BackendState::Disabled => "disabled",
            BackendState::ReadOnly => "read_only",
        }
    }
}

/// One backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackendStats {
    /// Backend id on the node.
    pub id: u32,
    /// Replica group.
    pub group: u32,
    /// Directory.
    pub dir: String,
    /// Serving state.
    pub state: BackendState,
    /// Why it is read-only, if it is.
    pub read_only_reason: Option<String>,
    /// Ring ids held.
    pub ring_ids: u64,
    /// Share of its group's ring (0..=1).
    pub ring_share: f64,
    /// Artificial delay.
    pub delay_ms: u32,
    /// Size of the filesystem holding `dir` (statvfs); `None` when it cannot be read.
    pub fs_total_bytes: Option<u64>,
    /// Bytes of that filesystem available to the node (statvfs `f_bavail`); `None` when it
    /// cannot be read.
    pub fs_free_bytes: Option<u64>,
    /// Engine figures.
    pub eblob: EblobSummary,
    /// Data-sort.
    pub defrag: DefragStats,
    /// The backend's write queue (writes and removes run serially, in batches).
    pub write_queue: WriteQueueStats,
}

/// A backend's write queue: mutations waiting or running, its bound, and how they batched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WriteQueueStats {
    /// Writes and removes queued or running now.
    pub queued: u64,
    /// Its bound; one more is refused with AGAIN.
    pub limit: u64,
    /// Mutations refused since start because the queue was full.
    pub refused: u64,
    /// Mutations run since start.
    pub mutations: u64,
    /// Batches they ran in (`mutations / batches` is the mean batch size).
    pub batches: u64,
}

/// The node process and host, from procfs (fields missing on other systems are `None`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcStats {
    /// CPU time spent in user mode since the process started.
    pub cpu_user_s: Option<f64>,
    /// CPU time spent in the kernel on behalf of the process.
    pub cpu_system_s: Option<f64>,
    /// Resident set size.
    pub rss_bytes: Option<u64>,
    /// Virtual memory size.
    pub vm_bytes: Option<u64>,
    /// Bytes the process caused to be read from storage.
    pub io_read_bytes: Option<u64>,
    /// Bytes the process caused to be written to storage.
    pub io_write_bytes: Option<u64>,
    /// Host load averages over 1, 5 and 15 minutes.
    pub load_avg: Option<[f64; 3]>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Threads of the process.
    pub threads: Option<u64>,
}

/// What a background job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Eblob data-sort / defragmentation of one backend.
    DataSort,
    /// Recovery within a group after a ring change.
    RecoveryMerge,
    /// Recovery across groups.
    RecoveryDc,
    /// Server-send of records to other groups.
    ServerSend,
    /// Write-back of dirty cache objects.
    CacheSync,
    /// An ITERATOR streaming a backend's records to a client.
    Iterator,
}

impl JobKind {
    /// Every kind, for exports that count jobs per kind (zeros included).
    pub const ALL: [JobKind; 6] = [
        JobKind::DataSort,
        JobKind::RecoveryMerge,
        JobKind::RecoveryDc,
        JobKind::ServerSend,
        JobKind::CacheSync,
        JobKind::Iterator,
    ];

    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::DataSort => "data_sort",
            JobKind::RecoveryMerge => "recovery_merge",
            JobKind::RecoveryDc => "recovery_dc",
            JobKind::ServerSend => "server_send",
            JobKind::CacheSync => "cache_sync",
            JobKind::Iterator => "iterator",
        }
    }
}

/// Life-cycle state of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Registered, not started.
    Queued,
    /// Working.
    Running,
    /// Paused by request; resumes on `resume`.
    Paused,
    /// Finished successfully.
    Done,
    /// Finished with an error.
    Failed,
    /// Stopped by request.
    Cancelled,
}

impl JobState {
    /// Every state, for exports that count jobs per state (zeros included).
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Paused,
        JobState::Done,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Done, failed or cancelled.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

/// A point-in-time view of one job, as served in `/stats/workers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Unique within the node's lifetime.
    pub id: u64,
    /// What the job does.
    pub kind: JobKind,
    /// Free-form target, e.g. `backend 3` or `groups 1,2`.
    pub target: String,
    /// Current state.
    pub state: JobState,
    /// Keys processed so far.
    #[serde(default)]
    pub done_keys: u64,
    /// Keys to process, when known.
    #[serde(default)]
    pub total_keys: Option<u64>,
    /// Bytes processed so far.
    #[serde(default)]
    pub done_bytes: u64,
    /// Bytes to process, when known.
    #[serde(default)]
    pub total_bytes: Option<u64>,
    /// Keys per second since the start (running time only).
    #[serde(default)]
    pub rate_keys_per_s: f64,
    /// Bytes per second since the start.
    #[serde(default)]
    pub rate_bytes_per_s: f64,
    /// Errors counted so far (the job goes on unless it fails).
    #[serde(default)]
    pub errors: u64,
    /// Rests the job took to give way to foreground work (its throttle, a rate limit).
    #[serde(default)]
    pub rests: u64,
    /// Time spent in those rests, milliseconds.
    #[serde(default)]
    pub rested_ms: u64,
    /// The last error message, if any.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Start, seconds since the Unix epoch.
    #[serde(default)]
    pub started_at_s: Option<u64>,
    /// Finish, seconds since the Unix epoch.
    #[serde(default)]
    pub finished_at_s: Option<u64>,
    /// Final result message.
    #[serde(default)]
    pub result: Option<String>,
}

/// A job another node runs on behalf of this one (a recovery fanned out to it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RemoteJob {
    /// That node's HTTP address (where `/admin/jobs/{job}` answers).
    pub http_addr: String,
    /// The job's id there.
    pub job: u64,
}

/// The answer to a recovery start or cancel (`POST /admin/recovery`, the RECOVERY command):
/// the receiving node's job, with the job's fields at the top level (so it also parses as a
/// [`JobStatus`]), and the jobs it fanned out to the other nodes. Progress of the whole
/// recovery is the sum over all of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryJob {
    /// The receiving node's job.
    #[serde(flatten)]
    pub job: JobStatus,
    /// The same recovery's jobs on the other nodes.
    #[serde(default)]
    pub fanned_out: Vec<RemoteJob>,
}

/// A peer as listed with the routes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerInfo {
    /// Protocol address.
    pub addr: String,
    /// Monitoring HTTP address, if it serves one.
    pub http_addr: Option<String>,
}

/// The route table and how to reach every node's HTTP.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoutesStats {
    /// The table.
    pub table: RouteTable,
    /// Every known node (this one included).
    pub nodes: Vec<PeerInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_stats_round_trip_through_json() {
        let mut s = NodeStats::default();
        s.node.addr = "127.0.0.1:1025".into();
        s.commands.commands.insert(
            "READ".into(),
            CommandStat {
                successes: 3,
                p99_us: 120,
                ..Default::default()
            },
        );
        s.backends.push(BackendStats {
            id: 1,
            group: 2,
            eblob: EblobSummary {
                bases: vec![BaseSummary {
                    index: 0,
                    sorted: true,
                    ..Default::default()
                }],
                ..Default::default()
            },
            defrag: DefragStats {
                mode: DefragMode::Scheduled,
                next_start_unix_s: Some(7),
                ..Default::default()
            },
            ..Default::default()
        });
        s.workers.push(JobStatus {
            id: 1,
            kind: JobKind::RecoveryDc,
            target: "groups 1,2".into(),
            state: JobState::Running,
            done_keys: 5,
            total_keys: Some(10),
            done_bytes: 0,
            total_bytes: None,
            rate_keys_per_s: 1.5,
            rate_bytes_per_s: 0.0,
            errors: 0,
            rests: 0,
            rested_ms: 0,
            last_error: None,
            started_at_s: Some(1),
            finished_at_s: None,
            result: None,
        });
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<NodeStats>(&j).unwrap(), s);
    }

    #[test]
    fn defrag_summary_counts_only_bases_that_want_defrag_as_reclaimable() {
        let backend = |want: u64, reclaim: u64, removed: u64, state: &str| BackendStats {
            eblob: EblobSummary {
                want_defrag_bases: want,
                defrag_reclaimable_bytes: reclaim,
                removed_bytes: removed,
                ..Default::default()
            },
            defrag: DefragStats {
                state: state.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let d = DefragSummary::of(&[
            backend(2, 700, 1_000, "running"),
            backend(0, 0, 300, "idle"),
            backend(1, 50, 60, "stopping"),
        ]);
        assert_eq!(
            d,
            DefragSummary {
                backends_want_defrag: 2,
                want_defrag_bases: 3,
                defrag_reclaimable_bytes: 750,
                removed_bytes: 1_360,
                sorts_running: 2,
            }
        );
    }

    /// Metric label values are these spellings, so a dashboard can join `/metrics` with the
    /// JSON: each must equal the serde one, and no variant may be listed twice in `ALL`.
    #[test]
    fn enum_spellings_match_json() {
        fn check<T: Serialize + Copy>(all: &[T], as_str: fn(T) -> &'static str) {
            let mut seen = std::collections::BTreeSet::new();
            for &v in all {
                let json = serde_json::to_value(v).unwrap();
                assert_eq!(json.as_str(), Some(as_str(v)));
                assert!(seen.insert(as_str(v)), "{} listed twice", as_str(v));
            }
        }
        check(&DefragMode::ALL, DefragMode::as_str);
        check(&BackendState::ALL, BackendState::as_str);
        check(&JobKind::ALL, JobKind::as_str);
        check(&JobState::ALL, JobState::as_str);
    }

    #[test]
    fn missing_and_unknown_fields_are_tolerated() {
        let s: NodeStats =
            serde_json::from_str(r#"{"node":{"addr":"a","future":1},"extra":[1,2]}"#).unwrap();
        assert_eq!(s.node.addr, "a");
        assert!(s.backends.is_empty());
    }
}
