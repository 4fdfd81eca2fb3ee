//! The poller: fetches every node's stats and call trees over HTTP, concurrently, and turns
//! them into a [`ClusterModel`].
//!
//! One refresh is two steps. First the route list (`GET /stats/routes`) is asked of one node
//! (the last one that answered, then the seeds, then any other): it names every node with its
//! HTTP address, so the whole cluster is discovered from any one node. Then every known node is
//! asked, concurrently, for its stats categories and its recent call trees. The route list is
//! fetched from one node only because it grows with the cluster: with 256 nodes it is hundreds
//! of kilobytes, and asking it of every node would make a refresh cost O(nodes²).
//!
//! Not a UI and not a cache of history beyond what rates need: [`ModelBuilder`] keeps each
//! node's previous counters (to turn totals into per-second rates) and two bounded sparkline
//! histories, nothing else.
//!
//! Invariants: a node that does not answer within `timeout_ms` is marked down with its error
//! and never delays the others past that timeout; no response body beyond
//! [`MAX_RESPONSE_BYTES`] is read; at most [`MAX_CONCURRENT_NODES`] nodes are asked at once;
//! the model holds at most [`MAX_TRACES`] call trees.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use ellipsis_core::stats::{
    BackendState, BackendStats, CacheEntryStats, CommandStats, DefragMode, IoStats, JobKind,
    JobStatus, NodeInfo, NodeStats, ProcStats, RoutesStats,
};
use futures::StreamExt;
use react_trace::{ReactAction, ReactTree};

use crate::model::{
    ActionNode, BackendRow, CacheRow, ClusterModel, CommandRow, DefragRow, GroupRing, JobRow,
    NodeModel, PeerRow, QueueModel, RingRange, TraceSummary,
};

/// Largest response body read from a node (a route list of thousands of ids fits easily).
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Nodes asked at the same time.
pub const MAX_CONCURRENT_NODES: usize = 64;
/// Call trees kept in the model, newest first.
pub const MAX_TRACES: usize = 500;
/// Sparkline samples kept.
pub const HISTORY_LEN: usize = 120;
/// Deepest action nesting converted (react-trace bounds it too; this keeps recursion bounded
/// whatever a node sends).
pub const MAX_ACTION_DEPTH: usize = 64;
/// Route-list sources tried per refresh before giving up on discovery for this refresh.
const ROUTE_SOURCES_TRIED: usize = 3;

/// Stats categories asked of every node; together they are a [`NodeStats`] without routes.
pub const CATEGORIES: [&str; 7] = [
    "node", "commands", "io", "cache", "backends", "procfs", "workers",
];

/// Why a node's answer could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// No answer within the timeout.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// Connection refused, reset, DNS...
    #[error("{0}")]
    Transport(String),
    /// The node answered with an HTTP error.
    #[error("HTTP {status}: {message}")]
    Http {
        /// HTTP status code.
        status: u16,
        /// Its error text.
        message: String,
    },
    /// The body was larger than [`MAX_RESPONSE_BYTES`].
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    /// The body was not the expected JSON.
    #[error("bad JSON from {what}: {error}")]
    Json {
        /// Which document.
        what: String,
        /// Parser error.
        error: String,
    },
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
}

/// How the console speaks to nodes' HTTP ports: plain HTTP, or HTTPS (nodes configured with
/// `http_tls_cert` serve HTTPS only) trusting the system roots plus an optional private CA.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// Use `https://` for every node.
    pub enabled: bool,
    /// PEM certificates to trust besides the system roots (a private CA, or a node's
    /// self-signed certificate).
    pub ca_pem: Option<Vec<u8>>,
}

impl TlsConfig {
    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.enabled {
            "https"
        } else {
            "http"
        }
    }

    /// `{scheme}://{http_addr}{path}`.
    pub fn url(&self, http_addr: &str, path: &str) -> String {
        format!("{}://{http_addr}{path}", self.scheme())
    }
}

/// An HTTP client with these timeouts that trusts what `tls` says.
pub fn http_client(timeout_ms: u64, tls: &TlsConfig) -> Result<reqwest::Client, PollError> {
    let timeout = Duration::from_millis(timeout_ms.max(1));
    let mut builder = reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .pool_max_idle_per_host(8);
    if let Some(pem) = &tls.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| PollError::Client(format!("CA file: {e}")))?;
        if certs.is_empty() {
            return Err(PollError::Client(
                "CA file: no PEM certificate in it".into(),
            ));
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    builder
        .build()
        .map_err(|e| PollError::Client(e.to_string()))
}

/// Poller settings.
#[derive(Clone, Debug)]
pub struct PollConfig {
    /// HTTP addresses (`host:port`) to start discovery from.
    pub seeds: Vec<String>,
    /// Per-node timeout for one refresh.
    pub timeout_ms: u64,
    /// Call trees asked of each node per refresh (0: none).
    pub traces_per_node: usize,
    /// HTTP or HTTPS.
    pub tls: TlsConfig,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            seeds: Vec::new(),
            timeout_ms: 1_000,
            traces_per_node: 16,
            tls: TlsConfig::default(),
        }
    }
}

/// What one node answered in one refresh.
#[derive(Clone, Debug)]
pub struct NodeFetch {
    /// Where it was asked.
    pub http_addr: String,
    /// Its protocol address as the route list names it, when known.
    pub addr_hint: Option<String>,
    /// Monotonic milliseconds when the answer arrived (for rates).
    pub at_ms: u64,
    /// Its stats, or why there are none.
    pub stats: Result<NodeStats, String>,
    /// Its recent call trees.
    pub traces: Vec<ReactTree>,
}

/// A node's counters at its previous answer.
#[derive(Clone, Debug, Default)]
struct Previous {
    at_ms: u64,
    commands: HashMap<String, u64>,
    cpu_s: Option<f64>,
}

/// Turns fetched stats into models; remembers what rates and sparklines need.
#[derive(Clone, Debug, Default)]
pub struct ModelBuilder {
    previous: HashMap<String, Previous>,
    ops_history: VecDeque<u64>,
    p99_history_us: VecDeque<u64>,
}

fn action_node(a: &ReactAction, depth: usize) -> ActionNode {
    ActionNode {
        name: a.name.clone(),
        start_us: a.start_time,
        stop_us: a.stop_time,
        children: if depth >= MAX_ACTION_DEPTH {
            Vec::new()
        } else {
            a.actions
                .iter()
                .map(|c| action_node(c, depth + 1))
                .collect()
        },
    }
}

/// A call tree as the traces view shows it.
pub fn trace_summary(tree: &ReactTree, node: &str) -> TraceSummary {
    let root = tree
        .actions
        .first()
        .map(|a| action_node(a, 0))
        .unwrap_or_default();
    TraceSummary {
        id: tree.id.clone(),
        node: node.to_owned(),
        command: root.name.clone(),
        duration_us: tree.duration_us(),
        root,
    }
}

fn trace_start_us(tree: &ReactTree) -> u64 {
    tree.annotations
        .get("start_unix_us")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

/// The job kind's wire name (`data_sort`, `recovery_dc`...): taken from the schema's own
/// serialisation, so a kind added to the schema shows by its name without a console change.
fn job_kind(kind: JobKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{kind:?}"),
    }
}

fn defrag_mode(mode: DefragMode) -> &'static str {
    match mode {
        DefragMode::Auto => "auto",
        DefragMode::Timed => "timed",
        DefragMode::Scheduled => "scheduled",
        DefragMode::None => "none",
    }
}

/// A job as the recovery view shows it.
pub fn job_row(node: &str, j: &JobStatus) -> JobRow {
    JobRow {
        node: node.to_owned(),
        id: j.id,
        kind: job_kind(j.kind),
        target: j.target.clone(),
        state: j.state.as_str().to_owned(),
        done_keys: j.done_keys,
        total_keys: j.total_keys,
        done_bytes: j.done_bytes,
        total_bytes: j.total_bytes,
        rate_bytes_per_s: j.rate_bytes_per_s,
        errors: j.errors,
        last_error: j.last_error.clone(),
        result: j.result.clone(),
    }
}

/// A backend as the node and data-sort views show it.
pub fn backend_row(node: &str, b: &BackendStats) -> BackendRow {
    let e = &b.eblob;
    let read_only = match (b.state, &b.read_only_reason) {
        (_, Some(reason)) => Some(reason.clone()),
        (BackendState::ReadOnly, None) => Some("set read-only".to_owned()),
        _ => None,
    };
    let d = &b.defrag;
    BackendRow {
        node: node.to_owned(),
        id: b.id,
        group: b.group,
        state: match b.state {
            BackendState::Disabled => "disabled",
            BackendState::Enabled | BackendState::ReadOnly => "enabled",
        }
        .to_owned(),
        read_only,
        bases: e.bases.len() as u64,
        sorted_bases: e.bases.iter().filter(|x| x.sorted).count() as u64,
        records: e.records,
        removed_records: e.removed_records,
        removed_bytes: e.removed_bytes,
        reclaimable_bytes: e.defrag_reclaimable_bytes,
        used_bytes: e.size_bytes,
        fs_total_bytes: b.fs_total_bytes,
        free_bytes: b.fs_free_bytes,
        ram_bytes: e.ram_index_bytes + e.ram_bloom_bytes + e.ram_index_blocks_bytes,
        want_defrag_bases: e.bases.iter().filter(|x| x.want_defrag).count() as u64,
        corrupted: e.corrupted,
        defrag: DefragRow {
            mode: defrag_mode(d.mode).to_owned(),
            window: (d.mode == DefragMode::Scheduled).then_some((d.time_hour, d.splay_hours)),
            next_start_s: d.next_start_unix_s,
            state: if d.state.is_empty() {
                "idle".to_owned()
            } else {
                d.state.clone()
            },
            last_result: d.last_result.clone(),
            progress: d.progress_bases.map(|(done, total)| {
                if total == 0 {
                    1.0
                } else {
                    (done as f64 / total as f64).min(1.0)
                }
            }),
            timeout_s: d.timeout_s,
            compact: d.compact,
        },
    }
}

fn cache_row(entries: &[CacheEntryStats]) -> Option<CacheRow> {
    if entries.is_empty() {
        return None;
    }
    let mut row = CacheRow::default();
    for e in entries {
        let s = &e.stats;
        row.size_bytes += s.size_bytes;
        row.max_bytes += s.max_size_bytes;
        row.objects += s.objects;
        row.hits += s.hits;
        row.misses += s.misses;
        if row.segment_bytes.len() < s.segment_sizes_bytes.len() {
            row.segment_bytes.resize(s.segment_sizes_bytes.len(), 0);
        }
        for (sum, v) in row.segment_bytes.iter_mut().zip(&s.segment_sizes_bytes) {
            *sum += v;
        }
    }
    Some(row)
}

fn rate(now: u64, before: u64, elapsed_ms: u64) -> f64 {
    if elapsed_ms == 0 {
        return 0.0;
    }
    // A counter that went down means the node restarted: count from zero.
    let delta = if now >= before { now - before } else { now };
    delta as f64 * 1_000.0 / elapsed_ms as f64
}

impl ModelBuilder {
    /// A builder with no history.
    pub fn new() -> ModelBuilder {
        ModelBuilder::default()
    }

    fn node_model(&mut self, addr: String, s: &NodeStats, at_ms: u64) -> NodeModel {
        let prev = self.previous.get(&addr);
        let elapsed_ms = prev.map_or(0, |p| at_ms.saturating_sub(p.at_ms));
        let mut commands = Vec::with_capacity(s.commands.commands.len());
        let mut counts = HashMap::with_capacity(s.commands.commands.len());
        let mut ops_per_s = 0.0;
        for (name, c) in &s.commands.commands {
            let total = c.successes + c.failures;
            let rate_per_s = prev
                .and_then(|p| p.commands.get(name))
                .map_or(0.0, |&before| rate(total, before, elapsed_ms));
            ops_per_s += rate_per_s;
            counts.insert(name.clone(), total);
            commands.push(CommandRow {
                name: name.clone(),
                successes: c.successes,
                failures: c.failures,
                rate_per_s,
                p50_us: c.p50_us,
                p99_us: c.p99_us,
                cache_hits: c.cache_hits,
                disk: c.disk,
                forwarded: c.forwarded,
            });
        }
        let cpu_s = match (s.procfs.cpu_user_s, s.procfs.cpu_system_s) {
            (None, None) => None,
            (u, k) => Some(u.unwrap_or(0.0) + k.unwrap_or(0.0)),
        };
        let cpu_percent = match (prev.and_then(|p| p.cpu_s), cpu_s) {
            (Some(before), Some(now)) if elapsed_ms > 0 && now >= before => {
                Some((now - before) * 100_000.0 / elapsed_ms as f64)
            }
            _ => None,
        };
        self.previous.insert(
            addr.clone(),
            Previous {
                at_ms,
                commands: counts,
                cpu_s,
            },
        );
        NodeModel {
            up: true,
            error: None,
            version: s.node.version.clone(),
            uptime_s: s.node.uptime_s,
            groups: s.node.groups.clone(),
            ops_per_s,
            p99_us: commands.iter().map(|c| c.p99_us).max().unwrap_or(0),
            errors_total: commands.iter().map(|c| c.failures).sum(),
            rss_bytes: s.procfs.rss_bytes,
            cpu_percent,
            load1: s.procfs.load_avg.map(|l| l[0]),
            queue: QueueModel {
                engine_running: s.io.blocking_active,
                engine_threads: s.io.blocking_threads,
                engine_waiting: s.io.blocking_waiting,
                engine_waiting_limit: s.io.blocking_waiting_limit,
                engine_refused: s.io.blocking_refused,
                writes_queued: s.backends.iter().map(|b| b.write_queue.queued).sum(),
                writes_limit: s.backends.iter().map(|b| b.write_queue.limit).sum(),
                writes_refused: s.backends.iter().map(|b| b.write_queue.refused).sum(),
                network: s.io.nonblocking_queue,
                network_limit: s.io.nonblocking_queue_limit,
                network_refused: s.io.nonblocking_refused,
                client_connections: s.io.client_connections,
            },
            peers: s
                .io
                .peers
                .iter()
                .map(|p| PeerRow {
                    addr: p.addr.clone(),
                    state: p.state.clone(),
                    send_queue: p.send_queue,
                    send_queue_limit: p.send_queue_limit,
                    in_flight: p.in_flight,
                })
                .collect(),
            commands,
            cache: cache_row(&s.cache),
            backends: s.backends.iter().map(|b| backend_row(&addr, b)).collect(),
            addr,
        }
    }

    /// Builds the model of one refresh: `fetches` from every node asked, `routes` from the
    /// node that served the route list (if any did), `now_s` the wall clock.
    pub fn build(
        &mut self,
        fetches: &[NodeFetch],
        routes: Option<&RoutesStats>,
        now_s: u64,
    ) -> ClusterModel {
        let mut model = ClusterModel {
            refreshed_at_s: now_s,
            ..ClusterModel::default()
        };
        let mut trees: Vec<(u64, TraceSummary)> = Vec::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for f in fetches {
            match &f.stats {
                Ok(s) => {
                    let addr = if !s.node.addr.is_empty() {
                        s.node.addr.clone()
                    } else {
                        f.addr_hint.clone().unwrap_or_else(|| f.http_addr.clone())
                    };
                    if !seen.insert(addr.clone()) {
                        continue;
                    }
                    for t in f.traces.iter().take(MAX_TRACES) {
                        trees.push((trace_start_us(t), trace_summary(t, &addr)));
                    }
                    model
                        .jobs
                        .extend(s.workers.iter().map(|j| job_row(&addr, j)));
                    let node = self.node_model(addr, s, f.at_ms);
                    model.nodes.push(node);
                }
                Err(e) => {
                    let addr = f.addr_hint.clone().unwrap_or_else(|| f.http_addr.clone());
                    if !seen.insert(addr.clone()) {
                        continue;
                    }
                    // Its counters are stale: the next answer starts its rates afresh.
                    self.previous.remove(&addr);
                    let groups = routes
                        .and_then(|r| addr.parse().ok().map(|a| r.table.groups_of(a)))
                        .unwrap_or_default();
                    model.nodes.push(NodeModel {
                        addr,
                        up: false,
                        error: Some(e.clone()),
                        groups,
                        ..NodeModel::default()
                    });
                }
            }
        }
        if let Some(r) = routes {
            // Nodes in the table that could not be asked (no HTTP address) are still shown.
            for node in r.table.nodes() {
                let addr = node.to_string();
                if seen.insert(addr.clone()) {
                    model.nodes.push(NodeModel {
                        addr,
                        up: false,
                        error: Some("no HTTP address known".to_owned()),
                        groups: r.table.groups_of(node),
                        ..NodeModel::default()
                    });
                }
            }
        }
        model.nodes.sort_by(|a, b| a.addr.cmp(&b.addr));
        self.previous.retain(|addr, _| seen.contains(addr));
        if let Some(r) = routes {
            let up: HashMap<&str, bool> = model
                .nodes
                .iter()
                .map(|n| (n.addr.as_str(), n.up))
                .collect();
            for group in r.table.group_ids() {
                let ranges = r
                    .table
                    .ranges(group)
                    .into_iter()
                    .map(|(start, len, owner)| {
                        let node = owner.node.to_string();
                        RingRange {
                            start,
                            share: len as f64 / 18_446_744_073_709_551_616.0,
                            up: up.get(node.as_str()).copied().unwrap_or(false),
                            node,
                            backend: owner.backend,
                        }
                    })
                    .collect();
                model.rings.push(GroupRing { group, ranges });
            }
        }
        model
            .jobs
            .sort_by(|a, b| (&a.node, a.id).cmp(&(&b.node, b.id)));
        trees.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
        trees.truncate(MAX_TRACES);
        model.traces = trees.into_iter().map(|(_, t)| t).collect();
        let push = |h: &mut VecDeque<u64>, v: u64| {
            if h.len() == HISTORY_LEN {
                h.pop_front();
            }
            h.push_back(v);
        };
        push(&mut self.ops_history, model.ops_per_s().round() as u64);
        push(&mut self.p99_history_us, model.p99_us());
        model.ops_history = self.ops_history.iter().copied().collect();
        model.p99_history_us = self.p99_history_us.iter().copied().collect();
        model
    }
}

/// Parses one node's category documents (in [`CATEGORIES`] order) into [`NodeStats`].
pub fn parse_categories(bodies: &[&[u8]; 7]) -> Result<NodeStats, PollError> {
    fn parse<T: serde::de::DeserializeOwned>(what: &str, b: &[u8]) -> Result<T, PollError> {
        serde_json::from_slice(b).map_err(|e| PollError::Json {
            what: format!("/stats/{what}"),
            error: e.to_string(),
        })
    }
    let [node, commands, io, cache, backends, procfs, workers] = bodies;
    Ok(NodeStats {
        node: parse::<NodeInfo>("node", node)?,
        commands: parse::<CommandStats>("commands", commands)?,
        io: parse::<IoStats>("io", io)?,
        cache: parse("cache", cache)?,
        backends: parse("backends", backends)?,
        procfs: parse::<ProcStats>("procfs", procfs)?,
        workers: parse("workers", workers)?,
        routes: RoutesStats::default(),
    })
}

/// Polls a cluster; keep one per console so rates and discovery carry over between refreshes.
#[derive(Debug)]
pub struct Poller {
    http: reqwest::Client,
    cfg: PollConfig,
    /// Known nodes: HTTP address → protocol address (when the route list named it).
    known: BTreeMap<String, Option<String>>,
    /// The node whose route list was used last.
    route_source: Option<String>,
    builder: ModelBuilder,
    started: Instant,
}

impl Poller {
    /// A poller starting from `cfg.seeds`.
    pub fn new(cfg: PollConfig) -> Result<Poller, PollError> {
        let http = http_client(cfg.timeout_ms, &cfg.tls)?;
        let known = cfg.seeds.iter().map(|s| (s.clone(), None)).collect();
        Ok(Poller {
            http,
            cfg,
            known,
            route_source: None,
            builder: ModelBuilder::new(),
            started: Instant::now(),
        })
    }

    /// The HTTP address of the node with protocol address `addr` (or `addr` itself when it
    /// is one of the HTTP addresses polled).
    pub fn http_addr_of(&self, addr: &str) -> Option<String> {
        if self.known.contains_key(addr) {
            return Some(addr.to_owned());
        }
        self.known
            .iter()
            .find(|(_, proto)| proto.as_deref() == Some(addr))
            .map(|(http, _)| http.clone())
    }

    /// Every HTTP address the poller will ask.
    pub fn known_http_addrs(&self) -> Vec<String> {
        self.known.keys().cloned().collect()
    }

    async fn get(&self, http_addr: &str, path: &str) -> Result<Vec<u8>, PollError> {
        get_bounded(
            &self.http,
            &self.cfg.tls.url(http_addr, path),
            self.cfg.timeout_ms,
        )
        .await
    }

    async fn fetch_routes(&mut self) -> Option<RoutesStats> {
        let mut candidates: Vec<String> = Vec::new();
        candidates.extend(self.route_source.clone());
        candidates.extend(self.cfg.seeds.iter().cloned());
        candidates.extend(self.known.keys().cloned());
        let mut tried = BTreeSet::new();
        for c in candidates {
            if tried.len() >= ROUTE_SOURCES_TRIED {
                break;
            }
            if !tried.insert(c.clone()) {
                continue;
            }
            let Ok(body) = self.get(&c, "/stats/routes").await else {
                continue;
            };
            let Ok(routes) = serde_json::from_slice::<RoutesStats>(&body) else {
                continue;
            };
            self.route_source = Some(c);
            return Some(routes);
        }
        None
    }

    async fn fetch_node(&self, http_addr: String, hint: Option<String>) -> NodeFetch {
        let timeout = Duration::from_millis(self.cfg.timeout_ms.max(1));
        let work = async {
            let paths: Vec<String> = CATEGORIES.iter().map(|c| format!("/stats/{c}")).collect();
            let bodies = futures::future::join_all(paths.iter().map(|p| self.get(&http_addr, p)));
            let traces = async {
                if self.cfg.traces_per_node == 0 {
                    return Vec::new();
                }
                let path = format!("/traces?limit={}", self.cfg.traces_per_node);
                // Traces are optional: a node without a tracer or an old node still counts as up.
                match self.get(&http_addr, &path).await {
                    Ok(b) => serde_json::from_slice::<Vec<ReactTree>>(&b).unwrap_or_default(),
                    Err(_) => Vec::new(),
                }
            };
            let (bodies, traces) = futures::join!(bodies, traces);
            let mut ok: Vec<Vec<u8>> = Vec::with_capacity(CATEGORIES.len());
            for b in bodies {
                ok.push(b?);
            }
            let refs: Vec<&[u8]> = ok.iter().map(Vec::as_slice).collect();
            let arr: [&[u8]; 7] = refs
                .try_into()
                .map_err(|_| PollError::Transport("category count".into()))?;
            Ok::<_, PollError>((parse_categories(&arr)?, traces))
        };
        let result = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(PollError::Timeout(self.cfg.timeout_ms)),
        };
        let at_ms = self.started.elapsed().as_millis() as u64;
        match result {
            Ok((stats, traces)) => NodeFetch {
                http_addr,
                addr_hint: hint,
                at_ms,
                stats: Ok(stats),
                traces,
            },
            Err(e) => NodeFetch {
                http_addr,
                addr_hint: hint,
                at_ms,
                stats: Err(e.to_string()),
                traces: Vec::new(),
            },
        }
    }

    /// One refresh: discovery, then every node concurrently.
    pub async fn poll(&mut self) -> ClusterModel {
        let routes = self.fetch_routes().await;
        if let Some(r) = &routes {
            // The route list is the membership: forget discovered nodes it no longer names,
            // keep the seeds whatever happens.
            let mut known: BTreeMap<String, Option<String>> = self
                .cfg
                .seeds
                .iter()
                .map(|s| (s.clone(), self.known.get(s).cloned().flatten()))
                .collect();
            for p in &r.nodes {
                if let Some(h) = &p.http_addr {
                    known.insert(h.clone(), Some(p.addr.clone()));
                }
            }
            self.known = known;
        }
        let jobs: Vec<(String, Option<String>)> = self
            .known
            .iter()
            .map(|(h, p)| (h.clone(), p.clone()))
            .collect();
        let this = &*self;
        let fetches: Vec<NodeFetch> = futures::stream::iter(jobs)
            .map(|(h, p)| this.fetch_node(h, p))
            .buffer_unordered(MAX_CONCURRENT_NODES)
            .collect()
            .await;
        // Learn protocol addresses of seeds from their own answers.
        for f in &fetches {
            if let (Ok(s), Some(slot)) = (&f.stats, self.known.get_mut(&f.http_addr)) {
                if slot.is_none() && !s.node.addr.is_empty() {
                    *slot = Some(s.node.addr.clone());
                }
            }
        }
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.builder.build(&fetches, routes.as_ref(), now_s)
    }

    /// A call tree by id, asked of every known node until one has it.
    pub async fn trace(&self, id: &str) -> Result<Option<(String, ReactTree)>, PollError> {
        let mut last = None;
        for (h, proto) in &self.known {
            match self.get(h, &format!("/traces/{id}")).await {
                Ok(b) => {
                    let tree = serde_json::from_slice(&b).map_err(|e| PollError::Json {
                        what: format!("/traces/{id}"),
                        error: e.to_string(),
                    })?;
                    return Ok(Some((proto.clone().unwrap_or_else(|| h.clone()), tree)));
                }
                Err(PollError::Http { status: 404, .. }) => {}
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) if self.known.len() == 1 => Err(e),
            _ => Ok(None),
        }
    }
}

/// `GET url` with a timeout, reading at most [`MAX_RESPONSE_BYTES`].
pub async fn get_bounded(
    http: &reqwest::Client,
    url: &str,
    timeout_ms: u64,
) -> Result<Vec<u8>, PollError> {
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| transport(e, timeout_ms))?;
    read_body(resp, timeout_ms).await
}

/// Classifies a reqwest error.
pub(crate) fn transport(e: reqwest::Error, timeout_ms: u64) -> PollError {
    if e.is_timeout() {
        return PollError::Timeout(timeout_ms);
    }
    // The innermost cause ("Connection refused (os error 111)") is what an operator needs.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    PollError::Transport(msg)
}

/// Reads a response body with the size bound; HTTP errors become [`PollError::Http`] with the
/// node's `{"error": ...}` text when it sent one.
pub(crate) async fn read_body(
    mut resp: reqwest::Response,
    timeout_ms: u64,
) -> Result<Vec<u8>, PollError> {
    let status = resp.status();
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(PollError::TooLarge(MAX_RESPONSE_BYTES));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(e, timeout_ms))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(PollError::TooLarge(MAX_RESPONSE_BYTES));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        return Err(PollError::Http {
            status: status.as_u16(),
            message,
        });
    }
    Ok(body)
}
