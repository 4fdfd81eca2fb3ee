//! `soak`: a long run mixing a write/remove load with faults against a local cluster of node
//! processes, then a summary table. Exits non-zero on any loss, any probe the nodes wrongly
//! accepted and any other broken promise (a fault not reported, a node that did not recover).
//!
//! ```text
//! cargo run --release -p ellipsis-tests --bin soak -- --minutes 5 [--seed N]
//! ```
//!
//! The cluster: node 0 (group 1) and node 1 (group 2), `sync = always`, small bases; node 1 is
//! reached only through a loopback proxy (it advertises the proxy's address) so its link can be
//! cut. Nodes are separate processes (this binary re-executed with `--run-node CONFIG`), so a
//! kill is a real SIGKILL. Faults, picked by a seeded RNG:
//!
//! - kill -9 + restart of either node (some right after a data-sort or dc start);
//! - a partition of group 2, then a heal and a dc recovery;
//! - a flipped byte on a stopped node in a record's data, a write-order index entry or a
//!   sorted index entry: the node must start, count the damage in `/stats`, never serve wrong
//!   bytes, and a dc must restore the key;
//! - engine IO faults in a running node (EIO / ENOSPC / short / torn writes, EIO on fsync and
//!   on reads; see `faults.rs`): a failed write is never acknowledged, a write or fsync fault
//!   turns the backend read-only with its reason in `/stats`, reads return the right bytes or
//!   an error, and a reopen (backend disable + enable, or kill -9 + restart) makes it writable;
//! - bad-input and security probes while the load runs (see `probes.rs`);
//! - data-sorts under load.
//!
//! After every fault every key is read from each group on its own and judged against a model
//! of acknowledged operations (see `node/tests/process_crash.rs` for the rules).
//!
//! Not a benchmark, not a CI test (CI runs `node/tests/process_crash.rs`, the engine fault
//! suites and the cluster tests); the child mode doubles as the separate node process of
//! `tests/tests/badinput.rs`'s idle-memory test.

mod faults;
mod probes;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use ellipsis_core::client::{Checker, Client, ClientConfig, ClientError, WriteResult};
use ellipsis_core::protocol::{IoAttr, Status};
use ellipsis_core::stats::{BackendState, JobKind, JobStatus, NodeStats};
use ellipsis_core::Id;
use ellipsis_node::config::{BackendConfig, NodeConfig, SyncSetting};
use ellipsis_tests::proxy::Proxy;
use faults::{FaultKind, FileKind, PlanInjector, Rule};
use rand::{Rng, SeedableRng};

const TOKEN: &str = "soak-admin-token-0123456789";
const KEYS: u64 = 500;
const WRITERS: u64 = 4;
const GROUPS: [u32; 2] = [1, 2];
const DEADLINE: Duration = Duration::from_secs(120);
/// Nodes' `frame_read_timeout_ms`: short, so slowloris and half-open probes end quickly, and
/// still far above what a frame of the load needs on loopback.
const FRAME_READ_TIMEOUT_MS: u64 = 2_000;
/// Nodes' `http_max_body_bytes` (admin bodies are tiny; the oversized-body probe crosses it).
const HTTP_MAX_BODY_BYTES: u64 = 1 << 20;
/// Nodes' `max_connections`: room for the idle burst beside clients and peers.
const MAX_CONNECTIONS: u32 = 4_096;
/// Idle connections a probe round opens to one node and holds.
const IDLE_BURST: usize = 1_500;
/// Size of a record header (node/eblob/FORMAT.md): an object's data starts this far after
/// its record, and index entries have this size.
const HEADER_BYTES: u64 = 128;
/// What a node process prints on stderr once it serves.
const SERVING: &str = "soak-node: serving";

struct Args {
    minutes: f64,
    seed: u64,
}

fn parse_args() -> anyhow::Result<Option<Args>> {
    let mut args = std::env::args().skip(1);
    let mut out = Args {
        minutes: 1.0,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--run-node" => {
                let cfg = args.next().context("--run-node CONFIG")?;
                run_node(Path::new(&cfg))?;
                return Ok(None);
            }
            "--minutes" => out.minutes = args.next().context("--minutes N")?.parse()?,
            "--seed" => out.seed = args.next().context("--seed N")?.parse()?,
            "-h" | "--help" => {
                println!("soak [--minutes N] [--seed N]: load + faults + probes against local node processes, summary table; exit 1 on any loss, wrongly accepted probe or broken promise");
                return Ok(None);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(Some(out))
}

/// The child mode: one node, until killed, SIGTERMed or its stdin (the driver's fault
/// control channel, see `faults.rs`) closes.
fn run_node(config: &Path) -> anyhow::Result<()> {
    let cfg = NodeConfig::load(config)?;
    let injector = Arc::new(PlanInjector::default());
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    {
        let injector = injector.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                match faults::Command::parse(&line) {
                    Ok(c) => eprintln!("soak-node: armed {}", injector.apply(c)),
                    Err(e) => eprintln!("soak-node: refused fault command: {e:#}"),
                }
            }
            // The driver is gone: nobody will stop this node otherwise.
            let _ = eof_tx.send(());
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let options = ellipsis_node::server::StartOptions {
            engine_faults: Some(injector),
            ..Default::default()
        };
        let node = ellipsis_node::server::start_with(cfg, options).await?;
        // The addresses let a parent that configured port 0 find the node.
        eprintln!(
            "{SERVING} (listen {}, http {})",
            node.addr,
            node.http_addr.map_or("off".into(), |a| a.to_string())
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = eof_rx => {}
        }
        node.stop().await?;
        Ok(())
    })
}

/// A line a node process printed that the driver acts on.
#[derive(Debug)]
enum ChildEvent {
    Serving,
    Armed(u64),
    Fired(String),
}

/// One node process.
struct NodeProc {
    config: NodeConfig,
    /// Address clients use (the proxy's for node 1).
    addr: SocketAddr,
    http: SocketAddr,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// The running child's fault control channel.
    stdin: Option<ChildStdin>,
    /// Lines of the running child's stderr the driver acts on.
    events: Option<std::sync::mpsc::Receiver<ChildEvent>>,
    /// Last fault command generation sent.
    generation: u64,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

impl NodeProc {
    fn start(&mut self) -> anyhow::Result<()> {
        std::fs::write(&self.config_path, toml::to_string(&self.config)?)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--run-node")
            .arg(&self.config_path)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("stderr pipe")?;
        self.stdin = Some(child.stdin.take().context("stdin pipe")?);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut log_w = log;
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log_w, "{line}");
                let event = if line.starts_with(SERVING) {
                    Some(ChildEvent::Serving)
                } else if let Some(g) = line.strip_prefix("soak-node: armed ") {
                    g.trim().parse().ok().map(ChildEvent::Armed)
                } else {
                    line.strip_prefix("soak-node: fault fired ")
                        .map(|l| ChildEvent::Fired(l.to_owned()))
                };
                if let Some(e) = event {
                    let _ = tx.send(e);
                }
            }
        });
        self.child = Some(child);
        let serving = rx.recv_timeout(DEADLINE);
        self.events = Some(rx);
        if !matches!(serving, Ok(ChildEvent::Serving)) {
            self.kill();
            bail!(
                "node did not start; log {}:\n{}",
                self.log_path.display(),
                std::fs::read_to_string(&self.log_path).unwrap_or_default()
            );
        }
        // The port is open; the HTTP side answers right after (polled: another process).
        let deadline = Instant::now() + DEADLINE;
        while std::net::TcpStream::connect(self.http).is_err() {
            if Instant::now() > deadline {
                bail!("node HTTP {} not ready", self.http);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stdin = None;
        self.events = None;
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Send a fault command and wait for the child to acknowledge it. Faults that fire in
    /// the meantime are returned (their labels), so none goes uncounted.
    fn command(&mut self, c: impl FnOnce(u64) -> faults::Command) -> anyhow::Result<Vec<String>> {
        self.generation += 1;
        let g = self.generation;
        let line = c(g).line();
        let stdin = self.stdin.as_mut().context("node not running")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        let events = self.events.as_ref().context("node not running")?;
        let deadline = Instant::now() + DEADLINE;
        let mut fired = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok(ChildEvent::Armed(a)) if a == g => return Ok(fired),
                Ok(ChildEvent::Fired(l)) => fired.push(l),
                Ok(_) => {}
                Err(e) => bail!("node did not acknowledge {line:?}: {e}"),
            }
        }
    }

    /// Faults the child announced since the last look, without waiting.
    fn fired(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(events) = &self.events {
            while let Ok(e) = events.try_recv() {
                if let ChildEvent::Fired(l) = e {
                    out.push(l);
                }
            }
        }
        out
    }

    fn dir(&self) -> &Path {
        &self.config.backends[0].dir
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn key_id(k: u64) -> Id {
    Id::for_key(b"soak", format!("k{k}").as_bytes())
}

fn value(k: u64, v: u64) -> Bytes {
    let len = 16 + (v.wrapping_mul(7919) % 6000) as usize;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&k.to_le_bytes());
    out.extend_from_slice(&v.to_le_bytes());
    let mut x = (k << 32) ^ v.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(x as u8);
    }
    out.into()
}

fn decode(k: u64, data: &[u8]) -> Option<u64> {
    let kk = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    let v = u64::from_le_bytes(data.get(8..16)?.try_into().ok()?);
    (kk == k && value(k, v) == data).then_some(v)
}

#[derive(Clone, Debug, Default)]
struct KeyState {
    acked: Option<u64>,
    maybe: Vec<Option<u64>>,
    /// The key's last operations (round, op, per-group outcome): printed with a loss so the
    /// report says what happened to the key, not only what it holds.
    history: std::collections::VecDeque<String>,
}

/// Operations of a key kept in [`KeyState::history`].
const HISTORY_OPS: usize = 8;

/// One history line: what was asked and what each group answered.
fn history_line(round: u64, new: Option<u64>, r: &Result<WriteResult, ClientError>) -> String {
    let op = new.map_or_else(|| "remove".to_owned(), |v| format!("write {v}"));
    let groups = |gs: &[ellipsis_core::client::GroupResult]| {
        gs.iter()
            .map(|g| format!("g{} {}", g.group, g.status))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let outcome = match r {
        Ok(w) => groups(&w.groups),
        Err(ClientError::NotEnoughGroups { results, .. }) => groups(results),
        Err(e) => format!("error: {e}"),
    };
    format!("round {round}: {op}: {outcome}")
}

#[derive(Default)]
struct Load {
    model: Mutex<HashMap<u64, KeyState>>,
    next_version: AtomicU64,
    ops: AtomicU64,
    acked: AtomicU64,
    stop: AtomicBool,
    progress: tokio::sync::Notify,
}

fn applied_everywhere(r: &Result<WriteResult, ClientError>, remove: bool) -> bool {
    let ok = |s: Status| s.is_ok() || (remove && s == Status::NOT_FOUND);
    match r {
        Ok(w) => w.groups.iter().all(|g| ok(g.status)),
        Err(ClientError::NotEnoughGroups { results, .. }) => results.iter().all(|g| ok(g.status)),
        Err(_) => false,
    }
}

async fn writer(load: Arc<Load>, client: Arc<Client>, w: u64, seed: u64, round: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !load.stop.load(Ordering::Relaxed) {
        let k = w + WRITERS * rng.random_range(0..KEYS / WRITERS);
        let id = key_id(k);
        let (new, r) = if rng.random_range(0..5) == 0 {
            (None, client.remove(&id).await)
        } else {
            let v = load.next_version.fetch_add(1, Ordering::Relaxed) + 1;
            (
                Some(v),
                client.write(&id, value(k, v), IoAttr::default()).await,
            )
        };
        let done = applied_everywhere(&r, new.is_none());
        {
            let mut m = load.model.lock().unwrap_or_else(|e| e.into_inner());
            let st = m.entry(k).or_default();
            if st.history.len() == HISTORY_OPS {
                st.history.pop_front();
            }
            st.history.push_back(history_line(round, new, &r));
            if done {
                st.acked = new;
                st.maybe.clear();
            } else {
                st.maybe.push(new);
            }
        }
        if done {
            load.acked.fetch_add(1, Ordering::Relaxed);
        }
        load.ops.fetch_add(1, Ordering::Relaxed);
        load.progress.notify_waiters();
    }
}

async fn ops_pass(load: &Load, n: u64) -> anyhow::Result<()> {
    let target = load.ops.load(Ordering::Relaxed) + n;
    let deadline = Instant::now() + DEADLINE;
    while load.ops.load(Ordering::Relaxed) < target {
        let notified = load.progress.notified();
        if load.ops.load(Ordering::Relaxed) >= target {
            break;
        }
        if Instant::now() > deadline {
            bail!("load stalled");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
    }
    Ok(())
}

struct Soak {
    nodes: Vec<NodeProc>,
    proxy: Proxy,
    load: Arc<Load>,
    all: Arc<Client>,
    single: Vec<(u32, Arc<Client>)>,
    http: reqwest::Client,
    writers: Vec<tokio::task::JoinHandle<()>>,
    rng: rand::rngs::StdRng,
    seed: u64,
    round: u64,
    /// Faults injected, by kind (engine faults as the node announced them).
    faults: BTreeMap<String, u64>,
    checks: u64,
    torn_in_flight: u64,
    repaired: u64,
    losses: Vec<String>,
    /// Broken promises that are not lost data: damage or a fault not reported, a node that
    /// did not recover after a reopen.
    violations: Vec<String>,
    probes_sent: BTreeMap<&'static str, u64>,
    /// Probes a node accepted that it must refuse, or after which others were not served.
    probes_wrong: Vec<String>,
    /// Resident memory growth per idle connection, per burst (bytes).
    idle_rss_bytes: Vec<u64>,
    /// Reads answered with an error while read faults were armed (never with wrong bytes).
    read_fault_errors: u64,
    /// Damaged files whose damage `/stats` counted after the restart.
    damage_counted: u64,
    _dir: tempfile::TempDir,
}

fn client_config(remotes: Vec<SocketAddr>, groups: Vec<u32>) -> ClientConfig {
    ClientConfig {
        remotes,
        groups,
        checker: Checker::All,
        timeout_ms: 2_000,
        admin_token: Some(TOKEN.into()),
        ..ClientConfig::default()
    }
}

impl Soak {
    async fn start(seed: u64) -> anyhow::Result<Soak> {
        let dir = tempfile::tempdir()?;
        let proxy = Proxy::start().await?;
        let mut nodes = Vec::new();
        for (i, group) in GROUPS.into_iter().enumerate() {
            let listen = free_port()?;
            let http = free_port()?;
            let mut b = BackendConfig {
                id: 1,
                group,
                dir: dir.path().join(format!("n{i}")),
                sync: SyncSetting::Always,
                records_in_blob: 200,
                min_free_space_bytes: 0,
                ..BackendConfig::default()
            };
            b.cache.size_bytes = 0;
            let advertise = (i == 1).then(|| proxy.addr());
            if i == 1 {
                proxy.set_target(listen);
            }
            let config = NodeConfig {
                listen: vec![listen],
                advertise_addr: advertise,
                http_listen: Some(http),
                remotes: Vec::new(),
                admin_token: Some(TOKEN.into()),
                log_level: "warn".into(),
                check_timeout_s: 1,
                wait_timeout_ms: 2_000,
                blocking_threads: 4,
                backends: vec![b],
                frame_read_timeout_ms: FRAME_READ_TIMEOUT_MS,
                http_max_body_bytes: HTTP_MAX_BODY_BYTES,
                max_connections: MAX_CONNECTIONS,
                ..NodeConfig::default()
            };
            nodes.push(NodeProc {
                addr: advertise.unwrap_or(listen),
                http,
                config,
                config_path: dir.path().join(format!("node-{i}.toml")),
                log_path: dir.path().join(format!("node-{i}.log")),
                child: None,
                stdin: None,
                events: None,
                generation: 0,
            });
        }
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
        for n in &mut nodes {
            let me = n.addr;
            n.config.remotes = addrs
                .iter()
                .filter(|a| **a != me)
                .map(|a| a.to_string())
                .collect();
        }
        for n in &mut nodes {
            tokio::task::block_in_place(|| n.start())?;
        }
        let all = Client::connect(client_config(addrs.clone(), GROUPS.to_vec())).await?;
        let mut single = Vec::new();
        for g in GROUPS {
            single.push((
                g,
                Client::connect(client_config(addrs.clone(), vec![g])).await?,
            ));
        }
        let s = Soak {
            nodes,
            proxy,
            load: Arc::new(Load::default()),
            all,
            single,
            http: reqwest::Client::new(),
            writers: Vec::new(),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            seed,
            round: 0,
            faults: BTreeMap::new(),
            checks: 0,
            torn_in_flight: 0,
            repaired: 0,
            losses: Vec::new(),
            violations: Vec::new(),
            probes_sent: BTreeMap::new(),
            probes_wrong: Vec::new(),
            idle_rss_bytes: Vec::new(),
            read_fault_errors: 0,
            damage_counted: 0,
            _dir: dir,
        };
        s.wait_routes().await?;
        Ok(s)
    }

    fn start_load(&mut self) {
        self.round += 1;
        self.writers = (0..WRITERS)
            .map(|w| {
                tokio::spawn(writer(
                    self.load.clone(),
                    self.all.clone(),
                    w,
                    self.seed ^ (self.round << 8) ^ w,
                    self.round,
                ))
            })
            .collect();
    }

    async fn stop_load(&mut self) -> anyhow::Result<()> {
        self.load.stop.store(true, Ordering::Relaxed);
        for w in self.writers.drain(..) {
            w.await?;
        }
        self.load.stop.store(false, Ordering::Relaxed);
        Ok(())
    }

    async fn wait_routes(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + DEADLINE;
        let mut clients = vec![self.all.clone()];
        clients.extend(self.single.iter().map(|(_, c)| c.clone()));
        for c in clients {
            loop {
                let _ = c.refresh_routes().await;
                if c.groups()
                    .iter()
                    .all(|g| c.routes().owner(*g, &key_id(0)).is_some())
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("routes did not come back");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    async fn jobs(&self, http: SocketAddr) -> Vec<JobStatus> {
        match self
            .http
            .get(format!("http://{http}/admin/jobs"))
            .bearer_auth(TOKEN)
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    async fn wait_jobs(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + DEADLINE;
        for n in &self.nodes {
            while self
                .jobs(n.http)
                .await
                .iter()
                .any(|j| !j.state.is_finished())
            {
                if Instant::now() > deadline {
                    bail!("jobs on {} did not finish", n.http);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    async fn post(
        &self,
        http: SocketAddr,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!("http://{http}{path}"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await?;
        if !r.status().is_success() {
            let status = r.status();
            bail!(
                "POST {path}: {status}: {}",
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    async fn dc(&self) -> anyhow::Result<()> {
        self.dc_with(serde_json::json!({"kind": "dc"})).await
    }

    async fn dc_with(&self, body: serde_json::Value) -> anyhow::Result<()> {
        self.post(self.nodes[0].http, "/admin/recovery", body)
            .await?;
        self.wait_jobs().await
    }

    fn count(&mut self, fault: &str) {
        *self.faults.entry(fault.to_owned()).or_default() += 1;
    }

    async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &mut self.nodes[i];
        tokio::task::block_in_place(|| n.start())?;
        self.wait_routes().await
    }

    /// Read every key from each group alone and judge it against the model.
    async fn verify(&mut self) -> anyhow::Result<()> {
        let model = self
            .load
            .model
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (k, st) in &model {
            let id = key_id(*k);
            let (mut good, mut torn) = (0, Vec::new());
            for (g, c) in &self.single {
                self.checks += 1;
                let got = match c.read(&id, 0, 0).await {
                    Ok(r) => match decode(*k, &r.data) {
                        Some(v) => Some(v),
                        None => {
                            self.losses.push(format!("key {k} group {g}: WRONG DATA"));
                            continue;
                        }
                    },
                    Err(e) if e.status() == Status::NOT_FOUND => None,
                    Err(e) if e.status() == Status::CORRUPTED => {
                        torn.push(*g);
                        continue;
                    }
                    Err(e) => bail!("key {k} group {g}: read failed: {e}"),
                };
                if st.acked == got || st.maybe.contains(&got) {
                    good += 1;
                } else {
                    self.losses.push(format!(
                        "key {k} group {g}: holds {got:?}, acknowledged {:?}, in doubt {:?}; last operations: {}",
                        st.acked,
                        st.maybe,
                        Vec::from(st.history.clone()).join("; ")
                    ));
                }
            }
            for g in torn {
                // An in-place rewrite (write or remove) in flight when the node died or its
                // write failed may leave the record unreadable in that group; another group
                // must then serve an allowed version.
                if !st.maybe.is_empty() && good > 0 {
                    self.torn_in_flight += 1;
                } else {
                    self.losses.push(format!(
                        "key {k} group {g}: CORRUPTED ({st:?}, good copies {good})"
                    ));
                }
            }
        }
        Ok(())
    }

    async fn kill(&mut self) -> anyhow::Result<()> {
        let victim = self.rng.random_range(0..self.nodes.len());
        let http = self.nodes[victim].http;
        match self.rng.random_range(0..3) {
            0 => {
                self.defrag_start(victim).await?;
                self.count("kill -9 after data-sort start");
                if self
                    .jobs(http)
                    .await
                    .iter()
                    .any(|j| j.kind == JobKind::DataSort && !j.state.is_finished())
                {
                    self.count("  (data-sort seen running)");
                }
            }
            1 => {
                self.post(
                    self.nodes[0].http,
                    "/admin/recovery",
                    serde_json::json!({"kind": "dc"}),
                )
                .await?;
                self.count("kill -9 after dc start");
                if self
                    .jobs(http)
                    .await
                    .iter()
                    .any(|j| j.kind == JobKind::RecoveryDc && !j.state.is_finished())
                {
                    self.count("  (dc seen running)");
                }
            }
            _ => self.count("kill -9 under load"),
        }
        self.nodes[victim].kill();
        let n = self.rng.random_range(10..60);
        ops_pass(&self.load, n).await?;
        self.stop_load().await?;
        self.restart(victim).await?;
        self.wait_jobs().await
    }

    async fn partition(&mut self) -> anyhow::Result<()> {
        self.count("partition of group 2 + heal + dc");
        self.proxy.cut();
        let n = self.rng.random_range(20..80);
        ops_pass(&self.load, n).await?;
        self.stop_load().await?;
        self.proxy.heal();
        self.wait_routes().await?;
        self.dc().await
    }

    async fn node_stats(&self, i: usize) -> anyhow::Result<NodeStats> {
        let r = self
            .http
            .get(format!("http://{}/stats", self.nodes[i].http))
            .send()
            .await?;
        Ok(r.json().await?)
    }

    /// Flip a byte on a stopped node in a live record's data, its write-order index entry or
    /// its sorted index entry (the choice is the RNG's; the kinds of file a key's current
    /// record lives in decide what is possible), restart, check `/stats` counts the damage
    /// and the group never serves wrong bytes, run dc, expect the key restored.
    async fn corrupt(&mut self) -> anyhow::Result<()> {
        #[derive(Clone, Copy, PartialEq, Eq)]
        enum Target {
            Data,
            WriteOrderIndex,
            SortedIndex,
        }
        self.stop_load().await?;
        let i = self.rng.random_range(0..self.nodes.len());
        let group = GROUPS[i];
        let want = match self.rng.random_range(0..3) {
            0 => Target::Data,
            1 => Target::WriteOrderIndex,
            _ => Target::SortedIndex,
        };
        let model = self
            .load
            .model
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut candidates: Vec<u64> = model
            .iter()
            .filter(|(_, st)| st.acked.is_some() && st.maybe.is_empty())
            .map(|(k, _)| *k)
            .collect();
        candidates.sort_unstable();
        let c = self.single[i].1.clone();
        // Look keys up in a random order until one lives where the chosen damage can go (a
        // sorted base for a sorted index entry, an unsorted one otherwise).
        let mut victim = None;
        for _ in 0..candidates.len().min(64) {
            let k = candidates.swap_remove(self.rng.random_range(0..candidates.len()));
            let (_, info) = c.lookup(&key_id(k)).await?;
            let data = PathBuf::from(&info.path);
            anyhow::ensure!(
                data.starts_with(self.nodes[i].dir()),
                "{} outside the node dir",
                info.path
            );
            let sorted = PathBuf::from(format!("{}.index.sorted", info.path));
            let target = match want {
                Target::Data if info.attr.size >= 32 => Target::Data,
                Target::SortedIndex if sorted.exists() => Target::SortedIndex,
                Target::WriteOrderIndex if !sorted.exists() => Target::WriteOrderIndex,
                _ => continue,
            };
            victim = Some((k, info, target));
            break;
        }
        let Some((k, info, target)) = victim else {
            return Ok(());
        };
        let data_path = PathBuf::from(&info.path);
        let (path, label) = match target {
            Target::Data => (data_path.clone(), "byte flip in record data + verifying dc"),
            Target::WriteOrderIndex => (
                PathBuf::from(format!("{}.index", info.path)),
                "byte flip in a write-order index entry + dc",
            ),
            Target::SortedIndex => (
                PathBuf::from(format!("{}.index.sorted", info.path)),
                "byte flip in a sorted index entry + dc",
            ),
        };
        self.nodes[i].kill();
        let mut bytes = std::fs::read(&path)?;
        let at = match target {
            Target::Data => (info.data_offset + info.attr.size / 2) as usize,
            _ => {
                // The entry describing the current record: same key, same position. Byte 100
                // is inside its timestamp, so its checksum no longer matches.
                let position = info.data_offset - HEADER_BYTES;
                let id = key_id(k);
                let slot = bytes
                    .chunks_exact(HEADER_BYTES as usize)
                    .position(|e| e[..64] == id.0[..] && e[88..96] == position.to_le_bytes()[..]);
                match slot {
                    Some(slot) => slot * HEADER_BYTES as usize + 100,
                    // Not indexed yet (written after the last index flush): nothing to flip.
                    None => {
                        self.restart(i).await?;
                        return Ok(());
                    }
                }
            }
        };
        anyhow::ensure!(at < bytes.len(), "offset past {}", path.display());
        self.count(label);
        bytes[at] ^= 0x5a;
        std::fs::write(&path, bytes)?;
        self.restart(i).await?;
        // The group serves the intact version (a write-order index is rebuilt from the data),
        // reports the record CORRUPTED, or no longer holds it: never other bytes.
        let read = c.read(&key_id(k), 0, 0).await;
        let outcome = match &read {
            Ok(r) if decode(k, &r.data) == model[&k].acked => Status::OK,
            Ok(r) => {
                self.losses.push(format!(
                    "key {k} group {group}: after a flip serves {:?}, acknowledged {:?}",
                    decode(k, &r.data),
                    model[&k].acked
                ));
                Status::OK
            }
            Err(e) => e.status(),
        };
        if target == Target::Data && outcome != Status::CORRUPTED {
            self.losses.push(format!(
                "key {k} group {group}: flipped data byte not reported as CORRUPTED: {outcome}"
            ));
        }
        if ![Status::OK, Status::CORRUPTED, Status::NOT_FOUND].contains(&outcome) {
            self.violations.push(format!(
                "key {k} group {group}: after a flip read {outcome}"
            ));
        }
        // The damage is counted: at open for an index (a write-order index rebuilt from the
        // data file; a sorted entry rebuilt from its record's data header, or dropped and
        // counted as corrupted when that header is unreadable too), when read for record data.
        let st = self.node_stats(i).await?;
        let eblob = &st.backends[0].eblob;
        let counted = match target {
            Target::WriteOrderIndex => eblob.indexes_rebuilt >= 1,
            Target::SortedIndex => eblob.indexes_rebuilt >= 1 || eblob.corrupted >= 1,
            Target::Data => eblob.corrupted >= 1,
        };
        if counted {
            self.damage_counted += 1;
        } else {
            self.violations.push(format!(
                "{label} on node {i}: not counted in /stats (corrupted {}, indexes rebuilt {})",
                eblob.corrupted, eblob.indexes_rebuilt
            ));
        }
        // A damaged index entry needs no verify: the group no longer holds the key (or holds
        // it intact), which a plain dc sees. Rotted data under intact headers has the same
        // version as the intact copy: only a verifying dc, which reads the copies in full,
        // finds it.
        let body = match target {
            Target::Data => serde_json::json!({"kind": "dc", "verify": true}),
            _ => serde_json::json!({"kind": "dc"}),
        };
        self.dc_with(body).await?;
        match c.read(&key_id(k), 0, 0).await {
            Ok(r) if decode(k, &r.data) == model[&k].acked => self.repaired += 1,
            other => self.losses.push(format!(
                "key {k} group {group}: not repaired by dc after {label}: {:?}",
                other.map(|r| decode(k, &r.data)).map_err(|e| e.status())
            )),
        }
        Ok(())
    }

    /// Wait until node `i`'s backend reports the state `ok` accepts (polled: another
    /// process); the last stats seen on a timeout.
    async fn wait_backend(
        &self,
        i: usize,
        within: Duration,
        ok: impl Fn(&ellipsis_core::stats::BackendStats) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let last = match self.node_stats(i).await {
                Ok(s) if s.backends.first().is_some_and(&ok) => return Ok(()),
                Ok(s) => format!(
                    "{:?}",
                    s.backends
                        .first()
                        .map(|b| (b.state, b.read_only_reason.clone()))
                ),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn count_fired(&mut self, fired: Vec<String>) -> u64 {
        let n = fired.len() as u64;
        for label in fired {
            *self.faults.entry(format!("engine: {label}")).or_default() += 1;
        }
        n
    }

    /// Wait until node `i` announced `n` fired faults (counting them); the number seen.
    async fn wait_fired(&mut self, i: usize, n: u64, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        let mut seen = 0;
        while seen < n && Instant::now() < deadline {
            let fired = self.nodes[i].fired();
            seen += self.count_fired(fired);
            if seen < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        seen
    }

    async fn arm(&mut self, i: usize, rule: Rule) -> anyhow::Result<()> {
        let n = &mut self.nodes[i];
        let fired = tokio::task::block_in_place(|| n.command(|g| faults::Command::Arm(g, rule)))?;
        self.count_fired(fired);
        Ok(())
    }

    async fn disarm(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &mut self.nodes[i];
        let fired = tokio::task::block_in_place(|| n.command(faults::Command::Disarm))?;
        self.count_fired(fired);
        Ok(())
    }

    /// Reopen node `i`'s backend, by an admin disable + enable or by kill -9 + restart, and
    /// expect it writable again.
    async fn reopen(&mut self, i: usize) -> anyhow::Result<()> {
        let http = self.nodes[i].http;
        let in_process = self.rng.random_bool(0.5)
            && self
                .post(http, "/admin/backends/1/disable", serde_json::json!({}))
                .await
                .is_ok();
        if in_process {
            if let Err(e) = self
                .post(http, "/admin/backends/1/enable", serde_json::json!({}))
                .await
            {
                self.violations
                    .push(format!("node {i}: enable after disable failed: {e:#}"));
                self.nodes[i].kill();
                self.restart(i).await?;
            } else {
                self.count("  reopened by backend disable + enable");
                self.wait_routes().await?;
            }
        } else {
            self.count("  reopened by kill -9 + restart");
            self.nodes[i].kill();
            self.restart(i).await?;
        }
        let writable = self
            .wait_backend(i, Duration::from_secs(10), |b| {
                b.state == BackendState::Enabled && b.read_only_reason.is_none()
            })
            .await;
        if let Err(last) = writable {
            self.violations
                .push(format!("node {i}: not writable after the reopen: {last}"));
        }
        Ok(())
    }

    /// Arm one engine IO fault in a running node under load and judge what follows.
    async fn engine_fault(&mut self) -> anyhow::Result<()> {
        let i = self.rng.random_range(0..self.nodes.len());
        let (op, kind) = match self.rng.random_range(0..6) {
            0 => (eblob::IoOp::Write, FaultKind::Eio),
            1 => (eblob::IoOp::Write, FaultKind::Enospc),
            2 => (eblob::IoOp::Write, FaultKind::ShortWrite),
            3 => (eblob::IoOp::Write, FaultKind::TornWrite),
            4 => (eblob::IoOp::Sync, FaultKind::Eio),
            _ => return self.read_faults(i).await,
        };
        let file = if self.rng.random_bool(0.5) {
            FileKind::Data
        } else {
            FileKind::Index
        };
        let rule = Rule {
            op,
            file,
            kind,
            skip: self.rng.random_range(0..20),
            count: 1,
        };
        self.arm(i, rule).await?;
        // The load keeps writing to both groups: the fault fires within a few writes.
        if self.wait_fired(i, 1, Duration::from_secs(60)).await == 0 {
            self.violations
                .push(format!("node {i}: {} armed, never fired", rule.label()));
            self.disarm(i).await?;
            return self.stop_load().await;
        }
        // A failed write or fsync stops writes (a retry could hide a lost write) and says why.
        let reported = self
            .wait_backend(i, Duration::from_secs(10), |b| {
                b.state == BackendState::ReadOnly
                    && b.read_only_reason
                        .as_deref()
                        .is_some_and(|r| r.contains("IO error"))
            })
            .await;
        match reported {
            Ok(()) => self.count("  backend turned read-only, reason in /stats"),
            Err(last) => self.violations.push(format!(
                "node {i}: {} did not turn the backend read-only: {last}",
                rule.label()
            )),
        }
        // Writes go on failing in that group (in doubt, never acknowledged) for a while.
        let n = self.rng.random_range(10..50);
        ops_pass(&self.load, n).await?;
        self.stop_load().await?;
        // Read-only, it serves what it has: the acknowledged version or one in doubt.
        self.verify().await?;
        self.reopen(i).await?;
        self.verify().await
    }

    /// Arm EIO on reads of node `i`'s data files, read acknowledged keys from its group:
    /// every answer is the right bytes or an error.
    async fn read_faults(&mut self, i: usize) -> anyhow::Result<()> {
        self.stop_load().await?;
        self.wait_jobs().await?;
        let count = self.rng.random_range(1..=4);
        let rule = Rule {
            op: eblob::IoOp::Read,
            file: FileKind::Data,
            kind: FaultKind::Eio,
            skip: self.rng.random_range(0..10),
            count,
        };
        self.arm(i, rule).await?;
        let model = self
            .load
            .model
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let keys: Vec<u64> = model
            .iter()
            .filter(|(_, st)| st.acked.is_some())
            .map(|(k, _)| *k)
            .collect();
        let c = self.single[i].1.clone();
        let group = GROUPS[i];
        let (mut fired, mut reads) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while fired < count && !keys.is_empty() && Instant::now() < deadline {
            let k = keys[reads % keys.len()];
            reads += 1;
            let st = &model[&k];
            match c.read(&key_id(k), 0, 0).await {
                Ok(r) => match decode(k, &r.data) {
                    Some(v) if st.acked == Some(v) || st.maybe.contains(&Some(v)) => {}
                    got => self.losses.push(format!(
                        "key {k} group {group}: under read faults served {got:?}, acknowledged {:?}",
                        st.acked
                    )),
                },
                Err(_) => self.read_fault_errors += 1,
            }
            let f = self.nodes[i].fired();
            fired += self.count_fired(f);
        }
        self.disarm(i).await?;
        if fired < count {
            self.violations.push(format!(
                "node {i}: {} armed {count} times, fired {fired} in {reads} reads",
                rule.label()
            ));
        }
        self.reopen(i).await?;
        self.verify().await
    }

    /// Bad-input and security probes against one node while the load runs.
    async fn probes(&mut self) -> anyhow::Result<()> {
        let i = self.rng.random_range(0..self.nodes.len());
        let n = &self.nodes[i];
        let target = probes::Target {
            addr: n.config.listen[0],
            http: n.http,
            pid: n.pid().context("node not running")?,
            frame_read_timeout_ms: n.config.frame_read_timeout_ms,
            max_frame_bytes: n.config.max_frame_bytes,
            http_max_body_bytes: n.config.http_max_body_bytes,
            dir: n.dir().to_path_buf(),
            token: TOKEN.into(),
        };
        self.count("bad-input + security probe round under load");
        let report = probes::round(&target, IDLE_BURST).await;
        for (probe, sent) in report.sent {
            *self.probes_sent.entry(probe).or_default() += sent;
        }
        self.probes_wrong
            .extend(report.wrong.into_iter().map(|w| format!("node {i}: {w}")));
        self.idle_rss_bytes
            .extend(report.idle_rss_bytes_per_connection);
        let n = self.rng.random_range(20..100);
        ops_pass(&self.load, n).await?;
        self.stop_load().await
    }

    /// Start a data-sort on node `i`. One may be running already (AUTO mode starts one after
    /// a base rotation, or after a reopen finds closed bases unsorted): the node then refuses
    /// a second one, and the running one is what the caller wants.
    async fn defrag_start(&self, i: usize) -> anyhow::Result<()> {
        let http = self.nodes[i].http;
        match self
            .post(
                http,
                "/admin/backends/1/defrag-start",
                serde_json::json!({}),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e)
                if self
                    .jobs(http)
                    .await
                    .iter()
                    .any(|j| j.kind == JobKind::DataSort && !j.state.is_finished()) =>
            {
                eprintln!("soak: data-sort already running on node {i} ({e:#})");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn data_sort(&mut self) -> anyhow::Result<()> {
        self.count("data-sort under load");
        let i = self.rng.random_range(0..self.nodes.len());
        self.defrag_start(i).await?;
        let n = self.rng.random_range(20..100);
        ops_pass(&self.load, n).await?;
        self.stop_load().await?;
        self.wait_jobs().await
    }
}

fn main() -> anyhow::Result<()> {
    // The child mode (--run-node) builds its own runtime: parse before starting one.
    let Some(args) = parse_args()? else {
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let clean = rt.block_on(soak(args))?;
    if !clean {
        std::process::exit(1);
    }
    Ok(())
}

/// Run the soak; `false` when a loss, a wrongly accepted probe or a broken promise was found.
async fn soak(args: Args) -> anyhow::Result<bool> {
    println!(
        "soak: seed {} (--seed {} repeats the fault choices), {} minutes",
        args.seed, args.seed, args.minutes
    );
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.minutes * 60.0);
    let mut s = Soak::start(args.seed).await?;
    while Instant::now() < until && s.losses.is_empty() && s.probes_wrong.is_empty() {
        s.start_load();
        let n = s.rng.random_range(50..300);
        ops_pass(&s.load, n).await?;
        let pick = s.rng.random_range(0..15);
        eprintln!(
            "soak: round {} at {:.1} s: {}",
            s.round,
            started.elapsed().as_secs_f64(),
            match pick {
                0..=3 => "kill",
                4..=5 => "partition",
                6..=7 => "corruption",
                8..=10 => "engine fault",
                11..=12 => "probes",
                _ => "data-sort",
            }
        );
        match pick {
            0..=3 => s.kill().await?,
            4..=5 => s.partition().await?,
            6..=7 => s.corrupt().await?,
            8..=10 => s.engine_fault().await?,
            11..=12 => s.probes().await?,
            _ => s.data_sort().await?,
        }
        s.stop_load().await?;
        s.verify().await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ops = s.load.ops.load(Ordering::Relaxed);
    let acked = s.load.acked.load(Ordering::Relaxed);
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| seed | {} |", s.seed);
    println!("| duration | {elapsed:.0} s |");
    println!("| operations (writes + removes) | {ops} |");
    println!("| acknowledged by every group | {acked} |");
    println!("| in doubt (failed somewhere) | {} |", ops - acked);
    for (fault, n) in &s.faults {
        println!("| fault: {fault} | {n} |");
    }
    println!("| key/group reads checked | {} |", s.checks);
    println!(
        "| torn in-flight overwrites (allowed, other group intact) | {} |",
        s.torn_in_flight
    );
    println!(
        "| damaged files counted in /stats after the restart | {} |",
        s.damage_counted
    );
    println!("| flipped keys restored by dc | {} |", s.repaired);
    println!(
        "| reads answered with an error under read faults (never wrong bytes) | {} |",
        s.read_fault_errors
    );
    let sent: u64 = s.probes_sent.values().sum();
    for (probe, n) in &s.probes_sent {
        println!("| probe: {probe} | {n} |");
    }
    println!("| probes sent | {sent} |");
    if !s.idle_rss_bytes.is_empty() {
        let max = s.idle_rss_bytes.iter().max().copied().unwrap_or(0);
        println!(
            "| node RSS growth per idle connection (largest of {} bursts of {IDLE_BURST}) | {:.1} KiB |",
            s.idle_rss_bytes.len(),
            max as f64 / 1024.0
        );
    }
    println!(
        "| **probes wrongly accepted (or others not served)** | **{}** |",
        s.probes_wrong.len()
    );
    println!(
        "| **other broken promises (fault or damage unreported, no recovery)** | **{}** |",
        s.violations.len()
    );
    println!("| **losses** | **{}** |", s.losses.len());
    for l in &s.losses {
        eprintln!("LOSS: {l}");
    }
    for w in &s.probes_wrong {
        eprintln!("PROBE WRONGLY ACCEPTED: {w}");
    }
    for v in &s.violations {
        eprintln!("BROKEN PROMISE: {v}");
    }
    Ok(s.losses.is_empty() && s.probes_wrong.is_empty() && s.violations.is_empty())
}
