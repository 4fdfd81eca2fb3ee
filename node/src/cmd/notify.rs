//! NOTIFY: subscribe to (or stop watching) the header's key. A subscription is acknowledged
//! with a MORE frame; events follow on the same transaction; unsubscribing ends the stream.
//!
//! A subscription follows the forwarding rule of every keyed command: the owner of the key in
//! the header's group holds it (writes and removes run there). A node that does not own the key
//! relays it: it opens one connection to the owner, subscribes there (FORWARDED, so the owner
//! never relays again), acknowledges the client once the owner has, then a relay task passes
//! each event on. Unsubscribing is answered where the subscription was made (no routing).
//!
//! Bounds of a relay: [`crate::notify::MAX_RELAYS`] per node; the owner's events wait in the
//! connection's bounded reply queue and go on to the client with `try_send`, so a client that
//! does not read loses its relay (like a local watcher) instead of stalling anything; the relay
//! ends when the client unsubscribes or disconnects (the hub drops its entry), when the owner
//! ends the stream or the connection to it breaks (the client gets a final frame saying so).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use ellipsis_core::client::{Conn, Replies};
use ellipsis_core::protocol::cmd::notify::NotifyRequest;
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{flags, Frame, Status};
use tokio::sync::oneshot;

use super::{resolve, ConnCtx, Reply, Target};
use crate::counters::Source;
use crate::error::NodeError;
use crate::node::Node;

pub(super) async fn handle(node: &Arc<Node>, ctx: &ConnCtx, f: &Frame) -> Result<Reply, NodeError> {
    let req = NotifyRequest::decode(&f.payload)?;
    if !req.subscribe {
        node.notify.unsubscribe(&f.header.id, ctx.id);
        return Ok(Reply::default());
    }
    match resolve(node, &f.header)? {
        Target::Local(_) => subscribe_here(node, ctx, f),
        Target::Forward(owner) => relay(node, ctx, f, owner).await,
    }
}

fn subscribe_here(node: &Node, ctx: &ConnCtx, f: &Frame) -> Result<Reply, NodeError> {
    if !node
        .notify
        .subscribe(f.header.id, ctx.id, f.header, ctx.tx.clone())
    {
        return Err(NodeError::Busy("too many NOTIFY subscriptions".into()));
    }
    let mut h = f.header.reply(Status::OK);
    h.flags |= flags::MORE;
    ctx.tx
        .try_send(Frame::new(h, Bytes::new()))
        .map_err(|_| NodeError::Busy("connection queue full".into()))?;
    // The stream stays open: its final frame comes with the unsubscribe.
    Ok(Reply {
        sent: true,
        ..Reply::default()
    })
}

/// Subscribe at `owner` and start the task that relays its events.
async fn relay(
    node: &Arc<Node>,
    ctx: &ConnCtx,
    f: &Frame,
    owner: SocketAddr,
) -> Result<Reply, NodeError> {
    // Registered first, so the bound holds before any connection is opened, and a client
    // that unsubscribes or leaves while the owner is being asked stops the relay too.
    let (relay_id, stopped) = node
        .notify
        .add_relay(f.header.id, ctx.id, f.header, ctx.tx.clone())
        .ok_or_else(|| NodeError::Busy("too many relayed NOTIFY subscriptions".into()))?;
    match subscribe_at_owner(node, f, owner).await {
        Ok((conn, upstream, mut ack)) => {
            ack.header.trans = f.header.trans;
            ack.header.flags &= !flags::FORWARDED;
            if ctx.tx.try_send(ack).is_err() {
                node.notify.end_relay(relay_id);
                return Err(NodeError::Busy("connection queue full".into()));
            }
            tokio::spawn(run_relay(
                node.clone(),
                relay_id,
                f.header.trans,
                conn,
                upstream,
                ctx.tx.clone(),
                stopped,
            ));
            Ok(Reply {
                source: Some(Source::Forwarded),
                sent: true,
                ..Reply::default()
            })
        }
        Err(e) => {
            node.notify.end_relay(relay_id);
            Err(e)
        }
    }
}

/// One connection to the owner, the subscription sent and its acknowledgement in (within the
/// peer timeout). An error status from the owner is the client's answer.
async fn subscribe_at_owner(
    node: &Node,
    f: &Frame,
    owner: SocketAddr,
) -> Result<(Arc<Conn>, Replies, Frame), NodeError> {
    let unreachable = |e: ellipsis_core::client::ConnError| NodeError::Unreachable(e.to_string());
    let timeout = node.peers.timeout();
    // Its own connection, not the shared peer one: closing it is how the owner learns that
    // this relay is gone, even if this node dies without a word.
    let conn = Conn::connect(owner, node.config.max_frame_bytes, timeout)
        .await
        .map_err(unreachable)?;
    let mut h = f.header;
    h.flags |= flags::FORWARDED;
    let mut upstream = conn
        .request(h, f.payload.clone(), timeout)
        .await
        .map_err(unreachable)?;
    let ack = match upstream.next().await {
        Some(Ok(ack)) => ack,
        Some(Err(e)) => return Err(unreachable(e)),
        None => return Err(NodeError::Unreachable(format!("{owner} closed the stream"))),
    };
    if !ack.header.status.is_ok() {
        return Err(NodeError::Peer(ack.header.status));
    }
    if !ack.header.has(flags::MORE) {
        return Err(NodeError::Unreachable(format!(
            "{owner} ended the subscription at once"
        )));
    }
    Ok((conn, upstream.without_timeout(), ack))
}

/// Pass the owner's events to the client until the hub drops the relay (unsubscribe, client
/// gone), the owner ends the stream or the connection to it breaks, or the client's queue is
/// full. Returning drops `conn`, which closes it, and the owner then frees its subscription.
async fn run_relay(
    node: Arc<Node>,
    relay_id: u64,
    client_trans: u64,
    conn: Arc<Conn>,
    mut upstream: Replies,
    tx: tokio::sync::mpsc::Sender<Frame>,
    mut stopped: oneshot::Receiver<()>,
) {
    let owner = loop {
        let next = tokio::select! {
            _ = &mut stopped => return,
            next = upstream.next() => next,
        };
        match next {
            Some(Ok(mut event)) => {
                let last = !event.header.has(flags::MORE);
                event.header.trans = client_trans;
                event.header.flags &= !flags::FORWARDED;
                if last {
                    // The owner ended the stream: its final frame is the client's.
                    if let Some(r) = node.notify.end_relay(relay_id) {
                        let _ = r.tx.try_send(event);
                    }
                    return;
                }
                if tx.try_send(event).is_err() {
                    // The client does not read: dropped, as a local watcher would be.
                    node.notify.end_relay(relay_id);
                    return;
                }
            }
            Some(Err(_)) | None => break conn.addr(),
        }
    };
    if let Some(r) = node.notify.end_relay(relay_id) {
        let message = format!("the connection to the owner {owner} broke");
        let _ = r.tx.try_send(Frame::new(
            r.header.reply(Status::UNREACHABLE),
            Bytes::from(message),
        ));
    }
}
