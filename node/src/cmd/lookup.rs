//! LOOKUP: where the key's record is, its size, timestamp and checksum.

use std::sync::Arc;

use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::Frame;

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
    let id = f.header.id;
    let _g = node.keylocks.lock((b.id(), id)).await;
    artificial_delay(&b).await;
    let backend = b.clone();
    let l = blocking(node, move || {
        let _a = react_trace::action!("eblob.lookup").entered();
        Ok(backend.lookup(&key(&id))?)
    })
    .await?;
    Ok(Reply::payload(
        lookup_info(b.id(), &l).encode(),
        Source::Disk,
    ))
}
