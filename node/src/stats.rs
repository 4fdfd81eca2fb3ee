//! Builds the node's stats document (`ellipsis_core::stats::NodeStats`) and its Prometheus form.
//!
//! Read-only snapshots: nothing here changes state. Engine stats are cheap in-memory counters
//! (no disk IO), so building the document never blocks on the disk.

use std::sync::atomic::Ordering;

use ellipsis_core::stats::{
    BackendStats, BaseSummary, CacheEntryStats, DefragStats, DefragSummary, EblobSummary, IoStats,
    JobState, NodeInfo, NodeStats, PeerInfo, RoutesStats,
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

type CommandGetter = fn(&ellipsis_core::stats::CommandStat) -> u64;
type BackendGetter = fn(&BackendStats) -> f64;

/// The stats in Prometheus text format.
pub fn prometheus(node: &Node) -> String {
    let s = collect(node);
    let mut e = Exposition::new();
    e.single(
        "ellipsis_uptime_seconds",
        "Seconds since the node started.",
        MetricType::Gauge,
        s.node.uptime_s as f64,
    );
    let counters: [(&str, &str, CommandGetter); 6] = [
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
            "ellipsis_requests_forwarded_total",
            "Requests forwarded to the owner.",
            |c| c.forwarded,
        ),
    ];
    for (name, help, get) in counters {
        e.family(name, help, MetricType::Counter);
        for (cmd, c) in &s.commands.commands {
            e.sample(&[("command", cmd)], get(c) as f64);
        }
    }
    e.family(
        "ellipsis_request_latency_seconds",
        "Request latency percentiles.",
        MetricType::Gauge,
    );
    for (cmd, c) in &s.commands.commands {
        for (q, us) in [("0.5", c.p50_us), ("0.9", c.p90_us), ("0.99", c.p99_us)] {
            e.sample(&[("command", cmd), ("quantile", q)], us as f64 / 1e6);
        }
    }
    e.single(
        "ellipsis_blocking_queue",
        "Engine calls running or waiting.",
        MetricType::Gauge,
        s.io.blocking_queue as f64,
    );
    e.single(
        "ellipsis_nonblocking_queue",
        "Requests being handled.",
        MetricType::Gauge,
        s.io.nonblocking_queue as f64,
    );
    e.single(
        "ellipsis_client_connections",
        "Client connections open.",
        MetricType::Gauge,
        s.io.client_connections as f64,
    );
    e.single(
        "ellipsis_notify_watchers",
        "NOTIFY subscriptions held for keys this node owns.",
        MetricType::Gauge,
        s.io.notify_watchers as f64,
    );
    e.single(
        "ellipsis_notify_relays",
        "NOTIFY subscriptions relayed to the keys' owners.",
        MetricType::Gauge,
        s.io.notify_relays as f64,
    );
    e.family(
        "ellipsis_peer_send_queue",
        "Frames waiting to be sent to a peer.",
        MetricType::Gauge,
    );
    for p in &s.io.peers {
        e.sample(&[("peer", &p.addr)], p.send_queue as f64);
    }
    let per_backend: [(&str, &str, MetricType, BackendGetter); 13] = [
        (
            "ellipsis_backend_write_queue",
            "Writes and removes queued or running on the backend's write queue.",
            MetricType::Gauge,
            |b| b.write_queue.queued as f64,
        ),
        (
            "ellipsis_backend_write_mutations_total",
            "Writes and removes the write queue ran.",
            MetricType::Counter,
            |b| b.write_queue.mutations as f64,
        ),
        (
            "ellipsis_backend_write_batches_total",
            "Batches the write queue ran them in.",
            MetricType::Counter,
            |b| b.write_queue.batches as f64,
        ),
        (
            "ellipsis_backend_want_defrag_bases",
            "Bases whose removed bytes reached defrag_percentage.",
            MetricType::Gauge,
            |b| b.eblob.want_defrag_bases as f64,
        ),
        (
            "ellipsis_backend_defrag_reclaimable_bytes",
            "Removed bytes of the bases that want defrag (what a compact data-sort frees).",
            MetricType::Gauge,
            |b| b.eblob.defrag_reclaimable_bytes as f64,
        ),
        (
            "ellipsis_backend_records",
            "Live records.",
            MetricType::Gauge,
            |b| b.eblob.live_records as f64,
        ),
        (
            "ellipsis_backend_removed_bytes",
            "Removed bytes of every base (what a full data-sort frees).",
            MetricType::Gauge,
            |b| b.eblob.removed_bytes as f64,
        ),
        (
            "ellipsis_backend_size_bytes",
            "Bytes on disk.",
            MetricType::Gauge,
            |b| b.eblob.size_bytes as f64,
        ),
        (
            "ellipsis_backend_corrupted_records",
            "Damaged records found.",
            MetricType::Gauge,
            |b| b.eblob.corrupted as f64,
        ),
        (
            "ellipsis_backend_indexes_rebuilt",
            "Bases whose damaged write-order index was rebuilt from the data at the last open.",
            MetricType::Gauge,
            |b| b.eblob.indexes_rebuilt as f64,
        ),
        (
            "ellipsis_backend_index_ram_bytes",
            "RAM of indexes, blooms and index blocks.",
            MetricType::Gauge,
            |b| {
                (b.eblob.ram_index_bytes + b.eblob.ram_bloom_bytes + b.eblob.ram_index_blocks_bytes)
                    as f64
            },
        ),
        (
            "ellipsis_backend_read_only",
            "1 when the backend refuses writes.",
            MetricType::Gauge,
            |b| f64::from(u8::from(b.read_only_reason.is_some())),
        ),
        (
            "ellipsis_backend_ring_share_ratio",
            "Share of its group's ring.",
            MetricType::Gauge,
            |b| b.ring_share,
        ),
    ];
    for (name, help, kind, get) in per_backend {
        e.family(name, help, kind);
        for b in &s.backends {
            let id = b.id.to_string();
            let group = b.group.to_string();
            e.sample(&[("backend", &id), ("group", &group)], get(b));
        }
    }
    e.family(
        "ellipsis_cache_hits_total",
        "Cache hits.",
        MetricType::Counter,
    );
    for c in &s.cache {
        let id = c.backend.map(|b| b.to_string()).unwrap_or_default();
        e.sample(&[("backend", &id)], c.stats.hits as f64);
    }
    e.family(
        "ellipsis_cache_misses_total",
        "Cache misses.",
        MetricType::Counter,
    );
    for c in &s.cache {
        let id = c.backend.map(|b| b.to_string()).unwrap_or_default();
        e.sample(&[("backend", &id)], c.stats.misses as f64);
    }
    e.family(
        "ellipsis_cache_size_bytes",
        "Bytes held by the cache.",
        MetricType::Gauge,
    );
    for c in &s.cache {
        let id = c.backend.map(|b| b.to_string()).unwrap_or_default();
        e.sample(&[("backend", &id)], c.stats.size_bytes as f64);
    }
    if let Some(rss) = s.procfs.rss_bytes {
        e.single(
            "ellipsis_process_resident_memory_bytes",
            "Resident set size.",
            MetricType::Gauge,
            rss as f64,
        );
    }
    if let (Some(u), Some(sy)) = (s.procfs.cpu_user_s, s.procfs.cpu_system_s) {
        e.single(
            "ellipsis_process_cpu_seconds_total",
            "CPU time, user + system.",
            MetricType::Counter,
            u + sy,
        );
    }
    e.single(
        "ellipsis_jobs_running",
        "Background jobs running.",
        MetricType::Gauge,
        node.workers.running() as f64,
    );
    e.finish()
}
