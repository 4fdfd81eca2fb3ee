//! `kill -9` of real `ell-node` processes under a write/remove load loses no acknowledged
//! operation.
//!
//! Two processes, one backend each (node 0 in group 1, node 1 in group 2), `sync = always`,
//! small bases so rotations and data-sorts happen. Writers in this process write and remove
//! keys through the client library with the `all` checker and record every outcome in a
//! model. At a random point (seeded RNG, the seed is printed) one node is SIGKILLed — some
//! kills right after a data-sort was started on it, some right after a dc recovery was
//! started — the load goes on against the half-dead cluster, then the node is restarted and
//! every key is read back from each group on its own.
//!
//! The model: per key, the last state acknowledged by every group (`acked`: a version or
//! gone) and the operations tried since then that failed somewhere (`maybe`: they may or may
//! not have landed). A group may hold `acked` or one of `maybe`; anything else is a loss
//! (an acknowledged write or remove undone) or wrong data. One more outcome is allowed by the
//! engine's durability contract (node/eblob/README.md): an in-place overwrite torn by the kill
//! reads as CORRUPTED — never as wrong data — when that overwrite was in flight; the other
//! group must then still serve an allowed version, so the cluster lost nothing.
//!
//! `ELL_CRASH_KILLS` sets the number of kills (default 5), `ELL_CRASH_SEED` the seed.
// Test drivers: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{ProcCluster, TOKEN};
use ellipsis_core::client::{Checker, Client, ClientConfig, ClientError, WriteResult};
use ellipsis_core::protocol::{IoAttr, Status};
use ellipsis_core::stats::{JobKind, JobStatus};
use ellipsis_core::Id;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

const KEYS: u64 = 400;
const WRITERS: u64 = 4;
const GROUPS: [u32; 2] = [1, 2];

fn key_id(k: u64) -> Id {
    Id::for_key(b"crash", format!("k{k}").as_bytes())
}

/// Bytes of version `v` of key `k`: the pair, then filler derived from both. Sizes vary so
/// overwrites happen both in place (same or smaller) and by append (larger).
fn value(k: u64, v: u64) -> Bytes {
    let len = 16 + (v.wrapping_mul(7919) % 4000) as usize;
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

/// Which version of key `k` these bytes are, if they are exactly one.
fn decode(k: u64, data: &[u8]) -> Option<u64> {
    let kk = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    let v = u64::from_le_bytes(data.get(8..16)?.try_into().ok()?);
    (kk == k && value(k, v) == data).then_some(v)
}

/// One key's history as far as the writers know it. `None` = gone (never written or removed).
#[derive(Clone, Debug, Default)]
struct KeyState {
    acked: Option<u64>,
    maybe: Vec<Option<u64>>,
}

impl KeyState {
    fn allows(&self, v: Option<u64>) -> bool {
        self.acked == v || self.maybe.contains(&v)
    }
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

/// Every group took the operation (a remove that found nothing took it too).
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
            let mut m = load.model.lock();
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

/// Wait until the writers have finished `n` more operations (bounded by a deadline).
async fn ops_pass(load: &Load, n: u64) {
    let target = load.ops.load(Ordering::Relaxed) + n;
    let deadline = Instant::now() + Duration::from_secs(120);
    while load.ops.load(Ordering::Relaxed) < target {
        let notified = load.progress.notified();
        if load.ops.load(Ordering::Relaxed) >= target {
            break;
        }
        assert!(Instant::now() < deadline, "load stalled");
        // The timeout only bounds one wait: progress wakes us.
        let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
    }
}

async fn jobs(http: &reqwest::Client, node: SocketAddr) -> Vec<JobStatus> {
    match http
        .get(format!("http://{node}/admin/jobs"))
        .bearer_auth(TOKEN)
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Poll every node's jobs until none is unfinished (the nodes are other processes).
async fn wait_jobs_finished(http: &reqwest::Client, nodes: &[SocketAddr]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    for n in nodes {
        while jobs(http, *n).await.iter().any(|j| !j.state.is_finished()) {
            assert!(Instant::now() < deadline, "jobs on {n} did not finish");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Refresh the client's routes until every group has an owner for every key range again
/// (the restarted node has rejoined).
async fn wait_routes(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let _ = client.refresh_routes().await;
        let routes = client.routes();
        if GROUPS
            .iter()
            .all(|g| routes.owner(*g, &key_id(0)).is_some())
        {
            return;
        }
        assert!(Instant::now() < deadline, "routes did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Debug, Default)]
struct Totals {
    kills: u64,
    kills_after_sort_start: u64,
    sort_running_at_kill: u64,
    kills_after_dc_start: u64,
    dc_running_at_kill: u64,
    checks: u64,
    torn_in_flight: u64,
    losses: Vec<String>,
}

/// Read every key of the model from each group alone and judge it.
async fn verify(load: &Load, single: &[(u32, Arc<Client>)], totals: &mut Totals) {
    let model = load.model.lock().clone();
    for (k, st) in &model {
        let id = key_id(*k);
        let mut torn = Vec::new();
        let mut good = 0;
        for (g, c) in single {
            totals.checks += 1;
            let got = match c.read(&id, 0, 0).await {
                Ok(r) => match decode(*k, &r.data) {
                    Some(v) => Some(v),
                    None => {
                        totals
                            .losses
                            .push(format!("key {k} group {g}: WRONG DATA ({st:?})"));
                        continue;
                    }
                },
                Err(e) if e.status() == Status::NOT_FOUND => None,
                Err(e) if e.status() == Status::CORRUPTED => {
                    torn.push(*g);
                    continue;
                }
                Err(e) => panic!("key {k} group {g}: read failed: {e}"),
            };
            if st.allows(got) {
                good += 1;
            } else {
                totals.losses.push(format!(
                    "key {k} group {g}: holds {got:?}, acknowledged {:?}, in doubt {:?}",
                    st.acked, st.maybe
                ));
            }
        }
        for g in torn {
            let in_flight_write = st.maybe.iter().any(Option::is_some);
            if in_flight_write && good > 0 {
                totals.torn_in_flight += 1;
            } else {
                totals.losses.push(format!(
                    "key {k} group {g}: CORRUPTED (acknowledged {:?}, in doubt {:?}, good copies {good})",
                    st.acked, st.maybe
                ));
            }
        }
    }
}

async fn client(remotes: Vec<SocketAddr>, groups: Vec<u32>, checker: Checker) -> Arc<Client> {
    Client::connect(ClientConfig {
        remotes,
        groups,
        checker,
        timeout_ms: 3_000,
        admin_token: Some(TOKEN.into()),
        ..ClientConfig::default()
    })
    .await
    .expect("client connects")
}

#[derive(Clone, Copy, Debug)]
enum KillKind {
    Plain,
    DuringSort,
    DuringDc,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_load_sort_and_recovery_loses_no_acknowledged_operation() {
    let kills: u64 = std::env::var("ELL_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("ELL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("process_crash: seed {seed} (ELL_CRASH_SEED={seed} reproduces the kill points), {kills} kills");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = tokio::task::block_in_place(|| {
        ProcCluster::start(&[&[1], &[2]], |b| {
            // Small bases: rotations, sorted bases and automatic data-sorts within seconds.
            b.records_in_blob = 150;
        })
    });
    let addrs = cluster.addrs();
    let http = reqwest::Client::new();
    let load = Arc::new(Load::default());
    let all = client(addrs.clone(), GROUPS.to_vec(), Checker::All).await;
    let mut single = Vec::new();
    for g in GROUPS {
        single.push((g, client(addrs.clone(), vec![g], Checker::All).await));
    }
    let mut totals = Totals::default();
    let started = Instant::now();
    for round in 0..kills {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                tokio::spawn(writer(
                    load.clone(),
                    all.clone(),
                    w,
                    seed ^ (round << 8) ^ w,
                ))
            })
            .collect();
        ops_pass(&load, rng.random_range(40..200)).await;
        let victim = rng.random_range(0..cluster.nodes.len());
        let v_http = cluster.nodes[victim].http;
        let kind = [KillKind::Plain, KillKind::DuringSort, KillKind::DuringDc][round as usize % 3];
        match kind {
            KillKind::Plain => {}
            KillKind::DuringSort => {
                let r = http
                    .post(format!("http://{v_http}/admin/backends/1/defrag-start"))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "defrag-start: {}", r.status());
                totals.kills_after_sort_start += 1;
                ops_pass(&load, rng.random_range(0..4)).await;
                if jobs(&http, v_http)
                    .await
                    .iter()
                    .any(|j| j.kind == JobKind::DataSort && !j.state.is_finished())
                {
                    totals.sort_running_at_kill += 1;
                }
            }
            KillKind::DuringDc => {
                let starter = cluster.nodes[rng.random_range(0..cluster.nodes.len())].http;
                let r = http
                    .post(format!("http://{starter}/admin/recovery"))
                    .bearer_auth(TOKEN)
                    .json(&serde_json::json!({"kind": "dc"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202, "dc start");
                totals.kills_after_dc_start += 1;
                ops_pass(&load, rng.random_range(0..4)).await;
                if jobs(&http, v_http)
                    .await
                    .iter()
                    .any(|j| j.kind == JobKind::RecoveryDc && !j.state.is_finished())
                {
                    totals.dc_running_at_kill += 1;
                }
            }
        }
        cluster.nodes[victim].kill();
        totals.kills += 1;
        // The load goes on against the half-dead cluster: those operations fail somewhere
        // and stay in doubt.
        ops_pass(&load, rng.random_range(10..40)).await;
        load.stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
        load.stop.store(false, Ordering::Relaxed);
        tokio::task::block_in_place(|| cluster.nodes[victim].start())
            .unwrap_or_else(|e| panic!("restart after kill {round}: {e}"));
        wait_routes(&all).await;
        for (_, c) in &single {
            wait_routes_single(c).await;
        }
        wait_jobs_finished(&http, &addrs).await;
        verify(&load, &single, &mut totals).await;
        println!(
            "kill {}/{kills} ({kind:?}, node {victim}): ops {} acked {} checks {} torn-in-flight {} losses {}",
            round + 1,
            load.ops.load(Ordering::Relaxed),
            load.acked.load(Ordering::Relaxed),
            totals.checks,
            totals.torn_in_flight,
            totals.losses.len()
        );
        assert!(
            totals.losses.is_empty(),
            "seed {seed}, kill {round}: {:#?}\nlog of node {victim}:\n{}",
            totals.losses,
            cluster.nodes[victim].log()
        );
    }
    println!(
        "process_crash summary: seed {seed}, kills {}, after data-sort start {} (sort seen running {}), \
         after dc start {} (dc seen running {}), ops {}, acknowledged {}, key/group checks {}, \
         torn in-flight overwrites {}, losses {}, {:.1} s",
        totals.kills,
        totals.kills_after_sort_start,
        totals.sort_running_at_kill,
        totals.kills_after_dc_start,
        totals.dc_running_at_kill,
        load.ops.load(Ordering::Relaxed),
        load.acked.load(Ordering::Relaxed),
        totals.checks,
        totals.torn_in_flight,
        totals.losses.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        load.acked.load(Ordering::Relaxed) > 0,
        "the load made progress"
    );
}

/// A single-group client's routes must name the group's owner again too.
async fn wait_routes_single(c: &Client) {
    wait_routes_for(c, c.groups().first().copied().unwrap_or(1)).await;
}

async fn wait_routes_for(c: &Client, g: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let _ = c.refresh_routes().await;
        if c.routes().owner(g, &key_id(0)).is_some() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group {g} routes did not come back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
