//! `ellipsis-node`: the storage server.
//!
//! Hosts eblob backends, joins the DHT ring, serves the wire protocol and the monitoring HTTP.
//! The storage engine lives in the `eblob` crate (`node/eblob`); this crate is the network edge
//! around it and is the only place where async meets the synchronous engine.

pub mod admin;
pub mod auth;
pub mod backend;
pub mod cache;
pub mod cache_sync;
pub mod cmd;
pub mod config;
pub mod counters;
pub mod error;
pub mod http;
pub mod keylock;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod peers;
pub mod pool;
pub mod procfs;
pub mod receive_buffer;
pub mod recovery;
pub mod schedule;
pub mod server;
pub mod stats;
pub mod worker;
pub mod write_queue;
