//! The node's two ways in besides `ell-node --config`: the library's `Server::run` (what an
//! embedding program calls) and `ell-node`'s quick-start flags.
//!
//! One test binary of its own: `Server::run` installs the process's `tracing` subscriber, so
//! no other test may share this process's.

// Test drivers panic on failure: that is the report.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ellipsis_core::client::Conn;
use ellipsis_core::protocol::cmd::io::IoPayload;
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{Command as Cmd, Header, IoAttr};
use ellipsis_core::Id;
use ellipsis_node::config::{BackendConfig, NodeConfig, SyncSetting};
use ellipsis_node::server::Server;
use react_trace::{ReactAction, ReactTree};

const TIMEOUT: Duration = Duration::from_secs(10);

fn names(a: &ReactAction, out: &mut Vec<String>) {
    for c in &a.actions {
        out.push(c.name.clone());
        names(c, out);
    }
}

/// Every action name in node `http`'s tree `id`.
async fn actions(http: SocketAddr, id: u64) -> Vec<String> {
    let r = reqwest::get(format!("http://{http}/traces/{id:016x}"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "tree {id:016x}");
    let tree: ReactTree = r.json().await.unwrap();
    let mut out = vec![tree.actions[0].name.clone()];
    names(&tree.actions[0], &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_run_serves_and_samples_call_trees_at_the_configured_rate() {
    let dir = tempfile::tempdir().unwrap();
    // Server::run binds the HTTP address itself: a port just seen free.
    let http: SocketAddr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let config = NodeConfig {
        http_listen: Some(http),
        // Every request is sampled by the node's own rate: no trace bit is sent below.
        trace_sampling_rate: 1.0,
        backends: vec![BackendConfig {
            id: 1,
            group: 1,
            dir: dir.path().join("b1"),
            sync: SyncSetting::Never,
            ..BackendConfig::default()
        }],
        ..NodeConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(Server::run(listener, config, async move {
        let _ = stopped.await;
    }));
    let conn = Conn::connect(addr, 1 << 20, TIMEOUT).await.unwrap();
    let k = Id::for_key(b"entry", b"run");
    let payload = IoPayload {
        attr: IoAttr {
            size: 5,
            ..IoAttr::default()
        },
        data: Bytes::from_static(b"hello"),
    };
    let written = conn
        .call(
            Header::request(Cmd::Write, k, 1, 0),
            payload.encode(),
            TIMEOUT,
        )
        .await
        .unwrap();
    let looked_up = conn
        .call(Header::request(Cmd::Lookup, k, 1, 0), Bytes::new(), TIMEOUT)
        .await
        .unwrap();
    let write = actions(http, written.header.trace_id).await;
    assert!(
        ["WRITE", "network.receive", "eblob.write", "reply"]
            .iter()
            .all(|x| write.iter().any(|n| n == x)),
        "{write:?}"
    );
    let lookup = actions(http, looked_up.header.trace_id).await;
    assert!(
        ["LOOKUP", "eblob.lookup", "reply"]
            .iter()
            .all(|x| lookup.iter().any(|n| n == x)),
        "{lookup:?}"
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[test]
fn quick_start_flags_run_a_node_without_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "flag-admin-token-31c7\n").unwrap();
    let backend = format!("{}:7", dir.path().join("b1").display());
    let mut child = Command::new(common::ell_node_bin())
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--backend", &backend, "--log-level", "warn"])
        .arg("--admin-token-file")
        .arg(&token_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its output as it comes: the startup line on stderr, log lines on stdout (the channel
    // ends when the process does).
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
    let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
    for stream in [stdout, stderr] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let next_line_with = |what: &dyn Fn(&str) -> bool| -> Option<String> {
        let deadline = Instant::now() + common::START_DEADLINE;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(l) if what(&l) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    };
    // The startup line names the bound ports.
    let serving = next_line_with(&|l| common::parse_serving_line(l).is_some());
    let Some((_addr, http)) = serving.and_then(|l| common::parse_serving_line(&l)) else {
        let _ = child.kill();
        panic!("ell-node exited before serving");
    };
    common::wait_http_ready(http, Instant::now() + common::START_DEADLINE).unwrap();
    let (code, body) = common::http_request(http, "GET", "/stats/backends", None, None).unwrap();
    assert_eq!(code, 200, "{body}");
    let backends: Vec<ellipsis_core::stats::BackendStats> = serde_json::from_str(&body).unwrap();
    assert_eq!(backends.len(), 1, "{body}");
    assert_eq!((backends[0].id, backends[0].group), (1, 7));
    // The token came from the file (trimmed): writes over HTTP need exactly it.
    let put = |token| common::http_request(http, "PUT", "/objects/k", Some(token), Some("{}"));
    assert_eq!(put("flag-admin-token-31c7").unwrap().0, 201);
    assert_eq!(put("another-token-entirely").unwrap().0, 401);
    // At --log-level warn an admin operation still leaves its audit line.
    let (code, body) = common::http_request(
        http,
        "PUT",
        "/admin/backends/1/delay",
        Some("flag-admin-token-31c7"),
        Some("{\"delay_ms\": 0}"),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let audit = next_line_with(&|l| l.contains("admin operation") && l.contains("delay"));
    let audit = audit.expect("no audit line for the delay change");
    assert!(audit.contains("\"ok\""), "{audit}");
    // Not a terminal: plain text, no colour codes in the log.
    assert!(!audit.contains('\u{1b}'), "{audit:?}");
    let _ = child.kill();
    let _ = child.wait();

    // Flags that cannot make a node are refused with a reason and exit code 2.
    for (args, reason) in [
        (
            vec!["--backend", "no-group-here"],
            "--backend wants DIR:GROUP",
        ),
        (vec!["--backend", "/tmp/x:seven"], "group must be a number"),
        (vec!["--listen", "127.0.0.1:0"], "no backends"),
    ] {
        let out = Command::new(common::ell_node_bin())
            .args(&args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains(reason), "{args:?}: {text}");
    }
}
