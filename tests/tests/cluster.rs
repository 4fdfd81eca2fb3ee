//! Real clusters on 127.0.0.1: 4 nodes in 2 groups unless a test says otherwise.

// Helpers outside #[test] fns panic on failure: that is the test report.
#![allow(clippy::unwrap_used)]

mod badinput;
mod client;
mod corruption;
mod ops;
mod partition;
mod services;
mod topology;
mod traces;

use std::time::Duration;

use bytes::Bytes;
use ellipsis_core::client::{Checker, ClientError, Conn};
use ellipsis_core::protocol::cmd::backend_control::{BackendAction, BackendControl};
use ellipsis_core::protocol::cmd::io::IoPayload;
use ellipsis_core::protocol::cmd::notify::{NotifyEvent, NotifyKind, NotifyRequest};
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{flags, io_flags, Command, Header, IoAttr, Status, HEADER_SIZE};
use ellipsis_core::stats::NodeStats;
use ellipsis_core::Id;
use ellipsis_tests::{Cluster, NodeSpec, TOKEN};

const TIMEOUT: Duration = Duration::from_secs(5);

async fn four_nodes() -> Cluster {
    Cluster::start(&[
        NodeSpec::groups(&[1]),
        NodeSpec::groups(&[1]),
        NodeSpec::groups(&[2]),
        NodeSpec::groups(&[2]),
    ])
    .await
}

fn key(i: u64) -> Id {
    Id::for_key(b"test", format!("key-{i}").as_bytes())
}

fn value(i: u64, len: usize) -> Bytes {
    (0..len)
        .map(|j| (i as usize * 31 + j) as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_read_remove_through_every_node() {
    let c = four_nodes().await;
    for via in 0..4 {
        let client = c.client(via, &[], Checker::All).await;
        assert_eq!(client.groups(), [1, 2]);
        for i in 0..20u64 {
            let k = key(via as u64 * 100 + i);
            let w = client
                .write(&k, value(i, 1000), IoAttr::default())
                .await
                .unwrap();
            assert_eq!(w.ok_groups(), [1, 2]);
            let r = client.read(&k, 0, 0).await.unwrap();
            assert_eq!(r.data, value(i, 1000));
            let part = client.read(&k, 10, 5).await.unwrap();
            assert_eq!(&part.data[..], &value(i, 1000)[10..15]);
            client.remove(&k).await.unwrap();
            let gone = client.read(&k, 0, 0).await.unwrap_err();
            assert_eq!(gone.status(), Status::NOT_FOUND, "{gone}");
        }
    }
    // Every node holds some keys: the ring spreads them.
    let client = c.client(0, &[], Checker::All).await;
    let mut owners = std::collections::BTreeSet::new();
    for i in 0..64 {
        for g in [1, 2] {
            owners.insert(client.routes().owner(g, &key(i)).unwrap().node);
        }
    }
    assert_eq!(owners.len(), 4);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_forwards_keys_it_does_not_own() {
    let c = four_nodes().await;
    let client = c.client(0, &[1], Checker::All).await;
    // A key owned in group 1 by node 1, sent to node 0 directly.
    let k = (0..)
        .map(key)
        .find(|k| client.routes().owner(1, k).unwrap().node == c.addr(1))
        .unwrap();
    let conn = Conn::connect(c.addr(0), 1 << 30, TIMEOUT).await.unwrap();
    let attr = IoAttr {
        size: 3,
        ..IoAttr::default()
    };
    let payload = IoPayload {
        attr,
        data: Bytes::from_static(b"abc"),
    }
    .encode();
    let h = Header::request(Command::Write, k, 1, 0);
    conn.call(h, payload, TIMEOUT).await.unwrap();
    let h = Header::request(Command::Read, k, 1, 0);
    let f = conn.call(h, Bytes::new(), TIMEOUT).await.unwrap();
    assert_eq!(&IoPayload::decode(&f.payload).unwrap().data[..], b"abc");
    let stats = ellipsis_node::stats::collect(c.node(0));
    assert_eq!(stats.commands.commands["WRITE"].forwarded, 1);
    assert_eq!(stats.commands.commands["READ"].forwarded, 1);
    // DIRECT requests are not forwarded: node 0's backend 1 does not hold the key.
    let mut h = Header::request(Command::Read, k, 1, 0);
    h.flags |= flags::DIRECT;
    h.backend = 1;
    let err = conn.call(h, Bytes::new(), TIMEOUT).await.unwrap_err();
    assert_eq!(err.status(), Status::NOT_FOUND);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_fall_back_to_another_group_when_a_node_stops() {
    let mut c = four_nodes().await;
    let client = c.client(2, &[1, 2], Checker::All).await;
    let keys: Vec<Id> = (0..30).map(key).collect();
    for (i, k) in keys.iter().enumerate() {
        client
            .write(k, value(i as u64, 500), IoAttr::default())
            .await
            .unwrap();
    }
    c.stop_node(0).await;
    for (i, k) in keys.iter().enumerate() {
        let r = client.read(k, 0, 0).await.unwrap();
        assert_eq!(r.data, value(i as u64, 500));
        if client.routes().owner(1, k).unwrap().node == c.addr(0) {
            assert_eq!(r.group, 2, "group 1's owner is down");
            assert_eq!(r.failed.len(), 1);
        }
    }
    // Writes still reach at least one group.
    let any = c.client(2, &[1, 2], Checker::AtLeastOne).await;
    for k in &keys {
        any.write(k, Bytes::from_static(b"new"), IoAttr::default())
            .await
            .unwrap();
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkers_judge_writes_by_group_results() {
    let mut c = four_nodes().await;
    c.stop_node(2).await;
    c.stop_node(3).await;
    let k = key(7);
    for (checker, ok) in [
        (Checker::AtLeastOne, true),
        (Checker::Quorum, false),
        (Checker::All, false),
    ] {
        let client = c.client(0, &[1, 2], checker).await;
        let r = client.write(&k, value(7, 10), IoAttr::default()).await;
        match (ok, r) {
            (true, Ok(w)) => assert_eq!(w.ok_groups(), [1]),
            (
                false,
                Err(ClientError::NotEnoughGroups {
                    ok,
                    groups,
                    results,
                    ..
                }),
            ) => {
                assert_eq!((ok, groups), (1, 2));
                assert!(results[0].status.is_ok() && !results[1].status.is_ok());
            }
            (want, got) => panic!("{checker:?}: want ok={want}, got {got:?}"),
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_later_is_routed_to() {
    let mut c = four_nodes().await;
    let n = c.add_node(&NodeSpec::groups(&[1])).await;
    c.converge().await;
    let client = c.client(0, &[1], Checker::All).await;
    let routes = client.routes();
    assert!(routes.nodes().contains(&c.addr(n)));
    let k = (0..)
        .map(key)
        .find(|k| routes.owner(1, k).unwrap().node == c.addr(n))
        .unwrap();
    client
        .write(
            &k,
            Bytes::from_static(b"on the new node"),
            IoAttr::default(),
        )
        .await
        .unwrap();
    let (g, info) = client.lookup(&k).await.unwrap();
    assert_eq!(g, 1);
    assert!(
        info.path.starts_with(c.dirs(n)[0].to_str().unwrap()),
        "{}",
        info.path
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_on_timestamp_never_overwrites_newer() {
    let c = four_nodes().await;
    let client = c.client(0, &[], Checker::All).await;
    let k = key(1);
    let at = |sec| IoAttr {
        ts_sec: sec,
        io_flags: io_flags::CAS_TIMESTAMP,
        ..IoAttr::default()
    };
    client
        .write(&k, Bytes::from_static(b"v100"), at(100))
        .await
        .unwrap();
    let older = client
        .write(&k, Bytes::from_static(b"v50"), at(50))
        .await
        .unwrap_err();
    assert_eq!(older.status(), Status::NEWER_EXISTS, "{older}");
    assert_eq!(&client.read(&k, 0, 0).await.unwrap().data[..], b"v100");
    client
        .write(&k, Bytes::from_static(b"v200"), at(200))
        .await
        .unwrap();
    let r = client.read(&k, 0, 0).await.unwrap();
    assert_eq!((&r.data[..], r.attr.ts_sec), (&b"v200"[..], 200));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_write_commit_of_a_64_mib_object() {
    use sha2::Digest;
    let c = four_nodes().await;
    let client = c.client(1, &[], Checker::All).await;
    let k = key(64);
    const TOTAL: u64 = 64 << 20;
    const PART: u64 = 16 << 20;
    let part = |n: u64| -> Bytes {
        (0..PART)
            .map(|i| ((i * 7 + n * 13) % 251) as u8)
            .collect::<Vec<u8>>()
            .into()
    };
    let mut whole = sha2::Sha512::new();
    for n in 0..TOTAL / PART {
        let data = part(n);
        whole.update(&data);
        let mode = match n {
            0 => io_flags::PREPARE,
            n if n == TOTAL / PART - 1 => io_flags::COMMIT,
            _ => io_flags::PLAIN_WRITE,
        };
        let attr = IoAttr {
            offset: n * PART,
            total_size: TOTAL,
            io_flags: mode,
            ts_sec: 1000,
            ..IoAttr::default()
        };
        client.write(&k, data, attr).await.unwrap();
        if n == 0 {
            let err = client.read(&k, 0, 0).await.unwrap_err();
            assert_eq!(err.status(), Status::UNCOMMITTED, "{err}");
        }
    }
    // Read back in parts (a whole 64 MiB reply would exceed the 64 MiB frame limit).
    let mut got = sha2::Sha512::new();
    for n in 0..TOTAL / PART {
        let r = client.read(&k, n * PART, PART).await.unwrap();
        assert_eq!(r.attr.total_size, TOTAL);
        got.update(&r.data);
    }
    assert_eq!(got.finalize(), whole.finalize());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_groups_owner_caches_its_replica_and_writes_it_back() {
    let cached = |group| NodeSpec {
        groups: vec![group],
        cache_bytes: 1 << 20,
    };
    let c = Cluster::start(&[cached(1), cached(1), cached(2), cached(2)]).await;
    let client = c.client(0, &[1, 2], Checker::All).await;
    let k = key(15);
    let attr = IoAttr {
        io_flags: io_flags::CACHE,
        ..IoAttr::default()
    };
    client
        .write(&k, Bytes::from_static(b"replica"), attr)
        .await
        .unwrap();
    for group in [1, 2] {
        let owner = client.routes().owner(group, &k).unwrap();
        let i = (0..4).find(|&i| c.addr(i) == owner.node).unwrap();
        let b = c.node(i).backend(owner.backend).unwrap();
        let engine = b.engine().unwrap();
        assert!(
            matches!(engine.read(&eblob::Key(k.0)), Err(eblob::Error::NotFound)),
            "group {group}: write-back, not yet on disk"
        );
        // Read through the other node of the group: forwarded to the owner, served from
        // its cache.
        let other = (0..4)
            .find(|&j| j != i && c.node(j).backends.values().any(|b| b.group() == group))
            .unwrap();
        let reader = c.client(other, &[group], Checker::All).await;
        assert_eq!(&reader.read(&k, 0, 0).await.unwrap().data[..], b"replica");
        let stats = ellipsis_node::stats::collect(c.node(i));
        assert_eq!(
            stats.commands.commands["READ"].cache_hits, 1,
            "group {group}"
        );
        assert_eq!(b.flush_cache(true).unwrap(), 1);
        assert_eq!(engine.read(&eblob::Key(k.0)).unwrap(), b"replica");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_serves_reads_and_writes_back() {
    let c = Cluster::start(&[NodeSpec {
        groups: vec![1],
        cache_bytes: 1 << 20,
    }])
    .await;
    let client = c.client(0, &[1], Checker::All).await;
    let k = key(5);
    let attr = IoAttr {
        io_flags: io_flags::CACHE,
        ..IoAttr::default()
    };
    client
        .write(&k, Bytes::from_static(b"cached"), attr)
        .await
        .unwrap();
    let b = c.node(0).backend(1).unwrap();
    let engine = b.engine().unwrap();
    assert!(
        matches!(engine.read(&eblob::Key(k.0)), Err(eblob::Error::NotFound)),
        "write-back, not yet on disk"
    );
    assert_eq!(b.cache_stats().unwrap().dirty_objects, 1);
    let hit = client.read(&k, 0, 0).await.unwrap();
    assert_eq!(&hit.data[..], b"cached");
    let stats = ellipsis_node::stats::collect(c.node(0));
    assert_eq!(stats.commands.commands["READ"].cache_hits, 1);
    assert_eq!(b.flush_cache(true).unwrap(), 1);
    assert_eq!(engine.read(&eblob::Key(k.0)).unwrap(), b"cached");
    assert_eq!(b.cache_stats().unwrap().dirty_objects, 0);
    // The hit named the version by the checksum its written-back record carries.
    let on_disk = engine.lookup(&eblob::Key(k.0)).unwrap().checksum;
    assert_ne!(on_disk, 0);
    assert_eq!(hit.attr.checksum, on_disk);

    // CAS on checksum judges the cached copy, even one that never reaches the disk.
    let only = key(6);
    let cache_only = IoAttr {
        io_flags: io_flags::CACHE_ONLY,
        ..IoAttr::default()
    };
    client
        .write(&only, Bytes::from_static(b"v1"), cache_only)
        .await
        .unwrap();
    let seen = client.read(&only, 0, 0).await.unwrap();
    assert_eq!(seen.attr.checksum, eblob::record::data_checksum(b"v1"));
    let cas = |checksum| IoAttr {
        io_flags: io_flags::CAS_CHECKSUM | io_flags::CACHE_ONLY,
        checksum,
        ..IoAttr::default()
    };
    let stale = client
        .write(
            &only,
            Bytes::from_static(b"v2"),
            cas(seen.attr.checksum ^ 1),
        )
        .await
        .unwrap_err();
    assert_eq!(stale.status(), Status::NEWER_EXISTS, "{stale}");
    client
        .write(&only, Bytes::from_static(b"v2"), cas(seen.attr.checksum))
        .await
        .unwrap();
    assert_eq!(&client.read(&only, 0, 0).await.unwrap().data[..], b"v2");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_delivers_writes_and_removes_of_a_watched_key() {
    let c = four_nodes().await;
    let client = c.client(0, &[1], Checker::All).await;
    let k = key(9);
    let owner = client.routes().owner(1, &k).unwrap();
    let conn = Conn::connect(owner.node, 1 << 30, TIMEOUT).await.unwrap();
    let h = Header::request(Command::Notify, k, 1, 0);
    let mut events = conn
        .request(h, NotifyRequest { subscribe: true }.encode(), TIMEOUT)
        .await
        .unwrap();
    let ack = events.next().await.unwrap().unwrap();
    assert!(ack.header.has(flags::MORE) && ack.header.status.is_ok());
    client
        .write(&k, Bytes::from_static(b"hello"), IoAttr::default())
        .await
        .unwrap();
    let e = NotifyEvent::decode(&events.next().await.unwrap().unwrap().payload).unwrap();
    assert_eq!((e.kind, e.attr.size), (NotifyKind::Write, 5));
    client.remove(&k).await.unwrap();
    let e = NotifyEvent::decode(&events.next().await.unwrap().unwrap().payload).unwrap();
    assert_eq!(e.kind, NotifyKind::Remove);
    c.shutdown().await;
}

/// Subscribe to `k` in group 1 through `conn` and wait for the acknowledgement.
async fn watch(conn: &Conn, k: Id) -> ellipsis_core::client::Replies {
    let mut events = conn
        .request(
            Header::request(Command::Notify, k, 1, 0),
            NotifyRequest { subscribe: true }.encode(),
            TIMEOUT,
        )
        .await
        .unwrap();
    let ack = events.next().await.unwrap().unwrap();
    assert!(
        ack.header.has(flags::MORE) && ack.header.status.is_ok(),
        "{ack:?}"
    );
    events
}

/// Unsubscribe from `k` in group 1 through `conn`, and see `events` end with an OK final frame.
async fn unwatch(conn: &Conn, k: Id, events: &mut ellipsis_core::client::Replies) {
    conn.call(
        Header::request(Command::Notify, k, 1, 0),
        NotifyRequest { subscribe: false }.encode(),
        TIMEOUT,
    )
    .await
    .unwrap();
    let last = events.next().await.unwrap().unwrap();
    assert!(!last.header.has(flags::MORE) && last.header.status.is_ok());
}

/// Write `size_bytes` bytes to `k` and see exactly that write's event next on each stream.
async fn write_seen_by(
    client: &ellipsis_core::client::Client,
    k: &Id,
    size_bytes: u8,
    streams: [&mut ellipsis_core::client::Replies; 2],
) {
    client
        .write(
            k,
            Bytes::from(vec![size_bytes; size_bytes.into()]),
            IoAttr::default(),
        )
        .await
        .unwrap();
    for events in streams {
        let frame = events.next().await.unwrap().unwrap();
        assert!(frame.header.has(flags::MORE), "{frame:?}");
        let e = NotifyEvent::decode(&frame.payload).unwrap();
        assert_eq!(
            (e.kind, e.attr.size),
            (NotifyKind::Write, size_bytes.into())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_subscriptions_follow_their_key_when_the_ring_changes() {
    let c = Cluster::start(&[
        NodeSpec::groups(&[1]),
        NodeSpec::groups(&[1]),
        NodeSpec::groups(&[1]),
    ])
    .await;
    // Ring ids just below the key decide who owns it ("largest id <= key").
    let k = (0..)
        .map(key)
        .find(|k| k.0[0] < 0xf0 && k.0[63] >= 3)
        .unwrap();
    let below = |n: u8| {
        let mut id = k;
        id.0[63] -= n;
        id
    };
    c.backend_control(0, BackendAction::SetIds(vec![below(3)]))
        .await;
    c.backend_control(1, BackendAction::SetIds(vec![Id([0xfe; 64])]))
        .await;
    c.backend_control(2, BackendAction::SetIds(vec![Id([0xff; 64])]))
        .await;
    c.converge().await;
    let (n0, n1, n2) = (c.node(0), c.node(1), c.node(2));
    // One client watches at the owner (a watcher on node 0), one through node 2 (a relay).
    let at_owner = Conn::connect(c.addr(0), 1 << 30, TIMEOUT).await.unwrap();
    let mut direct = watch(&at_owner, k).await;
    let through = Conn::connect(c.addr(2), 1 << 30, TIMEOUT).await.unwrap();
    let mut relayed = watch(&through, k).await;
    assert_eq!((n0.notify.len(), n2.notify.relays_len()), (2, 1));
    let client = c.client(1, &[1], Checker::All).await;
    write_seen_by(&client, &k, 1, [&mut direct, &mut relayed]).await;

    // The key moves to node 1: node 0's watcher becomes a relay to it, node 2's relay
    // subscribes there and lets go of node 0.
    c.backend_control(1, BackendAction::SetIds(vec![below(2)]))
        .await;
    c.converge().await;
    ellipsis_tests::poll_until(TIMEOUT, "both subscriptions held by node 1", || {
        n1.notify.len() == 2 && n0.notify.is_empty()
    })
    .await;
    assert_eq!((n0.notify.relays_len(), n2.notify.relays_len()), (1, 1));
    write_seen_by(&client, &k, 2, [&mut direct, &mut relayed]).await;

    // It comes back to node 0: the relay there becomes a watcher again, node 2 follows.
    c.backend_control(0, BackendAction::SetIds(vec![below(1)]))
        .await;
    c.converge().await;
    ellipsis_tests::poll_until(TIMEOUT, "both subscriptions back on node 0", || {
        n0.notify.len() == 2 && n0.notify.relays_len() == 0 && n1.notify.is_empty()
    })
    .await;
    write_seen_by(&client, &k, 3, [&mut direct, &mut relayed]).await;

    // Unsubscribing through node 2 still ends that stream and frees node 0's side.
    unwatch(&through, k, &mut relayed).await;
    ellipsis_tests::poll_until(TIMEOUT, "node 0 frees the relayed subscription", || {
        n0.notify.len() == 1 && n2.notify.relays_len() == 0
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_through_a_node_that_does_not_own_the_key_is_relayed_from_the_owner() {
    let c = four_nodes().await;
    let client = c.client(0, &[1], Checker::All).await;
    // Owned in group 1 by node 1; watched through node 2 (group 2), written through node 0.
    let k = (0..)
        .map(key)
        .find(|k| client.routes().owner(1, k).unwrap().node == c.addr(1))
        .unwrap();
    let (owner, relay) = (c.node(1), c.node(2));
    let watcher = Conn::connect(c.addr(2), 1 << 30, TIMEOUT).await.unwrap();
    let mut events = watch(&watcher, k).await;
    // The subscription is held by the owner, and node 2 relays it.
    assert_eq!((owner.notify.len(), relay.notify.len()), (1, 0));
    assert_eq!(relay.notify.relays_len(), 1);
    let io: ellipsis_core::stats::IoStats = reqwest::get(format!("http://{}/stats/io", c.http(2)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((io.notify_relays, io.notify_watchers), (1, 0));
    let writer = Conn::connect(c.addr(0), 1 << 30, TIMEOUT).await.unwrap();
    let payload = IoPayload {
        attr: IoAttr {
            size: 5,
            ..IoAttr::default()
        },
        data: Bytes::from_static(b"hello"),
    }
    .encode();
    writer
        .call(Header::request(Command::Write, k, 1, 0), payload, TIMEOUT)
        .await
        .unwrap();
    let e = events.next().await.unwrap().unwrap();
    assert!(e.header.has(flags::MORE) && !e.header.has(flags::FORWARDED));
    let e = NotifyEvent::decode(&e.payload).unwrap();
    assert_eq!((e.kind, e.attr.size), (NotifyKind::Write, 5));
    client.remove(&k).await.unwrap();
    let e = NotifyEvent::decode(&events.next().await.unwrap().unwrap().payload).unwrap();
    assert_eq!(e.kind, NotifyKind::Remove);
    // The watcher goes away: the relay stops and the owner frees the subscription.
    drop(events);
    drop(watcher);
    ellipsis_tests::poll_until(
        TIMEOUT,
        "the relay and the owner's subscription freed",
        || relay.notify.relays_len() == 0 && owner.notify.is_empty(),
    )
    .await;
    let io: ellipsis_core::stats::IoStats = reqwest::get(format!("http://{}/stats/io", c.http(1)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(io.notify_watchers, 0);
    // Unsubscribing through the relaying node ends the stream and frees the owner's side too.
    let watcher = Conn::connect(c.addr(2), 1 << 30, TIMEOUT).await.unwrap();
    let mut events = watch(&watcher, k).await;
    assert_eq!(owner.notify.len(), 1);
    unwatch(&watcher, k, &mut events).await;
    assert!(events.next().await.is_none());
    ellipsis_tests::poll_until(TIMEOUT, "the owner's subscription freed", || {
        relay.notify.relays_len() == 0 && owner.notify.is_empty()
    })
    .await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_watch_ends_with_unreachable_when_the_owner_goes_away() {
    let mut c = four_nodes().await;
    let client = c.client(0, &[1], Checker::All).await;
    let k = (0..)
        .map(key)
        .find(|k| client.routes().owner(1, k).unwrap().node == c.addr(1))
        .unwrap();
    let watcher = Conn::connect(c.addr(2), 1 << 30, TIMEOUT).await.unwrap();
    let mut events = watch(&watcher, k).await;
    assert_eq!(c.node(2).notify.relays_len(), 1);
    c.stop_node(1).await;
    let last = events.next().await.unwrap().unwrap();
    assert!(!last.header.has(flags::MORE), "{last:?}");
    assert_eq!(last.header.status, Status::UNREACHABLE);
    assert!(events.next().await.is_none());
    assert_eq!(c.node(2).notify.relays_len(), 0);
    c.shutdown().await;
}

/// A node's `/stats` (as the core types) and `/metrics` (text), from its HTTP `base`.
async fn stats_and_metrics(http: &reqwest::Client, base: &str) -> (NodeStats, String) {
    let stats = http
        .get(format!("{base}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (stats, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_stats_metrics_and_traces() {
    let c = four_nodes().await;
    let client = c.client(0, &[], Checker::All).await;
    client
        .write(&key(1), value(1, 100), IoAttr::default())
        .await
        .unwrap();
    // A traced read: the trace bit forces sampling on the owner.
    client.read_traced(&key(1), 0, 0, true).await.unwrap();
    let http = reqwest::Client::new();
    let mut traced = 0;
    for i in 0..4 {
        let base = format!("http://{}", c.http(i));
        let (s, text) = stats_and_metrics(&http, &base).await;
        assert_eq!(s.node.addr, c.addr(i).to_string());
        assert_eq!(s.backends.len(), 1);
        assert_eq!(s.routes.nodes.len(), 4, "every node knows the cluster");
        assert!(s.routes.nodes.iter().all(|n| n.http_addr.is_some()));
        let parsed =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        assert!(parsed
            .samples
            .iter()
            .any(|s| s.metric == "ellipsis_backend_records"));
        let cat = http
            .get(format!("{base}/stats/backends"))
            .send()
            .await
            .unwrap();
        assert_eq!(cat.status(), 200);
        let bad = http.get(format!("{base}/stats/nope")).send().await.unwrap();
        assert_eq!(bad.status(), 404);
        let trees: Vec<react_trace::ReactTree> = http
            .get(format!("{base}/traces"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for t in &trees {
            if t.actions[0].name == "READ" {
                traced += 1;
                let names: Vec<&str> = t.actions[0]
                    .actions
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect();
                assert!(names.contains(&"eblob.read"), "{names:?}");
                let one = http
                    .get(format!("{base}/traces/{}", t.id))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(one.status(), 200);
            }
        }
    }
    assert_eq!(traced, 1);
    c.shutdown().await;
}

/// Checks the exposition's shape that `prometheus-parse` does not: every family has one HELP
/// and one TYPE line, and every sample belongs to a declared family (a summary's `_sum` and
/// `_count` series to their summary). Returns each family's type.
fn metric_families(text: &str) -> std::collections::BTreeMap<String, String> {
    use std::collections::BTreeMap;
    let mut helps: BTreeMap<&str, usize> = BTreeMap::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut type_lines: BTreeMap<&str, usize> = BTreeMap::new();
    let mut sampled = Vec::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        match (words.next(), words.next(), words.next()) {
            (Some("#"), Some("HELP"), Some(name)) => *helps.entry(name).or_default() += 1,
            (Some("#"), Some("TYPE"), Some(name)) => {
                *type_lines.entry(name).or_default() += 1;
                types.insert(name.to_owned(), words.next().unwrap_or_default().to_owned());
            }
            (Some(sample), ..) if !sample.is_empty() && !sample.starts_with('#') => {
                sampled.push(sample.split(['{', ' ']).next().unwrap().to_owned());
            }
            _ => {}
        }
    }
    for (name, n) in &helps {
        assert_eq!(*n, 1, "HELP of {name} appears {n} times");
        assert_eq!(type_lines.get(name), Some(&1), "TYPE of {name}");
    }
    assert_eq!(helps.len(), type_lines.len(), "a TYPE without HELP");
    for name in sampled {
        let family = ["_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|base| types.get(*base).map(String::as_str) == Some("summary"))
            .unwrap_or(&name);
        assert!(types.contains_key(family), "{name} has no HELP/TYPE");
    }
    types
}

/// The one sample of `metric` whose labels include `labels` (a summary's quantiles are one
/// sample in prometheus-parse, so this finds plain series only).
fn metric_value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&prometheus_parse::Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .collect();
    assert_eq!(found.len(), 1, "{metric}{labels:?}: {found:?}");
    match found[0].value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{metric}{labels:?} is {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_stats_and_metrics_carry_the_same_figures() {
    let spec = |group| NodeSpec {
        groups: vec![group],
        cache_bytes: 1 << 20,
    };
    let c = Cluster::start(&[spec(1), spec(1), spec(2), spec(2)]).await;
    let client = c.client(0, &[], Checker::All).await;
    let cached = IoAttr {
        io_flags: io_flags::CACHE,
        ..IoAttr::default()
    };
    for i in 0..12 {
        let attr = if i % 3 == 0 {
            cached
        } else {
            IoAttr::default()
        };
        client.write(&key(i), value(i, 200), attr).await.unwrap();
    }
    for i in 0..12 {
        client.read(&key(i), 0, 0).await.unwrap();
    }
    assert!(client.read(&key(99), 0, 0).await.is_err());
    // Write the dirty objects back now and wait until every write-back is confirmed, so no
    // timer changes the compared figures between the /stats and the /metrics fetch.
    for i in 0..4 {
        c.node(i).backend(1).unwrap().flush_cache(true).unwrap();
    }
    ellipsis_tests::poll_until(TIMEOUT, "every cache clean", || {
        (0..4).all(|i| {
            ellipsis_node::stats::collect(c.node(i))
                .cache
                .iter()
                .all(|e| e.stats.dirty_objects == 0)
        })
    })
    .await;

    let families = [
        ("ellipsis_request_latency_seconds", "summary"),
        ("ellipsis_requests_disk_total", "counter"),
        ("ellipsis_requests_cache_total", "counter"),
        ("ellipsis_requests_forwarded_total", "counter"),
        ("ellipsis_cache_objects", "gauge"),
        ("ellipsis_cache_dirty_objects", "gauge"),
        ("ellipsis_cache_evictions_total", "counter"),
        ("ellipsis_cache_expirations_total", "counter"),
        ("ellipsis_cache_writebacks_total", "counter"),
        ("ellipsis_cache_writeback_failures_total", "counter"),
        ("ellipsis_cache_refused_total", "counter"),
        ("ellipsis_cache_max_size_bytes", "gauge"),
        ("ellipsis_cache_segment_size_bytes", "gauge"),
        ("ellipsis_process_io_read_bytes_total", "counter"),
        ("ellipsis_process_io_write_bytes_total", "counter"),
        ("ellipsis_host_load_average", "gauge"),
        ("ellipsis_process_open_fds", "gauge"),
        ("ellipsis_process_threads", "gauge"),
        ("ellipsis_process_virtual_memory_bytes", "gauge"),
        ("ellipsis_blocking_refused_total", "counter"),
        ("ellipsis_nonblocking_refused_total", "counter"),
        ("ellipsis_blocking_queue_limit", "gauge"),
        ("ellipsis_nonblocking_queue_limit", "gauge"),
        ("ellipsis_peer_state", "gauge"),
        ("ellipsis_peer_in_flight", "gauge"),
        ("ellipsis_peer_send_queue", "gauge"),
        ("ellipsis_backend_eblob_reads_total", "counter"),
        ("ellipsis_backend_eblob_read_bytes_total", "counter"),
        ("ellipsis_backend_eblob_writes_total", "counter"),
        ("ellipsis_backend_eblob_write_bytes_total", "counter"),
        ("ellipsis_backend_eblob_removes_total", "counter"),
        ("ellipsis_backend_state", "gauge"),
        ("ellipsis_backend_defrag_state", "gauge"),
        ("ellipsis_backend_defrag_mode", "gauge"),
        (
            "ellipsis_backend_defrag_next_start_timestamp_seconds",
            "gauge",
        ),
        ("ellipsis_jobs", "gauge"),
    ];
    let http = reqwest::Client::new();
    let (mut writes, mut cached_objects, mut disk_writes) = (0.0, 0.0, 0.0);
    for i in 0..4 {
        let base = format!("http://{}", c.http(i));
        let (s, text) = stats_and_metrics(&http, &base).await;
        let types = metric_families(&text);
        for (name, kind) in families {
            assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
        }
        let m = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let get = |metric: &str, labels: &[(&str, &str)]| metric_value(&m, metric, labels);

        for (cmd, st) in &s.commands.commands {
            let l = [("command", cmd.as_str())];
            assert_eq!(get("ellipsis_requests_disk_total", &l), st.disk as f64);
            assert_eq!(
                get("ellipsis_requests_cache_total", &l),
                st.cache_hits as f64
            );
            assert_eq!(
                get("ellipsis_requests_forwarded_total", &l),
                st.forwarded as f64
            );
        }
        // Client traffic is over, so WRITE and READ stand still (peers' route exchanges may
        // still count other commands between the two fetches).
        for cmd in ["WRITE", "READ"] {
            let Some(st) = s.commands.commands.get(cmd) else {
                continue;
            };
            let l = [("command", cmd)];
            assert_eq!(
                get("ellipsis_requests_succeeded_total", &l),
                st.successes as f64
            );
            assert_eq!(
                get("ellipsis_request_latency_seconds_count", &l),
                st.latency_count as f64
            );
            assert_eq!(
                get("ellipsis_request_latency_seconds_sum", &l),
                st.latency_sum_us as f64 / 1e6
            );
            let summary = m
                .samples
                .iter()
                .find(|x| {
                    x.metric == "ellipsis_request_latency_seconds"
                        && x.labels.get("command") == Some(cmd)
                })
                .unwrap();
            let prometheus_parse::Value::Summary(qs) = &summary.value else {
                panic!("{summary:?}");
            };
            let q = |q: f64| qs.iter().find(|x| x.quantile == q).unwrap().count;
            assert_eq!(q(0.99), st.p99_us as f64 / 1e6);
            assert_eq!(q(1.0), st.max_us as f64 / 1e6);
        }
        if let Some(w) = s.commands.commands.get("WRITE") {
            writes += w.successes as f64;
            disk_writes += get("ellipsis_requests_disk_total", &[("command", "WRITE")]);
        }

        for b in &s.backends {
            let id = b.id.to_string();
            let l = [("backend", id.as_str()), ("group", &b.group.to_string())];
            let eblob = [
                ("ellipsis_backend_eblob_writes_total", b.eblob.writes),
                (
                    "ellipsis_backend_eblob_write_bytes_total",
                    b.eblob.write_bytes,
                ),
                ("ellipsis_backend_eblob_reads_total", b.eblob.reads),
                (
                    "ellipsis_backend_eblob_read_bytes_total",
                    b.eblob.read_bytes,
                ),
                ("ellipsis_backend_eblob_removes_total", b.eblob.removes),
                ("ellipsis_backend_records", b.eblob.live_records),
                ("ellipsis_backend_stored_records", b.eblob.records),
                ("ellipsis_backend_size_bytes", b.eblob.size_bytes),
                ("ellipsis_backend_write_queue_limit", b.write_queue.limit),
            ];
            for (metric, v) in eblob {
                assert_eq!(get(metric, &l), v as f64, "{metric} of {id}");
            }
            let state = [l[0], l[1], ("state", b.state.as_str())];
            assert_eq!(get("ellipsis_backend_state", &state), 1.0);
            let mode = [l[0], l[1], ("mode", b.defrag.mode.as_str())];
            assert_eq!(get("ellipsis_backend_defrag_mode", &mode), 1.0);
            let defrag = [l[0], l[1], ("state", b.defrag.state.as_str())];
            assert_eq!(get("ellipsis_backend_defrag_state", &defrag), 1.0);
            if let Some(next) = b.defrag.next_start_unix_s {
                assert_eq!(
                    get("ellipsis_backend_defrag_next_start_timestamp_seconds", &l),
                    next as f64
                );
            }
        }

        assert!(!s.cache.is_empty());
        for entry in &s.cache {
            let id = entry.backend.map(|b| b.to_string()).unwrap_or_default();
            let l = [("backend", id.as_str())];
            let cs = &entry.stats;
            let figures = [
                ("ellipsis_cache_objects", cs.objects),
                ("ellipsis_cache_dirty_objects", cs.dirty_objects),
                ("ellipsis_cache_writebacks_total", cs.writebacks),
                ("ellipsis_cache_evictions_total", cs.evictions),
                ("ellipsis_cache_expirations_total", cs.expirations),
                ("ellipsis_cache_hits_total", cs.hits),
                ("ellipsis_cache_size_bytes", cs.size_bytes),
                ("ellipsis_cache_max_size_bytes", cs.max_size_bytes),
            ];
            for (metric, v) in figures {
                assert_eq!(get(metric, &l), v as f64, "{metric} of {id}");
            }
            for (seg, bytes) in cs.segment_sizes_bytes.iter().enumerate() {
                let seg = seg.to_string();
                let l = [("backend", id.as_str()), ("segment", seg.as_str())];
                assert_eq!(get("ellipsis_cache_segment_size_bytes", &l), *bytes as f64);
            }
            cached_objects += cs.objects as f64;
        }

        assert_eq!(
            get("ellipsis_blocking_queue_limit", &[]),
            s.io.blocking_queue_limit as f64
        );
        assert_eq!(
            get("ellipsis_nonblocking_queue_limit", &[]),
            s.io.nonblocking_queue_limit as f64
        );
        assert_eq!(
            get("ellipsis_blocking_refused_total", &[]),
            s.io.blocking_refused as f64
        );
        assert_eq!(
            get("ellipsis_nonblocking_refused_total", &[]),
            s.io.nonblocking_refused as f64
        );
        // Every peer is in exactly one state.
        assert!(!s.io.peers.is_empty(), "a cluster node talks to its peers");
        let peers: std::collections::BTreeSet<&str> = m
            .samples
            .iter()
            .filter(|x| x.metric == "ellipsis_peer_state")
            .filter_map(|x| x.labels.get("peer"))
            .collect();
        for p in peers {
            let on: f64 = m
                .samples
                .iter()
                .filter(|x| x.metric == "ellipsis_peer_state" && x.labels.get("peer") == Some(p))
                .map(|x| match x.value {
                    prometheus_parse::Value::Gauge(v) => v,
                    ref other => panic!("{other:?}"),
                })
                .sum();
            assert_eq!(on, 1.0, "{p}");
        }
        // Every kind x state pair is exported, zeros included.
        let jobs = m
            .samples
            .iter()
            .filter(|x| x.metric == "ellipsis_jobs")
            .count();
        assert_eq!(jobs, 6 * 6);
    }
    // The comparisons above were of real figures: 12 writes reached both groups' disks or
    // caches, and the cached ones are still held.
    assert_eq!(writes, 24.0);
    assert_eq!(disk_writes, 16.0, "the 8 uncached writes, one per group");
    assert!(cached_objects >= 8.0, "{cached_objects}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_api_with_ranges_and_tokens() {
    let c = four_nodes().await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/objects/photo.jpg", c.http(3));
    let body: Vec<u8> = (0..100u8).collect();
    let denied = http.put(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let wrong = http
        .put(&url)
        .bearer_auth("nope")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let put = http
        .put(&url)
        .bearer_auth(TOKEN)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let get = http.get(&url).send().await.unwrap();
    assert_eq!(get.status(), 200);
    let etag = get.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(get.bytes().await.unwrap().to_vec(), body);
    let part = http
        .get(&url)
        .header("Range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 10-19/100");
    assert_eq!(part.bytes().await.unwrap().to_vec(), body[10..20].to_vec());
    let tail = http
        .get(&url)
        .header("Range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.bytes().await.unwrap().to_vec(), body[95..].to_vec());
    let past = http
        .get(&url)
        .header("Range", "bytes=100-")
        .send()
        .await
        .unwrap();
    assert_eq!(past.status(), 416);
    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.headers()["etag"].to_str().unwrap(), etag);
    // Any node serves it (the object API goes through the client library).
    let other = format!("http://{}/objects/photo.jpg", c.http(0));
    assert_eq!(
        http.get(&other)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec(),
        body
    );
    assert_eq!(http.delete(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        http.delete(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
    let admin = format!("http://{}/admin/backends/1/read-only", c.http(0));
    assert_eq!(http.post(&admin).send().await.unwrap().status(), 401);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_get_headers_describe_the_body_sent_while_the_object_is_overwritten() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let c = four_nodes().await;
    // Versions of different sizes (empty, within a chunk, across chunks), each naming itself.
    let sizes = [0usize, 7, 100, 4096, 70_000, (1 << 20) + 3];
    let versions: Vec<Bytes> = sizes
        .iter()
        .enumerate()
        .map(|(v, &len)| (0..len).map(|j| (j * 7 + v * 13) as u8).collect())
        .collect();
    let by_etag: std::collections::HashMap<String, usize> = versions
        .iter()
        .enumerate()
        .map(|(v, b)| (format!("\"{:016x}\"", eblob::record::data_checksum(b)), v))
        .collect();
    assert_eq!(by_etag.len(), versions.len());
    let k = Id::for_key(b"", b"hammered");
    let writer = c.client(0, &[], Checker::All).await;
    writer
        .write(&k, versions[1].clone(), IoAttr::default())
        .await
        .unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let overwrites = {
        let (stop, versions) = (stop.clone(), versions.clone());
        tokio::spawn(async move {
            let mut written = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for v in &versions {
                    writer
                        .write(&k, v.clone(), IoAttr::default())
                        .await
                        .unwrap();
                    written += 1;
                }
            }
            written
        })
    };
    let http = reqwest::Client::new();
    let url = format!("http://{}/objects/hammered", c.http(3));
    let ranges = [
        None,
        Some("bytes=10-19"),
        Some("bytes=-5"),
        Some("bytes=90-"),
        Some("bytes=0-0"),
    ];
    let mut seen = std::collections::HashSet::new();
    for i in 0..300 {
        let range = ranges[i % ranges.len()];
        let mut req = http.get(&url);
        if let Some(r) = range {
            req = req.header("Range", r);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (etag, content_range) = (header("etag"), header("content-range"));
        let content_length = resp.content_length();
        let body = resp.bytes().await.unwrap();
        let what = format!("GET {range:?}: {status} etag {etag:?} range {content_range:?}");
        if status == 416 {
            // Only a range past the end of some version is refused, and it names that size.
            let total: usize = content_range.unwrap()["bytes */".len()..].parse().unwrap();
            assert!(sizes.contains(&total), "{what}");
            assert!(range.is_some() && body.is_empty(), "{what}");
            continue;
        }
        assert_eq!(content_length, Some(body.len() as u64), "{what}");
        let etag = etag.unwrap();
        let v = *by_etag
            .get(&etag)
            .unwrap_or_else(|| panic!("unknown ETag: {what}"));
        seen.insert(v);
        let version = &versions[v];
        match status {
            200 => {
                assert!(range.is_none(), "{what}");
                assert_eq!(body, *version, "{what}");
            }
            206 => {
                let spec = content_range.unwrap();
                let (span, total) = spec["bytes ".len()..].split_once('/').unwrap();
                let (a, b) = span.split_once('-').unwrap();
                let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                assert_eq!(total.parse::<usize>().unwrap(), version.len(), "{what}");
                assert_eq!(b - a + 1, body.len(), "{what}");
                assert_eq!(body, version.slice(a..=b), "{what}");
            }
            other => panic!("status {other}: {what}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let written = overwrites.await.unwrap();
    assert!(
        written > versions.len() as u64,
        "the object was overwritten throughout"
    );
    assert!(seen.len() > 1, "GETs saw several versions: {seen:?}");
    c.shutdown().await;
}

/// A client of its own (its own TCP connections) through node `via`, in group 1 only, that
/// never refreshes routes by itself (so nothing but the test's requests reach the nodes).
async fn own_client(c: &Cluster, via: usize) -> std::sync::Arc<ellipsis_core::client::Client> {
    ellipsis_core::client::Client::connect(ellipsis_core::client::ClientConfig {
        remotes: vec![c.addr(via)],
        groups: vec![1],
        checker: Checker::All,
        timeout_ms: 10_000,
        route_refresh_ms: 0,
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_and_cas_increments_of_one_key_lose_no_update() {
    const CLIENTS: usize = 8;
    const APPENDS: usize = 25;
    const INCREMENTS: u64 = 10;
    let c = Cluster::start(&[NodeSpec::groups(&[1]), NodeSpec::groups(&[1])]).await;
    let k = key(1);
    let first = own_client(&c, 0).await;
    first
        .write(&k, Bytes::new(), IoAttr::default())
        .await
        .unwrap();
    // Every client on its own connections appends its own tokens ("c03-017;").
    let append = IoAttr {
        io_flags: io_flags::APPEND,
        ..IoAttr::default()
    };
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let session = own_client(&c, client % 2).await;
        tasks.push(tokio::spawn(async move {
            for i in 0..APPENDS {
                let token = Bytes::from(format!("c{client:02}-{i:03};"));
                session.write(&k, token, append).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = first.read(&k, 0, 0).await.unwrap().data;
    let text = std::str::from_utf8(&all).unwrap();
    let mut tokens: Vec<&str> = text.split_terminator(';').collect();
    assert_eq!(tokens.len(), CLIENTS * APPENDS, "{text}");
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), CLIENTS * APPENDS, "every append exactly once");
    // Read-modify-write with CAS on the checksum read: a CAS that succeeded saw the value no
    // other write changed since, so the counter counts exactly the successful ones.
    let counter = key(2);
    first
        .write(
            &counter,
            Bytes::from(0u64.to_le_bytes().to_vec()),
            IoAttr::default(),
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let session = own_client(&c, client % 2).await;
        tasks.push(tokio::spawn(async move {
            let (mut done, mut conflicts) = (0u64, 0u64);
            while done < INCREMENTS {
                assert!(conflicts < 10_000, "CAS never got through");
                let r = session.read(&counter, 0, 0).await.unwrap();
                let now = u64::from_le_bytes(r.data[..].try_into().unwrap());
                let cas = IoAttr {
                    io_flags: io_flags::CAS_CHECKSUM,
                    checksum: r.attr.checksum,
                    ..IoAttr::default()
                };
                let next = Bytes::from((now + 1).to_le_bytes().to_vec());
                match session.write(&counter, next, cas).await {
                    Ok(_) => done += 1,
                    Err(e) if e.status() == Status::NEWER_EXISTS => conflicts += 1,
                    Err(e) => panic!("CAS write: {e}"),
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let r = first.read(&counter, 0, 0).await.unwrap();
    let total = u64::from_le_bytes(r.data[..].try_into().unwrap());
    assert_eq!(total, CLIENTS as u64 * INCREMENTS, "{conflicts} conflicts");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_key_blocks_its_own_requests_but_not_other_keys() {
    let c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let node = c.node(0).clone();
    let client = own_client(&c, 0).await;
    let (held, free) = (key(1), key(2));
    // Both keys live on the node's one backend; the test holds the first key's lock, as a
    // long request on it would.
    let guard = node.keylocks.lock((1, held)).await;
    let in_flight =
        |n: &ellipsis_node::node::Node| ellipsis_node::stats::collect(n).io.nonblocking_queue;
    assert_eq!(in_flight(&node), 0);
    let blocked = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .write(&held, Bytes::from_static(b"held"), IoAttr::default())
                .await
        })
    };
    // The write reached the node and is waiting there (it cannot finish: its key is held).
    ellipsis_tests::poll_until(TIMEOUT, "the held key's write in flight", || {
        in_flight(&node) == 1
    })
    .await;
    // Another key on the same backend is written and read meanwhile.
    client
        .write(&free, Bytes::from_static(b"free"), IoAttr::default())
        .await
        .unwrap();
    assert_eq!(&client.read(&free, 0, 0).await.unwrap().data[..], b"free");
    assert!(
        !blocked.is_finished(),
        "the held key's write waits for the lock"
    );
    // (The free key's request may still be finishing on the node: at least the held one.)
    assert!(in_flight(&node) >= 1);
    drop(guard);
    blocked.await.unwrap().unwrap();
    assert_eq!(&client.read(&held, 0, 0).await.unwrap().data[..], b"held");
    assert!(node.keylocks.is_empty());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_need_the_token() {
    let c = four_nodes().await;
    let conn = Conn::connect(c.addr(0), 1 << 30, TIMEOUT).await.unwrap();
    let ctl = BackendControl {
        backend: 1,
        action: BackendAction::ReadOnly,
    };
    let h = Header::request(Command::BackendControl, Id::ZERO, 0, 0);
    let err = conn.call(h, ctl.encode(), TIMEOUT).await.unwrap_err();
    assert_eq!(err.status(), Status::ACCESS);
    // With the token (the harness client authenticates every connection).
    let client = c.client(0, &[1], Checker::All).await;
    client.call_node(c.addr(0), h, ctl.encode()).await.unwrap();
    let b = c.node(0).backend(1).unwrap();
    assert!(b.read_only_reason().is_some());
    let k = (0..)
        .map(key)
        .find(|k| client.routes().owner(1, k).unwrap().node == c.addr(0))
        .unwrap();
    let err = client
        .write(&k, Bytes::from_static(b"x"), IoAttr::default())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Status::READ_ONLY);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_and_the_node_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = four_nodes().await;
    let mut raw = tokio::net::TcpStream::connect(c.addr(0)).await.unwrap();
    let mut h = Header::request(Command::Write, key(1), 1, 77);
    h.size = 1 << 40;
    raw.write_all(&h.encode()).await.unwrap();
    let mut reply = [0u8; HEADER_SIZE];
    raw.read_exact(&mut reply).await.unwrap();
    let r = Header::decode(&reply).unwrap();
    assert_eq!((r.trans, r.status), (77, Status::TOO_BIG));
    let mut rest = Vec::new();
    let n = raw.read_to_end(&mut rest).await.unwrap();
    assert_eq!(n as u64, r.size, "then the connection closes");
    // Garbage closes the connection too, without a panic.
    let mut junk = tokio::net::TcpStream::connect(c.addr(0)).await.unwrap();
    junk.write_all(&[0xffu8; 300]).await.unwrap();
    let client = c.client(0, &[], Checker::All).await;
    client
        .write(&key(2), value(2, 10), IoAttr::default())
        .await
        .unwrap();
    assert_eq!(client.read(&key(2), 0, 0).await.unwrap().data, value(2, 10));
    c.shutdown().await;
}
