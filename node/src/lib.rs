//! `ellipsis-node`: the storage server.
//!
//! Hosts eblob backends, joins the DHT ring, serves the wire protocol and the monitoring HTTP.
//! The storage engine lives in the `eblob` crate (`node/eblob`); this crate is the network edge
//! around it and is the only place where async meets the synchronous engine.

pub mod auth;
pub mod backend;
pub mod cache;
pub mod config;
pub mod keylock;
pub mod metrics;
pub mod pool;
pub mod procfs;
pub mod schedule;
pub mod worker;
