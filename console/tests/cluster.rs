//! The poller, the admin client and the `ell` binary against fake nodes: real axum servers on
//! 127.0.0.1:0 serving fixture `NodeStats` JSON category by category, call trees and the admin
//! endpoints (which record what they receive), plus one node that accepts connections and
//! never answers.

use std::net::TcpListener as StdListener;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ellipsis_console::admin::AdminClient;
use ellipsis_console::app::{AdminRequest, RecoveryKind};
use ellipsis_console::poll::{PollConfig, Poller};
use ellipsis_core::route::{BackendAddr, RouteTable};
use ellipsis_core::stats::{
    BackendStats, BaseSummary, CacheEntryStats, CacheStats, CommandStat, DefragMode, DefragStats,
    EblobSummary, JobKind, JobState, JobStatus, NodeStats, PeerInfo, PeerStats, RoutesStats,
};
use ellipsis_core::Id;

const TOKEN: &str = "s3cret-admin-token";

/// What an admin endpoint received.
#[derive(Clone, Debug, PartialEq)]
struct Recorded {
    node: usize,
    method: &'static str,
    path: String,
    body: Option<serde_json::Value>,
}

#[derive(Clone)]
struct NodeState {
    index: usize,
    stats: Arc<NodeStats>,
    /// Bumped on every `/stats/commands`, so counters move between polls.
    polls: Arc<AtomicU64>,
    log: Arc<Mutex<Vec<Recorded>>>,
}

fn proto_addr(i: usize) -> String {
    format!("127.0.0.1:{}", 21_000 + i)
}

fn ring_id(i: usize, k: usize) -> Id {
    let mut b = [0u8; 64];
    // Spread ids over the ring: node i, id k at (i * 2 + k) / (nodes * 2) of it.
    b[0] = ((i * 2 + k) * 40) as u8;
    b[1] = i as u8;
    Id(b)
}

/// Stats of node `i` of `n`; every node lists the whole cluster in its routes.
fn node_stats(i: usize, http: &[String]) -> NodeStats {
    let n = http.len();
    let mut table = RouteTable::new();
    for j in 0..n {
        let node = proto_addr(j).parse().expect("address");
        table.set_backend(
            (j % 2) as u32 + 1,
            BackendAddr { node, backend: 1 },
            &[ring_id(j, 0), ring_id(j, 1)],
        );
    }
    let mut s = NodeStats::default();
    s.node.addr = proto_addr(i);
    s.node.http_addr = http[i].clone();
    s.node.version = "0.1.0".into();
    s.node.uptime_s = 100 + i as u64;
    s.node.groups = vec![(i % 2) as u32 + 1];
    s.commands.commands.insert(
        "READ".into(),
        CommandStat {
            successes: 1_000,
            failures: 2,
            p50_us: 200,
            p99_us: 1_500 + i as u64,
            cache_hits: 600,
            disk: 400,
            ..CommandStat::default()
        },
    );
    s.io.blocking_queue = 4;
    s.io.blocking_queue_limit = 102;
    s.io.blocking_active = 1;
    s.io.blocking_threads = 2;
    s.io.blocking_waiting = 3;
    s.io.blocking_waiting_limit = 100;
    s.io.blocking_refused = 7;
    s.io.nonblocking_queue = 5;
    s.io.nonblocking_queue_limit = 64;
    s.io.nonblocking_refused = 9;
    s.io.peers.push(PeerStats {
        addr: proto_addr((i + 1) % n),
        state: "connected".into(),
        send_queue: 1,
        ..PeerStats::default()
    });
    s.cache.push(CacheEntryStats {
        backend: Some(1),
        stats: CacheStats {
            size_bytes: 1_000,
            max_size_bytes: 10_000,
            objects: 10,
            segment_sizes_bytes: vec![400, 600],
            hits: 7,
            misses: 3,
            ..CacheStats::default()
        },
    });
    s.backends.push(BackendStats {
        id: 1,
        group: (i % 2) as u32 + 1,
        read_only_reason: (i == 1).then(|| "fsync failed".to_owned()),
        eblob: EblobSummary {
            records: 100,
            removed_records: 10,
            removed_bytes: 4_096,
            size_bytes: 1 << 20,
            ram_index_bytes: 1_000,
            ram_bloom_bytes: 100,
            bases: vec![
                BaseSummary {
                    index: 0,
                    sorted: true,
                    want_defrag: true,
                    ..BaseSummary::default()
                },
                BaseSummary {
                    index: 1,
                    ..BaseSummary::default()
                },
            ],
            ..EblobSummary::default()
        },
        defrag: DefragStats {
            mode: DefragMode::Scheduled,
            timeout_s: 7_200,
            time_hour: 4,
            splay_hours: 2,
            compact: true,
            state: "idle".into(),
            progress_bases: None,
            ..DefragStats::default()
        },
        ..BackendStats::default()
    });
    s.procfs.rss_bytes = Some(50 << 20);
    s.procfs.load_avg = Some([0.5, 0.4, 0.3]);
    if i == 0 {
        s.workers.push(JobStatus {
            id: 9,
            kind: JobKind::RecoveryDc,
            target: "groups 1,2".into(),
            state: JobState::Running,
            done_keys: 10,
            total_keys: Some(40),
            done_bytes: 0,
            total_bytes: None,
            rate_keys_per_s: 1.0,
            rate_bytes_per_s: 0.0,
            errors: 0,
            rests: 0,
            rested_ms: 0,
            last_error: None,
            started_at_s: Some(1),
            finished_at_s: None,
            result: None,
        });
    }
    s.routes = RoutesStats {
        table,
        nodes: (0..n)
            .map(|j| PeerInfo {
                addr: proto_addr(j),
                http_addr: Some(http[j].clone()),
            })
            .collect(),
    };
    s
}

fn tree(id: &str, start_unix_us: u64) -> serde_json::Value {
    serde_json::json!({
        "id": id, "complete": true, "start_unix_us": start_unix_us,
        "actions": [{"name": "READ", "start_time": 0, "stop_time": 900,
            "actions": [{"name": "eblob.read", "start_time": 100, "stop_time": 800}]}]
    })
}

fn unauthorized(headers: &HeaderMap) -> Option<Response> {
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    (!ok).then(|| {
        (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"error": "admin token missing or wrong"})),
        )
            .into_response()
    })
}

async fn category(State(st): State<NodeState>, Path(c): Path<String>) -> Response {
    let mut s = (*st.stats).clone();
    let polls = st
        .polls
        .fetch_add(u64::from(c == "commands"), Ordering::SeqCst);
    if let Some(r) = s.commands.commands.get_mut("READ") {
        r.successes += polls * 500;
    }
    let v = match c.as_str() {
        "node" => serde_json::to_value(&s.node),
        "commands" => serde_json::to_value(&s.commands),
        "io" => serde_json::to_value(&s.io),
        "cache" => serde_json::to_value(&s.cache),
        "backends" => serde_json::to_value(&s.backends),
        "procfs" => serde_json::to_value(&s.procfs),
        "workers" => serde_json::to_value(&s.workers),
        "routes" => serde_json::to_value(&s.routes),
        _ => return (StatusCode::NOT_FOUND, "unknown category").into_response(),
    };
    Json(v.expect("stats serialise")).into_response()
}

#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn traces(State(st): State<NodeState>, Query(q): Query<Limit>) -> Response {
    let all = [
        tree(
            &format!("{:016x}", 0xa0 + st.index),
            2_000 + st.index as u64,
        ),
        tree(
            &format!("{:016x}", 0xb0 + st.index),
            1_000 + st.index as u64,
        ),
    ];
    let n = q.limit.unwrap_or(10).min(all.len());
    Json(all[..n].to_vec()).into_response()
}

async fn one_trace(State(st): State<NodeState>, Path(id): Path<String>) -> Response {
    if id == format!("{:016x}", 0xa0 + st.index) {
        Json(tree(&id, 5)).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "unknown trace"})),
        )
            .into_response()
    }
}

fn record(st: &NodeState, method: &'static str, path: String, body: Option<serde_json::Value>) {
    st.log.lock().expect("log lock").push(Recorded {
        node: st.index,
        method,
        path,
        body,
    });
}

async fn backend_action(
    State(st): State<NodeState>,
    Path((id, action)): Path<(u32, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorized(&headers) {
        return r;
    }
    record(&st, "POST", format!("/admin/backends/{id}/{action}"), None);
    Json(serde_json::json!({"ok": true})).into_response()
}

async fn schedule(
    State(st): State<NodeState>,
    Path(id): Path<u32>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    if let Some(r) = unauthorized(&headers) {
        return r;
    }
    record(
        &st,
        "PUT",
        format!("/admin/backends/{id}/defrag/schedule"),
        Some(body),
    );
    Json(serde_json::json!({"ok": true})).into_response()
}

async fn recovery(
    State(st): State<NodeState>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    if let Some(r) = unauthorized(&headers) {
        return r;
    }
    let kind = if body["kind"] == "dc" {
        JobKind::RecoveryDc
    } else {
        JobKind::RecoveryMerge
    };
    record(&st, "POST", "/admin/recovery".into(), Some(body));
    Json(JobStatus {
        id: 42,
        kind,
        target: "groups 1,2".into(),
        state: JobState::Queued,
        done_keys: 0,
        total_keys: None,
        done_bytes: 0,
        total_bytes: None,
        rate_keys_per_s: 0.0,
        rate_bytes_per_s: 0.0,
        errors: 0,
        rests: 0,
        rested_ms: 0,
        last_error: None,
        started_at_s: None,
        finished_at_s: None,
        result: None,
    })
    .into_response()
}

async fn cancel(State(st): State<NodeState>, Path(id): Path<u64>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&headers) {
        return r;
    }
    record(&st, "POST", format!("/admin/jobs/{id}/cancel"), None);
    Json(serde_json::json!({"ok": true})).into_response()
}

/// `answering` fake nodes plus one that never answers (last in every list).
struct FakeCluster {
    /// HTTP addresses; the silent node's is last.
    http: Vec<String>,
    log: Arc<Mutex<Vec<Recorded>>>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Held open so connections to the silent node hang instead of being refused.
    _silent: StdListener,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl FakeCluster {
    fn start(answering: usize) -> FakeCluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let silent = StdListener::bind("127.0.0.1:0").expect("bind silent node");
        let listeners: Vec<StdListener> = (0..answering)
            .map(|_| {
                let l = StdListener::bind("127.0.0.1:0").expect("bind");
                l.set_nonblocking(true).expect("non-blocking");
                l
            })
            .collect();
        let mut http: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().expect("addr").to_string())
            .collect();
        http.push(silent.local_addr().expect("addr").to_string());
        let log = Arc::new(Mutex::new(Vec::new()));
        for (i, listener) in listeners.into_iter().enumerate() {
            let state = NodeState {
                index: i,
                stats: Arc::new(node_stats(i, &http)),
                polls: Arc::new(AtomicU64::new(0)),
                log: log.clone(),
            };
            let app = Router::new()
                .route("/stats/{category}", get(category))
                .route("/traces", get(traces))
                .route("/traces/{id}", get(one_trace))
                .route("/admin/backends/{id}/{action}", post(backend_action))
                .route("/admin/backends/{id}/defrag/schedule", put(schedule))
                .route("/admin/recovery", post(recovery))
                .route("/admin/jobs/{id}/cancel", post(cancel))
                .with_state(state);
            runtime.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, app).await;
            });
        }
        FakeCluster {
            http,
            log,
            runtime: Some(runtime),
            _silent: silent,
        }
    }

    fn recorded(&self) -> Vec<Recorded> {
        self.log.lock().expect("log lock").clone()
    }
}

fn poller(seed: &str, timeout_ms: u64) -> Poller {
    Poller::new(PollConfig {
        seeds: vec![seed.to_owned()],
        timeout_ms,
        traces_per_node: 10,
        ..PollConfig::default()
    })
    .expect("poller")
}

#[tokio::test]
async fn whole_cluster_is_discovered_from_one_seed_and_a_silent_node_is_down() {
    let cluster = FakeCluster::start(3);
    let mut p = poller(&cluster.http[0], 300);
    let m = p.poll().await;
    let addrs: Vec<&str> = m.nodes.iter().map(|n| n.addr.as_str()).collect();
    assert_eq!(
        addrs,
        (0..4).map(proto_addr).collect::<Vec<_>>(),
        "every node of the route list is in the model"
    );
    assert_eq!(m.nodes_up(), 3);
    let silent = &m.nodes[3];
    assert!(!silent.up);
    assert!(
        silent
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no answer within 300 ms")),
        "{:?}",
        silent.error
    );
    assert_eq!(
        silent.groups,
        vec![2],
        "a down node's groups come from routes"
    );
    // HTTP addresses were learnt from the route list.
    assert_eq!(
        p.http_addr_of(&proto_addr(2)),
        Some(cluster.http[2].clone())
    );
    assert_eq!(
        p.http_addr_of(&proto_addr(3)),
        Some(cluster.http[3].clone())
    );

    let n0 = &m.nodes[0];
    assert_eq!(n0.version, "0.1.0");
    let q = &n0.queue;
    assert_eq!(
        (q.engine_running, q.engine_threads, q.engine_waiting),
        (1, 2, 3)
    );
    assert_eq!(
        (q.engine_waiting_limit, q.engine_refused),
        (100, 7),
        "the engine queue is the blocking pool's"
    );
    assert_eq!(
        (q.network, q.network_limit, q.network_refused),
        (5, 64, 9),
        "the network side is reported apart"
    );
    assert_eq!(n0.commands.len(), 1);
    assert_eq!(n0.commands[0].p99_us, 1_500);
    assert_eq!(n0.p99_us, 1_500);
    assert_eq!(n0.errors_total, 2);
    assert_eq!(n0.peers[0].addr, proto_addr(1));
    let cache = n0.cache.as_ref().expect("cache row");
    assert_eq!(
        (cache.size_bytes, cache.hits, cache.segment_bytes.len()),
        (1_000, 7, 2)
    );
    let b = &n0.backends[0];
    assert_eq!((b.bases, b.sorted_bases, b.want_defrag_bases), (2, 1, 1));
    assert_eq!(b.ram_bytes, 1_100);
    assert_eq!(b.defrag.mode, "scheduled");
    assert_eq!(b.defrag.window, Some((4, 2)));
    assert_eq!((b.defrag.timeout_s, b.defrag.compact), (7_200, true));
    assert_eq!(
        m.nodes[1].backends[0].read_only.as_deref(),
        Some("fsync failed")
    );

    // Rings: two groups, each range owned by a node, the silent node's ranges marked down.
    assert_eq!(
        m.rings.iter().map(|r| r.group).collect::<Vec<_>>(),
        vec![1, 2]
    );
    for ring in &m.rings {
        let total: f64 = ring.ranges.iter().map(|r| r.share).sum();
        assert!(
            (total - 1.0).abs() < 1e-9,
            "group {} shares sum to {total}",
            ring.group
        );
    }
    let g2 = &m.rings[1];
    assert!(g2.ranges.iter().any(|r| r.node == proto_addr(3) && !r.up));
    assert!(g2.ranges.iter().any(|r| r.node == proto_addr(1) && r.up));

    assert_eq!(m.jobs.len(), 1);
    assert_eq!(
        (
            m.jobs[0].kind.as_str(),
            m.jobs[0].state.as_str(),
            m.jobs[0].id
        ),
        ("recovery_dc", "running", 9)
    );
    // Traces of every answering node, newest first.
    assert_eq!(m.traces.len(), 6);
    assert_eq!(m.traces[0].id, format!("{:016x}", 0xa2));
    assert_eq!(m.traces[0].node, proto_addr(2));
    assert_eq!(m.traces[0].root.children[0].name, "eblob.read");

    let alerts: Vec<String> = m.alerts().into_iter().map(|a| a.text).collect();
    assert!(
        alerts.iter().any(|a| a.contains("127.0.0.1:21003 is down")),
        "{alerts:?}"
    );
    assert!(
        alerts.iter().any(|a| a.contains("read-only: fsync failed")),
        "{alerts:?}"
    );
    assert!(
        alerts
            .iter()
            .any(|a| a.contains("group 2:") && a.contains("down")),
        "{alerts:?}"
    );
}

#[tokio::test]
async fn second_poll_has_rates_and_sparkline_history() {
    let cluster = FakeCluster::start(2);
    let mut p = poller(&cluster.http[1], 300);
    let first = p.poll().await;
    assert_eq!(
        first.nodes[0].commands[0].rate_per_s, 0.0,
        "no rate without a previous poll"
    );
    let second = p.poll().await;
    // Each node's READ counter grew by 500 between the polls.
    for n in second.nodes.iter().filter(|n| n.up) {
        assert!(n.ops_per_s > 0.0, "{}: {}", n.addr, n.ops_per_s);
        assert_eq!(n.ops_per_s, n.commands[0].rate_per_s);
    }
    assert_eq!(second.ops_history.len(), 2);
    assert_eq!(second.p99_history_us, vec![1_501, 1_501]);
}

#[tokio::test]
async fn a_dead_seed_is_reported_down_not_dropped() {
    let cluster = FakeCluster::start(1);
    // Nothing listens there any more: connection refused.
    let dead = {
        let l = StdListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let mut p = Poller::new(PollConfig {
        seeds: vec![dead.clone(), cluster.http[0].clone()],
        timeout_ms: 300,
        traces_per_node: 0,
        ..PollConfig::default()
    })
    .expect("poller");
    let m = p.poll().await;
    let d = m
        .nodes
        .iter()
        .find(|n| n.addr == dead)
        .expect("dead seed listed");
    assert!(!d.up);
    assert!(d.error.as_deref().is_some_and(|e| !e.is_empty()));
    assert_eq!(m.nodes_up(), 1);
}

#[tokio::test]
async fn admin_requests_reach_their_endpoints_with_the_token() {
    let cluster = FakeCluster::start(2);
    let admin = AdminClient::new(Some(TOKEN.into()), 1_000).expect("admin client");
    let node = proto_addr(1);
    let http = cluster.http[1].clone();
    let http_of = |n: &str| (n == node).then(|| http.clone());
    let requests = [
        AdminRequest::DefragStart {
            node: node.clone(),
            backend: 1,
            compact: true,
        },
        AdminRequest::DefragStop {
            node: node.clone(),
            backend: 1,
        },
        AdminRequest::DefragSchedule {
            node: node.clone(),
            backend: 1,
            mode: "scheduled".into(),
            time_hour: 5,
            splay_hours: 2,
        },
        AdminRequest::RecoveryStart {
            node: node.clone(),
            kind: RecoveryKind::Dc,
            dry_run: true,
        },
        AdminRequest::JobCancel {
            node: node.clone(),
            job: 9,
        },
    ];
    let mut replies = Vec::new();
    for r in &requests {
        replies.push(
            admin
                .execute(r, http_of, (7_200, true), &[1, 2])
                .await
                .expect("admin call"),
        );
    }
    assert_eq!(replies[3].text, "job 42 queued");
    assert_eq!(
        replies[3].job,
        Some(42),
        "the started job, for the dry-run-first flow"
    );
    assert_eq!(replies[4].job, None);
    let log = cluster.recorded();
    let paths: Vec<(&str, &str)> = log.iter().map(|r| (r.method, r.path.as_str())).collect();
    assert_eq!(
        paths,
        vec![
            ("POST", "/admin/backends/1/defrag-start-compact"),
            ("POST", "/admin/backends/1/defrag-stop"),
            ("PUT", "/admin/backends/1/defrag/schedule"),
            ("POST", "/admin/recovery"),
            ("POST", "/admin/jobs/9/cancel"),
        ]
    );
    assert!(log.iter().all(|r| r.node == 1));
    assert_eq!(
        log[2].body,
        Some(
            serde_json::json!({"mode": "scheduled", "timeout_s": 7_200, "time_hour": 5, "splay_hours": 2, "compact": true})
        )
    );
    assert_eq!(
        log[3].body,
        Some(serde_json::json!({"kind": "dc", "dry_run": true, "groups": [1, 2]}))
    );

    // A wrong token gets the node's own message; an unknown node is a clear error.
    let wrong = AdminClient::new(Some("nope".into()), 1_000).expect("admin client");
    let e = wrong
        .execute(&requests[1], http_of, (0, false), &[])
        .await
        .expect_err("refused");
    assert_eq!(e.to_string(), "HTTP 401: admin token missing or wrong");
    let e = admin
        .execute(&requests[1], |_| None, (0, false), &[])
        .await
        .expect_err("unknown node");
    assert!(e.to_string().contains("no HTTP address known for node"));
    let none = AdminClient::new(None, 1_000).expect("admin client");
    let e = none
        .execute(&requests[1], http_of, (0, false), &[])
        .await
        .expect_err("no token");
    assert!(e.to_string().contains("ELL_ADMIN_TOKEN"));
    assert!(
        !format!("{admin:?}").contains(TOKEN),
        "Debug never shows the token"
    );
    assert_eq!(cluster.recorded().len(), 5, "refused calls did nothing");
}

#[tokio::test]
async fn a_trace_is_found_on_whichever_node_has_it() {
    let cluster = FakeCluster::start(3);
    let mut p = poller(&cluster.http[0], 300);
    p.poll().await;
    let id = format!("{:016x}", 0xa2);
    let (node, tree) = p.trace(&id).await.expect("trace call").expect("found");
    assert_eq!(
        (node.as_str(), tree.id.as_str()),
        (proto_addr(2).as_str(), id.as_str())
    );
    assert!(p
        .trace("00000000000000ff")
        .await
        .expect("trace call")
        .is_none());
}

// --- the binary ---

fn ell(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ell"));
    cmd.args(args)
        .env_remove("ELL_ADMIN_TOKEN")
        .env_remove("ELL_REMOTE")
        .env_remove("ELL_HTTP");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run ell")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn status_json_lists_every_node_and_exits_1_when_one_is_down() {
    let cluster = FakeCluster::start(2);
    let out = ell(
        &[
            "status",
            "--json",
            "--http",
            &cluster.http[0],
            "--timeout-ms",
            "300",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["nodes_total"], 3);
    assert_eq!(v["nodes_up"], 2);
    assert_eq!(v["groups"], serde_json::json!([1, 2]));
    assert!(v["alerts"][0]["text"]
        .as_str()
        .is_some_and(|t| t.contains("is down")));
    assert!(text(&out.stderr).contains("1 of 3 nodes down"));
}

#[test]
fn top_once_prints_one_frame_of_the_requested_size() {
    let cluster = FakeCluster::start(2);
    let out = ell(
        &[
            "top",
            "--once",
            "--http",
            &cluster.http[0],
            "--timeout-ms",
            "300",
            "--width",
            "100",
            "--height",
            "30",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let frame = text(&out.stdout);
    assert_eq!(frame.lines().count(), 30);
    assert!(frame.lines().all(|l| l.chars().count() <= 100));
    assert!(frame.contains("2/3 up"), "{frame}");
    assert!(frame.contains("DOWN"), "{frame}");
    let ring = ell(
        &[
            "top",
            "--once",
            "--view",
            "ring",
            "--http",
            &cluster.http[1],
            "--timeout-ms",
            "300",
        ],
        &[],
    );
    let ring_frame = text(&ring.stdout);
    assert_eq!(ring_frame.lines().count(), 48);
    assert!(ring_frame.contains("Ring"), "{ring_frame}");
}

#[test]
fn usage_errors_exit_2_and_unknown_traces_exit_3() {
    let out = ell(&["put"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = ell(
        &["top", "--once", "--view", "nosuch", "--http", "127.0.0.1:1"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown view"));
    let out = ell(&["trace", "xyz", "--http", "127.0.0.1:1"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("16 hex digits"));
    let out = ell(&["--checker", "most", "status"], &[]);
    assert_eq!(out.status.code(), Some(2));

    let cluster = FakeCluster::start(2);
    let out = ell(
        &[
            "trace",
            "00000000000000ff",
            "--http",
            &cluster.http[0],
            "--timeout-ms",
            "300",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let id = format!("{:016x}", 0xa1);
    let out = ell(
        &[
            "trace",
            &id,
            "--http",
            &cluster.http[0],
            "--timeout-ms",
            "300",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("eblob.read"));
}

#[test]
fn admin_commands_use_the_token_from_env_or_file_and_never_print_it() {
    let cluster = FakeCluster::start(2);
    let node = proto_addr(1);
    let base = ["--http", cluster.http[0].as_str(), "--timeout-ms", "300"];
    let args = |extra: &[&str]| -> Vec<String> {
        extra
            .iter()
            .chain(base.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |a: Vec<String>, envs: &[(&str, &str)]| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        ell(&refs, envs)
    };
    let out = run(
        args(&["defrag", "start", &node, "1"]),
        &[("ELL_ADMIN_TOKEN", TOKEN)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).expect("write token");
    let out = run(
        args(&[
            "defrag",
            "schedule",
            &node,
            "1",
            "--mode",
            "timed",
            "--timeout-s",
            "600",
            "--token-file",
            file.to_str().expect("utf-8 path"),
        ]),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(
        args(&["recover", "merge", "--dry-run", "--json", "--detach"]),
        &[("ELL_ADMIN_TOKEN", TOKEN)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("job JSON");
    assert_eq!(job["id"], 42);

    let log = cluster.recorded();
    assert_eq!(log.len(), 3);
    assert_eq!(
        (log[0].node, log[0].path.as_str()),
        (1, "/admin/backends/1/defrag-start")
    );
    assert_eq!(log[1].body.as_ref().expect("body")["mode"], "timed");
    assert_eq!(log[1].body.as_ref().expect("body")["timeout_s"], 600);
    assert_eq!((log[2].node, log[2].path.as_str()), (0, "/admin/recovery"));

    // A wrong token fails with exit 1 and the node's message, and is not echoed.
    let out = run(
        args(&["defrag", "stop", &node, "1"]),
        &[("ELL_ADMIN_TOKEN", "wrong-token-xyz")],
    );
    assert_eq!(out.status.code(), Some(1));
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("admin token missing or wrong"), "{all}");
    assert!(!all.contains("wrong-token-xyz"));
    // Read-only consoles refuse admin commands before any call.
    let out = run(
        args(&["defrag", "stop", &node, "1", "--read-only"]),
        &[("ELL_ADMIN_TOKEN", TOKEN)],
    );
    assert_eq!(out.status.code(), Some(2));
    // No token at all: a usage error that says where the token comes from.
    let out = run(args(&["defrag", "stop", &node, "1"]), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("ELL_ADMIN_TOKEN"));
    assert_eq!(cluster.recorded().len(), 3);
}
