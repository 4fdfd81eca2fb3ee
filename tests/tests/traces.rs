//! Call trees of real requests: the actions a sampled request records on its node.

use bytes::Bytes;
use ellipsis_core::client::{Checker, Client};
use ellipsis_core::protocol::cmd::io::IoPayload;
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{flags, io_flags, Command, Header, IoAttr};
use ellipsis_core::Id;
use ellipsis_node::config::SyncSetting;
use ellipsis_tests::{Cluster, NodeSpec};
use react_trace::{ReactAction, ReactTree};

fn names(a: &ReactAction, out: &mut Vec<String>) {
    for c in &a.actions {
        out.push(c.name.clone());
        names(c, out);
    }
}

/// Every action name under the root of each tree of `cmd` this node recorded.
async fn actions_of(c: &Cluster, cmd: &str) -> Vec<Vec<String>> {
    let trees: Vec<ReactTree> = reqwest::get(format!("http://{}/traces?limit=256", c.http(0)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    trees
        .iter()
        .filter(|t| t.actions.first().is_some_and(|a| a.name == cmd))
        .map(|t| {
            let mut out = Vec::new();
            names(&t.actions[0], &mut out);
            out
        })
        .collect()
}

/// A WRITE or READ of node 0's backend 1 with the trace bit set, over the wire.
async fn traced(c: &Cluster, client: &Client, cmd: Command, key: &Id, attr: IoAttr, data: &[u8]) {
    let mut h = Header::request(cmd, *key, 1, 0);
    h.backend = 1;
    h.flags |= flags::TRACE;
    let payload = IoPayload {
        attr,
        data: Bytes::copy_from_slice(data),
    };
    client
        .call_node(c.addr(0), h, payload.encode().into())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_requests_record_cache_engine_and_fsync_actions() {
    let mut c = Cluster::start(&[]).await;
    let spec = NodeSpec {
        groups: vec![1],
        cache_bytes: 1 << 20,
    };
    c.add_node_with(&spec, |cfg| cfg.backends[0].sync = SyncSetting::Always)
        .await;
    c.converge().await;
    let client = c.client(0, &[1], Checker::All).await;
    let k = Id::for_key(b"traces", b"synced");
    traced(
        &c,
        &client,
        Command::Write,
        &k,
        IoAttr::default(),
        b"on disk",
    )
    .await;
    let cached = IoAttr {
        io_flags: io_flags::CACHE,
        ..IoAttr::default()
    };
    let kc = Id::for_key(b"traces", b"cached");
    traced(&c, &client, Command::Write, &kc, cached, b"in cache").await;
    traced(&c, &client, Command::Read, &kc, IoAttr::default(), b"").await;

    let writes = actions_of(&c, "WRITE").await;
    assert!(
        writes.iter().any(|a| ["eblob.write", "fsync", "reply"]
            .iter()
            .all(|x| a.iter().any(|n| n == x))),
        "a synced write records the engine write, its fsync and the reply: {writes:?}"
    );
    assert!(
        writes.iter().any(|a| a.iter().any(|n| n == "cache.insert")),
        "{writes:?}"
    );
    let reads = actions_of(&c, "READ").await;
    assert!(
        reads.iter().any(|a| a.iter().any(|n| n == "cache.lookup")),
        "{reads:?}"
    );
    c.shutdown().await;
}
