//! `soak`: a long run mixing a write/remove load with faults against a local cluster of node
//! processes, then a summary table. Exits non-zero on any loss.
//!
//! ```text
//! cargo run --release -p ellipsis-tests --bin soak -- --minutes 5 [--seed N]
//! ```
//!
//! The cluster: node 0 (group 1) and node 1 (group 2), `sync = always`, small bases; node 1 is
//! reached only through a loopback proxy (it advertises the proxy's address) so its link can be
//! cut. Nodes are separate processes (this binary re-executed with `--run-node CONFIG`), so a
//! kill is a real SIGKILL. Faults, picked by a seeded RNG: kill -9 + restart of either node
//! (some right after a data-sort or dc start), a partition of group 2 followed by a heal and a
//! dc recovery, a flipped byte in a record's data on a stopped node followed by a dc recovery
//! that must repair it, and data-sorts. After every fault every key is read from each group on
//! its own and judged against a model of acknowledged operations (see
//! `node/tests/process_crash.rs` for the rules).
//!
//! Not a benchmark, not a CI test (CI runs `node/tests/process_crash.rs` and the cluster tests).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use ellipsis_core::client::{Checker, Client, ClientConfig, ClientError, WriteResult};
use ellipsis_core::protocol::{IoAttr, Status};
use ellipsis_core::stats::{JobKind, JobStatus};
use ellipsis_core::Id;
use ellipsis_node::config::{BackendConfig, NodeConfig, SyncSetting};
use ellipsis_tests::proxy::Proxy;
use rand::{Rng, SeedableRng};

const TOKEN: &str = "soak-admin-token-0123456789";
const KEYS: u64 = 500;
const WRITERS: u64 = 4;
const GROUPS: [u32; 2] = [1, 2];
const DEADLINE: Duration = Duration::from_secs(120);

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
                println!("soak [--minutes N] [--seed N]: load + faults against local node processes, summary table; exit 1 on any loss");
                return Ok(None);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(Some(out))
}

/// The child mode: one node, until killed.
fn run_node(config: &Path) -> anyhow::Result<()> {
    let cfg = NodeConfig::load(config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let node = ellipsis_node::server::start(cfg, None).await?;
        eprintln!(
            "soak-node: serving (http {})",
            node.http_addr.map_or("off".into(), |a| a.to_string())
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        term.recv().await;
        node.stop().await?;
        Ok(())
    })
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
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("stderr pipe")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let mut log_w = log;
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log_w, "{line}");
                if line.starts_with("soak-node: serving") {
                    let _ = tx.send(());
                }
            }
        });
        self.child = Some(child);
        if rx.recv_timeout(DEADLINE).is_err() {
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

async fn writer(load: Arc<Load>, client: Arc<Client>, w: u64, seed: u64) {
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
    faults: BTreeMap<&'static str, u64>,
    checks: u64,
    torn_in_flight: u64,
    repaired: u64,
    losses: Vec<String>,
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
                ..NodeConfig::default()
            };
            nodes.push(NodeProc {
                addr: advertise.unwrap_or(listen),
                http,
                config,
                config_path: dir.path().join(format!("node-{i}.toml")),
                log_path: dir.path().join(format!("node-{i}.log")),
                child: None,
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
            bail!("POST {path}: {}", r.status());
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

    fn count(&mut self, fault: &'static str) {
        *self.faults.entry(fault).or_default() += 1;
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
                        "key {k} group {g}: holds {got:?}, acknowledged {:?}, in doubt {:?}",
                        st.acked, st.maybe
                    ));
                }
            }
            for g in torn {
                if st.maybe.iter().any(Option::is_some) && good > 0 {
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
                self.post(
                    http,
                    "/admin/backends/1/defrag-start",
                    serde_json::json!({}),
                )
                .await?;
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

    /// Flip a byte in the data of a live record on a stopped node, restart, expect the key to
    /// read as CORRUPTED from that group, run dc, expect it repaired.
    async fn corrupt(&mut self) -> anyhow::Result<()> {
        self.stop_load().await?;
        let i = self.rng.random_range(0..self.nodes.len());
        let group = GROUPS[i];
        let model = self
            .load
            .model
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let candidates: Vec<u64> = model
            .iter()
            .filter(|(_, st)| st.acked.is_some() && st.maybe.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let k = candidates[self.rng.random_range(0..candidates.len())];
        let c = self.single[i].1.clone();
        let (_, info) = c.lookup(&key_id(k)).await?;
        if info.attr.size < 32 {
            return Ok(());
        }
        self.count("byte flip in record data + dc");
        self.nodes[i].kill();
        let path = PathBuf::from(&info.path);
        anyhow::ensure!(
            path.starts_with(self.nodes[i].dir()),
            "{} outside the node dir",
            info.path
        );
        let mut bytes = std::fs::read(&path)?;
        let at = (info.data_offset + info.attr.size / 2) as usize;
        anyhow::ensure!(at < bytes.len(), "offset past {}", path.display());
        bytes[at] ^= 0x5a;
        std::fs::write(&path, bytes)?;
        self.restart(i).await?;
        match c.read(&key_id(k), 0, 0).await {
            Err(e) if e.status() == Status::CORRUPTED => {}
            other => self.losses.push(format!(
                "key {k} group {group}: flipped byte not reported as CORRUPTED: {:?}",
                other.map(|r| r.data.len())
            )),
        }
        // A verifying dc reads the other group's copies in full: the rotted one (same version
        // as the intact copy, headers intact) counts as missing and is replaced.
        self.dc_with(serde_json::json!({"kind": "dc", "verify": true}))
            .await?;
        match c.read(&key_id(k), 0, 0).await {
            Ok(r) if decode(k, &r.data) == model[&k].acked => self.repaired += 1,
            other => self.losses.push(format!(
                "key {k} group {group}: not repaired by dc: {:?}",
                other.map(|r| decode(k, &r.data)).map_err(|e| e.status())
            )),
        }
        Ok(())
    }

    async fn data_sort(&mut self) -> anyhow::Result<()> {
        self.count("data-sort under load");
        let i = self.rng.random_range(0..self.nodes.len());
        self.post(
            self.nodes[i].http,
            "/admin/backends/1/defrag-start",
            serde_json::json!({}),
        )
        .await?;
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

/// Run the soak; `false` when a loss was found.
async fn soak(args: Args) -> anyhow::Result<bool> {
    println!(
        "soak: seed {} (--seed {} repeats the fault choices), {} minutes",
        args.seed, args.seed, args.minutes
    );
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.minutes * 60.0);
    let mut s = Soak::start(args.seed).await?;
    while Instant::now() < until && s.losses.is_empty() {
        s.start_load();
        let n = s.rng.random_range(50..300);
        ops_pass(&s.load, n).await?;
        match s.rng.random_range(0..10) {
            0..=3 => s.kill().await?,
            4..=5 => s.partition().await?,
            6..=7 => s.corrupt().await?,
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
    println!("| flipped keys repaired by dc | {} |", s.repaired);
    println!("| **losses** | **{}** |", s.losses.len());
    if !s.losses.is_empty() {
        for l in &s.losses {
            eprintln!("LOSS: {l}");
        }
    }
    Ok(s.losses.is_empty())
}
