//! `ellipsis-tests`: a harness that runs real Ellipsis clusters in-process on 127.0.0.1 with
//! temporary directories. The integration tests live in `tests/tests/`, one binary.
//!
//! Nodes are real servers (`ellipsis_node::server::start`) on loopback ports chosen by the
//! kernel, talking real TCP and HTTP. Route convergence is driven explicitly
//! ([`Cluster::converge`] runs the join/refresh rounds) instead of waiting for timers, so tests
//! never sleep for synchronisation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use ellipsis_core::client::{Checker, Client, ClientConfig};
use ellipsis_core::stats::{JobState, JobStatus};
use ellipsis_node::config::{BackendConfig, NodeConfig, SyncSetting};
use ellipsis_node::node::Node;
use ellipsis_node::server::{RunningNode, StartOptions};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub mod proxy;

/// The admin token every test node uses.
pub const TOKEN: &str = "test-admin-token";

/// The process-wide tracer (one subscriber per process; nodes filter trees by address).
pub fn tracer() -> react_trace::Tracer {
    static T: OnceLock<react_trace::Tracer> = OnceLock::new();
    T.get_or_init(|| {
        let t = react_trace::Tracer::new(react_trace::TracerConfig {
            ring_capacity: 4096,
            ..Default::default()
        })
        .expect("tracer config");
        let filter = tracing_subscriber::EnvFilter::try_from_env("ELLIPSIS_TEST_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
        use tracing_subscriber::Layer;
        let _ = tracing_subscriber::registry()
            .with(t.layer())
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(filter),
            )
            .try_init();
        t
    })
    .clone()
}

/// One node of a test cluster.
#[derive(Debug)]
pub struct TestNode {
    /// Its configuration (dirs and ports kept across restarts).
    pub config: NodeConfig,
    /// Running server, `None` while stopped.
    pub running: Option<RunningNode>,
    /// The seams it was started with (clock, engine IO hook), kept for restarts.
    pub options: StartOptions,
}

/// A cluster of nodes in this process.
#[derive(Debug)]
pub struct Cluster {
    /// Nodes in start order.
    pub nodes: Vec<TestNode>,
    dir: tempfile::TempDir,
    next_backend_dir: usize,
}

/// How to configure one node: the group of each of its backends.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// One backend per entry, in this group.
    pub groups: Vec<u32>,
    /// Cache size per backend (0 = none).
    pub cache_bytes: u64,
}

impl NodeSpec {
    /// Backends in these groups, no cache.
    pub fn groups(groups: &[u32]) -> NodeSpec {
        NodeSpec {
            groups: groups.to_vec(),
            cache_bytes: 0,
        }
    }
}

impl Cluster {
    /// Start nodes per `specs`, each joining the first, and converge the routes.
    pub async fn start(specs: &[NodeSpec]) -> Cluster {
        tracer();
        let mut c = Cluster {
            nodes: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            next_backend_dir: 0,
        };
        for s in specs {
            c.add_node(s).await;
        }
        c.converge().await;
        c
    }

    fn node_config(&mut self, spec: &NodeSpec) -> NodeConfig {
        let remotes = self
            .nodes
            .first()
            .and_then(|n| n.running.as_ref())
            .map(|r| vec![r.addr.to_string()])
            .unwrap_or_default();
        let backends = spec
            .groups
            .iter()
            .enumerate()
            .map(|(i, &group)| {
                self.next_backend_dir += 1;
                let mut b = BackendConfig {
                    id: i as u32 + 1,
                    group,
                    dir: self.dir.path().join(format!("b{}", self.next_backend_dir)),
                    ring_ids: 8,
                    sync: SyncSetting::Never,
                    min_free_space_bytes: 0,
                    ..BackendConfig::default()
                };
                b.cache.size_bytes = spec.cache_bytes;
                b
            })
            .collect();
        NodeConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            remotes,
            admin_token: Some(TOKEN.into()),
            check_timeout_s: 3600,
            wait_timeout_ms: 5_000,
            blocking_threads: 8,
            backends,
            ..NodeConfig::default()
        }
    }

    /// Start one more node (joining the first) and return its index; call
    /// [`Cluster::converge`] to spread its routes.
    pub async fn add_node(&mut self, spec: &NodeSpec) -> usize {
        self.add_node_with(spec, |_| {}).await
    }

    /// [`Cluster::add_node`] with the config adjusted by `tweak` first. A node given an
    /// `advertise_addr` needs a fixed listen port (the harness cannot see the bound one).
    pub async fn add_node_with(
        &mut self,
        spec: &NodeSpec,
        tweak: impl FnOnce(&mut NodeConfig),
    ) -> usize {
        self.add_node_opts(spec, tweak, StartOptions::default())
            .await
    }

    /// [`Cluster::add_node_with`], started with `options` (an injected clock, an engine IO
    /// hook); the tracer is the harness's. Restarts reuse them.
    pub async fn add_node_opts(
        &mut self,
        spec: &NodeSpec,
        tweak: impl FnOnce(&mut NodeConfig),
        options: StartOptions,
    ) -> usize {
        let mut config = self.node_config(spec);
        tweak(&mut config);
        let options = StartOptions {
            tracer: Some(tracer()),
            ..options
        };
        let running = ellipsis_node::server::start_with(config.clone(), options.clone())
            .await
            .expect("node starts");
        // Keep the chosen ports for restarts.
        if config.advertise_addr.is_none() {
            config.listen = vec![running.addr];
        }
        config.http_listen = running.http_addr;
        self.nodes.push(TestNode {
            config,
            running: Some(running),
            options,
        });
        self.nodes.len() - 1
    }

    /// Run route exchange rounds on every running node until all agree (bounded rounds).
    pub async fn converge(&self) {
        for _ in 0..3 {
            for n in self.nodes.iter().filter_map(|n| n.running.as_ref()) {
                ellipsis_node::peers::refresh(&n.node).await;
            }
        }
    }

    /// Protocol address of node `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].config.listen[0]
    }

    /// HTTP address of node `i`.
    pub fn http(&self, i: usize) -> SocketAddr {
        self.nodes[i].config.http_listen.expect("http on")
    }

    /// Node `i`'s Prometheus text, fetched over HTTP.
    pub async fn metrics(&self, i: usize) -> String {
        reqwest::get(format!("http://{}/metrics", self.http(i)))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("/metrics body")
    }

    /// Shared state of running node `i`.
    pub fn node(&self, i: usize) -> &Arc<Node> {
        &self.nodes[i].running.as_ref().expect("running").node
    }

    /// Backend directories of node `i`.
    pub fn dirs(&self, i: usize) -> Vec<PathBuf> {
        self.nodes[i]
            .config
            .backends
            .iter()
            .map(|b| b.dir.clone())
            .collect()
    }

    /// Stop node `i` gracefully.
    pub async fn stop_node(&mut self, i: usize) {
        if let Some(r) = self.nodes[i].running.take() {
            r.stop().await.expect("clean stop");
        }
    }

    /// Start node `i` again on its old ports and dirs.
    pub async fn restart_node(&mut self, i: usize) {
        let cfg = self.nodes[i].config.clone();
        let running = ellipsis_node::server::start_with(cfg, self.nodes[i].options.clone())
            .await
            .expect("node restarts");
        self.nodes[i].running = Some(running);
    }

    /// A client connected through node `via`, using `groups` (empty = all).
    pub async fn client(&self, via: usize, groups: &[u32], checker: Checker) -> Arc<Client> {
        Client::connect(ClientConfig {
            remotes: vec![self.addr(via)],
            groups: groups.to_vec(),
            checker,
            timeout_ms: 5_000,
            admin_token: Some(TOKEN.into()),
            ..ClientConfig::default()
        })
        .await
        .expect("client connects")
    }

    /// Send BACKEND_CONTROL `action` for backend 1 of node `i` (with the admin token).
    pub async fn backend_control(
        &self,
        i: usize,
        action: ellipsis_core::protocol::cmd::backend_control::BackendAction,
    ) {
        use ellipsis_core::protocol::cmd::backend_control::BackendControl;
        use ellipsis_core::protocol::cmd::Payload;
        use ellipsis_core::protocol::{Command, Header};
        let client = self.client(i, &[], Checker::All).await;
        let ctl = BackendControl { backend: 1, action };
        let h = Header::request(Command::BackendControl, ellipsis_core::Id::ZERO, 0, 0);
        client
            .call_node(self.addr(i), h, ctl.encode())
            .await
            .expect("BACKEND_CONTROL accepted");
    }

    /// Job ids per node (empty for a stopped node), to tell later jobs apart with
    /// [`Cluster::wait_jobs_since`].
    pub fn job_ids(&self) -> Vec<Vec<u64>> {
        self.nodes
            .iter()
            .map(|n| {
                n.running
                    .as_ref()
                    .map(|r| r.node.workers.list().iter().map(|j| j.id).collect())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Wait for every background job on every running node to end; panics unless each one
    /// ended `Done` (within 60 s).
    pub async fn wait_jobs(&self) -> Vec<JobStatus> {
        self.wait_jobs_since(&[]).await
    }

    /// [`Cluster::wait_jobs`] for the jobs not listed in `before` (from [`Cluster::job_ids`]).
    pub async fn wait_jobs_since(&self, before: &[Vec<u64>]) -> Vec<JobStatus> {
        let mut out = Vec::new();
        for (n, node) in self.nodes.iter().enumerate() {
            let Some(r) = node.running.as_ref() else {
                continue;
            };
            for j in r.node.workers.list() {
                if before.get(n).is_some_and(|ids| ids.contains(&j.id)) {
                    continue;
                }
                let node = r.node.clone();
                let done = tokio::task::spawn_blocking(move || {
                    node.workers.wait(j.id, std::time::Duration::from_secs(60))
                })
                .await
                .expect("wait task")
                .expect("job ends within 60 s");
                assert_eq!(done.state, JobState::Done, "{done:?}");
                out.push(done);
            }
        }
        out
    }

    /// Wait until node `i`'s maintenance loop (schedules, AUTO data-sort, cache write-back)
    /// has made `passes` more passes, so whatever it should have seen by now it has seen
    /// (a moved clock, a rotation). Panics after 30 s.
    pub async fn maintenance_passes(&self, i: usize, passes: u64) {
        use std::sync::atomic::Ordering;
        let node = self.node(i);
        let target = node.maintenance_passes.load(Ordering::SeqCst) + passes;
        poll_until(
            std::time::Duration::from_secs(30),
            "maintenance passes",
            || node.maintenance_passes.load(Ordering::SeqCst) >= target,
        )
        .await;
    }

    /// Stop every node.
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i).await;
        }
    }
}

/// Poll `done` every 20 ms until it holds; panics naming `what` after `deadline`. The way
/// tests wait for background work (never a bare sleep standing in for it).
pub async fn poll_until(deadline: std::time::Duration, what: &str, mut done: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + deadline;
    while !done() {
        assert!(
            tokio::time::Instant::now() < until,
            "{what}: not reached within {deadline:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Flip bits of the byte at `offset` of `path` in place (one `pwrite`: a running node's
/// open file sees it at once, as it would see bit rot).
pub fn flip_byte(path: &std::path::Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open the file to damage");
    let len = f.metadata().expect("its size").len();
    assert!(offset < len, "{} has {len} bytes", path.display());
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).expect("read the byte");
    b[0] ^= 0x5a;
    f.write_all_at(&b, offset).expect("write it flipped");
}

/// The median of `v` (the upper one of an even count), as the bench programs report it.
/// Panics on an empty `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
