//! Client side of SEND (server-send, admin): the nodes holding the records copy them to target
//! groups themselves; the client only starts the job and reads one result per key and target.
//!
//! - [`Client::server_send`]: one request to one node (a key list, or one of its backends),
//!   its results streamed on a connection of its own, so a long backend pass never holds back
//!   the session's shared connection; [`SendStream::job`] names the node's job (progress in
//!   `/stats/workers`, cancel with `POST /admin/jobs/{id}/cancel`).
//! - [`Client::send_keys`]: a key list split per owning node in the source group, one request
//!   per node, results gathered (bounded by the number of keys and targets).
//!
//! Not routing for backend passes (the caller names the node) and not a snapshot. Every read
//! waits at most the session's timeout for the next frame; a backend pass sends keep-alives
//! while it skips filtered records, but a *paused* or heavily throttled job may stay silent
//! longer (a throttle rest is at most a second).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::conn::{Conn, Replies};
use super::session::{status_error, stream_frame, Client, ClientError};
use crate::id::Id;
use crate::protocol::cmd::send::{SendMode, SendRequest, SendResult};
use crate::protocol::cmd::Payload;
use crate::protocol::{Command, Header};

/// One server-send request's results.
#[derive(Debug)]
pub struct SendStream {
    conn: Arc<Conn>,
    replies: Replies,
    job: Option<u64>,
    ended: bool,
}

impl Client {
    /// Start a server-send on `node`: `req.ids` it owns in `group`, or (with `req.backend`)
    /// one of its backends, whose own group is then the source. Returns once the request is
    /// sent; read the results from the stream.
    pub async fn server_send(
        &self,
        node: SocketAddr,
        group: u32,
        req: &SendRequest,
    ) -> Result<SendStream, ClientError> {
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
        let mut h = Header::request(Command::Send, Id::ZERO, group, 0);
        if let Some(b) = &req.backend {
            h.backend = b.backend;
        }
        let replies = conn.request(h, req.encode(), timeout).await?;
        Ok(SendStream {
            conn,
            replies,
            job: None,
            ended: false,
        })
    }

    /// Send `ids` from their owners in group `from` to `groups` (the source group is left
    /// out), one request per owning node, in `mode`. Returns every result (one per key and
    /// target group); a node that fails as a whole gives its keys that status.
    pub async fn send_keys(
        &self,
        from: u32,
        groups: &[u32],
        ids: &[Id],
        mode: SendMode,
    ) -> Result<Vec<SendResult>, ClientError> {
        let routes = self.routes();
        let mut by_node: BTreeMap<SocketAddr, Vec<Id>> = BTreeMap::new();
        for id in ids {
            let owner = routes.owner(from, id).ok_or(ClientError::NoRoute(from))?;
            by_node.entry(owner.node).or_default().push(*id);
        }
        let targets: Vec<u32> = groups.iter().copied().filter(|g| *g != from).collect();
        let calls = by_node.into_iter().map(|(node, ids)| {
            let targets = targets.clone();
            async move {
                let req = SendRequest {
                    mode,
                    groups: targets.clone(),
                    ids: ids.clone(),
                    backend: None,
                };
                let mut out = Vec::new();
                let streamed = async {
                    let mut s = self.server_send(node, from, &req).await?;
                    while let Some(r) = s.next_result().await {
                        out.push(r?);
                    }
                    Ok::<_, ClientError>(())
                }
                .await;
                if let Err(e) = streamed {
                    // Keys the node had not answered for get the request's failure.
                    let status = e.status();
                    let answered: HashSet<(Id, u32)> =
                        out.iter().map(|r| (r.id, r.group)).collect();
                    for id in &ids {
                        for g in &targets {
                            if !answered.contains(&(*id, *g)) {
                                out.push(SendResult {
                                    id: *id,
                                    group: *g,
                                    status,
                                    ..SendResult::default()
                                });
                            }
                        }
                    }
                }
                out
            }
        });
        Ok(futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect())
    }
}

impl SendStream {
    /// The node's server-send job, once a result or keep-alive named it.
    pub fn job(&self) -> Option<u64> {
        self.job
    }

    /// The final frame was received.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The stream's own connection.
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// The next frame, keep-alives included; `None` after the final OK. A send that stopped
    /// early (cancelled, refused, failed) yields that error last.
    pub async fn next(&mut self) -> Option<Result<SendResult, ClientError>> {
        if self.ended {
            return None;
        }
        let f = match stream_frame(self.replies.next().await?, &mut self.ended) {
            Ok(Some(f)) => f,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        let r = SendResult::decode(&f.payload).map_err(ClientError::from);
        if let Ok(r) = &r {
            self.job = Some(r.job);
        }
        Some(r)
    }

    /// The next key's result, keep-alives skipped.
    pub async fn next_result(&mut self) -> Option<Result<SendResult, ClientError>> {
        loop {
            match self.next().await? {
                Ok(r) if r.keepalive => continue,
                other => return Some(other),
            }
        }
    }
}
