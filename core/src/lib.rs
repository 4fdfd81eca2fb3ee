//! `ellipsis-core`: what nodes, clients and the console agree on.
//!
//! Keys and ring ids, the route table, the wire protocol and its codec, the JSON stats schema
//! served by nodes and parsed by the console, and (behind the `client` feature) the client
//! library. It is **not** a server: nothing here opens a listening socket or touches disk, and
//! nothing here depends on `ellipsis-node`.
