//! The running node's shared state: backends, route table, peers, pools, counters.
//!
//! Not the network loops (`server`, `http`) and not request logic (`cmd`). Invariants: the
//! route table always contains exactly this node's enabled backends under its own address
//! (refreshed by [`Node::announce_self`] on every backend change); every queue here is bounded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use ellipsis_core::protocol::cmd::route_list::{BackendRoutes, NodeRoutes, RouteList};
use ellipsis_core::{Id, RouteTable};
use parking_lot::RwLock;
use tokio::sync::Semaphore;

use crate::auth::AdminToken;
use crate::backend::{Backend, BackendState};
use crate::config::NodeConfig;
use crate::counters::CommandCounters;
use crate::keylock::KeyLocks;
use crate::notify::NotifyHub;
use crate::peers::Peers;
use crate::pool::BlockingPool;
use crate::schedule::Clock;
use crate::worker::Workers;
use crate::write_queue::WriteQueue;

/// Shared state of one node.
pub struct Node {
    /// Configuration it started with.
    pub config: NodeConfig,
    /// Protocol address (as announced to peers and clients).
    pub addr: SocketAddr,
    /// Monitoring HTTP address.
    pub http_addr: Option<SocketAddr>,
    /// Backends by id.
    pub backends: BTreeMap<u32, Arc<Backend>>,
    /// Who owns what, cluster-wide. Changed only through [`Node::announce_self`],
    /// [`Node::merge_route_list`] and [`Node::forget_node`], which publish the new generation
    /// on `route_changes`.
    pub routes: RwLock<RouteTable>,
    /// The route table's generation after its last change: what NOTIFY subscriptions watch to
    /// follow their keys to new owners.
    pub route_changes: tokio::sync::watch::Sender<u64>,
    /// Known nodes and their HTTP addresses.
    pub known: RwLock<BTreeMap<SocketAddr, Option<SocketAddr>>>,
    /// Connections to other nodes.
    pub peers: Peers,
    /// Blocking threads for engine calls.
    pub pool: BlockingPool,
    /// Each backend's write queue (mutations run serially, drained in batches), by backend id.
    pub write_queues: BTreeMap<u32, WriteQueue>,
    /// Per-key serialisation of requests.
    pub keylocks: KeyLocks<(u32, Id)>,
    /// Admin token.
    pub token: AdminToken,
    /// Call-tree recorder (process-wide; trees are filtered by this node's address).
    pub tracer: Option<react_trace::Tracer>,
    /// Per-command counters.
    pub counters: CommandCounters,
    /// NOTIFY subscriptions.
    pub notify: NotifyHub,
    /// Background jobs.
    pub workers: Workers,
    /// Requests being handled (network side); bounds the non-blocking queue.
    pub inflight: Arc<Semaphore>,
    /// Its bound.
    pub inflight_limit: u64,
    /// Requests answered AGAIN at once because no `inflight` permit was free (or the
    /// connection was at its request bound), since start.
    pub inflight_refused: AtomicU64,
    /// Memory for large frames' payloads (node config `receive_buffer_bytes`).
    pub receive_buffer: crate::receive_buffer::ReceiveBuffer,
    /// Client connections open.
    pub client_connections: AtomicU64,
    /// Start time.
    pub started: Instant,
    /// The node's own client session (object API, server-send, recovery), made on first use.
    pub client: tokio::sync::OnceCell<Arc<ellipsis_core::client::Client>>,
    /// Time of day for schedules (the system clock unless a test injected one).
    pub clock: Arc<dyn Clock>,
    /// Passes of the maintenance loop so far: a test that moved the clock waits for the next
    /// pass to know the schedules were looked at, instead of sleeping.
    pub maintenance_passes: AtomicU64,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// This node's own entry of a route list.
    pub fn self_routes(&self) -> NodeRoutes {
        NodeRoutes {
            addr: self.addr,
            http: self.http_addr,
            backends: self
                .backends
                .values()
                .filter(|b| b.state() != BackendState::Disabled)
                .map(|b| BackendRoutes {
                    group: b.group(),
                    backend: b.id(),
                    ids: b.ring_ids(),
                })
                .collect(),
        }
    }

    /// Put this node's enabled backends into its own route table.
    pub fn announce_self(&self) {
        let me = self.self_routes();
        let backends: Vec<(u32, u32, Vec<Id>)> = me
            .backends
            .iter()
            .map(|b| (b.group, b.backend, b.ids.clone()))
            .collect();
        let generation = {
            let mut routes = self.routes.write();
            routes.set_node(self.addr, &backends);
            routes.generation
        };
        self.known.write().insert(self.addr, self.http_addr);
        self.routes_changed(generation);
    }

    /// Tell `route_changes` watchers, if the table moved to a new generation.
    fn routes_changed(&self, generation: u64) {
        self.route_changes.send_if_modified(|seen| {
            let changed = *seen != generation;
            *seen = generation;
            changed
        });
    }

    /// The route list this node sends: itself first, then every other node it knows.
    pub fn route_list(&self) -> RouteList {
        let mut nodes = vec![self.self_routes()];
        let routes = self.routes.read();
        let known = self.known.read();
        let mut others: BTreeMap<SocketAddr, Vec<BackendRoutes>> = BTreeMap::new();
        for (group, entries) in &routes.groups {
            for e in entries {
                if e.addr.node == self.addr {
                    continue;
                }
                let list = others.entry(e.addr.node).or_default();
                match list
                    .iter_mut()
                    .find(|b| b.backend == e.addr.backend && b.group == *group)
                {
                    Some(b) => b.ids.push(e.id),
                    None => list.push(BackendRoutes {
                        group: *group,
                        backend: e.addr.backend,
                        ids: vec![e.id],
                    }),
                }
            }
        }
        for (addr, backends) in others {
            nodes.push(NodeRoutes {
                addr,
                http: known.get(&addr).copied().flatten(),
                backends,
            });
        }
        RouteList { nodes }
    }

    /// Merge a route list received from `sender` (its own entry is authoritative; other
    /// entries only teach us nodes we did not know). Returns nodes learned.
    pub fn merge_route_list(
        &self,
        sender: Option<SocketAddr>,
        list: &RouteList,
    ) -> Vec<SocketAddr> {
        let mut learned = Vec::new();
        let mut routes = self.routes.write();
        let mut known = self.known.write();
        for n in &list.nodes {
            if n.addr == self.addr {
                continue;
            }
            let authoritative = Some(n.addr) == sender;
            if !authoritative && known.contains_key(&n.addr) {
                continue;
            }
            if !known.contains_key(&n.addr) {
                learned.push(n.addr);
            }
            let backends: Vec<(u32, u32, Vec<Id>)> = n
                .backends
                .iter()
                .map(|b| (b.group, b.backend, b.ids.clone()))
                .collect();
            routes.set_node(n.addr, &backends);
            known.insert(n.addr, n.http);
        }
        let generation = routes.generation;
        drop((routes, known));
        self.routes_changed(generation);
        learned
    }

    /// Forget a node that cannot be reached: its keys route elsewhere (other groups) until it
    /// comes back.
    pub fn forget_node(&self, addr: SocketAddr) {
        if addr == self.addr {
            return;
        }
        let generation = {
            let mut routes = self.routes.write();
            routes.remove_node(addr);
            routes.generation
        };
        self.routes_changed(generation);
    }

    /// The node's client session: routes from this node, authenticated with its token.
    pub async fn client(
        &self,
    ) -> Result<Arc<ellipsis_core::client::Client>, crate::error::NodeError> {
        self.client
            .get_or_try_init(|| async {
                ellipsis_core::client::Client::connect(ellipsis_core::client::ClientConfig {
                    remotes: vec![self.addr],
                    timeout_ms: self.config.wait_timeout_ms,
                    admin_token: self.config.effective_admin_token(),
                    max_frame_bytes: self.config.max_frame_bytes + (1 << 20),
                    // Bulk copies (recovery, server-send) run on two cores at each end; the
                    // jobs wait for each key's reply, so nothing they send can be reordered.
                    connections_per_node: 2,
                    region_send: if self.config.sendfile {
                        ellipsis_core::protocol::RegionSend::Sendfile
                    } else {
                        ellipsis_core::protocol::RegionSend::Copy
                    },
                    ..Default::default()
                })
                .await
            })
            .await
            .cloned()
            .map_err(|e| crate::error::NodeError::Unreachable(e.to_string()))
    }

    /// The backend with this id.
    pub fn backend(&self, id: u32) -> Option<Arc<Backend>> {
        self.backends.get(&id).cloned()
    }
}
