//! Builds the node's stats document (`ellipsis_core::stats::NodeStats`) and its Prometheus form.
//!
//! Read-only snapshots: nothing here changes state. Engine stats are cheap in-memory counters
//! (no disk IO), so building the document never blocks on the disk.

use std::sync::atomic::Ordering;

use ellipsis_core::stats::{
    BackendState, BackendStats, BaseSummary, CacheEntryStats, CacheStats, CommandStat, DefragMode,
    DefragStats, DefragSummary, EblobSummary, IoStats, JobKind, JobState, NodeInfo, NodeStats,
    PeerInfo, PeerStats, RoutesStats,
};

use crate::backend::Backend;
use crate::metrics::{Exposition, MetricType};
use crate::node::Node;

fn backend_stats(node: &Node, b: &Backend) -> BackendStats {
    let engine = b.engine().ok();
    let es = engine.as_ref().map(|e| e.stats());
    let eblob = es
        .as_ref()
        .map(|s| EblobSummary {
            records: s.total.records,
            live_records: s.total.live_records,
            removed_records: s.total.removed_records,
            removed_bytes: s.total.removed_bytes,
            corrupted: s.total.corrupted,
            indexes_rebuilt: engine
                .as_ref()
                .map_or(0, |e| e.open_report().indexes_rebuilt.len() as u64),
            size_bytes: s.total.size_bytes,
            ram_index_bytes: s.total.ram_index_bytes,
            ram_bloom_bytes: s.total.ram_bloom_bytes,
            ram_index_blocks_bytes: s.total.ram_index_blocks_bytes,
            reads: s.ops.reads,
            writes: s.ops.writes,
            removes: s.ops.removes,
            lookups: s.ops.lookups,
            not_found: s.ops.not_found,
            corrupted_reads: s.ops.corrupted_reads,
            mismatched_writes: s.ops.mismatched_writes,
            errors: s.ops.errors,
            read_bytes: s.ops.read_bytes,
            write_bytes: s.ops.write_bytes,
            bases: s
                .bases
                .iter()
                .map(|x| BaseSummary {
                    index: x.number,
                    records: x.records,
                    removed: x.removed_records,
                    removed_bytes: x.removed_bytes,
                    size_bytes: x.size_bytes,
                    sorted: x.sorted,
                    want_defrag: x.want_defrag,
                })
                .collect(),
            sorted_bases: s.total.sorted_bases,
            want_defrag_bases: s.total.want_defrag_bases,
            defrag_reclaimable_bytes: s
                .bases
                .iter()
                .filter(|x| x.want_defrag)
                .map(|x| x.removed_bytes)
                .sum(),
            rotations: s.ops.rotations,
        })
        .unwrap_or_default();
    let sched = b.scheduler();
    let schedule = sched.schedule().clone();
    let ds = es.as_ref().map(|s| s.data_sort.clone()).unwrap_or_default();
    let next_start_unix_s = sched.next_start_s();
    // The node's own record first: it is read from the node's clock, like the schedule.
    let last_start_unix_s = sched.last_start_s().or(ds.last_start_unix_s);
    drop(sched);
    let job = b.sort_job().and_then(|id| node.workers.get(id));
    let job = job.filter(|j| !j.state.is_finished());
    let state = match &job {
        _ if ds.stopping => "stopping",
        Some(j) if j.state == JobState::Paused => "paused",
        Some(_) => "running",
        None if ds.running => "running",
        None => "idle",
    };
    let defrag = DefragStats {
        mode: schedule.mode,
        timeout_s: schedule.timeout_s,
        time_hour: schedule.time_hour,
        splay_hours: schedule.splay_hours,
        compact: schedule.compact,
        state: state.into(),
        next_start_unix_s,
        last_start_unix_s,
        last_duration_ms: ds.last_duration_ms,
        last_result: ds.last_result,
        progress_bases: ds.progress.map(|p| (p.bases_done, p.bases_total)),
        progress_bytes: ds.progress.map(|p| (p.bytes_done, p.bytes_total)),
        job_id: job.map(|j| j.id),
    };
    let share = node
        .routes
        .read()
        .shares(b.group())
        .into_iter()
        .find(|s| s.addr.node == node.addr && s.addr.backend == b.id())
        .map_or(0.0, |s| s.fraction);
    BackendStats {
        id: b.id(),
        group: b.group(),
        dir: b.dir().display().to_string(),
        state: b.state(),
        read_only_reason: b.read_only_reason(),
        ring_ids: b.ring_ids().len() as u64,
        ring_share: share,
        delay_ms: b.delay_ms() as u32,
        // One statvfs each: a metadata call, no data IO.
        fs_total_bytes: fs2::total_space(b.dir()).ok(),
        fs_free_bytes: fs2::available_space(b.dir()).ok(),
        eblob,
        defrag,
        write_queue: node
            .write_queues
            .get(&b.id())
            .map(crate::write_queue::WriteQueue::stats)
            .unwrap_or_default(),
    }
}

/// The whole document.
pub fn collect(node: &Node) -> NodeStats {
    let pool = node.pool.stats();
    let nonblocking_used = node.inflight_limit - node.inflight.available_permits() as u64;
    let mut groups: Vec<u32> = node.backends.values().map(|b| b.group()).collect();
    groups.sort_unstable();
    groups.dedup();
    let known = node.known.read().clone();
    let backends: Vec<BackendStats> = node
        .backends
        .values()
        .map(|b| backend_stats(node, b))
        .collect();
    NodeStats {
        node: NodeInfo {
            addr: node.addr.to_string(),
            http_addr: node.http_addr.map(|a| a.to_string()).unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_s: node.started.elapsed().as_secs(),
            groups,
            now_unix_s: node.clock.now_unix_s(),
        },
        commands: node.counters.snapshot(),
        io: IoStats {
            blocking_queue: pool.queued + pool.active,
            blocking_queue_limit: pool.queue_limit + pool.threads,
            blocking_active: pool.active,
            blocking_threads: pool.threads,
            blocking_waiting: pool.queued,
            blocking_waiting_limit: pool.queue_limit,
            blocking_refused: pool.refused,
            nonblocking_queue: nonblocking_used,
            nonblocking_queue_limit: node.inflight_limit,
            nonblocking_refused: node.inflight_refused.load(Ordering::Relaxed),
            receive_buffer_bytes: node.receive_buffer.used_bytes(),
            receive_buffer_bytes_limit: node.receive_buffer.limit_bytes(),
            receive_buffer_waits: node.receive_buffer.waits(),
            client_connections: node.client_connections.load(Ordering::Relaxed),
            notify_watchers: node.notify.len() as u64,
            notify_watchers_limit: crate::notify::MAX_WATCHERS as u64,
            notify_relays: node.notify.relays_len() as u64,
            notify_relays_limit: crate::notify::MAX_RELAYS as u64,
            peers: node.peers.stats(),
        },
        cache: node
            .backends
            .values()
            .filter_map(|b| {
                b.cache_stats().map(|stats| CacheEntryStats {
                    backend: Some(b.id()),
                    stats,
                })
            })
            .collect(),
        backends,
        procfs: crate::procfs::sample(),
        workers: node.workers.list(),
        routes: RoutesStats {
            table: node.routes.read().clone(),
            nodes: known
                .into_iter()
                .map(|(addr, http)| PeerInfo {
                    addr: addr.to_string(),
                    http_addr: http.map(|h| h.to_string()),
                })
                .collect(),
        },
    }
}

/// One category (or everything for `""` / `all`) as JSON; `None` for an unknown category.
pub fn category_json(node: &Node, category: &str) -> Option<String> {
    let s = collect(node);
    let v = match category {
        "" | "all" => serde_json::to_string(&s),
        "node" => serde_json::to_string(&s.node),
        "commands" => serde_json::to_string(&s.commands),
        "io" => serde_json::to_string(&s.io),
        "cache" => serde_json::to_string(&s.cache),
        "backends" => serde_json::to_string(&s.backends),
        "procfs" => serde_json::to_string(&s.procfs),
        "workers" => serde_json::to_string(&s.workers),
        "routes" => serde_json::to_string(&s.routes),
        "defrag" => serde_json::to_string(&DefragSummary::of(&s.backends)),
        _ => return None,
    };
    v.ok()
}

/// Peer connection states, as `Peers::stats` spells them; each gets a 0/1 sample.
const PEER_STATES: [&str; 3] = ["connected", "connecting", "down"];
/// Data-sort states, as `backend_stats` spells them above.
const DEFRAG_STATES: [&str; 4] = ["idle", "running", "paused", "stopping"];
/// Data-sort results by kind: `error: ...` messages count as `error` (the message itself is
/// free text, no label value).
const DEFRAG_RESULTS: [&str; 3] = ["ok", "stopped", "error"];

type CommandGetter = fn(&CommandStat) -> u64;
/// A per-backend figure; `None` leaves the backend's sample out (a figure /stats does not
/// know either, such as the free space of an unreadable filesystem, is never exported as 0).
type BackendGetter = fn(&BackendStats) -> Option<f64>;
type BaseGetter = fn(&BaseSummary) -> f64;
type PeerGetter = fn(&PeerStats) -> u64;
type CacheGetter = fn(&CacheStats) -> u64;

fn flag(b: bool) -> f64 {
    f64::from(u8::from(b))
}

/// A state set: one sample per value in `known` (1 for `current`, 0 for the others), so a
/// series exists before its state is first entered and alerts on it need no `absent()`. A
/// `current` outside `known` (a state added later) still gets its 1.
fn state_set(
    e: &mut Exposition,
    labels: &[(&str, &str)],
    name: &str,
    known: &[&str],
    current: &str,
) {
    let mut all: Vec<(&str, &str)> = labels.to_vec();
    all.push((name, ""));
    let last = all.len() - 1;
    for v in known {
        all[last].1 = v;
        e.sample(&all, flag(*v == current));
    }
    if !known.contains(&current) {
        all[last].1 = current;
        e.sample(&all, 1.0);
    }
}

/// The stats in Prometheus text format: the same snapshot as `GET /stats`, family by family,
/// so the two endpoints carry the same figures. Left out, as no time series: free text
/// (read-only reasons, data-sort and job messages), ids of single jobs and their progress
/// (jobs are counted by kind and state), and the route table's entries and peers' HTTP
/// addresses (its generation and sizes are exported).
pub fn prometheus(node: &Node) -> String {
    let s = collect(node);
    let mut e = Exposition::new();
    export_node(&mut e, &s);
    export_commands(&mut e, &s);
    export_io(&mut e, &s);
    export_backends(&mut e, &s);
    export_cache(&mut e, &s);
    export_procfs(&mut e, &s);
    export_workers(&mut e, &s);
    export_routes(&mut e, &s);
    e.finish()
}

fn export_node(e: &mut Exposition, s: &NodeStats) {
    e.single(
        "ellipsis_uptime_seconds",
        "Seconds since the node started.",
        MetricType::Gauge,
        s.node.uptime_s as f64,
    );
    if e.family(
        "ellipsis_node_info",
        "Always 1; the labels say who answers.",
        MetricType::Gauge,
    ) {
        e.sample(
            &[
                ("addr", &s.node.addr),
                ("http_addr", &s.node.http_addr),
                ("version", &s.node.version),
            ],
            1.0,
        );
    }
    if e.family(
        "ellipsis_node_group",
        "Always 1, one sample per replica group the node serves.",
        MetricType::Gauge,
    ) {
        for g in &s.node.groups {
            e.sample(&[("group", &g.to_string())], 1.0);
        }
    }
    e.single(
        "ellipsis_node_time_seconds",
        "The node's clock when the stats were taken, Unix seconds (compare nodes for skew).",
        MetricType::Gauge,
        s.node.now_unix_s as f64,
    );
}

fn export_commands(e: &mut Exposition, s: &NodeStats) {
    let counters: [(&str, &str, CommandGetter); 7] = [
        (
            "ellipsis_requests_succeeded_total",
            "Requests answered OK.",
            |c| c.successes,
        ),
        (
            "ellipsis_requests_failed_total",
            "Requests answered with an error (NOT_FOUND excluded).",
            |c| c.failures,
        ),
        (
            "ellipsis_requests_not_found_total",
            "Requests answered NOT_FOUND.",
            |c| c.not_found,
        ),
        (
            "ellipsis_request_bytes_total",
            "Payload bytes received and sent.",
            |c| c.bytes,
        ),
        (
            "ellipsis_requests_cache_total",
            "Requests answered from the cache.",
            |c| c.cache_hits,
        ),
        (
            "ellipsis_requests_disk_total",
            "Requests answered from the storage engine.",
            |c| c.disk,
        ),
        (
            "ellipsis_requests_forwarded_total",
            "Requests forwarded to the owner.",
            |c| c.forwarded,
        ),
    ];
    for (name, help, get) in counters {
        if e.family(name, help, MetricType::Counter) {
            for (cmd, c) in &s.commands.commands {
                e.sample(&[("command", cmd)], get(c) as f64);
            }
        }
    }
    // The percentiles come from one histogram per command kept since start, so they, the
    // maximum (quantile 1) and the sum and count describe the same requests.
    if e.family(
        "ellipsis_request_latency_seconds",
        "Request latency since start; quantile 1 is the slowest request.",
        MetricType::Summary,
    ) {
        for (cmd, c) in &s.commands.commands {
            for (q, us) in [
                ("0.5", c.p50_us),
                ("0.9", c.p90_us),
                ("0.99", c.p99_us),
                ("1", c.max_us),
            ] {
                e.sample(&[("command", cmd), ("quantile", q)], us as f64 / 1e6);
            }
            e.summary_sum(&[("command", cmd)], c.latency_sum_us as f64 / 1e6);
            e.summary_count(&[("command", cmd)], c.latency_count as f64);
        }
    }
}

fn export_io(e: &mut Exposition, s: &NodeStats) {
    let io = &s.io;
    let singles: [(&str, &str, MetricType, u64); 18] = [
        (
            "ellipsis_blocking_queue",
            "Engine calls admitted to the blocking pool: running plus waiting.",
            MetricType::Gauge,
            io.blocking_queue,
        ),
        (
            "ellipsis_blocking_queue_limit",
            "Bound of ellipsis_blocking_queue: threads plus the waiting limit.",
            MetricType::Gauge,
            io.blocking_queue_limit,
        ),
        (
            "ellipsis_blocking_active",
            "Engine calls running on a blocking thread.",
            MetricType::Gauge,
            io.blocking_active,
        ),
        (
            "ellipsis_blocking_threads",
            "Blocking threads: how many engine calls run at once.",
            MetricType::Gauge,
            io.blocking_threads,
        ),
        (
            "ellipsis_blocking_waiting",
            "Engine calls waiting for a blocking thread.",
            MetricType::Gauge,
            io.blocking_waiting,
        ),
        (
            "ellipsis_blocking_waiting_limit",
            "Bound of the waiting engine calls; one more is refused with AGAIN.",
            MetricType::Gauge,
            io.blocking_waiting_limit,
        ),
        (
            "ellipsis_blocking_refused_total",
            "Engine calls refused because the blocking pool was full.",
            MetricType::Counter,
            io.blocking_refused,
        ),
        (
            "ellipsis_nonblocking_queue",
            "Requests being handled.",
            MetricType::Gauge,
            io.nonblocking_queue,
        ),
        (
            "ellipsis_nonblocking_queue_limit",
            "Bound of ellipsis_nonblocking_queue.",
            MetricType::Gauge,
            io.nonblocking_queue_limit,
        ),
        (
            "ellipsis_nonblocking_refused_total",
            "Requests answered AGAIN at once because the node or the connection was at its bound.",
            MetricType::Counter,
            io.nonblocking_refused,
        ),
        (
            "ellipsis_receive_buffer_bytes",
            "Memory held for large frames' payloads, arriving or with their requests running.",
            MetricType::Gauge,
            io.receive_buffer_bytes,
        ),
        (
            "ellipsis_receive_buffer_bytes_limit",
            "Bound of ellipsis_receive_buffer_bytes.",
            MetricType::Gauge,
            io.receive_buffer_bytes_limit,
        ),
        (
            "ellipsis_receive_buffer_waits_total",
            "Large frames that waited for receive buffer memory.",
            MetricType::Counter,
            io.receive_buffer_waits,
        ),
        (
            "ellipsis_client_connections",
            "Client connections open.",
            MetricType::Gauge,
            io.client_connections,
        ),
        (
            "ellipsis_notify_watchers",
            "NOTIFY subscriptions held for keys this node owns.",
            MetricType::Gauge,
            io.notify_watchers,
        ),
        (
            "ellipsis_notify_watchers_limit",
            "Bound of ellipsis_notify_watchers.",
            MetricType::Gauge,
            io.notify_watchers_limit,
        ),
        (
            "ellipsis_notify_relays",
            "NOTIFY subscriptions relayed to the keys' owners.",
            MetricType::Gauge,
            io.notify_relays,
        ),
        (
            "ellipsis_notify_relays_limit",
            "Bound of ellipsis_notify_relays.",
            MetricType::Gauge,
            io.notify_relays_limit,
        ),
    ];
    for (name, help, kind, v) in singles {
        e.single(name, help, kind, v as f64);
    }
    let per_peer: [(&str, &str, PeerGetter); 3] = [
        (
            "ellipsis_peer_send_queue",
            "Frames waiting to be sent to a peer.",
            |p| p.send_queue,
        ),
        (
            "ellipsis_peer_send_queue_limit",
            "Bound of ellipsis_peer_send_queue.",
            |p| p.send_queue_limit,
        ),
        (
            "ellipsis_peer_in_flight",
            "Requests waiting for the peer's reply.",
            |p| p.in_flight,
        ),
    ];
    for (name, help, get) in per_peer {
        if e.family(name, help, MetricType::Gauge) {
            for p in &io.peers {
                e.sample(&[("peer", &p.addr)], get(p) as f64);
            }
        }
    }
    if e.family(
        "ellipsis_peer_state",
        "1 for the peer connection's current state, 0 for the others.",
        MetricType::Gauge,
    ) {
        for p in &io.peers {
            state_set(e, &[("peer", &p.addr)], "state", &PEER_STATES, &p.state);
        }
    }
}

fn export_backends(e: &mut Exposition, s: &NodeStats) {
    let per_backend: [(&str, &str, MetricType, BackendGetter); 48] = [
        (
            "ellipsis_backend_write_queue",
            "Writes and removes queued or running on the backend's write queue.",
            MetricType::Gauge,
            |b| Some(b.write_queue.queued as f64),
        ),
        (
            "ellipsis_backend_write_queue_limit",
            "Bound of ellipsis_backend_write_queue; one more is refused with AGAIN.",
            MetricType::Gauge,
            |b| Some(b.write_queue.limit as f64),
        ),
        (
            "ellipsis_backend_write_refused_total",
            "Writes and removes refused because the write queue was full.",
            MetricType::Counter,
            |b| Some(b.write_queue.refused as f64),
        ),
        (
            "ellipsis_backend_write_mutations_total",
            "Writes and removes the write queue ran.",
            MetricType::Counter,
            |b| Some(b.write_queue.mutations as f64),
        ),
        (
            "ellipsis_backend_write_batches_total",
            "Batches the write queue ran them in.",
            MetricType::Counter,
            |b| Some(b.write_queue.batches as f64),
        ),
        (
            "ellipsis_backend_want_defrag_bases",
            "Bases whose removed bytes reached defrag_percentage.",
            MetricType::Gauge,
            |b| Some(b.eblob.want_defrag_bases as f64),
        ),
        (
            "ellipsis_backend_defrag_reclaimable_bytes",
            "Removed bytes of the bases that want defrag (what a compact data-sort frees).",
            MetricType::Gauge,
            |b| Some(b.eblob.defrag_reclaimable_bytes as f64),
        ),
        (
            "ellipsis_backend_records",
            "Live records.",
            MetricType::Gauge,
            |b| Some(b.eblob.live_records as f64),
        ),
        (
            "ellipsis_backend_stored_records",
            "Records held by the bases, removed ones included.",
            MetricType::Gauge,
            |b| Some(b.eblob.records as f64),
        ),
        (
            "ellipsis_backend_removed_records",
            "Removed records still held by the bases.",
            MetricType::Gauge,
            |b| Some(b.eblob.removed_records as f64),
        ),
        (
            "ellipsis_backend_removed_bytes",
            "Removed bytes of every base (what a full data-sort frees).",
            MetricType::Gauge,
            |b| Some(b.eblob.removed_bytes as f64),
        ),
        (
            "ellipsis_backend_size_bytes",
            "Bytes on disk.",
            MetricType::Gauge,
            |b| Some(b.eblob.size_bytes as f64),
        ),
        (
            "ellipsis_backend_corrupted_records",
            "Damaged records found.",
            MetricType::Gauge,
            |b| Some(b.eblob.corrupted as f64),
        ),
        (
            "ellipsis_backend_indexes_rebuilt",
            "Bases whose damaged write-order index was rebuilt from the data at the last open.",
            MetricType::Gauge,
            |b| Some(b.eblob.indexes_rebuilt as f64),
        ),
        (
            "ellipsis_backend_index_ram_bytes",
            "RAM of indexes, blooms and index blocks.",
            MetricType::Gauge,
            |b| {
                Some(
                    (b.eblob.ram_index_bytes
                        + b.eblob.ram_bloom_bytes
                        + b.eblob.ram_index_blocks_bytes) as f64,
                )
            },
        ),
        (
            "ellipsis_backend_hash_index_ram_bytes",
            "RAM of hash indexes (part of ellipsis_backend_index_ram_bytes).",
            MetricType::Gauge,
            |b| Some(b.eblob.ram_index_bytes as f64),
        ),
        (
            "ellipsis_backend_bloom_ram_bytes",
            "RAM of bloom filters (part of ellipsis_backend_index_ram_bytes).",
            MetricType::Gauge,
            |b| Some(b.eblob.ram_bloom_bytes as f64),
        ),
        (
            "ellipsis_backend_index_blocks_ram_bytes",
            "RAM of index blocks (part of ellipsis_backend_index_ram_bytes).",
            MetricType::Gauge,
            |b| Some(b.eblob.ram_index_blocks_bytes as f64),
        ),
        (
            "ellipsis_backend_eblob_reads_total",
            "Successful engine reads since the engine opened.",
            MetricType::Counter,
            |b| Some(b.eblob.reads as f64),
        ),
        (
            "ellipsis_backend_eblob_read_bytes_total",
            "Bytes returned by engine reads since the engine opened.",
            MetricType::Counter,
            |b| Some(b.eblob.read_bytes as f64),
        ),
        (
            "ellipsis_backend_eblob_writes_total",
            "Successful engine writes since the engine opened.",
            MetricType::Counter,
            |b| Some(b.eblob.writes as f64),
        ),
        (
            "ellipsis_backend_eblob_write_bytes_total",
            "Bytes accepted by engine writes since the engine opened.",
            MetricType::Counter,
            |b| Some(b.eblob.write_bytes as f64),
        ),
        (
            "ellipsis_backend_eblob_removes_total",
            "Successful engine removes since the engine opened.",
            MetricType::Counter,
            |b| Some(b.eblob.removes as f64),
        ),
        (
            "ellipsis_backend_eblob_lookups_total",
            "Engine lookups since the engine opened.",
            MetricType::Counter,
            |b| Some(b.eblob.lookups as f64),
        ),
        (
            "ellipsis_backend_eblob_not_found_total",
            "Engine requests answered not found since the engine opened.",
            MetricType::Counter,
            |b| Some(b.eblob.not_found as f64),
        ),
        (
            "ellipsis_backend_eblob_corrupted_reads_total",
            "Engine reads that hit a checksum mismatch since the engine opened.",
            MetricType::Counter,
            |b| Some(b.eblob.corrupted_reads as f64),
        ),
        (
            "ellipsis_backend_eblob_mismatched_writes_total",
            "Writes refused since the engine opened because their data did not hash to the \
             checksum they named (a copy damaged at its source or changed in flight).",
            MetricType::Counter,
            |b| Some(b.eblob.mismatched_writes as f64),
        ),
        (
            "ellipsis_backend_eblob_errors_total",
            "Engine requests that failed for another reason since the engine opened.",
            MetricType::Counter,
            |b| Some(b.eblob.errors as f64),
        ),
        (
            "ellipsis_backend_eblob_rotations_total",
            "Open bases closed because they were full since the engine opened.",
            MetricType::Counter,
            |b| Some(b.eblob.rotations as f64),
        ),
        (
            "ellipsis_backend_bases",
            "Bases of the backend.",
            MetricType::Gauge,
            |b| Some(b.eblob.bases.len() as f64),
        ),
        (
            "ellipsis_backend_sorted_bases",
            "Bases sorted by data-sort.",
            MetricType::Gauge,
            |b| Some(b.eblob.sorted_bases as f64),
        ),
        (
            "ellipsis_backend_read_only",
            "1 when the backend refuses writes.",
            MetricType::Gauge,
            |b| Some(flag(b.read_only_reason.is_some())),
        ),
        (
            "ellipsis_backend_ring_ids",
            "Ring ids the backend holds.",
            MetricType::Gauge,
            |b| Some(b.ring_ids as f64),
        ),
        (
            "ellipsis_backend_ring_share_ratio",
            "Share of its group's ring.",
            MetricType::Gauge,
            |b| Some(b.ring_share),
        ),
        (
            "ellipsis_backend_delay_seconds",
            "Artificial delay added to each request.",
            MetricType::Gauge,
            |b| Some(f64::from(b.delay_ms) / 1e3),
        ),
        (
            "ellipsis_backend_fs_size_bytes",
            "Size of the filesystem holding the backend's directory.",
            MetricType::Gauge,
            |b| b.fs_total_bytes.map(|v| v as f64),
        ),
        (
            "ellipsis_backend_fs_free_bytes",
            "Bytes of that filesystem available to the node.",
            MetricType::Gauge,
            |b| b.fs_free_bytes.map(|v| v as f64),
        ),
        (
            "ellipsis_backend_defrag_next_start_timestamp_seconds",
            "Next planned data-sort start, Unix seconds (absent when none is planned).",
            MetricType::Gauge,
            |b| b.defrag.next_start_unix_s.map(|v| v as f64),
        ),
        (
            "ellipsis_backend_defrag_last_start_timestamp_seconds",
            "Last data-sort start, Unix seconds.",
            MetricType::Gauge,
            |b| b.defrag.last_start_unix_s.map(|v| v as f64),
        ),
        (
            "ellipsis_backend_defrag_last_duration_seconds",
            "Duration of the last data-sort.",
            MetricType::Gauge,
            |b| b.defrag.last_duration_ms.map(|v| v as f64 / 1e3),
        ),
        (
            "ellipsis_backend_defrag_compact",
            "1 when data-sort runs in compact mode (only the bases that want defrag).",
            MetricType::Gauge,
            |b| Some(flag(b.defrag.compact)),
        ),
        (
            "ellipsis_backend_defrag_timeout_seconds",
            "TIMED data-sort period.",
            MetricType::Gauge,
            |b| Some(b.defrag.timeout_s as f64),
        ),
        (
            "ellipsis_backend_defrag_window_hour",
            "SCHEDULED data-sort window centre, UTC hour.",
            MetricType::Gauge,
            |b| Some(f64::from(b.defrag.time_hour)),
        ),
        (
            "ellipsis_backend_defrag_splay_hours",
            "SCHEDULED data-sort window half-width, hours.",
            MetricType::Gauge,
            |b| Some(f64::from(b.defrag.splay_hours)),
        ),
        // Progress of a running data-sort: no sample while none runs.
        (
            "ellipsis_backend_defrag_done_bases",
            "Bases the running data-sort has done.",
            MetricType::Gauge,
            |b| b.defrag.progress_bases.map(|p| p.0 as f64),
        ),
        (
            "ellipsis_backend_defrag_planned_bases",
            "Bases the running data-sort plans.",
            MetricType::Gauge,
            |b| b.defrag.progress_bases.map(|p| p.1 as f64),
        ),
        (
            "ellipsis_backend_defrag_done_bytes",
            "Source bytes the running data-sort has done.",
            MetricType::Gauge,
            |b| b.defrag.progress_bytes.map(|p| p.0 as f64),
        ),
        (
            "ellipsis_backend_defrag_planned_bytes",
            "Source bytes the running data-sort plans.",
            MetricType::Gauge,
            |b| b.defrag.progress_bytes.map(|p| p.1 as f64),
        ),
    ];
    let labelled: Vec<(String, String)> = s
        .backends
        .iter()
        .map(|b| (b.id.to_string(), b.group.to_string()))
        .collect();
    let backends = || {
        s.backends
            .iter()
            .zip(&labelled)
            .map(|(b, (id, group))| (b, [("backend", id.as_str()), ("group", group.as_str())]))
    };
    for (name, help, kind, get) in per_backend {
        if e.family(name, help, kind) {
            for (b, labels) in backends() {
                if let Some(v) = get(b) {
                    e.sample(&labels, v);
                }
            }
        }
    }
    if e.family(
        "ellipsis_backend_info",
        "Always 1; the labels say where the backend keeps its data.",
        MetricType::Gauge,
    ) {
        for (b, [backend, group]) in backends() {
            e.sample(&[backend, group, ("dir", &b.dir)], 1.0);
        }
    }
    let known: Vec<&str> = BackendState::ALL.iter().map(|s| s.as_str()).collect();
    if e.family(
        "ellipsis_backend_state",
        "1 for the backend's serving state, 0 for the others.",
        MetricType::Gauge,
    ) {
        for (b, labels) in backends() {
            state_set(e, &labels, "state", &known, b.state.as_str());
        }
    }
    let modes: Vec<&str> = DefragMode::ALL.iter().map(|m| m.as_str()).collect();
    if e.family(
        "ellipsis_backend_defrag_mode",
        "1 for the backend's data-sort mode, 0 for the others.",
        MetricType::Gauge,
    ) {
        for (b, labels) in backends() {
            state_set(e, &labels, "mode", &modes, b.defrag.mode.as_str());
        }
    }
    if e.family(
        "ellipsis_backend_defrag_state",
        "1 for the backend's data-sort state, 0 for the others.",
        MetricType::Gauge,
    ) {
        for (b, labels) in backends() {
            state_set(e, &labels, "state", &DEFRAG_STATES, &b.defrag.state);
        }
    }
    if e.family(
        "ellipsis_backend_defrag_last_result",
        "1 for how the last data-sort ended (ok, stopped, error), 0 for the others; no sample before the first.",
        MetricType::Gauge,
    ) {
        for (b, labels) in backends() {
            if let Some(r) = &b.defrag.last_result {
                let kind = r.split(':').next().unwrap_or_default();
                state_set(e, &labels, "result", &DEFRAG_RESULTS, kind);
            }
        }
    }
    let per_base: [(&str, &str, BaseGetter); 6] = [
        (
            "ellipsis_backend_base_records",
            "Records of one base, removed ones included.",
            |x| x.records as f64,
        ),
        (
            "ellipsis_backend_base_removed_records",
            "Removed records of one base.",
            |x| x.removed as f64,
        ),
        (
            "ellipsis_backend_base_removed_bytes",
            "Removed bytes of one base.",
            |x| x.removed_bytes as f64,
        ),
        (
            "ellipsis_backend_base_size_bytes",
            "Data file bytes of one base.",
            |x| x.size_bytes as f64,
        ),
        (
            "ellipsis_backend_base_sorted",
            "1 when the base was sorted by data-sort.",
            |x| flag(x.sorted),
        ),
        (
            "ellipsis_backend_base_want_defrag",
            "1 when the base's removed bytes reached defrag_percentage.",
            |x| flag(x.want_defrag),
        ),
    ];
    for (name, help, get) in per_base {
        if e.family(name, help, MetricType::Gauge) {
            for (b, [backend, group]) in backends() {
                for x in &b.eblob.bases {
                    let base = x.index.to_string();
                    e.sample(&[backend, group, ("base", &base)], get(x));
                }
            }
        }
    }
}

fn export_cache(e: &mut Exposition, s: &NodeStats) {
    // The node-wide cache (backend `None`) is labelled with an empty backend.
    let ids: Vec<String> = s
        .cache
        .iter()
        .map(|c| c.backend.map(|b| b.to_string()).unwrap_or_default())
        .collect();
    let per_cache: [(&str, &str, MetricType, CacheGetter); 11] = [
        (
            "ellipsis_cache_hits_total",
            "Cache hits.",
            MetricType::Counter,
            |c| c.hits,
        ),
        (
            "ellipsis_cache_misses_total",
            "Cache misses.",
            MetricType::Counter,
            |c| c.misses,
        ),
        (
            "ellipsis_cache_size_bytes",
            "Bytes held by the cache, per-object overhead and unwritten evicted objects included.",
            MetricType::Gauge,
            |c| c.size_bytes,
        ),
        (
            "ellipsis_cache_max_size_bytes",
            "Configured cache capacity.",
            MetricType::Gauge,
            |c| c.max_size_bytes,
        ),
        (
            "ellipsis_cache_objects",
            "Objects in the cache segments.",
            MetricType::Gauge,
            |c| c.objects,
        ),
        (
            "ellipsis_cache_dirty_objects",
            "Dirty objects not yet confirmed written.",
            MetricType::Gauge,
            |c| c.dirty_objects,
        ),
        (
            "ellipsis_cache_evictions_total",
            "Objects pushed out of the probation segment to make room.",
            MetricType::Counter,
            |c| c.evictions,
        ),
        (
            "ellipsis_cache_expirations_total",
            "Objects dropped because their lifetime ended.",
            MetricType::Counter,
            |c| c.expirations,
        ),
        (
            "ellipsis_cache_writebacks_total",
            "Write-backs of dirty objects confirmed.",
            MetricType::Counter,
            |c| c.writebacks,
        ),
        (
            "ellipsis_cache_writeback_failures_total",
            "Write-backs reported failed (the object stays dirty and is retried).",
            MetricType::Counter,
            |c| c.writeback_failures,
        ),
        (
            "ellipsis_cache_refused_total",
            "Inserts refused (the request wrote through).",
            MetricType::Counter,
            |c| c.refused,
        ),
    ];
    for (name, help, kind, get) in per_cache {
        if e.family(name, help, kind) {
            for (c, id) in s.cache.iter().zip(&ids) {
                e.sample(&[("backend", id)], get(&c.stats) as f64);
            }
        }
    }
    if e.family(
        "ellipsis_cache_segment_size_bytes",
        "Bytes per cache segment, segment 0 being probation.",
        MetricType::Gauge,
    ) {
        for (c, id) in s.cache.iter().zip(&ids) {
            for (i, bytes) in c.stats.segment_sizes_bytes.iter().enumerate() {
                e.sample(
                    &[("backend", id), ("segment", &i.to_string())],
                    *bytes as f64,
                );
            }
        }
    }
}

fn export_procfs(e: &mut Exposition, s: &NodeStats) {
    let p = &s.procfs;
    // Figures procfs could not give are left out, never exported as 0.
    let figures: [(&str, &str, MetricType, Option<f64>); 9] = [
        (
            "ellipsis_process_resident_memory_bytes",
            "Resident set size.",
            MetricType::Gauge,
            p.rss_bytes.map(|v| v as f64),
        ),
        (
            "ellipsis_process_virtual_memory_bytes",
            "Virtual memory size.",
            MetricType::Gauge,
            p.vm_bytes.map(|v| v as f64),
        ),
        (
            "ellipsis_process_cpu_seconds_total",
            "CPU time, user + system.",
            MetricType::Counter,
            p.cpu_user_s.zip(p.cpu_system_s).map(|(u, sy)| u + sy),
        ),
        (
            "ellipsis_process_cpu_user_seconds_total",
            "CPU time in user mode.",
            MetricType::Counter,
            p.cpu_user_s,
        ),
        (
            "ellipsis_process_cpu_system_seconds_total",
            "CPU time in the kernel on behalf of the process.",
            MetricType::Counter,
            p.cpu_system_s,
        ),
        (
            "ellipsis_process_io_read_bytes_total",
            "Bytes the process caused to be read from storage.",
            MetricType::Counter,
            p.io_read_bytes.map(|v| v as f64),
        ),
        (
            "ellipsis_process_io_write_bytes_total",
            "Bytes the process caused to be written to storage.",
            MetricType::Counter,
            p.io_write_bytes.map(|v| v as f64),
        ),
        (
            "ellipsis_process_open_fds",
            "Open file descriptors.",
            MetricType::Gauge,
            p.open_fds.map(|v| v as f64),
        ),
        (
            "ellipsis_process_threads",
            "Threads of the process.",
            MetricType::Gauge,
            p.threads.map(|v| v as f64),
        ),
    ];
    for (name, help, kind, v) in figures {
        if let Some(v) = v {
            e.single(name, help, kind, v);
        }
    }
    if let Some(loads) = p.load_avg {
        if e.family(
            "ellipsis_host_load_average",
            "Host load average over the last 1, 5 and 15 minutes.",
            MetricType::Gauge,
        ) {
            for (minutes, v) in ["1", "5", "15"].into_iter().zip(loads) {
                e.sample(&[("minutes", minutes)], v);
            }
        }
    }
}

fn export_workers(e: &mut Exposition, s: &NodeStats) {
    e.single(
        "ellipsis_jobs_running",
        "Background jobs not finished yet.",
        MetricType::Gauge,
        s.workers.iter().filter(|j| !j.state.is_finished()).count() as f64,
    );
    // Finished jobs are counted from the bounded history the registry keeps, so those counts
    // are of recent jobs, not since start.
    if e.family(
        "ellipsis_jobs",
        "Background jobs the registry holds, by kind and state (finished ones: recent history only).",
        MetricType::Gauge,
    ) {
        for kind in JobKind::ALL {
            for state in JobState::ALL {
                let n = s
                    .workers
                    .iter()
                    .filter(|j| j.kind == kind && j.state == state)
                    .count();
                e.sample(
                    &[("kind", kind.as_str()), ("state", state.as_str())],
                    n as f64,
                );
            }
        }
    }
}

fn export_routes(e: &mut Exposition, s: &NodeStats) {
    e.single(
        "ellipsis_routes_generation",
        "Generation of the node's route table (incremented on every change).",
        MetricType::Gauge,
        s.routes.table.generation as f64,
    );
    e.single(
        "ellipsis_routes_known_nodes",
        "Nodes the node knows, itself included.",
        MetricType::Gauge,
        s.routes.nodes.len() as f64,
    );
    if e.family(
        "ellipsis_routes_entries",
        "Ring entries of each group in the node's route table.",
        MetricType::Gauge,
    ) {
        for (group, entries) in &s.routes.table.groups {
            e.sample(&[("group", &group.to_string())], entries.len() as f64);
        }
    }
}
