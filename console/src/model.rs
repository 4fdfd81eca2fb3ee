//! The console's view of the cluster: exactly what the views draw, nothing more.
//!
//! Built from the nodes' stats JSON by the poller (`crate::poll`), or by hand in tests and the
//! 256-node benchmark. Views never see wire or JSON types, so a schema change touches one
//! adapter, not every screen.
//!
//! Invariant: a node that did not answer is present with `up = false` and its last error; it is
//! never silently dropped from the model.

use serde::Serialize;

/// Everything the console knows about the cluster at one refresh.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClusterModel {
    /// Every known node, sorted by address.
    pub nodes: Vec<NodeModel>,
    /// Per group, the key ring.
    pub rings: Vec<GroupRing>,
    /// Recent call trees from every node, newest first.
    pub traces: Vec<TraceSummary>,
    /// Background jobs on every node.
    pub jobs: Vec<JobRow>,
    /// Cluster-wide operations per second, oldest first (sparkline).
    pub ops_history: Vec<u64>,
    /// Cluster-wide worst p99 latency in microseconds, oldest first (sparkline).
    pub p99_history_us: Vec<u64>,
    /// Seconds since the Unix epoch of this refresh.
    pub refreshed_at_s: u64,
}

/// One node.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NodeModel {
    /// `host:port` of its wire protocol.
    pub addr: String,
    /// Answered the last poll.
    pub up: bool,
    /// Why the last poll failed.
    pub error: Option<String>,
    /// Software version.
    pub version: String,
    /// Seconds since the node started.
    pub uptime_s: u64,
    /// Groups of its backends.
    pub groups: Vec<u32>,
    /// Requests per second over the last refresh interval.
    pub ops_per_s: f64,
    /// Worst p99 latency across commands.
    pub p99_us: u64,
    /// Failed requests since start.
    pub errors_total: u64,
    /// Resident memory.
    pub rss_bytes: Option<u64>,
    /// CPU use over the last interval, percent of one core.
    pub cpu_percent: Option<f64>,
    /// Host load average over 1 minute.
    pub load1: Option<f64>,
    /// Queues: the blocking pool of engine calls and the network side.
    pub queue: QueueModel,
    /// Peers it sends to.
    pub peers: Vec<PeerRow>,
    /// Per-command counters.
    pub commands: Vec<CommandRow>,
    /// Caches summed over its backends.
    pub cache: Option<CacheRow>,
    /// Its backends.
    pub backends: Vec<BackendRow>,
}

/// A node's queues, as its `/stats/io` reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueModel {
    /// Engine calls running on a blocking thread.
    pub engine_running: u64,
    /// Blocking threads (engine calls that can run at once).
    pub engine_threads: u64,
    /// Engine calls waiting for a thread.
    pub engine_waiting: u64,
    /// Bound of the waiting calls.
    pub engine_waiting_limit: u64,
    /// Engine calls refused since start (pool full).
    pub engine_refused: u64,
    /// Writes and removes queued or running on the backends' write queues (summed).
    pub writes_queued: u64,
    /// Their bound (summed).
    pub writes_limit: u64,
    /// Writes and removes refused since start because a write queue was full.
    pub writes_refused: u64,
    /// Requests being handled on the network side.
    pub network: u64,
    /// Its bound.
    pub network_limit: u64,
    /// Requests refused with AGAIN since start (network side full).
    pub network_refused: u64,
    /// Client connections open.
    pub client_connections: u64,
}

/// A peer connection of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PeerRow {
    /// Peer address.
    pub addr: String,
    /// Connection state (`connected`, `connecting`, `down`).
    pub state: String,
    /// Frames waiting to be sent.
    pub send_queue: u64,
    /// Its bound.
    pub send_queue_limit: u64,
    /// Requests waiting for the peer's reply.
    pub in_flight: u64,
}

/// Counters of one command on one node.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CommandRow {
    /// Command name (`READ`, `WRITE`, ...).
    pub name: String,
    /// Successful requests since start.
    pub successes: u64,
    /// Failed requests since start.
    pub failures: u64,
    /// Requests per second over the last interval.
    pub rate_per_s: f64,
    /// Median latency.
    pub p50_us: u64,
    /// 99th percentile latency.
    pub p99_us: u64,
    /// Served from the cache.
    pub cache_hits: u64,
    /// Served from disk.
    pub disk: u64,
    /// Forwarded to the owner.
    pub forwarded: u64,
}

/// A node's caches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CacheRow {
    /// Bytes held.
    pub size_bytes: u64,
    /// Capacity.
    pub max_bytes: u64,
    /// Objects.
    pub objects: u64,
    /// Bytes per segment, probation first.
    pub segment_bytes: Vec<u64>,
    /// Hits since start.
    pub hits: u64,
    /// Misses since start.
    pub misses: u64,
}

/// One backend of a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BackendRow {
    /// Node address (for cluster-wide tables).
    pub node: String,
    /// Backend id within the node.
    pub id: u32,
    /// Replica group.
    pub group: u32,
    /// `enabled` or `disabled`.
    pub state: String,
    /// Why writes are refused, if they are.
    pub read_only: Option<String>,
    /// Bases (blob files).
    pub bases: u64,
    /// Sorted bases.
    pub sorted_bases: u64,
    /// Live and removed records.
    pub records: u64,
    /// Removed records.
    pub removed_records: u64,
    /// Removed bytes, in every base.
    pub removed_bytes: u64,
    /// Removed bytes of the bases that want data-sort: what a compact sort would free.
    pub reclaimable_bytes: u64,
    /// Bytes on disk.
    pub used_bytes: u64,
    /// Size of the filesystem holding it, when the node reports it.
    pub fs_total_bytes: Option<u64>,
    /// Bytes available on that filesystem, when the node reports it.
    pub free_bytes: Option<u64>,
    /// Index RAM (hash index, index blocks, bloom filters).
    pub ram_bytes: u64,
    /// Bases that want data-sort.
    pub want_defrag_bases: u64,
    /// Records whose checksum failed.
    pub corrupted: u64,
    /// Data-sort schedule and state.
    pub defrag: DefragRow,
}

/// Data-sort schedule and state of a backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DefragRow {
    /// `auto`, `timed`, `scheduled` or `none`.
    pub mode: String,
    /// Window centre hour and splay hours (UTC), for `scheduled`.
    pub window: Option<(u8, u8)>,
    /// Next planned start, seconds since the Unix epoch.
    pub next_start_s: Option<u64>,
    /// `idle`, `running`, ...
    pub state: String,
    /// Result of the last run.
    pub last_result: Option<String>,
    /// Progress of a running sort, 0.0 to 1.0.
    pub progress: Option<f64>,
    /// Period of `timed` mode (kept so a schedule change can send the whole schedule).
    pub timeout_s: u64,
    /// Compact mode: only bases that want data-sort.
    pub compact: bool,
}

/// The key ring of one group.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GroupRing {
    /// The group.
    pub group: u32,
    /// Ranges in ring order; each starts at `start` and ends where the next begins (the last
    /// wraps to the first).
    pub ranges: Vec<RingRange>,
}

/// One range of a group's ring.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RingRange {
    /// First 8 bytes of the range's ring id, big-endian: the position on the ring.
    pub start: u64,
    /// Share of the ring, 0.0 to 1.0.
    pub share: f64,
    /// Owning node.
    pub node: String,
    /// Owning backend on it.
    pub backend: u32,
    /// The owner answered the last poll.
    pub up: bool,
}

/// A recent call tree.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TraceSummary {
    /// Trace id.
    pub id: String,
    /// Node that recorded it.
    pub node: String,
    /// Root action name (the command).
    pub command: String,
    /// Whole-request duration.
    pub duration_us: u64,
    /// The tree.
    pub root: ActionNode,
}

/// One action of a call tree.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ActionNode {
    /// Action name.
    pub name: String,
    /// Start, microseconds from the root's start.
    pub start_us: u64,
    /// Stop, microseconds from the root's start.
    pub stop_us: u64,
    /// Children in start order.
    pub children: Vec<ActionNode>,
}

/// A background job on a node.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct JobRow {
    /// Node running it.
    pub node: String,
    /// Job id on that node.
    pub id: u64,
    /// `data_sort`, `recovery_dc`, ...
    pub kind: String,
    /// What it works on.
    pub target: String,
    /// `running`, `done`, ...
    pub state: String,
    /// Keys done.
    pub done_keys: u64,
    /// Keys in all, when known.
    pub total_keys: Option<u64>,
    /// Bytes done.
    pub done_bytes: u64,
    /// Bytes in all, when known.
    pub total_bytes: Option<u64>,
    /// Bytes per second.
    pub rate_bytes_per_s: f64,
    /// Errors so far.
    pub errors: u64,
    /// Last error.
    pub last_error: Option<String>,
    /// Final result as the node reports it (a recovery's counters as JSON), once finished.
    pub result: Option<String>,
}

/// What a recovery job reports when it ends (its `result` JSON), as the console uses it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryCounts {
    /// Records looked at.
    pub iterated: u64,
    /// Copies written, or that would be in a dry run.
    pub copied: u64,
    /// Bytes of those copies.
    pub bytes: u64,
    /// Copies not needed (the target already held it).
    pub skipped: u64,
    /// Copies that failed.
    pub failed: u64,
    /// Local copies removed (merge).
    pub removed: u64,
}

/// One backend's share of its group's ring, as the ring view lists it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ShareRow {
    /// The group.
    pub group: u32,
    /// Owning node.
    pub node: String,
    /// Backend on it.
    pub backend: u32,
    /// Ring ids (ranges) it owns.
    pub ids: usize,
    /// Its share of the group's ring, 0.0 to 1.0.
    pub share: f64,
    /// The share every backend of the group would have if the ring were even.
    pub fair: f64,
    /// Every range's owner answered the last poll.
    pub up: bool,
}

/// A backend's share is "imbalanced" when it is off the group's fair share by this factor.
pub const IMBALANCE_FACTOR: f64 = 1.5;

impl ShareRow {
    /// `owner down: range unserved`, `overloaded`, `underused` or empty.
    pub fn note(&self) -> &'static str {
        if !self.up {
            "owner down: range unserved"
        } else if self.share > self.fair * IMBALANCE_FACTOR {
            "overloaded"
        } else if self.share < self.fair / IMBALANCE_FACTOR {
            "underused"
        } else {
            ""
        }
    }
}

impl JobRow {
    /// The counters of a finished recovery, when its result is a recovery report.
    pub fn recovery_counts(&self) -> Option<RecoveryCounts> {
        let raw = self.result.as_deref()?;
        let serde_json::Value::Object(map) = serde_json::from_str(raw).ok()? else {
            return None;
        };
        if !map.contains_key("copied") {
            return None;
        }
        let n = |k: &str| map.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        Some(RecoveryCounts {
            iterated: n("iterated"),
            copied: n("copied"),
            bytes: n("bytes"),
            skipped: n("skipped"),
            failed: n("failed"),
            removed: n("removed"),
        })
    }

    /// Fraction done, from keys or bytes, when a total is known.
    pub fn progress(&self) -> Option<f64> {
        let frac = |done: u64, total: u64| {
            if total == 0 {
                1.0
            } else {
                (done as f64 / total as f64).min(1.0)
            }
        };
        match (self.total_keys, self.total_bytes) {
            (Some(t), _) => Some(frac(self.done_keys, t)),
            (None, Some(t)) => Some(frac(self.done_bytes, t)),
            _ => None,
        }
    }

    /// Seconds left at the current rate, when a byte total is known.
    pub fn eta_s(&self) -> Option<u64> {
        let total = self.total_bytes?;
        (self.rate_bytes_per_s > 0.0).then(|| {
            (total.saturating_sub(self.done_bytes) as f64 / self.rate_bytes_per_s).ceil() as u64
        })
    }

    /// True for a recovery started as a dry run (the node marks its target so).
    pub fn is_dry_run(&self) -> bool {
        self.target.contains("dry run")
    }

    /// True while the job is not finished.
    pub fn is_active(&self) -> bool {
        matches!(self.state.as_str(), "queued" | "running" | "paused")
    }
}

impl ClusterModel {
    /// Nodes that answered.
    pub fn nodes_up(&self) -> usize {
        self.nodes.iter().filter(|n| n.up).count()
    }

    /// All groups seen in the ring or on nodes, sorted.
    pub fn groups(&self) -> Vec<u32> {
        let mut g: Vec<u32> = self.rings.iter().map(|r| r.group).collect();
        g.extend(self.nodes.iter().flat_map(|n| n.groups.iter().copied()));
        g.sort_unstable();
        g.dedup();
        g
    }

    /// Per group, each backend's share of the ring, in group then (node, backend) order.
    pub fn shares(&self) -> Vec<ShareRow> {
        let mut rows = Vec::new();
        for ring in &self.rings {
            let mut per_backend: std::collections::BTreeMap<(&str, u32), (usize, f64, bool)> =
                std::collections::BTreeMap::new();
            for r in &ring.ranges {
                let e = per_backend
                    .entry((r.node.as_str(), r.backend))
                    .or_insert((0, 0.0, true));
                e.0 += 1;
                e.1 += r.share;
                e.2 &= r.up;
            }
            let fair = 1.0 / per_backend.len().max(1) as f64;
            for ((node, backend), (ids, share, up)) in per_backend {
                rows.push(ShareRow {
                    group: ring.group,
                    node: node.to_owned(),
                    backend,
                    ids,
                    share,
                    fair,
                    up,
                });
            }
        }
        rows
    }

    /// Every backend of every node.
    pub fn backends(&self) -> impl Iterator<Item = &BackendRow> {
        self.nodes.iter().flat_map(|n| n.backends.iter())
    }

    /// Used and free bytes over all backends of nodes that answered. Backends of one node
    /// that share a filesystem (same total and free figures) count its free space once.
    pub fn capacity(&self) -> (u64, u64) {
        let mut used = 0;
        let mut free = 0;
        for n in self.nodes.iter().filter(|n| n.up) {
            let mut seen: Vec<(Option<u64>, u64)> = Vec::new();
            for b in &n.backends {
                used += b.used_bytes;
                if let Some(f) = b.free_bytes {
                    if !seen.contains(&(b.fs_total_bytes, f)) {
                        seen.push((b.fs_total_bytes, f));
                        free += f;
                    }
                }
            }
        }
        (used, free)
    }

    /// Requests per second over all nodes (0.0, never -0.0, for none).
    pub fn ops_per_s(&self) -> f64 {
        self.nodes
            .iter()
            .filter(|n| n.up)
            .fold(0.0, |sum, n| sum + n.ops_per_s)
    }

    /// Worst p99 over all nodes.
    pub fn p99_us(&self) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.up)
            .map(|n| n.p99_us)
            .max()
            .unwrap_or(0)
    }

    /// Things an SRE should look at, most severe first.
    pub fn alerts(&self) -> Vec<Alert> {
        let mut out = Vec::new();
        for n in self.nodes.iter().filter(|n| !n.up) {
            let why = n.error.as_deref().unwrap_or("no answer");
            out.push(Alert {
                severe: true,
                text: format!("node {} is down: {why}", n.addr),
            });
        }
        for b in self.nodes.iter().filter(|n| n.up).flat_map(|n| &n.backends) {
            if let Some(reason) = &b.read_only {
                out.push(Alert {
                    severe: true,
                    text: format!("{} backend {} is read-only: {reason}", b.node, b.id),
                });
            }
            if b.corrupted > 0 {
                out.push(Alert {
                    severe: true,
                    text: format!(
                        "{} backend {}: {} corrupted records",
                        b.node, b.id, b.corrupted
                    ),
                });
            }
            if b.state == "disabled" {
                out.push(Alert {
                    severe: false,
                    text: format!("{} backend {} is disabled", b.node, b.id),
                });
            }
        }
        for ring in &self.rings {
            if ring.ranges.iter().any(|r| !r.up) {
                let down: f64 = ring.ranges.iter().filter(|r| !r.up).map(|r| r.share).sum();
                out.push(Alert {
                    severe: true,
                    text: format!(
                        "group {}: {:.1}% of the ring is on nodes that are down",
                        ring.group,
                        down * 100.0
                    ),
                });
            }
        }
        for n in self.nodes.iter().filter(|n| n.up) {
            let q = &n.queue;
            if q.engine_waiting_limit > 0 && q.engine_waiting * 10 >= q.engine_waiting_limit * 8 {
                out.push(Alert {
                    severe: false,
                    text: format!(
                        "node {}: engine queue {}/{} waiting",
                        n.addr, q.engine_waiting, q.engine_waiting_limit
                    ),
                });
            }
            if q.network_limit > 0 && q.network * 10 >= q.network_limit * 8 {
                out.push(Alert {
                    severe: false,
                    text: format!(
                        "node {}: network queue {}/{} in flight",
                        n.addr, q.network, q.network_limit
                    ),
                });
            }
        }
        let want: u64 = self.backends().map(|b| b.want_defrag_bases).sum();
        if want > 0 {
            out.push(Alert {
                severe: false,
                text: format!("{want} bases want data-sort"),
            });
        }
        out.sort_by_key(|a| !a.severe);
        out
    }
}

/// A line for the alerts panel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// Red (true) or yellow.
    pub severe: bool,
    /// What is wrong.
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_progress_and_eta_come_from_totals_and_rate() {
        let job = JobRow {
            done_keys: 25,
            total_keys: Some(100),
            done_bytes: 250,
            total_bytes: Some(1_000),
            rate_bytes_per_s: 50.0,
            state: "running".into(),
            ..JobRow::default()
        };
        assert_eq!(job.progress(), Some(0.25));
        assert_eq!(job.eta_s(), Some(15));
        assert!(job.is_active());
        let unknown = JobRow::default();
        assert_eq!((unknown.progress(), unknown.eta_s()), (None, None));
    }

    #[test]
    fn down_nodes_and_read_only_backends_are_severe_alerts_first() {
        let model = ClusterModel {
            nodes: vec![
                NodeModel {
                    addr: "a:1".into(),
                    up: true,
                    backends: vec![BackendRow {
                        node: "a:1".into(),
                        id: 1,
                        want_defrag_bases: 2,
                        read_only: Some("fsync failed".into()),
                        ..BackendRow::default()
                    }],
                    ..NodeModel::default()
                },
                NodeModel {
                    addr: "b:1".into(),
                    up: false,
                    error: Some("timeout".into()),
                    ..NodeModel::default()
                },
            ],
            ..ClusterModel::default()
        };
        let alerts = model.alerts();
        assert_eq!(alerts.len(), 3);
        assert!(alerts[0].severe && alerts[1].severe && !alerts[2].severe);
        assert!(alerts
            .iter()
            .any(|a| a.text.contains("b:1 is down: timeout")));
        assert!(alerts
            .iter()
            .any(|a| a.text.contains("read-only: fsync failed")));
    }
}
