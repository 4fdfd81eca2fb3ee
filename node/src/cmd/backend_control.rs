//! BACKEND_CONTROL (admin): enable, disable, read-only, writable, defrag start/stop, ring ids,
//! artificial delay. Every call is recorded in the audit log; route changes are pushed to peers.

use std::sync::Arc;

use ellipsis_core::protocol::cmd::backend_control::{BackendAction, BackendControl};
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::Frame;

use super::{ConnCtx, Reply};
use crate::error::NodeError;
use crate::node::Node;

pub(super) async fn handle(node: &Arc<Node>, ctx: &ConnCtx, f: &Frame) -> Result<Reply, NodeError> {
    let req = match BackendControl::decode(&f.payload) {
        Ok(req) => req,
        Err(e) => {
            crate::auth::audit(
                &ctx.peer.to_string(),
                "BACKEND_CONTROL",
                "undecodable request",
                &Err(e.to_string()),
            );
            return Err(e.into());
        }
    };
    let r = crate::admin::backend_action(node, req.backend, req.action.clone()).await;
    crate::auth::audit(
        &ctx.peer.to_string(),
        &format!("BACKEND_CONTROL {}", action_name(&req.action)),
        &format!("backend {}", req.backend),
        &r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
    );
    r.map(|()| Reply::default())
}

/// Short name for logs.
pub(crate) fn action_name(a: &BackendAction) -> &'static str {
    match a {
        BackendAction::Enable => "enable",
        BackendAction::Disable => "disable",
        BackendAction::ReadOnly => "read-only",
        BackendAction::Writable => "writable",
        BackendAction::DefragStart { .. } => "defrag-start",
        BackendAction::DefragStop => "defrag-stop",
        BackendAction::SetIds(_) => "set-ids",
        BackendAction::SetDelay { .. } => "set-delay",
        BackendAction::SetSchedule { .. } => "defrag-schedule",
    }
}
