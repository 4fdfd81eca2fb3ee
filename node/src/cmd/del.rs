//! DEL: remove the key (from the cache and the engine) and notify watchers.

use std::sync::Arc;

use ellipsis_core::protocol::cmd::notify::NotifyKind;
use ellipsis_core::protocol::{Frame, IoAttr};

use super::{artificial_delay, key, mutation, Reply};
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
    mutation(node, &b, move || {
        let _a = react_trace::action!("eblob.remove").entered();
        Ok(backend.remove(&key(&id))?)
    })
    .await?;
    node.notify
        .publish(&id, NotifyKind::Remove, IoAttr::default());
    Ok(Reply {
        source: Some(Source::Disk),
        ..Reply::default()
    })
}
