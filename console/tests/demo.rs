//! `ell demo --once` through the real binary: the embedded cluster comes up with every node
//! answering, one frame is printed, and the demo's directory is gone when it exits.

use std::process::Command;

#[test]
fn demo_once_shows_four_nodes_up_and_removes_its_directory() {
    let parent = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_ell"))
        .args([
            "demo", "--once", "--width", "160", "--height", "48", "--dir",
        ])
        .arg(parent.path())
        .output()
        .expect("ell runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("4/4 up"), "{stdout}");
    assert!(stdout.contains("nodes 4/4 up · groups 2"), "{stdout}");
    let up_rows = stdout
        .lines()
        .filter(|l| l.contains("127.0.0.1:") && l.contains(" up "))
        .count();
    assert_eq!(up_rows, 4, "{stdout}");
    // The load ran against the cluster and the teardown reported itself.
    assert!(stderr.contains("stopped 4 nodes, removed"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(parent.path())
        .expect("parent readable")
        .collect();
    assert!(left.is_empty(), "demo left {left:?} behind");
}

#[test]
fn demo_refuses_impossible_node_counts() {
    let out = Command::new(env!("CARGO_BIN_EXE_ell"))
        .args(["demo", "--once", "--nodes", "1"])
        .output()
        .expect("ell runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nodes must be"));
}
