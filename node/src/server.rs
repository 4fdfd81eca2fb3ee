//! The node's entry point: open backends, serve the protocol and HTTP, run background loops,
//! shut down gracefully.
//!
//! Not request logic (`cmd`). Invariants: every connection has a bounded reply queue and every
//! request holds one of `max_inflight` permits (a full node answers AGAIN at once instead of
//! queueing without bound); a frame larger than `max_frame_bytes` gets a TOO_BIG reply and its
//! connection is closed, other connections are unaffected; on shutdown the listeners stop,
//! in-flight requests finish, dirty cache objects are written back and every engine is synced
//! and closed.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ellipsis_core::protocol::{flags, Frame, FrameCodec, Header, Status, HEADER_SIZE};
use futures::{SinkExt, StreamExt};
use parking_lot::RwLock;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::auth::AdminToken;
use crate::backend::Backend;
use crate::cmd::{self, ConnCtx};
use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::keylock::KeyLocks;
use crate::node::Node;
use crate::peers::Peers;
use crate::pool::BlockingPool;
use crate::worker::Workers;

/// Reply frames queued per connection.
const CONN_REPLY_QUEUE: usize = 1024;
/// Requests handled at once per node (network side).
const MAX_INFLIGHT: usize = 4096;

/// A started node.
#[derive(Debug)]
pub struct RunningNode {
    /// Protocol address.
    pub addr: SocketAddr,
    /// HTTP address, if enabled.
    pub http_addr: Option<SocketAddr>,
    /// Shared state (tests and the demo read it).
    pub node: Arc<Node>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), NodeError>>,
}

impl RunningNode {
    /// Stop gracefully and wait for it.
    pub async fn stop(self) -> Result<(), NodeError> {
        let _ = self.stop.send(true);
        self.task
            .await
            .map_err(|e| NodeError::Startup(format!("node task: {e}")))?
    }
}

/// The server.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Serve `config` on `listener` until `shutdown` resolves (the one entry point).
    pub async fn run(
        listener: TcpListener,
        config: NodeConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), NodeError> {
        let http = match config.http_listen {
            Some(a) => Some(TcpListener::bind(a).await?),
            None => None,
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let node = build(&config, listener.local_addr()?, http.as_ref(), None).await?;
        serve(node, listener, http, stop_rx).await
    }
}

/// Bind the configured addresses (port 0 allowed), open the backends and serve in the
/// background. `tracer` is the process's react-trace handle, if one is installed.
pub async fn start(
    config: NodeConfig,
    tracer: Option<react_trace::Tracer>,
) -> Result<RunningNode, NodeError> {
    let listen = config
        .listen
        .first()
        .copied()
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 1025)));
    let listener = TcpListener::bind(listen).await?;
    let http = match config.http_listen {
        Some(a) => Some(TcpListener::bind(a).await?),
        None => None,
    };
    let node = build(&config, listener.local_addr()?, http.as_ref(), tracer).await?;
    let (stop, stop_rx) = watch::channel(false);
    let addr = node.addr;
    let http_addr = node.http_addr;
    let task = tokio::spawn(serve(node.clone(), listener, http, stop_rx));
    Ok(RunningNode {
        addr,
        http_addr,
        node,
        stop,
        task,
    })
}

async fn build(
    config: &NodeConfig,
    addr: SocketAddr,
    http: Option<&TcpListener>,
    tracer: Option<react_trace::Tracer>,
) -> Result<Arc<Node>, NodeError> {
    config
        .validate()
        .map_err(|e| NodeError::Startup(e.to_string()))?;
    let mut backends = BTreeMap::new();
    for (i, bc) in config.backends.iter().enumerate() {
        let bc = bc.clone();
        let seed = u64::from(addr.port()) << 32 | i as u64;
        // Opening runs the startup check: blocking work.
        let b = tokio::task::spawn_blocking(move || Backend::open(bc, seed))
            .await
            .map_err(|e| NodeError::Startup(e.to_string()))??;
        backends.insert(b.id(), Arc::new(b));
    }
    let http_addr = match http {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let timeout = Duration::from_millis(config.wait_timeout_ms.max(1));
    let node = Arc::new(Node {
        config: config.clone(),
        addr,
        http_addr,
        backends,
        routes: RwLock::new(ellipsis_core::RouteTable::new()),
        known: RwLock::new(BTreeMap::new()),
        // Replies from peers carry whole objects: allow the frame limit plus attributes.
        peers: Peers::new(config.max_frame_bytes + (1 << 20), timeout),
        pool: BlockingPool::new(config.blocking_threads, config.blocking_queue_limit),
        keylocks: KeyLocks::new(),
        token: AdminToken::new(config.effective_admin_token()),
        tracer,
        counters: Default::default(),
        notify: Default::default(),
        workers: Workers::new(64),
        inflight: Arc::new(Semaphore::new(MAX_INFLIGHT)),
        inflight_limit: MAX_INFLIGHT as u64,
        client_connections: AtomicU64::new(0),
        started: Instant::now(),
        client: tokio::sync::OnceCell::new(),
    });
    node.announce_self();
    Ok(node)
}

async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    http: Option<TcpListener>,
    stop: watch::Receiver<bool>,
) -> Result<(), NodeError> {
    tracing::info!(addr = %node.addr, http = ?node.http_addr, backends = node.backends.len(), "node up");
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(crate::peers::refresh_loop(
        node.clone(),
        stop.clone(),
    )));
    tasks.push(tokio::spawn(maintenance_loop(node.clone(), stop.clone())));
    if let Some(h) = http {
        tasks.push(tokio::spawn(crate::http::serve(
            node.clone(),
            h,
            stop.clone(),
        )));
    }
    let conns = tokio_util::task::TaskTracker::new();
    let mut next_conn = 0u64;
    let mut stop_accept = stop.clone();
    let conn_slots = Arc::new(Semaphore::new(node.config.max_connections.max(1) as usize));
    loop {
        // At the connection limit, stop accepting: new connections wait in the kernel backlog.
        let slot = tokio::select! {
            s = conn_slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = stop_accept.changed() => break,
        };
        tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, peer)) => {
                    next_conn += 1;
                    let (node, stop) = (node.clone(), stop.clone());
                    conns.spawn(async move {
                        let _slot = slot;
                        connection(node, sock, peer, next_conn, stop).await;
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop_accept.changed() => break,
        }
    }
    drop(listener);
    // Connections stop reading new requests and finish the ones in flight.
    conns.close();
    conns.wait().await;
    for t in tasks {
        let _ = t.await;
    }
    shutdown_backends(&node).await;
    tracing::info!(addr = %node.addr, "node stopped");
    Ok(())
}

async fn shutdown_backends(node: &Arc<Node>) {
    for b in node.backends.values() {
        let b = b.clone();
        let r = tokio::task::spawn_blocking(move || {
            b.flush_cache(true)?;
            if let Ok(e) = b.engine() {
                e.sync()?;
            }
            b.disable()
        })
        .await;
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "backend shutdown");
        }
    }
}

/// Cache write-back and data-sort schedules, once a second.
async fn maintenance_loop(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        for b in node.backends.values() {
            let b2 = b.clone();
            let _ = node.pool.run(move || b2.flush_cache(false)).await;
            let due = b.scheduler().due(crate::schedule::now_unix_s());
            if due {
                let compact = b.scheduler().schedule().compact;
                match crate::admin::start_data_sort(&node, b.id(), compact) {
                    Ok(job) => tracing::info!(
                        backend = b.id(),
                        job = job.id,
                        "scheduled data-sort started"
                    ),
                    Err(e) => {
                        tracing::info!(backend = b.id(), error = %e, "scheduled data-sort not started")
                    }
                }
            }
        }
    }
}

async fn connection(
    node: Arc<Node>,
    sock: TcpStream,
    peer: SocketAddr,
    id: u64,
    mut stop: watch::Receiver<bool>,
) {
    node.client_connections.fetch_add(1, Ordering::Relaxed);
    let _ = sock.set_nodelay(true);
    let (r, w) = sock.into_split();
    let max = node
        .config
        .max_frame_bytes
        .saturating_sub(HEADER_SIZE as u64);
    let mut reader = FramedRead::new(r, FrameCodec::new(max));
    let (tx, mut rx) = mpsc::channel::<Frame>(CONN_REPLY_QUEUE);
    let writer = tokio::spawn(async move {
        let mut w = FramedWrite::new(w, FrameCodec::new(u64::MAX));
        while let Some(f) = rx.recv().await {
            if w.send(f).await.is_err() {
                break;
            }
        }
    });
    let ctx = Arc::new(ConnCtx {
        id,
        peer,
        tx,
        authed: AtomicBool::new(false),
    });
    let requests = tokio_util::task::TaskTracker::new();
    loop {
        let next = tokio::select! {
            f = reader.next() => f,
            _ = stop.changed() => break,
        };
        match next {
            None => break,
            Some(Ok(frame)) => {
                if frame.header.has(flags::REPLY) {
                    continue;
                }
                let Ok(permit) = node.inflight.clone().try_acquire_owned() else {
                    let _ = ctx.tx.try_send(Frame::new(
                        frame.header.reply(Status::AGAIN),
                        bytes::Bytes::new(),
                    ));
                    continue;
                };
                let (node, ctx) = (node.clone(), ctx.clone());
                requests.spawn(async move {
                    let _permit = permit;
                    cmd::handle(node, ctx, frame).await;
                });
            }
            Some(Err(e)) => {
                // The header that announced too much is still in the buffer: answer its
                // transaction, then close (the rest of the stream cannot be framed).
                if let Ok(h) = Header::decode(&reader.read_buffer()[..]) {
                    let reply =
                        Frame::new(h.reply(Status::TOO_BIG), bytes::Bytes::from(e.to_string()));
                    let _ = ctx.tx.send(reply).await;
                }
                tracing::info!(%peer, error = %e, "closing connection after a bad frame");
                break;
            }
        }
    }
    requests.close();
    requests.wait().await;
    node.notify.drop_conn(id);
    drop(ctx);
    let _ = writer.await;
    node.client_connections.fetch_sub(1, Ordering::Relaxed);
}
