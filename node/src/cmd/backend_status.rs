//! BACKEND_STATUS: every backend of the node, briefly.

use ellipsis_core::protocol::cmd::backend_status::{BackendStatusEntry, BackendStatusReply};
use ellipsis_core::protocol::cmd::Payload;

use super::Reply;
use crate::backend::BackendState;
use crate::counters::Source;
use crate::error::NodeError;
use crate::node::Node;

pub(super) fn handle(node: &Node) -> Result<Reply, NodeError> {
    let backends = node
        .backends
        .values()
        .map(|b| BackendStatusEntry {
            backend: b.id(),
            group: b.group(),
            enabled: b.state() != BackendState::Disabled,
            read_only: b.state() == BackendState::ReadOnly,
            defrag_running: b.engine().is_ok_and(|e| e.stats().data_sort.running),
            delay_ms: b.delay_ms() as u32,
            ids: b.ring_ids().len() as u32,
        })
        .collect();
    Ok(Reply::payload(
        BackendStatusReply { backends }.encode(),
        Source::Other,
    ))
}
