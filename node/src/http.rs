//! The monitoring and object HTTP API (axum), one port per node.
//!
//! - `GET /stats`, `/stats/{category}`: `ellipsis_core::stats::NodeStats` JSON;
//! - `GET /metrics`: Prometheus text;
//! - `GET /traces?limit=N`, `/traces/{id}`: React call trees recorded on this node;
//! - `GET|HEAD|PUT|DELETE /objects/{key}`: objects through the client library (works from any
//!   node), with single `Range` requests (206) and the record checksum as ETag;
//! - admin (`Authorization: Bearer <token>`): `POST /admin/backends/{id}/{action}`,
//!   `PUT /admin/backends/{id}/defrag/schedule`, `GET /admin/jobs`.
//!
//! Writes and admin calls need the token (constant-time compare; 401 otherwise, and no token
//! configured means they are refused). Bodies are bounded by `max_frame_bytes`.

// Handlers build `Response`s by value; the helpers' early returns carry one too, and boxing
// them would only add an allocation on error paths.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

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
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::{http_code, NodeError};
use crate::node::Node;
use crate::schedule::Schedule;

/// Longest object key accepted in a URL.
const MAX_KEY_BYTES: usize = 4096;

struct HttpState {
    node: Arc<Node>,
}

type Shared = Arc<HttpState>;

/// Serve until `stop` fires.
pub async fn serve(node: Arc<Node>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let limit = node.config.max_frame_bytes as usize;
    let state = Arc::new(HttpState { node });
    let app = Router::new()
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
        .route("/admin/jobs", get(admin_jobs))
        .route("/admin/jobs/{id}/{action}", post(admin_job_control))
        .route("/admin/recovery", post(admin_recovery))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state);
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(error = %e, "http server failed");
    }
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
            format!("unknown category {category:?}; try commands, io, cache, backends, procfs, workers, routes"),
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
    let me = node.addr.to_string();
    t.recent(usize::MAX)
        .into_iter()
        .filter(|tree| tree.annotations.get("node").and_then(|v| v.as_str()) == Some(me.as_str()))
        .take(limit)
        .collect()
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
    match t.get(id) {
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
    let (_, info) = match c.lookup(&id).await {
        Ok(x) => x,
        Err(e) => return status_response(e.status(), e.to_string()),
    };
    let total = info.attr.total_size;
    let etag = format!("\"{:016x}\"", info.attr.checksum);
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range);
    let (start, len, partial) = match range {
        None => (0, total, false),
        Some(RangeSpec::Suffix(n)) => {
            let n = n.min(total);
            (total - n, n, true)
        }
        Some(RangeSpec::From(s, e)) => {
            if s >= total {
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{total}"))],
                )
                    .into_response();
            }
            let end = e.map_or(total - 1, |e| e.min(total - 1));
            (s, end - s + 1, true)
        }
    };
    let mut b = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, len);
    if partial {
        b = b.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{total}", start, start + len.saturating_sub(1)),
        );
    }
    if method == Method::HEAD {
        return b
            .body(Body::empty())
            .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
    }
    // A zero-size range read means "to the end" on the wire: ask for the exact span.
    let data = if len == 0 {
        Bytes::new()
    } else {
        match c.read(&id, start, len).await {
            Ok(r) => r.data,
            Err(e) => return status_response(e.status(), e.to_string()),
        }
    };
    b.body(Body::from(data))
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn object_put(
    State(st): State<Shared>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
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
    Path((id, action)): Path<(u32, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = require_token(&st, &headers) {
        crate::auth::audit(
            "http",
            &action,
            &format!("backend {id}"),
            &Err("no valid token".into()),
        );
        return r;
    }
    let action_enum = match action.as_str() {
        "enable" => BackendAction::Enable,
        "disable" => BackendAction::Disable,
        "read-only" => BackendAction::ReadOnly,
        "writable" => BackendAction::Writable,
        "defrag-start" => BackendAction::DefragStart { compact: false },
        "defrag-start-compact" => BackendAction::DefragStart { compact: true },
        "defrag-stop" => BackendAction::DefragStop,
        other => return error(StatusCode::NOT_FOUND, format!("unknown action {other:?}")),
    };
    let r = crate::admin::backend_action(&st.node, id, action_enum).await;
    crate::auth::audit(
        "http",
        &action,
        &format!("backend {id}"),
        &r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
    );
    match r {
        Ok(()) => Json(serde_json::json!({ "ok": true })).into_response(),
        Err(e) => node_error(&e),
    }
}

async fn admin_schedule(
    State(st): State<Shared>,
    Path(id): Path<u32>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = require_token(&st, &headers) {
        return r;
    }
    let schedule: Schedule = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("schedule JSON: {e}")),
    };
    if schedule.time_hour > 23 || schedule.splay_hours > 12 {
        return error(
            StatusCode::BAD_REQUEST,
            "time_hour must be 0..=23 and splay_hours 0..=12",
        );
    }
    let r = crate::admin::set_schedule(&st.node, id, schedule);
    crate::auth::audit(
        "http",
        "defrag-schedule",
        &format!("backend {id}"),
        &r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
    );
    match r {
        Ok(()) => Json(serde_json::json!({ "ok": true })).into_response(),
        Err(e) => node_error(&e),
    }
}

async fn admin_jobs(State(st): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = require_token(&st, &headers) {
        return r;
    }
    Json(st.node.workers.list()).into_response()
}

async fn admin_job_control(
    State(st): State<Shared>,
    Path((id, action)): Path<(u64, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = require_token(&st, &headers) {
        return r;
    }
    let w = &st.node.workers;
    let r = match action.as_str() {
        "cancel" => w.cancel(id),
        "pause" => w.pause(id),
        "resume" => w.resume(id),
        other => {
            return error(
                StatusCode::NOT_FOUND,
                format!("unknown job action {other:?}"),
            )
        }
    };
    crate::auth::audit(
        "http",
        &format!("job {action}"),
        &format!("job {id}"),
        &r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
    );
    match r {
        Ok(()) => Json(w.get(id)).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

async fn admin_recovery(State(st): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = require_token(&st, &headers) {
        return r;
    }
    let req: crate::recovery::RecoveryRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("recovery JSON: {e}")),
    };
    let target = format!("{:?} groups {:?}", req.kind, req.groups);
    let r = crate::recovery::start(&st.node, req).await;
    crate::auth::audit(
        "http",
        "recovery",
        &target,
        &r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
    );
    match r {
        Ok(job) => (StatusCode::ACCEPTED, Json(job)).into_response(),
        Err(e) => node_error(&e),
    }
}
