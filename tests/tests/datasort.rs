//! Data-sort scheduling and control on real nodes, seen through the HTTP stats and admin API:
//! AUTO after a rotation, stop and cancel after the current base with per-base progress and a
//! `stopping` state, a SCHEDULED window by an injected clock; and the backend controls that
//! change routes and latency (ring ids, artificial delay) over HTTP and BACKEND_CONTROL.

use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ellipsis_core::client::{Checker, Client};
use ellipsis_core::protocol::cmd::backend_control::{BackendAction, BackendControl};
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{Command, Header, IoAttr, Status};
use ellipsis_core::stats::{BackendStats, DefragMode, JobKind, JobState, JobStatus, NodeStats};
use ellipsis_core::Id;
use ellipsis_node::config::NodeConfig;
use ellipsis_node::schedule::ManualClock;
use ellipsis_node::server::StartOptions;
use ellipsis_tests::{Cluster, NodeSpec, TOKEN};

const DEADLINE: Duration = Duration::from_secs(30);

fn key(i: u64) -> Id {
    Id::for_key(b"datasort", format!("k{i}").as_bytes())
}

/// Poll `f` until it yields `Some` (every 20 ms, at most [`DEADLINE`]).
async fn until<T, F: Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_text(url: String) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

async fn node_stats(c: &Cluster, i: usize) -> NodeStats {
    serde_json::from_str(&get_text(format!("http://{}/stats", c.http(i))).await).unwrap()
}

async fn backend_stats(c: &Cluster, i: usize) -> BackendStats {
    let text = get_text(format!("http://{}/stats/backends", c.http(i))).await;
    let mut all: Vec<BackendStats> = serde_json::from_str(&text).unwrap();
    all.remove(0)
}

async fn jobs(c: &Cluster, i: usize) -> Vec<JobStatus> {
    serde_json::from_str(&get_text(format!("http://{}/stats/workers", c.http(i))).await).unwrap()
}

async fn admin(method: reqwest::Method, url: String, body: Option<serde_json::Value>) -> u16 {
    let mut r = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.unwrap().status().as_u16()
}

/// One node in group 1 whose backend rotates every `records` records, in `mode`.
async fn one_node(records: u64, mode: DefragMode, options: StartOptions) -> Cluster {
    let mut c = Cluster::start(&[]).await;
    c.add_node_opts(
        &NodeSpec::groups(&[1]),
        |n: &mut NodeConfig| {
            n.backends[0].records_in_blob = records;
            n.backends[0].defrag.mode = mode;
        },
        options,
    )
    .await;
    c.converge().await;
    c
}

async fn write_keys(client: &Client, keys: std::ops::Range<u64>) {
    for i in keys {
        client
            .write(&key(i), Bytes::from(format!("v{i}")), IoAttr::default())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_data_sorts_the_bases_closed_by_rotation() {
    let c = one_node(50, DefragMode::Auto, StartOptions::default()).await;
    assert_eq!(
        ellipsis_node::config::BackendConfig::default().defrag.mode,
        DefragMode::Auto,
        "AUTO is the default"
    );
    let client = c.client(0, &[1], Checker::All).await;
    // 120 records in bases of 50: two rotations, 20 records left in the open base.
    write_keys(&client, 0..120).await;
    let b = until("closed bases sorted by AUTO", || async {
        let b = backend_stats(&c, 0).await;
        let bases = &b.eblob.bases;
        let closed = &bases[..bases.len() - 1];
        (b.defrag.state == "idle" && closed.len() >= 2 && closed.iter().all(|x| x.sorted))
            .then_some(b)
    })
    .await;
    assert!(b.eblob.rotations >= 2, "{:?}", b.eblob);
    let open = b.eblob.bases.last().unwrap();
    assert!(!open.sorted, "AUTO leaves the open base alone");
    assert_eq!(open.records, 20);
    let auto: Vec<JobStatus> = jobs(&c, 0)
        .await
        .into_iter()
        .filter(|j| j.kind == JobKind::DataSort)
        .collect();
    assert!(!auto.is_empty());
    assert!(
        auto.iter()
            .all(|j| j.target == "backend 1 (auto)" && j.state == JobState::Done),
        "{auto:?}"
    );
    for i in 0..120 {
        assert_eq!(
            client.read(&key(i), 0, 0).await.unwrap().data,
            Bytes::from(format!("v{i}"))
        );
    }
    c.shutdown().await;
}

/// Holds a data-sort thread when it reads the index of the base named by `arm`, until
/// `open`: a deterministic "in the middle of sorting base N".
#[derive(Debug, Default)]
struct SortGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    armed: Option<String>,
    held: bool,
    open: bool,
}

impl SortGate {
    fn arm(&self, index_file: &str) {
        let mut s = self.state.lock().unwrap();
        *s = GateState {
            armed: Some(index_file.to_owned()),
            ..GateState::default()
        };
    }

    fn held(&self) -> bool {
        self.state.lock().unwrap().held
    }

    fn open(&self) {
        self.state.lock().unwrap().open = true;
        self.changed.notify_all();
    }
}

impl eblob::FaultInjector for SortGate {
    fn on_io(&self, op: eblob::IoOp, path: &std::path::Path, _: u64, _: u64) -> eblob::Fault {
        let sorting = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("data-sort-"));
        if op == eblob::IoOp::Read && sorting {
            let mut s = self.state.lock().expect("gate lock");
            if s.armed.as_deref().is_some_and(|f| path.ends_with(f)) {
                s.armed = None;
                s.held = true;
                while !s.open {
                    s = self.changed.wait(s).expect("gate lock");
                }
                s.held = false;
            }
        }
        eblob::Fault::None
    }
}

/// One node whose data-sorts `SortGate` can hold, with bases of 50 records, and a client.
async fn gated_node() -> (Arc<SortGate>, Cluster, Arc<Client>) {
    let gate = Arc::new(SortGate::default());
    let options = StartOptions {
        engine_faults: Some(gate.clone()),
        ..StartOptions::default()
    };
    let c = one_node(50, DefragMode::None, options).await;
    let client = c.client(0, &[1], Checker::All).await;
    (gate, c, client)
}

/// What key `i` holds after the load of the test below: removed before the sort (`i % 5 ==
/// 0`), overwritten (1) or removed (2) during it, untouched (3, 4); keys from 220 are new.
fn expected_after_load(i: u64) -> Option<String> {
    match (i, i % 5) {
        (220.., _) => Some(format!("n{i}")),
        (_, 0 | 2) => None,
        (_, 1) => Some(format!("w{i}")),
        _ => Some(format!("v{i}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_sort_held_inside_a_base_under_concurrent_writes_reads_and_removes_loses_nothing() {
    let (gate, c, client) = gated_node().await;
    // Bases 0-3 full, 20 records in the open base; every fifth key removed before the sort.
    write_keys(&client, 0..220).await;
    for i in (0..220).step_by(5) {
        client.remove(&key(i)).await.unwrap();
    }
    gate.arm("data-1.index");
    let backend = format!("http://{}/admin/backends/1", c.http(0));
    let start = admin(
        reqwest::Method::POST,
        format!("{backend}/defrag-start"),
        None,
    )
    .await;
    assert_eq!(start, 200);
    until("sort held in base 1", || async {
        gate.held().then_some(())
    })
    .await;

    // Four clients at once while the sort is inside base 1: overwrites and removes of keys in
    // bases being sorted, new writes, and reads of untouched keys.
    let mut load = Vec::new();
    for part in 0..4u64 {
        let client = client.clone();
        load.push(tokio::spawn(async move {
            match part {
                0 => {
                    for i in (1..220).step_by(5) {
                        let v = Bytes::from(format!("w{i}"));
                        client.write(&key(i), v, IoAttr::default()).await.unwrap();
                    }
                }
                1 => {
                    for i in (2..220).step_by(5) {
                        client.remove(&key(i)).await.unwrap();
                    }
                }
                2 => {
                    for i in 220..320 {
                        let v = Bytes::from(format!("n{i}"));
                        client.write(&key(i), v, IoAttr::default()).await.unwrap();
                    }
                }
                _ => {
                    for i in (3..220).step_by(5) {
                        let got = client.read(&key(i), 0, 0).await.unwrap();
                        assert_eq!(got.data, Bytes::from(format!("v{i}")));
                    }
                }
            }
        }));
    }
    for t in load {
        t.await.unwrap();
    }
    assert!(
        gate.held(),
        "the whole load ran while the sort was inside base 1"
    );
    gate.open();
    let job = finished_sort(&c, "the sort ends").await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    for i in 0..320 {
        let got = client.read(&key(i), 0, 0).await;
        match expected_after_load(i) {
            Some(v) => assert_eq!(got.unwrap().data, Bytes::from(v), "key {i}"),
            None => assert_eq!(got.unwrap_err().status(), Status::NOT_FOUND, "key {i}"),
        }
    }
    let stats = ellipsis_node::stats::collect(c.node(0));
    assert!(stats.backends[0].eblob.bases.iter().any(|b| b.sorted));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_cancel_end_a_data_sort_after_the_current_base_reporting_progress() {
    let (gate, c, client) = gated_node().await;
    // Bases 0-3 full (50 records, too many to merge), 20 records in the open base 4.
    write_keys(&client, 0..220).await;
    let backend = format!("http://{}/admin/backends/1", c.http(0));

    // 1. defrag-stop while base 1 is being sorted.
    gate.arm("data-1.index");
    assert_eq!(
        admin(
            reqwest::Method::POST,
            format!("{backend}/defrag-start"),
            None
        )
        .await,
        200
    );
    until("sort held in base 1", || async {
        gate.held().then_some(())
    })
    .await;
    let b = backend_stats(&c, 0).await;
    assert_eq!(b.defrag.state, "running");
    // A full run closed the open base too: 5 bases planned, base 0 done.
    assert_eq!(b.defrag.progress_bases, Some((1, 5)), "{:?}", b.defrag);
    let (done, total) = b.defrag.progress_bytes.unwrap();
    assert!(done > 0 && done < total, "{:?}", b.defrag);
    let job_id = b.defrag.job_id.expect("the running job");
    let job = jobs(&c, 0)
        .await
        .into_iter()
        .find(|j| j.id == job_id)
        .unwrap();
    assert_eq!(
        (job.state, job.done_keys, job.total_keys, job.done_bytes),
        (JobState::Running, 1, Some(5), done),
        "the job shows the same progress"
    );
    assert_eq!(
        admin(
            reqwest::Method::POST,
            format!("{backend}/defrag-stop"),
            None
        )
        .await,
        200
    );
    assert_eq!(backend_stats(&c, 0).await.defrag.state, "stopping");
    gate.open();
    let job = until("stopped job", || async {
        jobs(&c, 0)
            .await
            .into_iter()
            .find(|j| j.id == job_id && j.state.is_finished())
    })
    .await;
    assert_eq!(job.state, JobState::Cancelled, "{job:?}");
    assert!(job.result.unwrap().contains("stopped"));
    let b = backend_stats(&c, 0).await;
    let sorted: Vec<bool> = b.eblob.bases.iter().map(|x| x.sorted).collect();
    assert_eq!(
        sorted,
        [true, true, false, false, false, false],
        "base 1 was finished, nothing after it"
    );
    assert_eq!(
        (b.defrag.state.as_str(), b.defrag.progress_bases),
        ("idle", None)
    );
    assert_eq!(b.defrag.last_result.as_deref(), Some("stopped"));

    // 2. A job cancel (the jobs API) while base 2 is being sorted.
    gate.arm("data-2.index");
    assert_eq!(
        admin(
            reqwest::Method::POST,
            format!("{backend}/defrag-start-compact"),
            None
        )
        .await,
        200,
    );
    // Compact mode has nothing to do (no removals): it ends at once, not held.
    until("compact run done", || async {
        let b = backend_stats(&c, 0).await;
        (b.defrag.state == "idle" && b.defrag.last_result.as_deref() == Some("ok")).then_some(())
    })
    .await;
    assert!(!gate.held());
    assert_eq!(
        admin(
            reqwest::Method::POST,
            format!("{backend}/defrag-start"),
            None
        )
        .await,
        200
    );
    until("sort held in base 2", || async {
        gate.held().then_some(())
    })
    .await;
    let job_id = backend_stats(&c, 0).await.defrag.job_id.unwrap();
    let cancel = format!("http://{}/admin/jobs/{job_id}/cancel", c.http(0));
    assert_eq!(admin(reqwest::Method::POST, cancel, None).await, 200);
    assert_eq!(backend_stats(&c, 0).await.defrag.state, "stopping");
    gate.open();
    let job = until("cancelled job", || async {
        jobs(&c, 0)
            .await
            .into_iter()
            .find(|j| j.id == job_id && j.state.is_finished())
    })
    .await;
    assert_eq!(job.state, JobState::Cancelled);
    let sorted: Vec<bool> = backend_stats(&c, 0)
        .await
        .eblob
        .bases
        .iter()
        .map(|x| x.sorted)
        .collect();
    assert_eq!(sorted[..4], [true, true, true, false], "{sorted:?}");
    for i in 0..220 {
        assert_eq!(
            client.read(&key(i), 0, 0).await.unwrap().data,
            Bytes::from(format!("v{i}"))
        );
    }
    c.shutdown().await;
}

/// 2026-11-25 00:00:00 UTC.
const DAY0: u64 = 1_795_564_800;

/// The first finished data-sort job of node 0, waited for.
async fn finished_sort(c: &Cluster, what: &str) -> JobStatus {
    until(what, || async {
        jobs(c, 0)
            .await
            .into_iter()
            .find(|j| j.kind == JobKind::DataSort && j.state.is_finished())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_window_starts_the_sort_inside_it_by_the_node_clock() {
    let clock = Arc::new(ManualClock::new(DAY0));
    let options = StartOptions {
        clock: Some(clock.clone()),
        ..StartOptions::default()
    };
    let mut c = one_node(50_000_000, DefragMode::None, options).await;
    let client = c.client(0, &[1], Checker::All).await;
    write_keys(&client, 0..40).await;
    let url = format!("http://{}/admin/backends/1/defrag/schedule", c.http(0));
    let window = serde_json::json!({"mode": "scheduled", "timeout_s": 3600, "time_hour": 3, "splay_hours": 1, "compact": false});
    assert_eq!(admin(reqwest::Method::PUT, url, Some(window)).await, 200);
    let planned = backend_stats(&c, 0).await.defrag.next_start_unix_s.unwrap();
    let (start, end) = (DAY0 + 2 * 3600, DAY0 + 4 * 3600);
    assert!((start..end).contains(&planned), "{planned}");
    let sorts = |jobs: Vec<JobStatus>| jobs.iter().filter(|j| j.kind == JobKind::DataSort).count();

    // Inside the window but before this node's pick, and before the window: nothing starts.
    for now in [start - 1, planned - 1] {
        clock.set(now);
        c.maintenance_passes(0, 2).await;
        assert_eq!(
            sorts(jobs(&c, 0).await),
            0,
            "started at {now}, before {planned}"
        );
    }
    let node = node_stats(&c, 0).await;
    assert_eq!(
        node.node.now_unix_s,
        planned - 1,
        "stats read the node's clock"
    );
    // At the planned second it starts, once.
    clock.set(planned);
    let job = finished_sort(&c, "scheduled sort").await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    let d = backend_stats(&c, 0).await.defrag;
    assert_eq!(d.last_start_unix_s, Some(planned));
    let next = d.next_start_unix_s.unwrap();
    assert!(
        (start + 86_400..end + 86_400).contains(&next),
        "tomorrow: {next}"
    );
    clock.set(planned + 600);
    c.maintenance_passes(0, 2).await;
    assert_eq!(sorts(jobs(&c, 0).await), 1, "once per window");

    // A restart inside the window remembers the run: no second sort in it.
    c.stop_node(0).await;
    c.restart_node(0).await;
    let d = backend_stats(&c, 0).await.defrag;
    assert_eq!(
        d.last_start_unix_s,
        Some(planned),
        "kept in the backend dir"
    );
    assert!((start + 86_400..end + 86_400).contains(&d.next_start_unix_s.unwrap()));
    c.maintenance_passes(0, 2).await;
    assert_eq!(sorts(jobs(&c, 0).await), 0, "not again after the restart");

    // TIMED counts its period from the last start, across restarts too, and fires.
    let url = format!("http://{}/admin/backends/1/defrag/schedule", c.http(0));
    let timed = serde_json::json!({"mode": "timed", "timeout_s": 3600, "time_hour": 3, "splay_hours": 1, "compact": false});
    assert_eq!(admin(reqwest::Method::PUT, url, Some(timed)).await, 200);
    c.stop_node(0).await;
    c.restart_node(0).await;
    let d = backend_stats(&c, 0).await.defrag;
    assert_eq!(d.next_start_unix_s, Some(planned + 3600), "{d:?}");
    clock.set(planned + 3599);
    c.maintenance_passes(0, 2).await;
    assert_eq!(sorts(jobs(&c, 0).await), 0, "not before its period");
    clock.set(planned + 3600);
    let job = finished_sort(&c, "timed sort").await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    let d = backend_stats(&c, 0).await.defrag;
    assert_eq!(d.next_start_unix_s, Some(planned + 7200), "{d:?}");
    c.shutdown().await;
}

/// Node `i`'s backend 1 ids in node `via`'s route table.
async fn routed_ids(c: &Cluster, via: usize, i: usize) -> Vec<Id> {
    let s = node_stats(c, via).await;
    let mut ids: Vec<Id> = s.routes.table.groups[&1]
        .iter()
        .filter(|e| e.addr.node == c.addr(i) && e.addr.backend == 1)
        .map(|e| e.id)
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_ids_set_over_http_and_backend_control_change_routes_and_persist() {
    let mut c = Cluster::start(&[NodeSpec::groups(&[1]), NodeSpec::groups(&[1])]).await;
    let url = format!("http://{}/admin/backends/1/ring-ids", c.http(0));
    let mut ids = vec![Id([0x10; 64]), Id([0x80; 64])];
    let body = serde_json::json!({ "ids": ids.iter().map(|i| i.to_string()).collect::<Vec<_>>() });
    let http = reqwest::Client::new();
    assert_eq!(
        http.put(&url).json(&body).send().await.unwrap().status(),
        401
    );
    assert_eq!(
        admin(
            reqwest::Method::PUT,
            url.clone(),
            Some(serde_json::json!({"ids": []}))
        )
        .await,
        400
    );
    assert_eq!(admin(reqwest::Method::PUT, url, Some(body)).await, 200);
    ids.sort_unstable();
    assert_eq!(routed_ids(&c, 0, 0).await, ids);
    c.converge().await;
    assert_eq!(routed_ids(&c, 1, 0).await, ids, "the peer learns them");
    assert_eq!(backend_stats(&c, 0).await.ring_ids, 2);
    let one = vec![Id([0x42; 64])];
    c.backend_control(0, BackendAction::SetIds(one.clone()))
        .await;
    assert_eq!(routed_ids(&c, 0, 0).await, one);
    c.converge().await;
    assert_eq!(routed_ids(&c, 1, 0).await, one);
    c.stop_node(0).await;
    c.restart_node(0).await;
    c.converge().await;
    assert_eq!(
        routed_ids(&c, 0, 0).await,
        one,
        "persisted in the backend dir"
    );
    assert_eq!(routed_ids(&c, 1, 0).await, one);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artificial_delay_set_over_http_and_backend_control_delays_replies() {
    let c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let client = c.client(0, &[1], Checker::All).await;
    write_keys(&client, 0..1).await;
    let url = format!("http://{}/admin/backends/1/delay", c.http(0));
    assert_eq!(
        admin(
            reqwest::Method::PUT,
            url.clone(),
            Some(serde_json::json!({"delay_ms": 600_001}))
        )
        .await,
        400,
        "above the limit"
    );
    assert_eq!(
        admin(
            reqwest::Method::PUT,
            url,
            Some(serde_json::json!({"delay_ms": 300}))
        )
        .await,
        200
    );
    assert_eq!(backend_stats(&c, 0).await.delay_ms, 300);
    let t = Instant::now();
    client.read(&key(0), 0, 0).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    c.backend_control(0, BackendAction::SetDelay { delay_ms: 0 })
        .await;
    assert_eq!(backend_stats(&c, 0).await.delay_ms, 0);
    c.backend_control(0, BackendAction::SetDelay { delay_ms: 350 })
        .await;
    assert_eq!(backend_stats(&c, 0).await.delay_ms, 350);
    let t = Instant::now();
    client
        .write(&key(1), Bytes::from_static(b"x"), IoAttr::default())
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t.elapsed()
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_bases_that_want_defrag_and_only_their_removed_bytes_as_reclaimable() {
    let c = one_node(50, DefragMode::None, StartOptions::default()).await;
    let client = c.client(0, &[1], Checker::All).await;
    // Bases 0 and 1 closed, base 2 open (full): keys 0-49, 50-99, 100-149 in write order.
    write_keys(&client, 0..150).await;
    for i in 0..20 {
        client.remove(&key(i)).await.unwrap(); // 40 % of base 0: wants defrag
    }
    for i in 50..55 {
        client.remove(&key(i)).await.unwrap(); // 10 % of base 1: below 25 %
    }
    let b = backend_stats(&c, 0).await;
    let bases = &b.eblob.bases;
    assert_eq!(
        bases.iter().map(|x| x.want_defrag).collect::<Vec<_>>(),
        [true, false, false]
    );
    assert_eq!(b.eblob.want_defrag_bases, 1);
    assert_eq!(b.eblob.defrag_reclaimable_bytes, bases[0].removed_bytes);
    assert!(b.eblob.removed_bytes > b.eblob.defrag_reclaimable_bytes);
    let text = get_text(format!("http://{}/stats/defrag", c.http(0))).await;
    let summary: ellipsis_core::stats::DefragSummary = serde_json::from_str(&text).unwrap();
    assert_eq!(
        summary,
        ellipsis_core::stats::DefragSummary {
            backends_want_defrag: 1,
            want_defrag_bases: 1,
            defrag_reclaimable_bytes: bases[0].removed_bytes,
            removed_bytes: bases[0].removed_bytes + bases[1].removed_bytes,
            sorts_running: 0,
        }
    );
    // A compact data-sort frees exactly that.
    let before = b.eblob.size_bytes;
    let url = format!("http://{}/admin/backends/1/defrag-start-compact", c.http(0));
    assert_eq!(admin(reqwest::Method::POST, url, None).await, 200);
    let after = until("compact sort done", || async {
        let b = backend_stats(&c, 0).await;
        (b.defrag.state == "idle" && b.eblob.want_defrag_bases == 0).then_some(b)
    })
    .await;
    assert_eq!(after.eblob.defrag_reclaimable_bytes, 0);
    assert_eq!(after.eblob.removed_bytes, bases[1].removed_bytes);
    assert_eq!(before - after.eblob.size_bytes, bases[0].removed_bytes);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_data_sort_waits_between_bases_until_resumed() {
    let (gate, c, client) = gated_node().await;
    write_keys(&client, 0..220).await;
    gate.arm("data-1.index");
    let start = format!("http://{}/admin/backends/1/defrag-start", c.http(0));
    assert_eq!(admin(reqwest::Method::POST, start, None).await, 200);
    until("sort held in base 1", || async {
        gate.held().then_some(())
    })
    .await;
    let job_id = backend_stats(&c, 0).await.defrag.job_id.unwrap();
    let jobs_url = format!("http://{}/admin/jobs/{job_id}", c.http(0));
    assert_eq!(
        admin(reqwest::Method::POST, format!("{jobs_url}/pause"), None).await,
        200
    );
    assert_eq!(backend_stats(&c, 0).await.defrag.state, "paused");
    // Base 1 is finished, then the sort waits before base 2.
    gate.open();
    let d = until("paused after base 1", || async {
        let d = backend_stats(&c, 0).await.defrag;
        (d.progress_bases == Some((2, 5))).then_some(d)
    })
    .await;
    assert_eq!(d.state, "paused");
    c.maintenance_passes(0, 2).await;
    let b = backend_stats(&c, 0).await;
    assert_eq!(
        b.defrag.progress_bases,
        Some((2, 5)),
        "no progress while paused"
    );
    assert!(!b.eblob.bases[2].sorted);
    assert_eq!(
        admin(reqwest::Method::POST, format!("{jobs_url}/resume"), None).await,
        200
    );
    let job = until("resumed job done", || async {
        jobs(&c, 0)
            .await
            .into_iter()
            .find(|j| j.id == job_id && j.state.is_finished())
    })
    .await;
    assert_eq!(
        (job.state, job.done_keys, job.total_keys),
        (JobState::Done, 5, Some(5))
    );
    let b = backend_stats(&c, 0).await;
    assert!(
        b.eblob.bases[..5].iter().all(|x| x.sorted),
        "{:?}",
        b.eblob.bases
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_control_sets_the_schedule_and_refuses_bad_ranges() {
    let clock = Arc::new(ManualClock::new(DAY0));
    let options = StartOptions {
        clock: Some(clock.clone()),
        ..StartOptions::default()
    };
    let mut c = one_node(50_000_000, DefragMode::None, options).await;
    let timed = |timeout_s, time_hour| BackendAction::SetSchedule {
        mode: DefragMode::Timed,
        timeout_s,
        time_hour,
        splay_hours: 1,
        compact: true,
    };
    c.backend_control(0, timed(7200, 3)).await;
    let d = backend_stats(&c, 0).await.defrag;
    assert_eq!(
        (d.mode, d.timeout_s, d.compact),
        (DefragMode::Timed, 7200, true)
    );
    assert_eq!(d.next_start_unix_s, Some(DAY0 + 7200), "{d:?}");
    // Out of range: refused with INVALID, the schedule unchanged.
    let client = c.client(0, &[], Checker::All).await;
    for bad in [timed(7200, 24), timed(0, 3)] {
        let ctl = BackendControl {
            backend: 1,
            action: bad,
        };
        let h = Header::request(Command::BackendControl, Id::ZERO, 0, 0);
        let e = client
            .call_node(c.addr(0), h, ctl.encode())
            .await
            .unwrap_err();
        assert_eq!(e.status(), Status::INVALID, "{e}");
    }
    assert_eq!(backend_stats(&c, 0).await.defrag.timeout_s, 7200);
    // Persisted like one set over HTTP.
    c.stop_node(0).await;
    c.restart_node(0).await;
    assert_eq!(backend_stats(&c, 0).await.defrag.mode, DefragMode::Timed);
    c.shutdown().await;
}
