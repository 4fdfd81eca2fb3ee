//! `ell backend`, `ell defrag status` and `ell recover` through the real binary against a real
//! in-process cluster (`ellipsis-tests`): the command changes what the nodes do, and recovery
//! shows a progress bar until its job ends.

// Test drivers panic on failure: that is the report.
#![allow(clippy::unwrap_used)]

use std::process::Output;

use bytes::Bytes;
use ellipsis_core::client::Checker;
use ellipsis_core::protocol::{IoAttr, Status};
use ellipsis_core::stats::{JobKind, JobState, JobStatus};
use ellipsis_core::Id;
use ellipsis_tests::{Cluster, NodeSpec, TOKEN};

async fn ell(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ell"))
        .args(args)
        .env("ELL_ADMIN_TOKEN", TOKEN)
        .env_remove("ELL_REMOTE")
        .env_remove("ELL_HTTP")
        .output()
        .await
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn key(i: u64) -> Id {
    Id::for_key(b"", format!("cli-{i}").as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_commands_switch_read_only_and_enabled_state() {
    let c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let remote = c.addr(0).to_string();
    let client = c.client(0, &[1], Checker::All).await;
    let run = |action: &'static str, json: bool| {
        let remote = remote.clone();
        async move {
            let mut args = vec![
                "--remote",
                &remote,
                "backend",
                action,
                "--node",
                &remote,
                "--backend",
                "1",
            ];
            if json {
                args.push("--json");
            }
            let out = ell(&args).await;
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            out
        }
    };
    let out = run("ro", true).await;
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (reply["ok"].as_bool(), reply["action"].as_str()),
        (Some(true), Some("read-only"))
    );
    let refused = client
        .write(&key(1), Bytes::from_static(b"x"), IoAttr::default())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("READ_ONLY"), "{refused}");
    run("rw", false).await;
    client
        .write(&key(1), Bytes::from_static(b"x"), IoAttr::default())
        .await
        .unwrap();
    run("disable", false).await;
    assert!(c.node(0).backend(1).unwrap().engine().is_err(), "closed");
    run("enable", false).await;
    assert_eq!(
        &client.read(&key(1), 0, 0).await.unwrap().data[..],
        b"x",
        "reopened with its data"
    );
    // A backend that does not exist: exit 1 with the node's reason.
    let out = ell(&[
        "--remote",
        &remote,
        "backend",
        "ro",
        "--node",
        &remote,
        "--backend",
        "9",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("backend 9"),
        "{}",
        text(&out.stderr)
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_shows_progress_until_the_job_ends_and_json_prints_the_final_job() {
    let c = Cluster::start(&[NodeSpec::groups(&[1]), NodeSpec::groups(&[2])]).await;
    let remote = c.addr(0).to_string();
    let g1 = c.client(0, &[1], Checker::All).await;
    for i in 0..50 {
        g1.write(&key(i), Bytes::from(format!("v{i}")), IoAttr::default())
            .await
            .unwrap();
    }
    // Dry run with a bar on stderr: the job (on the node holding the keys) is followed to its
    // end.
    let out = ell(&[
        "--remote",
        &remote,
        "recover",
        "dc",
        "--dry-run",
        "--node",
        &remote,
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let bar = text(&out.stderr);
    assert!(bar.contains("100%") && bar.contains("50/50 keys"), "{bar}");
    assert!(text(&out.stdout).contains("Done"), "{}", text(&out.stdout));
    let g2 = c.client(0, &[2], Checker::All).await;
    assert_eq!(
        g2.read(&key(0), 0, 0).await.unwrap_err().status(),
        Status::NOT_FOUND,
        "a dry run copies nothing"
    );

    let out = ell(&[
        "--remote", &remote, "--json", "recover", "dc", "--node", &remote,
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let job: JobStatus = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((job.kind, job.state), (JobKind::RecoveryDc, JobState::Done));
    let result: serde_json::Value = serde_json::from_str(job.result.as_deref().unwrap()).unwrap();
    assert_eq!(result["copied"], 50, "{result}");
    assert!(
        !text(&out.stderr).contains('['),
        "no bar with --json: {}",
        text(&out.stderr)
    );
    for i in 0..50 {
        assert_eq!(
            g2.read(&key(i), 0, 0).await.unwrap().data,
            Bytes::from(format!("v{i}"))
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defrag_status_reports_the_schedule_without_a_token() {
    let c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let remote = c.addr(0).to_string();
    let out = ell(&[
        "--remote",
        &remote,
        "defrag",
        "schedule",
        &remote,
        "1",
        "--mode",
        "timed",
        "--timeout-s",
        "600",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ell"))
        .args([
            "--remote", &remote, "--json", "defrag", "status", &remote, "1",
        ])
        .env_remove("ELL_ADMIN_TOKEN")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(b["id"], 1);
    assert_eq!(b["defrag"]["mode"], "timed", "{b}");
    assert_eq!(b["defrag"]["timeout_s"], 600, "{b}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defrag_start_runs_a_data_sort_on_a_real_node_and_stop_is_idempotent() {
    let c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let client = c.client(0, &[1], Checker::All).await;
    for i in 0..20 {
        client
            .write(&key(i), Bytes::from(format!("v{i}")), IoAttr::default())
            .await
            .unwrap();
    }
    let remote = c.addr(0).to_string();
    let defrag = |action: &'static str| {
        let remote = remote.clone();
        async move {
            let out = ell(&[
                "--remote", &remote, "--json", "defrag", action, &remote, "1",
            ])
            .await;
            assert_eq!(
                out.status.code(),
                Some(0),
                "{action}: {}",
                text(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                (v["ok"].as_bool(), v["backend"].as_u64()),
                (Some(true), Some(1)),
                "{v}"
            );
        }
    };
    defrag("start").await;
    // The sort is a job on the node; wait for it on the node itself.
    let node = c.node(0).clone();
    let job = tokio::task::spawn_blocking(move || {
        let id = node
            .workers
            .list()
            .into_iter()
            .find(|j| j.kind == JobKind::DataSort)
            .expect("a data-sort job")
            .id;
        node.workers.wait(id, std::time::Duration::from_secs(30))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(job.state, JobState::Done, "{job:?}");
    // Nothing is running now: stopping is not an error.
    defrag("stop").await;
    for i in 0..20 {
        assert_eq!(
            client.read(&key(i), 0, 0).await.unwrap().data,
            Bytes::from(format!("v{i}"))
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_top_once_discover_real_nodes_from_one_remote() {
    let c = Cluster::start(&[NodeSpec::groups(&[1]), NodeSpec::groups(&[2])]).await;
    let remote = c.addr(0).to_string();
    // `ell status` finds both nodes from one protocol address (route list, then HTTP).
    let out = ell(&["--remote", &remote, "--json", "status"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (s["nodes_up"].as_u64(), s["nodes_total"].as_u64()),
        (Some(2), Some(2))
    );
    // Capacity comes from the nodes' statvfs of their backend directories.
    let free = s["capacity"]["free_bytes"].as_u64().unwrap();
    assert!(
        free > 0,
        "a real node reports its filesystem's free bytes: {s}"
    );
    for n in s["nodes"].as_array().unwrap() {
        let b = &n["backends"][0];
        assert!(b["free_bytes"].as_u64().unwrap() > 0, "{b}");
        assert!(
            b["fs_total_bytes"].as_u64().unwrap() >= b["free_bytes"].as_u64().unwrap(),
            "{b}"
        );
        // The harness runs 8 blocking threads: the engine queue is the blocking pool.
        assert_eq!(n["queue"]["engine_threads"], 8, "{n}");
    }

    // `ell top --once` and bare `ell --once` print the same overview of the same cluster.
    let top = ell(&["--remote", &remote, "top", "--once", "--width", "100"]).await;
    assert_eq!(top.status.code(), Some(0), "{}", text(&top.stderr));
    let bare = ell(&["--remote", &remote, "--once", "--width", "100"]).await;
    assert_eq!(bare.status.code(), Some(0), "{}", text(&bare.stderr));
    for frame in [text(&top.stdout), text(&bare.stdout)] {
        assert!(frame.contains("2/2 up"), "{frame}");
        assert!(frame.contains(&remote), "{frame}");
        assert!(frame.contains(&c.addr(1).to_string()), "{frame}");
        assert!(!frame.contains("free 0B"), "{frame}");
    }
    // The node view shows the real pool: 8 threads.
    let node = ell(&["--remote", &remote, "--once", "--view", "node"]).await;
    assert_eq!(node.status.code(), Some(0), "{}", text(&node.stderr));
    let frame = text(&node.stdout);
    assert!(frame.contains("running, 0/"), "{frame}");
    assert!(
        frame
            .lines()
            .any(|l| l.contains("engine ") && l.contains("/8 running")),
        "{frame}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_follows_every_nodes_job_and_passes_its_filters() {
    let c = Cluster::start(&[NodeSpec::groups(&[1]), NodeSpec::groups(&[2])]).await;
    let remote = c.addr(0).to_string();
    let at = |sec| IoAttr {
        ts_sec: sec,
        ..IoAttr::default()
    };
    let g1 = c.client(0, &[1], Checker::All).await;
    let g2 = c.client(0, &[2], Checker::All).await;
    // Old and new keys in group 1 only, new keys in group 2 only: the node of group 2 has
    // its own copying to do, and the command must wait for it too.
    for i in 0..20 {
        g1.write(&key(i), Bytes::from(format!("a{i}")), at(100))
            .await
            .unwrap();
    }
    for i in 20..40 {
        g1.write(&key(i), Bytes::from(format!("a{i}")), at(300))
            .await
            .unwrap();
    }
    for i in 40..60 {
        g2.write(&key(i), Bytes::from(format!("b{i}")), at(300))
            .await
            .unwrap();
    }
    let out = ell(&[
        "--remote",
        &remote,
        "recover",
        "dc",
        "--node",
        &remote,
        "--since",
        "200",
        "--batch",
        "3",
        "--rate-limit",
        "10M",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("1 more on other nodes"), "{stdout}");
    assert_eq!(stdout.matches(": Done:").count(), 2, "{stdout}");
    // One bar over both jobs: its last state counts the records of both nodes (60, plus any
    // the group 2 job had copied to group 1 before the group 1 job counted its records).
    let bar = text(&out.stderr);
    let last = bar.rsplit('[').next().unwrap();
    let keys = last
        .split_whitespace()
        .find(|w| w.contains('/'))
        .unwrap()
        .split_once('/')
        .unwrap();
    let (done, total): (u64, u64) = (keys.0.parse().unwrap(), keys.1.parse().unwrap());
    assert!(done == total && total >= 60, "{bar}");
    assert!(last.contains("100%") && last.contains("Done"), "{bar}");
    // Done means done everywhere: both directions copied when the command returns, and only
    // the records at or after --since.
    for i in 20..40 {
        assert_eq!(g2.read(&key(i), 0, 0).await.unwrap().data, format!("a{i}"));
    }
    for i in 40..60 {
        assert_eq!(g1.read(&key(i), 0, 0).await.unwrap().data, format!("b{i}"));
    }
    for i in 0..20 {
        assert_eq!(
            g2.read(&key(i), 0, 0).await.unwrap_err().status(),
            Status::NOT_FOUND
        );
    }
    // --key-range: exactly the old keys inside it (inclusive), by id order.
    let mut old: Vec<(Id, u64)> = (0..20).map(|i| (key(i), i)).collect();
    old.sort();
    let range = format!("{}:{}", old[3].0, old[7].0);
    let out = ell(&[
        "--remote",
        &remote,
        "--json",
        "recover",
        "dc",
        "--node",
        &remote,
        "--key-range",
        &range,
        "--verify",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["jobs"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["fanned_out"].as_array().unwrap().len(), 1, "{v}");
    let copied: Vec<u64> = {
        let mut found = Vec::new();
        for i in 0..20 {
            if g2.read(&key(i), 0, 0).await.is_ok() {
                found.push(i);
            }
        }
        found
    };
    let mut expected: Vec<u64> = old[3..8].iter().map(|x| x.1).collect();
    expected.sort_unstable();
    assert_eq!(copied, expected);
    // Bad flag values are usage errors.
    for bad in [["--rate-limit", "fast"], ["--key-range", "00:zz"]] {
        let out = ell(&["--remote", &remote, "recover", "dc", bad[0], bad[1]]).await;
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_merge_safe_keeps_the_old_copies() {
    let mut c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let remote = c.addr(0).to_string();
    let client = c.client(0, &[1], Checker::All).await;
    for i in 0..30 {
        client
            .write(&key(i), Bytes::from(format!("m{i}")), IoAttr::default())
            .await
            .unwrap();
    }
    let n = c.add_node(&NodeSpec::groups(&[1])).await;
    c.converge().await;
    client.refresh_routes().await.unwrap();
    let moved: Vec<u64> = (0..30)
        .filter(|i| client.routes().owner(1, &key(*i)).unwrap().node == c.addr(n))
        .collect();
    assert!(!moved.is_empty());
    let out = ell(&[
        "--remote", &remote, "recover", "merge", "--node", &remote, "--safe",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let old = c.node(0).backend(1).unwrap().engine().unwrap();
    for i in &moved {
        assert_eq!(
            client.read(&key(*i), 0, 0).await.unwrap().data,
            format!("m{i}")
        );
    }
    assert_eq!(
        old.stats().total.live_records,
        30,
        "every copy kept at the source"
    );
    c.shutdown().await;
}
