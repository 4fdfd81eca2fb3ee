//! Network partitions: group 2's nodes sit behind loopback proxies (they advertise the proxy's
//! address, so clients and peers reach them only through it). The proxies blackhole the link
//! while the client keeps writing; the client's calls end within its timeout (errors, not
//! hangs) and writes succeed in group 1; after the heal a dc recovery makes both groups hold the
//! newest version of every key.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ellipsis_core::client::{Checker, Client, ClientConfig};
use ellipsis_core::protocol::{IoAttr, Status};
use ellipsis_core::Id;
use ellipsis_tests::proxy::Proxy;
use ellipsis_tests::{Cluster, NodeSpec, TOKEN};

const CLIENT_TIMEOUT_MS: u64 = 500;

fn key(i: u64) -> Id {
    Id::for_key(b"partition", format!("k{i}").as_bytes())
}

fn val(i: u64, version: &str) -> Bytes {
    Bytes::from(format!(
        "{version}-{i}-{}",
        "x".repeat((i % 13) as usize * 50)
    ))
}

/// A free loopback port (bound then released: the node binds it right after).
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn client(c: &Cluster, groups: &[u32], checker: Checker) -> std::sync::Arc<Client> {
    Client::connect(ClientConfig {
        remotes: vec![c.addr(0)],
        groups: groups.to_vec(),
        checker,
        timeout_ms: CLIENT_TIMEOUT_MS,
        admin_token: Some(TOKEN.into()),
        ..ClientConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_group_times_out_then_converges_after_heal_and_dc() {
    let mut c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let mut proxies = Vec::new();
    for _ in 0..2 {
        let p = Proxy::start().await.unwrap();
        let listen = free_port();
        p.set_target(listen);
        let advertise = p.addr();
        c.add_node_with(&NodeSpec::groups(&[2]), |cfg| {
            cfg.listen = vec![listen];
            cfg.advertise_addr = Some(advertise);
        })
        .await;
        proxies.push(p);
    }
    c.converge().await;
    let all = client(&c, &[1, 2], Checker::All).await;
    let routes = all.routes();
    for p in &proxies {
        assert!(
            routes.nodes().contains(&p.addr()),
            "group 2 is known by its advertised (proxy) address"
        );
    }
    for i in 0..60 {
        all.write(&key(i), val(i, "v1"), IoAttr::default())
            .await
            .unwrap();
    }

    for p in &proxies {
        p.cut();
    }
    let any = client(&c, &[1, 2], Checker::AtLeastOne).await;
    // Every call ends within a bound of the client's timeout: no hang on the silent link.
    let bound = Duration::from_millis(CLIENT_TIMEOUT_MS * 6);
    let mut timed_out = 0;
    // One at a time: concurrent callers of a client that has no connection to a silent node
    // queue behind one another's connection attempts (reported; see SAFETY.md).
    for i in (0..8).chain(60..66) {
        let started = Instant::now();
        let w = tokio::time::timeout(bound, any.write(&key(i), val(i, "v2"), IoAttr::default()))
            .await
            .unwrap_or_else(|_| panic!("write {i} hung past {bound:?}"))
            .unwrap();
        assert!(started.elapsed() < bound);
        assert_eq!(w.ok_groups(), [1], "only group 1 is reachable");
        let g2 = w.groups.iter().find(|g| g.group == 2).unwrap();
        assert!(
            [Status::TIMED_OUT, Status::UNREACHABLE].contains(&g2.status),
            "{:?}",
            g2.status
        );
        timed_out += u64::from(g2.status == Status::TIMED_OUT);
    }
    assert!(timed_out > 0, "a blackholed link shows as timeouts");
    // A strict writer is told, in time, that the write did not reach every group.
    let err = tokio::time::timeout(bound, all.write(&key(0), val(0, "v3"), IoAttr::default()))
        .await
        .expect("no hang")
        .unwrap_err();
    assert_eq!(err.status(), Status::TIMED_OUT, "{err}");
    // Reads fall back to group 1, also without hanging.
    let g2_first = client(&c, &[2, 1], Checker::AtLeastOne).await;
    let r = tokio::time::timeout(bound, g2_first.read(&key(5), 0, 0))
        .await
        .expect("no hang")
        .unwrap();
    assert_eq!((r.group, r.data), (1, val(5, "v2")));

    for p in &proxies {
        p.heal();
    }
    let stale_in_g2 = {
        let g2 = client(&c, &[2], Checker::All).await;
        let mut n = 0;
        for i in 0..66 {
            if g2.read(&key(i), 0, 0).await.ok().map(|r| r.data) != Some(expected(i)) {
                n += 1;
            }
        }
        n
    };
    assert_eq!(
        stale_in_g2, 14,
        "v2 of 0..8 (v3 of 0) and all of 60..66 are missing in group 2"
    );

    let r = reqwest::Client::new()
        .post(format!("http://{}/admin/recovery", c.http(0)))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"kind": "dc"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    c.wait_jobs().await;
    for g in [1, 2] {
        let single = client(&c, &[g], Checker::All).await;
        for i in 0..66 {
            let r = single.read(&key(i), 0, 0).await.unwrap();
            assert_eq!(r.data, expected(i), "group {g} key {i}");
        }
    }
    c.shutdown().await;
}

/// The newest version of key `i` written above.
fn expected(i: u64) -> Bytes {
    match i {
        0 => val(0, "v3"),
        1..8 | 60..66 => val(i, "v2"),
        _ => val(i, "v1"),
    }
}
