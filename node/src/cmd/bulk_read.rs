//! BULK_READ: read a list of keys held by this node in the header's group; one MORE frame per
//! key (its id in the frame header, its status, an IO payload), then the final ack.

use std::sync::Arc;

use bytes::Bytes;
use ellipsis_core::protocol::cmd::bulk_read::BulkRead;
use ellipsis_core::protocol::cmd::io::IoPayload;
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{Frame, IoAttr, Status};

use super::{blocking, key, Reply, Responder};
use crate::backend::CacheUse;
use crate::counters::Source;
use crate::error::NodeError;
use crate::node::Node;

pub(super) async fn handle(
    node: &Arc<Node>,
    out: &Responder<'_>,
    f: &Frame,
) -> Result<Reply, NodeError> {
    let req = BulkRead::decode(&f.payload)?;
    let group = f.header.group;
    let mut bytes = 0;
    for id in req.ids {
        let owner = node.routes.read().owner(group, &id);
        let local = owner
            .filter(|o| o.node == node.addr)
            .and_then(|o| node.backend(o.backend));
        let Some(b) = local else {
            out.more(Some(id), Status::UNREACHABLE, Bytes::new())
                .await?;
            continue;
        };
        let _g = node.keylocks.lock((b.id(), id)).await;
        let r = blocking(node, move || {
            Ok(b.read(&key(&id), 0, 0, CacheUse::default())?)
        })
        .await;
        match r {
            Ok(r) => {
                let attr = IoAttr {
                    size: r.data.len() as u64,
                    total_size: r.total_size_bytes,
                    ts_sec: r.timestamp.sec,
                    ts_nsec: r.timestamp.nsec,
                    user_flags: r.user_flags,
                    checksum: r.checksum,
                    ..IoAttr::default()
                };
                bytes += out
                    .more_io(Some(id), IoPayload { attr, data: r.data })
                    .await?;
            }
            Err(e) => out.more(Some(id), Status::from(&e), Bytes::new()).await?,
        }
    }
    Ok(Reply {
        bytes,
        source: Some(Source::Disk),
        ..Reply::default()
    })
}
