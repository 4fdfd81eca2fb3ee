//! A base: one data file `data-N` and its index, either unsorted (write order, indexed in RAM)
//! or sorted (key order, only index blocks and bloom filters in RAM).
//!
//! Not policy: which base gets written, rotation and data-sort live in the engine. Invariants:
//! the data header of a record and its index entry are always written together with the same
//! bytes; the data header is authoritative after a crash; a sorted base never grows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::bloom::BlockBloom;
use crate::config::Config;
use crate::error::Error;
use crate::file::BlobFile;
use crate::key::Key;
use crate::record::{
    self, Header, HeaderError, FLAG_NOCSUM, FLAG_REMOVED, FLAG_UNCOMMITTED, HEADER_SIZE,
};

/// Path of base `n`'s data file.
pub(crate) fn data_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("data-{n}"))
}
/// Path of base `n`'s write-order index.
pub(crate) fn index_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("data-{n}.index"))
}
/// Path of base `n`'s sorted index.
pub(crate) fn sorted_index_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("data-{n}.index.sorted"))
}
/// Path of base `n`'s "sorted" marker.
pub(crate) fn sorted_marker_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("data-{n}.sorted"))
}

/// Per-base counters, rebuilt at open and kept current by every mutation.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    /// Index entries, removed ones included.
    pub records: u64,
    /// Entries flagged REMOVED.
    pub removed: u64,
    /// Disk bytes of removed records.
    pub removed_bytes: u64,
    /// Records found damaged (at open or by reads).
    pub corrupted: u64,
    /// Data file bytes.
    pub size_bytes: u64,
}

/// RAM index of an unsorted base.
#[derive(Debug, Default)]
pub(crate) struct Unsorted {
    /// Live records: key -> (index slot, header).
    pub map: HashMap<Key, (u64, Header)>,
    /// Index entries written so far (next slot).
    pub slots: u64,
    /// End of the last record (append offset).
    pub tail_bytes: u64,
}

/// RAM part of a sorted base: first key per block and per-block bloom filters.
#[derive(Debug)]
pub(crate) struct Sorted {
    pub count: u64,
    pub block_size: u32,
    pub first_keys: Vec<Key>,
    pub bloom: BlockBloom,
}

impl Sorted {
    /// Build the block structure while entries stream by in key order.
    pub(crate) fn builder(count: u64, block_size: u32, bits_per_key: u32) -> Sorted {
        let blocks = count.div_ceil(u64::from(block_size)) as usize;
        Sorted {
            count,
            block_size,
            first_keys: Vec::with_capacity(blocks),
            bloom: BlockBloom::new(blocks, block_size, bits_per_key),
        }
    }

    /// Feed slot `slot`'s key (`None` when the entry is unreadable).
    pub(crate) fn add(&mut self, slot: u64, key: Option<&Key>) {
        let block = (slot / u64::from(self.block_size)) as usize;
        if let Some(key) = key {
            self.bloom.insert(block, key);
        }
        if self.first_keys.len() <= block {
            // The first readable key bounds the block; an unreadable block inherits the
            // previous bound so the list stays sorted.
            let bound = key
                .copied()
                .or_else(|| self.first_keys.last().copied())
                .unwrap_or(Key::MIN);
            self.first_keys.push(bound);
        }
    }

    pub(crate) fn ram_blocks_bytes(&self) -> u64 {
        (self.first_keys.capacity() * std::mem::size_of::<Key>()) as u64
    }
}

/// How a base is indexed.
#[derive(Debug)]
pub(crate) enum Kind {
    Unsorted(RwLock<Unsorted>),
    Sorted(Sorted),
}

/// One base.
#[derive(Debug)]
pub(crate) struct Base {
    pub number: u32,
    pub data: BlobFile,
    pub index: BlobFile,
    pub kind: Kind,
    /// Set while a data-sort reads this base: no in-place writes, removals are journaled.
    pub sorting: AtomicBool,
    /// Keys removed (or moved away) while `sorting`.
    pub journal: Mutex<Vec<Key>>,
    pub counters: Mutex<Counters>,
    /// Written since the last sync.
    pub dirty: AtomicBool,
}

/// Findings of loading one base, folded into the open report.
#[derive(Debug, Default)]
pub(crate) struct LoadNotes {
    pub torn_bytes: u64,
    pub torn_at: Option<u64>,
    pub corrupted: Vec<(u64, String)>,
    pub index_rebuilt: bool,
    pub duplicates_removed: u64,
}

impl Base {
    pub(crate) fn is_sorted(&self) -> bool {
        matches!(self.kind, Kind::Sorted(_))
    }

    pub(crate) fn is_sorting(&self) -> bool {
        self.sorting.load(Ordering::Acquire)
    }

    /// Create an empty unsorted base.
    pub(crate) fn create(config: &Config, n: u32) -> Result<Base, Error> {
        let faults = config.fault_injector.clone();
        let data = BlobFile::open(&data_path(&config.dir, n), true, faults.clone())?;
        let index = BlobFile::open(&index_path(&config.dir, n), true, faults)?;
        Ok(Base::new(
            n,
            data,
            index,
            Kind::Unsorted(RwLock::new(Unsorted::default())),
        ))
    }

    pub(crate) fn new(number: u32, data: BlobFile, index: BlobFile, kind: Kind) -> Base {
        Base {
            number,
            data,
            index,
            kind,
            sorting: AtomicBool::new(false),
            journal: Mutex::new(Vec::new()),
            counters: Mutex::new(Counters::default()),
            dirty: AtomicBool::new(false),
        }
    }

    /// The live record for `key` in this base: (index slot, header).
    pub(crate) fn find(&self, key: &Key) -> Result<Option<(u64, Header)>, Error> {
        match &self.kind {
            Kind::Unsorted(u) => Ok(u.read().map.get(key).copied()),
            Kind::Sorted(s) => self.find_sorted(s, key),
        }
    }

    /// The valid data header at `position` that names that position and fits in a data file
    /// of `data_len` bytes, if there is one (IO errors count as none: this only rescues).
    fn data_header_at(&self, position: u64, data_len: u64) -> Option<Header> {
        if position + HEADER_SIZE > data_len {
            return None;
        }
        let mut raw = [0u8; HEADER_SIZE as usize];
        self.data.read_at(&mut raw, position).ok()?;
        Header::decode(&raw)
            .ok()
            .filter(|h| h.position == position && position + h.disk_size <= data_len)
    }

    /// The record of sorted slot `slot` read from the data file, for when its index entry does
    /// not decode: records lie back to back in slot order, so it starts where the nearest
    /// readable entry before it ends, plus the records between (walked by their data headers,
    /// at most one index block of them).
    fn sorted_slot_from_data(&self, buf_start: u64, buf: &[u8], slot: u64) -> Option<Header> {
        let data_len = self.data.len().ok()?;
        let decoded = |raw: &[u8]| Header::decode(raw).ok();
        let rel = (slot - buf_start) as usize;
        let chunks: Vec<&[u8]> = buf.chunks_exact(HEADER_SIZE as usize).collect();
        // The nearest readable entry before `slot`: in this block, else the previous block's
        // last one, else (slot 0) the start of the file.
        let mut anchor = (0..rel).rev().find_map(|j| {
            decoded(chunks[j]).map(|h| (buf_start + j as u64 + 1, h.position + h.disk_size))
        });
        if anchor.is_none() {
            anchor = if buf_start == 0 {
                Some((0, 0))
            } else {
                let mut raw = [0u8; HEADER_SIZE as usize];
                self.index
                    .read_at(&mut raw, (buf_start - 1) * HEADER_SIZE)
                    .ok()?;
                decoded(&raw).map(|h| (buf_start, h.position + h.disk_size))
            };
        }
        let (mut at_slot, mut position) = anchor?;
        loop {
            let h = self.data_header_at(position, data_len)?;
            if at_slot == slot {
                return Some(h);
            }
            at_slot += 1;
            position += h.disk_size;
        }
    }

    fn find_sorted(&self, s: &Sorted, key: &Key) -> Result<Option<(u64, Header)>, Error> {
        let mut block = s.first_keys.partition_point(|k| k <= key);
        if block == 0 {
            return Ok(None);
        }
        let bs = u64::from(s.block_size);
        loop {
            block -= 1;
            if s.bloom.may_contain(block, key) {
                let start = block as u64 * bs;
                let n = bs.min(s.count - start);
                let buf = self.index.read_vec(start * HEADER_SIZE, n * HEADER_SIZE)?;
                for (i, raw) in buf.chunks_exact(HEADER_SIZE as usize).enumerate() {
                    let slot = start + i as u64;
                    // An entry damaged since the open (a torn write of it while the record
                    // was rewritten in place) may be this key's: its data header says.
                    let h = match Header::decode(raw) {
                        Ok(h) => Some(h),
                        Err(_) => self.sorted_slot_from_data(start, &buf, slot),
                    };
                    if let Some(h) = h.filter(|h| h.key == *key) {
                        return Ok((!h.has(FLAG_REMOVED)).then_some((slot, h)));
                    }
                }
            }
            // Blocks with equal bounds (an unreadable block inherited its neighbour's) are
            // searched together.
            if block == 0 || s.first_keys[block - 1] != s.first_keys[block] {
                return Ok(None);
            }
        }
    }

    /// Write `header` to the data file and to index slot `slot`, and update RAM.
    pub(crate) fn store_header(&self, slot: u64, header: &Header) -> Result<(), Error> {
        self.dirty.store(true, Ordering::Release);
        self.data.write_at(&header.encode(), header.position)?;
        self.store_index_entry(slot, header)
    }

    /// The index half of [`Base::store_header`], for a caller that wrote the data header
    /// itself (together with the record's bytes).
    pub(crate) fn store_index_entry(&self, slot: u64, header: &Header) -> Result<(), Error> {
        let bytes = header.encode();
        self.dirty.store(true, Ordering::Release);
        // RAM follows the data file, which the caller has already written: if the index
        // write fails, the record on disk is the new one and reads must say so (the open
        // and data-sort take the data header over a stale entry too).
        let written = self.index.write_at(&bytes, slot * HEADER_SIZE);
        if let Kind::Unsorted(u) = &self.kind {
            let mut u = u.write();
            if header.has(FLAG_REMOVED) {
                // Only if the map still points here: a newer copy may already own the key.
                if u.map.get(&header.key).is_some_and(|(s, _)| *s == slot) {
                    u.map.remove(&header.key);
                }
            } else {
                u.map.insert(header.key, (slot, *header));
            }
        }
        written
    }

    /// Mark the record at `slot` removed (data header and index entry) and count it.
    pub(crate) fn mark_removed(&self, slot: u64, header: &Header) -> Result<(), Error> {
        let mut h = *header;
        h.flags |= FLAG_REMOVED;
        self.store_header(slot, &h)?;
        let mut c = self.counters.lock();
        c.removed += 1;
        c.removed_bytes += h.disk_size;
        if self.is_sorting() {
            self.journal.lock().push(h.key);
        }
        Ok(())
    }

    pub(crate) fn note_corrupted(&self) {
        self.counters.lock().corrupted += 1;
    }

    /// The error for damage found in `key`'s record at `position` of this base, counted in
    /// the base's damage.
    pub(crate) fn damaged(&self, key: Key, position: u64, reason: String) -> Error {
        self.note_corrupted();
        Error::Corrupted {
            key,
            base: self.number,
            offset_bytes: position,
            reason,
        }
    }

    /// Whether removed bytes reached `percentage` of the base.
    pub(crate) fn wants_defrag(&self, percentage: u8) -> bool {
        let c = self.counters.lock();
        c.removed > 0 && c.removed_bytes * 100 >= u64::from(percentage) * c.size_bytes.max(1)
    }

    /// Read every index entry in slot order (unreadable ones as `Err`).
    pub(crate) fn read_index(&self) -> Result<Vec<Result<Header, HeaderError>>, Error> {
        let len = self.index.len()?;
        let count = len / HEADER_SIZE;
        let mut out = Vec::with_capacity(count as usize);
        let batch = 8192u64;
        let mut slot = 0;
        while slot < count {
            let n = batch.min(count - slot);
            let buf = self.index.read_vec(slot * HEADER_SIZE, n * HEADER_SIZE)?;
            out.extend(buf.chunks_exact(HEADER_SIZE as usize).map(Header::decode));
            slot += n;
        }
        Ok(out)
    }

    /// Load a sorted base: stream its sorted index into blocks + bloom, count removals.
    pub(crate) fn load_sorted(
        config: &Config,
        n: u32,
        notes: &mut LoadNotes,
    ) -> Result<Base, Error> {
        let faults = config.fault_injector.clone();
        let data = BlobFile::open(&data_path(&config.dir, n), false, faults.clone())?;
        let index = BlobFile::open(&sorted_index_path(&config.dir, n), false, faults)?;
        let size_bytes = data.len()?;
        let count = index.len()? / HEADER_SIZE;
        let mut sorted = Sorted::builder(count, config.index_block_size, config.bloom_bits_per_key);
        let mut counters = Counters {
            size_bytes,
            ..Counters::default()
        };
        let base = Base::new(
            n,
            data,
            index,
            Kind::Unsorted(RwLock::new(Unsorted::default())),
        );
        // Where the next slot's record starts, while every entry so far was readable: a
        // sorted base's records lie back to back in slot order.
        let mut next_position = Some(0u64);
        let mut repaired = false;
        for (slot, entry) in base.read_index()?.into_iter().enumerate() {
            let slot = slot as u64;
            let entry = match entry {
                Ok(h) if h.position + h.disk_size <= size_bytes => Ok(h),
                // An entry that does not decode (a torn rewrite of it, decay): its record is
                // still in the data file, where the previous one ends. Take its data header
                // (the truth for a record) and write the entry back, so the key is not lost.
                damaged => match next_position.and_then(|pos| base.data_header_at(pos, size_bytes))
                {
                    Some(h) => {
                        base.index.write_at(&h.encode(), slot * HEADER_SIZE)?;
                        repaired = true;
                        Ok(h)
                    }
                    None => damaged,
                },
            };
            next_position = entry
                .as_ref()
                .ok()
                .filter(|h| h.position + h.disk_size <= size_bytes)
                .map(|h| h.position + h.disk_size);
            match entry {
                Ok(h) if h.position + h.disk_size <= size_bytes => {
                    if config.verify_data_on_open {
                        match base.verify_record(&h) {
                            Ok(_) => {}
                            Err(VerifyError::Io(e)) => return Err(e),
                            // Like a damaged index entry: the slot is dropped, so the key is
                            // absent here (recovery restores it) and never served damaged.
                            Err(VerifyError::Damaged(reason)) => {
                                sorted.add(slot, None);
                                counters.corrupted += 1;
                                notes.corrupted.push((h.position, reason));
                                continue;
                            }
                        }
                    }
                    sorted.add(slot, Some(&h.key));
                    counters.records += 1;
                    if h.has(FLAG_REMOVED) {
                        counters.removed += 1;
                        counters.removed_bytes += h.disk_size;
                    }
                }
                Ok(_) => {
                    sorted.add(slot, None);
                    counters.corrupted += 1;
                    notes.corrupted.push((
                        slot * HEADER_SIZE,
                        "sorted index entry points past the data file".into(),
                    ));
                }
                Err(e) => {
                    sorted.add(slot, None);
                    counters.corrupted += 1;
                    notes
                        .corrupted
                        .push((slot * HEADER_SIZE, format!("sorted index entry: {e}")));
                }
            }
        }
        if repaired {
            base.index.sync()?;
            notes.index_rebuilt = true;
        }
        let Base { data, index, .. } = base;
        let base = Base::new(n, data, index, Kind::Sorted(sorted));
        *base.counters.lock() = counters;
        Ok(base)
    }

    /// Load an unsorted base: trust the index where it agrees with the data file, scan the
    /// data past the last indexed record, verify the tail, truncate a torn tail, rebuild the
    /// index from the data when it is damaged.
    pub(crate) fn load_unsorted(
        config: &Config,
        n: u32,
        notes: &mut LoadNotes,
    ) -> Result<Base, Error> {
        let faults = config.fault_injector.clone();
        let data = BlobFile::open(&data_path(&config.dir, n), false, faults.clone())?;
        let index = BlobFile::open(&index_path(&config.dir, n), true, faults)?;
        let data_len = data.len()?;
        let base = Base::new(
            n,
            data,
            index,
            Kind::Unsorted(RwLock::new(Unsorted::default())),
        );

        let mut entries: Vec<Header> = Vec::new();
        let mut end = 0u64;
        let index_bytes = base.index.len()?;
        let mut index_dirty = index_bytes % HEADER_SIZE != 0;
        for entry in base.read_index()? {
            match entry {
                // Positions only grow; a gap is a damaged region skipped by an earlier open.
                Ok(h) if h.position >= end && h.position + h.disk_size <= data_len => {
                    end = h.position + h.disk_size;
                    entries.push(h);
                }
                Ok(h) if h.position >= end => {
                    // Indexed but its data never fully reached the file: the torn tail.
                    index_dirty = true;
                    break;
                }
                _ => {
                    notes.index_rebuilt = true;
                    break;
                }
            }
        }
        if notes.index_rebuilt {
            entries.clear();
            end = 0;
            index_dirty = true;
        }
        // The last indexed record is where a crash mid-write lands: verify it fully.
        // An IO error is not a torn tail: fail the open rather than truncate what may be an
        // acknowledged record the disk could not read this once.
        // Its bytes are all on disk (the match above checked its extent), so damage here is a
        // torn in-place rewrite or decay, not an interrupted append: keep it indexed so reads
        // of the key report corruption instead of silently finding nothing.
        let mut last_damaged = None;
        if let Some(last) = entries.last().copied() {
            match base.verify_record(&last) {
                Ok(_) => {}
                Err(VerifyError::Damaged(reason)) => last_damaged = Some((last.position, reason)),
                Err(VerifyError::Io(e)) => return Err(e),
            }
        }
        if config.verify_data_on_open {
            let mut kept = Vec::with_capacity(entries.len());
            for h in entries {
                match base.verify_record(&h) {
                    Ok(h) => kept.push(h),
                    Err(VerifyError::Io(e)) => return Err(e),
                    Err(VerifyError::Damaged(reason)) => {
                        if last_damaged.as_ref().is_some_and(|(p, _)| *p == h.position) {
                            // Reported below, once.
                            kept.push(h);
                            continue;
                        }
                        notes.corrupted.push((h.position, reason));
                        base.counters.lock().corrupted += 1;
                        index_dirty = true;
                    }
                }
            }
            entries = kept;
        }
        if let Some((position, reason)) = last_damaged {
            notes.corrupted.push((position, reason));
            base.counters.lock().corrupted += 1;
        }
        // Records written after the last index entry reached the disk (or the whole file when
        // rebuilding): scan them from the data file.
        let mut pos = end;
        while pos < data_len {
            let scanned = if pos + HEADER_SIZE <= data_len {
                let mut raw = [0u8; HEADER_SIZE as usize];
                base.data.read_at(&mut raw, pos)?;
                match Header::decode(&raw) {
                    Ok(h) if h.position == pos && pos + h.disk_size <= data_len => {
                        match base.verify_record(&h) {
                            Ok(h) => Ok(h),
                            // Complete on disk but damaged: a torn in-place rewrite or decay.
                            // Index it so reads of the key report the corruption.
                            Err(VerifyError::Damaged(r)) => {
                                notes.corrupted.push((pos, r));
                                base.counters.lock().corrupted += 1;
                                Ok(h)
                            }
                            Err(VerifyError::Io(e)) => return Err(e),
                        }
                    }
                    Ok(_) => Err("record extends past the end of the file".to_owned()),
                    Err(e) => Err(e.to_string()),
                }
            } else {
                Err("partial header".to_owned())
            };
            match scanned {
                Ok(h) => {
                    pos += h.disk_size;
                    end = pos;
                    entries.push(h);
                    index_dirty = true;
                }
                Err(reason) => {
                    // Skip to the next readable record if there is one: then this was a
                    // corrupted record in the middle; otherwise it is the torn tail.
                    let resume = base.find_next_header(pos + 1, data_len)?;
                    match resume {
                        Some(next) if next > pos => {
                            notes.corrupted.push((pos, reason));
                            base.counters.lock().corrupted += 1;
                            // Keep the damaged bytes as a dead record so offsets stay valid.
                            pos = next;
                            end = pos;
                            index_dirty = true;
                        }
                        _ => break,
                    }
                }
            }
        }
        if end < data_len {
            notes.torn_at = Some(end);
            notes.torn_bytes = data_len - end;
            base.data.truncate(end)?;
            base.data.sync()?;
        }
        if index_dirty {
            let mut buf = Vec::with_capacity(entries.len() * HEADER_SIZE as usize);
            for h in &entries {
                buf.extend_from_slice(&h.encode());
            }
            base.index.truncate(0)?;
            base.index.write_at(&buf, 0)?;
            base.index.sync()?;
        }
        let mut u = Unsorted {
            map: HashMap::with_capacity(entries.len()),
            slots: entries.len() as u64,
            tail_bytes: end,
        };
        let mut c = Counters {
            records: entries.len() as u64,
            size_bytes: end,
            corrupted: base.counters.lock().corrupted,
            ..Counters::default()
        };
        let mut stale = Vec::new();
        for (slot, h) in entries.iter().enumerate() {
            if h.has(FLAG_REMOVED) {
                c.removed += 1;
                c.removed_bytes += h.disk_size;
            } else if let Some(old) = u.map.insert(h.key, (slot as u64, *h)) {
                // Two live copies: a crash between appending the new one and removing the
                // old one. The later write wins.
                stale.push(old);
            }
        }
        if let Kind::Unsorted(lock) = &base.kind {
            *lock.write() = u;
        }
        *base.counters.lock() = c;
        for (slot, h) in stale {
            base.mark_removed(slot, &h)?;
            notes.duplicates_removed += 1;
        }
        Ok(base)
    }

    /// Find the next offset >= `from` holding a valid header that names its own position.
    fn find_next_header(&self, from: u64, data_len: u64) -> Result<Option<u64>, Error> {
        let window = 1u64 << 20;
        let magic = record::HEADER_MAGIC.to_le_bytes();
        let mut start = from;
        while start + HEADER_SIZE <= data_len {
            let len = (window + HEADER_SIZE).min(data_len - start);
            let buf = self.data.read_vec(start, len)?;
            for i in 0..buf.len().saturating_sub(HEADER_SIZE as usize - 1) {
                if buf[i + 108..i + 112] == magic {
                    let pos = start + i as u64;
                    if let Ok(h) = Header::decode(&buf[i..i + HEADER_SIZE as usize]) {
                        if h.position == pos && pos + h.disk_size <= data_len {
                            return Ok(Some(pos));
                        }
                    }
                }
            }
            start += window;
        }
        Ok(None)
    }

    /// Check a record fully: its data header equals `h` in key and position, and its data
    /// matches the footer. Returns the data header (authoritative for flags).
    pub(crate) fn verify_record(&self, h: &Header) -> Result<Header, VerifyError> {
        let dh = self.data_header_of(h)?;
        if dh.has(FLAG_NOCSUM) || dh.has(FLAG_UNCOMMITTED) || dh.has(FLAG_REMOVED) {
            return Ok(dh);
        }
        self.verify_chunks(&dh, 0, dh.data_size).map(|_| dh)
    }

    /// The data header of the record an index entry `h` points at: authoritative for flags,
    /// size and timestamp (the data header is written first, so after a failed or interrupted
    /// index write the entry may be stale while the record is whole). Damaged when it does
    /// not decode or names another record (key, position or extent differ).
    pub(crate) fn data_header_of(&self, h: &Header) -> Result<Header, VerifyError> {
        let mut raw = [0u8; HEADER_SIZE as usize];
        self.data.read_at(&mut raw, h.position)?;
        let dh =
            Header::decode(&raw).map_err(|e| VerifyError::Damaged(format!("data header: {e}")))?;
        if dh.key != h.key || dh.position != h.position || dh.disk_size != h.disk_size {
            return Err(VerifyError::Damaged(
                "data header disagrees with the index".into(),
            ));
        }
        Ok(dh)
    }

    /// Read data bytes [from, to) of record `h`, verifying every chunk touched.
    pub(crate) fn read_verified(
        &self,
        h: &Header,
        from: u64,
        to: u64,
    ) -> Result<Vec<u8>, VerifyError> {
        if h.has(FLAG_NOCSUM) {
            return Ok(self.data.read_vec(h.data_offset() + from, to - from)?);
        }
        self.verify_chunks(h, from, to)
    }

    fn verify_chunks(&self, h: &Header, from: u64, to: u64) -> Result<Vec<u8>, VerifyError> {
        let damaged = |m: &str| VerifyError::Damaged(m.to_owned());
        let used = record::used_chunks(h.data_size);
        let footer = self
            .data
            .read_vec(h.footer_offset(), record::footer_size(h.disk_size))?;
        let (hashes, total) =
            record::decode_footer(&footer, used).ok_or_else(|| damaged("footer too short"))?;
        if record::hash_of_hashes(&hashes) != total {
            return Err(damaged("footer checksum mismatch"));
        }
        if from >= to {
            return Ok(Vec::new());
        }
        // One read of the chunks that cover the range, straight into the buffer returned:
        // a whole-object read costs one copy from the page cache plus the hashing.
        let first = from / record::CHUNK_SIZE;
        let last = (to - 1) / record::CHUNK_SIZE;
        let span_start = first * record::CHUNK_SIZE;
        let span_end = ((last + 1) * record::CHUNK_SIZE).min(h.data_size);
        let mut buf = self
            .data
            .read_vec(h.data_offset() + span_start, span_end - span_start)?;
        for c in first..=last {
            let lo = (c - first) * record::CHUNK_SIZE;
            let hi = (lo + record::CHUNK_SIZE).min(span_end - span_start);
            let chunk = buf
                .get(lo as usize..hi as usize)
                .ok_or_else(|| damaged("chunk outside the read"))?;
            if record::chunk_hash(c, chunk) != hashes.get(c as usize).copied().unwrap_or(!0) {
                return Err(VerifyError::Damaged(format!(
                    "data checksum mismatch in chunk {c}"
                )));
            }
        }
        buf.truncate((to - span_start) as usize);
        buf.drain(..(from - span_start) as usize);
        Ok(buf)
    }
}

/// Why a record did not verify. The two must never be confused: an IO error says nothing
/// about the bytes (the next read may succeed), so it is never counted as damage, never makes
/// open truncate or drop a record, and never makes data-sort drop one.
#[derive(Debug)]
pub(crate) enum VerifyError {
    /// The disk failed to answer.
    Io(Error),
    /// The bytes were read and are wrong.
    Damaged(String),
}

impl From<Error> for VerifyError {
    fn from(e: Error) -> VerifyError {
        VerifyError::Io(e)
    }
}

impl Base {
    /// fdatasync both files if anything was written since the last sync.
    pub(crate) fn sync_if_dirty(&self) -> Result<(), Error> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            let r = self.data.sync().and_then(|()| self.index.sync());
            if r.is_err() {
                self.dirty.store(true, Ordering::Release);
            }
            r?;
        }
        Ok(())
    }
}
