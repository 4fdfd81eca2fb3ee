//! react-trace: per-request call trees in the React JSON format, as a `tracing` Layer.
//!
//! A *request* is a root span with target `"react"` and name `"request"` (made by
//! [`request!`]); its `cmd` field names the root action, `trace_id` links the tree to the
//! request, and `trace = true` forces sampling (the wire protocol's trace bit). Without the bit
//! a root is sampled with the tracer's sampling rate. Inside a sampled request every span —
//! ordinary `tracing` spans of any target and the cheap [`action!`] spans — becomes an action
//! of the tree, with its fields and events as annotations. When the root closes the tree lands
//! in a bounded ring, and per-action statistics are updated.
//!
//! ```
//! use tracing_subscriber::layer::SubscriberExt;
//! let tracer = react_trace::Tracer::new(react_trace::TracerConfig::default())?;
//! let subscriber = tracing_subscriber::registry().with(tracer.layer());
//! tracing::subscriber::with_default(subscriber, || {
//!     let root = react_trace::request!("READ", 0x1234u64, true);
//!     let _r = root.enter();
//!     {
//!         let _a = react_trace::action!("cache.lookup").entered();
//!         if react_trace::is_sampled() {
//!             tracing::info!(hit = false, "miss");
//!         }
//!     }
//!     let _b = tracing::info_span!("eblob.read", size = 4096u64).entered();
//! });
//! let tree = tracer.get(0x1234).expect("sampled");
//! assert_eq!(tree.actions[0].name, "READ");
//! assert_eq!(tree.actions[0].actions[0].name, "cache.lookup");
//! # Ok::<(), react_trace::ConfigError>(())
//! ```
//!
//! **Cost, and how the unsampled path stays cheap.** The layer keeps a thread-local stack of
//! the tracked spans entered on each thread (maintained in `on_enter`/`on_exit`; a sampled span
//! pushes `true`, an unsampled root pushes `false`), with its top cached in a `Cell`:
//! [`is_sampled`] is one thread-local read (under 1 ns). `action!` callsites get
//! `Interest::sometimes`, and the layer's `enabled` returns that flag, so outside a sampled
//! request their spans are never created — the registry allocates nothing, and the span costs
//! about 9 ns against about 2 ns with no subscriber at all (`cargo bench -p react-trace`, see
//! README.md). Sampling is decided once, when the root is created (trace bit, else the rate),
//! never with a per-layer `Filter`, which still allocates every span.
//!
//! The trade-off: `enabled` is global — a span it refuses is refused for *every* layer of the
//! subscriber. So by default ([`UnsampledSpans::Keep`]) the layer only refuses `action!`
//! spans, and ordinary spans of other targets stay visible to log layers; outside sampled
//! requests they cost what the registry costs (about 100 ns, plus about 30 ns of span lookups
//! in this layer). With [`UnsampledSpans::Disable`] every non-root span outside a sampled
//! request is refused: ordinary `info_span!`s become as cheap as `action!`s, but fmt lines of
//! unsampled requests only show the request root as span context. Events are never refused.
//! Put `EnvFilter` on the fmt layer as a per-layer filter
//! (`fmt::layer().with_filter(EnvFilter::..)`); as a global filter its level applies to the
//! request roots too, and a root it disables is never traced. Use [`is_sampled`] in hot loops
//! before computing annotations.
//!
//! **Threads and tasks.** A span created in a request attaches to the span current on its
//! thread: use `.instrument(span)` for futures and `span.in_scope(..)` (or
//! `let _e = span.enter()`) in `spawn_blocking` closures. An explicit `parent:` works for
//! ordinary spans (they are enabled everywhere under `Keep`); an `action!` is only enabled on a
//! thread where a sampled span is entered.
//!
//! **Bounds.** Per tree: `max_nodes` actions and `max_depth` levels (more mark it `truncated`),
//! `max_annotations` per action (more are counted in `dropped_annotations`), string values cut
//! at 1 KiB, and `max_tree_age`: an older tree is published as it is (`expired`, not
//! `complete`) — by its next action or by any reader of the [`Tracer`] — so a hung request
//! still shows up. Per tracer: `max_active_trees` being recorded (more roots are not sampled;
//! counted as `skipped`), `ring_capacity` finished trees (older ones dropped and counted),
//! `max_stat_actions` statistics names (more under [`OTHER_ACTIONS`]). See [`TracerConfig`].
//!
//! Not an exporter or a log formatter; JSON is built only when [`Tracer::recent`] or
//! [`Tracer::get`] is called, by the caller, never on the traced path.

mod error;
mod layer;
mod stats;
mod tree;

pub use error::ConfigError;
pub use layer::{
    is_sampled, Clock, ReactLayer, SystemClock, Tracer, TracerConfig, UnsampledSpans, OTHER_ACTIONS,
};
pub use stats::{ActionStat, ActionStats, LatencyHistogram};
pub use tree::{ReactAction, ReactTree};

/// Target of request roots and cheap actions.
pub const TARGET: &str = "react";
/// Span name of a request root.
pub const ROOT_NAME: &str = "request";

/// A request root span: `request!(cmd, trace_id, force_sample [, more fields])`.
///
/// `cmd` becomes the root action's name, `trace_id: u64` the tree id (0: none given, the tree
/// gets a random one), `force_sample: bool` the trace bit. Extra fields use `tracing`'s field syntax and become tree annotations.
#[macro_export]
macro_rules! request {
    ($cmd:expr, $trace_id:expr, $force:expr $(, $($fields:tt)*)?) => {
        ::tracing::span!(
            target: "react",
            ::tracing::Level::INFO,
            "request",
            cmd = $cmd,
            trace_id = $trace_id,
            trace = $force
            $(, $($fields)*)?
        )
    };
}

/// A cheap action span: `action!("name" [, fields])`; disabled (never allocated) unless the
/// current request is sampled. Use `.entered()` or `.in_scope(..)`.
#[macro_export]
macro_rules! action {
    ($name:expr $(, $($fields:tt)*)?) => {
        ::tracing::span!(target: "react", ::tracing::Level::INFO, $name $(, $($fields)*)?)
    };
}
