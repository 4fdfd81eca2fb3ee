//! Bad-input and security probes the soak sends to a running node while the load runs.
//!
//! Each probe is one hostile or unauthenticated exchange on a real loopback socket with the
//! outcome the node must give: an oversized frame gets TOO_BIG and a close; a slowloris or
//! half-open frame is closed by `frame_read_timeout_ms` with no reply; a burst of idle
//! connections is held and every one still answers while a fresh client is served; admin HTTP
//! without (or with a wrong) token gets 401; admin protocol commands without AUTH, or after a
//! wrong one, get ACCESS; names that look like paths get a 4xx or are hashed, and create no
//! file; bodies beyond `http_max_body_bytes` get 413. After every probe a fresh connection must
//! be served.
//!
//! Not a fuzzer (`fuzz/` is) and not the unit-level checks (`tests/tests/badinput.rs` is): a
//! probe reports what the node got wrong, as text, instead of panicking, so the soak can count
//! it and keep its cluster. Waits are bounded by a deadline far above the configured limits;
//! the only sleeps are the slowloris client's pauses between bytes, which are the probe.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ellipsis_core::protocol::cmd::auth::Auth;
use ellipsis_core::protocol::cmd::backend_control::{BackendAction, BackendControl};
use ellipsis_core::protocol::cmd::key_range::KeyRange;
use ellipsis_core::protocol::cmd::recovery::RecoveryControl;
use ellipsis_core::protocol::cmd::send::{SendMode, SendRequest};
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{Command, Header, Status, HEADER_SIZE};
use ellipsis_core::Id;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the probes need to know about one node.
#[derive(Clone, Debug)]
pub struct Target {
    /// The node's own protocol address (not a proxy: the probes test the node).
    pub addr: SocketAddr,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its process id, for its resident memory.
    pub pid: u32,
    /// Its `frame_read_timeout_ms`.
    pub frame_read_timeout_ms: u64,
    /// Its `max_frame_bytes`.
    pub max_frame_bytes: u64,
    /// Its `http_max_body_bytes`.
    pub http_max_body_bytes: u64,
    /// Its backend directory (a traversal must create nothing outside it, nor inside it
    /// under the probe's name).
    pub dir: std::path::PathBuf,
    /// The right admin token.
    pub token: String,
}

/// What a round of probes found.
#[derive(Debug, Default)]
pub struct Report {
    /// Probes sent, by name.
    pub sent: std::collections::BTreeMap<&'static str, u64>,
    /// What the node got wrong: accepted what it must refuse, or stopped serving others.
    pub wrong: Vec<String>,
    /// Resident memory growth per idle connection in the last burst, bytes.
    pub idle_rss_bytes_per_connection: Option<u64>,
}

impl Report {
    fn sent(&mut self, probe: &'static str) {
        *self.sent.entry(probe).or_default() += 1;
    }

    fn wrong(&mut self, probe: &str, what: String) {
        self.wrong.push(format!("{probe}: {what}"));
    }
}

/// Far above every configured limit: reaching it means a limit was not enforced.
fn deadline(t: &Target) -> Duration {
    Duration::from_millis(t.frame_read_timeout_ms * 4) + Duration::from_secs(10)
}

/// How a connection ended while waiting for the node to close it.
enum Closed {
    /// EOF or reset, after this many bytes of reply.
    After(usize),
    /// Still open at the deadline.
    StillOpen,
}

async fn wait_closed(sock: &mut (impl AsyncReadExt + Unpin), within: Duration) -> Closed {
    let mut total = 0;
    let mut buf = vec![0u8; 16 << 10];
    let started = Instant::now();
    loop {
        let Some(left) = within.checked_sub(started.elapsed()) else {
            return Closed::StillOpen;
        };
        match tokio::time::timeout(left, sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Closed::After(total),
            Ok(Ok(n)) => total += n,
            Err(_) => return Closed::StillOpen,
        }
    }
}

async fn reply(sock: &mut TcpStream, within: Duration) -> anyhow::Result<(Header, Vec<u8>)> {
    let mut head = [0u8; HEADER_SIZE];
    tokio::time::timeout(within, sock.read_exact(&mut head)).await??;
    let h = Header::decode(&head)?;
    anyhow::ensure!(h.size < 1 << 20, "reply of {} bytes", h.size);
    let mut body = vec![0u8; h.size as usize];
    tokio::time::timeout(within, sock.read_exact(&mut body)).await??;
    Ok((h, body))
}

async fn call(
    sock: &mut TcpStream,
    cmd: Command,
    trans: u64,
    payload: &[u8],
    within: Duration,
) -> anyhow::Result<(Header, Vec<u8>)> {
    let mut h = Header::request(cmd, Id::ZERO, 1, trans);
    h.size = payload.len() as u64;
    let mut frame = h.encode().to_vec();
    frame.extend_from_slice(payload);
    sock.write_all(&frame).await?;
    reply(sock, within).await
}

/// A fresh connection gets a PING answered: the node still serves others.
async fn served(t: &Target, r: &mut Report, after: &str) {
    let within = deadline(t);
    let outcome = async {
        let mut s = tokio::time::timeout(within, TcpStream::connect(t.addr)).await??;
        let (h, _) = call(&mut s, Command::Ping, 1, &[], within).await?;
        anyhow::ensure!(h.status == Status::OK, "PING answered {}", h.status);
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = outcome {
        r.wrong(
            after,
            format!("a fresh client was not served after it: {e:#}"),
        );
    }
}

/// Send one round of every probe to `t`; `idle_connections` sizes the idle burst.
pub async fn round(t: &Target, idle_connections: usize) -> Report {
    let mut r = Report::default();
    oversized_frame(t, &mut r).await;
    served(t, &mut r, "oversized frame").await;
    let (slow, half) = tokio::join!(slowloris(t), half_open(t));
    for (name, outcome) in [("slowloris", slow), ("half-open", half)] {
        r.sent(name);
        if let Err(e) = outcome {
            r.wrong(name, e);
        }
        served(t, &mut r, name).await;
    }
    idle_burst(t, idle_connections, &mut r).await;
    served(t, &mut r, "idle burst").await;
    admin_http_without_token(t, &mut r).await;
    admin_commands_without_token(t, &mut r).await;
    served(t, &mut r, "admin without token").await;
    path_traversal(t, &mut r).await;
    oversized_bodies(t, &mut r).await;
    served(t, &mut r, "HTTP probes").await;
    r
}

async fn oversized_frame(t: &Target, r: &mut Report) {
    const PROBE: &str = "oversized frame";
    r.sent(PROBE);
    let within = deadline(t);
    let outcome = async {
        let mut s = TcpStream::connect(t.addr).await?;
        let mut h = Header::request(Command::Write, Id::ZERO, 1, 77);
        h.size = t.max_frame_bytes + 1;
        s.write_all(&h.encode()).await?;
        let (reply, _) = reply(&mut s, within).await?;
        anyhow::ensure!(
            reply.status == Status::TOO_BIG,
            "answered {} instead of TOO_BIG",
            reply.status
        );
        match wait_closed(&mut s, within).await {
            Closed::After(_) => Ok(()),
            Closed::StillOpen => anyhow::bail!("connection left open after TOO_BIG"),
        }
    }
    .await;
    if let Err(e) = outcome {
        r.wrong(PROBE, format!("{e:#}"));
    }
}

/// A PING with a payload, one byte every `frame_read_timeout_ms / 8`: it would need ~14
/// timeouts to complete, so the node must cut it, without a reply.
async fn slowloris(t: &Target) -> Result<(), String> {
    let sock = TcpStream::connect(t.addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut rd, mut wr) = sock.into_split();
    let mut h = Header::request(Command::Ping, Id::ZERO, 1, 1);
    h.size = 0;
    let mut frame = h.encode().to_vec();
    frame.truncate(HEADER_SIZE);
    let total = frame.len();
    let pause = Duration::from_millis((t.frame_read_timeout_ms / 8).max(1));
    let trickle = tokio::spawn(async move {
        let mut sent = 0;
        for b in frame {
            if wr.write_all(&[b]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(pause).await;
        }
        sent
    });
    let closed = wait_closed(&mut rd, deadline(t)).await;
    let sent = trickle.await.map_err(|e| e.to_string())?;
    match closed {
        Closed::StillOpen => Err("still open at the deadline".into()),
        Closed::After(n) if n > 0 => Err(format!("{n} bytes of reply to a partial frame")),
        Closed::After(_) if sent >= total => Err("the whole frame got through".into()),
        Closed::After(_) => Ok(()),
    }
}

/// Half a header, then silence; and a header announcing a payload that never fully comes.
async fn half_open(t: &Target) -> Result<(), String> {
    let within = deadline(t);
    let h = Header::request(Command::Ping, Id::ZERO, 1, 1).encode();
    let mut a = TcpStream::connect(t.addr)
        .await
        .map_err(|e| e.to_string())?;
    a.write_all(&h[..HEADER_SIZE / 2])
        .await
        .map_err(|e| e.to_string())?;
    let mut b = TcpStream::connect(t.addr)
        .await
        .map_err(|e| e.to_string())?;
    let mut w = Header::request(Command::Write, Id::ZERO, 1, 2);
    w.size = 1 << 20;
    b.write_all(&w.encode()).await.map_err(|e| e.to_string())?;
    b.write_all(&[7u8; 1000]).await.map_err(|e| e.to_string())?;
    for (what, s) in [("half a header", &mut a), ("a partial payload", &mut b)] {
        match wait_closed(s, within).await {
            Closed::After(0) => {}
            Closed::After(n) => return Err(format!("{what}: {n} bytes of reply")),
            Closed::StillOpen => return Err(format!("{what}: still open at the deadline")),
        }
    }
    Ok(())
}

/// Resident memory of a process, from `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

async fn idle_burst(t: &Target, n: usize, r: &mut Report) {
    const PROBE: &str = "idle connections (burst)";
    let within = deadline(t);
    let before = rss_bytes(t.pid);
    let mut idle = Vec::with_capacity(n);
    for i in 0..n {
        r.sent(PROBE);
        let one = async {
            let mut s = TcpStream::connect(t.addr).await?;
            let (h, _) = call(&mut s, Command::Ping, i as u64, &[], within).await?;
            anyhow::ensure!(h.status == Status::OK, "PING answered {}", h.status);
            anyhow::Ok(s)
        };
        match one.await {
            Ok(s) => idle.push(s),
            Err(e) => {
                r.wrong(PROBE, format!("connection {i} of {n} not served: {e:#}"));
                break;
            }
        }
    }
    let after = rss_bytes(t.pid);
    if let (Some(b), Some(a)) = (before, after) {
        if !idle.is_empty() {
            r.idle_rss_bytes_per_connection = Some(a.saturating_sub(b) / idle.len() as u64);
        }
    }
    served(t, r, "idle connections held").await;
    for (i, s) in idle.iter_mut().enumerate().step_by(100) {
        let trans = 1_000_000 + i as u64;
        match call(s, Command::Ping, trans, &[], within).await {
            Ok((h, _)) if h.status == Status::OK && h.trans == trans => {}
            other => {
                r.wrong(
                    PROBE,
                    format!(
                        "idle connection {i} no longer answers: {:?}",
                        other.map(|(h, _)| (h.trans, h.status))
                    ),
                );
                break;
            }
        }
    }
}

/// A raw HTTP exchange: everything the server sends until it closes, or an error.
async fn http_raw(t: &Target, request: &[u8]) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(t.http).await?;
    s.write_all(request).await?;
    let mut out = Vec::new();
    tokio::time::timeout(deadline(t), s.read_to_end(&mut out)).await??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn status_of(response: &str) -> Option<u16> {
    response.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

async fn http_expect(
    t: &Target,
    r: &mut Report,
    probe: &'static str,
    request: String,
    ok: impl Fn(u16) -> bool,
) {
    r.sent(probe);
    let first_line = request.lines().next().unwrap_or_default().to_owned();
    match http_raw(t, request.as_bytes()).await {
        Ok(resp) => match status_of(&resp) {
            Some(code) if ok(code) => {}
            code => r.wrong(probe, format!("{first_line} answered {code:?}")),
        },
        Err(e) => r.wrong(probe, format!("{first_line}: {e:#}")),
    }
}

async fn admin_http_without_token(t: &Target, r: &mut Report) {
    const PROBE: &str = "admin HTTP without token";
    let calls = [
        ("POST", "/admin/backends/1/read-only", ""),
        ("POST", "/admin/backends/1/disable", ""),
        ("POST", "/admin/backends/1/defrag-start", ""),
        (
            "PUT",
            "/admin/backends/1/defrag/schedule",
            r#"{"mode":"none"}"#,
        ),
        ("PUT", "/admin/backends/1/delay", r#"{"delay_ms":5000}"#),
        ("GET", "/admin/jobs", ""),
        ("POST", "/admin/jobs/1/cancel", ""),
        ("POST", "/admin/recovery", r#"{"kind":"dc"}"#),
        ("PUT", "/objects/soak-probe", "data"),
        ("DELETE", "/objects/soak-probe", ""),
    ];
    let wrong = format!("Bearer {}x", t.token);
    for (method, path, body) in calls {
        // No header, a wrong token, and the right token without the Bearer scheme.
        for auth in [None, Some(wrong.as_str()), Some(t.token.as_str())] {
            let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            http_expect(t, r, PROBE, req, |c| c == 401).await;
        }
    }
}

async fn admin_commands_without_token(t: &Target, r: &mut Report) {
    const PROBE: &str = "admin protocol command without token";
    let within = deadline(t);
    let admin: [(Command, Vec<u8>); 5] = [
        (
            Command::BackendControl,
            BackendControl {
                backend: 1,
                action: BackendAction::ReadOnly,
            }
            .encode(),
        ),
        (
            Command::Send,
            SendRequest {
                mode: SendMode::Overwrite,
                groups: vec![1, 2],
                ids: vec![Id::ZERO],
                backend: None,
            }
            .encode(),
        ),
        (
            Command::DelRange,
            KeyRange {
                start: Id::ZERO,
                end: Id::MAX,
                limit: 0,
                io_flags: 0,
            }
            .encode(),
        ),
        (Command::Iterator, Vec::new()),
        (
            Command::Recovery,
            RecoveryControl::Start {
                request_json: r#"{"kind":"dc"}"#.into(),
            }
            .encode(),
        ),
    ];
    let outcome = async {
        let mut s = TcpStream::connect(t.addr).await?;
        let mut trans = 0;
        for wrong_auth_first in [false, true] {
            if wrong_auth_first {
                let wrong = Auth {
                    token: format!("{}x", t.token),
                }
                .encode();
                trans += 1;
                let (h, _) = call(&mut s, Command::Auth, trans, &wrong, within).await?;
                if h.status != Status::ACCESS {
                    r.wrong(PROBE, format!("a wrong AUTH answered {}", h.status));
                }
            }
            for (cmd, payload) in &admin {
                r.sent(PROBE);
                trans += 1;
                let (h, _) = call(&mut s, *cmd, trans, payload, within).await?;
                if h.status != Status::ACCESS {
                    r.wrong(
                        PROBE,
                        format!(
                            "{cmd} (after a wrong AUTH: {wrong_auth_first}) answered {}",
                            h.status
                        ),
                    );
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = outcome {
        r.wrong(PROBE, format!("{e:#}"));
    }
}

fn contains_name(dir: &Path, name: &str) -> bool {
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.file_name().and_then(|n| n.to_str()) == Some(name) {
                return true;
            }
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    false
}

async fn path_traversal(t: &Target, r: &mut Report) {
    const PROBE: &str = "path traversal in a name";
    let token = &t.token;
    // Ids and categories are parsed, never joined to a path: traversal is a client error.
    for (method, path) in [
        ("GET", "/stats/..%2F..%2Fetc%2Fpasswd"),
        ("GET", "/stats/%2E%2E"),
        ("GET", "/traces/..%2F..%2Fetc%2Fpasswd"),
        ("POST", "/admin/backends/..%2F1/enable"),
        ("POST", "/admin/backends/1/..%2F..%2Fdisable"),
        ("POST", "/admin/jobs/..%2F1/cancel"),
        ("PUT", "/admin/backends/%2Ftmp%2Fx/defrag/schedule"),
    ] {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        http_expect(t, r, PROBE, req, |c| (400..500).contains(&c)).await;
    }
    // An object key is hashed: a path-like key is an ordinary key and creates no file of
    // that name, neither where it points nor in the node's directory.
    let escape = format!("ellipsis-soak-escape-{}", t.pid);
    let req = format!(
        "PUT /objects/..%2F..%2F..%2F..%2Ftmp%2F{escape} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
    );
    http_expect(t, r, PROBE, req, |c| c == 201).await;
    let root = t.dir.parent().unwrap_or(&t.dir);
    if Path::new("/tmp").join(&escape).exists() || contains_name(root, &escape) {
        r.wrong(PROBE, format!("a file named {escape} was created"));
    }
}

async fn oversized_bodies(t: &Target, r: &mut Report) {
    const PROBE: &str = "oversized HTTP body";
    let token = &t.token;
    let limit = t.http_max_body_bytes;
    // Announced too large: refused before it is read.
    let req = format!(
        "PUT /objects/soak-big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        limit + 1
    );
    http_expect(t, r, PROBE, req, |c| c == 413).await;
    // Chunked, announced nowhere: refused once the limit is crossed.
    let mut chunked = format!(
        "PUT /objects/soak-big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let chunk = 64 << 10;
    let chunks = limit / chunk + 2;
    for _ in 0..chunks {
        chunked.push_str(&format!("{chunk:x}\r\n"));
        chunked.push_str(&"a".repeat(chunk as usize));
        chunked.push_str("\r\n");
    }
    chunked.push_str("0\r\n\r\n");
    r.sent(PROBE);
    match http_raw(t, chunked.as_bytes()).await {
        Ok(resp) if status_of(&resp) == Some(413) => {}
        // The node may close before reading it all; a reset mid-send is a refusal too only if
        // nothing was stored, which the object read below checks.
        Ok(resp) => r.wrong(
            PROBE,
            format!(
                "chunked body over the limit answered {:?}",
                status_of(&resp)
            ),
        ),
        Err(_) => {}
    }
    let req = "GET /objects/soak-big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned();
    http_expect(t, r, PROBE, req, |c| c == 404).await;
}
