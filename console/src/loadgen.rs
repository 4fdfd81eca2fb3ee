//! `ell bench`: a closed-loop load generator over the client library, and the latency
//! histogram it reports from.
//!
//! `concurrency` tasks each issue one request at a time until the deadline, choosing a key
//! uniformly among `keys` and a read with probability `read_ratio`. Reads of keys never written
//! count as `not_found`, not as errors. Not a benchmark of the console itself (that is
//! `cargo bench -p ellipsis-console`).
//!
//! Invariants: memory is bounded whatever the duration (fixed-size histograms, no per-request
//! samples kept); percentiles are within one bucket (≤ 1/32 relative) of the exact value.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ellipsis_core::client::Client;
use ellipsis_core::protocol::{IoAttr, Status};
use ellipsis_core::Id;
use serde::Serialize;

/// Sub-buckets per power of two: relative bucket width 1/32.
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// Values below this are their own bucket.
const LINEAR: u64 = 2 * SUB as u64;
const BUCKETS: usize = LINEAR as usize + (64 - SUB_BITS as usize - 1) * SUB;

/// A log-linear latency histogram in microseconds: exact below 64, then 32 buckets per
/// power of two.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

fn bucket_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS + 1
    let sub = ((v >> (exp - SUB_BITS)) as usize) & (SUB - 1);
    LINEAR as usize + (exp - SUB_BITS - 1) as usize * SUB + sub
}

/// The largest value that falls in bucket `i`.
fn bucket_high(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let k = i - LINEAR as usize;
    let exp = (k / SUB) as u32 + SUB_BITS + 1;
    let sub = (k % SUB) as u64;
    let low = (1u64 << exp) | (sub << (exp - SUB_BITS));
    low.saturating_add((1u64 << (exp - SUB_BITS)) - 1)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            max: 0,
            sum: 0,
        }
    }

    /// Records one value.
    pub fn record(&mut self, v: u64) {
        if let Some(c) = self.counts.get_mut(bucket_of(v)) {
            *c += 1;
        }
        self.count += 1;
        self.max = self.max.max(v);
        self.sum += u128::from(v);
    }

    /// Adds another histogram's values.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Largest value recorded (exact).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Mean (exact).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The `q` quantile (0..=1): the top of the bucket holding the ⌈q·n⌉-th value, never
    /// above the maximum; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_high(i).min(self.max);
            }
        }
        self.max
    }

    /// The usual summary.
    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.count,
            mean_us: self.mean(),
            p50_us: self.quantile(0.50),
            p90_us: self.quantile(0.90),
            p99_us: self.quantile(0.99),
            max_us: self.max,
        }
    }
}

/// Latency figures of one kind of request.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Requests.
    pub count: u64,
    /// Mean latency.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest.
    pub max_us: u64,
}

/// Load settings.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Distinct keys (`bench-0` .. `bench-{keys-1}`).
    pub keys: u64,
    /// Bytes per written value.
    pub value_bytes: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// Fraction of requests that are reads, 0..=1.
    pub read_ratio: f64,
    /// How long to run.
    pub duration: Duration,
    /// Key namespace.
    pub namespace: Vec<u8>,
    /// Seed of the key/operation choice (each task derives its own).
    pub seed: u64,
}

/// What a run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LoadReport {
    /// Wall time of the run.
    pub elapsed_s: f64,
    /// Requests completed (any outcome).
    pub ops: u64,
    /// Completed requests per second.
    pub ops_per_s: f64,
    /// Reads of keys that were never written.
    pub not_found: u64,
    /// Failed requests.
    pub errors: u64,
    /// The first few distinct error messages.
    pub error_samples: Vec<String>,
    /// Every request.
    pub all: LatencySummary,
    /// Reads.
    pub reads: LatencySummary,
    /// Writes.
    pub writes: LatencySummary,
}

/// Distinct error messages kept in a report.
const ERROR_SAMPLES: usize = 5;

#[derive(Default)]
struct TaskResult {
    reads: Histogram,
    writes: Histogram,
    not_found: u64,
    errors: u64,
    error_samples: Vec<String>,
}

/// splitmix64: cheap, well mixed, reproducible per task.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Validates settings: a clear message for each impossible value.
pub fn validate(cfg: &LoadConfig) -> Result<(), String> {
    if cfg.keys == 0 {
        return Err("--keys must be at least 1".into());
    }
    if cfg.concurrency == 0 || cfg.concurrency > 4_096 {
        return Err("--concurrency must be 1..=4096".into());
    }
    if !(0.0..=1.0).contains(&cfg.read_ratio) {
        return Err("--read-ratio must be between 0 and 1".into());
    }
    if cfg.duration.is_zero() {
        return Err("--duration-s must be positive".into());
    }
    Ok(())
}

/// Writes every key once (`concurrency` at a time) so that reads find their keys; returns
/// the keys written or the first error.
pub async fn prefill(client: Arc<Client>, cfg: &LoadConfig) -> Result<u64, String> {
    use futures::StreamExt;
    let value = Bytes::from(vec![0x5a_u8; cfg.value_bytes]);
    let mut results = futures::stream::iter(0..cfg.keys)
        .map(|k| {
            let client = client.clone();
            let value = value.clone();
            let id = Id::for_key(&cfg.namespace, format!("bench-{k}").as_bytes());
            async move { client.write(&id, value, IoAttr::default()).await }
        })
        .buffer_unordered(cfg.concurrency.max(1));
    let mut written = 0;
    while let Some(r) = results.next().await {
        r.map_err(|e| e.to_string())?;
        written += 1;
    }
    Ok(written)
}

/// Runs the load against `client` and reports.
pub async fn run(client: Arc<Client>, cfg: LoadConfig) -> LoadReport {
    let value = Bytes::from(
        (0..cfg.value_bytes)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let started = Instant::now();
    let deadline = started + cfg.duration;
    let mut tasks = Vec::with_capacity(cfg.concurrency);
    for t in 0..cfg.concurrency {
        let client = client.clone();
        let value = value.clone();
        let cfg = cfg.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = cfg.seed ^ (t as u64).wrapping_mul(0xa076_1d64_78bd_642f);
            let mut r = TaskResult::default();
            while Instant::now() < deadline {
                let key = format!("bench-{}", next(&mut rng) % cfg.keys);
                let id = Id::for_key(&cfg.namespace, key.as_bytes());
                let unit = (next(&mut rng) >> 11) as f64 / (1u64 << 53) as f64;
                let read = unit < cfg.read_ratio;
                let t0 = Instant::now();
                let outcome = if read {
                    client.read(&id, 0, 0).await.map(|_| ())
                } else {
                    client
                        .write(&id, value.clone(), IoAttr::default())
                        .await
                        .map(|_| ())
                };
                let us = t0.elapsed().as_micros() as u64;
                if read {
                    r.reads.record(us);
                } else {
                    r.writes.record(us);
                }
                if let Err(e) = outcome {
                    if read && e.status() == Status::NOT_FOUND {
                        r.not_found += 1;
                    } else {
                        r.errors += 1;
                        let msg = e.to_string();
                        if r.error_samples.len() < ERROR_SAMPLES && !r.error_samples.contains(&msg)
                        {
                            r.error_samples.push(msg);
                        }
                    }
                }
            }
            r
        }));
    }
    let mut total = TaskResult::default();
    for t in tasks {
        match t.await {
            Ok(r) => {
                total.reads.merge(&r.reads);
                total.writes.merge(&r.writes);
                total.not_found += r.not_found;
                total.errors += r.errors;
                for m in r.error_samples {
                    if total.error_samples.len() < ERROR_SAMPLES
                        && !total.error_samples.contains(&m)
                    {
                        total.error_samples.push(m);
                    }
                }
            }
            Err(e) => {
                total.errors += 1;
                if total.error_samples.len() < ERROR_SAMPLES {
                    total.error_samples.push(format!("load task failed: {e}"));
                }
            }
        }
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let mut all = total.reads.clone();
    all.merge(&total.writes);
    LoadReport {
        elapsed_s,
        ops: all.count(),
        ops_per_s: if elapsed_s > 0.0 {
            all.count() as f64 / elapsed_s
        } else {
            0.0
        },
        not_found: total.not_found,
        errors: total.errors,
        error_samples: total.error_samples,
        all: all.summary(),
        reads: total.reads.summary(),
        writes: total.writes.summary(),
    }
}

/// Settings of the paced (open-loop) load `ell demo` runs in the background.
#[derive(Clone, Debug)]
pub struct PacedConfig {
    /// Distinct keys (`bench-0` .. `bench-{keys-1}`, the names [`prefill`] writes).
    pub keys: u64,
    /// Bytes per written value.
    pub value_bytes: usize,
    /// Requests started per second.
    pub ops_per_s: u32,
    /// Fraction of requests that are reads, 0..=1.
    pub read_ratio: f64,
    /// Fraction of requests that are removes (the rest are writes); removes leave removed
    /// records behind, so data-sort has something to do.
    pub remove_ratio: f64,
    /// Requests in flight at most; a tick that finds them all busy is skipped, so a slow
    /// cluster gets less load instead of a growing queue.
    pub max_in_flight: usize,
    /// Key namespace.
    pub namespace: Vec<u8>,
    /// Seed of the key/operation choice.
    pub seed: u64,
}

#[derive(Clone, Copy)]
enum Op {
    Read,
    Write,
    Remove,
}

/// Runs requests at `ops_per_s` until `stop` turns true (or its sender is dropped), then
/// waits for the requests in flight and reports. Writes and removes are counted together as
/// `writes`; reads and removes of absent keys count as `not_found`.
pub async fn paced(
    client: Arc<Client>,
    cfg: PacedConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> LoadReport {
    use futures::stream::FuturesUnordered;
    use futures::StreamExt;
    let value = Bytes::from(
        (0..cfg.value_bytes)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let period = Duration::from_secs_f64(1.0 / f64::from(cfg.ops_per_s.max(1)));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut rng = cfg.seed;
    let mut in_flight = FuturesUnordered::new();
    let mut r = TaskResult::default();
    let started = Instant::now();
    let record = |r: &mut TaskResult, (op, us, outcome): (Op, u64, Result<(), ClientErrorText>)| {
        match op {
            Op::Read => r.reads.record(us),
            Op::Write | Op::Remove => r.writes.record(us),
        }
        match outcome {
            Ok(()) => {}
            Err(ClientErrorText::NotFound) => r.not_found += 1,
            Err(ClientErrorText::Other(msg)) => {
                r.errors += 1;
                if r.error_samples.len() < ERROR_SAMPLES && !r.error_samples.contains(&msg) {
                    r.error_samples.push(msg);
                }
            }
        }
    };
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            changed = stop.changed() => if changed.is_err() { break },
            Some(done) = in_flight.next(), if !in_flight.is_empty() => record(&mut r, done),
            _ = tick.tick() => {
                if in_flight.len() >= cfg.max_in_flight.max(1) {
                    continue;
                }
                let key = format!("bench-{}", next(&mut rng) % cfg.keys.max(1));
                let id = Id::for_key(&cfg.namespace, key.as_bytes());
                let unit = (next(&mut rng) >> 11) as f64 / (1u64 << 53) as f64;
                let op = if unit < cfg.read_ratio {
                    Op::Read
                } else if unit < cfg.read_ratio + cfg.remove_ratio {
                    Op::Remove
                } else {
                    Op::Write
                };
                let client = client.clone();
                let value = value.clone();
                in_flight.push(async move {
                    let t0 = Instant::now();
                    let outcome = match op {
                        Op::Read => client.read(&id, 0, 0).await.map(|_| ()),
                        Op::Write => client.write(&id, value, IoAttr::default()).await.map(|_| ()),
                        Op::Remove => client.remove(&id).await.map(|_| ()),
                    };
                    let outcome = outcome.map_err(|e| {
                        if e.status() == Status::NOT_FOUND {
                            ClientErrorText::NotFound
                        } else {
                            ClientErrorText::Other(e.to_string())
                        }
                    });
                    (op, t0.elapsed().as_micros() as u64, outcome)
                });
            }
        }
    }
    // Requests in flight end by themselves within the client's timeout.
    while let Some(done) = in_flight.next().await {
        record(&mut r, done);
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let mut all = r.reads.clone();
    all.merge(&r.writes);
    LoadReport {
        elapsed_s,
        ops: all.count(),
        ops_per_s: if elapsed_s > 0.0 {
            all.count() as f64 / elapsed_s
        } else {
            0.0
        },
        not_found: r.not_found,
        errors: r.errors,
        error_samples: r.error_samples,
        all: all.summary(),
        reads: r.reads.summary(),
        writes: r.writes.summary(),
    }
}

/// A request's failure, reduced to what a report keeps.
enum ClientErrorText {
    NotFound,
    Other(String),
}

impl LoadReport {
    /// Human-readable lines.
    pub fn to_text(&self) -> String {
        let line = |name: &str, s: &LatencySummary| {
            format!(
                "{name:<6} {:>10} ops  p50 {:>8} µs  p90 {:>8} µs  p99 {:>8} µs  max {:>8} µs\n",
                s.count, s.p50_us, s.p90_us, s.p99_us, s.max_us
            )
        };
        let mut out = format!(
            "{} ops in {:.1} s: {:.0} ops/s, {} not found, {} errors\n",
            self.ops, self.elapsed_s, self.ops_per_s, self.not_found, self.errors
        );
        out.push_str(&line("all", &self.all));
        out.push_str(&line("reads", &self.reads));
        out.push_str(&line("writes", &self.writes));
        for e in &self.error_samples {
            out.push_str(&format!("error: {e}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=50 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 25);
        assert_eq!(h.quantile(0.9), 45);
        assert_eq!(h.quantile(1.0), 50);
        assert_eq!(h.max(), 50);
        assert!((h.mean() - 25.5).abs() < 1e-9);
    }

    #[test]
    fn large_quantiles_are_within_one_bucket() {
        let mut h = Histogram::new();
        let values: Vec<u64> = (1..=100_000u64).map(|i| i * 37).collect();
        for &v in &values {
            h.record(v);
        }
        for q in [0.5, 0.9, 0.99, 0.999] {
            let exact = values[((q * values.len() as f64).ceil() as usize) - 1];
            let got = h.quantile(q);
            assert!(got >= exact, "q{q}: {got} < {exact}");
            assert!(
                (got - exact) as f64 <= exact as f64 / 32.0 + 1.0,
                "q{q}: {got} vs {exact}"
            );
        }
        assert_eq!(h.quantile(1.0), 3_700_000);
    }

    #[test]
    fn every_bucket_top_maps_back_to_its_bucket() {
        for i in 0..BUCKETS {
            let high = bucket_high(i);
            assert_eq!(bucket_of(high), i, "bucket {i} high {high}");
            if high < u64::MAX {
                assert_eq!(bucket_of(high + 1), i + 1, "bucket {i}");
            }
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_max() {
        let (mut a, mut b) = (Histogram::new(), Histogram::new());
        a.record(10);
        b.record(1_000);
        b.record(20);
        a.merge(&b);
        assert_eq!((a.count(), a.max()), (3, 1_000));
        assert_eq!(a.quantile(0.5), 20);
        assert_eq!(Histogram::new().quantile(0.5), 0);
    }

    #[test]
    fn impossible_settings_are_refused_with_their_flag() {
        let ok = LoadConfig {
            keys: 10,
            value_bytes: 1,
            concurrency: 1,
            read_ratio: 0.5,
            duration: Duration::from_secs(1),
            namespace: Vec::new(),
            seed: 1,
        };
        assert!(validate(&ok).is_ok());
        let bad = |f: fn(&mut LoadConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            validate(&c).unwrap_err()
        };
        assert!(bad(|c| c.keys = 0).contains("--keys"));
        assert!(bad(|c| c.concurrency = 0).contains("--concurrency"));
        assert!(bad(|c| c.read_ratio = 1.5).contains("--read-ratio"));
        assert!(bad(|c| c.duration = Duration::ZERO).contains("--duration-s"));
    }
}
