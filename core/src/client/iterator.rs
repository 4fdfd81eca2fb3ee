//! Client side of ITERATOR: start a stream over one backend of one node, read its records,
//! and pause / continue / cancel it by id.
//!
//! A stream runs on a connection of its own: a reader that stops reading an iterator (to pause
//! it, or because it is slow) then holds back only that connection, never the session's shared
//! one, so control requests on the shared connection always get through. Not routing (the
//! caller names the node and backend) and not a snapshot.
//!
//! Every read waits at most the session's timeout for the next frame. While it skips filtered
//! records the node sends keep-alives, so a long skip does not time out; a *paused* stream
//! sends nothing, so do not wait on a paused stream longer than the timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use super::conn::{Conn, ConnError, Replies};
use super::session::{status_error, stream_frame, Client, ClientError};
use crate::id::Id;
use crate::protocol::cmd::iterator::{IteratorAction, IteratorRecord, IteratorRequest};
use crate::protocol::cmd::Payload;
use crate::protocol::{Command, Frame, Header};

/// One running iterator's replies.
#[derive(Debug)]
pub struct IteratorStream {
    conn: Arc<Conn>,
    replies: Replies,
    id: u64,
    total: u64,
    ended: bool,
}

impl Client {
    /// Start an iterator on `node` (backend, ranges and filters in `req`; its action is set to
    /// start). Returns once the node named the iterator (its first, keep-alive frame).
    pub async fn iterate(
        &self,
        node: SocketAddr,
        mut req: IteratorRequest,
    ) -> Result<IteratorStream, ClientError> {
        req.action = IteratorAction::Start;
        let cfg = self.config();
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let conn = Conn::connect_authed(
            node,
            cfg.max_frame_bytes,
            cfg.region_send,
            cfg.admin_token.as_deref(),
            timeout,
        )
        .await
        .map_err(status_error)?;
        let mut h = Header::request(Command::Iterator, Id::ZERO, 0, 0);
        h.backend = req.backend;
        let replies = conn.request(h, req.encode(), timeout).await?;
        let mut stream = IteratorStream {
            conn,
            replies,
            id: 0,
            total: 0,
            ended: false,
        };
        match stream.next().await {
            Some(Ok(first)) => {
                stream.id = first.iterator_id;
                stream.total = first.total;
                Ok(stream)
            }
            Some(Err(e)) => Err(e),
            None => Err(ClientError::Conn(ConnError::Closed(node))),
        }
    }

    /// Pause, continue or cancel iterator `iterator_id` on `node` (any connection will do:
    /// this uses the session's shared one). Returns its progress as a keep-alive record.
    pub async fn iterator_control(
        &self,
        node: SocketAddr,
        iterator_id: u64,
        action: IteratorAction,
    ) -> Result<IteratorRecord, ClientError> {
        let req = IteratorRequest {
            iterator_id,
            action,
            ..IteratorRequest::default()
        };
        let h = Header::request(Command::Iterator, Id::ZERO, 0, 0);
        let frames = self.call_node(node, h, req.encode()).await?;
        let last = frames
            .last()
            .ok_or(ClientError::Conn(ConnError::Closed(node)))?;
        Ok(IteratorRecord::decode(&last.payload)?)
    }
}

impl IteratorStream {
    /// The iterator's id (for pause / continue / cancel).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Records of the backend when the iterator started.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The stream's own connection (requests sent on it are answered after every reply the
    /// node queued before them).
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// The final frame was received.
    pub fn ended(&self) -> bool {
        self.ended
    }

    fn decode(
        &mut self,
        f: Result<Frame, ConnError>,
    ) -> Option<Result<IteratorRecord, ClientError>> {
        let f = match stream_frame(f, &mut self.ended) {
            Ok(Some(f)) => f,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        Some(IteratorRecord::decode(&f.payload).map_err(ClientError::from))
    }

    /// The next frame, keep-alives included; `None` after a complete pass. A stream that
    /// stopped early (cancelled, failed) yields that error last.
    pub async fn next(&mut self) -> Option<Result<IteratorRecord, ClientError>> {
        if self.ended {
            return None;
        }
        let f = self.replies.next().await?;
        self.decode(f)
    }

    /// The next record, keep-alives skipped.
    pub async fn next_record(&mut self) -> Option<Result<IteratorRecord, ClientError>> {
        loop {
            match self.next().await? {
                Ok(r) if r.keepalive => continue,
                other => return Some(other),
            }
        }
    }

    /// A frame already received, without waiting: `None` when nothing is there yet (or the
    /// stream ended, see [`IteratorStream::ended`]).
    pub fn try_next(&mut self) -> Option<Result<IteratorRecord, ClientError>> {
        if self.ended {
            return None;
        }
        // Polling once and dropping the future is safe: `Replies::next` only changes its
        // state when it returns a frame.
        let f = self.replies.next().now_or_never()??;
        self.decode(f)
    }
}
