//! Real `ell-node` processes for the node's integration tests: spawn from a TOML config on
//! loopback, wait until ready (with a deadline, by watching the startup line and polling the
//! HTTP port), `kill -9`, restart on the same ports and directories.
//!
//! Not an in-process harness (that is `ellipsis-tests`): these nodes are separate processes so a
//! SIGKILL really kills them mid-syscall. Invariants: every spawned child is killed when its
//! [`NodeProc`] drops (a failed test leaves no stray node); a node's ports and directories are
//! fixed after its first start, so a restart is the same node; each node's stdout and stderr go
//! to `node-N.log` in the cluster's temp dir (printed when a node fails to start).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ellipsis_node::config::{BackendConfig, NodeConfig, SyncSetting};

/// The admin token of every test node.
pub const TOKEN: &str = "process-test-admin-token";

/// How long a node may take to open its backends and answer HTTP.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// The `ell-node` binary cargo built for these tests.
pub fn ell_node_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ell-node"))
}

/// One node process (running or stopped) with its config.
#[derive(Debug)]
pub struct NodeProc {
    /// Index in the cluster.
    pub index: usize,
    /// Its configuration; ports are fixed after the first start.
    pub config: NodeConfig,
    /// Protocol address (known after the first start).
    pub addr: SocketAddr,
    /// HTTP address (known after the first start).
    pub http: SocketAddr,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl NodeProc {
    /// Whether the process is running (as far as we started and did not kill it).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The node's log so far (stdout and stderr of every run).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Start the process and wait until it serves (startup line, then HTTP `/stats`).
    pub fn start(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Err(format!("node {} already running", self.index));
        }
        let text = toml::to_string(&self.config).map_err(|e| format!("config to TOML: {e}"))?;
        std::fs::write(&self.config_path, text).map_err(|e| format!("write config: {e}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| format!("open log: {e}"))?;
        let stdout = log.try_clone().map_err(|e| format!("log: {e}"))?;
        let mut child = Command::new(ell_node_bin())
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn ell-node: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        // The reader copies stderr to the log and reports the startup line; it ends at EOF,
        // i.e. when the process dies, which also tells us a failed start.
        let (tx, rx) = mpsc::channel::<(SocketAddr, SocketAddr)>();
        let mut log_w = log;
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log_w, "{line}");
                if let Some(addrs) = parse_serving_line(&line) {
                    let _ = tx.send(addrs);
                }
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        let (addr, http) = match rx.recv_timeout(START_DEADLINE) {
            Ok(a) => a,
            Err(e) => {
                self.kill();
                return Err(format!(
                    "node {} did not start ({e}); log:\n{}",
                    self.index,
                    self.log()
                ));
            }
        };
        self.addr = addr;
        self.http = http;
        // Fixed from now on: a restart is the same node on the same ports.
        self.config.listen = vec![addr];
        self.config.http_listen = Some(http);
        wait_http_ready(http, deadline).map_err(|e| format!("node {}: {e}", self.index))
    }

    /// SIGKILL the process and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `ell-node: serving on ADDR (http ADDR)` → the two addresses.
pub fn parse_serving_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.strip_prefix("ell-node: serving on ")?;
    let (addr, rest) = rest.split_once(" (http ")?;
    let http = rest.strip_suffix(')')?;
    Some((addr.parse().ok()?, http.parse().ok()?))
}

/// Poll `GET /stats` until it answers 200 or the deadline passes (the node is another process:
/// there is nothing to wait on but its port).
pub fn wait_http_ready(http: SocketAddr, deadline: Instant) -> Result<(), String> {
    let mut last = String::new();
    while Instant::now() < deadline {
        match http_request(http, "GET", "/stats", None, None) {
            Ok((200, _)) => return Ok(()),
            Ok((code, body)) => last = format!("HTTP {code}: {body}"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("not ready before the deadline: {last}"))
}

/// A minimal blocking HTTP/1.1 request (no client runtime needed from sync code).
/// Returns the status code and the body.
pub fn http_request(
    http: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    json_body: Option<&str>,
) -> Result<(u16, String), String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&http, Duration::from_secs(2))
        .map_err(|e| format!("connect {http}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let body = json_body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if json_body.is_some() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad HTTP reply: {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A cluster of `ell-node` processes on loopback with temp dirs.
#[derive(Debug)]
pub struct ProcCluster {
    /// Nodes in start order.
    pub nodes: Vec<NodeProc>,
    dir: tempfile::TempDir,
}

impl ProcCluster {
    /// Start one node per entry of `groups` (each node gets one backend per listed group),
    /// each joining the ones started before it; then give every node every other node as a
    /// remote, so any of them can restart alone and find the cluster again.
    pub fn start(groups: &[&[u32]], tweak: impl Fn(&mut BackendConfig)) -> ProcCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes: Vec<NodeProc> = Vec::new();
        for (i, gs) in groups.iter().enumerate() {
            let backends = gs
                .iter()
                .enumerate()
                .map(|(j, &group)| {
                    let mut b = BackendConfig {
                        id: j as u32 + 1,
                        group,
                        dir: dir.path().join(format!("n{i}-b{}", j + 1)),
                        sync: SyncSetting::Always,
                        min_free_space_bytes: 0,
                        ..BackendConfig::default()
                    };
                    b.cache.size_bytes = 0;
                    tweak(&mut b);
                    b
                })
                .collect();
            let config = NodeConfig {
                listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
                http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                remotes: nodes.iter().map(|n| n.addr.to_string()).collect(),
                admin_token: Some(TOKEN.into()),
                log_level: "warn".into(),
                // Dead peers are retried and routes refreshed every second.
                check_timeout_s: 1,
                wait_timeout_ms: 2_000,
                blocking_threads: 4,
                backends,
                ..NodeConfig::default()
            };
            let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
            let mut n = NodeProc {
                index: i,
                config,
                addr: unbound,
                http: unbound,
                config_path: dir.path().join(format!("node-{i}.toml")),
                log_path: dir.path().join(format!("node-{i}.log")),
                child: None,
            };
            n.start().expect("node starts");
            nodes.push(n);
        }
        let all: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
        for n in &mut nodes {
            n.config.remotes = all
                .iter()
                .filter(|a| **a != n.addr)
                .map(|a| a.to_string())
                .collect();
        }
        ProcCluster { nodes, dir }
    }

    /// Protocol addresses of every node.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    /// The temp dir holding configs, logs and backends.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
