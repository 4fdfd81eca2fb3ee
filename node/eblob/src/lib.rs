//! Eblob: an append-mostly blob storage engine with sorted on-disk indexes.
//!
//! A backend directory holds *bases*: `data-N` files of records (header + data + chunked
//! checksums) and their indexes. New records are appended to the open (last) base, which is
//! indexed in a RAM hash map; a data-sort rewrites older bases sorted by key so that RAM holds
//! only one key per index block plus a bloom filter per block. See `FORMAT.md` for every byte
//! on disk and `README.md` for the durability contract.
//!
//! What it is not: not a network service (the node wraps it), not async (every call blocks;
//! run it on blocking threads), not a general database (no transactions across keys, no
//! secondary indexes, no range queries beyond iteration). Callers serialise requests for one
//! key if they need an order between them; the engine itself is safe under any concurrency.
//!
//! ```
//! # fn main() -> Result<(), eblob::Error> {
//! let dir = tempfile::tempdir().expect("temp dir");
//! let db = eblob::Eblob::open(eblob::Config::new(dir.path()))?;
//! let key = eblob::Key([7; 64]);
//! db.write(&key, b"hello", &eblob::WriteOptions::default())?;
//! assert_eq!(db.read(&key)?, b"hello");
//! db.remove(&key)?;
//! assert!(matches!(db.read(&key), Err(eblob::Error::NotFound)));
//! # Ok(()) }
//! ```

mod base;
mod bloom;
mod config;
mod engine;
mod error;
mod file;
mod iterate;
mod key;
mod lock;
pub mod record;
mod sort;
mod stats;

pub use config::{Config, Fault, FaultInjector, IoOp, SyncPolicy};
pub use engine::{DataRegion, Eblob, Lookup, WriteOptions};
pub use error::Error;
pub use iterate::{IterRecord, IterateOptions};
pub use key::{Key, Timestamp, KEY_SIZE};
pub use sort::{DataSortOptions, SortProgress};
pub use stats::{
    BaseStats, CorruptRecord, DataSortProgress, DataSortReport, DataSortStats, IterateReport,
    OpStats, OpenReport, Stats, TornTail, TotalStats,
};
