//! `ellipsis-console`: the terminal UI (`ell top`) and the command-line tool (`ell`).
//!
//! Talks to nodes only over the network (wire protocol and HTTP JSON), through `ellipsis-core`.
