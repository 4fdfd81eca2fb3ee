//! Client behaviour against misbehaving nodes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ellipsis_core::client::{Checker, Client, ClientConfig};
use ellipsis_core::protocol::{io_flags, IoAttr, Status};
use ellipsis_core::Id;
use ellipsis_tests::{Cluster, NodeSpec, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_to_a_silent_node_share_one_attempt() {
    let c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let timeout_ms = 400;
    let client = Client::connect(ClientConfig {
        remotes: vec![c.addr(0)],
        timeout_ms,
        admin_token: Some(TOKEN.into()),
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    // Accepts connections (the kernel completes the handshake) and never answers: the
    // client's AUTH on connect times out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut socks = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            socks.push(s);
        }
    });
    let callers = 20;
    let started = Instant::now();
    let results = futures::future::join_all((0..callers).map(|_| client.conn(addr))).await;
    let waited = started.elapsed();
    assert!(
        results.iter().all(|r| r.is_err()),
        "a silent node never yields a connection"
    );
    // One shared attempt: callers wait about one timeout, not one timeout each in turn
    // (20 x 400 ms = 8 s before the fix). The bound is loose: this is about hangs, not speed.
    assert!(
        waited < Duration::from_millis(timeout_ms * 5),
        "{callers} callers waited {waited:?} with a {timeout_ms} ms timeout"
    );
    // The failed attempt is forgotten: the next caller tries afresh (and fails the same way).
    assert!(client.conn(addr).await.is_err());
    held.abort();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_reads_prefer_the_faster_group_and_leave_a_dead_one() {
    use bytes::Bytes;
    use ellipsis_core::client::Checker;
    use ellipsis_core::protocol::cmd::backend_control::{BackendAction, BackendControl};
    use ellipsis_core::protocol::cmd::Payload;
    use ellipsis_core::protocol::{Command, Header, IoAttr};
    use ellipsis_core::Id;
    let mut c = Cluster::start(&[NodeSpec::groups(&[1]), NodeSpec::groups(&[2])]).await;
    let k = Id::for_key(b"weighted", b"k");
    let admin = c.client(0, &[1, 2], Checker::All).await;
    admin
        .write(&k, Bytes::from_static(b"v"), IoAttr::default())
        .await
        .unwrap();
    let delay = |delay_ms| {
        let ctl = BackendControl {
            backend: 1,
            action: BackendAction::SetDelay { delay_ms },
        };
        (
            Header::request(Command::BackendControl, Id::ZERO, 0, 0),
            Bytes::from(ctl.encode()),
        )
    };
    // Group 1 answers 100 ms late.
    let (h, p) = delay(100);
    admin.call_node(c.addr(0), h, p).await.unwrap();
    let client = Client::connect(ClientConfig {
        remotes: vec![c.addr(0)],
        groups: vec![1, 2],
        latency_weighted_reads: true,
        timeout_ms: 2_000,
        admin_token: Some(TOKEN.into()),
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    // The first read measures group 1 (untried groups go first, in order) ...
    assert_eq!(client.read(&k, 0, 0).await.unwrap().group, 1);
    // ... then group 2 is untried and, once measured, faster: every read goes there.
    for _ in 0..10 {
        assert_eq!(client.read(&k, 0, 0).await.unwrap().group, 2);
    }
    // Group 2's node dies: one read finds out and falls back; later reads start with group 1.
    let (h, p) = delay(0);
    admin.call_node(c.addr(0), h, p).await.unwrap();
    c.stop_node(1).await;
    let r = client.read(&k, 0, 0).await.unwrap();
    assert_eq!(r.group, 1);
    assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
    for _ in 0..10 {
        let r = client.read(&k, 0, 0).await.unwrap();
        assert_eq!((r.group, r.failed.len()), (1, 0), "{:?}", r.failed);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_follows_a_node_that_joins_later_without_a_failure() {
    let mut c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let client = Client::connect(ClientConfig {
        remotes: vec![c.addr(0)],
        route_refresh_ms: 50,
        admin_token: Some(TOKEN.into()),
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(client.groups(), [1]);
    let joined = c.add_node(&NodeSpec::groups(&[2])).await;
    c.converge().await;
    let addr = c.addr(joined);
    // Nothing failed: only the periodic refresh can teach the client about the new node.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !client.routes().nodes().contains(&addr) {
        assert!(Instant::now() < deadline, "the client never learned {addr}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.groups(), [1, 2]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_reconnects_to_a_node_that_restarted() {
    let mut c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    // One group, one node: no replica to fall back to, so only a reconnect can answer.
    let client = c.client(0, &[1], Checker::All).await;
    let k = Id::for_key(b"client", b"reconnect");
    client
        .write(&k, Bytes::from_static(b"before"), IoAttr::default())
        .await
        .unwrap();
    c.stop_node(0).await;
    let e = client.read(&k, 0, 0).await.unwrap_err();
    assert!(
        [Status::UNREACHABLE, Status::TIMED_OUT].contains(&e.status()),
        "a stopped node is an error, not a hang: {e}"
    );
    c.restart_node(0).await;
    assert_eq!(&client.read(&k, 0, 0).await.unwrap().data[..], b"before");
    client
        .write(&k, Bytes::from_static(b"after"), IoAttr::default())
        .await
        .unwrap();
    assert_eq!(&client.read(&k, 0, 0).await.unwrap().data[..], b"after");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nocsum_writes_are_stored_without_a_checksum_and_read_back() {
    let c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let client = c.client(0, &[1], Checker::All).await;
    let (plain, bare) = (
        Id::for_key(b"client", b"checksummed"),
        Id::for_key(b"client", b"nocsum"),
    );
    let nocsum = IoAttr {
        io_flags: io_flags::NOCSUM,
        ..IoAttr::default()
    };
    client
        .write(&plain, Bytes::from_static(b"summed"), IoAttr::default())
        .await
        .unwrap();
    client
        .write(&bare, Bytes::from_static(b"unsummed"), nocsum)
        .await
        .unwrap();
    let (_, with) = client.lookup(&plain).await.unwrap();
    let (_, without) = client.lookup(&bare).await.unwrap();
    assert_ne!(with.attr.checksum, 0);
    assert_eq!(without.attr.checksum, 0, "no checksum stored: {without:?}");
    assert_eq!(
        &client.read(&bare, 0, 0).await.unwrap().data[..],
        b"unsummed"
    );
    c.shutdown().await;
}

/// A WRITE naming its data's record checksum (`DATA_CHECKSUM`, what a copy sent from a blob
/// file carries) is stored only if the bytes hash to it, through the engine and through the
/// cache alike; other bytes are CORRUPTED, nothing is stored, and the refusal is counted as a
/// mismatched write (in `/stats` and `/metrics`), not as an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_naming_their_data_checksum_store_only_matching_bytes() {
    let c = Cluster::start(&[NodeSpec {
        groups: vec![1],
        // Room for a 1.3 MiB object in each cache shard.
        cache_bytes: 64 << 20,
    }])
    .await;
    let client = c.client(0, &[1], Checker::All).await;
    let mut refused = 0;
    // Below and above the size the node hashes on its blocking pool before the write queues.
    for len in [70_000usize, (1 << 20) + 300_000] {
        let data = Bytes::from(vec![len as u8; len]);
        let sum = eblob::record::data_checksum(&data);
        for (name, extra) in [("engine", 0), ("cache", io_flags::CACHE)] {
            let k = Id::for_key(format!("client-{len}").as_bytes(), name.as_bytes());
            let named = |checksum| IoAttr {
                io_flags: io_flags::DATA_CHECKSUM | extra,
                checksum,
                ..IoAttr::default()
            };
            let e = client
                .write(&k, data.clone(), named(sum ^ 1))
                .await
                .unwrap_err();
            assert_eq!(e.status(), Status::CORRUPTED, "{name} {len}: {e}");
            let e = client.read(&k, 0, 0).await.unwrap_err();
            assert_eq!(
                e.status(),
                Status::NOT_FOUND,
                "{name} {len}: nothing stored"
            );
            refused += 1;
            let eblob = &ellipsis_node::stats::collect(c.node(0)).backends[0].eblob;
            assert_eq!(
                (eblob.mismatched_writes, eblob.errors),
                (refused, 0),
                "{name} {len}: {eblob:?}"
            );
            client.write(&k, data.clone(), named(sum)).await.unwrap();
            let r = client.read(&k, 0, 0).await.unwrap();
            assert!(r.data == data, "{name} {len}");
            assert_eq!(r.attr.checksum, sum, "{name} {len}");
        }
    }
    let data = Bytes::from(vec![7u8; 70_000]);
    let sum = eblob::record::data_checksum(&data);
    // One checksum field cannot name two things; nor can a record without checksums be
    // checked against one.
    let k = Id::for_key(b"client", b"conflict");
    for flags in [io_flags::CAS_CHECKSUM, io_flags::NOCSUM] {
        let attr = IoAttr {
            io_flags: io_flags::DATA_CHECKSUM | flags,
            checksum: sum,
            ..IoAttr::default()
        };
        let e = client.write(&k, data.clone(), attr).await.unwrap_err();
        assert_eq!(e.status(), Status::INVALID, "{e}");
    }
    let metrics = c.metrics(0).await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("ellipsis_backend_eblob_mismatched_writes_total{")
                && l.ends_with(" 4")
        ),
        "{metrics}"
    );
    c.shutdown().await;
}

/// A request larger than the client's frame limit is refused before anything of it is
/// sent, and the connection goes on serving the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_frame_limit_is_refused_and_the_connection_stays_up() {
    let c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let client = Client::connect(ClientConfig {
        remotes: vec![c.addr(0)],
        groups: vec![1],
        max_frame_bytes: 64 << 10,
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    let k = Id::for_key(b"client", b"big");
    let e = client
        .write(&k, Bytes::from(vec![1u8; 100 << 10]), IoAttr::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Status::TOO_BIG, "{e}");
    client
        .write(&k, Bytes::from_static(b"small"), IoAttr::default())
        .await
        .unwrap();
    assert_eq!(&client.read(&k, 0, 0).await.unwrap().data[..], b"small");
    c.shutdown().await;
}

/// With several connections per node, requests take them in turn: the node sees exactly
/// that many connections from the client, and every request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_take_the_connections_to_a_node_in_turn() {
    let c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let open = || {
        ellipsis_node::stats::collect(c.node(0))
            .io
            .client_connections
    };
    let before = open();
    let client = Client::connect(ClientConfig {
        remotes: vec![c.addr(0)],
        groups: vec![1],
        connections_per_node: 3,
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    for i in 0..9u8 {
        let k = Id::for_key(b"client", &[b'p', i]);
        let v = Bytes::from(vec![i; 100]);
        client
            .write(&k, v.clone(), IoAttr::default())
            .await
            .unwrap();
        assert_eq!(client.read(&k, 0, 0).await.unwrap().data, v);
    }
    assert_eq!(open() - before, 3, "one connection per slot");
    c.shutdown().await;
}
