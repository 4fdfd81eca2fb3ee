//! The `tracing` Layer and the [`Tracer`] handle that reads what it recorded.
//!
//! Not a log formatter and not an exporter. Invariants:
//! - sampling is decided once, when a root span (`target: "react"`, name `"request"`) is
//!   created; spans below an unsampled root are never recorded;
//! - action spans (`target: "react"`) under an unsampled root are *disabled* in
//!   [`Layer::enabled`], so the subscriber never allocates them: that is the cheap path. The
//!   decision reads a thread-local stack of "entered tracked spans", kept by `on_enter` /
//!   `on_exit`, so it costs one thread-local read;
//! - ordinary spans of other targets are not disabled by this layer (log layers keep working)
//!   unless [`UnsampledSpans::Disable`] is chosen; under a sampled root they are recorded too;
//! - everything is bounded: `max_nodes` actions and `max_depth` levels per tree (more mark it
//!   `truncated`), `max_annotations` per action, `max_tree_age` per tree (an older tree is
//!   published as `expired`, not `complete`), `max_active_trees` trees being recorded at once
//!   (more roots are not sampled, and counted), `ring_capacity` finished trees (older ones are
//!   dropped and counted), `max_stat_actions` names in the statistics; JSON is built only when a
//!   reader asks.

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

use crate::error::ConfigError;
use crate::stats::{ActionStats, LatencyHistogram};
use crate::tree::{bounded_string, Building, Finished, NodeRec, ReactTree, EVENTS_KEY};
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

/// What the layer does with ordinary spans (targets other than `"react"`) outside sampled
/// requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnsampledSpans {
    /// Leave them enabled, so log layers (fmt) keep showing them as context; they cost what
    /// the registry costs (tens of ns each). Only `action!` spans are disabled.
    #[default]
    Keep,
    /// Disable every non-root span that is not inside a sampled request, for *all* layers of
    /// the subscriber (`enabled` is global): ordinary `info_span!`s become as cheap as
    /// `action!`s, but log lines of unsampled requests lose their inner span context. Events
    /// are never disabled.
    Disable,
}

/// Tracer settings. [`Tracer::new`] checks them.
#[derive(Clone)]
pub struct TracerConfig {
    /// Share of roots sampled without their trace bit (0..=1).
    pub sampling_rate: f64,
    /// Most actions recorded per tree (1..=1 000 000); more mark the tree `truncated`.
    pub max_nodes: usize,
    /// Deepest action level recorded, the root being 0 (1..=40); deeper actions are not
    /// recorded and mark the tree `truncated`. The bound keeps the JSON within
    /// `serde_json`'s default recursion limit, so readers can parse it back.
    pub max_depth: u32,
    /// Most annotations (fields and events) per action (0..=10 000); more are counted in the
    /// action's `dropped_annotations`.
    pub max_annotations: usize,
    /// A tree older than this is published as it is (`expired`, not `complete`) and stops
    /// recording: a hung request still shows up, and its memory is bounded in time. Checked
    /// when the tree records an action and whenever the [`Tracer`] is read.
    pub max_tree_age: Duration,
    /// Most trees being recorded at once (1..=1 000 000); a root arriving when that many are
    /// open is not sampled (counted in [`ActionStats::skipped`]).
    pub max_active_trees: usize,
    /// Finished trees kept (1..=1 000 000); older ones are dropped and counted.
    pub ring_capacity: usize,
    /// Aggregate per-action statistics of sampled trees.
    pub stats: bool,
    /// Most distinct action names in the statistics (1..=100 000); further names are counted
    /// under `"(other)"`. Root names come from the `cmd` field, so they are not bounded by the
    /// number of callsites.
    pub max_stat_actions: usize,
    /// Ordinary spans outside sampled requests: kept (default) or disabled.
    pub unsampled_spans: UnsampledSpans,
    /// Time source.
    pub clock: Arc<dyn Clock>,
}

impl Default for TracerConfig {
    fn default() -> Self {
        TracerConfig {
            sampling_rate: 0.0,
            max_nodes: 512,
            max_depth: 32,
            max_annotations: 64,
            max_tree_age: Duration::from_secs(30),
            max_active_trees: 4096,
            ring_capacity: 256,
            stats: true,
            max_stat_actions: 1024,
            unsampled_spans: UnsampledSpans::Keep,
            clock: Arc::new(SystemClock::default()),
        }
    }
}

impl TracerConfig {
    /// Reject values the tracer cannot honour.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_rate(self.sampling_rate)?;
        let ranges: [(&'static str, u64, u64, u64); 6] = [
            ("max_nodes", self.max_nodes as u64, 1, 1_000_000),
            ("max_depth", u64::from(self.max_depth), 1, MAX_DEPTH_LIMIT),
            ("max_annotations", self.max_annotations as u64, 0, 10_000),
            (
                "max_active_trees",
                self.max_active_trees as u64,
                1,
                1_000_000,
            ),
            ("ring_capacity", self.ring_capacity as u64, 1, 1_000_000),
            ("max_stat_actions", self.max_stat_actions as u64, 1, 100_000),
        ];
        for (field, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::OutOfRange {
                    field,
                    value,
                    min,
                    max,
                });
            }
        }
        Ok(())
    }
}

/// Deepest `max_depth` accepted: each action level is two JSON nesting levels (object and
/// `actions` array) and `serde_json` refuses input nested deeper than 128.
const MAX_DEPTH_LIMIT: u64 = 40;

/// Most entries in a thread's stack of entered tracked spans. Nesting deeper than this is
/// a runaway recursion; the extra spans are then simply not tracked on that thread.
const MAX_STACK_DEPTH: usize = 1024;

/// Statistics key of action names past `max_stat_actions`.
pub const OTHER_ACTIONS: &str = "(other)";

impl std::fmt::Debug for TracerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracerConfig")
            .field("sampling_rate", &self.sampling_rate)
            .field("max_nodes", &self.max_nodes)
            .field("max_depth", &self.max_depth)
            .field("max_annotations", &self.max_annotations)
            .field("max_tree_age", &self.max_tree_age)
            .field("max_active_trees", &self.max_active_trees)
            .field("ring_capacity", &self.ring_capacity)
            .field("stats", &self.stats)
            .field("max_stat_actions", &self.max_stat_actions)
            .field("unsampled_spans", &self.unsampled_spans)
            .finish_non_exhaustive()
    }
}

struct Inner {
    max_nodes: usize,
    max_depth: u32,
    max_annotations: usize,
    max_tree_age_ns: u64,
    max_active_trees: usize,
    ring_capacity: usize,
    max_stat_actions: usize,
    unsampled_spans: UnsampledSpans,
    clock: Arc<dyn Clock>,
    sampling_rate_bits: AtomicU64,
    stats_enabled: AtomicBool,
    ring: Mutex<VecDeque<Arc<Finished>>>,
    /// Trees being recorded, by `Building::seq`, so readers can publish the ones that outlived
    /// `max_tree_age` even if nothing touches them any more. Lock order: a tree's lock, then
    /// this one; never the other way round.
    active: Mutex<HashMap<u64, Arc<Mutex<Building>>>>,
    next_seq: AtomicU64,
    dropped: AtomicU64,
    trees: AtomicU64,
    truncated: AtomicU64,
    expired: AtomicU64,
    skipped: AtomicU64,
    stats: Mutex<HashMap<String, LatencyHistogram>>,
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
    /// A tracer with `config`, or the first setting it rejects.
    pub fn new(config: TracerConfig) -> Result<Tracer, ConfigError> {
        config.validate()?;
        Ok(Tracer {
            inner: Arc::new(Inner {
                max_nodes: config.max_nodes,
                max_depth: config.max_depth,
                max_annotations: config.max_annotations,
                max_tree_age_ns: u64::try_from(config.max_tree_age.as_nanos()).unwrap_or(u64::MAX),
                max_active_trees: config.max_active_trees,
                ring_capacity: config.ring_capacity,
                max_stat_actions: config.max_stat_actions,
                unsampled_spans: config.unsampled_spans,
                clock: config.clock,
                sampling_rate_bits: AtomicU64::new(config.sampling_rate.to_bits()),
                stats_enabled: AtomicBool::new(config.stats),
                ring: Mutex::new(VecDeque::with_capacity(config.ring_capacity.min(4096))),
                active: Mutex::new(HashMap::new()),
                next_seq: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                trees: AtomicU64::new(0),
                truncated: AtomicU64::new(0),
                expired: AtomicU64::new(0),
                skipped: AtomicU64::new(0),
                stats: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The layer to add to a `tracing_subscriber::Registry`.
    pub fn layer(&self) -> ReactLayer {
        ReactLayer {
            inner: self.inner.clone(),
        }
    }

    /// Change the sampling rate at run time; NaN or a value outside 0..=1 is refused.
    pub fn set_sampling_rate(&self, rate: f64) -> Result<(), ConfigError> {
        check_rate(rate)?;
        self.inner
            .sampling_rate_bits
            .store(rate.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// Take a request's sampling decision now: `true` when `force` (the trace bit) is set,
    /// else with the sampling rate. For callers that skip creating the roots of unsampled
    /// requests (a root costs a registry span even when the layer ignores it): create the
    /// root only when this says so, with `force_sample = true`, so the decision is not taken
    /// twice. Roots made with [`request!`](crate::request) without asking first are sampled
    /// as before.
    pub fn decide(&self, force: bool) -> bool {
        self.inner.sample(force)
    }

    /// [`Tracer::decide`] with `rate` instead of the tracer's own sampling rate: for a host
    /// whose components sample at rates of their own while sharing the process's one tracer
    /// (several storage nodes in one process, each configured apart). `rate` is clamped to
    /// `0.0..=1.0`; NaN samples nothing.
    pub fn decide_at(&self, force: bool, rate: f64) -> bool {
        force || sample_at(rate)
    }

    /// Current sampling rate.
    pub fn sampling_rate(&self) -> f64 {
        f64::from_bits(self.inner.sampling_rate_bits.load(Ordering::Relaxed))
    }

    /// Turn statistics aggregation on or off.
    pub fn set_stats_enabled(&self, on: bool) {
        self.inner.stats_enabled.store(on, Ordering::Relaxed);
    }

    /// Up to `limit` finished trees, newest first, as React JSON trees. Trees that outlived
    /// `max_tree_age` are published first.
    pub fn recent(&self, limit: usize) -> Vec<ReactTree> {
        self.expire_old_trees();
        let snapshot: Vec<Arc<Finished>> = self
            .inner
            .ring
            .lock()
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect();
        // JSON trees are built here, by the reader, after the ring's lock is released.
        snapshot.iter().map(|f| f.to_react()).collect()
    }

    /// The newest finished tree with this trace id.
    pub fn get(&self, trace_id: u64) -> Option<ReactTree> {
        self.get_where(trace_id, None)
    }

    /// Up to `limit` finished trees whose root span recorded the string field `field = value`
    /// (e.g. `("node", "127.0.0.1:1025")` when several nodes of one process share a tracer),
    /// newest first. Only the matching trees are turned into JSON.
    pub fn recent_where(&self, limit: usize, field: (&str, &str)) -> Vec<ReactTree> {
        self.expire_old_trees();
        let snapshot: Vec<Arc<Finished>> = self
            .inner
            .ring
            .lock()
            .iter()
            .rev()
            .filter(|f| f.root_field_is(field))
            .take(limit)
            .cloned()
            .collect();
        snapshot.iter().map(|f| f.to_react()).collect()
    }

    /// The newest finished tree with this trace id and, when given, the root field
    /// `field = value`: one trace id names the trees of one request on every node it crossed.
    pub fn get_where(&self, trace_id: u64, field: Option<(&str, &str)>) -> Option<ReactTree> {
        self.expire_old_trees();
        let found = self
            .inner
            .ring
            .lock()
            .iter()
            .rev()
            .find(|f| f.trace_id == trace_id && field.is_none_or(|kv| f.root_field_is(kv)))
            .cloned();
        found.map(|f| f.to_react())
    }

    /// Trees pushed out of the full ring.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Per-action statistics and counters.
    pub fn stats(&self) -> ActionStats {
        self.expire_old_trees();
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
            expired: self.inner.expired.load(Ordering::Relaxed),
            skipped: self.inner.skipped.load(Ordering::Relaxed),
            active: self.inner.active.lock().len() as u64,
            sampling_rate: self.sampling_rate(),
        }
    }

    /// Forget the aggregated statistics (counters stay).
    pub fn reset_stats(&self) {
        self.inner.stats.lock().clear();
    }

    /// Publish every tree being recorded that is older than `max_tree_age`, as `expired`.
    /// Readers call this themselves; it is public for a node that wants to run it on a timer.
    /// Returns how many trees it published.
    pub fn expire_old_trees(&self) -> usize {
        let candidates: Vec<Arc<Mutex<Building>>> =
            self.inner.active.lock().values().cloned().collect();
        let now = self.inner.clock.now_ns();
        let mut published = 0;
        for tree in candidates {
            let mut b = tree.lock();
            if !b.finished && now.saturating_sub(b.root_start_ns()) > self.inner.max_tree_age_ns {
                self.inner.finish(&mut b, Some(now));
                published += 1;
            }
        }
        published
    }
}

fn check_rate(rate: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(ConfigError::SamplingRate(rate))
    }
}

/// One tracked span entered on this thread.
#[derive(Clone, Copy)]
struct Entered {
    /// `Id::into_u64` of the span; exits are matched by identity, so a span exited out of
    /// order (a guard dropped late) removes its own entry, not the top one.
    span: u64,
    /// Recorded (`true`) or an unsampled root (`false`, hides an enclosing sampled request).
    sampled: bool,
}

thread_local! {
    /// Tracked spans entered on this thread. `TOP` caches whether the last one is sampled so
    /// the hot check is one Cell read.
    static STACK: RefCell<Vec<Entered>> = const { RefCell::new(Vec::new()) };
    static TOP: Cell<bool> = const { Cell::new(false) };
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// Whether the span current on this thread belongs to a sampled request: a cheap check for
/// hot loops that would otherwise build annotations for nothing.
#[inline]
pub fn is_sampled() -> bool {
    // `try_with`: spans may still close while thread-locals are being destroyed.
    TOP.try_with(Cell::get).unwrap_or(false)
}

fn stack_is_empty() -> bool {
    STACK
        .try_with(|s| s.try_borrow().map_or(true, |s| s.is_empty()))
        .unwrap_or(true)
}

fn push(span: u64, sampled: bool) {
    let _ = STACK.try_with(|s| {
        let Ok(mut s) = s.try_borrow_mut() else {
            return;
        };
        if s.len() < MAX_STACK_DEPTH {
            s.push(Entered { span, sampled });
            let _ = TOP.try_with(|t| t.set(sampled));
        }
    });
}

fn pop(span: u64) {
    let _ = STACK.try_with(|s| {
        let Ok(mut s) = s.try_borrow_mut() else {
            return;
        };
        if let Some(pos) = s.iter().rposition(|e| e.span == span) {
            s.remove(pos);
        }
        let top = s.last().is_some_and(|e| e.sampled);
        let _ = TOP.try_with(|t| t.set(top));
    });
}

/// True with probability `rate` (never for `rate <= 0` or NaN, always for `rate >= 1`).
fn sample_at(rate: f64) -> bool {
    if rate.is_nan() || rate <= 0.0 {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64 <= rate
}

/// xorshift64*, seeded per thread: sampling must not contend on a shared generator.
fn random_u64() -> u64 {
    RNG.try_with(|r| {
        let mut x = r.get();
        if x == 0 {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            // The cell's address differs per thread, so threads seeded in the same
            // nanosecond still diverge.
            x = t ^ (r as *const Cell<u64> as u64).rotate_left(32) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
    .unwrap_or(0x9e37_79b9_7f4a_7c15)
}

/// Span extension of a recorded span.
struct Node {
    tree: Arc<Mutex<Building>>,
    index: u32,
}

/// Span extension of an unsampled root.
struct Unsampled;

/// A span field named like the key under which events are listed is renamed, so it cannot
/// be mistaken for an event.
const EVENTS_FIELD: &str = "field.events";

/// Collects span or event fields as annotations.
#[derive(Default)]
struct Fields {
    /// Reading a root span: `trace_id`, `trace` and `cmd` have their request meaning.
    root: bool,
    list: Vec<(&'static str, Value)>,
    trace_id: Option<u64>,
    cmd: Option<String>,
}

impl Fields {
    fn root() -> Fields {
        Fields {
            root: true,
            ..Fields::default()
        }
    }

    fn push(&mut self, field: &Field, value: Value) {
        let name = match field.name() {
            EVENTS_KEY => EVENTS_FIELD,
            other => other,
        };
        self.list.push((name, value));
    }
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.root && field.name() == "trace_id" {
            self.trace_id = Some(value);
        }
        self.push(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.root && field.name() == "trace_id" {
            self.trace_id = u64::try_from(value).ok();
        }
        self.push(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.root && field.name() == "trace" {
            // The trace bit is the sampling decision, already taken.
            return;
        }
        self.push(field, Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.root && field.name() == "cmd" {
            self.cmd = Some(value.to_owned());
        }
        self.push(field, bounded_string(value.to_owned()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if self.root && field.name() == "cmd" {
            self.cmd = Some(text.clone());
        }
        self.push(field, bounded_string(text));
    }
}

/// Reads only the trace bit of a root: the sampling decision must not pay for formatting and
/// allocating every field of the (mostly unsampled) requests.
#[derive(Default)]
struct TraceBit(bool);

impl Visit for TraceBit {
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "trace" {
            self.0 = value;
        }
    }
    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
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

impl Inner {
    fn sample(&self, force: bool) -> bool {
        force
            || sample_at(f64::from_bits(
                self.sampling_rate_bits.load(Ordering::Relaxed),
            ))
    }

    /// Is this span kept for the current request? Spans the layer may disable are only
    /// enabled inside a sampled request.
    fn may_disable(&self, meta: &Metadata<'_>) -> bool {
        meta.is_span()
            && !is_root(meta)
            && (meta.target() == TARGET || self.unsampled_spans == UnsampledSpans::Disable)
    }

    /// Close the tree and publish it. `expired_at` is the time a tree that outlived
    /// `max_tree_age` is cut at; `None` when its root closed. Called with the tree's lock.
    fn finish(&self, b: &mut Building, expired_at: Option<u64>) {
        b.finished = true;
        let complete = expired_at.is_none() && b.nodes.iter().all(|n| n.stop_ns.is_some());
        if let (Some(now), Some(root)) = (expired_at, b.nodes.first_mut()) {
            // Open actions are shown up to the cut, as the root's stop.
            root.stop_ns = Some(now);
        }
        let finished = Finished {
            trace_id: b.trace_id,
            root_name: std::mem::take(&mut b.root_name),
            start_unix_us: b.start_unix_us,
            nodes: std::mem::take(&mut b.nodes),
            truncated: b.truncated,
            complete,
            expired: expired_at.is_some(),
        };
        self.active.lock().remove(&b.seq);
        self.trees.fetch_add(1, Ordering::Relaxed);
        if finished.truncated {
            self.truncated.fetch_add(1, Ordering::Relaxed);
        }
        if finished.expired {
            self.expired.fetch_add(1, Ordering::Relaxed);
        }
        if self.stats_enabled.load(Ordering::Relaxed) {
            self.aggregate(&finished);
        }
        let mut ring = self.ring.lock();
        while ring.len() >= self.ring_capacity {
            ring.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ring.push_back(Arc::new(finished));
    }

    fn aggregate(&self, finished: &Finished) {
        let mut stats = self.stats.lock();
        for (i, n) in finished.nodes.iter().enumerate() {
            // An expired root was cut, not stopped: its duration means nothing.
            if i == 0 && finished.expired {
                continue;
            }
            let Some(stop) = n.stop_ns else { continue };
            let name = if i == 0 {
                finished.root_name.as_str()
            } else {
                n.name
            };
            let ns = stop.saturating_sub(n.start_ns);
            if let Some(a) = stats.get_mut(name) {
                a.add(ns);
                continue;
            }
            let key = if stats.len() + 1 < self.max_stat_actions {
                name
            } else {
                // One slot stays reserved for "(other)".
                OTHER_ACTIONS
            };
            stats.entry(key.to_owned()).or_default().add(ns);
        }
    }
}

impl ReactLayer {
    fn new_root<S>(&self, attrs: &Attributes<'_>, id: &Id, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let inner = &*self.inner;
        let Some(span) = ctx.span(id) else { return };
        let mut bit = TraceBit::default();
        attrs.record(&mut bit);
        if !inner.sample(bit.0) {
            span.extensions_mut().insert(Unsampled);
            return;
        }
        let mut fields = Fields::root();
        attrs.record(&mut fields);
        let seq = inner.next_seq.fetch_add(1, Ordering::Relaxed);
        // 0 is "no id" on the wire (a request the client did not trace): give the tree its own.
        let trace_id = fields
            .trace_id
            .filter(|&t| t != 0)
            .unwrap_or_else(random_u64);
        let root_name = fields.cmd.take().unwrap_or_else(|| ROOT_NAME.to_owned());
        let mut root = NodeRec {
            name: attrs.metadata().name(),
            parent: None,
            depth: 0,
            start_ns: inner.clock.now_ns(),
            stop_ns: None,
            annotations: Vec::with_capacity(fields.list.len().min(inner.max_annotations)),
            dropped_annotations: 0,
        };
        for (k, v) in fields.list {
            root.annotate(k, v, inner.max_annotations);
        }
        let tree = Arc::new(Mutex::new(Building {
            seq,
            trace_id,
            root_name,
            start_unix_us: inner.clock.unix_us(),
            nodes: vec![root],
            truncated: false,
            finished: false,
        }));
        {
            let mut active = inner.active.lock();
            if active.len() >= inner.max_active_trees {
                drop(active);
                inner.skipped.fetch_add(1, Ordering::Relaxed);
                span.extensions_mut().insert(Unsampled);
                return;
            }
            active.insert(seq, tree.clone());
        }
        span.extensions_mut().insert(Node { tree, index: 0 });
    }
}

impl<S> Layer<S> for ReactLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.inner.may_disable(meta) {
            // Decided per call in `enabled`, by the current request's sampling.
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        is_sampled() || !self.inner.may_disable(meta)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if is_root(attrs.metadata()) {
            self.new_root(attrs, id, &ctx);
            return;
        }
        let inner = &*self.inner;
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
            if b.finished {
                return;
            }
            // Taken under the lock: start times then grow with the node index.
            let now = inner.clock.now_ns();
            if now.saturating_sub(b.root_start_ns()) > inner.max_tree_age_ns {
                inner.finish(&mut b, Some(now));
                return;
            }
            let depth = b
                .nodes
                .get(parent_index as usize)
                .map_or(u32::MAX, |p| p.depth.saturating_add(1));
            if b.nodes.len() >= inner.max_nodes || depth > inner.max_depth {
                b.truncated = true;
                return;
            }
            let mut node = NodeRec {
                name: attrs.metadata().name(),
                parent: Some(parent_index),
                depth,
                start_ns: now,
                stop_ns: None,
                annotations: Vec::with_capacity(fields.list.len().min(inner.max_annotations)),
                dropped_annotations: 0,
            };
            for (k, v) in fields.list {
                node.annotate(k, v, inner.max_annotations);
            }
            b.nodes.push(node);
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
            for (k, v) in fields.list {
                n.annotate(k, v, self.inner.max_annotations);
            }
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
        let root_start = b.root_start_ns();
        let Some(n) = b.nodes.get_mut(node.index as usize) else {
            return;
        };
        if n.annotations.len() >= self.inner.max_annotations {
            // Count it without building the event object.
            n.dropped_annotations = n.dropped_annotations.saturating_add(1);
            return;
        }
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
            obj.insert(k.to_owned(), v);
        }
        n.annotate(EVENTS_KEY, Value::Object(obj), self.inner.max_annotations);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let ext = span.extensions();
        if ext.get::<Node>().is_some() {
            push(id.into_u64(), true);
        } else if ext.get::<Unsampled>().is_some() {
            push(id.into_u64(), false);
        }
    }

    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        // Nothing tracked is entered on this thread: the common, unsampled case costs one
        // thread-local read and no span lookup.
        if !stack_is_empty() {
            pop(id.into_u64());
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
            self.inner.finish(&mut b, None);
        }
    }
}
