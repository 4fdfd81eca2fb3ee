//! `ellipsis-core`: what nodes, clients and the console agree on.
//!
//! Keys and ring ids, the route table, the wire protocol and its codec, the JSON stats schema
//! served by nodes and parsed by the console, and (behind the `client` feature) the client
//! library. It is **not** a server: nothing here opens a listening socket or touches disk, and
//! nothing here depends on `ellipsis-node`.
//!
//! Modules: [`id`] (key and ring ids), [`route`] (who owns a key), [`protocol`] (frames,
//! commands, statuses, IO attributes, payloads and the tokio codec), [`stats`] (the JSON
//! schema of `GET /stats`), [`wire`] (bounded little-endian field reading).

#[cfg(feature = "client")]
pub mod client;
pub mod config_text;
pub mod id;
pub mod protocol;
pub mod route;
pub mod stats;
pub mod wire;

pub use id::Id;
pub use route::{BackendAddr, RouteTable};
