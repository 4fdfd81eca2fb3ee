//! The `tracing` Layer and the [`Tracer`] handle that reads what it recorded.
//!
//! Not a log formatter and not an exporter. Invariants:
//! - sampling is decided once, when a root span (`target: "react"`, name `"request"`) is
//!   created; spans below an unsampled root are never recorded;
//! - action spans (`target: "react"`) under an unsampled root are *disabled* in
//!   [`Layer::enabled`], so the subscriber never allocates them: that is the cheap path. The
//!   decision reads a thread-local stack of "entered tracked spans", kept by `on_enter` /
//!   `on_exit`, so it costs one thread-local read;
//! - ordinary spans of other targets are never disabled by this layer (log layers keep
//!   working); under a sampled root they are recorded too;
//! - a tree holds at most `max_nodes` actions and only those started within `max_tree_age` of
//!   the root; the ring holds at most `ring_capacity` finished trees (older ones are dropped
//!   and counted); JSON is built only when a reader asks.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::stats::{ActionStats, Agg};
use crate::tree::{Building, Finished, NodeRec, ReactTree};
use crate::{ROOT_NAME, TARGET};

/// Time source of the tracer: monotonic nanoseconds for action times, wall clock for the tree
/// start. Tests inject a manual clock for deterministic output.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic nanoseconds since an arbitrary origin.
    fn now_ns(&self) -> u64;
    /// Microseconds since the Unix epoch.
    fn unix_us(&self) -> u64;
}

/// The real clock.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
    fn unix_us(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    }
}

/// Tracer settings.
#[derive(Clone)]
pub struct TracerConfig {
    /// Share of roots sampled without their trace bit (0..=1).
    pub sampling_rate: f64,
    /// Most actions recorded per tree; more mark the tree `truncated`.
    pub max_nodes: usize,
    /// Actions starting later than this after the root are not recorded (tree `truncated`).
    pub max_tree_age: Duration,
    /// Finished trees kept; older ones are dropped and counted.
    pub ring_capacity: usize,
    /// Aggregate per-action statistics of sampled trees.
    pub stats: bool,
    /// Time source.
    pub clock: Arc<dyn Clock>,
}

impl Default for TracerConfig {
    fn default() -> Self {
        TracerConfig {
            sampling_rate: 0.0,
            max_nodes: 512,
            max_tree_age: Duration::from_secs(30),
            ring_capacity: 256,
            stats: true,
            clock: Arc::new(SystemClock::default()),
        }
    }
}

impl std::fmt::Debug for TracerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracerConfig")
            .field("sampling_rate", &self.sampling_rate)
            .field("max_nodes", &self.max_nodes)
            .field("max_tree_age", &self.max_tree_age)
            .field("ring_capacity", &self.ring_capacity)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

struct Inner {
    max_nodes: usize,
    max_tree_age_ns: u64,
    ring_capacity: usize,
    clock: Arc<dyn Clock>,
    sampling_rate_bits: AtomicU64,
    stats_enabled: AtomicBool,
    ring: Mutex<VecDeque<Arc<Finished>>>,
    dropped: AtomicU64,
    trees: AtomicU64,
    truncated: AtomicU64,
    stats: Mutex<HashMap<String, Agg>>,
}

/// Handle to the recorded trees and statistics; cheap to clone. Make the layer with
/// [`Tracer::layer`].
#[derive(Clone)]
pub struct Tracer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("sampling_rate", &self.sampling_rate())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl Tracer {
    /// A tracer with `config`.
    pub fn new(config: TracerConfig) -> Tracer {
        Tracer {
            inner: Arc::new(Inner {
                max_nodes: config.max_nodes.max(1),
                max_tree_age_ns: config.max_tree_age.as_nanos() as u64,
                ring_capacity: config.ring_capacity.max(1),
                clock: config.clock,
                sampling_rate_bits: AtomicU64::new(clamp_rate(config.sampling_rate).to_bits()),
                stats_enabled: AtomicBool::new(config.stats),
                ring: Mutex::new(VecDeque::new()),
                dropped: AtomicU64::new(0),
                trees: AtomicU64::new(0),
                truncated: AtomicU64::new(0),
                stats: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The layer to add to a `tracing_subscriber::Registry`.
    pub fn layer(&self) -> ReactLayer {
        ReactLayer {
            inner: self.inner.clone(),
        }
    }

    /// Change the sampling rate at run time (clamped to 0..=1).
    pub fn set_sampling_rate(&self, rate: f64) {
        self.inner
            .sampling_rate_bits
            .store(clamp_rate(rate).to_bits(), Ordering::Relaxed);
    }

    /// Current sampling rate.
    pub fn sampling_rate(&self) -> f64 {
        f64::from_bits(self.inner.sampling_rate_bits.load(Ordering::Relaxed))
    }

    /// Turn statistics aggregation on or off.
    pub fn set_stats_enabled(&self, on: bool) {
        self.inner.stats_enabled.store(on, Ordering::Relaxed);
    }

    /// Up to `limit` finished trees, newest first, as React JSON trees.
    pub fn recent(&self, limit: usize) -> Vec<ReactTree> {
        let snapshot: Vec<Arc<Finished>> = self
            .inner
            .ring
            .lock()
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect();
        snapshot.iter().map(|f| f.to_react()).collect()
    }

    /// The newest finished tree with this trace id.
    pub fn get(&self, trace_id: u64) -> Option<ReactTree> {
        let found = self
            .inner
            .ring
            .lock()
            .iter()
            .rev()
            .find(|f| f.trace_id == trace_id)
            .cloned();
        found.map(|f| f.to_react())
    }

    /// Trees pushed out of the full ring.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Per-action statistics and counters.
    pub fn stats(&self) -> ActionStats {
        let actions = self
            .inner
            .stats
            .lock()
            .iter()
            .map(|(k, a)| (k.clone(), a.snapshot()))
            .collect();
        ActionStats {
            actions,
            trees: self.inner.trees.load(Ordering::Relaxed),
            dropped: self.dropped(),
            truncated: self.inner.truncated.load(Ordering::Relaxed),
            sampling_rate: self.sampling_rate(),
        }
    }
}

fn clamp_rate(rate: f64) -> f64 {
    if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    }
}

thread_local! {
    /// Tracked spans entered on this thread: `true` for recorded ones, `false` for unsampled
    /// roots. `TOP` caches the last element so the hot check is one Cell read.
    static STACK: RefCell<Vec<bool>> = const { RefCell::new(Vec::new()) };
    static TOP: Cell<bool> = const { Cell::new(false) };
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// Whether the span current on this thread belongs to a sampled request: a cheap check for
/// hot loops that would otherwise build annotations for nothing.
#[inline]
pub fn is_sampled() -> bool {
    TOP.with(Cell::get)
}

fn push(sampled: bool) {
    STACK.with(|s| s.borrow_mut().push(sampled));
    TOP.with(|t| t.set(sampled));
}

fn pop() {
    STACK.with(|s| {
        let mut s = s.borrow_mut();
        s.pop();
        TOP.with(|t| t.set(s.last().copied().unwrap_or(false)));
    });
}

/// xorshift64*, seeded per thread: sampling must not contend on a shared generator.
fn random_u64() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        if x == 0 {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            x = t ^ (r as *const Cell<u64> as u64).rotate_left(32) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// Span extension of a recorded span.
struct Node {
    tree: Arc<Mutex<Building>>,
    index: u32,
}

/// Span extension of an unsampled root.
struct Unsampled;

/// Collects span or event fields as annotations.
#[derive(Default)]
struct Fields {
    list: Vec<(String, Value)>,
    trace_id: Option<u64>,
    force: bool,
    cmd: Option<String>,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "trace_id" {
            self.trace_id = Some(value);
        }
        self.list
            .push((field.name().to_owned(), Value::from(value)));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "trace_id" {
            self.trace_id = u64::try_from(value).ok();
        }
        self.list
            .push((field.name().to_owned(), Value::from(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.list
            .push((field.name().to_owned(), Value::from(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "trace" {
            self.force = value;
            return;
        }
        self.list
            .push((field.name().to_owned(), Value::from(value)));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "cmd" {
            self.cmd = Some(value.to_owned());
        }
        self.list
            .push((field.name().to_owned(), Value::from(value)));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "cmd" {
            self.cmd = Some(text.clone());
        }
        self.list.push((field.name().to_owned(), Value::from(text)));
    }
}

/// The layer; see the module docs for what it records and what it costs.
pub struct ReactLayer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ReactLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReactLayer").finish_non_exhaustive()
    }
}

fn is_root(meta: &Metadata<'_>) -> bool {
    meta.target() == TARGET && meta.name() == ROOT_NAME
}

impl ReactLayer {
    fn sample(&self, force: bool) -> bool {
        if force {
            return true;
        }
        let rate = f64::from_bits(self.inner.sampling_rate_bits.load(Ordering::Relaxed));
        if rate <= 0.0 {
            return false;
        }
        if rate >= 1.0 {
            return true;
        }
        (random_u64() >> 11) as f64 / (1u64 << 53) as f64 <= rate
    }

    fn new_root<S>(&self, attrs: &Attributes<'_>, id: &Id, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if !self.sample(fields.force) {
            span.extensions_mut().insert(Unsampled);
            return;
        }
        let trace_id = fields.trace_id.unwrap_or_else(random_u64);
        let root_name = fields.cmd.clone().unwrap_or_else(|| ROOT_NAME.to_owned());
        let tree = Building {
            trace_id,
            root_name,
            start_unix_us: self.inner.clock.unix_us(),
            nodes: vec![NodeRec {
                name: attrs.metadata().name(),
                parent: None,
                start_ns: self.inner.clock.now_ns(),
                stop_ns: None,
                annotations: fields.list,
            }],
            truncated: false,
            finished: false,
        };
        span.extensions_mut().insert(Node {
            tree: Arc::new(Mutex::new(tree)),
            index: 0,
        });
    }

    fn finish(&self, b: &mut Building) {
        b.finished = true;
        let complete = b.nodes.iter().all(|n| n.stop_ns.is_some());
        let finished = Finished {
            trace_id: b.trace_id,
            root_name: std::mem::take(&mut b.root_name),
            start_unix_us: b.start_unix_us,
            nodes: std::mem::take(&mut b.nodes),
            truncated: b.truncated,
            complete,
        };
        self.inner.trees.fetch_add(1, Ordering::Relaxed);
        if finished.truncated {
            self.inner.truncated.fetch_add(1, Ordering::Relaxed);
        }
        if self.inner.stats_enabled.load(Ordering::Relaxed) {
            let mut stats = self.inner.stats.lock();
            for (i, n) in finished.nodes.iter().enumerate() {
                let Some(stop) = n.stop_ns else { continue };
                let name = if i == 0 {
                    finished.root_name.as_str()
                } else {
                    n.name
                };
                let ns = stop.saturating_sub(n.start_ns);
                match stats.get_mut(name) {
                    Some(a) => a.add(ns),
                    None => {
                        let mut a = Agg::default();
                        a.add(ns);
                        stats.insert(name.to_owned(), a);
                    }
                }
            }
        }
        let mut ring = self.inner.ring.lock();
        while ring.len() >= self.inner.ring_capacity {
            ring.pop_front();
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ring.push_back(Arc::new(finished));
    }
}

impl<S> Layer<S> for ReactLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.target() == TARGET && !is_root(meta) {
            // Decided per call in `enabled`, by the current request's sampling.
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        meta.target() != TARGET || is_root(meta) || is_sampled()
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if is_root(attrs.metadata()) {
            self.new_root(attrs, id, &ctx);
            return;
        }
        let parent = if attrs.is_contextual() {
            if !is_sampled() {
                // The current span is not a recorded one on this thread. Only a span entered
                // on another thread (spawn_blocking, a task moved between workers) can still
                // be a recorded parent; those are entered here first, which pushes `true`.
                return;
            }
            ctx.current_span().id().and_then(|p| ctx.span(p))
        } else {
            attrs.parent().and_then(|p| ctx.span(p))
        };
        let Some(parent) = parent else { return };
        let (tree, parent_index) = {
            let ext = parent.extensions();
            let Some(node) = ext.get::<Node>() else {
                return;
            };
            (node.tree.clone(), node.index)
        };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let index = {
            let mut b = tree.lock();
            // Taken under the lock: start times then grow with the node index.
            let now = self.inner.clock.now_ns();
            let root_start = b.nodes.first().map_or(now, |n| n.start_ns);
            if b.finished {
                return;
            }
            if b.nodes.len() >= self.inner.max_nodes
                || now.saturating_sub(root_start) > self.inner.max_tree_age_ns
            {
                b.truncated = true;
                return;
            }
            b.nodes.push(NodeRec {
                name: attrs.metadata().name(),
                parent: Some(parent_index),
                start_ns: now,
                stop_ns: None,
                annotations: fields.list,
            });
            (b.nodes.len() - 1) as u32
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Node { tree, index });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let ext = span.extensions();
        let Some(node) = ext.get::<Node>() else {
            return;
        };
        let mut fields = Fields::default();
        values.record(&mut fields);
        let mut b = node.tree.lock();
        if let Some(n) = b.nodes.get_mut(node.index as usize) {
            n.annotations.extend(fields.list);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.is_contextual() && !is_sampled() {
            return;
        }
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let ext = span.extensions();
        let Some(node) = ext.get::<Node>() else {
            return;
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let now = self.inner.clock.now_ns();
        let mut b = node.tree.lock();
        let root_start = b.nodes.first().map_or(now, |n| n.start_ns);
        let mut obj = serde_json::Map::new();
        obj.insert(
            "time".into(),
            Value::from(now.saturating_sub(root_start) / 1_000),
        );
        obj.insert(
            "level".into(),
            Value::from(event.metadata().level().as_str()),
        );
        for (k, v) in fields.list {
            obj.insert(k, v);
        }
        if let Some(n) = b.nodes.get_mut(node.index as usize) {
            n.annotations.push(("events".into(), Value::Object(obj)));
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let ext = span.extensions();
        if ext.get::<Node>().is_some() {
            push(true);
        } else if ext.get::<Unsampled>().is_some() {
            push(false);
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let ext = span.extensions();
        if ext.get::<Node>().is_some() || ext.get::<Unsampled>().is_some() {
            pop();
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let ext = span.extensions();
        let Some(node) = ext.get::<Node>() else {
            return;
        };
        let now = self.inner.clock.now_ns();
        let mut b = node.tree.lock();
        if b.finished {
            return;
        }
        if let Some(n) = b.nodes.get_mut(node.index as usize) {
            n.stop_ns = Some(now);
        }
        if node.index == 0 {
            self.finish(&mut b);
        }
    }
}
