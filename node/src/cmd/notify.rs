//! NOTIFY: subscribe to (or stop watching) the header's key. A subscription is acknowledged
//! with a MORE frame; events follow on the same transaction; unsubscribing ends the stream.

use ellipsis_core::protocol::cmd::notify::NotifyRequest;
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{flags, Frame, Status};

use super::{ConnCtx, Reply};
use crate::error::NodeError;
use crate::node::Node;

pub(super) fn handle(node: &Node, ctx: &ConnCtx, f: &Frame) -> Result<Reply, NodeError> {
    let req = NotifyRequest::decode(&f.payload)?;
    if !req.subscribe {
        node.notify.unsubscribe(&f.header.id, ctx.id);
        return Ok(Reply::default());
    }
    if !node
        .notify
        .subscribe(f.header.id, ctx.id, f.header, ctx.tx.clone())
    {
        return Err(NodeError::Busy("too many NOTIFY subscriptions".into()));
    }
    let mut h = f.header.reply(Status::OK);
    h.flags |= flags::MORE;
    ctx.tx
        .try_send(Frame::new(h, bytes::Bytes::new()))
        .map_err(|_| NodeError::Busy("connection queue full".into()))?;
    // The stream stays open: its final frame comes with the unsubscribe.
    Ok(Reply {
        sent: true,
        ..Reply::default()
    })
}
