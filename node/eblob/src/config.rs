//! Engine configuration and the fault-injection seam.
//!
//! Not the node's TOML: the node maps its backend section onto [`Config`]. Defaults follow the
//! original Eblob where it had one (10 GiB bases, 50 M records, index blocks of 40, 25 %).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// When the engine makes acknowledged writes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncPolicy {
    /// fdatasync data and index before every write/remove returns: survives `kill -9` and power
    /// loss (given honest disks).
    Always,
    /// A background thread syncs every N seconds: a crash loses at most the last N seconds.
    EverySeconds(u32),
    /// Leave it to the OS page cache (tests, caches).
    Never,
}

/// Which IO operation a [`FaultInjector`] is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOp {
    /// A positional read.
    Read,
    /// A positional write.
    Write,
    /// An fdatasync.
    Sync,
}

/// What a [`FaultInjector`] wants to happen to one IO operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Let it through.
    None,
    /// Fail it with this OS error kind without touching the file.
    Fail(io::ErrorKind),
    /// Write only this many bytes, then fail (a short or torn write).
    ShortWrite(u64),
}

/// Consulted before every file read, write and sync: the seam for fault-injection tests.
pub trait FaultInjector: Send + Sync + fmt::Debug {
    /// Decide the fate of one operation on `path` covering `len` bytes at `offset`.
    fn on_io(&self, op: IoOp, path: &Path, offset: u64, len: u64) -> Fault;

    /// Called after every sync of `path` finished (or failed), on the thread that ran it: with
    /// [`FaultInjector::on_io`] it brackets the sync, so an embedder can time or trace it.
    fn after_sync(&self, _path: &Path) {}
}

/// Engine configuration; [`Config::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// Backend directory (created if missing).
    pub dir: PathBuf,
    /// Start a new base when the open one would grow past this size.
    pub blob_size_bytes: u64,
    /// ... or when it holds this many records.
    pub records_in_blob: u64,
    /// Records per index block in sorted bases.
    pub index_block_size: u32,
    /// Bloom filter bits per key in sorted bases.
    pub bloom_bits_per_key: u32,
    /// A base wants defrag when its removed bytes reach this percentage of its size.
    pub defrag_percentage: u8,
    /// Durability policy.
    pub sync: SyncPolicy,
    /// Refuse writes that would make the bases exceed this total; `None` = unlimited.
    pub total_size_limit_bytes: Option<u64>,
    /// Refuse writes when the filesystem would keep less free space than this.
    pub min_free_space_bytes: u64,
    /// Rewrite records of the same or smaller size where they are (off: always append).
    pub overwrite_in_place: bool,
    /// Verify every record's data checksums at open (off: headers, index and the tail only).
    pub verify_data_on_open: bool,
    /// Fault-injection seam for tests; `None` in production.
    pub fault_injector: Option<Arc<dyn FaultInjector>>,
}

impl Config {
    /// Defaults for a backend in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Config {
        Config {
            dir: dir.into(),
            blob_size_bytes: 10 << 30,
            records_in_blob: 50_000_000,
            index_block_size: 40,
            bloom_bits_per_key: 10,
            defrag_percentage: 25,
            sync: SyncPolicy::EverySeconds(1),
            total_size_limit_bytes: None,
            min_free_space_bytes: 0,
            overwrite_in_place: true,
            verify_data_on_open: false,
            fault_injector: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), crate::Error> {
        let bad = |m: &str| Err(crate::Error::InvalidArgument(m.to_owned()));
        if self.blob_size_bytes < 4096 {
            return bad("blob_size_bytes must be at least 4096");
        }
        if self.records_in_blob == 0 {
            return bad("records_in_blob must be at least 1");
        }
        if self.index_block_size == 0 || self.index_block_size > 4096 {
            return bad("index_block_size must be in 1..=4096");
        }
        if self.bloom_bits_per_key > 64 {
            return bad("bloom_bits_per_key must be at most 64");
        }
        if self.defrag_percentage > 100 {
            return bad("defrag_percentage must be at most 100");
        }
        if self.sync == SyncPolicy::EverySeconds(0) {
            return bad("sync every 0 seconds: use Always");
        }
        Ok(())
    }
}
