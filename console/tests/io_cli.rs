//! `ell put/get/rm/lookup/status/trace` through the real binary against a real in-process
//! cluster of four nodes in two groups: what the commands print, what they leave in the
//! cluster, and their exit codes (0 ok, 1 failure, 3 not found).

// Test drivers panic on failure: that is the report.
#![allow(clippy::unwrap_used)]

use std::process::Output;

use ellipsis_core::client::Checker;
use ellipsis_core::Id;
use ellipsis_tests::{Cluster, NodeSpec};

async fn ell(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ell"))
        .args(args)
        .env_remove("ELL_ADMIN_TOKEN")
        .env_remove("ELL_REMOTE")
        .env_remove("ELL_HTTP")
        .output()
        .await
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    text(&out.stdout)
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).unwrap()
}

async fn four_nodes() -> Cluster {
    Cluster::start(&[
        NodeSpec::groups(&[1]),
        NodeSpec::groups(&[1]),
        NodeSpec::groups(&[2]),
        NodeSpec::groups(&[2]),
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_lookup_rm_round_trip_through_every_group() {
    let c = four_nodes().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    let bytes: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&input, &bytes).unwrap();
    // Any node is a starting point: put through node 2, read through node 1.
    let via2 = c.addr(2).to_string();
    let via1 = c.addr(1).to_string();
    let put = json(
        &ell(&[
            "--remote",
            &via2,
            "--checker",
            "all",
            "--json",
            "put",
            "photos/cat.jpg",
            input.to_str().unwrap(),
        ])
        .await,
    );
    assert_eq!(put["size_bytes"], 70_000);
    let groups: Vec<(u64, bool)> = put["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["group"].as_u64().unwrap(), g["ok"].as_bool().unwrap()))
        .collect();
    assert_eq!(groups, [(1, true), (2, true)]);

    // The bytes are in both groups: check each group alone, through the client library too.
    let id = Id::for_key(b"", b"photos/cat.jpg");
    for g in [1, 2] {
        let client = c.client(0, &[g], Checker::All).await;
        assert_eq!(&client.read(&id, 0, 0).await.unwrap().data[..], &bytes[..]);
        let out = dir.path().join(format!("out-{g}.bin"));
        let said = ok(&ell(&[
            "--remote",
            &via1,
            "--groups",
            &g.to_string(),
            "get",
            "photos/cat.jpg",
            "-o",
            out.to_str().unwrap(),
        ])
        .await);
        assert!(said.contains(&format!("(group {g})")), "{said}");
        assert_eq!(std::fs::read(&out).unwrap(), bytes);
    }
    // Without -o the bytes go to stdout as they are.
    let out = ell(&["--remote", &via1, "get", "photos/cat.jpg"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, bytes);

    let found = json(&ell(&["--remote", &via1, "--json", "lookup", "photos/cat.jpg"]).await);
    assert_eq!(found["id"], id.to_string());
    for row in found["groups"].as_array().unwrap() {
        assert_eq!(row["status"], "OK", "{row}");
        assert_eq!(row["size_bytes"], 70_000);
    }

    let rm = json(&ell(&["--remote", &via2, "--json", "rm", "photos/cat.jpg"]).await);
    assert!(
        rm["groups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["ok"] == true),
        "{rm}"
    );
    // Gone: get and lookup say "not found" with exit code 3.
    let out = ell(&["--remote", &via1, "get", "photos/cat.jpg"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not found: photos/cat.jpg"));
    let out = ell(&["--remote", &via1, "lookup", "photos/cat.jpg"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_discovers_the_cluster_and_a_traced_get_names_its_call_tree() {
    let c = four_nodes().await;
    let seed = c.addr(3).to_string();
    // `--remote` only: the HTTP addresses come from the route table.
    let s = json(&ell(&["--remote", &seed, "--json", "status"]).await);
    assert_eq!(
        (s["nodes_up"].as_u64(), s["nodes_total"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(s["groups"], serde_json::json!([1, 2]));

    let put = ell(&["--remote", &seed, "put", "traced-key", "-"]).await;
    // stdin is empty (not a terminal under the test): an empty object is stored.
    ok(&put);
    let got = json(&ell(&["--remote", &seed, "--json", "get", "traced-key", "--trace"]).await);
    let id = got["trace_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 16);
    let shown = ok(&ell(&["--remote", &seed, "trace", &id]).await);
    assert!(shown.contains(&format!("trace {id}")), "{shown}");
    assert!(shown.contains("READ"), "{shown}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_a_failure_with_a_clear_message() {
    // A port nothing listens on: bound, then released.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    for args in [vec!["get", "k"], vec!["status"], vec!["rm", "k"]] {
        let mut all = vec!["--remote", addr.as_str(), "--timeout-ms", "2000"];
        all.extend(args.iter().copied());
        let out = ell(&all).await;
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("cannot reach the cluster"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_drives_the_cluster_on_one_or_more_client_threads() {
    let c = four_nodes().await;
    let remote = c.addr(0).to_string();
    for threads in ["1", "2"] {
        let report = json(
            &ell(&[
                "--remote",
                &remote,
                "--json",
                "bench",
                "--keys",
                "50",
                "--value-bytes",
                "512",
                "--concurrency",
                "4",
                "--read-ratio",
                "0.5",
                "--duration-s",
                "0.3",
                "--prefill",
                "--threads",
                threads,
            ])
            .await,
        );
        assert_eq!(report["errors"], 0, "{threads}: {report}");
        assert_eq!(report["not_found"], 0, "prefilled keys are found: {report}");
        assert!(report["writes"]["count"].as_u64().unwrap() > 0, "{report}");
        assert!(report["reads"]["count"].as_u64().unwrap() > 0, "{report}");
    }
    // The benched keys are really stored.
    let got = ell(&["--remote", &remote, "get", "bench-0"]).await;
    assert_eq!(got.stdout.len(), 512, "stderr: {}", text(&got.stderr));
    let bad = ell(&["--remote", &remote, "bench", "--threads", "0"]).await;
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    c.shutdown().await;
}
