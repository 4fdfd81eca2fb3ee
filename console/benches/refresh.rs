//! One console refresh at scale: 256 simulated nodes' stats JSON (the seven categories each
//! node serves, plus 16 call trees per node) and one route list of 4096 ring ids are parsed
//! and built into a `ClusterModel`, as the poller does after its HTTP round. Prints CPU time
//! per refresh (this thread's on-CPU time from /proc/thread-self/schedstat, wall time where
//! that is missing), the peak RSS of the process, and the time to render one 160×48 frame.
//!
//! Goal (checked here, not in tests): ≤ 100 ms CPU and ≤ 50 MB RSS per refresh.
//! Run: `cargo bench -p ellipsis-console` (harness = false).

use std::collections::BTreeMap;
use std::time::Instant;

use ellipsis_console::app::{App, Tab};
use ellipsis_console::poll::{parse_categories, ModelBuilder, NodeFetch};
use ellipsis_console::ui::render_to_text;
use ellipsis_core::route::{BackendAddr, RouteTable};
use ellipsis_core::stats::{
    BackendStats, BaseSummary, CacheEntryStats, CacheStats, CommandStat, CommandStats, DefragMode,
    DefragStats, EblobSummary, IoStats, JobKind, JobState, JobStatus, NodeInfo, PeerInfo,
    PeerStats, ProcStats, RoutesStats,
};
use ellipsis_core::Id;

const NODES: usize = 256;
const BACKENDS: u32 = 4;
const IDS_PER_BACKEND: usize = 4;
const TRACES_PER_NODE: usize = 16;
const ROUNDS: usize = 20;

fn addr(i: usize) -> String {
    format!("10.0.{}.{}:1025", i / 250, i % 250 + 1)
}

fn http_addr(i: usize) -> String {
    format!("10.0.{}.{}:8080", i / 250, i % 250 + 1)
}

/// The seven category documents of node `i` at counter scale `round`.
fn node_docs(i: usize, round: u64) -> [String; 7] {
    let node = NodeInfo {
        addr: addr(i),
        http_addr: http_addr(i),
        version: "0.1.0".into(),
        uptime_s: 86_400 + round,
        groups: vec![(i % 3) as u32 + 1],
        now_unix_s: 1_795_608_000 + round,
    };
    let mut commands = BTreeMap::new();
    for (k, name) in [
        "LOOKUP",
        "ROUTE_LIST",
        "WRITE",
        "READ",
        "DEL",
        "READ_RANGE",
        "DEL_RANGE",
        "BULK_READ",
        "ITERATOR",
        "SEND",
        "BACKEND_CONTROL",
        "BACKEND_STATUS",
        "MONITOR_STAT",
    ]
    .iter()
    .enumerate()
    {
        commands.insert(
            (*name).to_owned(),
            CommandStat {
                successes: 1_000_000 * (k as u64 + 1) + round * 1_000,
                failures: 17 * k as u64,
                not_found: 3_000,
                bytes: 4_096_000_000 + round,
                cache_hits: 600_000,
                disk: 400_000,
                forwarded: 1_234,
                p50_us: 300 + k as u64,
                p90_us: 900,
                p99_us: 2_500 + i as u64,
                max_us: 90_000,
                latency_count: 1_000_000 * (k as u64 + 1) + round * 1_000 + 17 * k as u64 + 3_000,
                latency_sum_us: 450_000_000,
            },
        );
    }
    let io = IoStats {
        blocking_queue: 3,
        blocking_queue_limit: 1_024,
        blocking_active: 2,
        blocking_threads: 16,
        blocking_waiting: 1,
        blocking_waiting_limit: 1_008,
        blocking_refused: 0,
        nonblocking_queue: 12,
        nonblocking_queue_limit: 4_096,
        nonblocking_refused: 0,
        receive_buffer_bytes: 4 << 20,
        receive_buffer_bytes_limit: 256 << 20,
        receive_buffer_waits: 0,
        client_connections: 40,
        notify_watchers: 3,
        notify_watchers_limit: 10_000,
        notify_relays: 1,
        notify_relays_limit: 256,
        peers: (1..=8)
            .map(|p| PeerStats {
                addr: addr((i + p) % NODES),
                state: "connected".into(),
                send_queue: p as u64,
                send_queue_limit: 1_024,
                in_flight: 2,
            })
            .collect(),
    };
    let cache: Vec<CacheEntryStats> = (0..=BACKENDS)
        .map(|b| CacheEntryStats {
            backend: (b > 0).then_some(b),
            stats: CacheStats {
                size_bytes: 100 << 20,
                max_size_bytes: 256 << 20,
                objects: 50_000,
                segment_sizes_bytes: vec![40 << 20, 60 << 20],
                hits: 600_000,
                misses: 200_000,
                evictions: 1_000,
                ..CacheStats::default()
            },
        })
        .collect();
    let backends: Vec<BackendStats> = (1..=BACKENDS)
        .map(|b| BackendStats {
            id: b,
            group: (i % 3) as u32 + 1,
            dir: format!("/srv/ellipsis/{b}"),
            ring_ids: IDS_PER_BACKEND as u64,
            ring_share: 1.0 / NODES as f64,
            eblob: EblobSummary {
                records: 5_000_000,
                live_records: 4_000_000,
                removed_records: 1_000_000,
                removed_bytes: 4 << 30,
                size_bytes: 20 << 30,
                ram_index_bytes: 64 << 20,
                ram_bloom_bytes: 8 << 20,
                ram_index_blocks_bytes: 4 << 20,
                bases: (0..12)
                    .map(|n| BaseSummary {
                        index: n,
                        records: 400_000,
                        removed: 80_000,
                        removed_bytes: 300 << 20,
                        size_bytes: 1 << 30,
                        sorted: n < 11,
                        want_defrag: n % 4 == 0,
                    })
                    .collect(),
                ..EblobSummary::default()
            },
            defrag: DefragStats {
                mode: DefragMode::Scheduled,
                timeout_s: 86_400,
                time_hour: (i % 24) as u8,
                splay_hours: 1,
                state: "idle".into(),
                next_start_unix_s: Some(1_795_610_000),
                last_result: Some("ok: 3 bases".into()),
                ..DefragStats::default()
            },
            ..BackendStats::default()
        })
        .collect();
    let procfs = ProcStats {
        cpu_user_s: Some(1_000.0 + round as f64),
        cpu_system_s: Some(200.0),
        rss_bytes: Some(2 << 30),
        vm_bytes: Some(8 << 30),
        io_read_bytes: Some(1 << 40),
        io_write_bytes: Some(1 << 40),
        load_avg: Some([1.5, 1.2, 1.0]),
        open_fds: Some(400),
        threads: Some(64),
    };
    let workers: Vec<JobStatus> = (0..3)
        .map(|j| JobStatus {
            id: j,
            kind: JobKind::DataSort,
            target: format!("backend {}", j + 1),
            state: if j == 0 {
                JobState::Running
            } else {
                JobState::Done
            },
            done_keys: 100_000,
            total_keys: Some(400_000),
            done_bytes: 1 << 28,
            total_bytes: Some(1 << 30),
            rate_keys_per_s: 10_000.0,
            rate_bytes_per_s: 1e8,
            errors: 0,
            rests: 0,
            rested_ms: 0,
            last_error: None,
            started_at_s: Some(1_795_600_000),
            finished_at_s: None,
            result: None,
        })
        .collect();
    let j = |v: serde_json::Result<String>| v.expect("stats serialise");
    [
        j(serde_json::to_string(&node)),
        j(serde_json::to_string(&CommandStats { commands })),
        j(serde_json::to_string(&io)),
        j(serde_json::to_string(&cache)),
        j(serde_json::to_string(&backends)),
        j(serde_json::to_string(&procfs)),
        j(serde_json::to_string(&workers)),
    ]
}

fn traces_doc(i: usize) -> String {
    let trees: Vec<serde_json::Value> = (0..TRACES_PER_NODE)
        .map(|t| {
            serde_json::json!({
                "id": format!("{:016x}", (i * 1_000 + t) as u64),
                "complete": true,
                "start_unix_us": 1_795_608_000_000_000u64 + t as u64,
                "actions": [{
                    "name": "READ", "start_time": 0, "stop_time": 1_800,
                    "actions": [
                        {"name": "net.recv", "start_time": 0, "stop_time": 100},
                        {"name": "cache.lookup", "start_time": 100, "stop_time": 150},
                        {"name": "eblob.read", "start_time": 150, "stop_time": 1_600,
                         "actions": [{"name": "eblob.lookup", "start_time": 160, "stop_time": 400}]},
                        {"name": "reply", "start_time": 1_600, "stop_time": 1_800}
                    ]
                }]
            })
        })
        .collect();
    serde_json::to_string(&trees).expect("traces serialise")
}

fn routes_doc() -> String {
    let mut table = RouteTable::new();
    let mut seed = 0x1234_5678_u64;
    for i in 0..NODES {
        let node = addr(i).parse().expect("valid address");
        for b in 1..=BACKENDS {
            let ids: Vec<Id> = (0..IDS_PER_BACKEND)
                .map(|_| {
                    let mut bytes = [0u8; 64];
                    for chunk in bytes.chunks_mut(8) {
                        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        chunk.copy_from_slice(&seed.to_be_bytes());
                    }
                    Id(bytes)
                })
                .collect();
            table.set_backend((i % 3) as u32 + 1, BackendAddr { node, backend: b }, &ids);
        }
    }
    let routes = RoutesStats {
        table,
        nodes: (0..NODES)
            .map(|i| PeerInfo {
                addr: addr(i),
                http_addr: Some(http_addr(i)),
            })
            .collect(),
    };
    serde_json::to_string(&routes).expect("routes serialise")
}

/// This thread's on-CPU nanoseconds (Linux), if readable.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// (current, peak) resident set in bytes (Linux), if readable.
fn rss_bytes() -> (Option<u64>, Option<u64>) {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return (None, None);
    };
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1_024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mb(b: Option<u64>) -> String {
    b.map_or("n/a".into(), |b| format!("{:.1} MB", b as f64 / 1e6))
}

fn main() {
    // The benchmark harness passes flags such as `--bench`; nothing to configure here.
    let routes = routes_doc();
    let traces: Vec<String> = (0..NODES).map(traces_doc).collect();
    let mut builder = ModelBuilder::new();
    let mut cpu_ms = Vec::with_capacity(ROUNDS);
    let mut input_bytes = 0usize;
    let mut last = None;
    for round in 0..ROUNDS as u64 {
        // The documents differ per round (counters move) as they would between polls.
        let docs: Vec<[String; 7]> = (0..NODES).map(|i| node_docs(i, round)).collect();
        input_bytes = routes.len()
            + docs.iter().flatten().map(String::len).sum::<usize>()
            + traces.iter().map(String::len).sum::<usize>();
        let cpu0 = thread_cpu_ns();
        let wall0 = Instant::now();
        let routes_parsed: RoutesStats = serde_json::from_str(&routes).expect("routes parse");
        let fetches: Vec<NodeFetch> = docs
            .iter()
            .zip(&traces)
            .enumerate()
            .map(|(i, (d, t))| {
                let refs = [
                    d[0].as_bytes(),
                    d[1].as_bytes(),
                    d[2].as_bytes(),
                    d[3].as_bytes(),
                    d[4].as_bytes(),
                    d[5].as_bytes(),
                    d[6].as_bytes(),
                ];
                NodeFetch {
                    http_addr: http_addr(i),
                    addr_hint: Some(addr(i)),
                    at_ms: round * 1_000,
                    stats: parse_categories(&refs).map_err(|e| e.to_string()),
                    traces: serde_json::from_str(t).expect("traces parse"),
                }
            })
            .collect();
        let model = builder.build(&fetches, Some(&routes_parsed), 1_795_608_000 + round);
        let spent_ns = match (cpu0, thread_cpu_ns()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => wall0.elapsed().as_nanos() as u64,
        };
        cpu_ms.push(spent_ns as f64 / 1e6);
        assert_eq!(model.nodes.len(), NODES);
        assert!(model.nodes.iter().all(|n| n.up));
        last = Some(model);
    }
    let model = last.expect("at least one round");
    let mut app = App::new(false, 1_000);
    app.on_model(model.clone());
    let mut render_ms = Vec::new();
    for tab in Tab::ALL {
        app.tab = tab;
        let t0 = Instant::now();
        let text = render_to_text(&app, 160, 48);
        render_ms.push((tab.command(), t0.elapsed().as_secs_f64() * 1e3));
        assert!(!text.is_empty());
    }
    // The first round has no previous counters; the rest are steady-state refreshes.
    let steady = &cpu_ms[1..];
    let mean = steady.iter().sum::<f64>() / steady.len() as f64;
    let max = steady.iter().copied().fold(0.0, f64::max);
    let (rss, peak) = rss_bytes();
    println!("console refresh: {NODES} nodes × {BACKENDS} backends, {} ring ids, {TRACES_PER_NODE} traces/node", NODES * BACKENDS as usize * IDS_PER_BACKEND);
    println!(
        "  input JSON per refresh: {:.1} MB",
        input_bytes as f64 / 1e6
    );
    println!("  parse + model build CPU: mean {mean:.1} ms, max {max:.1} ms over {} refreshes (first: {:.1} ms)", steady.len(), cpu_ms[0]);
    println!("  RSS now {}, peak {}", mb(rss), mb(peak));
    println!(
        "  model: {} nodes, {} ring ranges, {} traces, {} jobs, ops {:.0}/s",
        model.nodes.len(),
        model.rings.iter().map(|r| r.ranges.len()).sum::<usize>(),
        model.traces.len(),
        model.jobs.len(),
        model.ops_per_s()
    );
    let frames: Vec<String> = render_ms
        .iter()
        .map(|(t, ms)| format!("{t} {ms:.1}"))
        .collect();
    println!("  one 160×48 frame (ms): {}", frames.join(", "));
    let ok_cpu = max <= 100.0;
    let ok_rss = peak.is_none_or(|p| p <= 50_000_000);
    println!(
        "  goal ≤ 100 ms CPU: {}; goal ≤ 50 MB RSS: {}",
        if ok_cpu { "met" } else { "MISSED" },
        if ok_rss { "met" } else { "MISSED" }
    );
}
