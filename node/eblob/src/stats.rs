//! Serde reports: engine stats, the open report, data-sort and iteration reports.
//!
//! Plain data only: the engine fills these, the node serves them as JSON. Every struct
//! deserialises with defaults for missing fields so older readers keep working.

use serde::{Deserialize, Serialize};

/// One base as seen by [`Stats`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BaseStats {
    /// Base number (`data-N`).
    pub number: u32,
    /// Sorted by data-sort (only blocks and blooms in RAM).
    pub sorted: bool,
    /// A data-sort is reading it now.
    pub sorting: bool,
    /// Index entries, removed included.
    pub records: u64,
    /// Records not removed.
    pub live_records: u64,
    /// Records flagged removed.
    pub removed_records: u64,
    /// Disk bytes held by removed records.
    pub removed_bytes: u64,
    /// Records found damaged.
    pub corrupted: u64,
    /// Data file bytes.
    pub size_bytes: u64,
    /// RAM of the in-memory hash index (unsorted bases).
    pub ram_index_bytes: u64,
    /// RAM of bloom filters (sorted bases).
    pub ram_bloom_bytes: u64,
    /// RAM of index blocks (sorted bases).
    pub ram_index_blocks_bytes: u64,
    /// Removed bytes reached `defrag_percentage` of the base.
    pub want_defrag: bool,
}

/// Sums over all bases.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TotalStats {
    /// Number of bases.
    pub bases: u64,
    /// Sorted bases.
    pub sorted_bases: u64,
    /// Bases that want defrag.
    pub want_defrag_bases: u64,
    /// Index entries, removed included.
    pub records: u64,
    /// Live records.
    pub live_records: u64,
    /// Removed records.
    pub removed_records: u64,
    /// Removed bytes (what a data-sort would free).
    pub removed_bytes: u64,
    /// Damaged records.
    pub corrupted: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// RAM of hash indexes.
    pub ram_index_bytes: u64,
    /// RAM of bloom filters.
    pub ram_bloom_bytes: u64,
    /// RAM of index blocks.
    pub ram_index_blocks_bytes: u64,
}

/// Data-sort state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataSortStats {
    /// A data-sort is running.
    pub running: bool,
    /// Unix seconds of the last start.
    pub last_start_unix_s: Option<u64>,
    /// How long the last run took.
    pub last_duration_ms: Option<u64>,
    /// "ok", "stopped" or the error of the last run.
    pub last_result: Option<String>,
    /// Completed runs since open.
    pub runs: u64,
    /// Bases written by data-sort since open.
    pub bases_written: u64,
    /// A stop was requested and the running sort finishes the base it is writing first.
    pub stopping: bool,
    /// Progress of the running sort (`None` when idle).
    pub progress: Option<DataSortProgress>,
}

/// How far a running data-sort is: told to [`crate::SortProgress`] observers and kept in
/// [`DataSortStats::progress`] while it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataSortProgress {
    /// Source bases the run plans to rewrite.
    pub bases_total: u64,
    /// Of which rewritten and swapped in.
    pub bases_done: u64,
    /// Data bytes of the planned source bases.
    pub bytes_total: u64,
    /// Of which done.
    pub bytes_done: u64,
}

/// Operation counters since open.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OpStats {
    /// Successful reads.
    pub reads: u64,
    /// Bytes returned by reads.
    pub read_bytes: u64,
    /// Successful writes.
    pub writes: u64,
    /// Bytes accepted by writes.
    pub write_bytes: u64,
    /// Successful removes.
    pub removes: u64,
    /// `lookup` calls.
    pub lookups: u64,
    /// Requests answered "not found".
    pub not_found: u64,
    /// Reads that hit a checksum mismatch.
    pub corrupted_reads: u64,
    /// Writes refused because their data did not hash to the checksum they named
    /// ([`crate::WriteOptions::data_checksum`]: a copy damaged at its source or changed while
    /// it was sent); nothing was stored. Not counted in `errors`.
    pub mismatched_writes: u64,
    /// Requests that failed for any other reason.
    pub errors: u64,
    /// Open bases closed because they were full (`blob_size_bytes` / `records_in_blob`); a
    /// data-sort closing the open base itself does not count. What AUTO data-sort watches.
    pub rotations: u64,
}

/// Everything the engine reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Per base, oldest first.
    pub bases: Vec<BaseStats>,
    /// Sums.
    pub total: TotalStats,
    /// Data-sort.
    pub data_sort: DataSortStats,
    /// Counters.
    pub ops: OpStats,
    /// Why writes are refused, if they are.
    pub read_only_reason: Option<String>,
}

/// A torn tail found at open.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TornTail {
    /// Base number.
    pub base: u32,
    /// Where the file was cut.
    pub offset_bytes: u64,
    /// How many bytes were dropped.
    pub truncated_bytes: u64,
}

/// A damaged record or index entry found at open.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CorruptRecord {
    /// Base number.
    pub base: u32,
    /// Offset in the data file (or in the sorted index for index entries).
    pub offset_bytes: u64,
    /// What failed.
    pub reason: String,
}

/// What the startup check found and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OpenReport {
    /// Bases loaded.
    pub bases: u64,
    /// Of which sorted.
    pub sorted_bases: u64,
    /// Live records.
    pub live_records: u64,
    /// Torn tails truncated.
    pub torn: Vec<TornTail>,
    /// Damaged records (counted, never returned).
    pub corrupted: Vec<CorruptRecord>,
    /// Bases whose index was rebuilt from the data file.
    pub indexes_rebuilt: Vec<u32>,
    /// Older live copies removed after a crash between a write and the removal of its
    /// previous copy.
    pub duplicates_removed: u64,
    /// Data-sorts that had committed before a crash and were finished at open.
    pub sorts_finished: Vec<u32>,
    /// Data-sorts that had not committed: their temporary files were deleted.
    pub sorts_discarded: u64,
    /// Time the open took.
    pub duration_ms: u64,
}

/// What one data-sort run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataSortReport {
    /// Source bases rewritten (and merged).
    pub bases_in: Vec<u32>,
    /// Sorted bases written.
    pub bases_out: Vec<u32>,
    /// Live records written.
    pub records_written: u64,
    /// Removed records dropped.
    pub removed_dropped: u64,
    /// Damaged records dropped (they were unreadable anyway).
    pub corrupted_dropped: u64,
    /// Bytes before.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
    /// Stopped by `stop_data_sort` before all planned bases were done.
    pub stopped: bool,
    /// Wall time.
    pub duration_ms: u64,
}

/// What one iteration saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IterateReport {
    /// Records handed to the callback.
    pub records: u64,
    /// Live records outside the filters.
    pub filtered: u64,
    /// Damaged entries or records skipped.
    pub corrupted: u64,
    /// The callback asked to stop.
    pub stopped: bool,
}
