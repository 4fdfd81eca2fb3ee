//! Data-sort: rewrite closed bases sorted by key, dropping removed records, merging small
//! neighbours, and swap them in with a crash-safe commit.
//!
//! Not scheduling (the node decides when) and not iteration. Invariants: foreground reads and
//! writes keep running while a base is rewritten (only the final swap holds the write lock);
//! a base under sort is never rewritten in place, and every removal made on it meanwhile is
//! journaled and replayed on the new base before the swap; on disk, a sort either committed
//! (its commit file exists and open finishes it) or never happened (open deletes its
//! temporary files).

use std::fs::File;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use xxhash_rust::xxh3::xxh3_64;

use crate::base::{self, Base, Counters, Kind, Sorted, VerifyError};
use crate::engine::{Eblob, Inner};
use crate::error::Error;
use crate::file::{sync_dir, BlobFile};
use crate::record::{self, Header, FLAG_NOCSUM, FLAG_REMOVED, FLAG_UNCOMMITTED};
use crate::stats::{DataSortProgress, DataSortReport, OpenReport};

/// What a data-sort run covers.
#[derive(Clone, Default)]
pub struct DataSortOptions {
    /// Only bases that want defrag (and do not rotate the open base first).
    pub compact_only: bool,
    /// Leave the open base alone: sort (and merge) only bases already closed. What an AUTO
    /// run after a rotation does; a full run otherwise closes the open base first.
    pub closed_only: bool,
    /// Told the plan and the progress after every group of bases; may ask to stop.
    pub progress: Option<Arc<dyn SortProgress>>,
}

impl std::fmt::Debug for DataSortOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataSortOptions")
            .field("compact_only", &self.compact_only)
            .field("closed_only", &self.closed_only)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// Observer of a running data-sort (the node's job status): called on the sorting thread once
/// the plan is known (nothing done yet) and after each group of bases is swapped in. Returning
/// `Break` stops the run there, like [`Eblob::stop_data_sort`]: what is swapped in stays, the
/// rest is left as it was. A slow observer delays only the sort, never foreground requests (no
/// engine lock is held while it runs).
pub trait SortProgress: Send + Sync {
    /// See the trait documentation.
    fn report(&self, progress: &DataSortProgress) -> ControlFlow<()>;
}

const COMMIT_MAGIC: u32 = 0x5353_4c45; // "ELSS"
const COMMIT_VERSION: u32 = 1;

fn sorting_data_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("data-{n}.sorting"))
}
fn sorting_index_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("data-{n}.index.sorting"))
}
fn commit_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("data-{n}.sort-commit"))
}

/// The commit record: which bases were merged into `data-M` and whether it has records.
#[derive(Debug, PartialEq, Eq)]
struct Commit {
    target: u32,
    has_output: bool,
    merged: Vec<u32>,
}

impl Commit {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&COMMIT_MAGIC.to_le_bytes());
        b.extend_from_slice(&COMMIT_VERSION.to_le_bytes());
        b.extend_from_slice(&self.target.to_le_bytes());
        b.extend_from_slice(&u32::from(self.has_output).to_le_bytes());
        b.extend_from_slice(&(self.merged.len() as u32).to_le_bytes());
        for n in &self.merged {
            b.extend_from_slice(&n.to_le_bytes());
        }
        let sum = xxh3_64(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Commit> {
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
        };
        if b.len() < 28 || u32_at(0)? != COMMIT_MAGIC || u32_at(4)? != COMMIT_VERSION {
            return None;
        }
        let count = u32_at(16)? as usize;
        let end = 20 + count.checked_mul(4)?;
        let sum = u64::from_le_bytes(b.get(end..end + 8)?.try_into().ok()?);
        if b.len() != end + 8 || xxh3_64(&b[..end]) != sum {
            return None;
        }
        Some(Commit {
            target: u32_at(8)?,
            has_output: u32_at(12)? != 0,
            merged: (0..count)
                .map(|i| u32_at(20 + 4 * i))
                .collect::<Option<_>>()?,
        })
    }
}

fn remove_if_exists(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", path, e)),
        _ => Ok(()),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> Result<(), Error> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("rename", from, e)),
        _ => Ok(()),
    }
}

/// Put a committed sort's files in place. Idempotent: open repeats it after a crash.
fn apply_commit(dir: &Path, c: &Commit) -> Result<(), Error> {
    let m = c.target;
    if c.has_output {
        rename_if_exists(&sorting_data_path(dir, m), &base::data_path(dir, m))?;
        rename_if_exists(
            &sorting_index_path(dir, m),
            &base::sorted_index_path(dir, m),
        )?;
        let marker = base::sorted_marker_path(dir, m);
        File::create(&marker).map_err(|e| Error::io("create", &marker, e))?;
        remove_if_exists(&base::index_path(dir, m))?;
    }
    for &n in &c.merged {
        if n == m && c.has_output {
            continue;
        }
        remove_if_exists(&base::data_path(dir, n))?;
        remove_if_exists(&base::index_path(dir, n))?;
        remove_if_exists(&base::sorted_index_path(dir, n))?;
        remove_if_exists(&base::sorted_marker_path(dir, n))?;
    }
    sync_dir(dir)?;
    remove_if_exists(&commit_path(dir, m))?;
    sync_dir(dir)
}

/// At open: finish committed sorts, delete the leftovers of uncommitted ones.
pub(crate) fn recover_interrupted(
    config: &crate::Config,
    report: &mut OpenReport,
) -> Result<(), Error> {
    let dir = &config.dir;
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort_by_key(|n| {
        let digits: String = n.chars().skip(5).take_while(char::is_ascii_digit).collect();
        (digits.parse::<u64>().unwrap_or(u64::MAX), n.clone())
    });
    for name in names.iter().filter(|n| n.ends_with(".sort-commit")) {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        match Commit::decode(&bytes) {
            Some(c) => {
                apply_commit(dir, &c)?;
                report.sorts_finished.push(c.target);
            }
            // Written under a temporary name and renamed: a bad one was never committed.
            None => remove_if_exists(&path)?,
        }
    }
    for name in names
        .iter()
        .filter(|n| n.ends_with(".sorting") || n.ends_with(".tmp"))
    {
        if name.ends_with(".index.sorting") {
            report.sorts_discarded += 1;
        }
        remove_if_exists(&dir.join(name))?;
    }
    Ok(())
}

fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Eblob {
    /// Sort (and merge, and compact) closed bases; blocks the caller until done or stopped,
    /// while other threads keep reading and writing. Full mode first closes the open base
    /// if it holds records, so that afterwards every record sits in a sorted base.
    pub fn data_sort(&self, opts: &DataSortOptions) -> Result<DataSortReport, Error> {
        let inner = &self.inner;
        let _running = inner.sort_lock.try_lock().ok_or(Error::SortRunning)?;
        let started = Instant::now();
        {
            let mut s = inner.sort_stats.lock();
            // Under the stats lock, like `stop_data_sort`: a stop seen as `stopping` is never
            // erased by this reset.
            inner.stop_sort.store(false, Ordering::Release);
            s.running = true;
            s.last_start_unix_s = Some(now_unix_s());
        }
        let r = self.data_sort_run(opts);
        let mut s = inner.sort_stats.lock();
        s.running = false;
        s.stopping = false;
        s.progress = None;
        s.runs += 1;
        s.last_duration_ms = Some(started.elapsed().as_millis() as u64);
        s.last_result = Some(match &r {
            Ok(rep) if rep.stopped => "stopped".to_owned(),
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("error: {e}"),
        });
        if let Ok(rep) = &r {
            s.bases_written += rep.bases_out.len() as u64;
        }
        r.map(|mut rep| {
            rep.duration_ms = started.elapsed().as_millis() as u64;
            rep
        })
    }

    /// Ask a running data-sort to stop after the base it is writing (its stats say
    /// `stopping` until it has). A sort that is not running is not affected: the next run
    /// starts afresh.
    pub fn stop_data_sort(&self) {
        let mut s = self.inner.sort_stats.lock();
        self.inner.stop_sort.store(true, Ordering::Release);
        if s.running {
            s.stopping = true;
        }
    }

    fn data_sort_run(&self, opts: &DataSortOptions) -> Result<DataSortReport, Error> {
        let inner = &self.inner;
        if !opts.compact_only && !opts.closed_only {
            inner.mutate(|inner| {
                let mut bases = inner.bases.write();
                let open_has_records = bases.last().is_some_and(|b| b.counters.lock().records > 0);
                if open_has_records {
                    inner.rotate_locked(&mut bases)?;
                }
                Ok(())
            })?;
        } else if let Some(reason) = self.read_only_reason() {
            return Err(Error::ReadOnly { reason });
        }
        let mut report = DataSortReport::default();
        let groups = plan(inner, opts);
        let bytes_of =
            |g: &[Arc<Base>]| -> u64 { g.iter().map(|b| b.counters.lock().size_bytes).sum() };
        let mut progress = DataSortProgress {
            bases_total: groups.iter().map(|g| g.len() as u64).sum(),
            bytes_total: groups.iter().map(|g| bytes_of(g)).sum(),
            ..DataSortProgress::default()
        };
        self.report_progress(opts, &progress);
        for group in groups {
            if inner.stop_sort.load(Ordering::Acquire) {
                report.stopped = true;
                break;
            }
            let bytes = bytes_of(&group);
            sort_group(inner, &group, &mut report).inspect_err(|e| {
                if matches!(e, Error::Io { .. }) {
                    inner.turn_read_only(e);
                }
            })?;
            progress.bases_done += group.len() as u64;
            progress.bytes_done += bytes;
            self.report_progress(opts, &progress);
        }
        Ok(report)
    }

    /// Publish `progress` in the stats and tell the observer; its `Break` is a stop request.
    fn report_progress(&self, opts: &DataSortOptions, progress: &DataSortProgress) {
        self.inner.sort_stats.lock().progress = Some(*progress);
        if let Some(observer) = &opts.progress {
            if observer.report(progress).is_break() {
                self.stop_data_sort();
            }
        }
    }
}

/// Groups of adjacent closed bases to rewrite, each fitting one base.
fn plan(inner: &Inner, opts: &DataSortOptions) -> Vec<Vec<Arc<Base>>> {
    let bases = inner.snapshot();
    let closed = &bases[..bases.len().saturating_sub(1)];
    let pct = inner.config.defrag_percentage;
    let mut groups = Vec::new();
    let mut cur: Vec<Arc<Base>> = Vec::new();
    let (mut cur_bytes, mut cur_records) = (0u64, 0u64);
    let flush = |cur: &mut Vec<Arc<Base>>, groups: &mut Vec<Vec<Arc<Base>>>| {
        let worth = cur.len() > 1
            || cur
                .first()
                .is_some_and(|b| !b.is_sorted() || b.wants_defrag(pct));
        if worth {
            groups.push(std::mem::take(cur));
        } else {
            cur.clear();
        }
    };
    for b in closed {
        let c = *b.counters.lock();
        let live_bytes = c.size_bytes.saturating_sub(c.removed_bytes);
        let live_records = c.records.saturating_sub(c.removed);
        let wants = b.wants_defrag(pct);
        let small = live_bytes < inner.config.blob_size_bytes / 2;
        let candidate = if opts.compact_only {
            wants
        } else {
            !b.is_sorted() || wants || small
        };
        if !candidate {
            flush(&mut cur, &mut groups);
            (cur_bytes, cur_records) = (0, 0);
            continue;
        }
        if !cur.is_empty()
            && (cur_bytes + live_bytes > inner.config.blob_size_bytes
                || cur_records + live_records > inner.config.records_in_blob)
        {
            flush(&mut cur, &mut groups);
            (cur_bytes, cur_records) = (0, 0);
        }
        cur.push(b.clone());
        cur_bytes += live_bytes;
        cur_records += live_records;
    }
    flush(&mut cur, &mut groups);
    groups
}

struct Item {
    key: crate::Key,
    source: usize,
    header: Header,
}

fn sort_group(
    inner: &Inner,
    group: &[Arc<Base>],
    report: &mut DataSortReport,
) -> Result<(), Error> {
    {
        let _w = inner.write_lock.lock();
        for b in group {
            b.journal.lock().clear();
            b.sorting.store(true, Ordering::Release);
        }
    }
    let dir = inner.config.dir.clone();
    let m = group[0].number;
    let r = write_sorted(inner, group, report)
        .and_then(|(sorted, bytes)| swap(inner, group, sorted, bytes, report));
    if r.is_err() {
        for b in group {
            b.sorting.store(false, Ordering::Release);
        }
        if !commit_path(&dir, m).exists() {
            // Never committed: the sources are intact; drop the half-written copy.
            let _ = remove_if_exists(&sorting_data_path(&dir, m));
            let _ = remove_if_exists(&sorting_index_path(&dir, m));
        }
    }
    r
}

/// Sequential buffered writes through [`BlobFile`], so that every byte data-sort writes
/// passes the fault-injection seam like the foreground paths do.
struct SeqWriter {
    file: BlobFile,
    buf: Vec<u8>,
    pos: u64,
}

/// Bytes data-sort gathers before one write (per output file).
const SORT_BUFFER_BYTES: usize = 1 << 20;

impl SeqWriter {
    fn create(path: &Path, faults: Option<Arc<dyn crate::FaultInjector>>) -> Result<Self, Error> {
        let file = BlobFile::open(path, true, faults)?;
        // A leftover of an earlier failed run must not leak into this one.
        file.truncate(0)?;
        Ok(SeqWriter {
            file,
            buf: Vec::with_capacity(SORT_BUFFER_BYTES),
            pos: 0,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.buf.len() + bytes.len() > SORT_BUFFER_BYTES {
            self.flush()?;
            if bytes.len() >= SORT_BUFFER_BYTES {
                // Large bodies go straight to the file instead of growing the buffer.
                self.file.write_at(bytes, self.pos)?;
                self.pos += bytes.len() as u64;
                return Ok(());
            }
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        if !self.buf.is_empty() {
            self.file.write_at(&self.buf, self.pos)?;
            self.pos += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Write what is buffered and fdatasync.
    fn finish(mut self) -> Result<(), Error> {
        self.flush()?;
        self.file.sync()
    }
}

/// Write the group's live records, sorted by key, into the temporary files.
fn write_sorted(
    inner: &Inner,
    group: &[Arc<Base>],
    report: &mut DataSortReport,
) -> Result<(Sorted, u64), Error> {
    let dir = &inner.config.dir;
    let m = group[0].number;
    let mut items = Vec::new();
    for (source, b) in group.iter().enumerate() {
        report.bases_in.push(b.number);
        report.bytes_before += b.counters.lock().size_bytes;
        for entry in b.read_index()? {
            match entry {
                Ok(h) if h.has(FLAG_REMOVED) => report.removed_dropped += 1,
                Ok(h) => items.push(Item {
                    key: h.key,
                    source,
                    header: h,
                }),
                Err(_) => report.corrupted_dropped += 1,
            }
        }
    }
    items.sort_unstable_by(|a, b| {
        (a.key, a.source, a.header.position).cmp(&(b.key, b.source, b.header.position))
    });
    let faults = inner.config.fault_injector.clone();
    let mut data = SeqWriter::create(&sorting_data_path(dir, m), faults.clone())?;
    let mut index = SeqWriter::create(&sorting_index_path(dir, m), faults)?;
    let mut sorted = Sorted::builder(
        items.len() as u64,
        inner.config.index_block_size,
        inner.config.bloom_bits_per_key,
    );
    let (mut pos, mut slot) = (0u64, 0u64);
    for (i, item) in items.iter().enumerate() {
        // Two live copies of one key: the later write wins (crash leftovers).
        if items.get(i + 1).is_some_and(|next| next.key == item.key) {
            report.removed_dropped += 1;
            continue;
        }
        let src = &group[item.source];
        // The data header, not the index entry, says what the record is now: an in-place
        // rewrite whose index write failed (or was cut off by a crash) leaves a stale entry
        // in front of a whole record; sorting by the entry would drop that record as damaged.
        let h = match src.data_header_of(&item.header) {
            Ok(dh) => dh,
            // A read error is not damage: fail the sort rather than drop the record.
            Err(VerifyError::Io(e)) => return Err(e),
            Err(VerifyError::Damaged(_)) => {
                src.note_corrupted();
                report.corrupted_dropped += 1;
                continue;
            }
        };
        if h.has(FLAG_REMOVED) {
            report.removed_dropped += 1;
            continue;
        }
        let (body, capacity, footer) = if h.has(FLAG_UNCOMMITTED) {
            // Keep the reservation: the upload continues after the sort.
            let body = src.data.read_vec(h.data_offset(), h.capacity())?;
            let slots = record::chunk_slots(h.disk_size);
            (body, h.capacity(), vec![0u8; ((slots + 1) * 8) as usize])
        } else {
            let body = if h.has(FLAG_NOCSUM) {
                src.data.read_vec(h.data_offset(), h.data_size)?
            } else {
                match src.read_verified(&h, 0, h.data_size) {
                    Ok(b) => b,
                    // A read error is not damage: dropping the record here would lose it for
                    // good once the commit deletes the source. Fail the sort instead.
                    Err(VerifyError::Io(e)) => return Err(e),
                    Err(VerifyError::Damaged(_)) => {
                        src.note_corrupted();
                        report.corrupted_dropped += 1;
                        continue;
                    }
                }
            };
            let slots = record::chunk_slots_for_capacity(h.data_size);
            let footer = if h.has(FLAG_NOCSUM) {
                vec![0u8; ((slots + 1) * 8) as usize]
            } else {
                record::encode_footer(slots, &record::chunk_hashes(&[&body]))
            };
            (body, h.data_size, footer)
        };
        let nh = Header {
            position: pos,
            disk_size: record::disk_size_for(capacity),
            ..h
        };
        let enc = nh.encode();
        data.write(&enc)?;
        data.write(&body)?;
        data.write(&footer)?;
        index.write(&enc)?;
        sorted.add(slot, Some(&nh.key));
        slot += 1;
        pos += nh.disk_size;
    }
    sorted.count = slot;
    data.finish()?;
    index.finish()?;
    report.records_written += slot;
    Ok((sorted, pos))
}

/// Replay the journal into the new base, commit, and put it in place of the group.
fn swap(
    inner: &Inner,
    group: &[Arc<Base>],
    sorted: Sorted,
    size_bytes: u64,
    report: &mut DataSortReport,
) -> Result<(), Error> {
    let dir = &inner.config.dir;
    let m = group[0].number;
    let faults = inner.config.fault_injector.clone();
    let _w = inner.write_lock.lock();
    let has_output = sorted.count > 0;
    let new = Base::new(
        m,
        BlobFile::open(&sorting_data_path(dir, m), false, faults.clone())?,
        BlobFile::open(&sorting_index_path(dir, m), false, faults.clone())?,
        Kind::Sorted(sorted),
    );
    new.counters.lock().size_bytes = size_bytes;
    for b in group {
        let keys: Vec<crate::Key> = std::mem::take(&mut *b.journal.lock());
        for key in keys {
            if let Some((slot, h)) = new.find(&key)? {
                new.mark_removed(slot, &h)?;
            }
        }
    }
    new.sync_if_dirty()?;
    let commit = Commit {
        target: m,
        has_output,
        merged: group.iter().map(|b| b.number).collect(),
    };
    let tmp = dir.join(format!("data-{m}.sort-commit.tmp"));
    {
        // Through BlobFile so that the fault seam sees the commit record's write and sync.
        let f = BlobFile::open(&tmp, true, faults.clone())?;
        f.truncate(0)?;
        f.write_at(&commit.encode(), 0)?;
        f.sync()?;
    }
    std::fs::rename(&tmp, commit_path(dir, m)).map_err(|e| Error::io("rename", &tmp, e))?;
    sync_dir(dir)?;
    // Committed: from here a failure is finished by the next open.
    apply_commit(dir, &commit)?;
    let Base { kind, counters, .. } = new;
    let removed = counters.into_inner();
    let replacement = if has_output {
        let b = Base::new(
            m,
            BlobFile::open(&base::data_path(dir, m), false, faults.clone())?,
            BlobFile::open(&base::sorted_index_path(dir, m), false, faults)?,
            kind,
        );
        let records = match &b.kind {
            Kind::Sorted(s) => s.count,
            Kind::Unsorted(_) => 0,
        };
        *b.counters.lock() = Counters {
            records,
            removed: removed.removed,
            removed_bytes: removed.removed_bytes,
            corrupted: 0,
            size_bytes,
        };
        report.bases_out.push(m);
        report.bytes_after += size_bytes;
        Some(Arc::new(b))
    } else {
        None
    };
    let mut bases = inner.bases.write();
    if let Some(at) = bases.iter().position(|b| Arc::ptr_eq(b, &group[0])) {
        bases.drain(at..at + group.len());
        if let Some(r) = replacement {
            bases.insert(at, r);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_record_round_trips_and_rejects_damage() {
        let c = Commit {
            target: 3,
            has_output: true,
            merged: vec![3, 4, 5],
        };
        let b = c.encode();
        assert_eq!(Commit::decode(&b), Some(c));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert_eq!(Commit::decode(&d), None, "flip at {i}");
        }
        assert_eq!(Commit::decode(&b[..b.len() - 1]), None);
    }
}
