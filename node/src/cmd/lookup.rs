//! LOOKUP: where the key's record is, its size, timestamp and checksum. An optional IO
//! attributes payload with VERIFY makes it check the whole record first (a read of the
//! object; a damaged one answers CORRUPTED), which is how dc tells a rotted copy from an
//! intact one of the same version.

use std::sync::Arc;

use ellipsis_core::protocol::cmd::io::IoPayload;
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{io_flags, Frame};

use super::{artificial_delay, blocking, key, lookup_info, Reply};
use crate::backend::Backend;
use crate::counters::Source;
use crate::error::NodeError;
use crate::node::Node;

pub(super) async fn handle(
    node: &Arc<Node>,
    b: Arc<Backend>,
    f: &Frame,
) -> Result<Reply, NodeError> {
    let verify = !f.payload.is_empty() && IoPayload::decode(&f.payload)?.attr.has(io_flags::VERIFY);
    let id = f.header.id;
    let _g = node.keylocks.lock((b.id(), id)).await;
    artificial_delay(&b).await;
    let backend = b.clone();
    let l = blocking(node, move || {
        if verify {
            let _a = react_trace::action!("eblob.verify").entered();
            return Ok(backend.verify(&key(&id))?);
        }
        let _a = react_trace::action!("eblob.lookup").entered();
        Ok(backend.lookup(&key(&id))?)
    })
    .await?;
    Ok(Reply::payload(
        lookup_info(b.id(), &l).encode(),
        Source::Disk,
    ))
}
