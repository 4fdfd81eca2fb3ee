//! RECOVERY (admin): start a dc / merge recovery (fanned out to every node unless the request
//! says `local_only`) or cancel one together with its fanned-out jobs. The same actions as
//! `POST /admin/recovery` and `POST /admin/jobs/{id}/cancel`, for protocol clients; every
//! call is recorded in the audit log. The reply is the node's job and the fanned-out ones
//! (`RecoveryJob` as JSON).

use std::sync::Arc;

use ellipsis_core::protocol::cmd::recovery::RecoveryControl;
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::Frame;

use super::{ConnCtx, Reply};
use crate::counters::Source;
use crate::error::NodeError;
use crate::node::Node;
use crate::recovery::RecoveryRequest;

pub(super) async fn handle(node: &Arc<Node>, ctx: &ConnCtx, f: &Frame) -> Result<Reply, NodeError> {
    let (what, target, r) = match RecoveryControl::decode(&f.payload)? {
        RecoveryControl::Start { request_json } => {
            let req: RecoveryRequest = serde_json::from_str(&request_json)
                .map_err(|e| NodeError::Invalid(format!("recovery JSON: {e}")))?;
            let target = format!("{:?} groups {:?}", req.kind, req.groups);
            (
                "RECOVERY start",
                target,
                crate::recovery::start(node, req).await,
            )
        }
        RecoveryControl::Cancel { job } => (
            "RECOVERY cancel",
            format!("job {job}"),
            crate::recovery::cancel(node, job).await,
        ),
    };
    crate::auth::audit(
        &ctx.peer.to_string(),
        what,
        &target,
        &r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
    );
    let job = r?;
    let json = serde_json::to_vec(&job).map_err(|e| NodeError::Invalid(e.to_string()))?;
    Ok(Reply::payload(json, Source::Other))
}
