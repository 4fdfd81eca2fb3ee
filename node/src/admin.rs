//! Admin actions shared by BACKEND_CONTROL and the admin HTTP endpoints.
//!
//! Not authentication (callers check the token first and write the audit line). Invariants:
//! every change of what a backend serves is pushed to peers at once; a data-sort runs as a
//! Worker job on a blocking thread, one per backend at a time (the engine refuses a second).

use std::sync::Arc;

use ellipsis_core::protocol::cmd::backend_control::BackendAction;
use ellipsis_core::stats::{JobKind, JobStatus};

use crate::backend::BackendError;
use crate::error::NodeError;
use crate::node::Node;
use crate::schedule::Schedule;

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
            // Withdraw the routes first so peers stop sending while it closes.
            let b2 = b.clone();
            crate::cmd::blocking(node, move || Ok(b2.disable()?)).await?;
            crate::peers::push_routes(node);
        }
        BackendAction::ReadOnly => b.set_read_only(Some("set read-only by an admin".into())),
        BackendAction::Writable => b.set_read_only(None),
        BackendAction::DefragStart { compact } => {
            start_data_sort(node, id, compact)?;
        }
        BackendAction::DefragStop => b.engine()?.stop_data_sort(),
        BackendAction::SetIds(ids) => {
            b.set_ring_ids(ids)?;
            crate::peers::push_routes(node);
        }
        BackendAction::SetDelay { delay_ms } => b.set_delay(u64::from(delay_ms)),
    }
    Ok(())
}

/// Start a data-sort of backend `id` as a background job; returns its status.
pub fn start_data_sort(node: &Arc<Node>, id: u32, compact: bool) -> Result<JobStatus, NodeError> {
    let b = node.backend(id).ok_or(NodeError::NoBackend(id))?;
    let engine = b.engine()?;
    if engine.stats().data_sort.running {
        return Err(NodeError::Backend(BackendError::Engine(
            eblob::Error::SortRunning,
        )));
    }
    let job = node.workers.register(
        JobKind::DataSort,
        format!("backend {id}{}", if compact { " (compact)" } else { "" }),
    );
    let status = node
        .workers
        .get(job.id())
        .ok_or_else(|| NodeError::Invalid("job vanished".into()))?;
    b.scheduler().started(crate::schedule::now_unix_s());
    // A data-sort is long: its own thread, not the request pool.
    std::thread::Builder::new()
        .name(format!("data-sort-{id}"))
        .spawn(move || {
            job.start();
            let bases = engine.stats().total.bases;
            job.set_totals(Some(bases), None);
            let r = engine.data_sort(&eblob::DataSortOptions {
                compact_only: compact,
            });
            match r {
                Ok(rep) => {
                    job.progress(rep.bases_in.len() as u64, rep.bytes_before);
                    job.finish(Ok(format!(
                        "{} bases in, {} out, {} removed records dropped{}",
                        rep.bases_in.len(),
                        rep.bases_out.len(),
                        rep.removed_dropped,
                        if rep.stopped { ", stopped" } else { "" }
                    )));
                }
                Err(e) => job.finish(Err(e.to_string())),
            }
        })
        .map_err(NodeError::Io)?;
    Ok(status)
}

/// Change a backend's data-sort schedule at run time (persisted in its directory).
pub fn set_schedule(node: &Node, id: u32, schedule: Schedule) -> Result<(), NodeError> {
    let b = node.backend(id).ok_or(NodeError::NoBackend(id))?;
    b.set_schedule(schedule)?;
    Ok(())
}
