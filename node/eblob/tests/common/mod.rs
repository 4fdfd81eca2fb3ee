//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use eblob::{Config, Eblob, Fault, FaultInjector, IoOp, Key, SyncPolicy};

/// A key from a number (spread over the first bytes so keys sort by number's big-endian).
pub fn key(i: u64) -> Key {
    let mut k = [0u8; 64];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k[63] = (i % 251) as u8;
    Key(k)
}

/// Deterministic bytes for key `i`, version `v`.
pub fn value(i: u64, v: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ v.wrapping_mul(0xc2b2_ae3d_27d4_eb4f) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A small test config: tiny bases, no background sync.
pub fn config(dir: &Path) -> Config {
    let mut c = Config::new(dir);
    c.sync = SyncPolicy::Never;
    c
}

pub fn open(dir: &Path) -> Eblob {
    Eblob::open(config(dir)).expect("open")
}

/// Counts IO per kind and fails operations on request.
#[derive(Debug, Default)]
pub struct Faults {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub syncs: AtomicU64,
    /// (op, path suffix, fault) applied to the next matching operation, then cleared.
    pub next: Mutex<Option<(IoOp, String, Fault)>>,
}

impl FaultInjector for Faults {
    fn on_io(&self, op: IoOp, path: &Path, _offset: u64, _len: u64) -> Fault {
        match op {
            IoOp::Read => &self.reads,
            IoOp::Write => &self.writes,
            IoOp::Sync => &self.syncs,
        }
        .fetch_add(1, Ordering::SeqCst);
        let mut next = self.next.lock().expect("fault table lock");
        if let Some((o, suffix, fault)) = next.as_ref() {
            if *o == op && path.to_string_lossy().ends_with(suffix.as_str()) {
                let f = *fault;
                *next = None;
                return f;
            }
        }
        Fault::None
    }
}

/// Paths of the data files in `dir`, by base number.
pub fn data_file(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("data-{n}"))
}
