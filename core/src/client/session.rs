//! [`Client`]: key operations across replica groups.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use super::conn::{Body, Conn, ConnError};
use crate::id::Id;
use crate::protocol::cmd::io::IoPayload;
use crate::protocol::cmd::lookup::LookupInfo;
use crate::protocol::cmd::route_list::RouteList;
use crate::protocol::cmd::Payload;
use crate::protocol::RegionSend;
use crate::protocol::{Command, Frame, Header, IoAttr, ProtocolError, Status};
use crate::route::RouteTable;

/// How many groups must succeed for a write to succeed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Checker {
    /// At least one group.
    #[default]
    AtLeastOne,
    /// Every group.
    All,
    /// More than half of the groups.
    Quorum,
}

impl Checker {
    fn needed(self, groups: usize) -> usize {
        match self {
            Checker::AtLeastOne => 1.min(groups),
            Checker::All => groups,
            Checker::Quorum => groups / 2 + 1,
        }
    }
}

impl std::str::FromStr for Checker {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "at-least-one" | "any" => Ok(Checker::AtLeastOne),
            "all" => Ok(Checker::All),
            "quorum" => Ok(Checker::Quorum),
            o => Err(format!(
                "checker must be at-least-one, all or quorum, got {o:?}"
            )),
        }
    }
}

/// Client settings.
///
/// `Debug` prints the admin token as `<redacted>` (or `<none>`): sessions and their configs
/// end up in logs and panic messages, the token must not.
#[derive(Clone)]
pub struct ClientConfig {
    /// Nodes to fetch the route table from (any one that answers is enough).
    pub remotes: Vec<SocketAddr>,
    /// Groups to write to and read from, in read order; empty = every group in the table.
    pub groups: Vec<u32>,
    /// Per-request timeout.
    pub timeout_ms: u64,
    /// Write success rule.
    pub checker: Checker,
    /// Largest frame accepted.
    pub max_frame_bytes: u64,
    /// Admin token, presented on every connection when set.
    pub admin_token: Option<String>,
    /// Read from the group with the lowest observed latency first.
    pub latency_weighted_reads: bool,
    /// Fetch the route table again this often, so nodes that joined and backends enabled or
    /// disabled are followed without waiting for a failure; 0 = only on failures.
    pub route_refresh_ms: u64,
    /// Connections to each node, taken in turn by successive requests (0 counts as 1). More
    /// than one spreads a bulk transfer's work in both kernels (one TCP stream is served by
    /// one core at a time at each end) at the price of ordering: requests sent without
    /// waiting for each other's replies may overtake one another. A node's own client
    /// (recovery, server-send, which wait for each key's reply) uses 2.
    pub connections_per_node: u32,
    /// How the bytes of a file region (a record a node copies from its blob file) go on the
    /// wire; see [`RegionSend`].
    pub region_send: RegionSend,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured so that a new field cannot be added without deciding here whether it
        // is a secret.
        let ClientConfig {
            remotes,
            groups,
            timeout_ms,
            checker,
            max_frame_bytes,
            admin_token,
            latency_weighted_reads,
            route_refresh_ms,
            connections_per_node,
            region_send,
        } = self;
        f.debug_struct("ClientConfig")
            .field("remotes", remotes)
            .field("groups", groups)
            .field("timeout_ms", timeout_ms)
            .field("checker", checker)
            .field("max_frame_bytes", max_frame_bytes)
            .field(
                "admin_token",
                &if admin_token.is_some() {
                    "<redacted>"
                } else {
                    "<none>"
                },
            )
            .field("latency_weighted_reads", latency_weighted_reads)
            .field("route_refresh_ms", route_refresh_ms)
            .field("connections_per_node", connections_per_node)
            .field("region_send", region_send)
            .finish()
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            remotes: Vec::new(),
            groups: Vec::new(),
            timeout_ms: 5_000,
            checker: Checker::AtLeastOne,
            max_frame_bytes: crate::protocol::DEFAULT_MAX_FRAME_BYTES + (1 << 20),
            admin_token: None,
            latency_weighted_reads: false,
            route_refresh_ms: 60_000,
            connections_per_node: 1,
            region_send: RegionSend::default(),
        }
    }
}

/// Errors of client operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No configured remote answered with a route table.
    #[error("no remote answered: {0}")]
    NoRemote(String),
    /// The route table has no backend for the key in this group.
    #[error("no route for group {0}")]
    NoRoute(u32),
    /// A node answered with an error status.
    #[error("{0}")]
    Status(Status),
    /// Transport failure.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// A reply did not decode.
    #[error("bad reply: {0}")]
    Protocol(#[from] ProtocolError),
    /// Fewer groups succeeded than the checker needs.
    #[error("write reached {ok} of {groups} groups, {needed} needed: {}", describe(.results))]
    NotEnoughGroups {
        /// Groups that succeeded.
        ok: usize,
        /// Groups tried.
        groups: usize,
        /// Needed by the checker.
        needed: usize,
        /// Per group.
        results: Vec<GroupResult>,
    },
}

fn describe(results: &[GroupResult]) -> String {
    results
        .iter()
        .map(|r| format!("group {}: {}", r.group, r.status.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ClientError {
    /// The status this error corresponds to (NOT_FOUND for a missing key, ...).
    pub fn status(&self) -> Status {
        match self {
            ClientError::NoRemote(_) | ClientError::NoRoute(_) => Status::UNREACHABLE,
            ClientError::Status(s) => *s,
            ClientError::Conn(c) => c.status(),
            ClientError::Protocol(_) => Status::INVALID,
            ClientError::NotEnoughGroups { results, .. } => results
                .iter()
                .map(|r| r.status)
                .find(|s| !s.is_ok())
                .unwrap_or(Status::IO),
        }
    }
}

/// The outcome in one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupResult {
    /// Group.
    pub group: u32,
    /// Node that answered (or was tried).
    pub node: Option<SocketAddr>,
    /// Status.
    pub status: Status,
    /// What the node reported (writes and lookups).
    pub info: Option<LookupInfo>,
}

/// Per-group results of a write or remove that met its checker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    /// One per group, in group order.
    pub groups: Vec<GroupResult>,
}

impl WriteResult {
    /// Groups that succeeded.
    pub fn ok_groups(&self) -> Vec<u32> {
        self.groups
            .iter()
            .filter(|r| r.status.is_ok())
            .map(|r| r.group)
            .collect()
    }
}

/// A successful read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    /// Group that answered.
    pub group: u32,
    /// Attributes (total size, timestamp, checksum).
    pub attr: IoAttr,
    /// The bytes.
    pub data: Bytes,
    /// Groups that failed before it, with their statuses.
    pub failed: Vec<(u32, Status)>,
    /// The request's trace id as the node echoed it: the id of its call trees
    /// (`GET /traces/{id}`) on every node it crossed when it was sampled.
    pub trace_id: u64,
}

/// Refresh the client's routes every `period` until the client is dropped (it holds only a
/// weak reference, so a dropped client ends its refresher at the next tick).
async fn refresh_loop(client: std::sync::Weak<Client>, period: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(c) = client.upgrade() else { return };
        // A failed refresh keeps the old table; the next tick tries again.
        let _ = c.refresh_routes().await;
    }
}

/// One connection attempt to a node, shared by every caller that arrives while it runs: they
/// all get its outcome, so n concurrent callers to a silent node wait one timeout, not n in
/// turn. A failed attempt is forgotten once it has answered its waiters; the next caller tries
/// afresh.
type Attempt = Arc<tokio::sync::OnceCell<Result<Arc<Conn>, ConnError>>>;

/// A client session; clone the `Arc` to share it.
#[derive(Debug)]
pub struct Client {
    cfg: ClientConfig,
    routes: RwLock<RouteTable>,
    http: RwLock<BTreeMap<SocketAddr, Option<SocketAddr>>>,
    /// Per node and connection slot (`0..connections_per_node`).
    conns: Mutex<HashMap<(SocketAddr, u32), Attempt>>,
    /// The slot the next request takes.
    next_slot: std::sync::atomic::AtomicU32,
    /// Smoothed latency per group in microseconds (for weighted reads).
    latency_us: Mutex<BTreeMap<u32, f64>>,
}

impl Client {
    /// Connect: fetch the route table from the first remote that answers.
    pub async fn connect(cfg: ClientConfig) -> Result<Arc<Client>, ClientError> {
        let client = Arc::new(Client {
            cfg,
            routes: RwLock::new(RouteTable::new()),
            http: RwLock::new(BTreeMap::new()),
            conns: Mutex::new(HashMap::new()),
            next_slot: std::sync::atomic::AtomicU32::new(0),
            latency_us: Mutex::new(BTreeMap::new()),
        });
        client.refresh_routes().await?;
        if client.cfg.route_refresh_ms > 0 {
            tokio::spawn(refresh_loop(
                Arc::downgrade(&client),
                Duration::from_millis(client.cfg.route_refresh_ms),
            ));
        }
        Ok(client)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.timeout_ms)
    }

    /// The settings.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// A copy of the current route table.
    pub fn routes(&self) -> RouteTable {
        self.routes.read().clone()
    }

    /// Known nodes and their HTTP addresses.
    pub fn nodes(&self) -> BTreeMap<SocketAddr, Option<SocketAddr>> {
        self.http.read().clone()
    }

    /// Groups used by this session.
    pub fn groups(&self) -> Vec<u32> {
        if self.cfg.groups.is_empty() {
            self.routes.read().group_ids()
        } else {
            self.cfg.groups.clone()
        }
    }

    /// Ask the configured remotes, then every known node, for a route list; install the first.
    pub async fn refresh_routes(&self) -> Result<(), ClientError> {
        let mut candidates = self.cfg.remotes.clone();
        candidates.extend(self.routes.read().nodes());
        let mut errors = Vec::new();
        for addr in candidates {
            match self.fetch_routes(addr).await {
                Ok(list) => {
                    self.install(&list);
                    return Ok(());
                }
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        Err(ClientError::NoRemote(if errors.is_empty() {
            "no remotes configured".into()
        } else {
            errors.join("; ")
        }))
    }

    async fn fetch_routes(&self, addr: SocketAddr) -> Result<RouteList, ClientError> {
        let conn = self.conn(addr).await?;
        let h = Header::request(Command::RouteList, Id::ZERO, 0, 0);
        let f = conn.call(h, Bytes::new(), self.timeout()).await?;
        Ok(RouteList::decode(&f.payload)?)
    }

    fn install(&self, list: &RouteList) {
        let mut table = RouteTable::new();
        let mut http = BTreeMap::new();
        for n in &list.nodes {
            let backends: Vec<(u32, u32, Vec<Id>)> = n
                .backends
                .iter()
                .map(|b| (b.group, b.backend, b.ids.clone()))
                .collect();
            table.set_node(n.addr, &backends);
            http.insert(n.addr, n.http);
        }
        *self.routes.write() = table;
        *self.http.write() = http;
    }

    /// A live connection to `addr` (opened, and authenticated when a token is set, on demand);
    /// with several [`ClientConfig::connections_per_node`], the next one in turn.
    pub async fn conn(&self, addr: SocketAddr) -> Result<Arc<Conn>, ConnError> {
        let slot = self
            .next_slot
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % self.cfg.connections_per_node.max(1);
        let at = (addr, slot);
        loop {
            let cell = self.conns.lock().entry(at).or_default().clone();
            let outcome = cell
                .get_or_init(|| async {
                    Conn::connect_authed(
                        addr,
                        self.cfg.max_frame_bytes,
                        self.cfg.region_send,
                        self.cfg.admin_token.as_deref(),
                        self.timeout(),
                    )
                    .await
                })
                .await
                .clone();
            if let Ok(conn) = &outcome {
                if !conn.is_closed() {
                    return Ok(conn.clone());
                }
            }
            // Broken or failed: forget it (unless someone already replaced it). A broken
            // connection is reopened now; a failed attempt's error goes to each of its waiters,
            // and the next caller tries afresh.
            {
                let mut conns = self.conns.lock();
                if conns.get(&at).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                    conns.remove(&at);
                }
            }
            outcome?;
        }
    }

    /// Send one request to a node and return its replies (admin and streaming commands).
    pub async fn call_node(
        &self,
        node: SocketAddr,
        header: Header,
        payload: impl Into<Body>,
    ) -> Result<Vec<Frame>, ClientError> {
        let conn = self.conn(node).await?;
        let frames = conn
            .request(header, payload, self.timeout())
            .await?
            .collect(1 << 20)
            .await?;
        if let Some(last) = frames.last() {
            if !last.header.status.is_ok() {
                return Err(ClientError::Status(last.header.status));
            }
        }
        Ok(frames)
    }

    async fn keyed(
        &self,
        cmd: Command,
        group: u32,
        key: &Id,
        payload: Body,
        trace: bool,
    ) -> (Option<SocketAddr>, Result<Frame, ClientError>) {
        let Some(owner) = self.routes.read().owner(group, key) else {
            return (None, Err(ClientError::NoRoute(group)));
        };
        let mut h = Header::request(cmd, *key, group, 0);
        h.backend = owner.backend;
        if trace {
            h.flags |= crate::protocol::flags::TRACE;
        }
        let r = async {
            let conn = self.conn(owner.node).await?;
            Ok::<_, ClientError>(conn.call(h, payload, self.timeout()).await?)
        }
        .await;
        let r = r.map_err(|e| match e {
            ClientError::Conn(ConnError::Status { status, .. }) => ClientError::Status(status),
            other => other,
        });
        (Some(owner.node), r)
    }

    /// Send a keyed request to the owner in each of `groups`; one result per group, no checker.
    pub async fn to_groups(
        &self,
        cmd: Command,
        groups: &[u32],
        key: &Id,
        payload: impl Into<Body>,
    ) -> Vec<GroupResult> {
        let payload: Body = payload.into();
        let calls = groups.iter().map(|&g| {
            let payload = payload.clone();
            async move {
                let (node, r) = self.keyed(cmd, g, key, payload, false).await;
                match r {
                    Ok(f) => GroupResult {
                        group: g,
                        node,
                        status: Status::OK,
                        info: LookupInfo::decode(&f.payload).ok(),
                    },
                    Err(e) => GroupResult {
                        group: g,
                        node,
                        status: e.status(),
                        info: None,
                    },
                }
            }
        });
        futures::future::join_all(calls).await
    }

    async fn to_all_groups(
        &self,
        cmd: Command,
        key: &Id,
        payload: Body,
    ) -> Result<WriteResult, ClientError> {
        let groups = self.groups();
        let results = self.to_groups(cmd, &groups, key, payload).await;
        let ok = results.iter().filter(|r| r.status.is_ok()).count();
        let needed = self.cfg.checker.needed(groups.len()).max(1);
        if ok >= needed {
            Ok(WriteResult { groups: results })
        } else {
            if results.iter().any(|r| r.status == Status::UNREACHABLE) {
                // An owner may have moved; the next call uses fresh routes.
                let _ = self.refresh_routes().await;
            }
            Err(ClientError::NotEnoughGroups {
                ok,
                groups: groups.len(),
                needed,
                results,
            })
        }
    }

    /// Write `data` to every group (attributes select append, prepare, commit, CAS, cache…).
    /// The timestamp is set here when `attr` has none, so all replicas carry the same one.
    pub async fn write(
        &self,
        key: &Id,
        data: Bytes,
        mut attr: IoAttr,
    ) -> Result<WriteResult, ClientError> {
        if attr.ts_sec == 0 && attr.ts_nsec == 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            attr.ts_sec = now.as_secs();
            attr.ts_nsec = now.subsec_nanos();
        }
        self.to_all_groups(Command::Write, key, Body::io(attr, data))
            .await
    }

    /// Write to exactly `groups` (server-send, recovery): one result per group, no checker.
    /// `attr` should carry the record's timestamp.
    pub async fn write_to(
        &self,
        groups: &[u32],
        key: &Id,
        data: Bytes,
        attr: IoAttr,
    ) -> Vec<GroupResult> {
        self.to_groups(Command::Write, groups, key, Body::io(attr, data))
            .await
    }

    /// Lookups in exactly `groups`.
    pub async fn lookup_in(&self, groups: &[u32], key: &Id) -> Vec<GroupResult> {
        self.to_groups(Command::Lookup, groups, key, Bytes::new())
            .await
    }

    /// Start or cancel a recovery on `node` (RECOVERY, admin: the session needs the token).
    /// Start takes the same JSON document as `POST /admin/recovery`; both answer with the
    /// node's job and the jobs it fanned out to the other nodes.
    pub async fn recovery(
        &self,
        node: SocketAddr,
        control: &crate::protocol::cmd::recovery::RecoveryControl,
    ) -> Result<crate::stats::RecoveryJob, ClientError> {
        let h = Header::request(Command::Recovery, Id::ZERO, 0, 0);
        let frames = self.call_node(node, h, control.encode()).await?;
        let last = frames
            .last()
            .ok_or(ClientError::Protocol(ProtocolError::Invalid {
                what: "recovery reply",
                reason: "no reply".into(),
            }))?;
        serde_json::from_slice(&last.payload).map_err(|e| {
            ClientError::Protocol(ProtocolError::Invalid {
                what: "recovery reply",
                reason: e.to_string(),
            })
        })
    }

    /// Verifying lookups in exactly `groups`: each owner checks the whole record (a read of
    /// the object) and answers CORRUPTED for a damaged one.
    pub async fn lookup_verified_in(&self, groups: &[u32], key: &Id) -> Vec<GroupResult> {
        let attr = IoAttr {
            io_flags: crate::protocol::io_flags::VERIFY,
            ..IoAttr::default()
        };
        let payload = IoPayload {
            attr,
            data: Bytes::new(),
        }
        .encode();
        self.to_groups(Command::Lookup, groups, key, payload).await
    }

    /// A keyed request to one backend of one node, bypassing routing (DIRECT): recovery moves
    /// keys to their owner this way.
    pub async fn direct(
        &self,
        cmd: Command,
        target: crate::route::BackendAddr,
        group: u32,
        key: &Id,
        payload: impl Into<Body>,
    ) -> Result<Frame, ClientError> {
        let mut h = Header::request(cmd, *key, group, 0);
        h.backend = target.backend;
        h.flags |= crate::protocol::flags::DIRECT;
        let conn = self.conn(target.node).await?;
        conn.call(h, payload, self.timeout())
            .await
            .map_err(|e| match e {
                ConnError::Status { status, .. } => ClientError::Status(status),
                other => other.into(),
            })
    }

    /// Read many keys of one group: each owner is asked once (BULK_READ) for its keys.
    /// Returns per key its status and, when found, the data.
    pub async fn bulk_read(
        &self,
        group: u32,
        ids: &[Id],
    ) -> Result<Vec<(Id, Status, Option<IoPayload>)>, ClientError> {
        let mut by_node: BTreeMap<SocketAddr, Vec<Id>> = BTreeMap::new();
        {
            let routes = self.routes.read();
            for id in ids {
                let owner = routes.owner(group, id).ok_or(ClientError::NoRoute(group))?;
                by_node.entry(owner.node).or_default().push(*id);
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for (node, keys) in by_node {
            for chunk in keys.chunks(crate::protocol::cmd::MAX_IDS as usize) {
                let req = crate::protocol::cmd::bulk_read::BulkRead {
                    ids: chunk.to_vec(),
                };
                let h = Header::request(Command::BulkRead, Id::ZERO, group, 0);
                for f in self.call_node(node, h, req.encode()).await? {
                    if f.header.has(crate::protocol::flags::MORE) {
                        let p = if f.header.status.is_ok() {
                            Some(IoPayload::decode_shared(&f.payload)?)
                        } else {
                            None
                        };
                        out.push((f.header.id, f.header.status, p));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every key of `group` in `[start, end)` (with data unless `keys_only`), at most `limit`
    /// per node (0 = all), from every node of the group.
    pub async fn read_range(
        &self,
        group: u32,
        range: crate::protocol::cmd::key_range::KeyRange,
    ) -> Result<Vec<(Id, IoPayload)>, ClientError> {
        let mut out = Vec::new();
        for f in self.range_call(Command::ReadRange, group, range).await? {
            if f.header.status.is_ok() {
                out.push((f.header.id, IoPayload::decode_shared(&f.payload)?));
            }
        }
        out.sort_by_key(|x| x.0);
        Ok(out)
    }

    /// Remove every key of `group` in `[start, end)` (admin); returns per key its status.
    pub async fn remove_range(
        &self,
        group: u32,
        range: crate::protocol::cmd::key_range::KeyRange,
    ) -> Result<Vec<(Id, Status)>, ClientError> {
        let frames = self.range_call(Command::DelRange, group, range).await?;
        Ok(frames
            .into_iter()
            .map(|f| (f.header.id, f.header.status))
            .collect())
    }

    async fn range_call(
        &self,
        cmd: Command,
        group: u32,
        range: crate::protocol::cmd::key_range::KeyRange,
    ) -> Result<Vec<Frame>, ClientError> {
        let nodes: Vec<SocketAddr> = {
            let routes = self.routes.read();
            let mut n: Vec<SocketAddr> = routes
                .groups
                .get(&group)
                .map(|es| es.iter().map(|e| e.addr.node).collect())
                .unwrap_or_default();
            n.sort_unstable();
            n.dedup();
            n
        };
        if nodes.is_empty() {
            return Err(ClientError::NoRoute(group));
        }
        let mut out = Vec::new();
        for node in nodes {
            let h = Header::request(cmd, Id::ZERO, group, 0);
            let frames = self.call_node(node, h, range.encode()).await?;
            out.extend(
                frames
                    .into_iter()
                    .filter(|f| f.header.has(crate::protocol::flags::MORE)),
            );
        }
        Ok(out)
    }

    /// Remove from every group.
    pub async fn remove(&self, key: &Id) -> Result<WriteResult, ClientError> {
        let payload = IoPayload::default().encode();
        self.to_all_groups(Command::Del, key, payload.into()).await
    }

    fn read_order(&self) -> Vec<u32> {
        let mut groups = self.groups();
        if self.cfg.latency_weighted_reads {
            let lat = self.latency_us.lock();
            groups.sort_by(|a, b| {
                let la = lat.get(a).copied().unwrap_or(0.0);
                let lb = lat.get(b).copied().unwrap_or(0.0);
                la.total_cmp(&lb)
            });
        }
        groups
    }

    fn note_latency(&self, group: u32, started: Instant) {
        self.note_latency_us(group, started.elapsed().as_micros() as f64);
    }

    /// A read that failed for want of an answer (unreachable, timed out, overloaded) counts
    /// as one that took the whole timeout: a dead group must not stay first in the weighted
    /// order and make every read wait for it. A group that answered (even NOT_FOUND) counts
    /// its real latency.
    fn note_read_failure(&self, group: u32, started: Instant, status: Status) {
        let unanswered = [Status::UNREACHABLE, Status::TIMED_OUT, Status::AGAIN];
        let us = if unanswered.contains(&status) {
            started.elapsed().max(self.timeout()).as_micros() as f64
        } else {
            started.elapsed().as_micros() as f64
        };
        self.note_latency_us(group, us);
    }

    fn note_latency_us(&self, group: u32, us: f64) {
        let mut lat = self.latency_us.lock();
        let e = lat.entry(group).or_insert(us);
        *e = 0.8 * *e + 0.2 * us;
    }

    /// Read `size` bytes at `offset` (0, 0 = whole object), trying groups in order.
    pub async fn read(&self, key: &Id, offset: u64, size: u64) -> Result<ReadResult, ClientError> {
        self.read_traced(key, offset, size, false).await
    }

    /// [`Client::read`] with the trace bit set on the request when `trace`.
    pub async fn read_traced(
        &self,
        key: &Id,
        offset: u64,
        size: u64,
        trace: bool,
    ) -> Result<ReadResult, ClientError> {
        let attr = IoAttr {
            offset,
            size,
            ..IoAttr::default()
        };
        let payload: Body = IoPayload {
            attr,
            data: Bytes::new(),
        }
        .encode()
        .into();
        let mut failed = Vec::new();
        let mut last = ClientError::NoRoute(0);
        for g in self.read_order() {
            let started = Instant::now();
            let (_, r) = self
                .keyed(Command::Read, g, key, payload.clone(), trace)
                .await;
            match r.and_then(|f| Ok((f.header.trace_id, IoPayload::decode_shared(&f.payload)?))) {
                Ok((trace_id, p)) => {
                    self.note_latency(g, started);
                    return Ok(ReadResult {
                        group: g,
                        attr: p.attr,
                        data: p.data,
                        failed,
                        trace_id,
                    });
                }
                Err(e) => {
                    self.note_read_failure(g, started, e.status());
                    failed.push((g, e.status()));
                    last = e;
                }
            }
        }
        // Not found anywhere is the common answer: report it as such.
        if !failed.is_empty() && failed.iter().all(|(_, s)| *s == Status::NOT_FOUND) {
            return Err(ClientError::Status(Status::NOT_FOUND));
        }
        if failed.iter().any(|(_, s)| *s == Status::UNREACHABLE) {
            // An owner may have moved; the next call uses fresh routes.
            let _ = self.refresh_routes().await;
        }
        Err(last)
    }

    /// Where and what the key is, first group that has it.
    pub async fn lookup(&self, key: &Id) -> Result<(u32, LookupInfo), ClientError> {
        let mut last = ClientError::NoRoute(0);
        for g in self.groups() {
            let (_, r) = self
                .keyed(Command::Lookup, g, key, Bytes::new().into(), false)
                .await;
            match r.and_then(|f| Ok(LookupInfo::decode(&f.payload)?)) {
                Ok(info) => return Ok((g, info)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Lookups in every group (recovery and checks).
    pub async fn lookup_all(&self, key: &Id) -> Vec<GroupResult> {
        let calls = self.groups().into_iter().map(|g| async move {
            let (node, r) = self
                .keyed(Command::Lookup, g, key, Bytes::new().into(), false)
                .await;
            match r.and_then(|f| Ok(LookupInfo::decode(&f.payload)?)) {
                Ok(info) => GroupResult {
                    group: g,
                    node,
                    status: Status::OK,
                    info: Some(info),
                },
                Err(e) => GroupResult {
                    group: g,
                    node,
                    status: e.status(),
                    info: None,
                },
            }
        });
        futures::future::join_all(calls).await
    }
}

/// A connection error as a client error, a node's refusal as its bare status (what admin
/// streams report).
pub(crate) fn status_error(e: ConnError) -> ClientError {
    match e {
        ConnError::Status { status, .. } => ClientError::Status(status),
        other => other.into(),
    }
}

/// One frame of an admin stream (iterator, server-send) judged: `Ok(Some(frame))` for an
/// intermediate (MORE) frame, `Ok(None)` for the final OK (a complete stream), the error
/// otherwise. Anything but an intermediate frame ends the stream (`ended` is set).
pub(crate) fn stream_frame(
    f: Result<Frame, ConnError>,
    ended: &mut bool,
) -> Result<Option<Frame>, ClientError> {
    let f = match f {
        Ok(f) => f,
        Err(e) => {
            *ended = true;
            return Err(e.into());
        }
    };
    if f.header.has(crate::protocol::flags::MORE) {
        return Ok(Some(f));
    }
    *ended = true;
    if f.header.status.is_ok() {
        Ok(None)
    } else {
        Err(ClientError::Status(f.header.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_redacts_the_admin_token() {
        let token = "a-secret-client-token-9c2e";
        let cfg = ClientConfig {
            admin_token: Some(token.into()),
            groups: vec![1, 2],
            ..ClientConfig::default()
        };
        for text in [format!("{cfg:?}"), format!("{cfg:#?}")] {
            assert!(!text.contains(token), "token in {text}");
            assert!(text.contains("admin_token: \"<redacted>\""), "{text}");
        }
        assert!(
            format!("{cfg:?}").contains("groups: [1, 2]"),
            "the rest is shown"
        );
        let none = format!("{:?}", ClientConfig::default());
        assert!(none.contains("admin_token: \"<none>\""), "{none}");
    }
}
