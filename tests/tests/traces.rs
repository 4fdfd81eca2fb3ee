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
        .call_node(c.addr(0), h, payload.encode())
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
        writes
            .iter()
            .any(|a| ["network.receive", "eblob.write", "fsync", "reply"]
                .iter()
                .all(|x| a.iter().any(|n| n == x))),
        "a synced write records its receive, the engine write, its fsync and the reply: {writes:?}"
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

/// The tree node `i` recorded under `id`, if any.
async fn tree_on(c: &Cluster, i: usize, id: u64) -> Option<ReactTree> {
    let r = reqwest::get(format!("http://{}/traces/{id:016x}", c.http(i)))
        .await
        .unwrap();
    if r.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    Some(r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_id_names_a_requests_trees_on_every_node_it_crossed() {
    let c = Cluster::start(&[NodeSpec::groups(&[1]), NodeSpec::groups(&[1])]).await;
    let client = c.client(0, &[1], Checker::All).await;
    // A key owned by node 1, so that node 0 forwards it.
    let k = (0..)
        .map(|i: u32| Id::for_key(b"traces", format!("fwd-{i}").as_bytes()))
        .find(|k| client.routes().owner(1, k).unwrap().node == c.addr(1))
        .unwrap();
    client
        .write(&k, Bytes::from_static(b"forwarded"), IoAttr::default())
        .await
        .unwrap();

    // The client's traced read goes to the owner; its reply names the tree.
    let r = client.read_traced(&k, 0, 0, true).await.unwrap();
    assert_ne!(r.trace_id, 0, "the reply echoes the request's trace id");
    let tree = tree_on(&c, 1, r.trace_id)
        .await
        .expect("the owner's tree under the id the client read back");
    assert_eq!(tree.id, format!("{:016x}", r.trace_id));
    assert_eq!(tree.actions[0].name, "READ");
    assert!(
        tree_on(&c, 0, r.trace_id).await.is_none(),
        "node 0 saw nothing"
    );

    // Sent to node 0, which does not own it: both nodes record the request under one id.
    let mut h = Header::request(Command::Read, k, 1, 0);
    h.flags |= flags::TRACE;
    let frames = client.call_node(c.addr(0), h, Bytes::new()).await.unwrap();
    let reply = frames.last().unwrap();
    let id = reply.header.trace_id;
    assert_ne!(id, 0, "the forwarding node gives the request an id");
    let payload = IoPayload::decode(&reply.payload).unwrap();
    assert_eq!(&payload.data[..], b"forwarded");
    let forwarder = tree_on(&c, 0, id)
        .await
        .expect("the forwarding node's tree");
    let owner = tree_on(&c, 1, id).await.expect("the owner's tree, same id");
    assert_eq!(forwarder.annotations["node"], c.addr(0).to_string());
    assert_eq!(owner.annotations["node"], c.addr(1).to_string());
    assert_eq!(owner.id, forwarder.id);
    c.shutdown().await;
}
