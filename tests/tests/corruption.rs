//! Damaged files at node level: bytes flipped in a data file, a write-order index and a sorted
//! index of a stopped node. The node must start, report the damage in `/stats`, serve every
//! undamaged key, never return wrong bytes for a damaged one, and a dc recovery with `verify`
//! must restore every damaged key from the other group on its own, including a copy whose
//! bytes rotted under intact headers (its version equals the intact one's).
//!
//! Layout: node 0 holds group 1, node 1 holds group 2, so every key has one copy in each group
//! and reads through a group-1-only client show exactly what node 0 serves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ellipsis_core::client::{Checker, Client, ClientConfig};
use ellipsis_core::protocol::{IoAttr, Status};
use ellipsis_core::stats::NodeStats;
use ellipsis_core::Id;
use ellipsis_tests::{flip_byte, Cluster, NodeSpec, TOKEN};

/// Size of one index entry / record header (node/eblob/FORMAT.md).
const ENTRY_BYTES: usize = 128;

fn key(i: u64) -> Id {
    Id::for_key(b"corruption", format!("k{i}").as_bytes())
}

fn value(i: u64) -> Bytes {
    (0..2000 + (i % 7) * 100)
        .map(|j| (i * 131 + j * 7) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// Offset of `id`'s entry in an index file (entries are 128 bytes starting with the key).
fn entry_offset(index: &Path, id: &Id) -> Option<u64> {
    let bytes = std::fs::read(index).unwrap();
    bytes
        .chunks_exact(ENTRY_BYTES)
        .position(|e| e[..64] == id.0[..])
        .map(|slot| (slot * ENTRY_BYTES) as u64)
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().unwrap().ends_with(suffix))
        .collect();
    v.sort();
    v
}

async fn group_client(c: &Cluster, group: u32) -> std::sync::Arc<Client> {
    Client::connect(ClientConfig {
        remotes: vec![c.addr(0), c.addr(1)],
        groups: vec![group],
        checker: Checker::All,
        admin_token: Some(TOKEN.into()),
        ..ClientConfig::default()
    })
    .await
    .unwrap()
}

async fn stats(c: &Cluster, i: usize) -> NodeStats {
    reqwest::get(format!("http://{}/stats", c.http(i)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bytes_are_reported_never_served_and_repaired_from_the_other_group() {
    let mut c = Cluster::start(&[NodeSpec::groups(&[1]), NodeSpec::groups(&[2])]).await;
    let all = c.client(0, &[1, 2], Checker::All).await;
    const SORTED: u64 = 120;
    const TOTAL: u64 = 180;
    for i in 0..SORTED {
        all.write(&key(i), value(i), IoAttr::default())
            .await
            .unwrap();
    }
    // Sort what is there (a sorted base with a sorted index), then write more into a fresh
    // unsorted base with a write-order index.
    let r = reqwest::Client::new()
        .post(format!(
            "http://{}/admin/backends/1/defrag-start",
            c.http(0)
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    c.wait_jobs().await;
    for i in SORTED..TOTAL {
        all.write(&key(i), value(i), IoAttr::default())
            .await
            .unwrap();
    }
    let engine = c.node(0).backend(1).unwrap().engine().unwrap();
    let lookup = |i: u64| engine.lookup(&eblob::Key(key(i).0)).unwrap();
    let dir = c.dirs(0)[0].clone();
    // Three victims: record data in the sorted base, an entry of the sorted index, an entry of
    // the open base's write-order index.
    let (k_data, k_sorted_index, k_index) = (7u64, 42u64, SORTED + 11);
    let data_hit = lookup(k_data);
    let sorted_index = files_ending(&dir, ".index.sorted");
    assert_eq!(sorted_index.len(), 1, "one sorted base: {sorted_index:?}");
    let unsorted_index: Vec<PathBuf> = files_ending(&dir, ".index")
        .into_iter()
        .filter(|p| entry_offset(p, &key(k_index)).is_some())
        .collect();
    assert_eq!(unsorted_index.len(), 1);
    drop(engine);
    c.stop_node(0).await;

    flip_byte(
        &data_hit.data_path,
        data_hit.data_offset_bytes + data_hit.data_size_bytes / 2,
    );
    // Byte 100 is inside the timestamp: the entry's checksum no longer matches.
    let at = entry_offset(&sorted_index[0], &key(k_sorted_index)).unwrap();
    flip_byte(&sorted_index[0], at + 100);
    let at = entry_offset(&unsorted_index[0], &key(k_index)).unwrap();
    flip_byte(&unsorted_index[0], at + 100);

    c.restart_node(0).await;
    c.converge().await;
    let s = stats(&c, 0).await;
    assert_eq!(
        s.backends[0].eblob.indexes_rebuilt, 2,
        "both damaged indexes (sorted and write-order) are rebuilt from the data file and \
         reported at startup: {:?}",
        s.backends[0].eblob
    );

    let g1 = group_client(&c, 1).await;
    let mut outcomes = BTreeMap::new();
    for i in 0..TOTAL {
        match g1.read(&key(i), 0, 0).await {
            Ok(r) => {
                assert!(r.data == value(i), "key {i}: wrong data served");
                outcomes.insert(i, Status::OK);
            }
            Err(e) => {
                outcomes.insert(i, e.status());
            }
        }
    }
    let failed: Vec<(u64, Status)> = outcomes
        .iter()
        .filter(|(_, s)| !s.is_ok())
        .map(|(k, s)| (*k, *s))
        .collect();
    // The data flip is found when the record is read. Both index entries are rebuilt from
    // the data file, which still holds their records intact, so those keys are served
    // (correctly): only the damaged record fails.
    assert_eq!(outcomes[&k_data], Status::CORRUPTED, "{failed:?}");
    assert_eq!(outcomes[&k_sorted_index], Status::OK, "{failed:?}");
    assert_eq!(outcomes[&k_index], Status::OK, "{failed:?}");
    assert_eq!(
        failed,
        vec![(k_data, Status::CORRUPTED)],
        "only the damaged record fails"
    );
    let s = stats(&c, 0).await;
    assert!(
        s.backends[0].eblob.corrupted >= 1,
        "the data flip is counted once read: {:?}",
        s.backends[0].eblob
    );
    // A client reading both groups never sees the damage: it falls back to group 2.
    for (k, _) in &failed {
        assert!(all.read(&key(*k), 0, 0).await.unwrap().data == value(*k));
    }

    let r = reqwest::Client::new()
        .post(format!("http://{}/admin/recovery", c.http(1)))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"kind": "dc", "verify": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    c.wait_jobs().await;
    // dc alone restores the damaged key: through the verifying lookups it finds the record
    // whose data bytes rotted under an intact header, which a plain lookup reports with the
    // same version as the intact copy.
    for i in 0..TOTAL {
        match g1.read(&key(i), 0, 0).await {
            Ok(r) => assert!(r.data == value(i), "key {i}: wrong data after dc"),
            Err(e) => panic!("key {i} after dc: {e} (before dc: {:?})", outcomes[&i]),
        }
    }
    c.shutdown().await;
}
