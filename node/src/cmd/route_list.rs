//! ROUTE_LIST: answer with our route list; a peer's request carries its own, which we merge
//! (the join handshake).

use std::sync::Arc;

use ellipsis_core::protocol::cmd::route_list::RouteList;
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::Frame;

use super::Reply;
use crate::counters::Source;
use crate::error::NodeError;
use crate::node::Node;

pub(super) fn handle(node: &Arc<Node>, f: &Frame) -> Result<Reply, NodeError> {
    if !f.payload.is_empty() {
        let theirs = RouteList::decode(&f.payload)?;
        let sender = theirs.nodes.first().map(|n| n.addr);
        let learned = node.merge_route_list(sender, &theirs);
        if !learned.is_empty() {
            // Tell the new nodes about us too, off this request's path.
            let node = node.clone();
            tokio::spawn(async move {
                for p in learned {
                    let _ = crate::peers::exchange_routes(&node, p).await;
                }
            });
        }
    }
    Ok(Reply::payload(node.route_list().encode(), Source::Other))
}
