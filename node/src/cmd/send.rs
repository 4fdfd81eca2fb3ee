//! SEND (server-send, admin): copy keys this node holds in the header's group to target
//! groups, from here. One MORE frame per (key, target group) with a `SendResult`, then the ack.
//! Default mode never overwrites a newer copy (NEWER_EXISTS = skipped, not failed); move mode
//! removes the local copy only after every target acknowledged. A key this node does not hold
//! (not its owner here, or absent) gets NOT_FOUND.
//!
//! Each request runs as a `server-send` job in the worker registry (`/stats/workers`, `GET
//! /admin/jobs`): keys done of keys asked, bytes sent, errors; cancelling it stops before the
//! next key (the request then ends CANCELLED).

use std::sync::Arc;

use ellipsis_core::protocol::cmd::send::{SendMode, SendRequest, SendResult};
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{Frame, Status};
use ellipsis_core::stats::JobKind;

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
    let job = node.workers.register(
        JobKind::ServerSend,
        format!(
            "{} keys of group {group} to groups {:?} ({:?})",
            req.ids.len(),
            req.groups,
            req.mode
        ),
    );
    job.start();
    job.set_totals(Some(req.ids.len() as u64), None);
    let mut bytes = 0;
    let mut failed = 0u64;
    for id in req.ids {
        if job.checkpoint().is_err() {
            job.finish(Err(format!("cancelled after {bytes} bytes")));
            return Err(NodeError::Cancelled("server-send job cancelled".into()));
        }
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
            // Not held here: as for a key the owner does not have.
            for g in &req.groups {
                out.more(Some(id), Status::NOT_FOUND, result(*g, Status::NOT_FOUND))
                    .await?;
            }
            job.progress(1, 0);
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
                if s != Status::NOT_FOUND {
                    failed += 1;
                    job.error(format!("{}: {s}", id.short()));
                }
                job.progress(1, 0);
                continue;
            }
        };
        let r = copy(node, &client, &b, &id, &l, &targets, req.mode).await;
        bytes += r.bytes;
        job.progress(1, r.bytes);
        if r.failed > 0 {
            failed += r.failed;
            job.error(format!("{}: {} targets failed", id.short(), r.failed));
        }
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
    job.finish(Ok(format!("{bytes} bytes sent, {failed} failed")));
    Ok(Reply {
        bytes,
        source: Some(Source::Disk),
        ..Reply::default()
    })
}
