//! READ_RANGE / DEL_RANGE: every live key with `start <= id < end` on this node's backends of
//! the header's group; one MORE frame per key (READ_RANGE: IO payload with data unless
//! NO_DATA; DEL_RANGE: the remove's status), then the final ack. DEL_RANGE is an admin command.

use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::Bytes;
use ellipsis_core::protocol::cmd::io::IoPayload;
use ellipsis_core::protocol::cmd::key_range::KeyRange;
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{io_flags, Command, Frame, IoAttr, Status};
use ellipsis_core::Id;

use super::{blocking, key, mutation, Reply, Responder};
use crate::counters::Source;
use crate::error::NodeError;
use crate::node::Node;

/// Keys gathered per engine pass, so memory stays bounded whatever the range holds.
const BATCH: usize = 1024;

pub(super) async fn handle(
    node: &Arc<Node>,
    out: &Responder<'_>,
    f: &Frame,
) -> Result<Reply, NodeError> {
    let req = KeyRange::decode(&f.payload)?;
    let remove = f.header.cmd == Command::DelRange;
    let with_data = !remove && req.io_flags & io_flags::NO_DATA == 0;
    let limit = if req.limit == 0 {
        u64::MAX
    } else {
        u64::from(req.limit)
    };
    let mut sent = 0u64;
    let mut bytes = 0;
    let backends: Vec<_> = node
        .backends
        .values()
        .filter(|b| b.group() == f.header.group)
        .cloned()
        .collect();
    for b in backends {
        // Iterate in bounded batches: each pass resumes after the last key seen.
        let mut from = req.start;
        loop {
            let engine = b.engine()?;
            let end = req.end;
            let start = from;
            // The smallest BATCH keys of the remaining range, without data: bounded memory.
            let batch: Vec<(Id, eblob::Lookup)> = blocking(node, move || {
                let mut found = std::collections::BTreeMap::new();
                let opts = eblob::IterateOptions {
                    key_range: Some((eblob::Key(start.0), eblob::Key(end.0))),
                    ..Default::default()
                };
                engine
                    .iterate(&opts, &mut |r| {
                        if r.lookup.key.0 < end.0 {
                            found.insert(Id(r.lookup.key.0), r.lookup);
                            if found.len() > BATCH {
                                found.pop_last();
                            }
                        }
                        ControlFlow::Continue(())
                    })
                    .map_err(crate::backend::BackendError::from)?;
                Ok(found.into_iter().collect())
            })
            .await?;
            let Some(last) = batch.last().map(|x| x.0) else {
                break;
            };
            for (id, l) in batch {
                if sent >= limit {
                    break;
                }
                sent += 1;
                let _g = node.keylocks.lock((b.id(), id)).await;
                if remove {
                    let b2 = b.clone();
                    let r = mutation(node, &b, move || Ok(b2.remove(&key(&id))?)).await;
                    let status = r.as_ref().map_or_else(Status::from, |()| Status::OK);
                    out.more(Some(id), status, Bytes::new()).await?;
                    continue;
                }
                let mut attr = IoAttr {
                    total_size: l.data_size_bytes,
                    ts_sec: l.timestamp.sec,
                    ts_nsec: l.timestamp.nsec,
                    user_flags: l.user_flags,
                    checksum: l.checksum,
                    ..IoAttr::default()
                };
                let mut data = Bytes::new();
                if with_data {
                    let b2 = b.clone();
                    let r = blocking(node, move || {
                        Ok(b2.read(&key(&id), 0, 0, crate::backend::CacheUse::default())?)
                    })
                    .await;
                    match r {
                        Ok(r) => data = r.data,
                        Err(e) => {
                            // Removed or damaged since the pass saw it: report it, go on.
                            out.more(Some(id), Status::from(&e), Bytes::new()).await?;
                            continue;
                        }
                    }
                }
                attr.size = data.len() as u64;
                bytes += out.more_io(Some(id), IoPayload { attr, data }).await?;
            }
            if sent >= limit {
                break;
            }
            // Next pass starts just after the last key of this one.
            match next_id(&last) {
                Some(n) if n < req.end => from = n,
                _ => break,
            }
        }
    }
    Ok(Reply {
        bytes,
        source: Some(Source::Disk),
        ..Reply::default()
    })
}

/// The id right after `id` (None after the largest).
fn next_id(id: &Id) -> Option<Id> {
    let mut b = id.0;
    for i in (0..b.len()).rev() {
        if b[i] == 0xff {
            b[i] = 0;
        } else {
            b[i] += 1;
            return Some(Id(b));
        }
    }
    None
}
