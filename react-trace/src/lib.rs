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
//! **Cost.** `action!` spans of an unsampled request are disabled by the layer's `enabled`
//! (their callsites have `Interest::sometimes`), so the subscriber never allocates them: one
//! thread-local read per span. Sampling is decided once at the root, never with a per-layer
//! `Filter` (which still allocates every span). Ordinary spans of other targets are never
//! disabled by this layer, so log layers keep seeing them; they cost what the registry costs.
//! Put `EnvFilter` on your fmt layer as a per-layer filter
//! (`fmt::layer().with_filter(EnvFilter::..)`): as a global filter it would also disable the
//! `"react"` target. [`is_sampled`] is the check for hot loops that would compute annotations.
//! Figures: `cargo bench -p react-trace` (see README.md).
//!
//! **Threads and tasks.** Children attach to the span current on their thread: use
//! `.instrument(span)` for futures and `span.in_scope(..)` (or `let _e = span.enter()`) in
//! `spawn_blocking` closures; an explicit `parent:` works too.
//!
//! Not an exporter or a log formatter; JSON is built only when [`Tracer::recent`] or
//! [`Tracer::get`] is called.

mod error;
mod layer;
mod stats;
mod tree;

pub use error::ConfigError;
pub use layer::{
    is_sampled, Clock, ReactLayer, SystemClock, Tracer, TracerConfig, UnsampledSpans, OTHER_ACTIONS,
};
pub use stats::{ActionStat, ActionStats};
pub use tree::{ReactAction, ReactTree};

/// Target of request roots and cheap actions.
pub const TARGET: &str = "react";
/// Span name of a request root.
pub const ROOT_NAME: &str = "request";

/// A request root span: `request!(cmd, trace_id, force_sample [, more fields])`.
///
/// `cmd` becomes the root action's name, `trace_id: u64` the tree id, `force_sample: bool` the
/// trace bit. Extra fields use `tracing`'s field syntax and become tree annotations.
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
