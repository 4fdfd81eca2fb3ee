//! Admin HTTP calls: what a confirmed [`AdminRequest`] does on a node.
//!
//! Every call carries `Authorization: Bearer <token>`; the token is held here and never
//! printed (the `Debug` impl redacts it). Not a poller and not a policy: confirmation and
//! read-only mode are decided by [`crate::app`] before a request gets here.
//!
//! Node endpoints: `POST /admin/backends/{id}/{action}`, `PUT /admin/backends/{id}/defrag/schedule`,
//! `POST /admin/recovery`, `POST /admin/jobs/{id}/cancel`.

use ellipsis_core::stats::JobStatus;

use crate::app::{AdminReply, AdminRequest, RecoveryKind};
use crate::poll::{http_client, read_body, transport, PollError, TlsConfig};

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No token configured: admin calls would be refused anyway.
    #[error("no admin token: set ELL_ADMIN_TOKEN or pass --token-file")]
    NoToken,
    /// The node's HTTP address is not known.
    #[error("no HTTP address known for node {0}")]
    UnknownNode(String),
    /// The call failed (transport, HTTP status with the node's message).
    #[error(transparent)]
    Call(#[from] PollError),
}

/// Performs admin requests over HTTP.
#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    token: Option<String>,
    timeout_ms: u64,
    tls: TlsConfig,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// The schedule document `PUT /admin/backends/{id}/defrag/schedule` takes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ScheduleBody {
    /// `auto`, `timed`, `scheduled`, `none`.
    pub mode: String,
    /// Period of `timed`.
    pub timeout_s: u64,
    /// Window centre hour, UTC.
    pub time_hour: u8,
    /// Window half-width.
    pub splay_hours: u8,
    /// Only bases that want data-sort.
    pub compact: bool,
}

/// Reads the admin token: `ELL_ADMIN_TOKEN` wins, then the first line of `token_file`.
pub fn load_token(
    env: Option<String>,
    token_file: Option<&std::path::Path>,
) -> std::io::Result<Option<String>> {
    if let Some(t) = env.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
        return Ok(Some(t));
    }
    match token_file {
        Some(p) => {
            let text = std::fs::read_to_string(p)?;
            let t = text.lines().next().unwrap_or("").trim().to_owned();
            if t.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("token file {} is empty", p.display()),
                ));
            }
            Ok(Some(t))
        }
        None => Ok(None),
    }
}

impl AdminClient {
    /// A client presenting `token` over plain HTTP.
    pub fn new(token: Option<String>, timeout_ms: u64) -> Result<AdminClient, AdminError> {
        AdminClient::with_tls(token, timeout_ms, TlsConfig::default())
    }

    /// A client presenting `token`, over HTTPS when `tls` says so.
    pub fn with_tls(
        token: Option<String>,
        timeout_ms: u64,
        tls: TlsConfig,
    ) -> Result<AdminClient, AdminError> {
        Ok(AdminClient {
            http: http_client(timeout_ms, &tls)?,
            token,
            timeout_ms,
            tls,
        })
    }

    /// True when a token is configured.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    async fn call(
        &self,
        method: reqwest::Method,
        http_addr: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Vec<u8>, AdminError> {
        let token = self.token.as_deref().ok_or(AdminError::NoToken)?;
        let mut req = self
            .http
            .request(method, self.tls.url(http_addr, path))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport(e, self.timeout_ms))?;
        Ok(read_body(resp, self.timeout_ms).await?)
    }

    /// `POST /admin/backends/{id}/{action}`.
    pub async fn backend_action(
        &self,
        http_addr: &str,
        backend: u32,
        action: &str,
    ) -> Result<(), AdminError> {
        self.call(
            reqwest::Method::POST,
            http_addr,
            &format!("/admin/backends/{backend}/{action}"),
            None,
        )
        .await?;
        Ok(())
    }

    /// `PUT /admin/backends/{id}/defrag/schedule`.
    pub async fn set_schedule(
        &self,
        http_addr: &str,
        backend: u32,
        schedule: &ScheduleBody,
    ) -> Result<(), AdminError> {
        let body = serde_json::to_value(schedule)
            .map_err(|e| PollError::Client(format!("schedule JSON: {e}")))?;
        self.call(
            reqwest::Method::PUT,
            http_addr,
            &format!("/admin/backends/{backend}/defrag/schedule"),
            Some(body),
        )
        .await?;
        Ok(())
    }

    /// `POST /admin/recovery`: the job the node started.
    pub async fn start_recovery(
        &self,
        http_addr: &str,
        kind: RecoveryKind,
        dry_run: bool,
        groups: &[u32],
    ) -> Result<JobStatus, AdminError> {
        let kind = match kind {
            RecoveryKind::Merge => "merge",
            RecoveryKind::Dc => "dc",
        };
        let body = serde_json::json!({ "kind": kind, "dry_run": dry_run, "groups": groups });
        let reply = self
            .call(
                reqwest::Method::POST,
                http_addr,
                "/admin/recovery",
                Some(body),
            )
            .await?;
        serde_json::from_slice(&reply).map_err(|e| {
            AdminError::Call(PollError::Json {
                what: "/admin/recovery".into(),
                error: e.to_string(),
            })
        })
    }

    /// `POST /admin/jobs/{id}/cancel`.
    pub async fn cancel_job(&self, http_addr: &str, job: u64) -> Result<(), AdminError> {
        self.call(
            reqwest::Method::POST,
            http_addr,
            &format!("/admin/jobs/{job}/cancel"),
            None,
        )
        .await?;
        Ok(())
    }

    /// Performs a confirmed console request. `http_of` maps a node's protocol address to its
    /// HTTP address; `schedule_base` gives the backend's current `(timeout_s, compact)` so a
    /// schedule change keeps them; `groups` are the groups a recovery covers. Returns a short
    /// result for the status line and the job started, if any.
    pub async fn execute(
        &self,
        request: &AdminRequest,
        http_of: impl Fn(&str) -> Option<String>,
        schedule_base: (u64, bool),
        groups: &[u32],
    ) -> Result<AdminReply, AdminError> {
        let node = match request {
            AdminRequest::DefragStart { node, .. }
            | AdminRequest::DefragStop { node, .. }
            | AdminRequest::DefragSchedule { node, .. }
            | AdminRequest::RecoveryStart { node, .. }
            | AdminRequest::JobCancel { node, .. } => node,
        };
        let http = http_of(node).ok_or_else(|| AdminError::UnknownNode(node.clone()))?;
        match request {
            AdminRequest::DefragStart {
                backend, compact, ..
            } => {
                let action = if *compact {
                    "defrag-start-compact"
                } else {
                    "defrag-start"
                };
                self.backend_action(&http, *backend, action).await?;
                Ok(AdminReply::default())
            }
            AdminRequest::DefragStop { backend, .. } => {
                self.backend_action(&http, *backend, "defrag-stop").await?;
                Ok(AdminReply::default())
            }
            AdminRequest::DefragSchedule {
                backend,
                mode,
                time_hour,
                splay_hours,
                ..
            } => {
                let body = ScheduleBody {
                    mode: mode.clone(),
                    timeout_s: schedule_base.0,
                    time_hour: *time_hour,
                    splay_hours: *splay_hours,
                    compact: schedule_base.1,
                };
                self.set_schedule(&http, *backend, &body).await?;
                Ok(AdminReply::default())
            }
            AdminRequest::RecoveryStart { kind, dry_run, .. } => {
                let job = self.start_recovery(&http, *kind, *dry_run, groups).await?;
                Ok(AdminReply {
                    text: format!("job {} {:?}", job.id, job.state).to_lowercase(),
                    job: Some(job.id),
                })
            }
            AdminRequest::JobCancel { job, .. } => {
                self.cancel_job(&http, *job).await?;
                Ok(AdminReply::default())
            }
        }
    }
}
