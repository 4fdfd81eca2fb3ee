//! One storage backend of a node: an eblob directory, its cache, state and data-sort schedule.
//!
//! All methods are synchronous and may block on disk: the network edge calls them through the
//! bounded [`crate::pool::BlockingPool`], never on an executor thread. Callers serialise
//! requests per key ([`crate::keylock`]); this type does not.
//!
//! Cache rules (they keep reads from ever seeing older data than the newest acknowledged write):
//! - Every read consults the cache first: a dirty object there is newer than the engine's copy.
//! - A whole-object write with `cache` set goes to the cache as dirty (write-back after the
//!   cache's `sync_timeout_ms`); if the cache refuses it, it is written through.
//! - Any other write (partial, append, prepare/commit) or remove goes to the engine and drops
//!   the cached copy first, so no stale copy outlives it.
//! - `cache_only` objects never reach the engine.
//!
//! Invariant: a backend that is disabled serves nothing; a read-only one refuses every write
//! and remove with the reason it was made read-only (admin, or an engine write/fsync error).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use ellipsis_core::Id;

use crate::cache::{Cache, InsertOptions, Inserted};
use crate::config::{BackendConfig, SyncSetting};
use crate::schedule::{Clock, Schedule, Scheduler};

/// Metadata kept with a cached object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedMeta {
    /// The object's timestamp.
    pub timestamp: eblob::Timestamp,
    /// Caller flags stored with it.
    pub user_flags: u64,
    /// The checksum the engine's record of these bytes carries (or will carry once written
    /// back), so a cache hit names the version as a disk read would (ETag, CAS on checksum).
    pub checksum: u64,
}

/// A dirty cached object handed out for write-back.
pub type CacheWriteBack = crate::cache::WriteBack<eblob::Key, CachedMeta>;

/// How a request uses the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheUse {
    /// CACHE: put written/read objects in the cache (writes become write-back).
    pub cache: bool,
    /// CACHE_ONLY: the object lives only in the cache.
    pub cache_only: bool,
    /// Lifetime of the cached object.
    pub lifetime: Option<Duration>,
}

pub use ellipsis_core::stats::BackendState;

/// Errors of backend operations (the engine's, plus the backend's own refusals).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] eblob::Error),
    /// The backend is disabled.
    #[error("backend {0} is disabled")]
    Disabled(u32),
    /// Writes are refused.
    #[error("backend {id} is read-only: {reason}")]
    ReadOnly {
        /// The backend.
        id: u32,
        /// Why.
        reason: String,
    },
    /// The backend's directory could not be prepared.
    #[error("backend {id}: {message}")]
    Setup {
        /// The backend.
        id: u32,
        /// What went wrong.
        message: String,
    },
}

/// See the module documentation.
pub struct Backend {
    config: BackendConfig,
    ring_ids: RwLock<Vec<Id>>,
    engine: RwLock<Option<Arc<eblob::Eblob>>>,
    cache: Option<Cache<eblob::Key, CachedMeta>>,
    admin_read_only: RwLock<Option<String>>,
    scheduler: Mutex<Scheduler>,
    delay_ms: AtomicU64,
    /// The node's clock (schedules).
    clock: Arc<dyn Clock>,
    /// Extra IO hook for the engine (fault-injection tests); `None` in production.
    faults: Option<Arc<dyn eblob::FaultInjector>>,
    /// The data-sort job of this backend while one is unfinished: at most one at a time,
    /// and what a defrag stop cancels.
    sort_job: Mutex<Option<u64>>,
    /// AUTO mode: the engine's rotation count when the last AUTO data-sort was started (or
    /// when the engine opened); a larger count means bases were closed since.
    auto_seen_rotations: AtomicU64,
    /// AUTO mode: look once, after the engine opened, for closed bases left unsorted (a
    /// restart after a crash or a mode change) and sort them.
    auto_check_open: AtomicBool,
}

fn engine_config(
    config: &BackendConfig,
    faults: Option<Arc<dyn eblob::FaultInjector>>,
) -> eblob::Config {
    let mut c = eblob::Config::new(config.dir.clone());
    c.blob_size_bytes = config.blob_size_bytes;
    c.records_in_blob = config.records_in_blob;
    c.index_block_size = config.index_block_size;
    c.defrag_percentage = config.defrag_percentage;
    c.verify_data_on_open = config.verify_data_on_open;
    c.total_size_limit_bytes = config.total_size_limit_bytes;
    c.min_free_space_bytes = config.min_free_space_bytes;
    c.sync = match config.sync {
        SyncSetting::Always => eblob::SyncPolicy::Always,
        SyncSetting::Never => eblob::SyncPolicy::Never,
        SyncSetting::EverySeconds(n) => eblob::SyncPolicy::EverySeconds(n),
    };
    c.fault_injector = Some(Arc::new(SyncActions { faults }));
    c
}

thread_local! {
    /// `fsync` actions open on this thread, one slot per sync in progress (`None` when the
    /// request is not sampled), so every `after_sync` closes exactly what its `on_io` opened.
    static OPEN_SYNCS: std::cell::RefCell<Vec<Option<tracing::span::EnteredSpan>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Records engine fsyncs as `fsync` actions of the sampled request that waits for them: the
/// engine knows nothing of tracing, so it brackets each sync with its IO hook calls, on the
/// blocking thread that runs the request. Injects a fault only through `faults`, the test
/// seam given at node start.
#[derive(Debug)]
struct SyncActions {
    faults: Option<Arc<dyn eblob::FaultInjector>>,
}

impl eblob::FaultInjector for SyncActions {
    fn on_io(
        &self,
        op: eblob::IoOp,
        path: &std::path::Path,
        offset: u64,
        len: u64,
    ) -> eblob::Fault {
        let fault = match &self.faults {
            Some(f) => f.on_io(op, path, offset, len),
            None => eblob::Fault::None,
        };
        if op == eblob::IoOp::Sync {
            let action = react_trace::is_sampled().then(|| react_trace::action!("fsync").entered());
            OPEN_SYNCS.with(|open| open.borrow_mut().push(action));
        }
        fault
    }

    fn after_sync(&self, path: &std::path::Path) {
        OPEN_SYNCS.with(|open| drop(open.borrow_mut().pop()));
        if let Some(f) = &self.faults {
            f.after_sync(path);
        }
    }
}

/// Name of the persisted data-sort schedule inside a backend directory.
pub const SCHEDULE_FILE: &str = "defrag-schedule.json";

fn load_schedule(config: &BackendConfig) -> Result<Option<Schedule>, BackendError> {
    let path = config.dir.join(SCHEDULE_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| setup_error(config, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(setup_error(config, format!("{}: {e}", path.display()))),
    }
}

/// Name of the file inside a backend directory holding when its last data-sort started
/// (decimal Unix seconds), so schedules resume across restarts.
pub const LAST_SORT_FILE: &str = "defrag-last-start";

/// The last data-sort start recorded in the backend dir. A missing file is a backend that
/// never sorted; an unreadable one is logged and ignored: at worst one sort runs early.
fn load_last_sort(config: &BackendConfig) -> Option<u64> {
    let path = config.dir.join(LAST_SORT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring the last data-sort start");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring the last data-sort start");
            None
        }
    }
}

/// Name of the ring-id file inside a backend directory.
pub const RING_IDS_FILE: &str = "ring-ids";

fn setup_error(config: &BackendConfig, message: String) -> BackendError {
    BackendError::Setup {
        id: config.id,
        message,
    }
}

/// Read the backend's ring ids, creating `ring_ids` random ones on first start.
fn load_or_create_ring_ids(config: &BackendConfig) -> Result<Vec<Id>, BackendError> {
    let path = config.dir.join(RING_IDS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => ellipsis_core::id::decode_ring_ids(&bytes)
            .map_err(|e| setup_error(config, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut ids: Vec<Id> = (0..config.ring_ids.max(1)).map(|_| Id::random()).collect();
            ids.sort_unstable();
            store_ring_ids(config, &ids)?;
            Ok(ids)
        }
        Err(e) => Err(setup_error(config, format!("{}: {e}", path.display()))),
    }
}

/// Write the ids atomically: temp file, fsync, rename, fsync the directory.
fn store_ring_ids(config: &BackendConfig, ids: &[Id]) -> Result<(), BackendError> {
    use std::io::Write;
    let path = config.dir.join(RING_IDS_FILE);
    let tmp = config.dir.join(format!("{RING_IDS_FILE}.tmp"));
    let io = |what: &str, e: std::io::Error| {
        setup_error(config, format!("{what} {}: {e}", tmp.display()))
    };
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("create", e))?;
    f.write_all(&ellipsis_core::id::encode_ring_ids(ids))
        .map_err(|e| io("write", e))?;
    f.sync_all().map_err(|e| io("fsync", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io("rename", e))?;
    std::fs::File::open(&config.dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("fsync dir of", e))
}

impl Backend {
    /// Opens the engine (creating the directory) and builds the cache. `seed` (with the
    /// backend's first ring id) picks this backend's start inside `Scheduled` windows, `clock` is the node's, `faults` an extra
    /// engine IO hook for tests.
    pub fn open(
        config: BackendConfig,
        seed: u64,
        clock: Arc<dyn Clock>,
        faults: Option<Arc<dyn eblob::FaultInjector>>,
    ) -> Result<Backend, BackendError> {
        std::fs::create_dir_all(&config.dir).map_err(|e| BackendError::Setup {
            id: config.id,
            message: format!("cannot create {}: {e}", config.dir.display()),
        })?;
        let cache = if config.cache.size_bytes > 0 {
            Some(
                Cache::new(config.cache.clone()).map_err(|e| BackendError::Setup {
                    id: config.id,
                    message: format!("cache: {e}"),
                })?,
            )
        } else {
            None
        };
        let ring_ids = load_or_create_ring_ids(&config)?;
        let engine = eblob::Eblob::open(engine_config(&config, faults.clone()))?;
        let schedule = load_schedule(&config)?.unwrap_or_else(|| Schedule::from(&config.defrag));
        // The ring ids are random per backend dir (unless an admin set them): two nodes whose
        // seeds agree still pick different starts.
        let seed = seed ^ ring_ids.first().map_or(0, Id::prefix_u64);
        let scheduler =
            Scheduler::resume(schedule, clock.now_unix_s(), seed, load_last_sort(&config));
        let admin_read_only = config.read_only.then(|| "configured read_only".to_owned());
        Ok(Backend {
            ring_ids: RwLock::new(ring_ids),
            engine: RwLock::new(Some(Arc::new(engine))),
            cache,
            admin_read_only: RwLock::new(admin_read_only),
            scheduler: Mutex::new(scheduler),
            delay_ms: AtomicU64::new(0),
            clock,
            faults,
            sort_job: Mutex::new(None),
            auto_seen_rotations: AtomicU64::new(0),
            auto_check_open: AtomicBool::new(true),
            config,
        })
    }

    /// The data-sort job running on this backend, if any.
    pub fn sort_job(&self) -> Option<u64> {
        *self.sort_job.lock()
    }

    /// Claims the backend's data-sort slot for job `id`; false if another holds it.
    pub(crate) fn claim_sort(&self, id: u64, still_running: impl Fn(u64) -> bool) -> bool {
        let mut slot = self.sort_job.lock();
        match *slot {
            Some(other) if still_running(other) => false,
            _ => {
                *slot = Some(id);
                true
            }
        }
    }

    /// Frees the data-sort slot held by job `id`.
    pub(crate) fn release_sort(&self, id: u64) {
        let mut slot = self.sort_job.lock();
        if *slot == Some(id) {
            *slot = None;
        }
    }

    /// AUTO mode: whether closed bases are waiting for a data-sort, judged from the engine's
    /// stats: it rotated since the last AUTO start, or (first look after opening) closed
    /// bases holding records are unsorted. Returns the rotation count to pass to
    /// [`Backend::auto_started`].
    pub(crate) fn auto_sort_wanted(&self, stats: &eblob::Stats) -> Option<u64> {
        let rotations = stats.ops.rotations;
        let rotated = rotations > self.auto_seen_rotations.load(Ordering::Relaxed);
        let left_unsorted = self.auto_check_open.swap(false, Ordering::Relaxed)
            && stats
                .bases
                .split_last()
                .is_some_and(|(_, closed)| closed.iter().any(|b| !b.sorted && b.records > 0));
        (rotated || left_unsorted).then_some(rotations)
    }

    /// AUTO mode: a data-sort covering the bases closed up to `rotations` has started.
    pub(crate) fn auto_started(&self, rotations: u64) {
        self.auto_seen_rotations
            .fetch_max(rotations, Ordering::Relaxed);
    }

    /// The backend id within its node.
    pub fn id(&self) -> u32 {
        self.config.id
    }

    /// The replica group.
    pub fn group(&self) -> u32 {
        self.config.group
    }

    /// Its ring ids (persisted in `<dir>/ring-ids`).
    pub fn ring_ids(&self) -> Vec<Id> {
        self.ring_ids.read().clone()
    }

    /// Replace and persist its ring ids (kept sorted, duplicates dropped).
    pub fn set_ring_ids(&self, mut ids: Vec<Id>) -> Result<(), BackendError> {
        ids.sort_unstable();
        ids.dedup();
        store_ring_ids(&self.config, &ids)?;
        *self.ring_ids.write() = ids;
        Ok(())
    }

    /// The eblob directory.
    pub fn dir(&self) -> &PathBuf {
        &self.config.dir
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &BackendConfig {
        &self.config
    }

    /// The engine, if enabled.
    pub fn engine(&self) -> Result<Arc<eblob::Eblob>, BackendError> {
        self.engine
            .read()
            .clone()
            .ok_or(BackendError::Disabled(self.config.id))
    }

    /// Current state.
    pub fn state(&self) -> BackendState {
        if self.engine.read().is_none() {
            BackendState::Disabled
        } else if self.read_only_reason().is_some() {
            BackendState::ReadOnly
        } else {
            BackendState::Enabled
        }
    }

    /// Why writes are refused, if they are: an admin decision or the engine's own.
    pub fn read_only_reason(&self) -> Option<String> {
        if let Some(r) = self.admin_read_only.read().clone() {
            return Some(r);
        }
        self.engine
            .read()
            .as_ref()
            .and_then(|e| e.read_only_reason())
    }

    /// Makes the backend read-only (`Some(reason)`) or writable again (`None`). Writable again
    /// only lifts an admin decision: an engine that failed a write stays read-only until reopen.
    pub fn set_read_only(&self, reason: Option<String>) {
        *self.admin_read_only.write() = reason;
    }

    /// Artificial delay added to each request (for testing timeouts and slow replicas).
    pub fn set_delay(&self, delay_ms: u64) {
        self.delay_ms.store(delay_ms, Ordering::Relaxed);
    }

    /// The artificial delay.
    pub fn delay_ms(&self) -> u64 {
        self.delay_ms.load(Ordering::Relaxed)
    }

    /// Flushes the cache and closes the engine; requests then fail with `Disabled`.
    pub fn disable(&self) -> Result<(), BackendError> {
        self.flush_cache(true)?;
        let engine = self.engine.write().take();
        if let Some(engine) = engine {
            // Other holders (requests in flight) keep it alive until they finish; the last one
            // drops it, which syncs and releases the lock file.
            if let Ok(engine) = Arc::try_unwrap(engine) {
                engine.close()?;
            }
        }
        Ok(())
    }

    /// Reopens a disabled backend.
    pub fn enable(&self) -> Result<(), BackendError> {
        let mut slot = self.engine.write();
        if slot.is_none() {
            let engine = eblob::Eblob::open(engine_config(&self.config, self.faults.clone()))?;
            // A fresh engine counts rotations from zero.
            self.auto_seen_rotations.store(0, Ordering::Relaxed);
            self.auto_check_open.store(true, Ordering::Relaxed);
            *slot = Some(Arc::new(engine));
        }
        Ok(())
    }

    fn writable(&self) -> Result<Arc<eblob::Eblob>, BackendError> {
        let engine = self.engine()?;
        if let Some(reason) = self.read_only_reason() {
            return Err(BackendError::ReadOnly {
                id: self.config.id,
                reason,
            });
        }
        Ok(engine)
    }

    /// Writes an object (or part of one, per `opts`).
    pub fn write(
        &self,
        key: &eblob::Key,
        data: &[u8],
        opts: &eblob::WriteOptions,
        cache_use: CacheUse,
    ) -> Result<WriteOutcome, BackendError> {
        let engine = self.writable()?;
        let whole = opts.offset == 0
            && !opts.append
            && opts.prepare_size_bytes.is_none()
            && !opts.plain_write
            && !opts.commit;
        if let Some(cache) = &self.cache {
            let timestamp = opts.timestamp.unwrap_or_else(eblob::Timestamp::now);
            if whole
                && (cache_use.cache || cache_use.cache_only)
                && !opts.cas_timestamp
                && !opts.cas_version
            {
                // Write-back stores a checksummed record of exactly these bytes; they are
                // checked now, as the engine would, since the cache answers before it.
                let checksum = engine.whole_write_checksum(data, opts)?;
                let meta = CachedMeta {
                    timestamp,
                    user_flags: opts.user_flags,
                    checksum,
                };
                let options = InsertOptions {
                    dirty: !cache_use.cache_only,
                    cache_only: cache_use.cache_only,
                    lifetime: cache_use.lifetime,
                };
                let insert_action = react_trace::action!("cache.insert").entered();
                let inserted = cache.insert(
                    *key,
                    Bytes::copy_from_slice(data),
                    meta,
                    options,
                    Instant::now(),
                );
                drop(insert_action);
                if inserted == Inserted::Cached {
                    return Ok(WriteOutcome::Cached {
                        size_bytes: data.len() as u64,
                        timestamp,
                    });
                }
                if cache_use.cache_only {
                    // Nowhere else to put it: a cache-only object the cache refuses is lost,
                    // so say so rather than acknowledge it.
                    return Err(BackendError::Engine(eblob::Error::NoSpace {
                        reason: "cache-only object refused by a full cache",
                        needed_bytes: data.len() as u64,
                        available_bytes: 0,
                    }));
                }
            }
            // A write that does not go (only) to the cache makes any cached copy stale. A dirty
            // cached object must reach the engine first, or a partial write would apply to an
            // older base.
            self.flush_key(key)?;
            cache.remove(key);
        }
        let lookup = engine.write(key, data, opts)?;
        Ok(WriteOutcome::Stored(lookup))
    }

    /// Writes a dirty cached copy of `key` to the engine (if there is one) before an operation
    /// that must see it there.
    fn flush_key(&self, key: &eblob::Key) -> Result<(), BackendError> {
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        let Some(found) = cache.get(key, Instant::now()) else {
            return Ok(());
        };
        if found.dirty {
            let engine = self.engine()?;
            let opts = eblob::WriteOptions {
                timestamp: Some(found.meta.timestamp),
                user_flags: found.meta.user_flags,
                ..eblob::WriteOptions::default()
            };
            engine.write(key, &found.data, &opts)?;
        }
        Ok(())
    }

    /// Reads an object or a range of it (`size` 0 = to the end).
    pub fn read(
        &self,
        key: &eblob::Key,
        offset: u64,
        size: u64,
        cache_use: CacheUse,
    ) -> Result<ReadOutcome, BackendError> {
        let engine = self.engine()?;
        if let Some(hit) = self.read_cached(key, offset, size) {
            return hit;
        }
        // One engine call: the timestamp and flags returned are those of these very bytes,
        // even when a caller without the key lock (recovery) races a writer.
        let (lookup, data) = engine.read_with_lookup(key, offset, size)?;
        let data = Bytes::from(data);
        if let Some(cache) = &self.cache {
            if cache_use.cache && offset == 0 && size == 0 {
                let meta = CachedMeta {
                    timestamp: lookup.timestamp,
                    user_flags: lookup.user_flags,
                    checksum: lookup.checksum,
                };
                let options = InsertOptions {
                    lifetime: cache_use.lifetime,
                    ..Default::default()
                };
                cache.insert(*key, data.clone(), meta, options, Instant::now());
            }
        }
        Ok(ReadOutcome::of_record(&lookup, data))
    }

    /// `offset..offset + size` (`size` 0: to the end) of `key`'s cached object, if the cache
    /// holds it.
    fn read_cached(
        &self,
        key: &eblob::Key,
        offset: u64,
        size: u64,
    ) -> Option<Result<ReadOutcome, BackendError>> {
        let cache = self.cache.as_ref()?;
        let found = {
            let _a = react_trace::action!("cache.lookup").entered();
            cache.get(key, Instant::now())?
        };
        let len = found.data.len() as u64;
        if offset > len || (size > 0 && offset + size > len) {
            return Some(Err(BackendError::Engine(eblob::Error::OutOfRange {
                offset,
                size,
                limit: len,
            })));
        }
        let end = if size == 0 { len } else { offset + size };
        Some(Ok(ReadOutcome {
            data: found.data.slice(offset as usize..end as usize),
            total_size_bytes: len,
            timestamp: found.meta.timestamp,
            user_flags: found.meta.user_flags,
            checksum: found.meta.checksum,
            from_cache: true,
        }))
    }

    /// What a copy of `key` to another node sends (recovery, server-send): the cached object
    /// when the cache holds it (a dirty cached copy is newer than the engine's record), else
    /// the committed record as a region of its data file, sent by the connection's writer
    /// (unverified here) and checked by the receiver against the record checksum. A NOCSUM
    /// record has no checksum to check against, so it is read here like any read. Errors as
    /// for [`Backend::read`].
    pub fn copy_source(&self, key: &eblob::Key) -> Result<CopySource, BackendError> {
        let engine = self.engine()?;
        if let Some(hit) = self.read_cached(key, 0, 0) {
            return hit.map(CopySource::Read);
        }
        let region = engine.data_region(key)?;
        if !region.lookup.nocsum {
            return Ok(CopySource::Region(region));
        }
        let (lookup, data) = engine.read_with_lookup(key, 0, 0)?;
        Ok(CopySource::Read(ReadOutcome::of_record(
            &lookup,
            Bytes::from(data),
        )))
    }

    /// The checksum of the version a reader would get now, for CAS on checksum: the cached
    /// copy's when there is one (cache-only objects have no record), else the record's; 0 when
    /// the key does not exist.
    pub fn current_checksum(&self, key: &eblob::Key) -> Result<u64, BackendError> {
        let engine = self.engine()?;
        if let Some(found) = self.cache.as_ref().and_then(|c| c.get(key, Instant::now())) {
            return Ok(found.meta.checksum);
        }
        match engine.lookup(key) {
            Ok(l) => Ok(l.checksum),
            Err(eblob::Error::NotFound) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Where and what an object is. A dirty cached object is written back first so the answer
    /// describes what is on disk.
    pub fn lookup(&self, key: &eblob::Key) -> Result<eblob::Lookup, BackendError> {
        let engine = self.engine()?;
        self.flush_key(key)?;
        Ok(engine.lookup(key)?)
    }

    /// [`Backend::lookup`] after verifying the whole record on disk (see
    /// [`eblob::Eblob::verify`]): a damaged copy is an error, not an answer.
    pub fn verify(&self, key: &eblob::Key) -> Result<eblob::Lookup, BackendError> {
        let engine = self.engine()?;
        self.flush_key(key)?;
        Ok(engine.verify(key)?)
    }

    /// Removes an object from the cache and the engine. A cache-only object exists only in the
    /// cache, so removing it there is enough.
    pub fn remove(&self, key: &eblob::Key) -> Result<(), BackendError> {
        let engine = self.writable()?;
        let cached = self.cache.as_ref().is_some_and(|c| c.remove(key));
        match engine.remove(key) {
            Ok(()) => Ok(()),
            Err(eblob::Error::NotFound) if cached => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes back dirty cached objects that are due (`force`: all of them). Returns how many
    /// were written; failures stay dirty and are retried on the next pass.
    pub fn flush_cache(&self, force: bool) -> Result<u64, BackendError> {
        let mut written = 0;
        for item in self.take_cache_writebacks(force) {
            written += u64::from(self.write_back(item).is_ok());
        }
        Ok(written)
    }

    /// The dirty cached objects due for write-back (`force`: all of them), each marked in
    /// flight until [`Backend::write_back`] or [`Backend::return_write_back`] reports on it.
    /// Empty without a cache.
    pub fn take_cache_writebacks(&self, force: bool) -> Vec<CacheWriteBack> {
        self.cache
            .as_ref()
            .map_or_else(Vec::new, |c| c.take_writebacks(Instant::now(), force))
    }

    /// Writes one handed-out object to the engine and tells the cache (a failure keeps it
    /// dirty, for the next pass).
    pub fn write_back(&self, item: CacheWriteBack) -> Result<(), BackendError> {
        let written = self.engine().and_then(|engine| {
            let opts = eblob::WriteOptions {
                timestamp: Some(item.meta.timestamp),
                user_flags: item.meta.user_flags,
                ..eblob::WriteOptions::default()
            };
            Ok(engine.write(&item.key, &item.data, &opts)?)
        });
        if let Some(cache) = &self.cache {
            cache.writeback_done(&item.key, item.version, written.is_ok(), Instant::now());
        }
        written.map(|_| ())
    }

    /// Gives back a handed-out object not written (its job was cancelled): still dirty, due.
    pub fn return_write_back(&self, item: &CacheWriteBack) {
        if let Some(cache) = &self.cache {
            cache.writeback_returned(&item.key, item.version);
        }
    }

    /// Cache counters, if the backend has a cache.
    pub fn cache_stats(&self) -> Option<crate::cache::CacheStats> {
        self.cache.as_ref().map(|c| c.stats())
    }

    /// Change the data-sort schedule now and persist it (it survives restarts and overrides
    /// the config file's until changed again).
    pub fn set_schedule(&self, schedule: Schedule) -> Result<(), BackendError> {
        let path = self.config.dir.join(SCHEDULE_FILE);
        let tmp = self.config.dir.join(format!("{SCHEDULE_FILE}.tmp"));
        let json = serde_json::to_vec_pretty(&schedule)
            .map_err(|e| setup_error(&self.config, format!("schedule: {e}")))?;
        let io = |what: &str, e: std::io::Error| {
            setup_error(&self.config, format!("{what} {}: {e}", path.display()))
        };
        std::fs::write(&tmp, json).map_err(|e| io("write", e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("fsync", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io("rename", e))?;
        self.scheduler
            .lock()
            .set_schedule(schedule, self.clock.now_unix_s());
        Ok(())
    }

    /// Record that a data-sort started at `now_s` (by schedule or command): the scheduler
    /// plans the next one, and the start is kept in the backend dir for the next boot. Not
    /// fsynced: losing it in a crash costs at most one early sort.
    pub fn sort_started(&self, now_s: u64) -> Result<(), BackendError> {
        self.scheduler.lock().started(now_s);
        let path = self.config.dir.join(LAST_SORT_FILE);
        let tmp = self.config.dir.join(format!("{LAST_SORT_FILE}.tmp"));
        std::fs::write(&tmp, format!("{now_s}\n"))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| setup_error(&self.config, format!("write {}: {e}", path.display())))
    }

    /// The data-sort scheduler (mode, window, next start).
    pub fn scheduler(&self) -> parking_lot::MutexGuard<'_, Scheduler> {
        self.scheduler.lock()
    }
}

/// Result of [`Backend::write`].
#[derive(Debug)]
pub enum WriteOutcome {
    /// Written to the engine.
    Stored(eblob::Lookup),
    /// Held in the cache (write-back or cache-only).
    Cached {
        /// Object size.
        size_bytes: u64,
        /// Its timestamp.
        timestamp: eblob::Timestamp,
    },
}

/// What [`Backend::copy_source`] found to send.
#[derive(Debug)]
pub enum CopySource {
    /// Bytes in memory: a cached object, or a record read (and verified) from the engine.
    Read(ReadOutcome),
    /// The committed record's bytes in its data file, not read and not verified.
    Region(eblob::DataRegion),
}

/// Result of [`Backend::read`].
#[derive(Debug)]
pub struct ReadOutcome {
    /// The bytes read.
    pub data: Bytes,
    /// The whole object's size.
    pub total_size_bytes: u64,
    /// The object's timestamp.
    pub timestamp: eblob::Timestamp,
    /// Caller flags stored with it.
    pub user_flags: u64,
    /// Record checksum (a cache hit reports the checksum of the record it came from or will
    /// be written back as; 0 for NOCSUM records).
    pub checksum: u64,
    /// Served from the cache.
    pub from_cache: bool,
}

impl ReadOutcome {
    /// `data` read from the engine record `lookup` describes.
    fn of_record(lookup: &eblob::Lookup, data: Bytes) -> ReadOutcome {
        ReadOutcome {
            data,
            total_size_bytes: lookup.data_size_bytes,
            timestamp: lookup.timestamp,
            user_flags: lookup.user_flags,
            checksum: lookup.checksum,
            from_cache: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DefragConfig;
    use crate::schedule::SystemClock;
    use ellipsis_core::stats::DefragMode;

    #[test]
    fn backends_with_the_same_seed_pick_different_starts_in_a_window() {
        let dir = tempfile::tempdir().expect("temp dir");
        let starts: Vec<Option<u64>> = (0..5u32)
            .map(|i| {
                let config = BackendConfig {
                    id: i + 1,
                    group: 1,
                    dir: dir.path().join(format!("b{i}")),
                    min_free_space_bytes: 0,
                    defrag: DefragConfig {
                        mode: DefragMode::Scheduled,
                        time_hour: 3,
                        splay_hours: 3,
                        ..DefragConfig::default()
                    },
                    ..BackendConfig::default()
                };
                // One seed for all, as on hosts that listen on one address and port.
                let b = Backend::open(config, 42, Arc::new(SystemClock), None).expect("opens");
                let start = b.scheduler().next_start_s();
                start
            })
            .collect();
        assert!(starts.iter().all(Option::is_some), "{starts:?}");
        let mut distinct = starts.clone();
        distinct.sort_unstable();
        distinct.dedup();
        // Random ring ids per dir: five equal starts in a 6-hour window would be a seed
        // that ignores them.
        assert!(distinct.len() > 1, "{starts:?}");
    }
}
