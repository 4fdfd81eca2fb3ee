//! The node's SLRU object cache.
//!
//! A sharded, segmented LRU: every shard holds N segments whose capacities follow configured
//! proportions. A new object enters segment 0 (probation); a hit moves it one segment up; a
//! segment over its capacity demotes its least recently used objects one segment down, and
//! segment 0 evicts. Objects touched once stay in the lower segments, so a scan cannot flush the
//! objects that are read again and again.
//!
//! What it is not: a storage engine. Dirty objects (write-back writes) are *handed out* to the
//! caller for writing to the backend ([`Cache::take_writebacks`]); the cache never does I/O.
//!
//! Invariants:
//! - Bytes held by a shard (segments plus evicted-but-unwritten dirty objects) never exceed its
//!   capacity: an insert that cannot fit without dropping unwritten data is refused
//!   ([`Inserted::Refused`]) and the caller writes through instead.
//! - A dirty object is never dropped before the caller has confirmed its write-back
//!   ([`Cache::writeback_done`]); while its write-back is in flight, reads still find it here, so
//!   a reader never sees the older copy on disk.
//! - CACHE_ONLY objects are never written back; losing them on eviction or expiry is their
//!   contract.
//! - Time is passed in (`now`), never read inside, so expiry and write-back timing are testable
//!   without sleeping.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Bytes charged per object on top of its data, for the key, metadata and map entries. Without
/// it a cache of many tiny objects would use far more RAM than its configured size.
const OBJECT_OVERHEAD_BYTES: u64 = 160;

/// Configuration of one cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Total bytes for all shards and segments. 0 disables the cache.
    pub size_bytes: u64,
    /// Number of independently locked shards (lock contention vs. per-shard capacity).
    pub shards: u32,
    /// Relative sizes of the segments, lowest (probation) first.
    pub segment_proportions: Vec<u32>,
    /// How long a dirty (write-back) object may stay unwritten.
    pub sync_timeout_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            size_bytes: 256 << 20,
            shards: 16,
            segment_proportions: vec![1, 1],
            sync_timeout_ms: 30_000,
        }
    }
}

/// A configuration the cache cannot run with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheConfigError {
    /// `shards` was 0 or above the limit.
    #[error("cache shards must be between 1 and {max}, got {got}")]
    Shards {
        /// The configured value.
        got: u32,
        /// The largest accepted value.
        max: u32,
    },
    /// No segments, too many, or a zero proportion.
    #[error("cache segment_proportions must list 1 to {max} non-zero numbers, got {got:?}")]
    Segments {
        /// The configured value.
        got: Vec<u32>,
        /// The most segments accepted.
        max: usize,
    },
}

/// How an object is put into the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InsertOptions {
    /// The object is newer than the backend's copy and must be written back.
    pub dirty: bool,
    /// The object lives only in the cache (CACHE_ONLY): never written back.
    pub cache_only: bool,
    /// Drop the object this long after the insert (written back first when dirty).
    pub lifetime: Option<Duration>,
}

/// What [`Cache::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The object is cached.
    Cached,
    /// Not cached: bigger than a segment, the cache is disabled, or room could only be made by
    /// dropping unwritten data. The caller must write through to the backend.
    Refused,
}

/// A cached object as returned by [`Cache::get`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cached<M> {
    /// The object's bytes (a cheap reference-counted handle).
    pub data: Bytes,
    /// Caller metadata stored with the object (timestamp, user flags, ...).
    pub meta: M,
    /// True while the object is newer than the backend's copy.
    pub dirty: bool,
}

/// A dirty object the caller must write to the backend, then confirm with
/// [`Cache::writeback_done`] passing `version` back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteBack<K, M> {
    /// The object's key.
    pub key: K,
    /// The bytes to write.
    pub data: Bytes,
    /// Its metadata.
    pub meta: M,
    /// Identifies this content: a later insert of the same key makes the confirmation stale.
    pub version: u64,
}

pub use ellipsis_core::stats::CacheStats;

#[derive(Debug)]
struct Entry<M> {
    data: Bytes,
    meta: M,
    charge_bytes: u64,
    dirty: bool,
    cache_only: bool,
    /// When a dirty object must be handed out for write-back.
    sync_at: Option<Instant>,
    expires_at: Option<Instant>,
    version: u64,
    /// A write-back of this version was handed out and not yet confirmed.
    in_flight: bool,
}

impl<M> Entry<M> {
    fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

struct Segment<K: Hash + Eq, M> {
    lru: LruCache<K, Entry<M>>,
    bytes: u64,
    capacity_bytes: u64,
}

struct Shard<K: Hash + Eq, M> {
    segments: Vec<Segment<K, M>>,
    /// Dirty objects pushed out of the segments (evicted or expired) whose write-back is not
    /// confirmed yet. Reads still find them here.
    pending: HashMap<K, Entry<M>>,
    pending_bytes: u64,
    /// Bytes of dirty objects still in the segments. With `pending_bytes` this is what cannot
    /// be given up without a write-back, and it never exceeds `capacity_bytes`.
    dirty_bytes: u64,
    capacity_bytes: u64,
    next_version: u64,
    stats: CacheStats,
}

/// A sharded SLRU cache. See the module documentation for the invariants.
pub struct Cache<K: Hash + Eq, M> {
    shards: Box<[Mutex<Shard<K, M>>]>,
    hasher: RandomState,
    config: CacheConfig,
}

const MAX_SHARDS: u32 = 4096;
const MAX_SEGMENTS: usize = 16;

impl<K: Hash + Eq + Clone, M: Clone> Cache<K, M> {
    /// Builds an empty cache.
    pub fn new(config: CacheConfig) -> Result<Self, CacheConfigError> {
        if config.shards == 0 || config.shards > MAX_SHARDS {
            return Err(CacheConfigError::Shards {
                got: config.shards,
                max: MAX_SHARDS,
            });
        }
        let proportions = &config.segment_proportions;
        if proportions.is_empty() || proportions.len() > MAX_SEGMENTS || proportions.contains(&0) {
            return Err(CacheConfigError::Segments {
                got: proportions.clone(),
                max: MAX_SEGMENTS,
            });
        }
        let shard_bytes = config.size_bytes / u64::from(config.shards);
        let total_parts: u64 = proportions.iter().map(|&p| u64::from(p)).sum();
        let shards = (0..config.shards)
            .map(|_| {
                let segments = proportions
                    .iter()
                    .map(|&p| Segment {
                        lru: LruCache::unbounded(),
                        bytes: 0,
                        capacity_bytes: shard_bytes * u64::from(p) / total_parts,
                    })
                    .collect();
                Mutex::new(Shard {
                    segments,
                    pending: HashMap::new(),
                    pending_bytes: 0,
                    dirty_bytes: 0,
                    capacity_bytes: shard_bytes,
                    next_version: 1,
                    stats: CacheStats::default(),
                })
            })
            .collect();
        Ok(Cache {
            shards,
            hasher: RandomState::new(),
            config,
        })
    }

    /// The configuration the cache was built with.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    fn shard(&self, key: &K) -> &Mutex<Shard<K, M>> {
        let index = self.hasher.hash_one(key) % self.shards.len() as u64;
        // The modulo keeps the index in range; `get` keeps clippy's indexing lint satisfied.
        self.shards
            .get(index as usize)
            .unwrap_or_else(|| unreachable_shard())
    }

    /// Looks an object up; a hit moves it one segment up. An expired clean object is dropped and
    /// reported as a miss; an expired dirty one is still returned (the backend does not have it
    /// yet) until its write-back is confirmed.
    pub fn get(&self, key: &K, now: Instant) -> Option<Cached<M>> {
        let mut shard = self.shard(key).lock();
        let shard = &mut *shard;
        let Some(level) = shard.find(key) else {
            if let Some(entry) = shard.pending.get(key) {
                shard.stats.hits += 1;
                return Some(Cached {
                    data: entry.data.clone(),
                    meta: entry.meta.clone(),
                    dirty: true,
                });
            }
            shard.stats.misses += 1;
            return None;
        };
        let expired = shard.segments.get(level)?.lru.peek(key)?.expired(now);
        if expired {
            shard.expire(key, level);
            if let Some(entry) = shard.pending.get(key) {
                shard.stats.hits += 1;
                return Some(Cached {
                    data: entry.data.clone(),
                    meta: entry.meta.clone(),
                    dirty: true,
                });
            }
            shard.stats.misses += 1;
            return None;
        }
        shard.stats.hits += 1;
        let entry = shard.take(level, key)?;
        let found = Cached {
            data: entry.data.clone(),
            meta: entry.meta.clone(),
            dirty: entry.dirty,
        };
        let up = (level + 1).min(shard.segments.len() - 1);
        shard.push(up, key.clone(), entry);
        shard.rebalance(up);
        Some(found)
    }

    /// Puts an object in segment 0 (or updates it where it is), replacing any older content.
    pub fn insert(
        &self,
        key: K,
        data: Bytes,
        meta: M,
        options: InsertOptions,
        now: Instant,
    ) -> Inserted {
        let charge_bytes = data.len() as u64 + OBJECT_OVERHEAD_BYTES;
        let mut shard = self.shard(&key).lock();
        let shard = &mut *shard;
        let segment0_capacity = shard.segments.first().map_or(0, |s| s.capacity_bytes);
        let dirty = options.dirty && !options.cache_only;
        let level = shard.find(&key);
        let old_dirty_charge = level
            .and_then(|l| shard.segments.get(l)?.lru.peek(&key))
            .filter(|e| e.dirty)
            .map_or(0, |e| e.charge_bytes);
        // Any insert that is not cache-only carries content at least as new as a parked one
        // (a clean insert means the backend already has it), so it supersedes it: writing the
        // parked one back later would put older data over newer.
        let supersedes_pending = !options.cache_only;
        let old_pending_charge = if supersedes_pending {
            shard.pending.get(&key).map_or(0, |e| e.charge_bytes)
        } else {
            0
        };
        // Clean objects can always be evicted; unwritten bytes cannot, so they bound what fits.
        let unwritten_after = shard.dirty_bytes + shard.pending_bytes + charge_bytes
            - old_dirty_charge
            - old_pending_charge;
        if charge_bytes > segment0_capacity || unwritten_after > shard.capacity_bytes {
            shard.stats.refused += 1;
            // The caller writes through; any cached copy is now stale.
            if let Some(l) = level {
                shard.take(l, &key);
            }
            return Inserted::Refused;
        }
        if supersedes_pending {
            if let Some(old) = shard.pending.remove(&key) {
                shard.pending_bytes -= old.charge_bytes;
            }
        }
        let version = shard.next_version;
        shard.next_version += 1;
        let entry = Entry {
            data,
            meta,
            charge_bytes,
            dirty,
            cache_only: options.cache_only,
            sync_at: dirty.then(|| now + Duration::from_millis(self.config.sync_timeout_ms)),
            expires_at: options.lifetime.map(|l| now + l),
            version,
            in_flight: false,
        };
        let target = match level {
            Some(l) => {
                shard.take(l, &key);
                l
            }
            None => 0,
        };
        shard.push(target, key, entry);
        shard.rebalance(target);
        Inserted::Cached
    }

    /// Drops an object (after a remove). Returns true if it was cached. An unconfirmed
    /// write-back of it is dropped too: the remove supersedes it.
    pub fn remove(&self, key: &K) -> bool {
        let mut shard = self.shard(key).lock();
        let mut found = false;
        if let Some(level) = shard.find(key) {
            shard.take(level, key);
            found = true;
        }
        if let Some(old) = shard.pending.remove(key) {
            shard.pending_bytes -= old.charge_bytes;
            found = true;
        }
        found
    }

    /// Hands out dirty objects that are due: past their sync deadline, expired, or evicted.
    /// Expired clean objects are dropped on the way. Each handed-out object is marked in flight
    /// and is not handed out again until [`Cache::writeback_done`] reports on it.
    /// `force` hands out every dirty object (shutdown, explicit sync).
    pub fn take_writebacks(&self, now: Instant, force: bool) -> Vec<WriteBack<K, M>> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let shard = &mut *shard;
            for level in 0..shard.segments.len() {
                let expired: Vec<K> = shard.segments.get(level).map_or(Vec::new(), |s| {
                    s.lru
                        .iter()
                        .filter(|(_, e)| e.expired(now))
                        .map(|(k, _)| k.clone())
                        .collect()
                });
                for key in expired {
                    shard.expire(&key, level);
                }
                if let Some(segment) = shard.segments.get_mut(level) {
                    for (key, entry) in segment.lru.iter_mut() {
                        let due = force || entry.sync_at.is_some_and(|at| at <= now);
                        if entry.dirty && !entry.in_flight && due {
                            entry.in_flight = true;
                            out.push(WriteBack {
                                key: key.clone(),
                                data: entry.data.clone(),
                                meta: entry.meta.clone(),
                                version: entry.version,
                            });
                        }
                    }
                }
            }
            for (key, entry) in shard.pending.iter_mut() {
                if !entry.in_flight {
                    entry.in_flight = true;
                    out.push(WriteBack {
                        key: key.clone(),
                        data: entry.data.clone(),
                        meta: entry.meta.clone(),
                        version: entry.version,
                    });
                }
            }
        }
        out
    }

    /// Reports the outcome of a write-back handed out by [`Cache::take_writebacks`]. On success
    /// the object becomes clean (or, if it had left the segments, is dropped); a failure keeps
    /// it dirty so the next pass retries it. A confirmation for a superseded version changes
    /// nothing but the counters.
    pub fn writeback_done(&self, key: &K, version: u64, ok: bool, now: Instant) {
        let mut shard = self.shard(key).lock();
        let shard = &mut *shard;
        if ok {
            shard.stats.writebacks += 1;
        } else {
            shard.stats.writeback_failures += 1;
        }
        if shard.pending.get(key).is_some_and(|e| e.version == version) {
            if ok {
                if let Some(old) = shard.pending.remove(key) {
                    shard.pending_bytes -= old.charge_bytes;
                }
            } else if let Some(entry) = shard.pending.get_mut(key) {
                entry.in_flight = false;
            }
            return;
        }
        let sync_timeout = Duration::from_millis(self.config.sync_timeout_ms);
        if let Some(level) = shard.find(key) {
            if let Some(entry) = shard
                .segments
                .get_mut(level)
                .and_then(|s| s.lru.peek_mut(key))
            {
                if entry.version == version {
                    entry.in_flight = false;
                    if ok {
                        entry.dirty = false;
                        entry.sync_at = None;
                        shard.dirty_bytes -= entry.charge_bytes;
                    } else {
                        entry.sync_at = Some(now + sync_timeout);
                    }
                }
            }
        }
    }

    /// Gives back a write-back handed out by [`Cache::take_writebacks`] that was not attempted
    /// (its job was cancelled): the object stays dirty and due, for the next pass, and no
    /// counter moves.
    pub fn writeback_returned(&self, key: &K, version: u64) {
        let mut shard = self.shard(key).lock();
        let shard = &mut *shard;
        if let Some(entry) = shard.pending.get_mut(key) {
            if entry.version == version {
                entry.in_flight = false;
            }
            return;
        }
        if let Some(level) = shard.find(key) {
            if let Some(entry) = shard
                .segments
                .get_mut(level)
                .and_then(|s| s.lru.peek_mut(key))
            {
                if entry.version == version {
                    entry.in_flight = false;
                }
            }
        }
    }

    /// Counters and sizes summed over shards.
    pub fn stats(&self) -> CacheStats {
        let mut total = CacheStats {
            max_size_bytes: self.config.size_bytes,
            segment_sizes_bytes: vec![0; self.config.segment_proportions.len()],
            ..CacheStats::default()
        };
        for shard in self.shards.iter() {
            let shard = shard.lock();
            let s = &shard.stats;
            total.hits += s.hits;
            total.misses += s.misses;
            total.evictions += s.evictions;
            total.expirations += s.expirations;
            total.writebacks += s.writebacks;
            total.writeback_failures += s.writeback_failures;
            total.refused += s.refused;
            total.size_bytes += shard.pending_bytes;
            total.dirty_objects += shard.pending.len() as u64;
            for (sum, segment) in total.segment_sizes_bytes.iter_mut().zip(&shard.segments) {
                *sum += segment.bytes;
                total.size_bytes += segment.bytes;
                total.objects += segment.lru.len() as u64;
                total.dirty_objects += segment.lru.iter().filter(|(_, e)| e.dirty).count() as u64;
            }
        }
        total
    }
}

#[cold]
fn unreachable_shard() -> ! {
    panic!("shard index is reduced modulo the shard count")
}

impl<K: Hash + Eq + Clone, M> Shard<K, M> {
    fn find(&self, key: &K) -> Option<usize> {
        self.segments.iter().position(|s| s.lru.contains(key))
    }

    fn push(&mut self, level: usize, key: K, entry: Entry<M>) {
        if let Some(segment) = self.segments.get_mut(level) {
            segment.bytes += entry.charge_bytes;
            if entry.dirty {
                self.dirty_bytes += entry.charge_bytes;
            }
            segment.lru.put(key, entry);
        }
    }

    /// Removes an object from a segment, keeping the byte counts true.
    fn take(&mut self, level: usize, key: &K) -> Option<Entry<M>> {
        let segment = self.segments.get_mut(level)?;
        let entry = segment.lru.pop(key)?;
        segment.bytes -= entry.charge_bytes;
        if entry.dirty {
            self.dirty_bytes -= entry.charge_bytes;
        }
        Some(entry)
    }

    fn pop_lru(&mut self, level: usize) -> Option<(K, Entry<M>)> {
        let segment = self.segments.get_mut(level)?;
        let (key, entry) = segment.lru.pop_lru()?;
        segment.bytes -= entry.charge_bytes;
        if entry.dirty {
            self.dirty_bytes -= entry.charge_bytes;
        }
        Some((key, entry))
    }

    /// Takes an expired object out of the segments: dirty ones wait in `pending` for their
    /// write-back, clean and cache-only ones are gone.
    fn expire(&mut self, key: &K, level: usize) {
        let Some(entry) = self.take(level, key) else {
            return;
        };
        self.stats.expirations += 1;
        self.park_if_dirty(key.clone(), entry);
    }

    /// Keeps an object that left the segments if the backend does not have it yet.
    fn park_if_dirty(&mut self, key: K, entry: Entry<M>) {
        if entry.dirty && !entry.cache_only {
            self.pending_bytes += entry.charge_bytes;
            self.pending.insert(key, entry);
        }
    }

    /// Restores every segment from `from` down to its capacity: overflow moves one segment down;
    /// segment 0's overflow leaves the cache (dirty objects to `pending`). Then, while the shard
    /// as a whole (segments + pending) is over capacity, evicts the least recently used clean
    /// objects, lowest segment first. Runs after any growth of segment `from`.
    fn rebalance(&mut self, from: usize) {
        for level in (0..=from).rev() {
            while self
                .segments
                .get(level)
                .is_some_and(|s| s.bytes > s.capacity_bytes)
            {
                let Some((key, entry)) = self.pop_lru(level) else {
                    break;
                };
                if level == 0 {
                    self.stats.evictions += 1;
                    self.park_if_dirty(key, entry);
                } else {
                    self.push(level - 1, key, entry);
                }
            }
        }
        let mut level = 0;
        while self.held_bytes() > self.capacity_bytes && level < self.segments.len() {
            let clean = self.segments.get(level).and_then(|s| {
                s.lru
                    .iter()
                    .rev()
                    .find(|(_, e)| !e.dirty)
                    .map(|(k, _)| k.clone())
            });
            match clean {
                Some(key) => {
                    self.take(level, &key);
                    self.stats.evictions += 1;
                }
                None => level += 1,
            }
        }
    }

    fn held_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum::<u64>() + self.pending_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(size_bytes: u64, proportions: Vec<u32>) -> Cache<u32, u64> {
        Cache::new(CacheConfig {
            size_bytes,
            shards: 1,
            segment_proportions: proportions,
            sync_timeout_ms: 1_000,
        })
        .expect("valid config")
    }

    fn obj(size: usize) -> Bytes {
        Bytes::from(vec![7u8; size])
    }

    /// Charge of a 100-byte object.
    const C100: u64 = 100 + OBJECT_OVERHEAD_BYTES;

    #[test]
    fn invalid_configs_are_refused() {
        let bad = CacheConfig {
            shards: 0,
            ..CacheConfig::default()
        };
        assert!(matches!(
            Cache::<u32, ()>::new(bad),
            Err(CacheConfigError::Shards { .. })
        ));
        let bad = CacheConfig {
            segment_proportions: vec![],
            ..CacheConfig::default()
        };
        assert!(matches!(
            Cache::<u32, ()>::new(bad),
            Err(CacheConfigError::Segments { .. })
        ));
        let bad = CacheConfig {
            segment_proportions: vec![1, 0],
            ..CacheConfig::default()
        };
        assert!(matches!(
            Cache::<u32, ()>::new(bad),
            Err(CacheConfigError::Segments { .. })
        ));
    }

    #[test]
    fn get_returns_what_was_inserted_and_counts_hits_and_misses() {
        let c = cache(10 * C100, vec![1, 1]);
        let now = Instant::now();
        assert_eq!(
            c.insert(1, obj(100), 42, InsertOptions::default(), now),
            Inserted::Cached
        );
        let got = c.get(&1, now).expect("hit");
        assert_eq!((got.data.len(), got.meta, got.dirty), (100, 42, false));
        assert!(c.get(&2, now).is_none());
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.objects), (1, 1, 1));
        assert_eq!(s.size_bytes, C100);
    }

    #[test]
    fn scan_of_new_objects_does_not_evict_objects_read_twice() {
        // Two segments of 4 objects each.
        let c = cache(8 * C100, vec![1, 1]);
        let now = Instant::now();
        for k in 0..4 {
            c.insert(k, obj(100), 0, InsertOptions::default(), now);
            c.get(&k, now).expect("just inserted"); // promoted to the protected segment
        }
        for k in 100..120 {
            c.insert(k, obj(100), 0, InsertOptions::default(), now);
        }
        for k in 0..4 {
            assert!(c.get(&k, now).is_some(), "hot object {k} survived the scan");
        }
        let s = c.stats();
        assert_eq!(s.evictions, 16);
        assert_eq!(s.segment_sizes_bytes, vec![4 * C100, 4 * C100]);
    }

    #[test]
    fn protected_overflow_demotes_to_probation_instead_of_evicting() {
        let c = cache(4 * C100, vec![1, 1]); // 2 + 2 objects
        let now = Instant::now();
        for k in 0..3 {
            c.insert(k, obj(100), 0, InsertOptions::default(), now);
            c.get(&k, now);
        }
        // Three promoted into a 2-object segment: the least recent (0) went back to probation.
        let s = c.stats();
        assert_eq!(s.objects, 3);
        assert_eq!(s.evictions, 0);
        assert_eq!(s.segment_sizes_bytes, vec![C100, 2 * C100]);
    }

    #[test]
    fn object_bigger_than_probation_is_refused() {
        let c = cache(4 * C100, vec![1, 1]);
        let now = Instant::now();
        assert_eq!(
            c.insert(1, obj(1000), 0, InsertOptions::default(), now),
            Inserted::Refused
        );
        assert_eq!(c.stats().refused, 1);
        assert!(c.get(&1, now).is_none());
    }

    #[test]
    fn refused_update_drops_the_stale_cached_copy() {
        let c = cache(4 * C100, vec![1, 1]);
        let now = Instant::now();
        c.insert(1, obj(100), 0, InsertOptions::default(), now);
        assert_eq!(
            c.insert(1, obj(1000), 1, InsertOptions::default(), now),
            Inserted::Refused
        );
        assert!(c.get(&1, now).is_none(), "a stale copy must not be served");
    }

    #[test]
    fn dirty_object_is_handed_out_after_sync_timeout_and_clean_after_confirmation() {
        let c = cache(10 * C100, vec![1]);
        let t0 = Instant::now();
        let dirty = InsertOptions {
            dirty: true,
            ..InsertOptions::default()
        };
        c.insert(1, obj(100), 5, dirty, t0);
        assert!(c
            .take_writebacks(t0 + Duration::from_millis(999), false)
            .is_empty());
        let due = c.take_writebacks(t0 + Duration::from_millis(1_000), false);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].key, due[0].meta), (1, 5));
        // In flight: not handed out twice.
        assert!(c
            .take_writebacks(t0 + Duration::from_secs(5), false)
            .is_empty());
        c.writeback_done(&1, due[0].version, true, t0);
        assert!(!c.get(&1, t0).expect("still cached").dirty);
        assert!(c
            .take_writebacks(t0 + Duration::from_secs(60), true)
            .is_empty());
        assert_eq!(c.stats().writebacks, 1);
    }

    #[test]
    fn returned_writeback_stays_dirty_and_due_without_counting() {
        let c = cache(10 * C100, vec![1]);
        let t0 = Instant::now();
        let dirty = InsertOptions {
            dirty: true,
            ..InsertOptions::default()
        };
        c.insert(1, obj(100), 5, dirty, t0);
        let due = c.take_writebacks(t0, true);
        assert_eq!(due.len(), 1);
        assert!(c.take_writebacks(t0, true).is_empty(), "in flight");
        c.writeback_returned(&1, due[0].version);
        let again = c.take_writebacks(t0, true);
        assert_eq!(again.len(), 1, "handed out again at once");
        let s = c.stats();
        assert_eq!((s.writebacks, s.writeback_failures), (0, 0));
    }

    #[test]
    fn failed_writeback_keeps_the_object_dirty_and_retries() {
        let c = cache(10 * C100, vec![1]);
        let t0 = Instant::now();
        c.insert(
            1,
            obj(100),
            0,
            InsertOptions {
                dirty: true,
                ..Default::default()
            },
            t0,
        );
        let due = c.take_writebacks(t0, true);
        c.writeback_done(&1, due[0].version, false, t0);
        assert!(c.get(&1, t0).expect("cached").dirty);
        let again = c.take_writebacks(t0 + Duration::from_secs(1), false);
        assert_eq!(again.len(), 1);
        assert_eq!(c.stats().writeback_failures, 1);
    }

    #[test]
    fn confirmation_of_superseded_version_keeps_newer_content_dirty() {
        let c = cache(10 * C100, vec![1]);
        let t0 = Instant::now();
        let dirty = InsertOptions {
            dirty: true,
            ..InsertOptions::default()
        };
        c.insert(1, obj(100), 1, dirty, t0);
        let due = c.take_writebacks(t0, true);
        c.insert(1, obj(50), 2, dirty, t0); // newer content while the old is being written
        c.writeback_done(&1, due[0].version, true, t0);
        let got = c.get(&1, t0).expect("cached");
        assert!(got.dirty, "the newer content has not reached the backend");
        assert_eq!(got.meta, 2);
    }

    #[test]
    fn unwritten_bytes_never_exceed_capacity() {
        let c = cache(2 * C100, vec![1]); // room for two
        let t0 = Instant::now();
        let dirty = InsertOptions {
            dirty: true,
            ..InsertOptions::default()
        };
        c.insert(1, obj(100), 1, dirty, t0);
        c.insert(2, obj(100), 2, InsertOptions::default(), t0);
        // Room is made by evicting: dirty 1 is parked for write-back, clean 2 is dropped.
        assert_eq!(
            c.insert(3, obj(100), 3, InsertOptions::default(), t0),
            Inserted::Cached
        );
        assert!(c.get(&1, t0).expect("parked, still served").dirty);
        assert!(c.get(&2, t0).is_none());
        assert_eq!(c.stats().size_bytes, 2 * C100);
        // Two dirty objects fill the shard with unwritten data: a third is refused, not lost.
        assert_eq!(c.insert(4, obj(100), 4, dirty, t0), Inserted::Cached);
        assert_eq!(c.insert(5, obj(100), 5, dirty, t0), Inserted::Refused);
        assert!(c.stats().size_bytes <= 2 * C100);
        // Once written back there is room again.
        for w in c.take_writebacks(t0, true) {
            c.writeback_done(&w.key, w.version, true, t0);
        }
        assert_eq!(c.insert(5, obj(100), 5, dirty, t0), Inserted::Cached);
        assert!(c.stats().size_bytes <= 2 * C100);
    }

    #[test]
    fn eviction_of_dirty_object_parks_it_for_writeback() {
        // Probation holds 2, protected 2; pending is bounded by the total.
        let c = cache(4 * C100, vec![1, 1]);
        let t0 = Instant::now();
        let dirty = InsertOptions {
            dirty: true,
            ..InsertOptions::default()
        };
        c.insert(1, obj(100), 1, dirty, t0);
        c.insert(2, obj(100), 2, InsertOptions::default(), t0);
        c.insert(3, obj(100), 3, InsertOptions::default(), t0); // evicts 1 into pending
        let got = c.get(&1, t0).expect("pending objects are still served");
        assert!(got.dirty);
        let due = c.take_writebacks(t0, false);
        assert_eq!(due.iter().map(|w| w.key).collect::<Vec<_>>(), vec![1]);
        c.writeback_done(&1, due[0].version, true, t0);
        assert!(
            c.get(&1, t0).is_none(),
            "written back and gone from the cache"
        );
        let s = c.stats();
        assert_eq!((s.evictions, s.dirty_objects), (1, 0));
    }

    #[test]
    fn clean_insert_supersedes_a_parked_older_version() {
        let c = cache(2 * C100, vec![1]);
        let t0 = Instant::now();
        c.insert(
            1,
            obj(100),
            1,
            InsertOptions {
                dirty: true,
                ..Default::default()
            },
            t0,
        );
        c.insert(2, obj(100), 2, InsertOptions::default(), t0);
        c.insert(3, obj(100), 3, InsertOptions::default(), t0); // parks 1
        c.insert(1, obj(100), 9, InsertOptions::default(), t0); // written through: newer
        assert_eq!(c.get(&1, t0).expect("cached").meta, 9);
        assert!(
            c.take_writebacks(t0, true).is_empty(),
            "the older version must not be written"
        );
    }

    #[test]
    fn lifetime_expires_clean_objects_and_writes_back_dirty_ones() {
        let c = cache(10 * C100, vec![1]);
        let t0 = Instant::now();
        let life = Some(Duration::from_secs(10));
        c.insert(
            1,
            obj(100),
            1,
            InsertOptions {
                lifetime: life,
                ..Default::default()
            },
            t0,
        );
        c.insert(
            2,
            obj(100),
            2,
            InsertOptions {
                dirty: true,
                lifetime: life,
                cache_only: false,
            },
            t0,
        );
        let later = t0 + Duration::from_secs(10);
        assert!(c.get(&1, later).is_none(), "clean object expired");
        assert!(c.get(&2, later).expect("dirty object still served").dirty);
        let due = c.take_writebacks(later, false);
        assert_eq!(due.iter().map(|w| w.key).collect::<Vec<_>>(), vec![2]);
        c.writeback_done(&2, due[0].version, true, later);
        assert!(c.get(&2, later).is_none());
        assert_eq!(c.stats().expirations, 2);
    }

    #[test]
    fn cache_only_objects_are_never_written_back() {
        let c = cache(2 * C100, vec![1]);
        let t0 = Instant::now();
        let only = InsertOptions {
            dirty: true,
            cache_only: true,
            lifetime: None,
        };
        c.insert(1, obj(100), 1, only, t0);
        assert!(!c.get(&1, t0).expect("cached").dirty);
        assert!(c
            .take_writebacks(t0 + Duration::from_secs(3600), true)
            .is_empty());
        c.insert(2, obj(100), 2, InsertOptions::default(), t0);
        c.insert(3, obj(100), 3, InsertOptions::default(), t0);
        assert!(c.get(&1, t0).is_none(), "evicted cache-only object is gone");
    }

    #[test]
    fn remove_drops_cached_and_pending_copies() {
        let c = cache(4 * C100, vec![1, 1]);
        let t0 = Instant::now();
        c.insert(
            1,
            obj(100),
            1,
            InsertOptions {
                dirty: true,
                ..Default::default()
            },
            t0,
        );
        c.insert(2, obj(100), 2, InsertOptions::default(), t0);
        c.insert(3, obj(100), 3, InsertOptions::default(), t0); // 1 -> pending
        assert!(c.remove(&1));
        assert!(c.get(&1, t0).is_none());
        assert!(
            c.take_writebacks(t0, true).is_empty(),
            "a removed object is not written back"
        );
        assert!(!c.remove(&1));
    }

    #[test]
    fn sharded_cache_stays_within_its_size_under_concurrent_use() {
        let c = std::sync::Arc::new(
            Cache::<u64, ()>::new(CacheConfig {
                size_bytes: 64 * C100,
                shards: 4,
                segment_proportions: vec![1, 2, 1],
                sync_timeout_ms: 0,
            })
            .expect("valid"),
        );
        let now = Instant::now();
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000u64 {
                        let k = (i * 7 + t) % 300;
                        if i % 3 == 0 {
                            c.get(&k, now);
                        } else {
                            c.insert(k, obj(100), (), InsertOptions::default(), now);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("worker thread");
        }
        let s = c.stats();
        assert!(
            s.size_bytes <= 64 * C100,
            "size {} over capacity",
            s.size_bytes
        );
        assert_eq!(s.size_bytes, s.segment_sizes_bytes.iter().sum::<u64>());
        assert!(s.evictions > 0);
    }
}
