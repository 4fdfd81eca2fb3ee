//! The monitoring and object HTTP API (axum), one port per node.
//!
//! - `GET /stats`, `/stats/{category}`: `ellipsis_core::stats::NodeStats` JSON;
//! - `GET /metrics`: Prometheus text;
//! - `GET /traces?limit=N`, `/traces/{id}`: React call trees recorded on this node;
//! - `GET|HEAD|PUT|DELETE /objects/{key}`: objects through the client library (works from any
//!   node), with single `Range` requests (206) and the record checksum as ETag;
//! - admin (`Authorization: Bearer <token>`): `POST /admin/backends/{id}/{action}` (the
//!   backend actions, and `cache-sync`: write back every dirty cached object now, as a
//!   cache-sync job), `PUT /admin/backends/{id}/defrag/schedule`, `PUT /admin/backends/{id}/ring-ids`,
//!   `PUT /admin/backends/{id}/delay`, `GET /admin/jobs`, `POST /admin/jobs/{id}/{action}`,
//!   `POST /admin/recovery`; each request, refused or not, writes one audit line.
//!
//! Writes and admin calls need the token (constant-time compare; 401 otherwise, and no token
//! configured means they are refused).
//!
//! Not axum's `serve`: the accept loop is ours so that every limit is explicit. Invariants:
//! at most `http_max_connections` connections (more get 503); request headers must arrive
//! within `http_header_timeout_ms` (slowloris, idle keep-alive); bodies are at most
//! `http_max_body_bytes` (413) and must arrive within `http_body_timeout_ms` (408); a client
//! that stops reading responses is dropped after `send_timeout_ms` without progress; with
//! `http_tls_cert`/`http_tls_key` the port speaks HTTPS only. No name taken from a URL ever
//! becomes a file path: object keys are hashed, ids are parsed as numbers.

// Handlers build `Response`s by value; the helpers' early returns carry one too, and boxing
// them would only add an allocation on error paths.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ellipsis_core::client::Client;
use ellipsis_core::protocol::cmd::backend_control::BackendAction;
use ellipsis_core::protocol::{IoAttr, Status};
use ellipsis_core::Id;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::NodeConfig;
use crate::error::{http_code, NodeError};
use crate::node::Node;
use crate::schedule::Schedule;

/// Longest object key accepted in a URL.
const MAX_KEY_BYTES: usize = 4096;

struct HttpState {
    node: Arc<Node>,
}

type Shared = Arc<HttpState>;

/// The TLS side of the HTTP port, loaded from `http_tls_cert` / `http_tls_key`.
pub type TlsAcceptor = tokio_rustls::TlsAcceptor;

/// Load the PEM certificate chain and key named in the config; `None` when HTTPS is off.
/// Fails (so the node does not start) when a file is missing, empty or unusable.
pub fn load_tls(config: &NodeConfig) -> Result<Option<TlsAcceptor>, NodeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&config.http_tls_cert, &config.http_tls_key) else {
        return Ok(None);
    };
    let bad = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        NodeError::Startup(format!("{what} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("http_tls_cert", cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("http_tls_cert", cert, &e))?;
    if certs.is_empty() {
        return Err(bad("http_tls_cert", cert, &"no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("http_tls_key", key, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| NodeError::Startup(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| NodeError::Startup(format!("TLS certificate and key: {e}")))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(tls))))
}

fn router(state: Shared, body_limit: usize) -> Router {
    Router::new()
        .route("/stats", get(stats_all))
        .route("/stats/{category}", get(stats_category))
        .route("/metrics", get(metrics))
        .route("/traces", get(traces))
        .route("/traces/{id}", get(trace))
        .route(
            "/objects/{key}",
            get(object_get)
                .head(object_get)
                .put(object_put)
                .delete(object_delete),
        )
        .route("/admin/backends/{id}/{action}", post(admin_backend))
        .route("/admin/backends/{id}/defrag/schedule", put(admin_schedule))
        .route("/admin/backends/{id}/ring-ids", put(admin_ring_ids))
        .route("/admin/backends/{id}/delay", put(admin_delay))
        .route("/admin/jobs", get(admin_jobs))
        .route("/admin/jobs/{id}/{action}", post(admin_job_control))
        .route("/admin/recovery", post(admin_recovery))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Serve until `stop` fires: HTTPS only when `tls` is given, plain HTTP otherwise.
///
/// One task per connection, at most `http_max_connections` of them (more get a 503 and are
/// closed); each must send its request headers within `http_header_timeout_ms` (this also
/// ends idle keep-alive connections) and, with TLS, finish its handshake in that time too.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let header_timeout = Duration::from_millis(node.config.http_header_timeout_ms.max(1));
    let send_timeout = (node.config.send_timeout_ms > 0)
        .then(|| Duration::from_millis(node.config.send_timeout_ms));
    let slots = Arc::new(Semaphore::new(
        node.config.http_max_connections.max(1) as usize
    ));
    let app = router(
        Arc::new(HttpState { node: node.clone() }),
        node.config.http_max_body_bytes as usize,
    );
    let conns = tokio_util::task::TaskTracker::new();
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = node.config.http_max_connections,
                "http connection refused: http_max_connections reached");
            if tls.is_none() {
                tokio::spawn(refuse(sock, header_timeout));
            }
            continue;
        };
        // Who is asking, for the audit lines of admin requests.
        let app = app.clone().layer(axum::Extension(HttpPeer(peer)));
        let (tls, stop) = (tls.clone(), stop.clone());
        conns.spawn(async move {
            let _slot = slot;
            let _ = sock.set_nodelay(true);
            match tls {
                None => {
                    let io = StallGuard::new(sock, send_timeout);
                    drive(TokioIo::new(io), app, header_timeout, stop).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(sock)).await {
                        Ok(Ok(s)) => {
                            let io = StallGuard::new(s, send_timeout);
                            drive(TokioIo::new(io), app, header_timeout, stop).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    conns.close();
    conns.wait().await;
}

/// A connection's stream whose writes fail once they have made no progress for `limit`: a
/// client that stops reading its responses cannot hold the connection (and the response it
/// is not reading) for ever.
struct StallGuard<S> {
    inner: S,
    limit: Option<Duration>,
    /// Started when a write first found the socket full; cleared by any progress.
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> StallGuard<S> {
    fn new(inner: S, limit: Option<Duration>) -> StallGuard<S> {
        StallGuard {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Called when the inner write is pending: fail once the stall has lasted `limit`.
    fn pending<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::future::Future;
        let Some(limit) = self.limit else {
            return std::task::Poll::Pending;
        };
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client does not read its responses (send_timeout_ms)",
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for StallGuard<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for StallGuard<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.inner).poll_write(cx, buf) {
            std::task::Poll::Ready(r) => {
                this.stalled = None;
                std::task::Poll::Ready(r)
            }
            std::task::Poll::Pending => this.pending(cx),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match std::pin::Pin::new(&mut this.inner).poll_flush(cx) {
            std::task::Poll::Ready(r) => {
                this.stalled = None;
                std::task::Poll::Ready(r)
            }
            std::task::Poll::Pending => this.pending(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Answer a connection beyond the limit with a 503 (bounded in time) and close it.
async fn refuse(mut sock: tokio::net::TcpStream, wait: Duration) {
    use tokio::io::AsyncWriteExt;
    let body = r#"{"error":"too many HTTP connections (http_max_connections)"}"#;
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(wait, async {
        sock.write_all(reply.as_bytes()).await?;
        sock.shutdown().await
    })
    .await;
}

/// Run one HTTP/1.1 connection until it ends or `stop` fires (then in-flight requests finish).
async fn drive<I>(io: I, app: Router, header_timeout: Duration, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(io, TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The request body, whole: at most `http_max_body_bytes` (413 beyond, refused from the
/// `Content-Length` before reading when it announces more) and within `http_body_timeout_ms`
/// (408 after), so a slow or endless body cannot hold memory or a connection for long.
async fn read_body(st: &HttpState, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    use futures::StreamExt;
    let limit = st.node.config.http_max_body_bytes;
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds {limit} bytes (http_max_body_bytes)"),
        )
    };
    if announced.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let timeout_ms = st.node.config.http_body_timeout_ms;
    let collect = async {
        // Capacity from the announced length (already bounded), not more than 1 MiB up front.
        let mut out = bytes::BytesMut::with_capacity(announced.unwrap_or(0).min(1 << 20) as usize);
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| error(StatusCode::BAD_REQUEST, format!("request body: {e}")))?;
            if (out.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    };
    tokio::time::timeout(Duration::from_millis(timeout_ms), collect)
        .await
        .unwrap_or_else(|_| {
            Err(error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body did not arrive within {timeout_ms} ms (http_body_timeout_ms)"
                ),
            ))
        })
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn status_response(status: Status, message: impl Into<String>) -> Response {
    error(
        StatusCode::from_u16(http_code(status)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        message,
    )
}

fn node_error(e: &NodeError) -> Response {
    status_response(Status::from(e), e.to_string())
}

/// The client address of an HTTP connection (request extension).
#[derive(Clone, Copy, Debug)]
struct HttpPeer(std::net::SocketAddr);

impl HttpPeer {
    fn name(&self) -> String {
        format!("http {}", self.0)
    }
}

/// The token check of an admin request; a refusal is written to the audit log (operation and
/// target, never what was presented).
fn admin_guard(
    st: &HttpState,
    headers: &HeaderMap,
    peer: HttpPeer,
    operation: &str,
    target: &str,
) -> Result<(), Response> {
    require_token(st, headers).inspect_err(|_| {
        crate::auth::audit(
            &peer.name(),
            operation,
            target,
            &Err("no valid token".into()),
        )
    })
}

/// Writes the audit line of an admin request that passed the token check, for an outcome
/// decided in the handler itself (a bad body, an unknown action).
fn audited<T>(peer: HttpPeer, operation: &str, target: &str, r: &Result<T, String>) {
    crate::auth::audit(
        &peer.name(),
        operation,
        target,
        &r.as_ref().map(|_| ()).map_err(Clone::clone),
    );
}

fn require_token(st: &HttpState, headers: &HeaderMap) -> Result<(), Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    st.node
        .token
        .check_bearer(presented)
        .map_err(|e| error(StatusCode::UNAUTHORIZED, e.to_string()))
}

fn json_text(text: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

async fn stats_all(State(st): State<Shared>) -> Response {
    match crate::stats::category_json(&st.node, "") {
        Some(j) => json_text(j),
        None => error(StatusCode::INTERNAL_SERVER_ERROR, "stats"),
    }
}

async fn stats_category(State(st): State<Shared>, Path(category): Path<String>) -> Response {
    match crate::stats::category_json(&st.node, &category) {
        Some(j) => json_text(j),
        None => error(
            StatusCode::NOT_FOUND,
            format!("unknown category {category:?}; try node, commands, io, cache, backends, procfs, workers, routes, defrag"),
        ),
    }
}

async fn metrics(State(st): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::stats::prometheus(&st.node),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct TraceQuery {
    limit: Option<usize>,
}

/// Trees recorded by this node (the tracer may be shared by several nodes of one process).
fn own_trees(node: &Node, limit: usize) -> Vec<react_trace::ReactTree> {
    let Some(t) = &node.tracer else {
        return Vec::new();
    };
    t.recent_where(limit, ("node", &node.addr.to_string()))
}

async fn traces(State(st): State<Shared>, Query(q): Query<TraceQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).min(1000);
    Json(own_trees(&st.node, limit)).into_response()
}

async fn trace(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    let Ok(id) = u64::from_str_radix(id.trim_start_matches("0x"), 16) else {
        return error(StatusCode::BAD_REQUEST, "a trace id is up to 16 hex digits");
    };
    let Some(t) = &st.node.tracer else {
        return error(StatusCode::NOT_FOUND, "tracing is off on this node");
    };
    match t.get_where(id, Some(("node", &st.node.addr.to_string()))) {
        Some(tree) => Json(tree).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no trace {id:016x}")),
    }
}

async fn client(st: &HttpState) -> Result<Arc<Client>, Response> {
    let c = st.node.client().await.map_err(|e| node_error(&e))?;
    // The route table may have changed since the session was made.
    if c.routes().generation == 0 || c.routes().nodes().len() < st.node.known.read().len() {
        let _ = c.refresh_routes().await;
    }
    Ok(c)
}

fn object_id(key: &str) -> Result<Id, Response> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(error(StatusCode::BAD_REQUEST, "key must be 1..=4096 bytes"));
    }
    Ok(Id::for_key(b"", key.as_bytes()))
}

/// A parsed single `Range: bytes=...` header.
#[derive(Clone, Copy, Debug)]
enum RangeSpec {
    From(u64, Option<u64>),
    Suffix(u64),
}

fn parse_range(h: &str) -> Option<RangeSpec> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // several ranges: serve the whole object (allowed by RFC 9110)
    }
    let (a, b) = spec.split_once('-')?;
    if a.is_empty() {
        return b.parse().ok().map(RangeSpec::Suffix);
    }
    let start = a.parse().ok()?;
    let end = if b.is_empty() {
        None
    } else {
        Some(b.parse().ok()?)
    };
    if end.is_some_and(|e| e < start) {
        return None;
    }
    Some(RangeSpec::From(start, end))
}

/// The bytes of one version of an object (all of it or a span) and that version's size and
/// checksum, all from one READ reply: a GET's headers are derived from it alone, so they
/// describe exactly the body sent even while the object is being overwritten.
#[derive(Debug)]
struct Span {
    data: Bytes,
    start: u64,
    total_bytes: u64,
    checksum: u64,
}

/// What a GET can answer.
enum Answer {
    Span(Span),
    /// The range lies outside the object (of this many bytes): 416.
    Unsatisfiable(u64),
}

/// `range` of the whole object `whole` (one READ of all of it).
fn span_of_whole(whole: ellipsis_core::client::ReadResult, range: Option<RangeSpec>) -> Answer {
    let total = whole.data.len() as u64;
    // A cache hit (or a NOCSUM record) carries no checksum: name the bytes as the engine
    // would have, so the ETag still says which version this is.
    let checksum = match whole.attr.checksum {
        0 => eblob::record::data_checksum(&whole.data),
        c => c,
    };
    let (start, end) = match range {
        None => (0, total),
        Some(RangeSpec::From(s, _)) if s >= total => return Answer::Unsatisfiable(total),
        Some(RangeSpec::From(s, e)) => (s, e.map_or(total, |e| e.saturating_add(1).min(total))),
        Some(RangeSpec::Suffix(n)) if n == 0 || total == 0 => return Answer::Unsatisfiable(total),
        Some(RangeSpec::Suffix(n)) => (total - n.min(total), total),
    };
    Answer::Span(Span {
        data: whole.data.slice(start as usize..end as usize),
        start,
        total_bytes: total,
        checksum,
    })
}

/// Read what a GET of `range` sends, from one version of the object.
///
/// The fast path reads only the span; it is taken when the reply proves the span belongs to
/// the version the reply describes (the engine reads bytes, size and checksum in one call).
/// Otherwise (the object is shorter than the span, a suffix whose object changed size between
/// the lookup and the read, or no checksum in the reply) the whole object is read once and the
/// span cut from it. At most three requests, never a loop.
async fn read_answer(
    c: &Client,
    id: &Id,
    range: Option<RangeSpec>,
) -> Result<Answer, ellipsis_core::client::ClientError> {
    // INVALID is how a node answers a span past the end (OutOfRange): read it all instead.
    let out_of_range = |e: &ellipsis_core::client::ClientError| e.status() == Status::INVALID;
    let fast = match range {
        None => None,
        Some(RangeSpec::From(s, e)) => {
            // A zero size reads to the end on the wire.
            let size = e.map_or(0, |e| (e - s).saturating_add(1));
            match c.read(id, s, size).await {
                Ok(r) if r.attr.total_size > s => Some(Span {
                    start: s,
                    total_bytes: r.attr.total_size,
                    checksum: r.attr.checksum,
                    data: r.data,
                }),
                Ok(_) => None,
                Err(e) if out_of_range(&e) => None,
                Err(e) => return Err(e),
            }
        }
        Some(RangeSpec::Suffix(n)) => {
            let (_, info) = c.lookup(id).await?;
            let looked_up = info.attr.total_size;
            let from = looked_up - n.min(looked_up);
            match c.read(id, from, 0).await {
                // Read to the end of a version at least as long as the looked-up one: its
                // last n bytes are inside what was read.
                Ok(r) if n > 0 && r.attr.total_size >= looked_up && r.attr.total_size > 0 => {
                    let total = r.attr.total_size;
                    let len = n.min(total);
                    let skip = (r.data.len() as u64).saturating_sub(len);
                    Some(Span {
                        data: r.data.slice(skip as usize..),
                        start: total - len,
                        total_bytes: total,
                        checksum: r.attr.checksum,
                    })
                }
                Ok(_) => None,
                Err(e) if out_of_range(&e) => None,
                Err(e) => return Err(e),
            }
        }
    };
    match fast {
        Some(span) if span.checksum != 0 => Ok(Answer::Span(span)),
        _ => Ok(span_of_whole(c.read(id, 0, 0).await?, range)),
    }
}

/// The headers of a 200 / 206 answer for `len` bytes at `start` of a `total`-byte object.
fn object_headers(
    partial: bool,
    start: u64,
    len: u64,
    total: u64,
    checksum: u64,
) -> axum::http::response::Builder {
    let mut b = Response::builder()
        .header(header::ETAG, format!("\"{checksum:016x}\""))
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, len);
    if partial {
        b = b.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{total}", start, start + len.saturating_sub(1)),
        );
    }
    b
}

fn unsatisfiable(total: u64) -> Response {
    (
        StatusCode::RANGE_NOT_SATISFIABLE,
        [(header::CONTENT_RANGE, format!("bytes */{total}"))],
    )
        .into_response()
}

async fn object_get(
    State(st): State<Shared>,
    method: Method,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let id = match object_id(&key) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let c = match client(&st).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range);
    if method == Method::HEAD {
        // No body to disagree with: the headers come from a lookup.
        return object_head(&c, &id, range).await;
    }
    let span = match read_answer(&c, &id, range).await {
        Ok(Answer::Span(span)) => span,
        Ok(Answer::Unsatisfiable(total)) => return unsatisfiable(total),
        Err(e) => return status_response(e.status(), e.to_string()),
    };
    let len = span.data.len() as u64;
    object_headers(
        range.is_some(),
        span.start,
        len,
        span.total_bytes,
        span.checksum,
    )
    .body(Body::from(span.data))
    .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn object_head(c: &Client, id: &Id, range: Option<RangeSpec>) -> Response {
    let (_, info) = match c.lookup(id).await {
        Ok(x) => x,
        Err(e) => return status_response(e.status(), e.to_string()),
    };
    let total = info.attr.total_size;
    let (start, len) = match range {
        None => (0, total),
        Some(RangeSpec::From(s, _)) if s >= total => return unsatisfiable(total),
        Some(RangeSpec::From(s, e)) => (s, e.map_or(total, |e| e.min(total - 1) + 1) - s),
        Some(RangeSpec::Suffix(n)) if n == 0 || total == 0 => return unsatisfiable(total),
        Some(RangeSpec::Suffix(n)) => (total - n.min(total), n.min(total)),
    };
    object_headers(range.is_some(), start, len, total, info.attr.checksum)
        .body(Body::empty())
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn object_put(
    State(st): State<Shared>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = require_token(&st, &headers) {
        return r;
    }
    let body = match read_body(&st, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let id = match object_id(&key) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let c = match client(&st).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match c.write(&id, body, IoAttr::default()).await {
        Ok(w) => {
            let etag = w
                .groups
                .iter()
                .find_map(|g| g.info.as_ref().map(|i| i.attr.checksum))
                .unwrap_or(0);
            (
                StatusCode::CREATED,
                [(header::ETAG, format!("\"{etag:016x}\""))],
                Json(serde_json::json!({ "groups": w.ok_groups() })),
            )
                .into_response()
        }
        Err(e) => status_response(e.status(), e.to_string()),
    }
}

async fn object_delete(
    State(st): State<Shared>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = require_token(&st, &headers) {
        return r;
    }
    let id = match object_id(&key) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let c = match client(&st).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match c.remove(&id).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => status_response(e.status(), e.to_string()),
    }
}

async fn admin_backend(
    State(st): State<Shared>,
    axum::Extension(peer): axum::Extension<HttpPeer>,
    Path((id, action)): Path<(u32, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admin_guard(&st, &headers, peer, &action, &format!("backend {id}")) {
        return r;
    }
    if action == "cache-sync" {
        return admin_cache_sync(&st, peer, id).await;
    }
    let action_enum = match action.as_str() {
        "enable" => BackendAction::Enable,
        "disable" => BackendAction::Disable,
        "read-only" => BackendAction::ReadOnly,
        "writable" => BackendAction::Writable,
        "defrag-start" => BackendAction::DefragStart { compact: false },
        "defrag-start-compact" => BackendAction::DefragStart { compact: true },
        "defrag-stop" => BackendAction::DefragStop,
        other => {
            let message = format!("unknown action {other:?}");
            audited::<()>(
                peer,
                &action,
                &format!("backend {id}"),
                &Err(message.clone()),
            );
            return error(StatusCode::NOT_FOUND, message);
        }
    };
    backend_action(&st, peer, id, &action, action_enum).await
}

/// `POST /admin/backends/{id}/cache-sync` (token already checked): write back every dirty
/// cached object of the backend now, as a cache-sync job; answers with the finished job, or
/// `null` when nothing was dirty (no job). Audited.
async fn admin_cache_sync(st: &HttpState, peer: HttpPeer, id: u32) -> Response {
    let node = st.node.clone();
    let r = match node.backend(id) {
        None => Err(NodeError::NoBackend(id)),
        Some(b) => tokio::task::spawn_blocking(move || {
            crate::cache_sync::sync(&node, &b, crate::cache_sync::SyncTrigger::Explicit)
        })
        .await
        .map_err(|e| NodeError::Invalid(format!("cache sync: {e}"))),
    };
    crate::auth::audit(
        &peer.name(),
        "cache-sync",
        &format!("backend {id}"),
        &r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
    );
    match r {
        Ok(job) => Json(job).into_response(),
        Err(e) => node_error(&e),
    }
}

/// Run a backend action for an admin HTTP request (token already checked), audit it, answer.
async fn backend_action(
    st: &HttpState,
    peer: HttpPeer,
    id: u32,
    operation: &str,
    action: BackendAction,
) -> Response {
    let r = crate::admin::backend_action(&st.node, id, action).await;
    crate::auth::audit(
        &peer.name(),
        operation,
        &format!("backend {id}"),
        &r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
    );
    match r {
        Ok(()) => Json(serde_json::json!({ "ok": true })).into_response(),
        Err(e) => node_error(&e),
    }
}

/// Body of `PUT /admin/backends/{id}/ring-ids`.
#[derive(serde::Deserialize)]
struct RingIdsBody {
    /// The backend's new ring ids, 128 hex digits each.
    ids: Vec<Id>,
}

/// Replace a backend's ring ids (persisted in its directory; peers get the new routes).
async fn admin_ring_ids(
    State(st): State<Shared>,
    axum::Extension(peer): axum::Extension<HttpPeer>,
    Path(id): Path<u32>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let parse = |b: &[u8]| {
        let ids = serde_json::from_slice::<RingIdsBody>(b)
            .map_err(|e| format!("ring ids JSON: {e}"))?
            .ids;
        let n = ids.len();
        if n == 0 || n > ellipsis_core::id::MAX_IDS_PER_BACKEND {
            return Err(format!(
                "a backend holds 1..={} ring ids, got {n}",
                ellipsis_core::id::MAX_IDS_PER_BACKEND
            ));
        }
        Ok(BackendAction::SetIds(ids))
    };
    admin_body_action(&st, peer, id, &headers, body, "set-ring-ids", parse).await
}

/// Body of `PUT /admin/backends/{id}/delay`.
#[derive(serde::Deserialize)]
struct DelayBody {
    /// Added to every request the backend serves; 0 removes it.
    delay_ms: u32,
}

/// Set a backend's artificial delay (testing timeouts and slow replicas).
async fn admin_delay(
    State(st): State<Shared>,
    axum::Extension(peer): axum::Extension<HttpPeer>,
    Path(id): Path<u32>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let parse = |b: &[u8]| {
        let d = serde_json::from_slice::<DelayBody>(b).map_err(|e| format!("delay JSON: {e}"))?;
        Ok(BackendAction::SetDelay {
            delay_ms: d.delay_ms,
        })
    };
    admin_body_action(&st, peer, id, &headers, body, "set-delay", parse).await
}

/// The body of an admin request: the token checked and the body read within its bounds, a
/// refusal of either audited (one line) and returned as the response to send.
async fn admin_body(
    st: &HttpState,
    headers: &HeaderMap,
    peer: HttpPeer,
    operation: &str,
    target: &str,
    body: Body,
) -> Result<Bytes, Response> {
    admin_guard(st, headers, peer, operation, target)?;
    read_body(st, headers, body).await.inspect_err(|_| {
        audited::<()>(peer, operation, target, &Err("request body refused".into()));
    })
}

/// An admin endpoint whose JSON body becomes one backend action: token check, bounded body,
/// `parse` (its error is a 400), the action, and one audit line whatever the outcome.
async fn admin_body_action(
    st: &HttpState,
    peer: HttpPeer,
    id: u32,
    headers: &HeaderMap,
    body: Body,
    operation: &'static str,
    parse: impl FnOnce(&[u8]) -> Result<BackendAction, String>,
) -> Response {
    let target = format!("backend {id}");
    let bytes = match admin_body(st, headers, peer, operation, &target, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match parse(&bytes) {
        Ok(action) => backend_action(st, peer, id, operation, action).await,
        Err(e) => {
            audited::<()>(peer, operation, &target, &Err(e.clone()));
            error(StatusCode::BAD_REQUEST, e)
        }
    }
}

async fn admin_schedule(
    State(st): State<Shared>,
    axum::Extension(peer): axum::Extension<HttpPeer>,
    Path(id): Path<u32>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (operation, target) = ("defrag-schedule", format!("backend {id}"));
    let body = match admin_body(&st, &headers, peer, operation, &target, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // The ranges are checked by admin::set_schedule, for BACKEND_CONTROL too.
    let parsed =
        serde_json::from_slice::<Schedule>(&body).map_err(|e| format!("schedule JSON: {e}"));
    let schedule = match parsed {
        Ok(s) => s,
        Err(e) => {
            audited::<()>(peer, operation, &target, &Err(e.clone()));
            return error(StatusCode::BAD_REQUEST, e);
        }
    };
    let r = crate::admin::set_schedule(&st.node, id, schedule);
    crate::auth::audit(
        &peer.name(),
        operation,
        &target,
        &r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
    );
    match r {
        Ok(()) => Json(serde_json::json!({ "ok": true })).into_response(),
        Err(e) => node_error(&e),
    }
}

async fn admin_jobs(
    State(st): State<Shared>,
    axum::Extension(peer): axum::Extension<HttpPeer>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admin_guard(&st, &headers, peer, "job list", "jobs") {
        return r;
    }
    Json(st.node.workers.list()).into_response()
}

async fn admin_job_control(
    State(st): State<Shared>,
    axum::Extension(peer): axum::Extension<HttpPeer>,
    Path((id, action)): Path<(u64, String)>,
    headers: HeaderMap,
) -> Response {
    let (operation, target) = (format!("job {action}"), format!("job {id}"));
    if let Err(r) = admin_guard(&st, &headers, peer, &operation, &target) {
        return r;
    }
    let w = &st.node.workers;
    let r = match action.as_str() {
        // A fanned-out recovery is cancelled on every node it runs on.
        "cancel" if !w.remote_jobs(id).is_empty() => {
            let r = crate::recovery::cancel(&st.node, id).await;
            crate::auth::audit(
                &peer.name(),
                "job cancel",
                &format!("job {id} and its fanned-out jobs"),
                &r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
            );
            return match r {
                Ok(j) => Json(j).into_response(),
                Err(e) => node_error(&e),
            };
        }
        "cancel" => w.cancel(id),
        "pause" => w.pause(id),
        "resume" => w.resume(id),
        other => {
            let message = format!("unknown job action {other:?}");
            audited::<()>(peer, &operation, &target, &Err(message.clone()));
            return error(StatusCode::NOT_FOUND, message);
        }
    };
    crate::auth::audit(
        &peer.name(),
        &operation,
        &target,
        &r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
    );
    match r {
        Ok(()) => Json(w.get(id)).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

async fn admin_recovery(
    State(st): State<Shared>,
    axum::Extension(peer): axum::Extension<HttpPeer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match admin_body(&st, &headers, peer, "recovery", "recovery", body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req: crate::recovery::RecoveryRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let message = format!("recovery JSON: {e}");
            audited::<()>(peer, "recovery", "recovery", &Err(message.clone()));
            return error(StatusCode::BAD_REQUEST, message);
        }
    };
    let target = format!("{:?} groups {:?}", req.kind, req.groups);
    let r = crate::recovery::start(&st.node, req).await;
    crate::auth::audit(
        &peer.name(),
        "recovery",
        &target,
        &r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
    );
    match r {
        Ok(job) => (StatusCode::ACCEPTED, Json(job)).into_response(),
        Err(e) => node_error(&e),
    }
}
