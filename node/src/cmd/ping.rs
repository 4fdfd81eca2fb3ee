//! PING: liveness; an empty OK.

use super::Reply;
use crate::error::NodeError;

pub(super) fn handle() -> Result<Reply, NodeError> {
    Ok(Reply::default())
}
