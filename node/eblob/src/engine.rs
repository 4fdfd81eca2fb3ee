//! The engine: open/close, the write paths, reads, removes, rotation, sync and stats.
//!
//! Not data-sort or iteration (see `sort` and `iterate`), which build on the same `Inner`.
//! Locking order, always: `write_lock` → key stripe → `bases` → per-base locks. Mutations hold
//! `write_lock` (one writer at a time: appends go to one tail anyway); reads hold only their
//! key stripe and a snapshot of the base list, so they run in parallel with each other, with
//! writes to other keys and with data-sort. Invariant: a key has at most one live record.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock, RwLockWriteGuard};

use crate::base::{self, Base, Kind, LoadNotes, VerifyError};
use crate::config::{Config, SyncPolicy};
use crate::error::Error;
use crate::file::sync_dir;
use crate::key::{Key, Timestamp};
use crate::record::{self, Header, FLAG_NOCSUM, FLAG_REMOVED, FLAG_UNCOMMITTED, HEADER_SIZE};
use crate::stats::{
    BaseStats, CorruptRecord, DataSortStats, OpStats, OpenReport, Stats, TornTail, TotalStats,
};

/// How a write is applied; see the crate docs for the semantics of each field.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Write `data` at this offset inside the object.
    pub offset: u64,
    /// Record timestamp; `None` = now.
    pub timestamp: Option<Timestamp>,
    /// Opaque application flags stored with the record.
    pub user_flags: u64,
    /// Append `data` to the existing object (reserving room for more appends).
    pub append: bool,
    /// PREPARE: reserve a record of this many data bytes, UNCOMMITTED until commit.
    pub prepare_size_bytes: Option<u64>,
    /// Write into a prepared record without committing it.
    pub plain_write: bool,
    /// Finish a prepared record: checksum it and clear UNCOMMITTED.
    pub commit: bool,
    /// With `commit`: the final object size (at most the reserved size).
    pub commit_size_bytes: Option<u64>,
    /// Store without checksums.
    pub nocsum: bool,
    /// Only write if no stored copy has a timestamp >= this write's.
    pub cas_timestamp: bool,
    /// Only write if this write's version `(timestamp, size)` is newer than the stored copy's
    /// (the order recovery ranks replicas by; `size` is `prepare_size_bytes` for a PREPARE,
    /// else `offset + data length`). An uncommitted stored copy is replaced by a version at
    /// least as new (an unfinished upload or copy of it). A committed stored copy of the *same*
    /// version is replaced only if it fails checksum verification: the write repairs a copy
    /// whose bytes rotted. That verification reads the stored record under the write lock; it
    /// happens only for equal versions, i.e. when recovery found the copy damaged.
    pub cas_version: bool,
    /// With `commit`: seal only if the record's checksum (hash of its chunk hashes, as
    /// [`Lookup::checksum`]) comes out equal to this; otherwise the record stays uncommitted
    /// and the commit fails with [`Error::ChecksumMismatch`]. A chunked copy passes the
    /// source's checksum so a record assembled from interleaved or lost chunks is never sealed.
    pub commit_checksum: Option<u64>,
    /// A whole, checksummed write only: the record's checksum (as [`Lookup::checksum`]) its
    /// data must have. The engine hashes the bytes once, for the footer as always; if they
    /// come out different the write fails with [`Error::DataMismatch`] and nothing is stored.
    /// A copy whose bytes were sent without being verified (a file region) passes the source
    /// record's checksum, so bytes damaged at the source or changed under the send are
    /// refused instead of stored under the source's timestamp.
    pub data_checksum: Option<u64>,
    /// A whole, checksummed write only: the data's chunk hashes ([`record::chunk_hashes`]),
    /// computed by the caller off the write path (the node hashes a large write as it
    /// arrives, before it queues for the backend's one writer thread). The engine then
    /// does not hash the bytes; with [`WriteOptions::data_checksum`] it checks these. Their
    /// count must fit the data ([`Error::InvalidArgument`] otherwise); hashes of other bytes
    /// make a record that fails its checksum when read (CORRUPTED, never returned as data),
    /// so pass only hashes of these very bytes.
    pub chunk_hashes: Option<std::sync::Arc<[u64]>>,
}

impl WriteOptions {
    /// A write of a whole object with checksums (no offset, append, prepare, plain write,
    /// commit or NOCSUM): the only kind [`WriteOptions::data_checksum`] and
    /// [`WriteOptions::chunk_hashes`] apply to.
    pub fn is_whole_checksummed(&self) -> bool {
        self.offset == 0
            && !self.append
            && self.prepare_size_bytes.is_none()
            && !self.plain_write
            && !self.commit
            && !self.nocsum
    }
}

/// A committed record's data as a region of its open data file: what a copy sends straight
/// from the file (a buffer at a time, or with `sendfile`) instead of reading it. The bytes are
/// *not* verified: the region is taken under the key's lock, but an in-place overwrite may
/// change them as soon as it is returned, and the source's own copy may be damaged; whoever
/// stores them checks them against `lookup.checksum` ([`WriteOptions::data_checksum`]).
#[derive(Clone, Debug)]
pub struct DataRegion {
    /// The record, as it was when the region was taken.
    pub lookup: Lookup,
    /// The data file (kept readable by this handle even if data-sort replaces it).
    pub file: Arc<File>,
    /// Offset of the object's first byte in `file`.
    pub offset_bytes: u64,
    /// Object size.
    pub size_bytes: u64,
}

/// Where and what a record is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Lookup {
    /// The key.
    pub key: Key,
    /// Base number holding the record.
    pub base_index: u32,
    /// Data file holding the record.
    pub data_path: PathBuf,
    /// Offset of the object's first byte in that file.
    pub data_offset_bytes: u64,
    /// Object size.
    pub data_size_bytes: u64,
    /// Bytes the record occupies on disk (header, reserve and footer included).
    pub disk_size_bytes: u64,
    /// Record timestamp.
    pub timestamp: Timestamp,
    /// Application flags.
    pub user_flags: u64,
    /// Prepared, not committed.
    pub uncommitted: bool,
    /// Stored without checksums.
    pub nocsum: bool,
    /// Hash over the chunk hashes (0 when `nocsum` or uncommitted).
    pub checksum: u64,
}

/// Counters behind [`OpStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub reads: AtomicU64,
    pub read_bytes: AtomicU64,
    pub writes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub removes: AtomicU64,
    pub lookups: AtomicU64,
    pub not_found: AtomicU64,
    pub corrupted_reads: AtomicU64,
    pub mismatched_writes: AtomicU64,
    pub errors: AtomicU64,
    pub rotations: AtomicU64,
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

/// A located record.
pub(crate) struct Loc {
    pub base: Arc<Base>,
    pub slot: u64,
    pub header: Header,
    /// The record's stored checksum when the code that made this `Loc` just wrote it (saves
    /// the read of the footer that [`Inner::lookup_of`] does otherwise).
    pub written_checksum: Option<u64>,
}

const STRIPES: usize = 256;

/// Bytes a full verification reads at a time (whole checksum chunks).
const VERIFY_SPAN_BYTES: u64 = 8 * record::CHUNK_SIZE;
/// The hash of hashes a footer ends with (the record's checksum).
fn footer_checksum(footer: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&footer[footer.len() - 8..]);
    u64::from_le_bytes(b)
}

/// Records up to this size are written with one contiguous write (see `append_record`).
const SMALL_RECORD_BYTES: u64 = 64 << 10;

/// Shared engine state.
pub(crate) struct Inner {
    pub config: Config,
    pub bases: RwLock<Vec<Arc<Base>>>,
    pub write_lock: Mutex<()>,
    stripes: Vec<RwLock<()>>,
    read_only: Mutex<Option<String>>,
    pub sort_lock: Mutex<()>,
    pub stop_sort: AtomicBool,
    pub sort_stats: Mutex<DataSortStats>,
    pub counters: Counters,
    open_report: OpenReport,
    _lock_file: File,
}

/// An open Eblob backend. `Send + Sync`: share it with `Arc`; every method takes `&self`.
pub struct Eblob {
    pub(crate) inner: Arc<Inner>,
    syncer: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl std::fmt::Debug for Eblob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eblob")
            .field("dir", &self.inner.config.dir)
            .finish()
    }
}

fn stripe_of(key: &Key) -> usize {
    // Keys are normally hashes; mixing two bytes keeps test keys with a common prefix apart.
    (usize::from(key.0[0]) ^ usize::from(key.0[63])) % STRIPES
}

impl Eblob {
    /// Open (or create) the backend in `config.dir`: take the lock, finish or discard an
    /// interrupted data-sort, load every base, truncate torn tails, count damage.
    pub fn open(config: Config) -> Result<Eblob, Error> {
        config.validate()?;
        let started = Instant::now();
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| Error::io("create dir", &config.dir, e))?;
        let lock_file = crate::lock::acquire(&config.dir)?;
        let mut report = OpenReport::default();
        crate::sort::recover_interrupted(&config, &mut report)?;

        let mut numbers = list_bases(&config)?;
        numbers.sort_unstable();
        let mut bases = Vec::with_capacity(numbers.len() + 1);
        for n in numbers {
            let mut notes = LoadNotes::default();
            let sorted = base::sorted_marker_path(&config.dir, n).exists()
                && base::sorted_index_path(&config.dir, n).exists();
            let b = if sorted {
                Base::load_sorted(&config, n, &mut notes)?
            } else {
                // A sorted index without its marker is left from an interrupted sort.
                let stale = base::sorted_index_path(&config.dir, n);
                if stale.exists() {
                    std::fs::remove_file(&stale).map_err(|e| Error::io("remove", &stale, e))?;
                }
                Base::load_unsorted(&config, n, &mut notes)?
            };
            if let Some(at) = notes.torn_at {
                report.torn.push(TornTail {
                    base: n,
                    offset_bytes: at,
                    truncated_bytes: notes.torn_bytes,
                });
            }
            report
                .corrupted
                .extend(
                    notes
                        .corrupted
                        .into_iter()
                        .map(|(offset_bytes, reason)| CorruptRecord {
                            base: n,
                            offset_bytes,
                            reason,
                        }),
                );
            if notes.index_rebuilt {
                report.indexes_rebuilt.push(n);
            }
            report.duplicates_removed += notes.duplicates_removed;
            bases.push(Arc::new(b));
        }
        report.duplicates_removed += remove_older_duplicates(&bases)?;
        if bases.last().is_none_or(|b| b.is_sorted()) {
            let n = bases.last().map_or(0, |b| b.number + 1);
            bases.push(Arc::new(Base::create(&config, n)?));
            sync_dir(&config.dir)?;
        }
        report.bases = bases.len() as u64;
        report.sorted_bases = bases.iter().filter(|b| b.is_sorted()).count() as u64;
        report.live_records = bases
            .iter()
            .map(|b| {
                let c = b.counters.lock();
                c.records - c.removed
            })
            .sum();
        report.duration_ms = started.elapsed().as_millis() as u64;

        let sync = config.sync;
        let inner = Arc::new(Inner {
            config,
            bases: RwLock::new(bases),
            write_lock: Mutex::new(()),
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
            read_only: Mutex::new(None),
            sort_lock: Mutex::new(()),
            stop_sort: AtomicBool::new(false),
            sort_stats: Mutex::new(DataSortStats::default()),
            counters: Counters::default(),
            open_report: report,
            _lock_file: lock_file,
        });
        let syncer = match sync {
            SyncPolicy::EverySeconds(s) => Some(spawn_syncer(Arc::downgrade(&inner), s)),
            _ => None,
        };
        Ok(Eblob { inner, syncer })
    }

    /// What the startup check found.
    pub fn open_report(&self) -> OpenReport {
        self.inner.open_report.clone()
    }

    /// Write `data` for `key` as described by `opts`.
    pub fn write(&self, key: &Key, data: &[u8], opts: &WriteOptions) -> Result<Lookup, Error> {
        self.write_vectored(key, &[data], opts)
    }

    /// Write the concatenation of `parts` as one record (scatter/gather: e.g. an application
    /// header and a body without copying them together).
    pub fn write_vectored(
        &self,
        key: &Key,
        parts: &[&[u8]],
        opts: &WriteOptions,
    ) -> Result<Lookup, Error> {
        let r = checked_hashes(parts, opts).and_then(|known| {
            self.inner
                .mutate(|inner| inner.write_locked(key, parts, opts, known.as_deref()))
        });
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        match &r {
            Ok(_) => {
                bump(&self.inner.counters.writes, 1);
                bump(&self.inner.counters.write_bytes, len);
            }
            Err(e) => self.inner.count_error(e),
        }
        r
    }

    /// The whole object.
    pub fn read(&self, key: &Key) -> Result<Vec<u8>, Error> {
        self.read_range(key, 0, 0)
    }

    /// `size` bytes from `offset` (`size` 0 = to the end).
    pub fn read_range(&self, key: &Key, offset: u64, size: u64) -> Result<Vec<u8>, Error> {
        let r = self.inner.read_range(key, offset, size);
        match &r {
            Ok(d) => {
                bump(&self.inner.counters.reads, 1);
                bump(&self.inner.counters.read_bytes, d.len() as u64);
            }
            Err(e) => self.inner.count_error(e),
        }
        r
    }

    /// Location, size, timestamp and checksum of `key`'s record.
    pub fn lookup(&self, key: &Key) -> Result<Lookup, Error> {
        bump(&self.inner.counters.lookups, 1);
        let _s = self.inner.stripe(key).read();
        let r = self
            .inner
            .find(key)
            .and_then(|l| l.ok_or(Error::NotFound))
            .and_then(|l| self.inner.lookup_of(&l));
        if let Err(e) = &r {
            self.inner.count_error(e);
        }
        r
    }

    /// [`Eblob::lookup`] after a full check of the record: its data header and every data
    /// chunk against its checksums (what a whole read checks, without keeping the bytes).
    /// A damaged record is [`Error::Corrupted`] (and counted). Costs a read of the whole
    /// object, in bounded spans; uncommitted and NOCSUM records are checked for their header
    /// only.
    pub fn verify(&self, key: &Key) -> Result<Lookup, Error> {
        bump(&self.inner.counters.lookups, 1);
        let _s = self.inner.stripe(key).read();
        let r = self
            .inner
            .find(key)
            .and_then(|l| l.ok_or(Error::NotFound))
            .and_then(|l| {
                self.inner.verify_loc(&l)?;
                self.inner.lookup_of(&l)
            });
        if let Err(e) = &r {
            self.inner.count_error(e);
        }
        r
    }

    /// [`Eblob::read_range`] together with the lookup of the record the bytes came from, both
    /// taken under one hold of the key's lock: the timestamp and flags describe exactly these
    /// bytes even while writers replace the record.
    pub fn read_with_lookup(
        &self,
        key: &Key,
        offset: u64,
        size: u64,
    ) -> Result<(Lookup, Vec<u8>), Error> {
        let r = self.inner.read_range_loc(key, offset, size);
        match &r {
            Ok((_, d)) => {
                bump(&self.inner.counters.reads, 1);
                bump(&self.inner.counters.read_bytes, d.len() as u64);
            }
            Err(e) => self.inner.count_error(e),
        }
        r
    }

    /// Where `key`'s committed data lies, for sending it without reading it ([`DataRegion`]);
    /// counted as a read of the whole object. Uncommitted records are [`Error::Uncommitted`],
    /// removed ones [`Error::NotFound`], as for a read; a damaged data header is
    /// [`Error::Corrupted`]. The data itself is not checked here, but it is brought into the
    /// page cache (without being copied), so whoever sends it from a network thread does not
    /// wait on the disk; a disk that cannot read it is an [`Error::Io`] here.
    pub fn data_region(&self, key: &Key) -> Result<DataRegion, Error> {
        let r = self.inner.data_region(key);
        match &r {
            Ok(d) => {
                bump(&self.inner.counters.reads, 1);
                bump(&self.inner.counters.read_bytes, d.size_bytes);
            }
            Err(e) => self.inner.count_error(e),
        }
        r
    }

    /// Remove `key` (flags its record REMOVED in data and index).
    pub fn remove(&self, key: &Key) -> Result<(), Error> {
        let r = self.inner.mutate(|inner| {
            let loc = inner.find(key)?.ok_or(Error::NotFound)?;
            loc.base.mark_removed(loc.slot, &loc.header)
        });
        match &r {
            Ok(()) => bump(&self.inner.counters.removes, 1),
            Err(e) => self.inner.count_error(e),
        }
        r
    }

    /// Make everything written so far durable. A failure turns the backend read-only: the
    /// kernel may have dropped the dirty pages, so a later successful sync proves nothing.
    pub fn sync(&self) -> Result<(), Error> {
        self.inner.sync_all().inspect_err(|e| {
            if matches!(e, Error::Io { .. }) {
                self.inner.turn_read_only(e);
            }
        })
    }

    /// The checksum the record of the whole write `data` would carry, with `opts` checked
    /// as [`Eblob::write`] checks them ([`WriteOptions::chunk_hashes`] must number `data`'s
    /// chunks, and the checksum must be [`WriteOptions::data_checksum`] when that is set):
    /// for a caller that keeps the object elsewhere before the engine stores it (a
    /// write-back cache). Nothing is stored; a refusal counts as the engine's own would
    /// (a [`Error::DataMismatch`] in [`OpStats::mismatched_writes`]).
    pub fn whole_write_checksum(&self, data: &[u8], opts: &WriteOptions) -> Result<u64, Error> {
        let r = checked_hashes(&[data], opts)
            .map(|known| record::hash_of_hashes(&hashes_of(&[data], known.as_deref())));
        if let Err(e) = &r {
            self.inner.count_error(e);
        }
        r
    }

    /// Why writes are refused, if they are.
    pub fn read_only_reason(&self) -> Option<String> {
        self.inner.read_only.lock().clone()
    }

    /// Refuse writes from now on (an operator's "read-only"); `None` makes it writable again.
    pub fn set_read_only(&self, reason: Option<String>) {
        *self.inner.read_only.lock() = reason;
    }

    /// Current stats.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// The engine's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Sync and release the directory lock.
    pub fn close(mut self) -> Result<(), Error> {
        self.stop_syncer();
        self.inner.sync_all()
    }

    fn stop_syncer(&mut self) {
        if let Some((tx, handle)) = self.syncer.take() {
            drop(tx);
            // The thread only exits; a panic there has nothing for us to recover.
            let _ = handle.join();
        }
    }
}

impl Drop for Eblob {
    fn drop(&mut self) {
        self.stop_syncer();
        if self.inner.config.sync != SyncPolicy::Never {
            // Best effort: close() is where sync errors are reported.
            let _ = self.inner.sync_all();
        }
    }
}

fn spawn_syncer(inner: Weak<Inner>, every_s: u32) -> (mpsc::Sender<()>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("eblob-sync".into())
        .spawn(move || loop {
            match rx.recv_timeout(Duration::from_secs(u64::from(every_s))) {
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let Some(inner) = inner.upgrade() else { return };
                    if let Err(e) = inner.sync_all() {
                        inner.turn_read_only(&e);
                    }
                }
                _ => return,
            }
        })
        .expect("spawning the eblob sync thread");
    (tx, handle)
}

fn list_bases(config: &Config) -> Result<Vec<u32>, Error> {
    let mut out = Vec::new();
    let dir = std::fs::read_dir(&config.dir).map_err(|e| Error::io("list", &config.dir, e))?;
    for entry in dir {
        let entry = entry.map_err(|e| Error::io("list", &config.dir, e))?;
        let name = entry.file_name();
        if let Some(n) = name.to_str().and_then(|s| s.strip_prefix("data-")) {
            if let Ok(n) = n.parse::<u32>() {
                out.push(n);
            }
        }
    }
    Ok(out)
}

/// After a crash between appending a record and removing its previous copy, two live copies
/// of a key exist in different bases: keep the newest base's.
fn remove_older_duplicates(bases: &[Arc<Base>]) -> Result<u64, Error> {
    let mut removed = 0;
    for (i, newer) in bases.iter().enumerate() {
        let Kind::Unsorted(u) = &newer.kind else {
            continue;
        };
        let keys: Vec<Key> = u.read().map.keys().copied().collect();
        for key in keys {
            for older in &bases[..i] {
                if let Some((slot, h)) = older.find(&key)? {
                    older.mark_removed(slot, &h)?;
                    removed += 1;
                }
            }
        }
    }
    Ok(removed)
}

/// For a write with [`WriteOptions::data_checksum`] or [`WriteOptions::chunk_hashes`]: its
/// chunk hashes (the caller's, or computed here), checked against the expected checksum.
/// Taken before the write lock (the footer reuses them, so the bytes are hashed at most
/// once), so a refused write costs other writers nothing.
fn checked_hashes(parts: &[&[u8]], o: &WriteOptions) -> Result<Option<Vec<u64>>, Error> {
    if o.data_checksum.is_none() && o.chunk_hashes.is_none() {
        return Ok(None);
    }
    if !o.is_whole_checksummed() {
        return Err(Error::InvalidArgument(
            "data_checksum and chunk_hashes need a whole, checksummed write".into(),
        ));
    }
    let hashes = match &o.chunk_hashes {
        Some(given) => {
            let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
            let want = len.div_ceil(record::CHUNK_SIZE);
            if given.len() as u64 != want {
                return Err(Error::InvalidArgument(format!(
                    "chunk_hashes: {} hashes for {len} bytes ({want} chunks)",
                    given.len()
                )));
            }
            given.to_vec()
        }
        None => record::chunk_hashes(parts),
    };
    if let Some(expected) = o.data_checksum {
        let found = record::hash_of_hashes(&hashes);
        if found != expected {
            return Err(Error::DataMismatch { expected, found });
        }
    }
    Ok(Some(hashes))
}

/// The chunk hashes of a whole object `parts`, unless the caller already has them (`known`,
/// computed by [`record::chunk_hashes`] over the same bytes).
fn hashes_of(parts: &[&[u8]], known: Option<&[u64]>) -> Vec<u64> {
    known.map_or_else(|| record::chunk_hashes(parts), <[u64]>::to_vec)
}

impl Inner {
    fn stripe(&self, key: &Key) -> &RwLock<()> {
        &self.stripes[stripe_of(key)]
    }

    pub(crate) fn snapshot(&self) -> Vec<Arc<Base>> {
        self.bases.read().clone()
    }

    /// The live record of `key`, newest base first.
    pub(crate) fn find(&self, key: &Key) -> Result<Option<Loc>, Error> {
        for base in self.snapshot().into_iter().rev() {
            if let Some((slot, header)) = base.find(key)? {
                return Ok(Some(Loc {
                    base,
                    slot,
                    header,
                    written_checksum: None,
                }));
            }
        }
        Ok(None)
    }

    fn count_error(&self, e: &Error) {
        match e {
            Error::NotFound => bump(&self.counters.not_found, 1),
            Error::Corrupted { .. } => bump(&self.counters.corrupted_reads, 1),
            Error::DataMismatch { .. } => bump(&self.counters.mismatched_writes, 1),
            _ => bump(&self.counters.errors, 1),
        }
    }

    pub(crate) fn turn_read_only(&self, e: &Error) {
        let mut ro = self.read_only.lock();
        if ro.is_none() {
            *ro = Some(format!(
                "IO error, writes stopped to avoid losing data: {e}"
            ));
        }
    }

    /// Run one mutation under the write lock, then apply the sync policy; an IO error turns
    /// the backend read-only (no retries that could hide a lost write).
    pub(crate) fn mutate<T>(&self, f: impl FnOnce(&Inner) -> Result<T, Error>) -> Result<T, Error> {
        let _w = self.write_lock.lock();
        if let Some(reason) = self.read_only.lock().clone() {
            return Err(Error::ReadOnly { reason });
        }
        let r = f(self).and_then(|v| {
            if self.config.sync == SyncPolicy::Always {
                self.sync_all()?;
            }
            Ok(v)
        });
        if let Err(e @ Error::Io { .. }) = &r {
            self.turn_read_only(e);
        }
        r
    }

    pub(crate) fn sync_all(&self) -> Result<(), Error> {
        for b in self.snapshot() {
            b.sync_if_dirty()?;
        }
        Ok(())
    }

    pub(crate) fn lookup_of(&self, loc: &Loc) -> Result<Lookup, Error> {
        let h = &loc.header;
        let checksum = if h.has(FLAG_NOCSUM) || h.has(FLAG_UNCOMMITTED) {
            0
        } else if let Some(c) = loc.written_checksum {
            c
        } else {
            let mut b = [0u8; 8];
            loc.base
                .data
                .read_at(&mut b, h.position + h.disk_size - 8)?;
            u64::from_le_bytes(b)
        };
        Ok(Lookup {
            key: h.key,
            base_index: loc.base.number,
            data_path: loc.base.data.path().to_owned(),
            data_offset_bytes: h.data_offset(),
            data_size_bytes: h.data_size,
            disk_size_bytes: h.disk_size,
            timestamp: h.timestamp,
            user_flags: h.user_flags,
            uncommitted: h.has(FLAG_UNCOMMITTED),
            nocsum: h.has(FLAG_NOCSUM),
            checksum,
        })
    }

    fn read_range(&self, key: &Key, offset: u64, size: u64) -> Result<Vec<u8>, Error> {
        self.read_range_loc(key, offset, size).map(|(_, d)| d)
    }

    /// The live committed record of `key` with its header taken from the data file; the
    /// caller holds the key's stripe.
    fn committed_loc(&self, key: &Key) -> Result<Loc, Error> {
        let mut loc = self.find(key)?.ok_or(Error::NotFound)?;
        let h = loc.header;
        // The data header is the truth: it must still name this key and not be removed, and
        // it wins over the index entry (an in-place rewrite whose index write failed or was
        // cut short by a crash leaves the entry stale while the record itself is whole).
        let base = loc.base.clone();
        let corrupted = |reason: String| base.damaged(*key, h.position, reason);
        let h = match base.data_header_of(&h) {
            Ok(dh) => dh,
            Err(VerifyError::Damaged(reason)) => return Err(corrupted(reason)),
            Err(VerifyError::Io(e)) => return Err(e),
        };
        if h.has(FLAG_REMOVED) {
            return Err(Error::NotFound);
        }
        loc.header = h;
        if h.has(FLAG_UNCOMMITTED) {
            return Err(Error::Uncommitted);
        }
        Ok(loc)
    }

    fn data_region(&self, key: &Key) -> Result<DataRegion, Error> {
        let _s = self.stripe(key).read();
        let loc = self.committed_loc(key)?;
        let h = loc.header;
        let file = loc
            .base
            .data
            .shared_for_read(h.data_offset(), h.data_size)?;
        Ok(DataRegion {
            lookup: self.lookup_of(&loc)?,
            file,
            offset_bytes: h.data_offset(),
            size_bytes: h.data_size,
        })
    }

    fn read_range_loc(
        &self,
        key: &Key,
        offset: u64,
        size: u64,
    ) -> Result<(Lookup, Vec<u8>), Error> {
        let _s = self.stripe(key).read();
        let loc = self.committed_loc(key)?;
        let h = loc.header;
        let base = loc.base.clone();
        let corrupted = |reason: String| base.damaged(*key, h.position, reason);
        let end = if size == 0 {
            h.data_size
        } else {
            offset.saturating_add(size)
        };
        if offset > h.data_size || end > h.data_size {
            return Err(Error::OutOfRange {
                offset,
                size,
                limit: h.data_size,
            });
        }
        match base.read_verified(&h, offset, end) {
            Ok(data) => Ok((self.lookup_of(&loc)?, data)),
            Err(VerifyError::Damaged(reason)) => Err(corrupted(reason)),
            // The disk failed to answer: a read error, not damage (nothing is counted).
            Err(VerifyError::Io(e)) => Err(e),
        }
    }

    /// Check the size limit and the filesystem's free space for `needed` more bytes.
    fn check_space(&self, needed: u64) -> Result<(), Error> {
        if let Some(limit) = self.config.total_size_limit_bytes {
            let used: u64 = self
                .snapshot()
                .iter()
                .map(|b| b.counters.lock().size_bytes)
                .sum();
            if used + needed > limit {
                return Err(Error::NoSpace {
                    reason: "total size limit",
                    needed_bytes: needed,
                    available_bytes: limit.saturating_sub(used),
                });
            }
        }
        if self.config.min_free_space_bytes > 0 {
            let free = fs2::available_space(&self.config.dir)
                .map_err(|e| Error::io("statvfs", &self.config.dir, e))?;
            if free < needed + self.config.min_free_space_bytes {
                return Err(Error::NoSpace {
                    reason: "filesystem free space below min_free_space_bytes",
                    needed_bytes: needed,
                    available_bytes: free.saturating_sub(self.config.min_free_space_bytes),
                });
            }
        }
        Ok(())
    }

    /// The base new records go to, rotating when the open one is full.
    fn open_base_for(&self, disk_size: u64) -> Result<Arc<Base>, Error> {
        let bases = self.bases.upgradable_read();
        let open = bases.last().cloned().expect("there is always an open base");
        let full = {
            let c = open.counters.lock();
            open.is_sorted()
                || c.records >= self.config.records_in_blob
                || (c.size_bytes > 0 && c.size_bytes + disk_size > self.config.blob_size_bytes)
        };
        if !full {
            return Ok(open);
        }
        let mut bases = parking_lot::RwLockUpgradableReadGuard::upgrade(bases);
        let base = self.rotate_locked(&mut bases)?;
        bump(&self.counters.rotations, 1);
        Ok(base)
    }

    /// Start a new open base (caller holds the write lock).
    pub(crate) fn rotate_locked(
        &self,
        bases: &mut RwLockWriteGuard<'_, Vec<Arc<Base>>>,
    ) -> Result<Arc<Base>, Error> {
        let n = bases.last().map_or(0, |b| b.number + 1);
        if let Some(old) = bases.last() {
            old.sync_if_dirty()?;
        }
        let base = Arc::new(Base::create(&self.config, n)?);
        sync_dir(&self.config.dir)?;
        bases.push(base.clone());
        Ok(base)
    }

    /// Append a new record holding `parts` at object offset `at` (bytes before it are zero)
    /// with `capacity` data bytes reserved; returns its location.
    fn append_record(
        &self,
        template: Header,
        capacity: u64,
        at: u64,
        parts: &[&[u8]],
        known_hashes: Option<&[u64]>,
    ) -> Result<Loc, Error> {
        let disk_size = record::disk_size_for(capacity);
        self.check_space(disk_size)?;
        let base = self.open_base_for(disk_size)?;
        let Kind::Unsorted(u) = &base.kind else {
            unreachable!("the open base is never sorted")
        };
        let (slot, position) = {
            let u = u.read();
            (u.slots, u.tail_bytes)
        };
        let h = Header {
            disk_size,
            position,
            ..template
        };
        base.dirty.store(true, Ordering::Release);
        let slots = record::chunk_slots(disk_size);
        let footer = if h.has(FLAG_UNCOMMITTED) || h.has(FLAG_NOCSUM) {
            vec![0u8; ((slots + 1) * 8) as usize]
        } else if at == 0 {
            record::encode_footer(slots, &hashes_of(parts, known_hashes))
        } else {
            let zeros = vec![0u8; at as usize];
            let mut all: Vec<&[u8]> = vec![&zeros];
            all.extend_from_slice(parts);
            record::encode_footer(slots, &record::chunk_hashes(&all))
        };
        let bytes = h.encode();
        let data_bytes: u64 = parts.iter().map(|p| p.len() as u64).sum();
        // Data first, then the index entry: after a crash the data file is the truth and a
        // record without its entry is found by the open scan. Within the data file the order
        // of header, data and footer does not matter (the page cache writes back in any order
        // anyway; the checksums find a torn record), so a small record that fills its
        // capacity goes out as one contiguous write: one syscall instead of three, for one
        // copy of at most SMALL_RECORD_BYTES.
        if at == 0 && data_bytes == capacity && disk_size <= SMALL_RECORD_BYTES {
            let mut whole = Vec::with_capacity(disk_size as usize);
            whole.extend_from_slice(&bytes);
            for p in parts {
                whole.extend_from_slice(p);
            }
            whole.extend_from_slice(&footer);
            debug_assert_eq!(whole.len() as u64, disk_size);
            base.data.write_at(&whole, position)?;
        } else {
            let mut off = h.data_offset() + at;
            for p in parts {
                base.data.write_at(p, off)?;
                off += p.len() as u64;
            }
            base.data.write_at(&footer, h.footer_offset())?;
            base.data.write_at(&bytes, position)?;
        }
        base.index.write_at(&bytes, slot * HEADER_SIZE)?;
        {
            let mut u = u.write();
            u.slots += 1;
            u.tail_bytes += disk_size;
            u.map.insert(h.key, (slot, h));
        }
        {
            let mut c = base.counters.lock();
            c.records += 1;
            c.size_bytes += disk_size;
        }
        Ok(Loc {
            base,
            slot,
            header: h,
            written_checksum: Some(footer_checksum(&footer)),
        })
    }

    /// Replace `old` by `new` as the key's live record.
    fn retire(&self, old: &Option<Loc>, new: &Loc) -> Result<(), Error> {
        if let Some(old) = old {
            if !(Arc::ptr_eq(&old.base, &new.base) && old.slot == new.slot) {
                old.base.mark_removed(old.slot, &old.header)?;
            }
        }
        Ok(())
    }

    /// Whether `loc` may be rewritten where it is.
    fn in_place_ok(&self, loc: &Loc) -> bool {
        !loc.base.is_sorting()
    }

    /// Copy a record verbatim (reserve included) to the tail, retiring the original: used
    /// before in-place work on a base that data-sort is reading.
    fn relocate(&self, loc: Loc) -> Result<Loc, Error> {
        let h = loc.header;
        let capacity = h.capacity();
        let data = loc.base.data.read_vec(h.data_offset(), capacity)?;
        let footer = loc
            .base
            .data
            .read_vec(h.footer_offset(), record::footer_size(h.disk_size))?;
        let new = self.append_record(h, capacity, 0, &[&data], None)?;
        new.base
            .data
            .write_at(&footer, new.header.footer_offset())?;
        self.retire(&Some(loc), &new)?;
        Ok(Loc {
            written_checksum: Some(footer_checksum(&footer)),
            ..new
        })
    }

    /// Stored chunk hashes of a committed, checksummed record (verified against their hash).
    fn stored_hashes(&self, loc: &Loc) -> Result<Vec<u64>, Error> {
        let h = &loc.header;
        let footer = loc
            .base
            .data
            .read_vec(h.footer_offset(), record::footer_size(h.disk_size))?;
        match record::decode_footer(&footer, record::used_chunks(h.data_size)) {
            Some((hashes, total)) if record::hash_of_hashes(&hashes) == total => Ok(hashes),
            _ => Err(loc
                .base
                .damaged(h.key, h.position, "footer checksum mismatch".into())),
        }
    }

    /// Write `parts` at object offset `offset` inside `loc`'s reserved space, zero-filling a
    /// gap past the old end, and reseal the footer (unless uncommitted or nocsum) and header.
    fn write_in_place(
        &self,
        loc: &Loc,
        offset: u64,
        parts: &[&[u8]],
        new_header: Header,
        known_hashes: Option<&[u64]>,
    ) -> Result<Loc, Error> {
        let old = loc.header;
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let checksummed = !new_header.has(FLAG_NOCSUM) && !new_header.has(FLAG_UNCOMMITTED);
        let whole = offset == 0 && len == new_header.data_size;
        let old_hashes = if checksummed && !whole {
            if old.has(FLAG_NOCSUM) || old.has(FLAG_UNCOMMITTED) {
                None
            } else {
                Some(self.stored_hashes(loc)?)
            }
        } else {
            None
        };
        loc.base.dirty.store(true, Ordering::Release);
        let h = Header {
            position: old.position,
            disk_size: old.disk_size,
            ..new_header
        };
        if whole && checksummed && old.disk_size <= SMALL_RECORD_BYTES {
            // A small whole rewrite: header, data, the unused rest of the capacity (zeroed)
            // and footer go out as one contiguous write, as a new small record does.
            let slots = record::chunk_slots(old.disk_size);
            let footer = record::encode_footer(slots, &hashes_of(parts, known_hashes));
            let mut record = Vec::with_capacity(old.disk_size as usize);
            record.extend_from_slice(&h.encode());
            for p in parts {
                record.extend_from_slice(p);
            }
            record.resize((old.disk_size - footer.len() as u64) as usize, 0);
            record.extend_from_slice(&footer);
            debug_assert_eq!(record.len() as u64, old.disk_size);
            loc.base.data.write_at(&record, old.position)?;
            loc.base.store_index_entry(loc.slot, &h)?;
            return Ok(Loc {
                base: loc.base.clone(),
                slot: loc.slot,
                header: h,
                written_checksum: Some(footer_checksum(&footer)),
            });
        }
        if offset > old.data_size {
            let gap = vec![0u8; (offset - old.data_size) as usize];
            loc.base
                .data
                .write_at(&gap, old.data_offset() + old.data_size)?;
        }
        let mut off = old.data_offset() + offset;
        for p in parts {
            loc.base.data.write_at(p, off)?;
            off += p.len() as u64;
        }
        let slots = record::chunk_slots(old.disk_size);
        if checksummed {
            let hashes = if whole {
                hashes_of(parts, known_hashes)
            } else {
                let used = record::used_chunks(new_header.data_size);
                let mut hashes = Vec::with_capacity(used as usize);
                for c in 0..used {
                    let c_start = c * record::CHUNK_SIZE;
                    let c_end = (c_start + record::CHUNK_SIZE).min(new_header.data_size);
                    let stale = old_hashes.as_ref().is_none_or(|o| c as usize >= o.len())
                        || (c_start < offset + len && c_end > offset)
                        || c_end > old.data_size;
                    if stale {
                        let chunk = loc
                            .base
                            .data
                            .read_vec(old.data_offset() + c_start, c_end - c_start)?;
                        hashes.push(record::chunk_hash(c, &chunk));
                    } else if let Some(o) = &old_hashes {
                        hashes.push(o[c as usize]);
                    }
                }
                hashes
            };
            loc.base
                .data
                .write_at(&record::encode_footer(slots, &hashes), old.footer_offset())?;
        }
        loc.base.store_header(loc.slot, &h)?;
        Ok(Loc {
            base: loc.base.clone(),
            slot: loc.slot,
            header: h,
            written_checksum: None,
        })
    }

    /// Seal a prepared record at `size` bytes: checksum its data and clear UNCOMMITTED.
    fn commit(&self, loc: Loc, size: Option<u64>, expected: Option<u64>) -> Result<Loc, Error> {
        let mut h = loc.header;
        let size = size.unwrap_or(h.data_size);
        if size > h.capacity() {
            return Err(Error::OutOfRange {
                offset: 0,
                size,
                limit: h.capacity(),
            });
        }
        h.data_size = size;
        h.flags &= !FLAG_UNCOMMITTED;
        if !h.has(FLAG_NOCSUM) {
            let mut hashes = Vec::new();
            let mut c_start = 0;
            while c_start < size {
                let c_end = (c_start + record::CHUNK_SIZE).min(size);
                let chunk = loc
                    .base
                    .data
                    .read_vec(h.data_offset() + c_start, c_end - c_start)?;
                hashes.push(record::chunk_hash(c_start / record::CHUNK_SIZE, &chunk));
                c_start = c_end;
            }
            if let Some(expected) = expected {
                let found = record::hash_of_hashes(&hashes);
                if found != expected {
                    return Err(Error::ChecksumMismatch { expected, found });
                }
            }
            let footer = record::encode_footer(record::chunk_slots(h.disk_size), &hashes);
            loc.base.data.write_at(&footer, h.footer_offset())?;
        }
        loc.base.store_header(loc.slot, &h)?;
        Ok(Loc {
            header: h,
            written_checksum: None,
            ..loc
        })
    }

    /// Whether a `cas_version` write of version `new` may replace the stored record `l`.
    fn version_replaceable(&self, l: &Loc, new: (Timestamp, u64)) -> Result<bool, Error> {
        let h = &l.header;
        if h.has(FLAG_UNCOMMITTED) {
            return Ok(h.timestamp <= new.0);
        }
        let stored = (h.timestamp, h.data_size);
        if stored != new {
            return Ok(stored < new);
        }
        // Same version: only a damaged copy gives way. An IO error proves nothing.
        match self.verify_loc(l) {
            Ok(()) => Ok(false),
            Err(Error::Corrupted { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Check a located record end to end: its data header names it, and (unless it is
    /// uncommitted or stored without checksums) every data chunk matches the footer. Reads one
    /// span of at most `VERIFY_SPAN_BYTES` at a time, so memory stays bounded for any size.
    pub(crate) fn verify_loc(&self, loc: &Loc) -> Result<(), Error> {
        let h = loc.header;
        let corrupted = |reason: String| loc.base.damaged(h.key, h.position, reason);
        let mut raw = [0u8; HEADER_SIZE as usize];
        loc.base.data.read_at(&mut raw, h.position)?;
        match Header::decode(&raw) {
            Ok(dh) if dh.key == h.key && dh.disk_size == h.disk_size => {}
            Ok(_) => return Err(corrupted("data header names another record".into())),
            Err(e) => return Err(corrupted(format!("data header: {e}"))),
        }
        if h.has(FLAG_UNCOMMITTED) || h.has(FLAG_NOCSUM) {
            return Ok(());
        }
        let mut from = 0;
        loop {
            let to = (from + VERIFY_SPAN_BYTES).min(h.data_size);
            match loc.base.read_verified(&h, from, to) {
                Ok(_) => {}
                Err(VerifyError::Damaged(reason)) => return Err(corrupted(reason)),
                Err(VerifyError::Io(e)) => return Err(e),
            }
            if to >= h.data_size {
                return Ok(());
            }
            from = to;
        }
    }

    /// The whole current object of a committed record, verified.
    fn read_object(&self, loc: &Loc) -> Result<Vec<u8>, Error> {
        let h = &loc.header;
        loc.base
            .read_verified(h, 0, h.data_size)
            .map_err(|e| match e {
                VerifyError::Io(e) => e,
                VerifyError::Damaged(reason) => loc.base.damaged(h.key, h.position, reason),
            })
    }

    fn write_locked(
        &self,
        key: &Key,
        parts: &[&[u8]],
        o: &WriteOptions,
        known_hashes: Option<&[u64]>,
    ) -> Result<Lookup, Error> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if o.append
            && (o.offset != 0 || o.prepare_size_bytes.is_some() || o.plain_write || o.commit)
        {
            return Err(Error::InvalidArgument(
                "append cannot be combined with offset, prepare, plain write or commit".into(),
            ));
        }
        if o.commit_size_bytes.is_some() && !o.commit {
            return Err(Error::InvalidArgument(
                "commit_size_bytes needs commit".into(),
            ));
        }
        let end = o
            .offset
            .checked_add(len)
            .ok_or_else(|| Error::InvalidArgument("offset + size overflows".into()))?;
        let _s = self.stripe(key).write();
        let ts = o.timestamp.unwrap_or_else(Timestamp::now);
        if ts.nsec >= 1_000_000_000 {
            return Err(Error::InvalidArgument(
                "timestamp nanoseconds must be < 1e9".into(),
            ));
        }
        let existing = self.find(key)?;
        if o.cas_timestamp {
            if let Some(l) = &existing {
                if l.header.timestamp >= ts {
                    return Err(Error::NewerExists {
                        stored: l.header.timestamp,
                    });
                }
            }
        }
        if o.cas_version {
            if let Some(l) = &existing {
                let new_size = o.prepare_size_bytes.unwrap_or(end);
                if !self.version_replaceable(l, (ts, new_size))? {
                    return Err(Error::NewerExists {
                        stored: l.header.timestamp,
                    });
                }
            }
        }
        let nocsum = if o.nocsum { FLAG_NOCSUM } else { 0 };
        let template = |flags: u64, data_size: u64| Header {
            key: *key,
            flags,
            data_size,
            disk_size: 0,
            position: 0,
            timestamp: ts,
            user_flags: o.user_flags,
        };

        let loc = if let Some(reserve) = o.prepare_size_bytes {
            if end > reserve {
                return Err(Error::OutOfRange {
                    offset: o.offset,
                    size: len,
                    limit: reserve,
                });
            }
            let h = template(FLAG_UNCOMMITTED | nocsum, end);
            let new = self.append_record(h, reserve, o.offset, parts, None)?;
            self.retire(&existing, &new)?;
            if o.commit {
                self.commit(new, o.commit_size_bytes, o.commit_checksum)?
            } else {
                new
            }
        } else if o.plain_write || o.commit {
            let loc = existing.ok_or(Error::NotFound)?;
            if !loc.header.has(FLAG_UNCOMMITTED) {
                if o.commit && len == 0 && !o.plain_write {
                    // A repeated commit: the record is already sealed.
                    return self.lookup_of(&loc);
                }
                return Err(Error::InvalidArgument(
                    "plain write and commit need a prepared (uncommitted) record".into(),
                ));
            }
            if end > loc.header.capacity() {
                return Err(Error::OutOfRange {
                    offset: o.offset,
                    size: len,
                    limit: loc.header.capacity(),
                });
            }
            let loc = if self.in_place_ok(&loc) {
                loc
            } else {
                self.relocate(loc)?
            };
            let mut h = loc.header;
            h.data_size = h.data_size.max(end);
            h.timestamp = ts;
            h.user_flags = o.user_flags;
            let loc = if len > 0 {
                self.write_in_place(&loc, o.offset, parts, h, None)?
            } else {
                loc
            };
            if o.commit {
                self.commit(loc, o.commit_size_bytes, o.commit_checksum)?
            } else {
                loc
            }
        } else {
            let live = match existing {
                Some(l) if l.header.has(FLAG_UNCOMMITTED) && (o.append || o.offset > 0) => {
                    return Err(Error::Uncommitted)
                }
                other => other,
            };
            let old_size = live.as_ref().map_or(0, |l| l.header.data_size);
            let (new_size, at) = if o.append {
                (old_size + len, old_size)
            } else if o.offset > 0 {
                (old_size.max(end), o.offset)
            } else {
                (len, 0)
            };
            let h = template(nocsum, new_size);
            let fits = live.as_ref().is_some_and(|l| {
                new_size <= l.header.capacity()
                    && self.in_place_ok(l)
                    && (self.config.overwrite_in_place || o.append)
            });
            match live {
                Some(l) if fits => self.write_in_place(&l, at, parts, h, known_hashes)?,
                Some(l) if at > 0 => {
                    // Grow or move: the new record holds the old object with the new bytes
                    // laid over it; appends reserve room for as much again.
                    let mut object = self.read_object(&l)?;
                    object.resize(new_size as usize, 0);
                    let mut off = at as usize;
                    for p in parts {
                        object[off..off + p.len()].copy_from_slice(p);
                        off += p.len();
                    }
                    let capacity = if o.append { new_size * 2 } else { new_size };
                    let new = self.append_record(h, capacity, 0, &[&object], None)?;
                    self.retire(&Some(l), &new)?;
                    new
                }
                other => {
                    let capacity = if o.append { new_size * 2 } else { new_size };
                    let new = self.append_record(h, capacity, at, parts, known_hashes)?;
                    self.retire(&other, &new)?;
                    new
                }
            }
        };
        self.lookup_of(&loc)
    }

    fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        let mut t = TotalStats::default();
        for b in self.snapshot() {
            let c = *b.counters.lock();
            let (ram_index, ram_bloom, ram_blocks) = match &b.kind {
                Kind::Unsorted(u) => {
                    let u = u.read();
                    let per = std::mem::size_of::<Key>() + std::mem::size_of::<(u64, Header)>() + 1;
                    ((u.map.capacity() * per) as u64, 0, 0)
                }
                Kind::Sorted(s) => (0, s.bloom.ram_bytes(), s.ram_blocks_bytes()),
            };
            let bs = BaseStats {
                number: b.number,
                sorted: b.is_sorted(),
                sorting: b.is_sorting(),
                records: c.records,
                live_records: c.records.saturating_sub(c.removed),
                removed_records: c.removed,
                removed_bytes: c.removed_bytes,
                corrupted: c.corrupted,
                size_bytes: c.size_bytes,
                ram_index_bytes: ram_index,
                ram_bloom_bytes: ram_bloom,
                ram_index_blocks_bytes: ram_blocks,
                want_defrag: b.wants_defrag(self.config.defrag_percentage),
            };
            t.bases += 1;
            t.sorted_bases += u64::from(bs.sorted);
            t.want_defrag_bases += u64::from(bs.want_defrag);
            t.records += bs.records;
            t.live_records += bs.live_records;
            t.removed_records += bs.removed_records;
            t.removed_bytes += bs.removed_bytes;
            t.corrupted += bs.corrupted;
            t.size_bytes += bs.size_bytes;
            t.ram_index_bytes += bs.ram_index_bytes;
            t.ram_bloom_bytes += bs.ram_bloom_bytes;
            t.ram_index_blocks_bytes += bs.ram_index_blocks_bytes;
            stats.bases.push(bs);
        }
        stats.total = t;
        stats.data_sort = self.sort_stats.lock().clone();
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        stats.ops = OpStats {
            reads: g(&c.reads),
            read_bytes: g(&c.read_bytes),
            writes: g(&c.writes),
            write_bytes: g(&c.write_bytes),
            removes: g(&c.removes),
            lookups: g(&c.lookups),
            not_found: g(&c.not_found),
            corrupted_reads: g(&c.corrupted_reads),
            mismatched_writes: g(&c.mismatched_writes),
            errors: g(&c.errors),
            rotations: g(&c.rotations),
        };
        stats.read_only_reason = self.read_only.lock().clone();
        stats
    }
}

// The engine is shared across request threads.
const _: fn() = || {
    fn is<T: Send + Sync>() {}
    is::<Eblob>();
};
