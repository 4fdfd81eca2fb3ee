//! Nanoseconds per span (create + enter + exit + close), printed as a Markdown table:
//!
//! ```text
//! cargo bench -p react-trace --bench spans
//! ```
//!
//! Spans run inside requests of `PER_TREE` spans each; a row's figure includes its request's
//! root span amortised over them. Each figure is the best of `ROUNDS` runs (the machine is
//! shared; the minimum is the least disturbed). Rows:
//! 1. no subscriber at all;
//! 2. the registry alone with ordinary `info_span!`s, for reference;
//! 3. registry + react layer, `action!` spans inside an unsampled request;
//! 4. the same with ordinary `info_span!`s ([`UnsampledSpans::Keep`], the default);
//! 5. ordinary `info_span!`s with [`UnsampledSpans::Disable`];
//! 6. `action!` spans inside sampled requests, statistics off;
//! 7. sampled with statistics on;
//!
//! and, per call, `is_sampled()` and a whole unsampled request (root only).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::hint::black_box;
use std::time::Instant;

use react_trace::{Tracer, TracerConfig, UnsampledSpans};
use tracing_subscriber::layer::SubscriberExt;

const SPANS: u64 = 1_000_000;
const PER_TREE: u64 = 100;
const ROUNDS: usize = 5;

fn best(f: impl Fn() -> f64) -> f64 {
    (0..ROUNDS).map(|_| f()).fold(f64::INFINITY, f64::min)
}

fn actions_in_requests(force: bool) -> f64 {
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

fn ordinary_spans_in_requests(force: bool) -> f64 {
    let start = Instant::now();
    for r in 0..SPANS / PER_TREE {
        let root = react_trace::request!("BENCH", r, force);
        let _e = root.enter();
        for i in 0..PER_TREE {
            let _a = tracing::info_span!("bench.span").entered();
            black_box(i);
        }
    }
    start.elapsed().as_nanos() as f64 / SPANS as f64
}

fn bare_actions() -> f64 {
    let start = Instant::now();
    for i in 0..SPANS {
        let _a = react_trace::action!("bench.action").entered();
        black_box(i);
    }
    start.elapsed().as_nanos() as f64 / SPANS as f64
}

fn sampled_checks() -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    for _ in 0..SPANS * 10 {
        n += u64::from(black_box(react_trace::is_sampled()));
    }
    black_box(n);
    start.elapsed().as_nanos() as f64 / (SPANS * 10) as f64
}

fn unsampled_roots() -> f64 {
    let start = Instant::now();
    for r in 0..SPANS {
        let root = react_trace::request!("BENCH", r, false);
        let _e = root.enter();
        black_box(r);
    }
    start.elapsed().as_nanos() as f64 / SPANS as f64
}

fn tracer(stats: bool, unsampled_spans: UnsampledSpans) -> Tracer {
    Tracer::new(TracerConfig {
        stats,
        unsampled_spans,
        max_nodes: (PER_TREE + 1) as usize,
        ..Default::default()
    })
    .unwrap()
}

fn with_tracer(t: &Tracer, f: impl Fn() -> f64) -> f64 {
    let subscriber = tracing_subscriber::registry().with(t.layer());
    tracing::subscriber::with_default(subscriber, || best(f))
}

fn main() {
    let keep = UnsampledSpans::Keep;
    // Warm up callsite registration and the allocator.
    with_tracer(&tracer(true, keep), || actions_in_requests(true));

    let none = best(bare_actions);
    let t = tracer(false, keep);
    let unsampled = with_tracer(&t, || actions_in_requests(false));
    let ordinary_keep = with_tracer(&t, || ordinary_spans_in_requests(false));
    let checks = with_tracer(&t, sampled_checks);
    let roots = with_tracer(&t, unsampled_roots);
    assert_eq!(t.stats().trees, 0);
    let registry_only = tracing::subscriber::with_default(tracing_subscriber::registry(), || {
        best(|| ordinary_spans_in_requests(false))
    });
    let t = tracer(false, UnsampledSpans::Disable);
    let ordinary_disable = with_tracer(&t, || ordinary_spans_in_requests(false));
    assert_eq!(t.stats().trees, 0);
    let t = tracer(false, keep);
    let sampled = with_tracer(&t, || actions_in_requests(true));
    assert_eq!(t.stats().trees, ROUNDS as u64 * SPANS / PER_TREE);
    let t = tracer(true, keep);
    let sampled_stats = with_tracer(&t, || actions_in_requests(true));
    assert_eq!(
        t.stats().actions.get("bench.action").map(|a| a.count),
        Some(ROUNDS as u64 * SPANS)
    );

    println!("| setup | ns per span |");
    println!("|---|---:|");
    println!("| no subscriber | {none:.1} |");
    println!("| registry alone (no react layer), ordinary `info_span!` | {registry_only:.1} |");
    println!("| registry + react layer, `action!` in an unsampled request | {unsampled:.1} |");
    println!(
        "| registry + react layer, ordinary `info_span!` in an unsampled request (Keep) | {ordinary_keep:.1} |"
    );
    println!(
        "| registry + react layer, ordinary `info_span!` in an unsampled request (Disable) | {ordinary_disable:.1} |"
    );
    println!("| sampled (trees of {PER_TREE} actions) | {sampled:.1} |");
    println!("| sampled + per-action stats | {sampled_stats:.1} |");
    println!();
    println!("| call | ns |");
    println!("|---|---:|");
    println!("| `is_sampled()` | {checks:.1} |");
    println!("| unsampled request root (create, enter, exit, close) | {roots:.1} |");
}
