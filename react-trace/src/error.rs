//! Typed errors of the tracer's configuration.
//!
//! Not runtime failures: once built, the layer never fails (a bound that is hit truncates or
//! drops and is counted, never errors). Invariant: every rejected value is named in the error.

/// A rejected setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The sampling rate is NaN or outside `0.0..=1.0`.
    #[error("sampling rate {0} is not a number within 0.0..=1.0")]
    SamplingRate(f64),
    /// A bound is outside the range the tracer supports.
    #[error("`{field}` = {value} is outside {min}..={max}")]
    OutOfRange {
        /// The `TracerConfig` field.
        field: &'static str,
        /// The rejected value.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
}
