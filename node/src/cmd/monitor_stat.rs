//! MONITOR_STAT: the node's stats as JSON (the same document as `GET /stats[/category]`).

use ellipsis_core::protocol::cmd::monitor_stat::MonitorStat;
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::Frame;

use super::Reply;
use crate::counters::Source;
use crate::error::NodeError;
use crate::node::Node;

pub(super) fn handle(node: &Node, f: &Frame) -> Result<Reply, NodeError> {
    let req = if f.payload.is_empty() {
        MonitorStat::default()
    } else {
        MonitorStat::decode(&f.payload)?
    };
    let json = crate::stats::category_json(node, &req.category)
        .ok_or_else(|| NodeError::Invalid(format!("unknown stats category {:?}", req.category)))?;
    Ok(Reply::payload(json.into_bytes(), Source::Other))
}
