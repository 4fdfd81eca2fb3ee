//! Admin actions shared by BACKEND_CONTROL and the admin HTTP endpoints.
//!
//! Not authentication (callers check the token first and write the audit line). Invariants:
//! every change of what a backend serves is pushed to peers at once; a data-sort runs as a
//! Worker job on its own thread, one per backend at a time (the backend's sort slot, and the
//! engine refuses a second), reporting per-base progress; a stop or cancel ends it after the
//! base being written, as `cancelled`.

use std::ops::ControlFlow;
use std::sync::Arc;

use ellipsis_core::protocol::cmd::backend_control::BackendAction;
use ellipsis_core::stats::{JobKind, JobStatus};

use crate::backend::BackendError;
use crate::error::NodeError;
use crate::node::Node;
use crate::schedule::Schedule;
use crate::worker::{JobReporter, Pacer};

/// Longest artificial delay a backend accepts (10 minutes): longer would only hold requests
/// past every client timeout.
pub const MAX_DELAY_MS: u32 = 600_000;

/// Apply `action` to backend `id`.
pub async fn backend_action(
    node: &Arc<Node>,
    id: u32,
    action: BackendAction,
) -> Result<(), NodeError> {
    let b = node.backend(id).ok_or(NodeError::NoBackend(id))?;
    match action {
        BackendAction::Enable => {
            let b2 = b.clone();
            crate::cmd::blocking(node, move || Ok(b2.enable()?)).await?;
            crate::peers::push_routes(node);
        }
        BackendAction::Disable => {
            // Withdraw the routes first so peers stop sending while it closes. The cache's
            // dirty objects go first, as a cache-sync job (disable would flush them untracked).
            let (n2, b2) = (node.clone(), b.clone());
            crate::cmd::blocking(node, move || {
                crate::cache_sync::sync(&n2, &b2, crate::cache_sync::SyncTrigger::Disable);
                Ok(b2.disable()?)
            })
            .await?;
            crate::peers::push_routes(node);
        }
        BackendAction::ReadOnly => b.set_read_only(Some("set read-only by an admin".into())),
        BackendAction::Writable => b.set_read_only(None),
        BackendAction::DefragStart { compact } => {
            start_data_sort(node, id, compact)?;
        }
        BackendAction::DefragStop => stop_data_sort(node, id)?,
        BackendAction::SetIds(ids) => {
            b.set_ring_ids(ids)?;
            crate::peers::push_routes(node);
        }
        BackendAction::SetDelay { delay_ms } => {
            if delay_ms > MAX_DELAY_MS {
                return Err(NodeError::Invalid(format!(
                    "artificial delay {delay_ms} ms is above the limit of {MAX_DELAY_MS} ms"
                )));
            }
            b.set_delay(u64::from(delay_ms))
        }
        BackendAction::SetSchedule {
            mode,
            timeout_s,
            time_hour,
            splay_hours,
            compact,
        } => set_schedule(
            node,
            id,
            Schedule {
                mode,
                timeout_s,
                time_hour,
                splay_hours,
                compact,
            },
        )?,
    }
    Ok(())
}

/// What started a data-sort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortTrigger {
    /// An admin (BACKEND_CONTROL or HTTP): full (closing the open base) or compact.
    Command {
        /// Only bases that want defrag.
        compact: bool,
    },
    /// A TIMED or SCHEDULED start.
    Schedule {
        /// The schedule's compact flag.
        compact: bool,
    },
    /// AUTO: bases were closed; sort those (the open base stays as it is).
    Auto {
        /// The engine's rotation count this run covers.
        rotations: u64,
    },
}

/// Start a data-sort of backend `id` by command as a background job; returns its status.
pub fn start_data_sort(node: &Arc<Node>, id: u32, compact: bool) -> Result<JobStatus, NodeError> {
    start_data_sort_by(node, id, SortTrigger::Command { compact })
}

/// Reports the engine's per-base progress to the job, turns a job pause into a wait between
/// bases and a job cancel into a stop after the current base, and rests there as the node's
/// `work_share.data_sort` asks (between bases is where the engine can wait safely: a pause
/// waits there too).
struct JobProgress {
    job: JobReporter,
    pacer: parking_lot::Mutex<Pacer>,
}

impl eblob::SortProgress for JobProgress {
    fn report(&self, p: &eblob::DataSortProgress) -> ControlFlow<()> {
        self.job
            .set_totals(Some(p.bases_total), Some(p.bytes_total));
        self.job.set_done(p.bases_done, p.bytes_done);
        let mut pacer = self.pacer.lock();
        // The time since the last report sorted bases: the work owed rest for.
        let rested = pacer.after_unit(&self.job);
        let r = rested.and_then(|()| self.job.checkpoint());
        pacer.idle();
        match r {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    }
}

/// Start a data-sort of backend `id` as a background job (one per backend at a time); its
/// progress is counted in bases (`done_keys` / `total_keys`) and bytes of the source bases.
/// Cancelling the job (or a defrag stop) stops the engine after the base it is writing, and
/// the job then ends `cancelled`.
pub fn start_data_sort_by(
    node: &Arc<Node>,
    id: u32,
    trigger: SortTrigger,
) -> Result<JobStatus, NodeError> {
    let b = node.backend(id).ok_or(NodeError::NoBackend(id))?;
    let engine = b.engine()?;
    let sort_running = || NodeError::Backend(BackendError::Engine(eblob::Error::SortRunning));
    if engine.stats().data_sort.running {
        return Err(sort_running());
    }
    let (label, opts) = match trigger {
        SortTrigger::Command { compact } | SortTrigger::Schedule { compact } => (
            if compact { " (compact)" } else { "" },
            eblob::DataSortOptions {
                compact_only: compact,
                ..Default::default()
            },
        ),
        SortTrigger::Auto { .. } => (
            " (auto)",
            eblob::DataSortOptions {
                closed_only: true,
                ..Default::default()
            },
        ),
    };
    let job = node
        .workers
        .register(JobKind::DataSort, format!("backend {id}{label}"));
    let job_id = job.id();
    let workers = &node.workers;
    if !b.claim_sort(job_id, |other| {
        workers.get(other).is_some_and(|j| !j.state.is_finished())
    }) {
        job.finish(Err("another data-sort of this backend is running".into()));
        return Err(sort_running());
    }
    let status = node
        .workers
        .get(job_id)
        .ok_or_else(|| NodeError::Invalid("job vanished".into()))?;
    if let Err(e) = b.sort_started(node.clock.now_unix_s()) {
        // The sort runs anyway; only the next boot's schedule loses this start.
        tracing::warn!(backend = id, error = %e, "cannot record the data-sort start");
    }
    if let SortTrigger::Auto { rotations } = trigger {
        b.auto_started(rotations);
    }
    let weak = Arc::downgrade(&engine);
    job.on_cancel(move || {
        if let Some(e) = weak.upgrade() {
            e.stop_data_sort();
        }
    });
    let opts = eblob::DataSortOptions {
        progress: Some(Arc::new(JobProgress {
            job: job.reporter(),
            pacer: parking_lot::Mutex::new(Pacer::new(node.config.work_share.data_sort)),
        })),
        ..opts
    };
    let backend = b.clone();
    // A data-sort is long: its own thread, not the request pool.
    let spawned = std::thread::Builder::new()
        .name(format!("data-sort-{id}"))
        .spawn(move || {
            job.start();
            let r = if job.is_cancelled() {
                Err("cancelled before it started".to_owned())
            } else {
                engine.data_sort(&opts).map_err(|e| e.to_string())
            };
            drop(opts);
            match r {
                Ok(rep) => job.finish(Ok(format!(
                    "{} bases in, {} out, {} removed records dropped, {} -> {} bytes{}",
                    rep.bases_in.len(),
                    rep.bases_out.len(),
                    rep.removed_dropped,
                    rep.bytes_before,
                    rep.bytes_after,
                    if rep.stopped {
                        ", stopped after the current base"
                    } else {
                        ""
                    }
                ))),
                Err(e) => job.finish(Err(e)),
            }
            backend.release_sort(job_id);
        });
    if let Err(e) = spawned {
        b.release_sort(job_id);
        return Err(NodeError::Io(e));
    }
    Ok(status)
}

/// Stop backend `id`'s data-sort after the base it is writing: cancels its job (which ends
/// `cancelled`) and tells the engine.
pub fn stop_data_sort(node: &Node, id: u32) -> Result<(), NodeError> {
    let b = node.backend(id).ok_or(NodeError::NoBackend(id))?;
    if let Some(job) = b.sort_job() {
        // Finished already is fine: there is nothing left to stop.
        let _ = node.workers.cancel(job);
    }
    b.engine()?.stop_data_sort();
    Ok(())
}

/// Change a backend's data-sort schedule at run time (persisted in its directory).
pub fn set_schedule(node: &Node, id: u32, schedule: Schedule) -> Result<(), NodeError> {
    if schedule.time_hour > 23 || schedule.splay_hours > 12 {
        return Err(NodeError::Invalid(
            "time_hour must be 0..=23 and splay_hours 0..=12".into(),
        ));
    }
    if schedule.mode == ellipsis_core::stats::DefragMode::Timed && schedule.timeout_s == 0 {
        return Err(NodeError::Invalid(
            "a timed schedule needs timeout_s above 0".into(),
        ));
    }
    let b = node.backend(id).ok_or(NodeError::NoBackend(id))?;
    b.set_schedule(schedule)?;
    Ok(())
}
