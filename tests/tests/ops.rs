//! Server-side operations on real clusters: dc and merge recovery, server-send, data-sort
//! under load, schedules through the admin API.

// ITERATOR tests live in their own file, declared here so the shared `cluster.rs` root stays
// untouched.
#[path = "iterator.rs"]
mod iterator;

// Data-sort scheduling and backend controls, likewise.
#[path = "datasort.rs"]
mod datasort;

// Backend-iteration server-send, job throttles and cache-sync jobs, likewise.
#[path = "send.rs"]
mod send;

use std::time::Duration;

use bytes::Bytes;
use ellipsis_core::client::{Checker, Client};
use ellipsis_core::protocol::cmd::send::{SendMode, SendRequest, SendResult};
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{flags, Command, Header, IoAttr, Status};
use ellipsis_core::stats::{JobState, JobStatus};
use ellipsis_core::Id;
use ellipsis_tests::{Cluster, NodeSpec, TOKEN};

fn key(i: u64) -> Id {
    Id::for_key(b"ops", format!("k{i}").as_bytes())
}

fn at(sec: u64) -> IoAttr {
    IoAttr {
        ts_sec: sec,
        ..IoAttr::default()
    }
}

async fn four_nodes() -> Cluster {
    Cluster::start(&[
        NodeSpec::groups(&[1]),
        NodeSpec::groups(&[1]),
        NodeSpec::groups(&[2]),
        NodeSpec::groups(&[2]),
    ])
    .await
}

async fn post_json(url: String, body: serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Wait for every recovery job on every running node to finish.
async fn wait_jobs(c: &Cluster) -> Vec<JobStatus> {
    let mut all = Vec::new();
    for n in c.nodes.iter().filter_map(|n| n.running.as_ref()) {
        for j in n.node.workers.list() {
            let node = n.node.clone();
            let done = tokio::task::spawn_blocking(move || {
                node.workers.wait(j.id, Duration::from_secs(60))
            })
            .await
            .unwrap()
            .unwrap();
            assert_eq!(done.state, JobState::Done, "{done:?}");
            all.push(done);
        }
    }
    all
}

fn report(jobs: &[JobStatus]) -> ellipsis_node::recovery::RecoveryReport {
    let mut sum = ellipsis_node::recovery::RecoveryReport::default();
    for j in jobs {
        let r: ellipsis_node::recovery::RecoveryReport =
            serde_json::from_str(j.result.as_deref().unwrap_or("{}")).unwrap();
        sum.iterated += r.iterated;
        sum.copied += r.copied;
        sum.skipped += r.skipped;
        sum.failed += r.failed;
        sum.removed += r.removed;
    }
    sum
}

async fn group_read(c: &Client, group: u32, k: &Id) -> Option<(Bytes, u64)> {
    let single = Client::connect(ellipsis_core::client::ClientConfig {
        remotes: c.config().remotes.clone(),
        groups: vec![group],
        ..Default::default()
    })
    .await
    .unwrap();
    single
        .read(k, 0, 0)
        .await
        .ok()
        .map(|r| (r.data, r.attr.ts_sec))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dc_recovery_makes_groups_identical_with_the_newest_versions() {
    let mut c = four_nodes().await;
    let all = c.client(0, &[1, 2], Checker::All).await;
    for i in 0..40 {
        all.write(&key(i), Bytes::from(format!("v1-{i}")), at(100))
            .await
            .unwrap();
    }
    // Group 2 loses half its nodes for a while: its keys there miss the newer writes.
    c.stop_node(3).await;
    let any = c.client(0, &[1, 2], Checker::AtLeastOne).await;
    for i in 0..40 {
        any.write(&key(i), Bytes::from(format!("v2-{i}")), at(200))
            .await
            .unwrap();
    }
    for i in 40..50 {
        any.write(&key(i), Bytes::from(format!("new-{i}")), at(200))
            .await
            .unwrap();
    }
    c.restart_node(3).await;
    c.converge().await;
    let stale = {
        let mut n = 0;
        for i in 0..50 {
            if group_read(&all, 2, &key(i)).await.map(|x| x.1) != Some(200) {
                n += 1;
            }
        }
        n
    };
    assert!(stale > 0, "the stopped node missed writes");
    // Dry run first: reports, changes nothing.
    let r = post_json(
        format!("http://{}/admin/recovery", c.http(0)),
        serde_json::json!({"kind": "dc", "dry_run": true}),
    )
    .await;
    assert_eq!(r.status(), 202);
    let dry_jobs = wait_jobs(&c).await;
    assert_eq!(dry_jobs.len(), 4, "fanned out to every node");
    let dry = report(&dry_jobs);
    assert_eq!(dry.copied, stale, "{dry:?}");
    let r = post_json(
        format!("http://{}/admin/recovery", c.http(1)),
        serde_json::json!({"kind": "dc", "groups": [1, 2]}),
    )
    .await;
    assert_eq!(r.status(), 202);
    let jobs: Vec<JobStatus> = wait_jobs(&c)
        .await
        .into_iter()
        .filter(|j| !j.target.contains("dry run"))
        .collect();
    assert_eq!(jobs.len(), 4, "fanned out to every node");
    let done = report(&jobs);
    assert_eq!(done.failed, 0, "{done:?}");
    assert_eq!(done.copied, stale, "{done:?}");
    for i in 0..50 {
        let g1 = group_read(&all, 1, &key(i)).await.unwrap();
        let g2 = group_read(&all, 2, &key(i)).await.unwrap();
        assert_eq!(g1, g2, "key {i}");
        assert_eq!(g1.1, 200);
    }
    // Unauthenticated recovery is refused.
    let denied = reqwest::Client::new()
        .post(format!("http://{}/admin/recovery", c.http(0)))
        .json(&serde_json::json!({"kind": "dc"}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_take_its_part_of_a_recovery_is_the_jobs_error() {
    let mut c = Cluster::start(&[
        NodeSpec::groups(&[1]),
        NodeSpec::groups(&[1]),
        NodeSpec::groups(&[1]),
    ])
    .await;
    let gone_http = c.http(2);
    // Node 0 still knows node 2 (it may come back), but nothing answers its admin port.
    c.stop_node(2).await;
    let started = ellipsis_node::recovery::start(
        c.node(0),
        ellipsis_node::recovery::RecoveryRequest {
            kind: ellipsis_node::recovery::RecoveryKind::Merge,
            groups: vec![1],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(started.fanned_out.len(), 1, "{started:?}");
    let node = c.node(0).clone();
    let id = started.job.id;
    let end = tokio::task::spawn_blocking(move || node.workers.wait(id, Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    // Its own part ran (nothing to move), and the node left out is on the record.
    assert_eq!(end.state, JobState::Done, "{end:?}");
    assert_eq!(end.errors, 1, "{end:?}");
    let why = end.last_error.unwrap_or_default();
    assert!(why.contains(&gone_http.to_string()), "{why}");
    c.shutdown().await;
}

/// Start a merge through node 0's admin HTTP and sum every node's finished report.
async fn merge_from_node_0(c: &Cluster) -> ellipsis_node::recovery::RecoveryReport {
    let r = post_json(
        format!("http://{}/admin/recovery", c.http(0)),
        serde_json::json!({"kind": "merge"}),
    )
    .await;
    assert_eq!(r.status(), 202);
    report(&wait_jobs(c).await)
}

/// Two nodes of group 1 holding keys 0..60 (`{prefix}-{i}`, timestamp 10), then a third
/// joining: the cluster, a client that knows the new routes, and the keys the newcomer owns.
async fn ring_change(prefix: &str) -> (Cluster, std::sync::Arc<Client>, Vec<u64>) {
    let mut c = Cluster::start(&[NodeSpec::groups(&[1]), NodeSpec::groups(&[1])]).await;
    let client = c.client(0, &[1], Checker::All).await;
    for i in 0..60 {
        client
            .write(&key(i), Bytes::from(format!("{prefix}-{i}")), at(10))
            .await
            .unwrap();
    }
    let n = c.add_node(&NodeSpec::groups(&[1])).await;
    c.converge().await;
    client.refresh_routes().await.unwrap();
    let moved = (0..60)
        .filter(|i| client.routes().owner(1, &key(*i)).unwrap().node == c.addr(n))
        .collect();
    (c, client, moved)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_keeps_the_newest_copy_whichever_side_holds_it() {
    let (c, client, moved) = ring_change("old").await;
    assert!(moved.len() >= 2, "{moved:?}");
    // The new owner already holds a newer copy of one moved key and an older one of another.
    let (newer, older) = (moved[0], moved[1]);
    client
        .write(&key(newer), Bytes::from_static(b"newer"), at(20))
        .await
        .unwrap();
    client
        .write(&key(older), Bytes::from_static(b"older"), at(5))
        .await
        .unwrap();
    let rep = merge_from_node_0(&c).await;
    assert_eq!(
        rep.skipped, 1,
        "the newer copy at the owner is kept: {rep:?}"
    );
    assert_eq!(rep.copied, moved.len() as u64 - 1, "{rep:?}");
    assert_eq!(rep.failed, 0, "{rep:?}");
    assert_eq!(
        &client.read(&key(newer), 0, 0).await.unwrap().data[..],
        b"newer"
    );
    let got = client.read(&key(older), 0, 0).await.unwrap();
    assert_eq!(
        got.data,
        Bytes::from(format!("old-{older}")),
        "the older copy is replaced"
    );
    // Either way the old holders let go of the moved keys.
    for i in &moved {
        for old in [0, 1] {
            let b = c.node(old).backend(1).unwrap().engine().unwrap();
            assert!(
                b.lookup(&eblob::Key(key(*i).0)).is_err(),
                "key {i} on node {old}"
            );
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_after_a_ring_change_moves_every_key_to_its_owner() {
    let (c, client, moved) = ring_change("val").await;
    assert!(!moved.is_empty());
    // Before merge the new owner does not have them.
    assert!(client.read(&key(moved[0]), 0, 0).await.is_err());
    let rep = merge_from_node_0(&c).await;
    assert_eq!(rep.copied, moved.len() as u64, "{rep:?}");
    assert_eq!(rep.removed, moved.len() as u64);
    for i in 0..60 {
        assert_eq!(
            client.read(&key(i), 0, 0).await.unwrap().data,
            Bytes::from(format!("val-{i}"))
        );
    }
    // The old holders no longer keep moved keys.
    for i in &moved {
        for old in [0, 1] {
            let b = c.node(old).backend(1).unwrap().engine().unwrap();
            assert!(b.lookup(&eblob::Key(key(*i).0)).is_err());
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_send_never_overwrites_newer_and_moves_in_move_mode() {
    let c = four_nodes().await;
    let g1 = c.client(0, &[1], Checker::All).await;
    let g2 = c.client(0, &[2], Checker::All).await;
    let (a, b) = (key(1), key(2));
    g1.write(&a, Bytes::from_static(b"old"), at(100))
        .await
        .unwrap();
    g2.write(&a, Bytes::from_static(b"newer"), at(200))
        .await
        .unwrap();
    g1.write(&b, Bytes::from_static(b"only-in-1"), at(100))
        .await
        .unwrap();
    let send = |ids: Vec<Id>, mode| {
        let g1 = g1.clone();
        async move {
            let mut by_node = std::collections::BTreeMap::<std::net::SocketAddr, Vec<Id>>::new();
            for id in ids {
                by_node
                    .entry(g1.routes().owner(1, &id).unwrap().node)
                    .or_default()
                    .push(id);
            }
            let mut results = Vec::new();
            for (node, ids) in by_node {
                let h = Header::request(Command::Send, Id::ZERO, 1, 0);
                let req = SendRequest {
                    mode,
                    groups: vec![2],
                    ids,
                    backend: None,
                };
                for f in g1.call_node(node, h, req.encode()).await.unwrap() {
                    if f.header.has(flags::MORE) {
                        results.push(SendResult::decode(&f.payload).unwrap());
                    }
                }
            }
            results
        }
    };
    let r = send(vec![a, b], SendMode::Default).await;
    let status_of = |id: Id| r.iter().find(|x| x.id == id).unwrap().status;
    assert_eq!(
        status_of(a),
        Status::NEWER_EXISTS,
        "skipped, not overwritten"
    );
    assert_eq!(status_of(b), Status::OK);
    assert_eq!(&g2.read(&a, 0, 0).await.unwrap().data[..], b"newer");
    assert_eq!(&g2.read(&b, 0, 0).await.unwrap().data[..], b"only-in-1");
    let r = send(vec![a], SendMode::Overwrite).await;
    assert_eq!(r[0].status, Status::OK);
    assert_eq!(&g2.read(&a, 0, 0).await.unwrap().data[..], b"old");
    let c2 = key(3);
    g1.write(&c2, Bytes::from_static(b"moving"), at(100))
        .await
        .unwrap();
    let r = send(vec![c2], SendMode::Move).await;
    assert_eq!(r[0].status, Status::OK);
    assert_eq!(&g2.read(&c2, 0, 0).await.unwrap().data[..], b"moving");
    assert_eq!(
        g1.read(&c2, 0, 0).await.unwrap_err().status(),
        Status::NOT_FOUND,
        "removed at the source"
    );
    // A key the node does not hold (another node of its group owns it): NOT_FOUND.
    let owner = g1.routes().owner(1, &b).unwrap().node;
    let (other, other_http) = if owner == c.addr(0) {
        (c.addr(1), c.http(1))
    } else {
        (c.addr(0), c.http(0))
    };
    let h = Header::request(Command::Send, Id::ZERO, 1, 0);
    let req = SendRequest {
        mode: SendMode::Default,
        groups: vec![2],
        ids: vec![b],
        backend: None,
    };
    let frames = g1.call_node(other, h, req.encode()).await.unwrap();
    let results: Vec<SendResult> = frames
        .iter()
        .filter(|f| f.header.has(flags::MORE))
        .map(|f| SendResult::decode(&f.payload).unwrap())
        .collect();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].status, Status::NOT_FOUND);
    // Every SEND ran as a server-send job, visible in /stats/workers with its progress.
    let jobs: Vec<JobStatus> = reqwest::get(format!("http://{other_http}/stats/workers"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sends: Vec<&JobStatus> = jobs
        .iter()
        .filter(|j| j.kind == ellipsis_core::stats::JobKind::ServerSend)
        .collect();
    let last = sends.last().expect("a server-send job");
    assert_eq!(last.state, JobState::Done, "{last:?}");
    assert_eq!((last.done_keys, last.total_keys), (1, Some(1)), "{last:?}");
    let mut all_sends = 0;
    let mut sent_bytes = 0;
    for n in 0..2 {
        for j in c.node(n).workers.list() {
            if j.kind == ellipsis_core::stats::JobKind::ServerSend {
                assert_eq!(j.state, JobState::Done, "{j:?}");
                all_sends += 1;
                sent_bytes += j.done_bytes;
            }
        }
    }
    assert!(all_sends >= 4, "one job per SEND request: {all_sends}");
    assert!(
        sent_bytes >= (b"only-in-1".len() + b"old".len() + b"moving".len()) as u64,
        "{sent_bytes}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_defrag_schedule_changed_at_run_time_is_reported_and_survives_restart() {
    let mut c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let url = format!("http://{}/admin/backends/1/defrag/schedule", c.http(0));
    let body = serde_json::json!({"mode": "scheduled", "timeout_s": 3600, "time_hour": 3, "splay_hours": 2, "compact": true});
    let http = reqwest::Client::new();
    assert_eq!(
        http.put(&url).json(&body).send().await.unwrap().status(),
        401
    );
    assert_eq!(
        http.put(&url)
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let bad = serde_json::json!({"mode": "scheduled", "timeout_s": 1, "time_hour": 30, "splay_hours": 2, "compact": false});
    assert_eq!(
        http.put(&url)
            .bearer_auth(TOKEN)
            .json(&bad)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let check = |s: &ellipsis_core::stats::NodeStats| {
        let d = &s.backends[0].defrag;
        assert_eq!(d.mode, ellipsis_core::stats::DefragMode::Scheduled);
        assert_eq!((d.time_hour, d.splay_hours, d.compact), (3, 2, true));
        let next = d.next_start_unix_s.expect("planned");
        let hour = (next % 86_400) / 3600;
        assert!((1..5).contains(&hour), "start {next} is inside 03:00 ± 2 h");
    };
    check(&ellipsis_node::stats::collect(c.node(0)));
    c.stop_node(0).await;
    c.restart_node(0).await;
    check(&ellipsis_node::stats::collect(c.node(0)));
    c.shutdown().await;
}

/// Jobs started since `before` (job ids per node), once finished.
async fn new_jobs(c: &Cluster, before: &[Vec<u64>]) -> Vec<JobStatus> {
    let mut out = Vec::new();
    for (n, node) in c.nodes.iter().enumerate() {
        let Some(r) = node.running.as_ref() else {
            continue;
        };
        for j in r.node.workers.list() {
            if before[n].contains(&j.id) {
                continue;
            }
            let node = r.node.clone();
            let done = tokio::task::spawn_blocking(move || {
                node.workers.wait(j.id, Duration::from_secs(60))
            })
            .await
            .unwrap()
            .unwrap();
            assert_eq!(done.state, JobState::Done, "{done:?}");
            out.push(done);
        }
    }
    out
}

fn job_ids(c: &Cluster) -> Vec<Vec<u64>> {
    c.nodes
        .iter()
        .map(|n| {
            n.running
                .as_ref()
                .map(|r| r.node.workers.list().iter().map(|j| j.id).collect())
                .unwrap_or_default()
        })
        .collect()
}

fn uncommitted_report(jobs: &[JobStatus]) -> ellipsis_node::recovery::RecoveryReport {
    let mut sum = report(jobs);
    for j in jobs {
        let r: ellipsis_node::recovery::RecoveryReport =
            serde_json::from_str(j.result.as_deref().unwrap_or("{}")).unwrap();
        sum.uncommitted_removed += r.uncommitted_removed;
        sum.uncommitted_skipped += r.uncommitted_skipped;
    }
    sum
}

/// (status, uncommitted, timestamp) of `k` in `group`.
async fn replica(c: &Client, group: u32, k: &Id) -> (Status, bool, u64) {
    let r = &c.lookup_in(&[group], k).await[0];
    let info = r.info.clone().unwrap_or_default();
    (
        r.status,
        info.attr.record_flags & (1 << 2) != 0,
        info.attr.ts_sec,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dc_removes_abandoned_uploads_everywhere_and_leaves_fresh_ones() {
    let c = Cluster::start(&[NodeSpec::groups(&[1]), NodeSpec::groups(&[2])]).await;
    let client = c.client(0, &[1, 2], Checker::All).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let prepare = |group: u32, k: Id, ts: u64| {
        let client = client.clone();
        async move {
            let attr = IoAttr {
                ts_sec: ts,
                io_flags: ellipsis_core::protocol::io_flags::PREPARE,
                total_size: 64,
                ..IoAttr::default()
            };
            let r = client
                .write_to(&[group], &k, Bytes::from_static(b"partial"), attr)
                .await;
            assert_eq!(r[0].status, Status::OK);
        }
    };
    let commit = |group: u32, k: Id, ts: u64| {
        let client = client.clone();
        async move {
            let r = client
                .write_to(&[group], &k, Bytes::from(format!("done-{ts}")), at(ts))
                .await;
            assert_eq!(r[0].status, Status::OK);
        }
    };
    let (abandoned, fresh, committed_wins, stale_newest, fresh_newest) =
        (key(1), key(2), key(3), key(4), key(5));
    prepare(1, abandoned, 100).await;
    prepare(2, abandoned, 100).await;
    prepare(1, fresh, now).await;
    prepare(2, fresh, now).await;
    commit(1, committed_wins, 200).await;
    prepare(2, committed_wins, 100).await;
    prepare(1, stale_newest, 300).await;
    commit(2, stale_newest, 200).await;
    commit(1, fresh_newest, 200).await;
    prepare(2, fresh_newest, now).await;
    let recover = |body: serde_json::Value| {
        let url = format!("http://{}/admin/recovery", c.http(0));
        async move { assert_eq!(post_json(url, body).await.status(), 202) }
    };

    // Dry run: deterministic counts (nothing changes between the two nodes' passes).
    let before = job_ids(&c);
    recover(serde_json::json!({"kind": "dc", "dry_run": true})).await;
    let dry = uncommitted_report(&new_jobs(&c, &before).await);
    // abandoned and stale_newest, seen from both groups.
    assert_eq!(dry.uncommitted_removed, 4, "{dry:?}");
    // fresh and fresh_newest from both groups, committed_wins from its uncommitted side.
    assert_eq!(dry.uncommitted_skipped, 5, "{dry:?}");
    assert_eq!(dry.copied, 1, "{dry:?}");
    assert_eq!(replica(&client, 1, &abandoned).await.0, Status::OK);

    let before = job_ids(&c);
    recover(serde_json::json!({"kind": "dc"})).await;
    let done = uncommitted_report(&new_jobs(&c, &before).await);
    assert_eq!(done.failed, 0, "{done:?}");
    assert!(done.uncommitted_removed >= 2, "{done:?}");
    for g in [1, 2] {
        assert_eq!(replica(&client, g, &abandoned).await.0, Status::NOT_FOUND);
        assert_eq!(
            replica(&client, g, &stale_newest).await.0,
            Status::NOT_FOUND
        );
        assert_eq!(replica(&client, g, &fresh).await, (Status::OK, true, now));
        let (s, uncommitted, ts) = replica(&client, g, &committed_wins).await;
        assert_eq!((s, uncommitted, ts), (Status::OK, false, 200), "group {g}");
        assert_eq!(
            group_read(&client, g, &committed_wins).await,
            Some((Bytes::from_static(b"done-200"), 200))
        );
    }
    assert_eq!(
        replica(&client, 1, &fresh_newest).await,
        (Status::OK, false, 200)
    );
    assert_eq!(
        replica(&client, 2, &fresh_newest).await,
        (Status::OK, true, now)
    );

    // The prepare timeout is per request: with 0, the fresh uploads count as abandoned too.
    let before = job_ids(&c);
    recover(serde_json::json!({"kind": "dc", "prepare_timeout_s": 0})).await;
    let forced = uncommitted_report(&new_jobs(&c, &before).await);
    assert_eq!(forced.failed, 0, "{forced:?}");
    for g in [1, 2] {
        assert_eq!(replica(&client, g, &fresh).await.0, Status::NOT_FOUND);
        assert_eq!(
            replica(&client, g, &fresh_newest).await.0,
            Status::NOT_FOUND
        );
        assert_eq!(replica(&client, g, &committed_wins).await.0, Status::OK);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dc_since_and_key_range_filters_limit_what_is_copied() {
    let c = Cluster::start(&[NodeSpec::groups(&[1]), NodeSpec::groups(&[2])]).await;
    let g1 = c.client(0, &[1], Checker::All).await;
    let both = c.client(0, &[1, 2], Checker::All).await;
    for i in 0..40 {
        let ts = if i < 20 { 100 } else { 300 };
        g1.write(&key(i), Bytes::from(format!("f{i}")), at(ts))
            .await
            .unwrap();
    }
    let in_group2 = |range: std::ops::Range<u64>| {
        let both = both.clone();
        async move {
            let mut found = Vec::new();
            for i in range {
                if group_read(&both, 2, &key(i)).await.is_some() {
                    found.push(i);
                }
            }
            found
        }
    };
    let recover = |body: serde_json::Value| {
        let url = format!("http://{}/admin/recovery", c.http(0));
        async move { assert_eq!(post_json(url, body).await.status(), 202) }
    };
    // --since: only the records written at or after 200 (throttled to half the wall time,
    // which changes the pace, not the outcome).
    let before = job_ids(&c);
    recover(serde_json::json!({"kind": "dc", "since_unix_s": 200, "work_share": 0.5})).await;
    let rep = report(&new_jobs(&c, &before).await);
    assert_eq!(rep.copied, 20, "{rep:?}");
    assert_eq!(in_group2(0..40).await, (20..40).collect::<Vec<_>>());
    // Key range (inclusive): five of the older keys, by id order.
    let mut older: Vec<(Id, u64)> = (0..20).map(|i| (key(i), i)).collect();
    older.sort();
    let (lo, hi) = (older[5].0, older[9].0);
    let mut expected: Vec<u64> = older[5..10].iter().map(|x| x.1).collect();
    expected.sort_unstable();
    let before = job_ids(&c);
    recover(serde_json::json!({"kind": "dc", "key_range": [lo, hi], "batch": 2})).await;
    let rep = report(&new_jobs(&c, &before).await);
    assert_eq!(rep.copied, 5, "{rep:?}");
    assert_eq!(in_group2(0..20).await, expected);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_merge_copies_to_the_new_owner_and_keeps_the_old_copy() {
    let mut c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let client = c.client(0, &[1], Checker::All).await;
    for i in 0..40 {
        client
            .write(&key(i), Bytes::from(format!("s{i}")), at(10))
            .await
            .unwrap();
    }
    let n = c.add_node(&NodeSpec::groups(&[1])).await;
    c.converge().await;
    client.refresh_routes().await.unwrap();
    let moved: Vec<u64> = (0..40)
        .filter(|i| client.routes().owner(1, &key(*i)).unwrap().node == c.addr(n))
        .collect();
    assert!(!moved.is_empty());
    let before = job_ids(&c);
    let r = post_json(
        format!("http://{}/admin/recovery", c.http(0)),
        serde_json::json!({"kind": "merge", "safe": true}),
    )
    .await;
    assert_eq!(r.status(), 202);
    let rep = report(&new_jobs(&c, &before).await);
    assert_eq!(
        (rep.copied, rep.removed),
        (moved.len() as u64, 0),
        "{rep:?}"
    );
    let old = c.node(0).backend(1).unwrap().engine().unwrap();
    for i in &moved {
        assert_eq!(
            client.read(&key(*i), 0, 0).await.unwrap().data,
            Bytes::from(format!("s{i}"))
        );
        assert!(
            old.lookup(&eblob::Key(key(*i).0)).is_ok(),
            "kept at the source"
        );
    }
    c.shutdown().await;
}

/// Group `g`'s copy of `k`: (timestamp, data), read from the engine of the node holding it.
fn engine_copy(c: &Cluster, node: usize, k: &Id) -> Option<(u64, Vec<u8>)> {
    let e = c.node(node).backend(1).unwrap().engine().unwrap();
    let l = e.lookup(&eblob::Key(k.0)).ok()?;
    Some((l.timestamp.sec, e.read(&eblob::Key(k.0)).ok()?))
}

async fn dc(c: &Cluster, body: serde_json::Value) -> ellipsis_node::recovery::RecoveryReport {
    let before = job_ids(c);
    let r = post_json(format!("http://{}/admin/recovery", c.http(0)), body).await;
    assert_eq!(r.status(), 202);
    report(&new_jobs(c, &before).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dc_converges_copies_with_equal_timestamps_and_different_sizes() {
    let c = Cluster::start(&[NodeSpec::groups(&[1]), NodeSpec::groups(&[2])]).await;
    let client = c.client(0, &[1, 2], Checker::All).await;
    let (a, b) = (key(1), key(2));
    // Same timestamp, different sizes, the bigger one in either group.
    for (k, g1, g2) in [
        (a, "short", "the longer one"),
        (b, "the longer one", "short"),
    ] {
        for (g, v) in [(1, g1), (2, g2)] {
            let r = client
                .write_to(&[g], &k, Bytes::from(v.to_owned()), at(100))
                .await;
            assert_eq!(r[0].status, Status::OK);
        }
    }
    let rep = dc(&c, serde_json::json!({"kind": "dc"})).await;
    assert_eq!((rep.copied, rep.failed), (2, 0), "{rep:?}");
    for k in [a, b] {
        for g in [1, 2] {
            assert_eq!(
                group_read(&client, g, &k).await,
                Some((Bytes::from_static(b"the longer one"), 100)),
                "group {g}"
            );
        }
    }
    // Converged: a second pass copies nothing.
    let rep = dc(&c, serde_json::json!({"kind": "dc"})).await;
    assert_eq!((rep.copied, rep.failed), (0, 0), "{rep:?}");
    assert_eq!(rep.skipped, 4, "both keys seen from both groups: {rep:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dc_racing_client_writes_never_sends_bytes_under_another_versions_timestamp() {
    let c = Cluster::start(&[NodeSpec::groups(&[1]), NodeSpec::groups(&[2])]).await;
    let g1 = c.client(0, &[1], Checker::All).await;
    // The value names its own timestamp, so a copy pairing bytes with another version's
    // timestamp is visible.
    let val = |i: u64, ts: u64| Bytes::from(format!("key {i} at {ts} {}", "x".repeat(2000)));
    const KEYS: u64 = 200;
    for i in 0..KEYS {
        g1.write(&key(i), val(i, 1000), at(1000)).await.unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (g1, stop) = (g1.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ts = 1001;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for i in (ts % 7..KEYS).step_by(7) {
                    g1.write(&key(i), val(i, ts), at(ts)).await.unwrap();
                }
                ts += 1;
            }
            ts
        })
    };
    let mut passes = 0;
    while passes < 3 {
        dc(&c, serde_json::json!({"kind": "dc", "groups": [1, 2]})).await;
        passes += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let last_ts = writer.await.unwrap();
    assert!(last_ts > 1001, "the writer ran during the passes");
    for i in 0..KEYS {
        if let Some((ts, data)) = engine_copy(&c, 1, &key(i)) {
            assert_eq!(
                data,
                val(i, ts),
                "key {i}: bytes of another version at ts {ts}"
            );
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dc_copies_records_larger_than_a_frame_in_parts() {
    let mut c = Cluster::start(&[]).await;
    for g in [1, 2] {
        c.add_node_with(&NodeSpec::groups(&[g]), |cfg| cfg.max_frame_bytes = 1 << 20)
            .await;
    }
    c.converge().await;
    let client = c.client(0, &[1, 2], Checker::All).await;
    let big = |seed: u8, n: usize| -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    };
    // Uploads in 512 KiB parts (a whole one would not fit a frame either).
    let upload = |g: u32, k: Id, v: Vec<u8>, ts: u64, commit: bool| {
        let client = client.clone();
        async move {
            let part = 512 << 10;
            let n = v.len();
            for (j, chunk) in v.chunks(part).enumerate() {
                let offset = (j * part) as u64;
                let last = offset as usize + chunk.len() == n;
                let mode = match (j, last && commit) {
                    (0, _) => ellipsis_core::protocol::io_flags::PREPARE,
                    (_, true) => ellipsis_core::protocol::io_flags::COMMIT,
                    _ => ellipsis_core::protocol::io_flags::PLAIN_WRITE,
                };
                let attr = IoAttr {
                    offset,
                    ts_sec: ts,
                    io_flags: mode,
                    total_size: n as u64,
                    ..IoAttr::default()
                };
                let r = client
                    .write_to(&[g], &k, Bytes::copy_from_slice(chunk), attr)
                    .await;
                assert_eq!(r[0].status, Status::OK, "part {j}");
                if !commit && j == 0 {
                    return;
                }
            }
        }
    };
    let (fresh, stale, partial) = (key(1), key(2), key(3));
    let size = (5 << 20) + 123;
    upload(1, fresh, big(1, size), 100, true).await;
    upload(1, stale, big(2, size), 100, true).await;
    client
        .write_to(&[2], &stale, Bytes::from_static(b"old"), at(50))
        .await;
    upload(1, partial, big(3, size), 100, true).await;
    // An interrupted copy of the same version: one part, never committed.
    upload(2, partial, big(3, size), 100, false).await;
    let rep = dc(&c, serde_json::json!({"kind": "dc"})).await;
    assert_eq!((rep.copied, rep.failed), (3, 0), "{rep:?}");
    for (k, seed) in [(fresh, 1), (stale, 2), (partial, 3)] {
        assert_eq!(engine_copy(&c, 1, &k), Some((100, big(seed, size))));
        let l1 = c.node(0).backend(1).unwrap().engine().unwrap();
        let l2 = c.node(1).backend(1).unwrap().engine().unwrap();
        let (l1, l2) = (
            l1.lookup(&eblob::Key(k.0)).unwrap(),
            l2.lookup(&eblob::Key(k.0)).unwrap(),
        );
        assert!(!l2.uncommitted);
        assert_eq!(l1.checksum, l2.checksum);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_started_and_cancelled_over_the_protocol_stops_every_nodes_job() {
    use ellipsis_core::protocol::cmd::recovery::RecoveryControl;
    let c = Cluster::start(&[NodeSpec::groups(&[1]), NodeSpec::groups(&[2])]).await;
    // Different keys in each group: both nodes have copying to do.
    const SIZE: usize = 10_000;
    for (g, keys) in [(1, 0..40), (2, 40..80)] {
        let client = c.client(0, &[g], Checker::All).await;
        for i in keys {
            client
                .write(&key(i), Bytes::from(vec![i as u8; SIZE]), at(100))
                .await
                .unwrap();
        }
    }
    let start = RecoveryControl::Start {
        request_json: serde_json::json!({"kind": "dc", "batch": 2, "bytes_per_s": 40_000})
            .to_string(),
    };
    // Without the token: refused, nothing started.
    let anon = Client::connect(ellipsis_core::client::ClientConfig {
        remotes: vec![c.addr(0)],
        ..Default::default()
    })
    .await
    .unwrap();
    let denied = anon.recovery(c.addr(0), &start).await.unwrap_err();
    assert_eq!(denied.status(), Status::ACCESS);
    assert!(c.node(0).workers.list().is_empty());

    let admin = c.client(0, &[1, 2], Checker::All).await;
    let began = std::time::Instant::now();
    let started = admin.recovery(c.addr(0), &start).await.unwrap();
    assert_eq!(started.job.kind, ellipsis_core::stats::JobKind::RecoveryDc);
    assert_eq!(started.fanned_out.len(), 1, "{started:?}");
    assert_eq!(started.fanned_out[0].http_addr, c.http(1).to_string());
    let jobs = [(0, started.job.id), (1, started.fanned_out[0].job)];
    // Both jobs are copying (polled, bounded by a deadline).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while jobs
        .iter()
        .any(|(n, id)| c.node(*n).workers.get(*id).unwrap().done_bytes == 0)
    {
        assert!(std::time::Instant::now() < deadline, "jobs never copied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cancelled = admin
        .recovery(c.addr(0), &RecoveryControl::Cancel { job: jobs[0].1 })
        .await
        .unwrap();
    assert_eq!(cancelled.fanned_out, started.fanned_out);
    let elapsed = began.elapsed().as_secs_f64();
    for (n, id) in jobs {
        let node = c.node(n).clone();
        let end =
            tokio::task::spawn_blocking(move || node.workers.wait(id, Duration::from_secs(10)))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(end.state, JobState::Cancelled, "node {n}: {end:?}");
        // The throughput limit held: at most the allowance so far plus one batch in flight.
        let allowed = 40_000.0 * elapsed + (2 * SIZE) as f64;
        assert!(
            (end.done_bytes as f64) <= allowed,
            "node {n}: {} bytes in {elapsed:.2} s",
            end.done_bytes
        );
        assert!(end.done_keys < 40, "node {n} stopped early: {end:?}");
        // The counters of what it did before it stopped survive, with why it stopped.
        let report: serde_json::Value =
            serde_json::from_str(end.result.as_deref().unwrap_or_default()).unwrap();
        assert!(
            report["iterated"].as_u64().unwrap() >= end.done_keys,
            "{report}"
        );
        assert!(
            report["error"].as_str().unwrap().contains("cancelled"),
            "{report}"
        );
        assert!(end.last_error.is_some_and(|e| e.contains("cancelled")));
    }
    c.shutdown().await;
}
