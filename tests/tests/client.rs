//! Client behaviour against misbehaving nodes.

use std::time::{Duration, Instant};

use ellipsis_core::client::{Client, ClientConfig};
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
