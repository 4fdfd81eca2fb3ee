//! READ: the object or a range of it, from the cache or the engine (checksums verified).

use std::sync::Arc;

use ellipsis_core::protocol::cmd::io::IoPayload;
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{io_flags, Frame, IoAttr};

use super::{artificial_delay, blocking, key, Reply};
use crate::backend::{Backend, CacheUse};
use crate::counters::Source;
use crate::error::NodeError;
use crate::node::Node;

pub(super) async fn handle(
    node: &Arc<Node>,
    b: Arc<Backend>,
    f: &Frame,
) -> Result<Reply, NodeError> {
    let req = if f.payload.is_empty() {
        IoAttr::default()
    } else {
        IoPayload::decode(&f.payload)?.attr
    };
    let id = f.header.id;
    let _g = node.keylocks.lock((b.id(), id)).await;
    artificial_delay(&b).await;
    let backend = b.clone();
    let cache_use = CacheUse {
        cache: req.has(io_flags::CACHE),
        ..CacheUse::default()
    };
    let r = blocking(node, move || {
        let _a = react_trace::action!("eblob.read").entered();
        Ok(backend.read(&key(&id), req.offset, req.size, cache_use)?)
    })
    .await?;
    let attr = IoAttr {
        offset: req.offset,
        size: r.data.len() as u64,
        total_size: r.total_size_bytes,
        ts_sec: r.timestamp.sec,
        ts_nsec: r.timestamp.nsec,
        user_flags: r.user_flags,
        checksum: r.checksum,
        ..IoAttr::default()
    };
    let source = if r.from_cache {
        Source::Cache
    } else {
        Source::Disk
    };
    Ok(Reply::io(IoPayload { attr, data: r.data }, source))
}
