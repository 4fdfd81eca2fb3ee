//! Iteration over live records in on-disk order, with key and timestamp filters.
//!
//! Not a snapshot: records written or removed while an iteration runs may or may not be seen;
//! every record handed out was live when its index entry was read, and its data (when asked
//! for) passed its checksums. Memory is bounded by one index batch plus one record.

use std::ops::ControlFlow;

use crate::base::VerifyError;
use crate::engine::{Eblob, Loc, Lookup};
use crate::error::Error;
use crate::key::{Key, Timestamp};
use crate::record::{Header, FLAG_NOCSUM, FLAG_REMOVED, FLAG_UNCOMMITTED, HEADER_SIZE};
use crate::stats::IterateReport;

/// Which records an iteration visits.
#[derive(Clone, Debug, Default)]
pub struct IterateOptions {
    /// Only keys in this inclusive range.
    pub key_range: Option<(Key, Key)>,
    /// Only timestamps in this inclusive range.
    pub time_range: Option<(Timestamp, Timestamp)>,
    /// Read and verify each record's data.
    pub with_data: bool,
    /// Also visit prepared, uncommitted records.
    pub include_uncommitted: bool,
}

/// One visited record.
#[derive(Clone, Debug)]
pub struct IterRecord {
    /// Where and what it is.
    pub lookup: Lookup,
    /// The object, when `with_data` was asked.
    pub data: Option<Vec<u8>>,
}

const BATCH_ENTRIES: u64 = 4096;

impl Eblob {
    /// Call `f` for every live record matching `opts`, base by base, in on-disk order, until
    /// it returns `Break`.
    pub fn iterate(
        &self,
        opts: &IterateOptions,
        f: &mut dyn FnMut(IterRecord) -> ControlFlow<()>,
    ) -> Result<IterateReport, Error> {
        let mut report = IterateReport::default();
        for base in self.inner.snapshot() {
            let count = base.index.len()? / HEADER_SIZE;
            let mut slot = 0;
            while slot < count {
                let n = BATCH_ENTRIES.min(count - slot);
                let buf = base.index.read_vec(slot * HEADER_SIZE, n * HEADER_SIZE)?;
                for (i, raw) in buf.chunks_exact(HEADER_SIZE as usize).enumerate() {
                    let Ok(h) = Header::decode(raw) else {
                        report.corrupted += 1;
                        continue;
                    };
                    if h.has(FLAG_REMOVED) || (h.has(FLAG_UNCOMMITTED) && !opts.include_uncommitted)
                    {
                        continue;
                    }
                    let in_keys = opts
                        .key_range
                        .is_none_or(|(lo, hi)| lo <= h.key && h.key <= hi);
                    let in_time = opts
                        .time_range
                        .is_none_or(|(lo, hi)| lo <= h.timestamp && h.timestamp <= hi);
                    if !in_keys || !in_time {
                        report.filtered += 1;
                        continue;
                    }
                    let data = if opts.with_data {
                        let r = if h.has(FLAG_UNCOMMITTED) || h.has(FLAG_NOCSUM) {
                            base.data
                                .read_vec(h.data_offset(), h.data_size)
                                .map_err(VerifyError::Io)
                        } else {
                            base.read_verified(&h, 0, h.data_size)
                        };
                        match r {
                            Ok(d) => Some(d),
                            // The disk failed to answer: stop and say so (not damage).
                            Err(VerifyError::Io(e)) => return Err(e),
                            Err(VerifyError::Damaged(_)) => {
                                base.note_corrupted();
                                report.corrupted += 1;
                                continue;
                            }
                        }
                    } else {
                        None
                    };
                    let loc = Loc {
                        base: base.clone(),
                        slot: slot + i as u64,
                        header: h,
                        written_checksum: None,
                    };
                    let lookup = self.inner.lookup_of(&loc)?;
                    report.records += 1;
                    if f(IterRecord { lookup, data }).is_break() {
                        report.stopped = true;
                        return Ok(report);
                    }
                }
                slot += n;
            }
        }
        Ok(report)
    }
}
