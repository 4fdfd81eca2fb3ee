//! Per-command request counters and latency histograms, as served in `/stats/commands`.
//!
//! Not tracing (react-trace records sampled requests in detail); these count every request.
//! Memory is bounded: one entry per command name (a fixed set).

use std::collections::HashMap;
use std::time::Duration;

use ellipsis_core::protocol::Status;
use ellipsis_core::stats::{CommandStat, CommandStats};
use parking_lot::Mutex;
use react_trace::LatencyHistogram;

/// Where a request was answered from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The node's cache.
    Cache,
    /// The storage engine.
    Disk,
    /// Another node (forwarded).
    Forwarded,
    /// Neither (admin, routes, errors before any data).
    Other,
}

#[derive(Default)]
struct Entry {
    successes: u64,
    failures: u64,
    not_found: u64,
    bytes: u64,
    cache_hits: u64,
    disk: u64,
    forwarded: u64,
    latency: LatencyHistogram,
}

/// Counters of every command seen.
#[derive(Default)]
pub struct CommandCounters {
    map: Mutex<HashMap<&'static str, Entry>>,
}

impl std::fmt::Debug for CommandCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandCounters").finish_non_exhaustive()
    }
}

impl CommandCounters {
    /// Count one finished request answered with `status`.
    pub fn record(
        &self,
        cmd: &'static str,
        status: Status,
        bytes: u64,
        source: Source,
        took: Duration,
    ) {
        let mut map = self.map.lock();
        let e = map.entry(cmd).or_default();
        if status.is_ok() {
            e.successes += 1;
        } else if status == Status::NOT_FOUND {
            e.not_found += 1;
        } else {
            e.failures += 1;
        }
        e.bytes += bytes;
        match source {
            Source::Cache => e.cache_hits += 1,
            Source::Disk => e.disk += 1,
            Source::Forwarded => e.forwarded += 1,
            Source::Other => {}
        }
        e.latency.add(took.as_nanos() as u64);
    }

    /// The counters as served.
    pub fn snapshot(&self) -> CommandStats {
        let map = self.map.lock();
        CommandStats {
            commands: map
                .iter()
                .map(|(k, e)| {
                    let l = e.latency.snapshot();
                    (
                        (*k).to_owned(),
                        CommandStat {
                            successes: e.successes,
                            failures: e.failures,
                            not_found: e.not_found,
                            bytes: e.bytes,
                            cache_hits: e.cache_hits,
                            disk: e.disk,
                            forwarded: e.forwarded,
                            p50_us: l.p50_us,
                            p90_us: l.p90_us,
                            p99_us: l.p99_us,
                            max_us: l.max_us,
                            latency_count: l.count,
                            latency_sum_us: l.total_us,
                        },
                    )
                })
                .collect(),
        }
    }
}
