//! AUTH: present the admin token for this connection (constant-time check, never logged).

use std::sync::atomic::Ordering;

use ellipsis_core::protocol::cmd::auth::Auth;
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::Frame;

use super::{ConnCtx, Reply};
use crate::error::NodeError;
use crate::node::Node;

pub(super) fn handle(node: &Node, ctx: &ConnCtx, f: &Frame) -> Result<Reply, NodeError> {
    let auth = Auth::decode(&f.payload)?;
    let r = node.token.check(Some(auth.token.as_bytes()));
    crate::auth::audit(
        &ctx.peer.to_string(),
        "AUTH",
        "connection",
        &r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
    );
    // A failed AUTH revokes an earlier success: whoever sends a wrong token on this
    // connection must not keep the rights of the right one.
    ctx.authed.store(r.is_ok(), Ordering::Release);
    r.map_err(|_| NodeError::Unauthorized)?;
    Ok(Reply::default())
}
