//! `ell demo`: an embedded local cluster with a light workload, and the console on it.
//!
//! What it starts, all in this process: `--nodes` real nodes (`ellipsis_node::server::start`,
//! real TCP and HTTP on 127.0.0.1 with kernel-chosen ports) alternating between groups 1 and 2,
//! one backend each under one temporary directory; a random admin token handed to the nodes
//! and to the console's admin client in memory (never printed, never written to disk); a
//! process-wide react-trace tracer sampling [`TRACE_SAMPLING_RATE`] of requests; and a paced
//! read/write/remove load ([`loadgen::paced`]). Then it opens the live console on the cluster
//! (or, with `--once`, prints one frame after the first complete poll).
//!
//! What it is not: a way to run a real cluster (`ell-node` is), nor persistent: the data lives
//! only as long as the demo.
//!
//! Invariant: on every exit path that runs code (q, Ctrl-C, SIGTERM, SIGHUP, a start-up or
//! console error) the teardown runs in order: the load is stopped and drained, every node is
//! stopped gracefully, then the temporary directory is removed.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ellipsis_console::admin::AdminClient;
use ellipsis_console::app::App;
use ellipsis_console::loadgen::{self, LoadReport, PacedConfig};
use ellipsis_console::poll::{PollConfig, Poller};
use ellipsis_console::ui::render_to_text;
use ellipsis_core::client::{Client, ClientConfig};
use ellipsis_node::config::{BackendConfig, DefragConfig, DefragMode, NodeConfig, SyncSetting};
use ellipsis_node::server::RunningNode;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::{Fail, Global};

/// Share of requests the demo's tracer records as call trees.
pub const TRACE_SAMPLING_RATE: f64 = 0.02;
/// Call trees the demo's tracer keeps (all nodes share it).
const TRACE_RING: usize = 2_048;
/// How long `--once` waits for every node to answer a poll.
const ONCE_DEADLINE: Duration = Duration::from_secs(20);
/// Pause between polls while `--once` waits (the nodes are local: answers take milliseconds).
const ONCE_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Keys of the background load (all written once before the console opens).
const LOAD_KEYS: u64 = 1_000;
/// Bytes per value the load writes.
const LOAD_VALUE_BYTES: usize = 2_048;
/// Most nodes a demo starts (two cores should still show a responsive console).
const MAX_NODES: usize = 16;

/// `ell demo` options.
#[derive(Clone, Debug, Args)]
pub struct DemoArgs {
    /// Nodes to start (alternating groups 1 and 2).
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Requests per second of the background load (0: no load).
    #[arg(long, default_value_t = 200)]
    pub ops_per_s: u32,
    /// Print one frame once every node answered, then tear down (no terminal needed).
    #[arg(long)]
    pub once: bool,
    /// Frame width for `--once`.
    #[arg(long, default_value_t = 160)]
    pub width: u16,
    /// Frame height for `--once`.
    #[arg(long, default_value_t = 48)]
    pub height: u16,
    /// Poll interval of the console.
    #[arg(long, default_value_t = 1_000)]
    pub refresh_ms: u64,
    /// Where to create the demo's temporary directory (default: the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// The running demo cluster. Dropping it without [`Embedded::shutdown`] still removes the
/// directory (`TempDir`), but only `shutdown` stops the nodes gracefully first.
struct Embedded {
    nodes: Vec<RunningNode>,
    dir: tempfile::TempDir,
}

impl Embedded {
    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    fn http_addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|n| n.http_addr.map(|a| a.to_string()))
            .collect()
    }

    /// Stops every node gracefully, then removes the directory; reports what failed.
    async fn shutdown(self) -> Result<String, String> {
        let mut errors = Vec::new();
        let count = self.nodes.len();
        for n in self.nodes {
            let addr = n.addr;
            if let Err(e) = n.stop().await {
                errors.push(format!("node {addr}: {e}"));
            }
        }
        let path = self.dir.path().display().to_string();
        if let Err(e) = self.dir.close() {
            errors.push(format!("cannot remove {path}: {e}"));
        }
        if errors.is_empty() {
            Ok(format!("stopped {count} nodes, removed {path}"))
        } else {
            Err(errors.join("; "))
        }
    }
}

/// A random 256-bit admin token, hex.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The process tracer; `None` when another subscriber is already installed (the nodes then
/// run without call trees rather than failing).
fn install_tracer() -> Option<react_trace::Tracer> {
    let tracer = react_trace::Tracer::new(react_trace::TracerConfig {
        sampling_rate: TRACE_SAMPLING_RATE,
        ring_capacity: TRACE_RING,
        ..Default::default()
    })
    .ok()?;
    tracing_subscriber::registry()
        .with(tracer.layer())
        .try_init()
        .ok()?;
    Some(tracer)
}

/// Configuration of demo node `i`: group 1 or 2, small bases (so data-sort has several to
/// work on), a cache on every other node, and a mix of data-sort schedules. Nodes 0 and 1 are
/// in different groups with the same window, so the planner shows its overlap warning.
fn node_config(i: usize, dir: &Path, remotes: Vec<String>, token: &str) -> NodeConfig {
    let group = (i % 2) as u32 + 1;
    let defrag = match i % 4 {
        0 | 1 => DefragConfig {
            mode: DefragMode::Scheduled,
            time_hour: 3,
            splay_hours: 1,
            ..DefragConfig::default()
        },
        2 => DefragConfig {
            mode: DefragMode::Timed,
            timeout_s: 3_600,
            ..DefragConfig::default()
        },
        _ => DefragConfig::default(),
    };
    let mut backend = BackendConfig {
        id: 1,
        group,
        dir: dir.join(format!("node{i}-backend1")),
        ring_ids: 8,
        sync: SyncSetting::EverySeconds(1),
        blob_size_bytes: 4 << 20,
        records_in_blob: 2_000,
        // A demo in a nearly full temp dir should still start.
        min_free_space_bytes: 0,
        defrag,
        ..BackendConfig::default()
    };
    if i % 2 == 0 {
        backend.cache.size_bytes = 16 << 20;
    }
    NodeConfig {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        remotes,
        admin_token: Some(token.to_owned()),
        log_level: "off".into(),
        check_timeout_s: 5,
        blocking_threads: 4,
        trace_sampling_rate: TRACE_SAMPLING_RATE,
        trace_ring_size: TRACE_RING as u32,
        backends: vec![backend],
        ..NodeConfig::default()
    }
}

/// Starts `count` nodes under a new temporary directory in `parent` and converges routes.
async fn start_cluster(
    count: usize,
    parent: Option<&Path>,
    token: &str,
    tracer: Option<react_trace::Tracer>,
) -> anyhow::Result<Embedded> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("ell-demo-");
    let dir = match parent {
        Some(p) => builder.tempdir_in(p),
        None => builder.tempdir(),
    }
    .context("cannot create the demo directory")?;
    let mut cluster = Embedded {
        nodes: Vec::with_capacity(count),
        dir,
    };
    for i in 0..count {
        let remotes = cluster
            .nodes
            .first()
            .map(|n| vec![n.addr.to_string()])
            .unwrap_or_default();
        let config = node_config(i, cluster.dir.path(), remotes, token);
        let started = match config.validate() {
            Ok(()) => ellipsis_node::server::start(config, tracer.clone())
                .await
                .map_err(anyhow::Error::from),
            Err(e) => Err(anyhow::Error::from(e)),
        };
        match started {
            Ok(n) => cluster.nodes.push(n),
            Err(e) => {
                // Leave nothing behind: stop what started, remove the directory.
                let _ = cluster.shutdown().await;
                return Err(e.context(format!("demo node {i} did not start")));
            }
        }
    }
    // Every node joined node 0; a few exchange rounds spread the full route table to all
    // (the nodes' own refresh loop keeps it so afterwards).
    for _ in 0..3 {
        for n in &cluster.nodes {
            ellipsis_node::peers::refresh(&n.node).await;
        }
    }
    Ok(cluster)
}

/// The paced load and how to stop it.
struct Load {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<LoadReport>,
}

async fn start_load(addrs: Vec<SocketAddr>, ops_per_s: u32) -> Result<Option<Load>, String> {
    if ops_per_s == 0 {
        return Ok(None);
    }
    let client = Client::connect(ClientConfig {
        remotes: addrs,
        timeout_ms: 5_000,
        ..ClientConfig::default()
    })
    .await
    .map_err(|e| format!("load client: {e}"))?;
    // Write every key once first, so that reads mostly find something.
    let fill = loadgen::LoadConfig {
        keys: LOAD_KEYS,
        value_bytes: LOAD_VALUE_BYTES,
        concurrency: 16,
        read_ratio: 0.0,
        duration: Duration::from_secs(1),
        namespace: Vec::new(),
        seed: 0,
    };
    loadgen::prefill(Arc::clone(&client), &fill)
        .await
        .map_err(|e| format!("prefill: {e}"))?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let cfg = PacedConfig {
        keys: LOAD_KEYS,
        value_bytes: LOAD_VALUE_BYTES,
        ops_per_s,
        read_ratio: 0.6,
        remove_ratio: 0.1,
        max_in_flight: 32,
        namespace: Vec::new(),
        seed: 0xd3e0,
    };
    let task = tokio::spawn(loadgen::paced(Arc::clone(&client), cfg, stop_rx));
    Ok(Some(Load { stop, task }))
}

impl Load {
    async fn stop(self) -> Option<LoadReport> {
        let _ = self.stop.send(true);
        self.task.await.ok()
    }
}

/// Resolves on SIGINT, SIGTERM or SIGHUP (a closed terminal), so that those still tear the
/// cluster down; never resolves if the handlers cannot be installed.
fn signals() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let hup = signal(SignalKind::hangup());
    async move {
        match (term, hup) {
            (Ok(mut term), Ok(mut hup)) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
    }
}

/// Polls until every node answered (or the deadline passed); returns the app holding the
/// last model and whether all were up.
async fn first_full_poll(poller: &mut Poller, app: &mut App, nodes: usize) -> bool {
    let deadline = Instant::now() + ONCE_DEADLINE;
    loop {
        let model = poller.poll().await;
        let up = model.nodes_up();
        let total = model.nodes.len();
        app.on_model(model);
        if up == nodes && total == nodes {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(ONCE_POLL_INTERVAL).await;
    }
}

/// `ell demo`.
pub async fn demo(g: &Global, a: &DemoArgs) -> Result<(), Fail> {
    if !(2..=MAX_NODES).contains(&a.nodes) {
        return Err(Fail::usage(format!("--nodes must be 2..={MAX_NODES}")));
    }
    if a.once && (a.width < 20 || a.height < 5) {
        return Err(Fail::usage("--width must be ≥ 20 and --height ≥ 5"));
    }
    // Nodes take `ELLIPSIS_ADMIN_TOKEN` over their config's token; the console must then
    // present that one, or every admin action would be refused.
    let token = std::env::var(ellipsis_node::config::ADMIN_TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(random_token);
    let tracer = install_tracer();
    eprintln!(
        "ell demo: starting {} nodes in groups 1 and 2 on 127.0.0.1…",
        a.nodes
    );
    let cluster = start_cluster(a.nodes, a.dir.as_deref(), &token, tracer)
        .await
        .map_err(|e| Fail::failure(format!("{e:#}")))?;
    eprintln!("ell demo: data in {}", cluster.dir.path().display());
    let outcome = run(g, a, &cluster, token).await;
    let teardown = cluster.shutdown().await;
    let load_line = match &outcome {
        Ok(Some(r)) => format!(
            "load: {} requests, {} not found, {} errors",
            r.ops, r.not_found, r.errors
        ),
        _ => String::new(),
    };
    match (&teardown, load_line.is_empty()) {
        (Ok(text), true) => eprintln!("ell demo: {text}"),
        (Ok(text), false) => eprintln!("ell demo: {load_line}; {text}"),
        (Err(_), _) => {}
    }
    outcome?;
    teardown.map(|_| ()).map_err(Fail::failure)
}

/// Everything between start-up and teardown: the load, then the console or one frame.
async fn run(
    g: &Global,
    a: &DemoArgs,
    cluster: &Embedded,
    token: String,
) -> Result<Option<LoadReport>, Fail> {
    let load = start_load(cluster.addrs(), a.ops_per_s)
        .await
        .map_err(Fail::failure)?;
    let result = console(g, a, cluster, token).await;
    let report = match load {
        Some(l) => l.stop().await,
        None => None,
    };
    result.map(|()| report)
}

async fn console(g: &Global, a: &DemoArgs, cluster: &Embedded, token: String) -> Result<(), Fail> {
    let mut poller = Poller::new(PollConfig {
        seeds: cluster.http_addrs(),
        timeout_ms: g.timeout_ms.min(2_000),
        traces_per_node: 16,
        ..PollConfig::default()
    })
    .map_err(|e| Fail::failure(e.to_string()))?;
    let mut app = App::new(g.read_only, a.refresh_ms.clamp(250, 60_000));
    if a.once {
        let all_up = first_full_poll(&mut poller, &mut app, a.nodes).await;
        if all_up {
            // A second poll one interval later, so the frame shows rates, not zeros.
            tokio::time::sleep(Duration::from_millis(app.refresh_ms)).await;
            app.on_model(poller.poll().await);
        }
        print!("{}", render_to_text(&app, a.width, a.height));
        if !all_up {
            return Err(Fail::failure(format!(
                "not every node answered within {} s",
                ONCE_DEADLINE.as_secs()
            )));
        }
        return Ok(());
    }
    app.status = Some(format!(
        "demo: {} nodes, groups 1-2, ~{} ops/s of load; q quits and removes the cluster",
        a.nodes, a.ops_per_s
    ));
    let admin = AdminClient::new(Some(token), g.timeout_ms.min(10_000))
        .map_err(|e| Fail::failure(e.to_string()))?;
    crate::tui::run_until(app, poller, admin, signals())
        .await
        .map_err(|e| Fail::failure(format!("console: {e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn demo_configs_are_valid_and_alternate_groups() {
        let dir = Path::new("/nonexistent-demo");
        let configs: Vec<NodeConfig> = (0..4)
            .map(|i| node_config(i, dir, Vec::new(), &random_token()))
            .collect();
        for c in &configs {
            c.validate().expect("valid demo config");
        }
        let groups: Vec<u32> = configs.iter().map(|c| c.backends[0].group).collect();
        assert_eq!(groups, vec![1, 2, 1, 2]);
        let dirs: std::collections::HashSet<_> =
            configs.iter().map(|c| c.backends[0].dir.clone()).collect();
        assert_eq!(dirs.len(), 4, "every backend has its own directory");
    }
}
