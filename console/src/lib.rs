//! `ellipsis-console`: the terminal UI (`ell top`) and the command-line tool (`ell`).
//!
//! Talks to nodes only over the network (wire protocol and HTTP JSON), through `ellipsis-core`;
//! only the `demo` command links `ellipsis-node`, to start an embedded cluster in-process.
//!
//! Structure (the usual ratatui split): [`model`] is what the views draw, built from the nodes'
//! stats by [`poll`]; [`app`] is the console state with a pure `on_key`/`on_model` update; [`ui`]
//! renders a frame from the state and nothing else; [`plan`] computes the data-sort plan;
//! [`admin`] performs confirmed admin requests over HTTP(S); [`config`] is the console's config
//! file; [`loadgen`] is `ell bench`. The event
//! loop that joins terminal input, ticks and poll results lives in the binary.

pub mod admin;
pub mod app;
pub mod config;
pub mod fixture;
pub mod loadgen;
pub mod model;
pub mod plan;
pub mod poll;
pub mod ui;
