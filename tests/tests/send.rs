//! Server-send of a whole backend, background-job throttles and cache-sync jobs, on real
//! clusters over loopback: what the client library and `/stats/workers` show.

use std::time::Duration;

use bytes::Bytes;
use ellipsis_core::client::{Checker, Client, ClientError};
use ellipsis_core::protocol::cmd::send::{SendBackend, SendMode, SendRequest, SendResult};
use ellipsis_core::protocol::{io_flags, IoAttr, Status};
use ellipsis_core::stats::{JobKind, JobState, JobStatus};
use ellipsis_core::Id;
use ellipsis_tests::{flip_byte, poll_until, Cluster, NodeSpec, TOKEN};

fn key(i: u64) -> Id {
    Id::for_key(b"send", format!("k{i}").as_bytes())
}

fn at(sec: u64) -> IoAttr {
    IoAttr {
        ts_sec: sec,
        ..IoAttr::default()
    }
}

/// A backend pass of node `node`'s backend 1 to `groups`; every key result (keep-alives
/// skipped) and the node's job id.
async fn send_backend(
    c: &Client,
    node: std::net::SocketAddr,
    groups: Vec<u32>,
    mode: SendMode,
    filters: SendBackend,
) -> (Vec<SendResult>, u64) {
    let req = SendRequest {
        mode,
        groups,
        ids: Vec::new(),
        backend: Some(SendBackend {
            backend: 1,
            ..filters
        }),
    };
    let mut s = c.server_send(node, 0, &req).await.unwrap();
    let mut out = Vec::new();
    while let Some(r) = s.next_result().await {
        out.push(r.unwrap());
    }
    assert!(s.ended(), "the final frame came");
    (out, s.job().expect("the first frame named the job"))
}

async fn workers(http: std::net::SocketAddr) -> Vec<JobStatus> {
    reqwest::get(format!("http://{http}/stats/workers"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn job(http: std::net::SocketAddr, id: u64) -> JobStatus {
    workers(http)
        .await
        .into_iter()
        .find(|j| j.id == id)
        .expect("job listed")
}

/// One node per group, one backend each (backend 1).
async fn one_node_per_group(groups: &[u32]) -> Cluster {
    let specs: Vec<NodeSpec> = groups.iter().map(|g| NodeSpec::groups(&[*g])).collect();
    Cluster::start(&specs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_send_copies_every_key_and_never_overwrites_a_newer_copy() {
    let c = one_node_per_group(&[1, 2]).await;
    let g1 = c.client(0, &[1], Checker::All).await;
    let g2 = c.client(0, &[2], Checker::All).await;
    for i in 0..30 {
        g1.write(&key(i), Bytes::from(format!("v1-{i}")), at(100))
            .await
            .unwrap();
    }
    // Group 2 already holds a newer copy of five keys.
    for i in 0..5 {
        g2.write(&key(i), Bytes::from(format!("v2-{i}")), at(200))
            .await
            .unwrap();
    }
    let (results, job_id) = send_backend(
        &g1,
        c.addr(0),
        vec![1, 2],
        SendMode::Default,
        SendBackend::default(),
    )
    .await;
    // One result per key, for the one target (the source group is left out).
    assert_eq!(results.len(), 30, "{results:?}");
    for i in 0..30 {
        let r: Vec<&SendResult> = results.iter().filter(|r| r.id == key(i)).collect();
        assert_eq!(r.len(), 1, "key {i}: {r:?}");
        assert_eq!(r[0].group, 2);
        let want = if i < 5 {
            Status::NEWER_EXISTS
        } else {
            Status::OK
        };
        assert_eq!(r[0].status, want, "key {i}");
        let read = g2.read(&key(i), 0, 0).await.unwrap();
        let expect = if i < 5 {
            format!("v2-{i}")
        } else {
            format!("v1-{i}")
        };
        assert_eq!(read.data, Bytes::from(expect), "key {i} in group 2");
    }
    // Default mode keeps the sources.
    for i in 0..30 {
        assert!(
            g1.read(&key(i), 0, 0).await.is_ok(),
            "key {i} still in group 1"
        );
    }
    let j = job(c.http(0), job_id).await;
    assert_eq!(
        (j.kind, j.state, j.done_keys, j.total_keys, j.errors),
        (JobKind::ServerSend, JobState::Done, 30, Some(30), 0),
        "{j:?}"
    );
    let copied: u64 = (5..30).map(|i| format!("v1-{i}").len() as u64).sum();
    assert_eq!(j.done_bytes, copied, "{j:?}");
    assert!(
        j.result.as_deref().unwrap_or("").contains("5 skipped"),
        "{j:?}"
    );

    // Filters as in ITERATOR: only records written at or after 300 go.
    for i in 30..34 {
        g1.write(&key(i), Bytes::from(format!("late-{i}")), at(300))
            .await
            .unwrap();
    }
    let since = SendBackend {
        time_range: Some((300, u64::MAX)),
        ..SendBackend::default()
    };
    let (results, job_id) = send_backend(&g1, c.addr(0), vec![2], SendMode::Default, since).await;
    let mut sent: Vec<Id> = results.iter().map(|r| r.id).collect();
    sent.sort();
    let mut want: Vec<Id> = (30..34).map(key).collect();
    want.sort();
    assert_eq!(sent, want, "only the records since 300");
    assert!(results.iter().all(|r| r.status == Status::OK));
    let j = job(c.http(0), job_id).await;
    assert_eq!(
        (j.done_keys, j.total_keys),
        (34, Some(34)),
        "filtered count as progress: {j:?}"
    );
    assert!(
        j.result.as_deref().unwrap_or("").contains("30 filtered"),
        "{j:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_of_many_batches_give_every_key_exactly_one_result_and_copy() {
    // More keys than several send batches (64), and not a multiple of one.
    const KEYS: u64 = 150;
    let c = one_node_per_group(&[1, 2, 3]).await;
    let g1 = c.client(0, &[1], Checker::All).await;
    for i in 0..KEYS {
        g1.write(&key(i), Bytes::from(format!("many-{i}")), at(100))
            .await
            .unwrap();
    }
    // A backend pass to group 2.
    let (results, _) = send_backend(
        &g1,
        c.addr(0),
        vec![2],
        SendMode::Default,
        SendBackend::default(),
    )
    .await;
    assert_eq!(results.len() as u64, KEYS, "one result per key");
    let mut ids: Vec<Id> = results.iter().map(|r| r.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as u64, KEYS, "no key twice");
    assert!(results
        .iter()
        .all(|r| r.status == Status::OK && r.group == 2));
    // A key list to group 3.
    let list: Vec<Id> = (0..KEYS).map(key).collect();
    let results = g1
        .send_keys(1, &[1, 3], &list, SendMode::Default)
        .await
        .unwrap();
    assert_eq!(results.len() as u64, KEYS, "one result per key");
    assert!(results
        .iter()
        .all(|r| r.status == Status::OK && r.group == 3));
    for g in [2, 3] {
        let reader = c.client(0, &[g], Checker::All).await;
        for i in 0..KEYS {
            let r = reader.read(&key(i), 0, 0).await.unwrap();
            assert_eq!(
                r.data,
                format!("many-{i}").as_bytes(),
                "key {i} in group {g}"
            );
        }
    }
    c.shutdown().await;
}

/// Copies from the data file go from the file unread by the source's engine (through the
/// connection writer's buffer, or with `sendfile`: both are run), and the target checks them
/// against the record checksum. A record whose bytes rotted on the source's disk is refused
/// there, read here (which finds the damage and reports it) and never stored; a NOCSUM record
/// (no checksum to check against) and a newer dirty cached copy are read and sent from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_damaged_at_the_source_is_never_copied_and_every_other_copy_lands() {
    for sendfile in [false, true] {
        damaged_source_case(sendfile).await;
    }
}

async fn damaged_source_case(sendfile: bool) {
    let mut c = Cluster::start(&[]).await;
    let source = NodeSpec {
        groups: vec![1],
        // Room for a 1.3 MiB object in each cache shard.
        cache_bytes: 64 << 20,
    };
    for spec in [source, NodeSpec::groups(&[2])] {
        c.add_node_with(&spec, |n| n.sendfile = sendfile).await;
    }
    c.converge().await;
    let g1 = c.client(0, &[1], Checker::All).await;
    let g2 = c.client(0, &[2], Checker::All).await;
    // Larger than one checksum chunk (1 MiB): the damage is in the second.
    let value = |i: u64, v: u8| Bytes::from(vec![i as u8 ^ v; (1 << 20) + 300_000]);
    let (damaged, nocsum, cached) = (3u64, 6u64, 7u64);
    for i in 0..8 {
        let attr = IoAttr {
            io_flags: if i == nocsum { io_flags::NOCSUM } else { 0 },
            ..at(100)
        };
        g1.write(&key(i), value(i, 0), attr).await.unwrap();
    }
    // A newer version of `cached` waits in the cache, not yet written back.
    let in_cache = IoAttr {
        io_flags: io_flags::CACHE,
        ..at(200)
    };
    g1.write(&key(cached), value(cached, 0xff), in_cache)
        .await
        .unwrap();
    let source = c.node(0).backend(1).unwrap();
    assert_eq!(source.cache_stats().unwrap().dirty_objects, 1);
    let l = source
        .engine()
        .unwrap()
        .lookup(&eblob::Key(key(damaged).0))
        .unwrap();
    flip_byte(&l.data_path, l.data_offset_bytes + (1 << 20) + 12_345);

    let (results, _) = send_backend(
        &g1,
        c.addr(0),
        vec![2],
        SendMode::Default,
        SendBackend::default(),
    )
    .await;
    assert_eq!(results.len(), 8, "one result per key: {results:?}");
    for r in &results {
        let want = if r.id == key(damaged) {
            Status::CORRUPTED
        } else {
            Status::OK
        };
        assert_eq!(r.status, want, "sendfile {sendfile}: {r:?}");
    }
    for i in 0..8 {
        let got = g2.read(&key(i), 0, 0).await;
        if i == damaged {
            let e = got.unwrap_err();
            assert_eq!(e.status(), Status::NOT_FOUND, "nothing stored: {e}");
            continue;
        }
        let want = value(i, if i == cached { 0xff } else { 0 });
        assert!(got.unwrap().data == want, "key {i} in group 2");
    }
    // The target refused the unverified bytes (a mismatched write, not an error); the
    // source's own read found the damage and counts it.
    let target = c.node(1).backend(1).unwrap().engine().unwrap().stats();
    assert_eq!(
        (target.ops.mismatched_writes, target.ops.errors),
        (1, 0),
        "sendfile {sendfile}: {:?}",
        target.ops
    );
    let source_ops = source.engine().unwrap().stats().ops;
    assert_eq!(source_ops.corrupted_reads, 1, "{source_ops:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_send_in_move_mode_removes_a_source_only_after_every_target_acknowledged() {
    let c = one_node_per_group(&[1, 2, 3]).await;
    let g1 = c.client(0, &[1], Checker::All).await;
    let g2 = c.client(0, &[2], Checker::All).await;
    let g3 = c.client(0, &[3], Checker::All).await;
    for i in 0..10 {
        g1.write(&key(i), Bytes::from(format!("m-{i}")), at(100))
            .await
            .unwrap();
    }
    g2.write(&key(0), Bytes::from_static(b"newer"), at(200))
        .await
        .unwrap();

    // Group 9 has no node: no target write there can be acknowledged, so nothing moves
    // away from group 1, although group 2 got its copies.
    let (results, _) = send_backend(
        &g1,
        c.addr(0),
        vec![2, 9],
        SendMode::Move,
        SendBackend::default(),
    )
    .await;
    assert_eq!(results.len(), 20, "one result per key and target");
    assert!(results
        .iter()
        .filter(|r| r.group == 9)
        .all(|r| r.status != Status::OK && r.status != Status::NEWER_EXISTS));
    for i in 0..10 {
        assert!(
            g1.read(&key(i), 0, 0).await.is_ok(),
            "key {i} kept: a target failed"
        );
    }
    for i in 1..10 {
        assert_eq!(
            g2.read(&key(i), 0, 0).await.unwrap().data,
            Bytes::from(format!("m-{i}"))
        );
    }

    // Both targets reachable: every key leaves group 1. Group 2 acknowledges keys 1..9 with
    // NEWER_EXISTS (it got this very version in the first pass) and key 0 likewise (it holds
    // a newer one): either way it holds what the source had or newer. Group 3 takes all ten.
    let (results, job_id) = send_backend(
        &g1,
        c.addr(0),
        vec![2, 3],
        SendMode::Move,
        SendBackend::default(),
    )
    .await;
    assert_eq!(results.len(), 20);
    for i in 0..10 {
        let status = |g: u32| {
            results
                .iter()
                .find(|r| r.id == key(i) && r.group == g)
                .unwrap()
                .status
        };
        assert_eq!(status(2), Status::NEWER_EXISTS, "key {i} group 2");
        assert_eq!(status(3), Status::OK, "key {i} group 3");
        assert_eq!(
            g1.read(&key(i), 0, 0).await.unwrap_err().status(),
            Status::NOT_FOUND,
            "key {i} moved"
        );
        assert_eq!(
            g3.read(&key(i), 0, 0).await.unwrap().data,
            Bytes::from(format!("m-{i}"))
        );
    }
    assert_eq!(
        g2.read(&key(0), 0, 0).await.unwrap().data,
        Bytes::from_static(b"newer"),
        "never overwritten"
    );
    let j = job(c.http(0), job_id).await;
    assert_eq!(j.state, JobState::Done, "{j:?}");
    assert!(
        j.result.as_deref().unwrap_or("").contains("10 removed"),
        "{j:?}"
    );

    // The key-list form, split per owning node by the client library, follows the same rules.
    let ids: Vec<Id> = (10..14).map(key).collect();
    for id in &ids {
        g1.write(id, Bytes::from_static(b"listed"), at(100))
            .await
            .unwrap();
    }
    let r = g1
        .send_keys(1, &[1, 3], &ids, SendMode::Move)
        .await
        .unwrap();
    assert_eq!(r.len(), 4, "one result per key: {r:?}");
    assert!(
        r.iter().all(|x| x.group == 3 && x.status == Status::OK),
        "{r:?}"
    );
    for id in &ids {
        assert_eq!(
            g1.read(id, 0, 0).await.unwrap_err().status(),
            Status::NOT_FOUND
        );
        assert_eq!(
            g3.read(id, 0, 0).await.unwrap().data,
            Bytes::from_static(b"listed")
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_server_send_rests_and_foreground_reads_are_served_while_it_runs() {
    let mut c = Cluster::start(&[]).await;
    c.add_node_with(&NodeSpec::groups(&[1]), |cfg| {
        cfg.work_share.server_send = 0.01
    })
    .await;
    c.add_node(&NodeSpec::groups(&[2])).await;
    c.converge().await;
    let g1 = c.client(0, &[1], Checker::All).await;
    const KEYS: u64 = 400;
    for i in 0..KEYS {
        g1.write(&key(i), Bytes::from(format!("t-{i}")), at(100))
            .await
            .unwrap();
    }
    let req = SendRequest::whole_backend(1, vec![2], SendMode::Default);
    let mut stream = g1.server_send(c.addr(0), 0, &req).await.unwrap();
    let first = stream.next_result().await.unwrap().unwrap();
    assert_eq!(first.status, Status::OK);
    let job_id = stream.job().unwrap();

    // A foreground read on the node doing the send, while the job works a hundredth of the
    // time: it is answered, and the job is still going afterwards (so it was served
    // during the job, not after it).
    let read = g1.read(&key(KEYS - 1), 0, 0).await.unwrap();
    assert_eq!(read.data, Bytes::from(format!("t-{}", KEYS - 1)));
    let during = job(c.http(0), job_id).await;
    assert_eq!(during.state, JobState::Running, "{during:?}");
    assert!(during.done_keys < KEYS, "{during:?}");
    // The throttle shows: it rested, between keys, for some time.
    poll_until(Duration::from_secs(10), "the job to rest", || {
        c.node(0)
            .workers
            .get(job_id)
            .is_some_and(|j| j.rests >= 2 && j.rested_ms > 0)
    })
    .await;
    let rested = job(c.http(0), job_id).await;
    assert_eq!(rested.state, JobState::Running, "{rested:?}");

    // Cancel through the admin API: the stream ends CANCELLED, the job `cancelled`.
    let r = reqwest::Client::new()
        .post(format!("http://{}/admin/jobs/{job_id}/cancel", c.http(0)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let mut last = None;
    while let Some(r) = stream.next_result().await {
        if let Err(e) = r {
            last = Some(e);
        }
    }
    assert!(
        matches!(last, Some(ClientError::Status(s)) if s == Status::CANCELLED),
        "{last:?}"
    );
    let done = job(c.http(0), job_id).await;
    assert_eq!(done.state, JobState::Cancelled, "{done:?}");
    assert!(done.done_keys < KEYS, "{done:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_data_sort_reports_its_rests() {
    let mut c = Cluster::start(&[]).await;
    c.add_node_with(&NodeSpec::groups(&[1]), |cfg| {
        cfg.work_share.data_sort = 0.05;
        // Small bases, so the sort has several to report between.
        cfg.backends[0].records_in_blob = 20;
        cfg.backends[0].defrag.mode = ellipsis_core::stats::DefragMode::None;
    })
    .await;
    c.converge().await;
    let g1 = c.client(0, &[1], Checker::All).await;
    for i in 0..100 {
        g1.write(&key(i), Bytes::from(vec![b'd'; 4096]), at(100))
            .await
            .unwrap();
    }
    let r = reqwest::Client::new()
        .post(format!(
            "http://{}/admin/backends/1/defrag-start",
            c.http(0)
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let jobs = c.wait_jobs().await;
    let sort = jobs
        .iter()
        .find(|j| j.kind == JobKind::DataSort)
        .expect("a data-sort job");
    assert!(sort.rests >= 1 && sort.rested_ms > 0, "{sort:?}");
    for i in 0..100 {
        assert_eq!(g1.read(&key(i), 0, 0).await.unwrap().data.len(), 4096);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_write_back_runs_as_cache_sync_jobs_only_when_it_writes() {
    let mut c = Cluster::start(&[]).await;
    let cached = NodeSpec {
        groups: vec![1],
        cache_bytes: 1 << 20,
    };
    // Node 0 never writes back on its own (an hour's sync timeout): explicit and disable
    // flushes. Node 1 writes back after 300 ms: periodic passes.
    c.add_node_with(&cached, |cfg| {
        cfg.backends[0].cache.sync_timeout_ms = 3_600_000
    })
    .await;
    c.add_node_with(
        &NodeSpec {
            groups: vec![2],
            ..cached
        },
        |cfg| cfg.backends[0].cache.sync_timeout_ms = 300,
    )
    .await;
    c.converge().await;
    let attr = IoAttr {
        io_flags: io_flags::CACHE,
        ..IoAttr::default()
    };
    let g1 = c.client(0, &[1], Checker::All).await;
    let g2 = c.client(0, &[2], Checker::All).await;
    let cache_syncs = |n: usize| -> Vec<JobStatus> {
        c.node(n)
            .workers
            .list()
            .into_iter()
            .filter(|j| j.kind == JobKind::CacheSync)
            .collect()
    };

    // Passes with nothing dirty register no job.
    c.maintenance_passes(0, 2).await;
    assert!(cache_syncs(0).is_empty(), "{:?}", cache_syncs(0));

    // Explicit flush: one job with the objects and bytes written back.
    g1.write(&key(1), Bytes::from_static(b"dirty-one"), attr)
        .await
        .unwrap();
    g1.write(&key(2), Bytes::from_static(b"dirty-two!"), attr)
        .await
        .unwrap();
    let engine = c.node(0).backend(1).unwrap().engine().unwrap();
    assert!(
        engine.lookup(&eblob::Key(key(1).0)).is_err(),
        "only in the cache"
    );
    let http = reqwest::Client::new();
    let sync = |n: usize| {
        let url = format!("http://{}/admin/backends/1/cache-sync", c.http(n));
        let http = http.clone();
        async move {
            let r = http.post(url).bearer_auth(TOKEN).send().await.unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            r.json::<Option<JobStatus>>().await.unwrap()
        }
    };
    let j = sync(0).await.expect("a job: two objects were dirty");
    assert_eq!(
        (
            j.kind,
            j.state,
            j.done_keys,
            j.total_keys,
            j.done_bytes,
            j.errors
        ),
        (JobKind::CacheSync, JobState::Done, 2, Some(2), 19, 0),
        "{j:?}"
    );
    assert!(j.target.contains("explicit"), "{j:?}");
    assert_eq!(
        engine.read(&eblob::Key(key(2).0)).unwrap(),
        b"dirty-two!".to_vec()
    );
    assert!(sync(0).await.is_none(), "nothing dirty: no job");
    // Without the token: refused.
    let r = http
        .post(format!("http://{}/admin/backends/1/cache-sync", c.http(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // Disabling a backend writes its dirty objects back as a job too.
    g1.write(&key(3), Bytes::from_static(b"dirty-3"), attr)
        .await
        .unwrap();
    let r = http
        .post(format!("http://{}/admin/backends/1/disable", c.http(0)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let syncs = cache_syncs(0);
    let disable = syncs.last().expect("a disable job");
    assert!(disable.target.contains("disable"), "{syncs:?}");
    assert_eq!((disable.state, disable.done_keys), (JobState::Done, 1));

    // Periodic passes on node 1: the pass that wrote shows as a job, listed in /stats/workers.
    g2.write(&key(4), Bytes::from_static(b"periodic"), attr)
        .await
        .unwrap();
    let engine = c.node(1).backend(1).unwrap().engine().unwrap();
    poll_until(Duration::from_secs(15), "periodic write-back", || {
        engine.lookup(&eblob::Key(key(4).0)).is_ok()
    })
    .await;
    poll_until(
        Duration::from_secs(15),
        "the periodic job to finish",
        || cache_syncs(1).iter().any(|j| j.state.is_finished()),
    )
    .await;
    let listed: Vec<JobStatus> = workers(c.http(1))
        .await
        .into_iter()
        .filter(|j| j.kind == JobKind::CacheSync)
        .collect();
    assert_eq!(listed.len(), 1, "one pass wrote, one job: {listed:?}");
    assert!(listed[0].target.contains("periodic"), "{listed:?}");
    assert_eq!((listed[0].state, listed[0].done_keys), (JobState::Done, 1));
    c.maintenance_passes(1, 2).await;
    assert_eq!(
        cache_syncs(1).len(),
        1,
        "later passes wrote nothing: no jobs"
    );
    c.shutdown().await;
}
