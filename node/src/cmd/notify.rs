//! NOTIFY: subscribe to (or stop watching) the header's key. A subscription is acknowledged
//! with a MORE frame; events follow on the same transaction; unsubscribing ends the stream.
//!
//! A subscription follows the forwarding rule of every keyed command: the owner of the key in
//! the header's group holds it (writes and removes run there). A node that does not own the key
//! relays it: it opens one connection to the owner, subscribes there (FORWARDED, so the owner
//! never relays again), acknowledges the client once the owner has, then a relay task passes
//! each event on. Unsubscribing is answered where the subscription was made (no routing).
//!
//! Subscriptions follow their keys when the ring changes (a backend's ids set, a node
//! joining or forgotten): every change of this node's route table is looked at. A watcher of
//! a key this node no longer owns becomes a relay to the new owner; a relay whose key moved
//! subscribes at the new owner and then drops its connection to the old one (which frees its
//! side), or becomes a watcher here if the key came to this node. The client's stream goes on
//! under the same transaction; events written in between, before the new owner holds the
//! subscription, are not delivered (NOTIFY is not durable). A new owner that refuses (it may
//! not have learned the change yet) is asked again, [`FOLLOW_ATTEMPTS`] times over about six
//! seconds, while the old upstream keeps relaying; then the stream ends with the reason.
//! Watchers a relaying node holds here (FORWARDED) do not move: that node follows the key.
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

use ellipsis_core::protocol::Header;
use tokio::sync::watch;
use tokio::time::{Duration, Instant};

use super::{resolve, ConnCtx, Reply, Target};
use crate::counters::Source;
use crate::error::NodeError;
use crate::node::Node;
use crate::notify::final_error;

/// Tries to subscribe at a key's new owner before the relay gives up and ends the stream.
pub const FOLLOW_ATTEMPTS: u32 = 8;

/// Pause before the second try; it doubles with each further try (50 ms .. 6.4 s in all).
const FOLLOW_FIRST_PAUSE_MS: u64 = 50;

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
    match subscribe_at_owner(node, f.header, owner).await {
        Ok((upstream, mut ack)) => {
            ack.header.trans = f.header.trans;
            ack.header.flags &= !flags::FORWARDED;
            if ctx.tx.try_send(ack).is_err() {
                node.notify.end_relay(relay_id);
                return Err(NodeError::Busy("connection queue full".into()));
            }
            tokio::spawn(run_relay(node.clone(), relay_id, Some(upstream), stopped));
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

/// A relay's subscription at the key's owner: its own connection and the stream on it.
struct Upstream {
    conn: Arc<Conn>,
    replies: Replies,
}

/// One connection to the owner, the subscription `request` sent on it (FORWARDED) and its
/// acknowledgement in (within the peer timeout). An error status from the owner is the
/// client's answer.
async fn subscribe_at_owner(
    node: &Node,
    request: Header,
    owner: SocketAddr,
) -> Result<(Upstream, Frame), NodeError> {
    let unreachable = |e: ellipsis_core::client::ConnError| NodeError::Unreachable(e.to_string());
    let timeout = node.peers.timeout();
    // Its own connection, not the shared peer one: closing it is how the owner learns that
    // this relay is gone, even if this node dies without a word.
    let conn = Conn::connect(owner, node.config.max_frame_bytes, timeout)
        .await
        .map_err(unreachable)?;
    let mut h = request;
    h.flags |= flags::FORWARDED;
    let payload = NotifyRequest { subscribe: true }.encode();
    let mut upstream = conn
        .request(h, payload, timeout)
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
    let replies = upstream.without_timeout();
    Ok((Upstream { conn, replies }, ack))
}

/// The next frame from the owner; never, while there is no owner yet.
async fn next_event(upstream: &mut Option<Upstream>) -> Option<Result<Frame, ()>> {
    match upstream {
        Some(u) => u.replies.next().await.map(|r| r.map_err(|_| ())),
        None => std::future::pending().await,
    }
}

/// Pass the owner's events to the client until the hub drops the relay (unsubscribe, client
/// gone), the owner ends the stream or the connection to it breaks, or the client's queue is
/// full; follow the key to its new owner on every route change. Returning drops the upstream
/// connection, which closes it, and the owner then frees its subscription. `upstream` is
/// `None` for a watcher whose key just moved: the owner is looked up at once.
async fn run_relay(
    node: Arc<Node>,
    relay_id: u64,
    mut upstream: Option<Upstream>,
    mut stopped: oneshot::Receiver<()>,
) {
    let Some((request, tx)) = node.notify.relay_request(relay_id) else {
        return;
    };
    let mut routes = node.route_changes.subscribe();
    let mut follow_now = upstream.is_none();
    let mut failed_tries = 0u32;
    let mut retry_at: Option<Instant> = None;
    loop {
        if follow_now {
            follow_now = false;
            let current = upstream.as_ref().map(|u| u.conn.addr());
            let outcome = match resolve(&node, &request) {
                Ok(Target::Local(_)) => {
                    // Converted, or the client was told why not: the relay ends either way.
                    node.notify.relay_to_watcher(relay_id);
                    return;
                }
                Ok(Target::Forward(owner)) if Some(owner) == current => Ok(()),
                Ok(Target::Forward(owner)) => tokio::select! {
                    _ = &mut stopped => return,
                    r = subscribe_at_owner(&node, request, owner) => r.map(|(moved, _ack)| {
                        // The old connection closes here: the old owner frees its side.
                        upstream = Some(moved);
                    }),
                },
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => {
                    failed_tries = 0;
                    retry_at = None;
                }
                Err(e) => {
                    failed_tries += 1;
                    if failed_tries >= FOLLOW_ATTEMPTS {
                        if let Some(r) = node.notify.end_relay(relay_id) {
                            let why = NodeError::Unreachable(format!(
                                "the key moved and its new owner did not take the \
                                 subscription after {failed_tries} tries: {e}"
                            ));
                            let _ = r.tx.try_send(final_error(&r.header, &why));
                        }
                        return;
                    }
                    let pause_ms = FOLLOW_FIRST_PAUSE_MS << (failed_tries - 1);
                    retry_at = Some(Instant::now() + Duration::from_millis(pause_ms));
                }
            }
        }
        let next = tokio::select! {
            _ = &mut stopped => return,
            changed = routes.changed() => {
                if changed.is_err() {
                    return;
                }
                follow_now = true;
                continue;
            }
            _ = sleep_until(retry_at) => {
                follow_now = true;
                continue;
            }
            next = next_event(&mut upstream) => next,
        };
        match next {
            Some(Ok(mut event)) => {
                let last = !event.header.has(flags::MORE);
                event.header.trans = request.trans;
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
            Some(Err(())) | None => {
                let owner = upstream.as_ref().map(|u| u.conn.addr());
                if let Some(r) = node.notify.end_relay(relay_id) {
                    let why = match owner {
                        Some(o) => format!("the connection to the owner {o} broke"),
                        None => "the connection to the owner broke".to_owned(),
                    };
                    let _ =
                        r.tx.try_send(final_error(&r.header, &NodeError::Unreachable(why)));
                }
                return;
            }
        }
    }
}

/// At `at`, or never.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Move the watchers of keys this node no longer owns to their new owners (as relays), on
/// every change of the route table, until the node stops. Relays follow on their own.
pub(crate) async fn follow_routes(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut routes = node.route_changes.subscribe();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            changed = routes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let moved = node
            .notify
            .watchers_to_relays(|h| matches!(resolve(&node, h), Ok(Target::Forward(_))));
        for (relay_id, stopped) in moved {
            tokio::spawn(run_relay(node.clone(), relay_id, None, stopped));
        }
    }
}
