//! Nanoseconds per span (create + enter + exit + close) in four setups, printed as a table:
//!
//! ```text
//! cargo bench -p react-trace --bench spans
//! ```
//!
//! 1. no subscriber at all;
//! 2. registry + react layer, `action!` spans inside an unsampled request;
//! 3. the same inside sampled requests (100 actions per tree), statistics off;
//! 4. sampled with statistics on.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::hint::black_box;
use std::time::Instant;

use tracing_subscriber::layer::SubscriberExt;

const SPANS: u64 = 2_000_000;
const PER_TREE: u64 = 100;

fn spans_in_requests(force: bool) -> f64 {
    let start = Instant::now();
    for r in 0..SPANS / PER_TREE {
        let root = react_trace::request!("BENCH", r, force);
        let _e = root.enter();
        for i in 0..PER_TREE {
            let _a = react_trace::action!("bench.action").entered();
            black_box(i);
        }
    }
    start.elapsed().as_nanos() as f64 / SPANS as f64
}

fn bare_spans() -> f64 {
    let start = Instant::now();
    for i in 0..SPANS {
        let _a = react_trace::action!("bench.action").entered();
        black_box(i);
    }
    start.elapsed().as_nanos() as f64 / SPANS as f64
}

fn with_tracer(stats: bool, f: impl FnOnce() -> f64) -> (f64, react_trace::Tracer) {
    let tracer = react_trace::Tracer::new(react_trace::TracerConfig {
        stats,
        max_nodes: (PER_TREE + 1) as usize,
        ..Default::default()
    })
    .unwrap();
    let subscriber = tracing_subscriber::registry().with(tracer.layer());
    let ns = tracing::subscriber::with_default(subscriber, f);
    (ns, tracer)
}

fn main() {
    // Warm up callsite registration and the allocator.
    let _ = with_tracer(true, || spans_in_requests(true));
    let none = bare_spans();
    let (unsampled, t) = with_tracer(false, || spans_in_requests(false));
    assert_eq!(t.stats().trees, 0);
    let (sampled, t) = with_tracer(false, || spans_in_requests(true));
    assert_eq!(t.stats().trees, SPANS / PER_TREE);
    let (sampled_stats, t) = with_tracer(true, || spans_in_requests(true));
    assert_eq!(
        t.stats().actions.get("bench.action").map(|a| a.count),
        Some(SPANS)
    );
    println!("| setup | ns per span |");
    println!("|---|---:|");
    println!("| no subscriber | {none:.1} |");
    println!("| registry + react layer, unsampled request | {unsampled:.1} |");
    println!("| sampled (trees of {PER_TREE} actions) | {sampled:.1} |");
    println!("| sampled + per-action stats | {sampled_stats:.1} |");
}
