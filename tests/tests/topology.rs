//! What a node is made of and how it leaves: several listen addresses, several backends in
//! different groups with ring ids that survive a restart, route pushes on enable/disable,
//! key-range and bulk reads across nodes, unknown commands, and a graceful stop that finishes
//! the request in flight and writes the cache back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ellipsis_core::client::{Checker, Conn};
use ellipsis_core::protocol::cmd::backend_control::{BackendAction, BackendControl};
use ellipsis_core::protocol::cmd::key_range::KeyRange;
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{io_flags, Command, Header, IoAttr, Status};
use ellipsis_core::Id;
use ellipsis_tests::{Cluster, NodeSpec};

const TIMEOUT: Duration = Duration::from_secs(5);

fn key(i: u64) -> Id {
    Id::for_key(b"topology", format!("key-{i}").as_bytes())
}

/// Poll `cond` every 10 ms until it holds (panics after 10 s with `what`).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_every_listen_address() {
    let mut c = Cluster::start(&[]).await;
    let i = c
        .add_node_with(&NodeSpec::groups(&[1]), |cfg| {
            cfg.listen = vec![
                "127.0.0.1:0".parse().unwrap(),
                "127.0.0.1:0".parse().unwrap(),
            ];
        })
        .await;
    let addrs = c.nodes[i].running.as_ref().unwrap().listen_addrs.clone();
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0], addrs[1]);
    assert_eq!(
        addrs[0],
        c.addr(i),
        "the first address is the announced one"
    );
    for a in addrs {
        let conn = Conn::connect(a, 1 << 20, TIMEOUT).await.unwrap();
        let h = Header::request(Command::Ping, Id::ZERO, 0, 0);
        let r = conn.call(h, Bytes::new(), TIMEOUT).await.unwrap();
        assert_eq!(r.header.status, Status::OK, "ping on {a}");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_backends_per_node_keep_their_groups_and_ring_ids_across_restart() {
    let mut c = Cluster::start(&[NodeSpec::groups(&[1, 2]), NodeSpec::groups(&[1, 2])]).await;
    let client = c.client(1, &[1, 2], Checker::All).await;
    let routes = client.routes();
    for g in [1, 2] {
        let mut owners: Vec<_> = routes.groups[&g].iter().map(|e| e.addr).collect();
        owners.sort_unstable_by_key(|a| (a.node, a.backend));
        owners.dedup();
        assert_eq!(
            owners.len(),
            2,
            "group {g}: one backend on each node: {owners:?}"
        );
        // Backend 1 of each node is in group 1, backend 2 in group 2.
        assert!(owners.iter().all(|a| a.backend == g), "{owners:?}");
    }
    let ids_before: Vec<Vec<Id>> = [1, 2]
        .iter()
        .map(|&b| c.node(0).backend(b).unwrap().ring_ids())
        .collect();
    for i in 0..40 {
        client
            .write(&key(i), Bytes::from(format!("v{i}")), IoAttr::default())
            .await
            .unwrap();
    }
    // Every key sits in the backend of each group on that group's owner, and nowhere else
    // (backend b is in group b on both nodes).
    for i in 0..40 {
        for n in 0..2 {
            for b in [1u32, 2] {
                let owner = routes.owner(b, &key(i)).unwrap();
                let held = c
                    .node(n)
                    .backend(b)
                    .unwrap()
                    .engine()
                    .unwrap()
                    .lookup(&eblob::Key(key(i).0))
                    .is_ok();
                let owns = owner.node == c.addr(n) && owner.backend == b;
                assert_eq!(held, owns, "key {i}, node {n}, backend {b}");
            }
        }
    }
    c.stop_node(0).await;
    c.restart_node(0).await;
    c.converge().await;
    let ids_after: Vec<Vec<Id>> = [1, 2]
        .iter()
        .map(|&b| c.node(0).backend(b).unwrap().ring_ids())
        .collect();
    assert_eq!(
        ids_before, ids_after,
        "ring ids are read back from the backend dirs"
    );
    assert_eq!(ids_after[0].len(), 8);
    assert_ne!(ids_after[0], ids_after[1], "each backend has its own ids");
    for g in [1, 2] {
        let only = c.client(1, &[g], Checker::All).await;
        for i in 0..40 {
            let r = only.read(&key(i), 0, 0).await.unwrap();
            assert_eq!(&r.data[..], format!("v{i}").as_bytes(), "group {g}");
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_backend_withdraws_its_routes_from_peers_at_once() {
    // check_timeout_s is an hour in the harness: only the push can tell the peer.
    let c = Cluster::start(&[NodeSpec::groups(&[1]), NodeSpec::groups(&[1])]).await;
    let admin = c.client(0, &[1], Checker::All).await;
    let gone = c.addr(1);
    let peer_sees = |n: &std::sync::Arc<ellipsis_node::node::Node>| {
        n.routes.read().groups[&1]
            .iter()
            .filter(|e| e.addr.node == gone)
            .count()
    };
    assert_eq!(peer_sees(c.node(0)), 8);
    let control = |action| BackendControl { backend: 1, action }.encode();
    let h = Header::request(Command::BackendControl, Id::ZERO, 0, 0);
    admin
        .call_node(gone, h, control(BackendAction::Disable))
        .await
        .unwrap();
    until("node 0 to drop node 1's ids", || peer_sees(c.node(0)) == 0).await;
    admin
        .call_node(gone, h, control(BackendAction::Enable))
        .await
        .unwrap();
    until("node 0 to learn node 1's ids again", || {
        peer_sees(c.node(0)) == 8
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_and_key_range_reads_and_range_removal_span_every_node_of_a_group() {
    let c = Cluster::start(&[NodeSpec::groups(&[1]), NodeSpec::groups(&[1])]).await;
    let client = c.client(0, &[1], Checker::All).await;
    let keys: Vec<Id> = (0..60).map(key).collect();
    for (i, k) in keys.iter().enumerate() {
        client
            .write(k, Bytes::from(format!("v{i}")), IoAttr::default())
            .await
            .unwrap();
    }
    let owners: std::collections::BTreeSet<_> = keys
        .iter()
        .map(|k| client.routes().owner(1, k).unwrap().node)
        .collect();
    assert_eq!(owners.len(), 2, "the keys are spread over both nodes");

    // BULK_READ: present keys with their data, a missing one NOT_FOUND.
    let mut asked = keys[..30].to_vec();
    asked.push(key(1000));
    let got = client.bulk_read(1, &asked).await.unwrap();
    assert_eq!(got.len(), 31);
    for (id, status, payload) in &got {
        match keys.iter().position(|k| k == id) {
            Some(i) => {
                assert_eq!(*status, Status::OK);
                assert_eq!(
                    &payload.as_ref().unwrap().data[..],
                    format!("v{i}").as_bytes()
                );
            }
            None => {
                assert_eq!((*id, *status), (key(1000), Status::NOT_FOUND));
                assert!(payload.is_none());
            }
        }
    }

    // READ_RANGE over the lower half of the ring, from both nodes, sorted by key.
    let mut mid = [0u8; 64];
    mid[0] = 0x80;
    let lower = KeyRange {
        start: Id::ZERO,
        end: Id(mid),
        ..KeyRange::default()
    };
    let in_lower: Vec<Id> = {
        let mut v: Vec<Id> = keys.iter().copied().filter(|k| k.0[0] < 0x80).collect();
        v.sort();
        v
    };
    assert!(!in_lower.is_empty() && in_lower.len() < keys.len());
    let read = client.read_range(1, lower.clone()).await.unwrap();
    let read_ids: Vec<Id> = read.iter().map(|(id, _)| *id).collect();
    assert_eq!(read_ids, in_lower);
    for (id, p) in &read {
        let i = keys.iter().position(|k| k == id).unwrap();
        assert_eq!(&p.data[..], format!("v{i}").as_bytes());
    }

    // DEL_RANGE removes exactly that half.
    let removed = client.remove_range(1, lower).await.unwrap();
    let mut removed_ids: Vec<Id> = removed
        .iter()
        .filter(|(_, s)| s.is_ok())
        .map(|(id, _)| *id)
        .collect();
    removed_ids.sort();
    assert_eq!(removed_ids, in_lower);
    for k in &keys {
        let r = client.read(k, 0, 0).await;
        assert_eq!(r.is_ok(), k.0[0] >= 0x80, "{k:?}");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_command_gets_an_error_status_and_the_connection_keeps_serving() {
    let c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let conn = Conn::connect(c.addr(0), 1 << 20, TIMEOUT).await.unwrap();
    let h = Header::request(Command::from_code(0xdead), Id::ZERO, 1, 0);
    let err = conn
        .call(h, Bytes::from_static(b"whatever"), TIMEOUT)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Status::NOT_SUPPORTED, "{err}");
    let h = Header::request(Command::Ping, Id::ZERO, 0, 0);
    conn.call(h, Bytes::new(), TIMEOUT).await.unwrap();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_finishes_the_request_in_flight_and_writes_the_cache_back() {
    let spec = NodeSpec {
        groups: vec![1],
        cache_bytes: 1 << 20,
    };
    let mut c = Cluster::start(&[spec]).await;
    let client = c.client(0, &[1], Checker::All).await;
    // A write-back object: in the cache, not yet on disk (sync_timeout is 30 s).
    let cached = IoAttr {
        io_flags: io_flags::CACHE,
        ..IoAttr::default()
    };
    client
        .write(&key(1), Bytes::from_static(b"only in the cache"), cached)
        .await
        .unwrap();
    let engine = c.node(0).backend(1).unwrap().engine().unwrap();
    assert!(
        engine.lookup(&eblob::Key(key(1).0)).is_err(),
        "not on disk yet"
    );
    drop(engine);
    // Every request now waits 300 ms on the backend: one is in flight when the stop begins.
    let h = Header::request(Command::BackendControl, Id::ZERO, 0, 0);
    let delay = BackendControl {
        backend: 1,
        action: BackendAction::SetDelay { delay_ms: 300 },
    };
    client
        .call_node(c.addr(0), h, delay.encode())
        .await
        .unwrap();
    let node = c.node(0).clone();
    let slow = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .write(&key(2), Bytes::from_static(b"in flight"), IoAttr::default())
                .await
        })
    };
    until("the write to be in flight", || {
        ellipsis_node::stats::collect(&node).io.nonblocking_queue >= 1
    })
    .await;
    drop(node);
    let dir = c.dirs(0)[0].clone();
    c.stop_node(0).await;
    let w = slow
        .await
        .unwrap()
        .expect("the in-flight write was answered");
    assert_eq!(w.ok_groups(), [1]);
    // Both are on disk: open the backend's directory with the engine itself.
    let db = eblob::Eblob::open(eblob::Config::new(dir)).expect("the stop released the lock");
    assert_eq!(
        db.read(&eblob::Key(key(1).0)).unwrap(),
        b"only in the cache"
    );
    assert_eq!(db.read(&eblob::Key(key(2).0)).unwrap(), b"in flight");
}
