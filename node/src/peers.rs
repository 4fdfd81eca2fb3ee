//! Connections to other nodes, the join handshake and the periodic route refresh.
//!
//! Not client sessions: a node talks to peers to forward requests it does not own and to
//! exchange ROUTE_LISTs. Invariants: one connection per peer (re-opened on use after it
//! broke); a peer that cannot be reached has its routes withdrawn locally until it answers
//! again; the refresh loop and pushes never hold a lock across an await.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ellipsis_core::client::{Conn, ConnError};
use ellipsis_core::protocol::cmd::route_list::RouteList;
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{flags, Command, Header};
use ellipsis_core::stats::PeerStats;
use ellipsis_core::Id;
use parking_lot::Mutex;

use crate::node::Node;

/// Open connections to peers.
#[derive(Debug)]
pub struct Peers {
    conns: Mutex<HashMap<SocketAddr, Arc<tokio::sync::OnceCell<Arc<Conn>>>>>,
    max_frame_bytes: u64,
    timeout: Duration,
}

impl Peers {
    /// No connections yet.
    pub fn new(max_frame_bytes: u64, timeout: Duration) -> Peers {
        Peers {
            conns: Mutex::new(HashMap::new()),
            max_frame_bytes,
            timeout,
        }
    }

    /// Request timeout towards peers.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A live connection to `addr`.
    pub async fn conn(&self, addr: SocketAddr) -> Result<Arc<Conn>, ConnError> {
        loop {
            let cell = self.conns.lock().entry(addr).or_default().clone();
            let conn = cell
                .get_or_try_init(|| Conn::connect(addr, self.max_frame_bytes, self.timeout))
                .await;
            let conn = match conn {
                Ok(c) => c.clone(),
                Err(e) => {
                    self.drop_cell(addr, &cell);
                    return Err(e);
                }
            };
            if !conn.is_closed() {
                return Ok(conn);
            }
            self.drop_cell(addr, &cell);
        }
    }

    fn drop_cell(&self, addr: SocketAddr, cell: &Arc<tokio::sync::OnceCell<Arc<Conn>>>) {
        let mut conns = self.conns.lock();
        if conns.get(&addr).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            conns.remove(&addr);
        }
    }

    /// Per-peer queue figures.
    pub fn stats(&self) -> Vec<PeerStats> {
        let conns = self.conns.lock();
        let mut out: Vec<PeerStats> = conns
            .iter()
            .map(|(addr, cell)| match cell.get() {
                Some(c) => PeerStats {
                    addr: addr.to_string(),
                    state: if c.is_closed() { "down" } else { "connected" }.into(),
                    send_queue: c.send_queue() as u64,
                    send_queue_limit: ellipsis_core::client::SEND_QUEUE as u64,
                    in_flight: c.in_flight() as u64,
                },
                None => PeerStats {
                    addr: addr.to_string(),
                    state: "connecting".into(),
                    send_queue_limit: ellipsis_core::client::SEND_QUEUE as u64,
                    ..PeerStats::default()
                },
            })
            .collect();
        out.sort_by(|a, b| a.addr.cmp(&b.addr));
        out
    }
}

/// Exchange route lists with `peer`: send ours, merge its answer. Returns newly learned nodes.
pub async fn exchange_routes(
    node: &Arc<Node>,
    peer: SocketAddr,
) -> Result<Vec<SocketAddr>, ConnError> {
    let conn = node.peers.conn(peer).await?;
    let mut h = Header::request(Command::RouteList, Id::ZERO, 0, 0);
    h.flags |= flags::FORWARDED;
    let payload: Bytes = node.route_list().encode().into();
    let reply = conn.call(h, payload, node.peers.timeout()).await?;
    let list = RouteList::decode(&reply.payload).map_err(|e| ConnError::Connect {
        addr: peer,
        reason: format!("bad route list: {e}"),
    })?;
    // The answering node lists itself first: that entry is authoritative.
    let sender = list.nodes.first().map(|n| n.addr);
    Ok(node.merge_route_list(sender, &list))
}

/// One refresh round: every configured remote and known node; unreachable ones are withdrawn.
pub async fn refresh(node: &Arc<Node>) {
    let mut targets: Vec<SocketAddr> = node.known.read().keys().copied().collect();
    for r in &node.config.remotes {
        if let Ok(addrs) = tokio::net::lookup_host(r.as_str()).await {
            targets.extend(addrs);
        }
    }
    targets.sort_unstable();
    targets.dedup();
    targets.retain(|a| *a != node.addr);
    let mut round = 0;
    while !targets.is_empty() && round < 4 {
        round += 1;
        let results = futures::future::join_all(
            targets
                .iter()
                .map(|&p| async move { (p, exchange_routes(node, p).await) }),
        )
        .await;
        let mut learned = Vec::new();
        for (peer, r) in results {
            match r {
                Ok(new) => learned.extend(new),
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "peer unreachable");
                    node.forget_node(peer);
                }
            }
        }
        // Newly learned nodes get our routes right away (so they can forward to us).
        learned.sort_unstable();
        learned.dedup();
        targets = learned;
    }
}

/// Refresh routes every `check_timeout_s` until `stop` fires.
pub async fn refresh_loop(node: Arc<Node>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let period = Duration::from_secs(node.config.check_timeout_s.max(1));
    loop {
        refresh(&node).await;
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Tell every known peer about a change of our backends now, without waiting for the loop.
pub fn push_routes(node: &Arc<Node>) {
    node.announce_self();
    let node = node.clone();
    tokio::spawn(async move {
        let peers: Vec<SocketAddr> = node.known.read().keys().copied().collect();
        for p in peers.into_iter().filter(|p| *p != node.addr) {
            let _ = exchange_routes(&node, p).await;
        }
    });
}
