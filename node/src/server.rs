//! The node's entry point: open backends, serve the protocol and HTTP, run background loops,
//! shut down gracefully.
//!
//! Not request logic (`cmd`). Invariants: every connection has a bounded reply queue and every
//! request holds one of `max_inflight` permits (a full node answers AGAIN at once instead of
//! queueing without bound), at most `max_requests_per_connection` of them per connection; a
//! frame larger than `max_frame_bytes` gets a TOO_BIG reply and its connection is closed, other
//! connections are unaffected. Bad clients cost bounded resources for bounded time: a frame
//! must arrive whole within `frame_read_timeout_ms` of its first byte (slowloris, half-open),
//! an unused connection is closed after `idle_timeout_ms`, a client that does not read its
//! replies is dropped after `send_timeout_ms` without write progress (which fails its pending
//! requests and frees their permits), and a connection beyond `max_connections` gets EAGAIN
//! with the reason and is closed. A small frame's buffer grows as its bytes arrive; a frame
//! with more than 64 KiB of payload is received into one buffer of its announced size, taken
//! from the node-wide `receive_buffer_bytes` before any more of it is read (the connection
//! waits for room; a client that then trickles its bytes still meets the frame read timeout,
//! and holds room only that long). On shutdown the listeners stop, in-flight requests finish, dirty
//! cache objects are written back and every engine is synced and closed.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ellipsis_core::protocol::{
    flags, Command, Frame, FrameCodec, FrameWriter, Header, Status, HEADER_SIZE,
};

use crate::receive_buffer::{Room, LARGE_FRAME_BYTES};
use parking_lot::RwLock;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::auth::AdminToken;
use crate::backend::Backend;
use crate::cmd::{self, ConnCtx};
use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::keylock::KeyLocks;
use crate::node::Node;
use crate::peers::Peers;
use crate::pool::BlockingPool;
use crate::schedule::{Clock, SystemClock};
use crate::worker::Workers;
use crate::write_queue::WriteQueue;

/// Reply frames queued per connection.
const CONN_REPLY_QUEUE: usize = 1024;
/// Requests handled at once per node (network side).
const MAX_INFLIGHT: usize = 4096;
/// Connections beyond `max_connections` being answered at once (each holds a socket briefly).
const REFUSALS_AT_ONCE: usize = 64;
/// Longest wait for a refused connection's first request.
const REFUSE_WAIT_MS: u64 = 1_000;

/// A started node.
#[derive(Debug)]
pub struct RunningNode {
    /// Protocol address (announced in route lists).
    pub addr: SocketAddr,
    /// Every bound protocol address, in `listen` order.
    pub listen_addrs: Vec<SocketAddr>,
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

/// What a node is started with besides its configuration: the process's handles and the
/// seams tests inject through. `Default` is production: no tracer, the system clock, no faults.
#[derive(Clone, Default)]
pub struct StartOptions {
    /// The process's react-trace handle, if one is installed.
    pub tracer: Option<react_trace::Tracer>,
    /// The clock schedules read (`None`: the system clock).
    pub clock: Option<Arc<dyn Clock>>,
    /// An IO hook every backend engine consults (fault injection; `None` in production).
    pub engine_faults: Option<Arc<dyn eblob::FaultInjector>>,
}

impl std::fmt::Debug for StartOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartOptions")
            .field("tracer", &self.tracer.is_some())
            .field("clock", &self.clock)
            .field("engine_faults", &self.engine_faults)
            .finish()
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
        let options = StartOptions {
            tracer: install_tracer(&config)?,
            ..StartOptions::default()
        };
        let (node, tls) = build(
            &config,
            config.advertised(listener.local_addr()?),
            http.as_ref(),
            options,
        )
        .await?;
        serve(node, vec![listener], http, tls, stop_rx).await
    }
}

/// A react-trace recorder sized by `config`, installed as the process's `tracing`
/// subscriber so that the node's call trees are recorded (`/traces`). `None` when the
/// embedding program installed a subscriber of its own: it then passes its tracer to
/// [`start`] instead (a process has one subscriber).
fn install_tracer(config: &NodeConfig) -> Result<Option<react_trace::Tracer>, NodeError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let tracer = react_trace::Tracer::new(react_trace::TracerConfig {
        sampling_rate: config.trace_sampling_rate,
        ring_capacity: config.trace_ring_size as usize,
        ..Default::default()
    })
    .map_err(|e| NodeError::Startup(format!("tracer: {e}")))?;
    match tracing_subscriber::registry()
        .with(tracer.layer())
        .try_init()
    {
        Ok(()) => Ok(Some(tracer)),
        Err(_) => {
            tracing::info!("a tracing subscriber is already installed: no call trees recorded");
            Ok(None)
        }
    }
}

/// Bind the configured addresses (port 0 allowed), open the backends and serve in the
/// background. `tracer` is the process's react-trace handle, if one is installed.
pub async fn start(
    config: NodeConfig,
    tracer: Option<react_trace::Tracer>,
) -> Result<RunningNode, NodeError> {
    start_with(
        config,
        StartOptions {
            tracer,
            ..StartOptions::default()
        },
    )
    .await
}

/// [`start`] with every [`StartOptions`] seam (injected clock, engine IO hook).
pub async fn start_with(
    config: NodeConfig,
    options: StartOptions,
) -> Result<RunningNode, NodeError> {
    let mut listeners = Vec::with_capacity(config.listen.len().max(1));
    for a in &config.listen {
        listeners.push(TcpListener::bind(a).await?);
    }
    if listeners.is_empty() {
        listeners.push(TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 1025))).await?);
    }
    let http = match config.http_listen {
        Some(a) => Some(TcpListener::bind(a).await?),
        None => None,
    };
    // The first listen address is the one announced (unless `advertise_addr` says otherwise).
    let first = listeners.first().map(TcpListener::local_addr).transpose()?;
    let (node, tls) = build(
        &config,
        config.advertised(first.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 1025)))),
        http.as_ref(),
        options,
    )
    .await?;
    let (stop, stop_rx) = watch::channel(false);
    let addr = node.addr;
    let http_addr = node.http_addr;
    let listen_addrs = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<Result<_, _>>()?;
    let task = tokio::spawn(serve(node.clone(), listeners, http, tls, stop_rx));
    Ok(RunningNode {
        addr,
        listen_addrs,
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
    options: StartOptions,
) -> Result<(Arc<Node>, Option<crate::http::TlsAcceptor>), NodeError> {
    let clock: Arc<dyn Clock> = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
    config
        .validate()
        .map_err(|e| NodeError::Startup(e.to_string()))?;
    // Before the backends open: a bad certificate must stop the start, not a running node.
    let tls = crate::http::load_tls(config)?;
    let mut backends = BTreeMap::new();
    for (i, bc) in config.backends.iter().enumerate() {
        let bc = bc.clone();
        // Spreads SCHEDULED data-sorts over the window: the whole address (hosts of a fleet
        // listen on one port) and the backend's place; Backend::open mixes in its ring ids.
        let seed = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (addr, i).hash(&mut h);
            h.finish()
        };
        // Opening runs the startup check: blocking work.
        let (clock, faults) = (clock.clone(), options.engine_faults.clone());
        let b = tokio::task::spawn_blocking(move || Backend::open(bc, seed, clock, faults))
            .await
            .map_err(|e| NodeError::Startup(e.to_string()))??;
        backends.insert(b.id(), Arc::new(b));
    }
    let http_addr = match http {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let timeout = Duration::from_millis(config.wait_timeout_ms.max(1));
    let write_queues = backends
        .keys()
        .map(|&id| (id, WriteQueue::new(config.blocking_queue_limit as usize)))
        .collect();
    let node = Arc::new(Node {
        config: config.clone(),
        addr,
        http_addr,
        backends,
        routes: RwLock::new(ellipsis_core::RouteTable::new()),
        route_changes: watch::channel(0).0,
        known: RwLock::new(BTreeMap::new()),
        // Replies from peers carry whole objects: allow the frame limit plus attributes.
        peers: Peers::new(config.max_frame_bytes + (1 << 20), timeout),
        pool: BlockingPool::new(config.blocking_threads, config.blocking_queue_limit),
        write_queues,
        keylocks: KeyLocks::new(),
        token: AdminToken::new(config.effective_admin_token()),
        tracer: options.tracer,
        counters: Default::default(),
        notify: Default::default(),
        workers: Workers::new(64),
        inflight: Arc::new(Semaphore::new(MAX_INFLIGHT)),
        inflight_limit: MAX_INFLIGHT as u64,
        inflight_refused: AtomicU64::new(0),
        receive_buffer: crate::receive_buffer::ReceiveBuffer::new(config.receive_buffer_bytes),
        client_connections: AtomicU64::new(0),
        started: Instant::now(),
        client: tokio::sync::OnceCell::new(),
        clock,
        maintenance_passes: AtomicU64::new(0),
    });
    node.announce_self();
    Ok((node, tls))
}

/// The next connection on any of `listeners`.
async fn accept_any(listeners: &[TcpListener]) -> std::io::Result<(TcpStream, SocketAddr)> {
    if let [one] = listeners {
        return one.accept().await;
    }
    let accepts = listeners.iter().map(|l| Box::pin(l.accept()));
    futures::future::select_all(accepts).await.0
}

async fn serve(
    node: Arc<Node>,
    listeners: Vec<TcpListener>,
    http: Option<TcpListener>,
    tls: Option<crate::http::TlsAcceptor>,
    stop: watch::Receiver<bool>,
) -> Result<(), NodeError> {
    tracing::info!(addr = %node.addr, http = ?node.http_addr, backends = node.backends.len(), "node up");
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(crate::peers::refresh_loop(
        node.clone(),
        stop.clone(),
    )));
    tasks.push(tokio::spawn(maintenance_loop(node.clone(), stop.clone())));
    tasks.push(tokio::spawn(crate::cmd::notify::follow_routes(
        node.clone(),
        stop.clone(),
    )));
    if let Some(h) = http {
        tasks.push(tokio::spawn(crate::http::serve(
            node.clone(),
            h,
            tls,
            stop.clone(),
        )));
    }
    let conns = tokio_util::task::TaskTracker::new();
    let mut next_conn = 0u64;
    let mut stop_accept = stop.clone();
    let limit = node.config.max_connections.max(1);
    let conn_slots = Arc::new(Semaphore::new(limit as usize));
    // Refusals in progress; beyond this, excess connections are closed without a word.
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let refuse_wait = Duration::from_millis(match node.config.frame_read_timeout_ms {
        0 => REFUSE_WAIT_MS,
        t => t.min(REFUSE_WAIT_MS),
    });
    loop {
        let (sock, peer) = tokio::select! {
            r = accept_any(&listeners) => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop_accept.changed() => break,
        };
        let Ok(slot) = conn_slots.clone().try_acquire_owned() else {
            // At the limit: tell the client why (its first request gets EAGAIN) and close,
            // rather than leave it hanging in the kernel backlog.
            if let Ok(p) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    let _p = p;
                    refuse(sock, peer, limit, refuse_wait).await;
                });
            }
            continue;
        };
        next_conn += 1;
        let (node, stop) = (node.clone(), stop.clone());
        conns.spawn(async move {
            let _slot = slot;
            connection(node, sock, peer, next_conn, stop).await;
        });
    }
    drop(listeners);
    // A paused iterator or a recovery would hold its request (and so the shutdown) open.
    node.workers.cancel_all();
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
        let (node, b) = (node.clone(), b.clone());
        let r = tokio::task::spawn_blocking(move || {
            crate::cache_sync::sync(&node, &b, crate::cache_sync::SyncTrigger::Shutdown);
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

/// Cache write-back and data-sort schedules (TIMED, SCHEDULED by the node's clock; AUTO by the
/// engine's rotation count), once a second.
async fn maintenance_loop(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        for b in node.backends.values() {
            // A thread of its own, not the engine-call pool: a throttled write-back rests,
            // and must not hold a pool slot while it does.
            let (n2, b2) = (node.clone(), b.clone());
            let _ = tokio::task::spawn_blocking(move || {
                crate::cache_sync::sync(&n2, &b2, crate::cache_sync::SyncTrigger::Periodic)
            })
            .await;
            start_due_data_sort(&node, b);
        }
        node.maintenance_passes.fetch_add(1, Ordering::SeqCst);
    }
}

/// Starts backend `b`'s data-sort if its schedule says so now.
fn start_due_data_sort(node: &Arc<Node>, b: &Arc<Backend>) {
    use crate::admin::SortTrigger;
    let (mode, compact) = {
        let s = b.scheduler();
        (s.schedule().mode, s.schedule().compact)
    };
    let trigger = match mode {
        crate::config::DefragMode::Auto => {
            let Ok(engine) = b.engine() else { return };
            let stats = engine.stats();
            if stats.read_only_reason.is_some() || b.sort_job().is_some() {
                // Not now; the rotations stay counted and are looked at on a later pass.
                return;
            }
            match b.auto_sort_wanted(&stats) {
                Some(rotations) => SortTrigger::Auto { rotations },
                None => return,
            }
        }
        crate::config::DefragMode::None => return,
        _ => {
            if !b.scheduler().due(node.clock.now_unix_s()) {
                return;
            }
            SortTrigger::Schedule { compact }
        }
    };
    match crate::admin::start_data_sort_by(node, b.id(), trigger) {
        Ok(job) => tracing::info!(
            backend = b.id(),
            job = job.id,
            ?mode,
            "data-sort started by its schedule"
        ),
        Err(e) => {
            tracing::info!(backend = b.id(), error = %e, ?mode, "scheduled data-sort not started")
        }
    }
}

/// Limits of one protocol connection, from the config (`None` = no limit).
#[derive(Clone, Copy, Debug)]
struct ConnLimits {
    /// Largest payload accepted.
    max_payload_bytes: u64,
    /// Time allowed for one frame, from its first byte.
    frame_read: Option<Duration>,
    /// Time without traffic after which an unused connection is closed.
    idle: Option<Duration>,
    /// Time without write progress after which a non-reading client is dropped.
    send: Option<Duration>,
    /// Requests in flight on the connection.
    max_requests: usize,
}

impl ConnLimits {
    fn new(config: &NodeConfig) -> ConnLimits {
        let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
        ConnLimits {
            max_payload_bytes: config.max_frame_bytes.saturating_sub(HEADER_SIZE as u64),
            frame_read: ms(config.frame_read_timeout_ms),
            idle: ms(config.idle_timeout_ms),
            send: ms(config.send_timeout_ms),
            max_requests: config.max_requests_per_connection.max(1) as usize,
        }
    }
}

/// Answer the first request of a connection beyond `max_connections` with EAGAIN and a message
/// naming the limit, then close. Waits at most `wait` for that request: a refused client must
/// not hold the socket either.
async fn refuse(mut sock: TcpStream, peer: SocketAddr, limit: u32, wait: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = [0u8; HEADER_SIZE];
    let answered = tokio::time::timeout(wait, async {
        sock.read_exact(&mut head).await.ok()?;
        let h = Header::decode(&head).ok()?;
        let msg =
            format!("too many connections: this node serves at most {limit} (max_connections)");
        let mut reply = h.reply(Status::AGAIN);
        reply.size = msg.len() as u64;
        sock.write_all(&reply.encode()).await.ok()?;
        sock.write_all(msg.as_bytes()).await.ok()?;
        sock.shutdown().await.ok()
    })
    .await;
    tracing::warn!(%peer, limit, answered = matches!(answered, Ok(Some(()))), "connection refused: max_connections reached");
}

/// The socket's write half, recording when bytes last left (the send-stall clock).
struct ProgressWriter {
    inner: tokio::net::tcp::OwnedWriteHalf,
    progress: Arc<AtomicU64>,
    epoch: Instant,
}

impl ProgressWriter {
    fn mark(&self) {
        self.progress
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl tokio::io::AsyncWrite for ProgressWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.mark();
        }
        r
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.mark();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl ellipsis_core::protocol::SendFile for ProgressWriter {
    fn can_send_file(&self) -> bool {
        self.inner.can_send_file()
    }

    fn poll_send_file(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_send_file(cx, file, offset, len);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.mark();
        }
        r
    }
}

/// Write queued replies until the queue closes, the socket fails, or the client stops reading
/// for `send_timeout` (then the queue is dropped, which fails every pending send of the
/// connection's requests at once and frees their in-flight permits).
async fn write_replies(
    w: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Frame>,
    send_timeout: Option<Duration>,
    peer: SocketAddr,
) {
    let epoch = Instant::now();
    let progress = Arc::new(AtomicU64::new(0));
    let mut w = FrameWriter::new(
        ProgressWriter {
            inner: w,
            progress: progress.clone(),
            epoch,
        },
        u64::MAX,
    );
    while let Some(first) = rx.recv().await {
        // Replies already queued go out in one write (one syscall for many small replies
        // under pipelining); the writer writes past its buffer boundary, so batches stay bounded.
        // One yield to the scheduler before the write lets request tasks that are ready now
        // (a write-queue batch finishing wakes many at once) queue their replies too: on
        // loopback a send costs the whole TCP path of both ends, so fewer, larger sends are
        // what keeps a busy node's CPU for requests. An idle node pays one scheduler turn.
        let batch = async {
            w.feed(first).await?;
            while let Ok(f) = rx.try_recv() {
                w.feed(f).await?;
            }
            tokio::task::yield_now().await;
            while let Ok(f) = rx.try_recv() {
                w.feed(f).await?;
            }
            w.flush().await
        };
        let Some(limit) = send_timeout else {
            if batch.await.is_err() {
                return;
            }
            continue;
        };
        progress.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        let mut batch = std::pin::pin!(batch);
        loop {
            let last = epoch + Duration::from_millis(progress.load(Ordering::Relaxed));
            tokio::select! {
                r = &mut batch => {
                    if r.is_err() {
                        return;
                    }
                    break;
                }
                _ = tokio::time::sleep_until((last + limit).into()) => {
                    let last = epoch + Duration::from_millis(progress.load(Ordering::Relaxed));
                    if last.elapsed() >= limit {
                        tracing::info!(%peer, stalled_ms = last.elapsed().as_millis() as u64,
                            "closing connection: the client does not read its replies");
                        return;
                    }
                }
            }
        }
    }
}

/// Bytes to read at a time; a frame's buffer grows by this much as its bytes arrive, so a
/// header announcing a large payload does not reserve the payload up front.
const READ_CHUNK: usize = 64 << 10;
/// Read buffer of a connection between frames.
const IDLE_READ_BYTES: usize = 4 << 10;

/// What ended a connection (for the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    Eof,
    ReadError,
    BadFrame,
    SlowFrame,
    Idle,
    NotReading,
    Shutdown,
}

async fn connection(
    node: Arc<Node>,
    sock: TcpStream,
    peer: SocketAddr,
    id: u64,
    mut stop: watch::Receiver<bool>,
) {
    use tokio::io::AsyncReadExt;
    node.client_connections.fetch_add(1, Ordering::Relaxed);
    let limits = ConnLimits::new(&node.config);
    let _ = sock.set_nodelay(true);
    let (mut r, w) = sock.into_split();
    let mut codec = FrameCodec::new(limits.max_payload_bytes);
    let (tx, rx) = mpsc::channel::<Frame>(CONN_REPLY_QUEUE);
    let writer = tokio::spawn(write_replies(w, rx, limits.send, peer));
    let ctx = Arc::new(ConnCtx {
        id,
        peer,
        tx,
        authed: AtomicBool::new(false),
    });
    let requests = tokio_util::task::TaskTracker::new();
    let mut buf = bytes::BytesMut::new();
    // When the frame now in `buf` began (None while `buf` is empty).
    let mut frame_started: Option<Instant> = None;
    let mut last_activity = Instant::now();
    // A NOTIFY watch is silent by nature: such connections are never idle-closed.
    let mut watching = false;
    // The trace of the frame now arriving, opened as soon as its header is in.
    let mut arriving: Option<cmd::Arrival> = None;
    // A large frame arriving into a buffer of its own (`buf` is empty meanwhile), and one
    // that has arrived whole, with the receive-buffer room each holds.
    let mut large: Option<LargeFrame> = None;
    let mut large_done: Option<(Frame, Room, Option<cmd::ArrivalHashes>)> = None;
    let reason = 'conn: loop {
        // Hand over every complete frame in the buffer.
        loop {
            let header_in = (arriving.is_none() && buf.len() >= HEADER_SIZE)
                .then(|| Header::decode(&buf).ok())
                .flatten();
            if let Some(h) = header_in {
                if !h.has(flags::REPLY) {
                    arriving = Some(cmd::Arrival::begin(&node, &h));
                }
            }
            let (next, room, arrived) = match large_done.take() {
                Some((frame, room, arrived)) => (Ok(Some(frame)), Some(room), arrived),
                None => (
                    complete_frame(&mut codec, limits.max_payload_bytes, &mut buf),
                    None,
                    None,
                ),
            };
            match next {
                Ok(Some(frame)) => {
                    frame_started = (!buf.is_empty()).then(Instant::now);
                    let arrival = arriving.take();
                    if frame.header.has(flags::REPLY) {
                        continue;
                    }
                    let arrival =
                        arrival.unwrap_or_else(|| cmd::Arrival::begin(&node, &frame.header));
                    watching |= frame.header.cmd == Command::Notify;
                    let permit = if requests.len() < limits.max_requests {
                        node.inflight.clone().try_acquire_owned().ok()
                    } else {
                        None
                    };
                    let Some(permit) = permit else {
                        node.inflight_refused.fetch_add(1, Ordering::Relaxed);
                        let _ = ctx.tx.try_send(Frame::new(
                            frame.header.reply(Status::AGAIN),
                            bytes::Bytes::new(),
                        ));
                        continue;
                    };
                    let (node, ctx) = (node.clone(), ctx.clone());
                    requests.spawn(async move {
                        let _permit = permit;
                        // A large payload's room is given back when its request is done.
                        let _room = room;
                        cmd::handle(node, ctx, frame, arrival, arrived).await;
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    // The header that announced too much is still in the buffer: answer its
                    // transaction, then close (the rest of the stream cannot be framed).
                    if let Ok(h) = Header::decode(&buf) {
                        let reply =
                            Frame::new(h.reply(Status::TOO_BIG), bytes::Bytes::from(e.to_string()));
                        let _ = ctx.tx.send(reply).await;
                    }
                    tracing::info!(%peer, error = %e, "closing connection after a bad frame");
                    break 'conn CloseReason::BadFrame;
                }
            }
        }
        // A large frame whose header is in: its payload goes into one buffer of exactly its
        // size, once the node has room for it. Waiting for room is the node's doing, not the
        // client's: the frame's clock restarts when it has waited (so this comes before the
        // deadline is computed).
        if large.is_none() {
            if let Some(header) = large_frame_header(&buf, limits.max_payload_bytes) {
                let (room, waited) = tokio::select! {
                    r = node.receive_buffer.reserve(header.size) => r,
                    _ = ctx.tx.closed() => break CloseReason::NotReading,
                    _ = stop.changed() => break CloseReason::Shutdown,
                };
                if waited {
                    frame_started = Some(Instant::now());
                }
                let mut body = Vec::with_capacity(header.size as usize);
                body.extend_from_slice(&buf[HEADER_SIZE..]);
                buf = bytes::BytesMut::new();
                let mut hash = cmd::ArrivalHash::for_frame(&header);
                if let Some(h) = hash.as_mut() {
                    h.feed(&body);
                }
                large = Some(LargeFrame {
                    header,
                    body,
                    room,
                    hash,
                });
            }
        }
        let deadline = match (frame_started, limits.frame_read, limits.idle) {
            (Some(t), Some(limit), _) => Some(t + limit),
            (None, _, Some(idle)) if !watching => Some(last_activity + idle),
            _ => None,
        };
        let timer = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        // Between frames a connection keeps only a small buffer (thousands of idle clients
        // cost little); it grows by READ_CHUNK while a small frame is arriving.
        if buf.is_empty() {
            if buf.capacity() > IDLE_READ_BYTES {
                buf = bytes::BytesMut::new();
            }
            buf.reserve(IDLE_READ_BYTES);
        } else {
            buf.reserve(READ_CHUNK);
        }
        let buffered_bytes = buf.len() + large.as_ref().map_or(0, |l| l.body.len());
        let read = async {
            match large.as_mut() {
                // Its spare capacity is exactly the rest of the frame: no byte of the next
                // frame is read into it.
                Some(l) => r.read_buf(&mut l.body).await,
                None => r.read_buf(&mut buf).await,
            }
        };
        tokio::select! {
            n = read => match n {
                Ok(0) => break CloseReason::Eof,
                Ok(_) => {
                    last_activity = Instant::now();
                    frame_started.get_or_insert(last_activity);
                    if let Some(l) = large.as_mut() {
                        // Hashed now, while the bytes just read are in the CPU's cache.
                        if let Some(h) = l.hash.as_mut() {
                            h.feed(&l.body);
                        }
                    }
                    if large.as_ref().is_some_and(|l| l.body.len() as u64 == l.header.size) {
                        if let Some(l) = large.take() {
                            frame_started = None;
                            let arrived = l.hash.and_then(cmd::ArrivalHash::finish);
                            large_done = Some((Frame::new(l.header, l.body), l.room, arrived));
                        }
                    }
                }
                Err(_) => break CloseReason::ReadError,
            },
            _ = timer => {
                if frame_started.is_some() {
                    tracing::info!(%peer, buffered_bytes, timeout_ms = node.config.frame_read_timeout_ms,
                        "closing connection: a frame did not arrive in time");
                    break CloseReason::SlowFrame;
                }
                if requests.is_empty() {
                    tracing::debug!(%peer, "closing idle connection");
                    break CloseReason::Idle;
                }
                // Busy with requests: not idle; count from now.
                last_activity = Instant::now();
            }
            _ = ctx.tx.closed() => break CloseReason::NotReading,
            _ = stop.changed() => break CloseReason::Shutdown,
        }
    };
    drop(r);
    tracing::debug!(%peer, ?reason, "connection closed");
    requests.close();
    requests.wait().await;
    node.notify.drop_conn(id);
    drop(ctx);
    let _ = writer.await;
    node.client_connections.fetch_sub(1, Ordering::Relaxed);
}

/// A frame whose payload arrives into a buffer of its own size.
struct LargeFrame {
    header: Header,
    body: Vec<u8>,
    room: Room,
    /// Its data's chunk hashes, taken as it arrives if it is a write that wants them.
    hash: Option<cmd::ArrivalHash>,
}

/// The header at the front of `buf` if it starts a large frame (payload above
/// [`LARGE_FRAME_BYTES`], within the limit) that has not arrived whole yet.
fn large_frame_header(buf: &[u8], max_payload_bytes: u64) -> Option<Header> {
    if buf.len() < HEADER_SIZE {
        return None;
    }
    let h = Header::decode(&buf[..HEADER_SIZE]).ok()?;
    let have = (buf.len() - HEADER_SIZE) as u64;
    (h.size > LARGE_FRAME_BYTES && h.size <= max_payload_bytes && have < h.size).then_some(h)
}

/// The next whole frame in `buf`, if it is all there. Decodes only complete frames (or a
/// header announcing too much), so the codec never reserves a payload that has not arrived.
fn complete_frame(
    codec: &mut FrameCodec,
    max_payload_bytes: u64,
    buf: &mut bytes::BytesMut,
) -> Result<Option<Frame>, ellipsis_core::protocol::ProtocolError> {
    use tokio_util::codec::Decoder;
    if buf.len() < HEADER_SIZE {
        return Ok(None);
    }
    let h = Header::decode(&buf[..HEADER_SIZE])?;
    let have = (buf.len() - HEADER_SIZE) as u64;
    if have < h.size && h.size <= max_payload_bytes {
        return Ok(None);
    }
    codec.decode(buf)
}
