//! SEND (server-send, admin): copy keys this node holds in the header's group to target
//! groups, from here. One MORE frame per (key, target group) with a `SendResult`, then the ack.
//! Default mode never overwrites a newer copy (NEWER_EXISTS = skipped, not failed); move mode
//! removes the local copy only after every target acknowledged.

use std::sync::Arc;

use ellipsis_core::protocol::cmd::send::{SendMode, SendRequest, SendResult};
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{Frame, Status};

use super::{blocking, key, Reply, Responder};
use crate::counters::Source;
use crate::error::NodeError;
use crate::node::Node;
use crate::recovery::{copy, Target};

pub(super) async fn handle(
    node: &Arc<Node>,
    out: &Responder<'_>,
    f: &Frame,
) -> Result<Reply, NodeError> {
    let req = SendRequest::decode(&f.payload)?;
    let group = f.header.group;
    let client = node.client().await?;
    let targets: Vec<Target> = req
        .groups
        .iter()
        .filter(|g| **g != group)
        .map(|g| Target::Group(*g))
        .collect();
    let mut bytes = 0;
    for id in req.ids {
        let result = |g: u32, status: Status| {
            SendResult {
                id,
                group: g,
                status,
            }
            .encode()
            .into()
        };
        let local = node
            .routes
            .read()
            .owner(group, &id)
            .filter(|o| o.node == node.addr)
            .and_then(|o| node.backend(o.backend));
        let Some(b) = local else {
            for g in &req.groups {
                out.more(
                    Some(id),
                    Status::UNREACHABLE,
                    result(*g, Status::UNREACHABLE),
                )
                .await?;
            }
            continue;
        };
        let _g = node.keylocks.lock((b.id(), id)).await;
        let b2 = b.clone();
        let l = match blocking(node, move || Ok(b2.lookup(&key(&id))?)).await {
            Ok(l) => l,
            Err(e) => {
                let s = Status::from(&e);
                for g in &req.groups {
                    out.more(Some(id), s, result(*g, s)).await?;
                }
                continue;
            }
        };
        let r = copy(node, &client, &b, &id, &l, &targets, req.mode).await;
        bytes += r.bytes;
        for (t, s) in &r.statuses {
            if let Target::Group(g) = t {
                out.more(Some(id), *s, result(*g, *s)).await?;
            }
        }
        if req.mode == SendMode::Move && r.failed == 0 && r.skipped == 0 {
            let b2 = b.clone();
            blocking(node, move || Ok(b2.remove(&key(&id))?)).await?;
        }
    }
    Ok(Reply {
        bytes,
        source: Some(Source::Disk),
        ..Reply::default()
    })
}
