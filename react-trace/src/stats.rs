//! Per-action statistics aggregated over sampled trees: count, total, min, max and a
//! log-linear latency histogram for percentiles.
//!
//! Not per request and not a metrics exporter (the node turns these into Prometheus text).
//! Invariants: the histogram has a fixed number of buckets (bounded memory per action name);
//! a reported percentile is the upper bound of the bucket holding it, so it overestimates by at
//! most one bucket width (12.5 % of the value).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Sub-buckets per power of two: 8 gives ≤ 12.5 % relative error.
const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets covering 0 ..= u64::MAX nanoseconds.
pub(crate) const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// Bucket of a value.
pub(crate) fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
    ((exp - SUB_BITS + 1) as u64 * SUB + sub) as usize
}

/// Largest value that falls in bucket `b`.
pub(crate) fn bucket_upper(b: usize) -> u64 {
    let b = b as u64;
    if b < SUB {
        return b;
    }
    let exp = b / SUB - 1 + u64::from(SUB_BITS);
    let sub = b % SUB;
    let low = (SUB + sub) << (exp - u64::from(SUB_BITS));
    let width = 1u64 << (exp - u64::from(SUB_BITS));
    low.saturating_add(width - 1)
}

/// Running aggregate of durations in nanoseconds: count, total, min, max and a log-linear
/// histogram (fixed size, ≤ 12.5 % percentile error). Also used by the node for per-command
/// latencies.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    count: u64,
    total_ns: u64,
    min_ns: u64,
    max_ns: u64,
    buckets: Box<[u64; BUCKETS]>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            count: 0,
            total_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            buckets: Box::new([0; BUCKETS]),
        }
    }
}

impl LatencyHistogram {
    /// Record one duration.
    pub fn add(&mut self, ns: u64) {
        self.count += 1;
        self.total_ns = self.total_ns.saturating_add(ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
        if let Some(b) = self.buckets.get_mut(bucket_of(ns)) {
            *b += 1;
        }
    }

    /// Value at quantile `q` (0..=1), capped by the observed maximum.
    fn quantile_ns(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (b, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_upper(b).min(self.max_ns);
            }
        }
        self.max_ns
    }

    /// Count, total, min, max, mean and percentiles, in microseconds.
    pub fn snapshot(&self) -> ActionStat {
        let us = |ns: u64| ns / 1_000;
        ActionStat {
            count: self.count,
            total_us: us(self.total_ns),
            min_us: if self.count == 0 { 0 } else { us(self.min_ns) },
            max_us: us(self.max_ns),
            mean_us: us(self.total_ns.checked_div(self.count).unwrap_or(0)),
            p50_us: us(self.quantile_ns(0.50)),
            p90_us: us(self.quantile_ns(0.90)),
            p99_us: us(self.quantile_ns(0.99)),
        }
    }
}

/// Statistics of one action name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActionStat {
    /// Times the action was recorded.
    pub count: u64,
    /// Sum of durations.
    pub total_us: u64,
    /// Shortest.
    pub min_us: u64,
    /// Longest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: u64,
    /// Median (bucket upper bound, ≤ 12.5 % high).
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
}

/// Everything the tracer reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActionStats {
    /// Per action name (the root under its command name).
    pub actions: BTreeMap<String, ActionStat>,
    /// Sampled trees finished.
    pub trees: u64,
    /// Trees pushed out of the ring before anyone read them.
    pub dropped: u64,
    /// Trees that hit the node or depth limit.
    pub truncated: u64,
    /// Trees published because they outlived the maximum tree age.
    pub expired: u64,
    /// Roots not sampled because `max_active_trees` trees were being recorded.
    pub skipped: u64,
    /// Trees being recorded now.
    pub active: u64,
    /// Current sampling rate (0..=1).
    pub sampling_rate: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lies_in_its_bucket_and_buckets_are_ordered() {
        let mut prev_upper = None;
        for b in 0..BUCKETS {
            let up = bucket_upper(b);
            if let Some(p) = prev_upper {
                assert!(up > p, "bucket {b}");
                assert_eq!(bucket_of(p + 1), b, "first value of bucket {b}");
            }
            assert_eq!(bucket_of(up), b);
            prev_upper = Some(up);
            if up == u64::MAX {
                break;
            }
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_are_within_one_bucket() {
        let mut a = LatencyHistogram::default();
        for us in 1..=1000u64 {
            a.add(us * 1_000);
        }
        let s = a.snapshot();
        assert_eq!(s.count, 1000);
        assert_eq!(s.min_us, 1);
        assert_eq!(s.max_us, 1000);
        assert_eq!(s.mean_us, 500);
        for (got, want) in [(s.p50_us, 500), (s.p90_us, 900), (s.p99_us, 990)] {
            assert!(
                got >= want && got as f64 <= want as f64 * 1.125,
                "{got} vs {want}"
            );
        }
    }
}
