//! Synthetic cluster models: for snapshot tests, `ell top --once` examples and the 256-node
//! rendering benchmark. Deterministic: the same arguments give the same model.

use crate::model::{
    ActionNode, BackendRow, CacheRow, ClusterModel, CommandRow, DefragRow, GroupRing, JobRow,
    NodeModel, PeerRow, QueueModel, RingRange, TraceSummary,
};

/// A cluster of `nodes` nodes in `groups` groups, one backend each; node 2 (if any) is down
/// and, as after a failed poll, known only by its address, groups and error.
///
/// `cluster(0, 0, now)` is what the console holds before any node answered: no nodes, no
/// route table, no history, nothing but the refresh time.
pub fn cluster(nodes: usize, groups: u32, now_s: u64) -> ClusterModel {
    let addr = |i: usize| format!("127.0.0.1:{}", 1025 + i);
    let mut model = ClusterModel {
        refreshed_at_s: now_s,
        ..ClusterModel::default()
    };
    if nodes == 0 {
        return model;
    }
    let groups = groups.max(1);
    for i in 0..nodes {
        let group = (i as u32 % groups) + 1;
        let up = i != 2;
        let records = 10_000 + i as u64 * 1_000;
        let scheduled = i % 2 == 0;
        if !up {
            // As the poller builds it: a node that did not answer has only its address,
            // its groups (from the route table) and the error.
            model.nodes.push(NodeModel {
                addr: addr(i),
                up,
                error: Some("connection refused".to_owned()),
                groups: vec![group],
                ..NodeModel::default()
            });
            continue;
        }
        model.nodes.push(NodeModel {
            addr: addr(i),
            up,
            error: (!up).then(|| "connection refused".to_owned()),
            version: "0.1.0".into(),
            uptime_s: 3_600 + i as u64 * 60,
            groups: vec![group],
            ops_per_s: if up { 1_000.0 + i as f64 * 10.0 } else { 0.0 },
            p99_us: if up { 2_000 + i as u64 * 100 } else { 0 },
            errors_total: i as u64,
            rss_bytes: up.then_some(64 << 20),
            cpu_percent: up.then_some(12.0),
            load1: up.then_some(0.5),
            queue: QueueModel {
                engine_running: 1,
                engine_threads: 16,
                engine_waiting: 2,
                engine_waiting_limit: 1_024,
                engine_refused: i as u64,
                writes_queued: 4,
                writes_limit: 1_024,
                writes_refused: 0,
                network: 3,
                network_limit: 4_096,
                network_refused: 0,
                client_connections: 8,
            },
            peers: (0..nodes.min(3))
                .filter(|&p| p != i)
                .map(|p| PeerRow {
                    addr: addr(p),
                    state: if p == 2 {
                        "down".into()
                    } else {
                        "connected".into()
                    },
                    send_queue: p as u64,
                    send_queue_limit: 1_024,
                    in_flight: 0,
                })
                .collect(),
            commands: vec![
                CommandRow {
                    name: "READ".into(),
                    successes: 9_000,
                    failures: 3,
                    rate_per_s: 700.0,
                    p50_us: 300,
                    p99_us: 2_100,
                    cache_hits: 6_000,
                    disk: 3_000,
                    forwarded: 12,
                },
                CommandRow {
                    name: "WRITE".into(),
                    successes: 3_000,
                    failures: 0,
                    rate_per_s: 300.0,
                    p50_us: 600,
                    p99_us: 3_900,
                    cache_hits: 0,
                    disk: 3_000,
                    forwarded: 5,
                },
            ],
            cache: Some(CacheRow {
                size_bytes: 100 << 20,
                max_bytes: 256 << 20,
                objects: 5_000,
                segment_bytes: vec![40 << 20, 60 << 20],
                hits: 6_000,
                misses: 3_000,
            }),
            backends: vec![BackendRow {
                node: addr(i),
                id: 1,
                group,
                state: "enabled".into(),
                read_only: None,
                bases: 4,
                sorted_bases: 3,
                records,
                removed_records: records / 5,
                removed_bytes: (records / 5) * 4_096,
                reclaimable_bytes: if i % 3 == 0 { (records / 5) * 4_096 } else { 0 },
                used_bytes: records * 4_096,
                fs_total_bytes: Some(100 << 30),
                free_bytes: Some(50 << 30),
                ram_bytes: records * 3,
                want_defrag_bases: u64::from(i % 3 == 0),
                corrupted: 0,
                defrag: DefragRow {
                    mode: if scheduled {
                        "scheduled".into()
                    } else {
                        "auto".into()
                    },
                    window: scheduled.then_some((3, 1)),
                    next_start_s: scheduled.then_some(now_s + 7_200),
                    state: "idle".into(),
                    last_result: Some("ok: 3 bases, freed 12M".into()),
                    progress: None,
                    timeout_s: 86_400,
                    compact: false,
                },
            }],
        });
    }
    for g in 1..=groups {
        let owners: Vec<usize> = (0..nodes)
            .filter(|i| (*i as u32 % groups) + 1 == g)
            .collect();
        let n = owners.len().max(1) as u64;
        let ranges = owners
            .iter()
            .enumerate()
            .map(|(k, &i)| RingRange {
                start: (u64::MAX / n) * k as u64,
                share: 1.0 / n as f64,
                node: addr(i),
                backend: 1,
                up: i != 2,
            })
            .collect();
        model.rings.push(GroupRing { group: g, ranges });
    }
    model.ops_history = (0..60).map(|i| 800 + (i * 37 % 400)).collect();
    model.p99_history_us = (0..60).map(|i| 1_500 + (i * 53 % 2_000)).collect();
    if nodes > 0 {
        model.jobs.push(JobRow {
            node: addr(0),
            id: 1,
            kind: "recovery_dc".into(),
            target: "groups 1,2".into(),
            state: "running".into(),
            done_keys: 400,
            total_keys: Some(1_000),
            done_bytes: 400 << 20,
            total_bytes: Some(1_000 << 20),
            rate_bytes_per_s: 50.0 * (1 << 20) as f64,
            errors: 1,
            last_error: Some("key 3f2a..: timeout".into()),
            result: None,
        });
        model.jobs.push(JobRow {
            node: addr(0),
            id: 2,
            kind: "recovery_dc".into(),
            target: "groups 1,2 (dry run)".into(),
            state: "done".into(),
            done_keys: 1_000,
            total_keys: Some(1_000),
            done_bytes: 0,
            total_bytes: None,
            rate_bytes_per_s: 0.0,
            errors: 0,
            last_error: None,
            result: Some(
                r#"{"iterated":1000,"filtered":0,"copied":120,"skipped":880,"failed":0,"removed":0,"bytes":125829120}"#
                    .into(),
            ),
        });
        model.traces.push(TraceSummary {
            id: "00000000000000a1".into(),
            node: addr(0),
            command: "READ".into(),
            duration_us: 1_800,
            root: ActionNode {
                name: "READ".into(),
                start_us: 0,
                stop_us: 1_800,
                children: vec![
                    ActionNode {
                        name: "net.recv".into(),
                        start_us: 0,
                        stop_us: 100,
                        children: vec![],
                    },
                    ActionNode {
                        name: "cache.lookup".into(),
                        start_us: 100,
                        stop_us: 150,
                        children: vec![],
                    },
                    ActionNode {
                        name: "eblob.read".into(),
                        start_us: 150,
                        stop_us: 1_600,
                        children: vec![ActionNode {
                            name: "eblob.lookup".into(),
                            start_us: 160,
                            stop_us: 400,
                            children: vec![],
                        }],
                    },
                    ActionNode {
                        name: "reply".into(),
                        start_us: 1_600,
                        stop_us: 1_800,
                        children: vec![],
                    },
                ],
            },
        });
    }
    model
}
