//! react-trace: per-request call trees in the React JSON format, as a `tracing` Layer.
