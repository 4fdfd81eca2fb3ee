//! Node services end to end over TCP: the SLRU cache's write-back timer, CACHE_ONLY objects
//! and their lifetime; the quorum checker with three groups; every `/stats/{category}`
//! decoding into the core types with nothing left over.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ellipsis_core::client::{Checker, ClientError};
use ellipsis_core::protocol::{io_flags, IoAttr, Status};
use ellipsis_core::stats::{
    BackendStats, CacheEntryStats, CommandStats, DefragSummary, IoStats, JobStatus, NodeInfo,
    NodeStats, ProcStats, RoutesStats,
};
use ellipsis_core::Id;
use ellipsis_tests::{Cluster, NodeSpec};

fn key(i: u64) -> Id {
    Id::for_key(b"services", format!("key-{i}").as_bytes())
}

/// Poll `cond` every 20 ms until it holds (panics after 15 s with `what`).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_writes_back_on_its_timer_and_cache_only_objects_expire() {
    let mut c = Cluster::start(&[]).await;
    let spec = NodeSpec {
        groups: vec![1],
        cache_bytes: 1 << 20,
    };
    c.add_node_with(&spec, |cfg| cfg.backends[0].cache.sync_timeout_ms = 2_000)
        .await;
    c.converge().await;
    let client = c.client(0, &[1], Checker::All).await;
    let engine = c.node(0).backend(1).unwrap().engine().unwrap();
    let on_disk = |k: &Id| engine.lookup(&eblob::Key(k.0)).is_ok();

    // Write-back: acknowledged from the cache, on disk once the timer passes.
    let cached = IoAttr {
        io_flags: io_flags::CACHE,
        ..IoAttr::default()
    };
    client
        .write(&key(1), Bytes::from_static(b"write-back"), cached)
        .await
        .unwrap();
    assert!(!on_disk(&key(1)), "dirty in the cache for up to 2 s");
    assert_eq!(
        &client.read(&key(1), 0, 0).await.unwrap().data[..],
        b"write-back"
    );

    // CACHE_ONLY with a 1 s lifetime: served from the cache, never written, then gone.
    let cache_only = IoAttr {
        io_flags: io_flags::CACHE_ONLY,
        num: 1,
        ..IoAttr::default()
    };
    client
        .write(&key(2), Bytes::from_static(b"ephemeral"), cache_only)
        .await
        .unwrap();
    assert_eq!(
        &client.read(&key(2), 0, 0).await.unwrap().data[..],
        b"ephemeral"
    );

    until("the write-back timer to store key 1", || on_disk(&key(1))).await;
    assert_eq!(engine.read(&eblob::Key(key(1).0)).unwrap(), b"write-back");
    assert!(
        !on_disk(&key(2)),
        "a cache-only object never reaches the engine"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match client.read(&key(2), 0, 0).await {
            Err(e) if e.status() == Status::NOT_FOUND => break,
            Ok(r) => assert_eq!(&r.data[..], b"ephemeral"),
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "key 2 outlived its lifetime");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!on_disk(&key(2)));

    let http = reqwest::Client::new();
    let url = format!("http://{}/stats/cache", c.http(0));
    let caches: Vec<CacheEntryStats> = http.get(url).send().await.unwrap().json().await.unwrap();
    let s = &caches.iter().find(|e| e.backend == Some(1)).unwrap().stats;
    assert!(s.hits >= 2, "{s:?}");
    assert_eq!(s.dirty_objects, 0, "{s:?}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_needs_a_majority_of_three_groups() {
    let mut c = Cluster::start(&[
        NodeSpec::groups(&[1]),
        NodeSpec::groups(&[2]),
        NodeSpec::groups(&[3]),
    ])
    .await;
    c.stop_node(2).await;
    let quorum = c.client(0, &[1, 2, 3], Checker::Quorum).await;
    let w = quorum
        .write(
            &key(5),
            Bytes::from_static(b"two of three"),
            IoAttr::default(),
        )
        .await
        .expect("2 of 3 groups is a quorum");
    assert_eq!(w.ok_groups(), [1, 2]);
    let all = c.client(0, &[1, 2, 3], Checker::All).await;
    match all
        .write(&key(6), Bytes::from_static(b"x"), IoAttr::default())
        .await
    {
        Err(ClientError::NotEnoughGroups { ok, needed, .. }) => assert_eq!((ok, needed), (2, 3)),
        other => panic!("all needs every group: {other:?}"),
    }
    c.stop_node(1).await;
    match quorum
        .write(&key(7), Bytes::from_static(b"x"), IoAttr::default())
        .await
    {
        Err(ClientError::NotEnoughGroups { ok, needed, .. }) => assert_eq!((ok, needed), (1, 2)),
        other => panic!("1 of 3 is no quorum: {other:?}"),
    }
    c.shutdown().await;
}

/// GET `path` as JSON, decode it into `T`, and check that encoding `T` again gives back
/// exactly what the node sent: no field the core types do not know (or that defaulted).
async fn round_trip<T>(http: &reqwest::Client, base: &str, path: &str)
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let raw: serde_json::Value = http
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let typed: T = serde_json::from_value(raw.clone()).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(serde_json::to_value(&typed).unwrap(), raw, "{path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stats_category_decodes_into_the_core_types_with_nothing_left_over() {
    let spec = NodeSpec {
        groups: vec![1],
        cache_bytes: 1 << 20,
    };
    let c = Cluster::start(&[spec, NodeSpec::groups(&[2])]).await;
    let client = c.client(0, &[1, 2], Checker::All).await;
    for i in 0..20 {
        client
            .write(&key(i), Bytes::from(vec![i as u8; 100]), IoAttr::default())
            .await
            .unwrap();
        client.read(&key(i), 0, 0).await.unwrap();
    }
    let http = reqwest::Client::new();
    for i in 0..2 {
        let base = format!("http://{}", c.http(i));
        round_trip::<NodeStats>(&http, &base, "/stats").await;
        round_trip::<NodeInfo>(&http, &base, "/stats/node").await;
        round_trip::<CommandStats>(&http, &base, "/stats/commands").await;
        round_trip::<IoStats>(&http, &base, "/stats/io").await;
        round_trip::<Vec<CacheEntryStats>>(&http, &base, "/stats/cache").await;
        round_trip::<Vec<BackendStats>>(&http, &base, "/stats/backends").await;
        round_trip::<ProcStats>(&http, &base, "/stats/procfs").await;
        round_trip::<Vec<JobStatus>>(&http, &base, "/stats/workers").await;
        round_trip::<RoutesStats>(&http, &base, "/stats/routes").await;
        round_trip::<DefragSummary>(&http, &base, "/stats/defrag").await;
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_counts_as_not_found_not_as_a_failure() {
    let c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let client = c.client(0, &[1], Checker::All).await;
    for i in 0..3 {
        let e = client.read(&key(900 + i), 0, 0).await.unwrap_err();
        assert_eq!(e.status(), Status::NOT_FOUND);
    }
    let s = ellipsis_node::stats::collect(c.node(0));
    let read = &s.commands.commands["READ"];
    assert_eq!((read.not_found, read.failures), (3, 0), "{read:?}");
    let metrics = c.metrics(0).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ellipsis_requests_not_found_total{")
                && l.contains("READ")
                && l.ends_with(" 3")),
        "{metrics}"
    );
    c.shutdown().await;
}
