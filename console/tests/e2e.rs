//! End-to-end: the real `ell` binary in a real terminal (tmux, 160×48) against a real local
//! cluster (four in-process nodes from `ellipsis-tests`, real TCP and HTTP on loopback).
//!
//! The test types keys as an operator would: it visits every view, schedules a data-sort
//! window through the editor and its confirmation, then runs a dc recovery as a dry run and
//! for real, and checks each effect twice: on the cluster over HTTP (the node's schedule, the
//! finished jobs, the copied keys) and on the screen. Last, a node is stopped: the console
//! must show it down in the overview, the events and the ring, and keep answering keys. Waiting is polling `capture-pane` for
//! the expected text with a deadline: the console is an external process.
//!
//! A second test closes the terminal under `ell demo` and checks that the demo still tears
//! its cluster down and removes its directory.
//!
//! tmux runs on a private socket (`tmux -L <unique>`) with no user config, and its server is
//! killed by a drop guard even when an assertion fails. Without tmux the test fails and says
//! so (CI installs it).

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ellipsis_core::client::Checker;
use ellipsis_core::protocol::IoAttr;
use ellipsis_core::stats::{BackendStats, DefragMode, JobKind, JobState, JobStatus};
use ellipsis_core::Id;
use ellipsis_tests::{Cluster, NodeSpec, TOKEN};

/// Longest wait for any one screen or cluster state.
const DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two looks at the screen or the cluster.
const POLL: Duration = Duration::from_millis(50);
/// Keys written to group 1 only, for dc recovery to copy to group 2.
const KEYS: usize = 40;

/// A tmux server of our own; killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, command: &str) -> Tmux {
        match Command::new("tmux").arg("-V").output() {
            Ok(o) if o.status.success() => {}
            _ => panic!(
                "tmux is required by the console end-to-end test and was not found on PATH \
                 (install it: apt-get install tmux)"
            ),
        }
        let tmux = Tmux {
            socket: format!("ell-e2e-{name}-{}", std::process::id()),
        };
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "48",
            "-s",
            "e2e",
            command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    /// Sends tmux key names (`Down`, `Enter`, `q`...), one argument each.
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "e2e"];
        args.extend_from_slice(keys);
        let out = self.run(&args);
        assert!(out.status.success(), "send-keys {keys:?} failed");
    }

    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "e2e"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            !text.contains(TOKEN),
            "the admin token is on screen:\n{text}"
        );
        text
    }

    /// Waits until the screen satisfies `ok`; returns it, or fails with the last screen.
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(POLL);
        }
    }

    fn wait_text(&self, text: &str) -> String {
        self.wait(&format!("{text:?}"), |s| s.contains(text))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn get_json<T: serde::de::DeserializeOwned>(rt: &tokio::runtime::Runtime, url: &str) -> T {
    rt.block_on(async {
        let resp = reqwest::get(url).await.expect("GET");
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        resp.json::<T>().await.expect("JSON")
    })
}

/// Waits until `check` holds for the cluster; fails with `what`.
fn wait_cluster(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn operator_session_in_tmux_schedules_data_sort_and_runs_dc_recovery() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let specs = [
        NodeSpec::groups(&[1]),
        NodeSpec::groups(&[2]),
        NodeSpec::groups(&[1]),
        NodeSpec::groups(&[2]),
    ];
    let mut cluster = rt.block_on(Cluster::start(&specs));
    // Keys in group 1 only: dc recovery must copy them to group 2.
    let ids: Vec<Id> = (0..KEYS)
        .map(|i| Id::for_key(b"", format!("e2e-{i}").as_bytes()))
        .collect();
    rt.block_on(async {
        let c = cluster.client(0, &[1], Checker::All).await;
        for id in &ids {
            c.write(id, Bytes::from_static(b"replicate me"), IoAttr::default())
                .await
                .expect("write to group 1");
        }
    });
    let n = cluster.nodes.len();
    let http: Vec<String> = (0..n).map(|i| cluster.http(i).to_string()).collect();
    let addrs: Vec<String> = (0..n).map(|i| cluster.addr(i).to_string()).collect();
    // The console sorts nodes by address: its first row and the node recovery runs from.
    let first = (0..n)
        .min_by_key(|&i| addrs[i].clone())
        .expect("nodes exist");

    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let command = format!(
        "{} --http {} --token-file {} top --refresh-ms 300; echo \"ell exited with $?\"; read done",
        shell_quote(env!("CARGO_BIN_EXE_ell")),
        http.join(","),
        shell_quote(&token_file.display().to_string()),
    );
    let tmux = Tmux::start("operator", &format!("sh -c {}", shell_quote(&command)));

    // Overview with every node up.
    tmux.wait("4/4 up and the node table", |s| {
        s.contains("4/4 up") && s.contains("Nodes (sort:")
    });
    // Every view, by number key.
    for (key, text) in [
        ("2", "Ring per group"),
        ("3", " Eblob backends "),
        ("6", "Actions"),
        ("7", "Events ("),
        ("1", "Nodes (sort:"),
    ] {
        tmux.keys(&[key]);
        tmux.wait_text(text);
    }
    tmux.keys(&["?"]);
    tmux.wait_text("any key closes this help");
    tmux.keys(&["Escape"]);
    tmux.wait("help closed", |s| !s.contains("any key closes this help"));

    // Data-sort: schedule the first backend at 05:00 ±1h through the editor.
    tmux.keys(&["4"]);
    tmux.wait_text(" Plan ");
    tmux.keys(&["e"]);
    tmux.wait_text("Data-sort schedule");
    // mode auto -> timed -> scheduled; next field; hour 03 -> 05; apply.
    tmux.keys(&["Right", "Right", "Down", "Right", "Right", "Enter"]);
    let asked = format!(
        "set data-sort of backend 1 on {} to scheduled at 05:00 ±1h UTC",
        addrs[first]
    );
    tmux.wait("the confirmation", |s| {
        s.contains("Confirm") && s.contains(&asked)
    });
    tmux.keys(&["y"]);
    tmux.wait_text(&format!("done: {asked}"));
    let backends: Vec<BackendStats> =
        get_json(&rt, &format!("http://{}/stats/backends", http[first]));
    let d = &backends[0].defrag;
    assert_eq!(
        (d.mode, d.time_hour, d.splay_hours),
        (DefragMode::Scheduled, 5, 1),
        "the node's schedule"
    );
    tmux.wait("the new window in the table and the plan", |s| {
        s.contains("05:00±1h") && s.contains(&format!("{} b1 g", addrs[first]))
    });

    // Recovery: `d` runs only a dry run (no confirmation); `D` runs a dry run again and,
    // once it ended on every node, asks to confirm the real run showing what would move.
    tmux.keys(&["5"]);
    tmux.wait_text("Jobs (");
    tmux.keys(&["d"]);
    tmux.wait_text(&format!(
        "done: dry run of dc recovery from {}",
        addrs[first]
    ));
    tmux.wait_text("result: dry run: would copy");
    tmux.keys(&["D"]);
    let confirm = tmux.wait("the recovery confirmation with the dry run's result", |s| {
        s.contains("Confirm")
            && s.contains(&format!("start dc recovery from {}", addrs[first]))
            && s.contains("dry run: would move")
    });
    // The keys are in group 1 only; the nodes holding them report what they would copy.
    assert!(
        confirm.contains(&format!("would move {KEYS} keys")),
        "{confirm}"
    );
    let g2_before = rt.block_on(async {
        let c = cluster.client(1, &[2], Checker::All).await;
        c.read(&ids[0], 0, 0).await.is_ok()
    });
    assert!(!g2_before, "nothing copied before the confirmation");
    tmux.keys(&["y"]);
    tmux.wait_text(&format!("done: start dc recovery from {}", addrs[first]));

    // On the cluster: every node ran its part of the real run to completion...
    wait_cluster("every node's dc recovery to finish", || {
        http.iter().all(|h| {
            let jobs: Vec<JobStatus> = get_json(&rt, &format!("http://{h}/stats/workers"));
            jobs.iter().any(|j| {
                j.kind == JobKind::RecoveryDc
                    && !j.target.contains("dry run")
                    && j.state == JobState::Done
            })
        })
    });
    // ...and group 2 now has every key.
    rt.block_on(async {
        let c = cluster.client(1, &[2], Checker::All).await;
        for id in &ids {
            c.read(id, 0, 0).await.expect("key copied to group 2");
        }
    });
    // On the screen: the first node's real job (row 3: its two dry runs are rows 1 and 2)
    // and its result.
    tmux.keys(&["Down", "Down"]);
    let screen = tmux.wait("the finished real run and its result", |s| {
        s.contains("result: copied")
            && s.lines()
                .any(|l| l.contains("recovery_dc ") && !l.contains("dry") && l.contains("done"))
    });
    assert!(screen.contains("Selected job"), "{screen}");

    // A node goes away: the console says so everywhere and keeps answering keys.
    let gone = (first + 1) % n;
    rt.block_on(cluster.stop_node(gone));
    tmux.keys(&["1"]);
    tmux.wait("3/4 up with the node marked DOWN", |s| {
        s.contains("3/4 up") && s.contains("DOWN")
    });
    tmux.keys(&["7"]);
    tmux.wait_text(&format!("node {} down", addrs[gone]));
    tmux.keys(&["2"]);
    tmux.wait_text("owner down: range unserved");

    // Quit: the console exits cleanly and gives the terminal back.
    tmux.keys(&["q"]);
    tmux.wait_text("ell exited with 0");
    drop(tmux);
    rt.block_on(cluster.shutdown());
}

#[test]
fn demo_tears_down_when_its_terminal_goes_away() {
    let parent = tempfile::tempdir().expect("temp dir");
    let command = format!(
        "{} demo --ops-per-s 50 --refresh-ms 300 --dir {}",
        shell_quote(env!("CARGO_BIN_EXE_ell")),
        shell_quote(&parent.path().display().to_string()),
    );
    let tmux = Tmux::start("demo", &command);
    tmux.wait("the demo's console with 4/4 up", |s| {
        s.contains("4/4 up") && s.contains("q quits and removes the cluster")
    });
    let entries = || std::fs::read_dir(parent.path()).expect("readable").count();
    assert_eq!(entries(), 1, "the demo's directory exists while it runs");
    // Closing the terminal hangs up on the demo (SIGHUP): it must stop its nodes and remove
    // its directory rather than die and leave them behind, or hang on the dead terminal.
    drop(tmux);
    wait_cluster("the demo to remove its directory", || entries() == 0);
}
