//! The client library: route-aware sessions over multiplexed connections to every node.
//!
//! A [`Client`] fetches the route table from any configured remote, connects directly to the
//! node owning each key in each group, writes to every group in parallel (success judged by a
//! [`Checker`]) and reads group by group with fallback. Not a server; not persistent. Every
//! request has a timeout; connections that broke are re-opened on next use; the route table is
//! refreshed on demand and when an owner is unreachable.

mod conn;
mod iterator;
mod send;
mod session;

pub use conn::{Body, Conn, ConnError, Replies, MAX_IN_FLIGHT, SEND_QUEUE};
pub use iterator::IteratorStream;
pub use send::SendStream;
pub use session::{
    Checker, Client, ClientConfig, ClientError, GroupResult, ReadResult, WriteResult,
};
