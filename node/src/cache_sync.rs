//! Cache sync: the write-back of a backend's dirty cached objects, run as a Worker job of kind
//! `cache_sync` (`/stats/workers`): objects and bytes written back of those due, failures as
//! errors (a failed object stays dirty and is retried by a later pass).
//!
//! Triggers: the maintenance loop's periodic pass (objects past their `sync_timeout_ms`,
//! throttled by the node's `work_share.cache_sync`), an explicit flush (`POST
//! /admin/backends/{id}/cache-sync`), a backend disable and the node's shutdown (everything
//! dirty, never throttled: they should end as soon as they can).
//!
//! Not the cache's rules (`cache.rs` decides what is due; it never does I/O) and not a thread:
//! the caller runs [`sync`] on a blocking thread.
//!
//! Invariants: a pass with nothing due registers no job, so a once-a-second tick does not fill
//! the job history (which the registry bounds per kind anyway); a cancelled pass gives the
//! objects it did not write back to the cache, still dirty and due, so nothing is lost or
//! left marked in flight.

use ellipsis_core::stats::{JobKind, JobStatus};

use crate::backend::Backend;
use crate::node::Node;
use crate::worker::Pacer;

/// What started a cache sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncTrigger {
    /// The maintenance loop: objects due by their sync timeout; throttled.
    Periodic,
    /// An admin asked for every dirty object now.
    Explicit,
    /// The backend is being disabled.
    Disable,
    /// The node is shutting down.
    Shutdown,
}

impl SyncTrigger {
    fn name(self) -> &'static str {
        match self {
            SyncTrigger::Periodic => "periodic",
            SyncTrigger::Explicit => "explicit",
            SyncTrigger::Disable => "disable",
            SyncTrigger::Shutdown => "shutdown",
        }
    }
}

/// Write back backend `b`'s due dirty objects (every dirty one unless `Periodic`) as a
/// `cache_sync` job. Blocking. Returns the finished job, or `None` when nothing was due (no
/// job registered).
pub fn sync(node: &Node, b: &Backend, trigger: SyncTrigger) -> Option<JobStatus> {
    let items = b.take_cache_writebacks(trigger != SyncTrigger::Periodic);
    if items.is_empty() {
        return None;
    }
    let job = node.workers.register(
        JobKind::CacheSync,
        format!("backend {} ({})", b.id(), trigger.name()),
    );
    let id = job.id();
    job.start();
    let total_bytes: u64 = items.iter().map(|i| i.data.len() as u64).sum();
    job.set_totals(Some(items.len() as u64), Some(total_bytes));
    let share = match trigger {
        SyncTrigger::Periodic => node.config.work_share.cache_sync,
        _ => 1.0,
    };
    let mut pacer = Pacer::new(share);
    let (mut written, mut failed, mut returned) = (0u64, 0u64, 0u64);
    let mut items = items.into_iter();
    for item in items.by_ref() {
        if job.checkpoint().is_err() {
            b.return_write_back(&item);
            returned += 1;
            break;
        }
        pacer.idle();
        let bytes = item.data.len() as u64;
        let key = item.key;
        match b.write_back(item) {
            Ok(()) => {
                written += 1;
                job.progress(1, bytes);
            }
            Err(e) => {
                failed += 1;
                job.error(format!("{}: {e}", ellipsis_core::Id(key.0).short()));
            }
        }
        if pacer.after_unit(&job).is_err() {
            break;
        }
    }
    // Cancelled: what is left goes back to the cache, dirty and due.
    for item in items {
        b.return_write_back(&item);
        returned += 1;
    }
    let message = format!(
        "{written} objects written back, {failed} failed (still dirty){}",
        if returned > 0 {
            format!(", {returned} left for the next pass")
        } else {
            String::new()
        }
    );
    job.finish(if failed > 0 && written == 0 {
        Err(message)
    } else {
        Ok(message)
    });
    node.workers.get(id)
}
