//! Security of a real node's edges: HTTPS with a certificate made in the test (rcgen) and a
//! client that trusts only it; the admin token never reaches the logs, whether presented right
//! or wrong, over HTTP or the wire protocol's AUTH.
//!
//! One test binary with its own global `tracing` subscriber (capturing every event at TRACE
//! from every crate), which is why these tests are not in the shared `cluster` binary.

// Test drivers panic on failure: that is the report.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ellipsis_core::client::Conn;
use ellipsis_core::protocol::cmd::auth::Auth;
use ellipsis_core::protocol::cmd::backend_control::{BackendAction, BackendControl};
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{Command, Header, Status};
use ellipsis_core::Id;
use ellipsis_node::config::{BackendConfig, NodeConfig, SyncSetting};
use ellipsis_node::server::RunningNode;

const TOKEN: &str = "the-real-admin-token-7f3a9c";
const WRONG: &str = "a-wrong-admin-token-5e2b81";
const TIMEOUT: Duration = Duration::from_secs(5);

/// Everything every crate logs, at every level, in this process.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        logs
    })
    .clone()
}

fn config(dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        admin_token: Some(TOKEN.into()),
        blocking_threads: 2,
        backends: vec![BackendConfig {
            id: 1,
            group: 1,
            dir: dir.join("backend-1"),
            ring_ids: 2,
            sync: SyncSetting::Never,
            min_free_space_bytes: 0,
            ..BackendConfig::default()
        }],
        ..NodeConfig::default()
    }
}

async fn start(config: NodeConfig) -> RunningNode {
    ellipsis_node::server::start(config, None).await.unwrap()
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files in `dir`.
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert_pem = ck.cert.pem();
    let (cert, key) = (dir.join("node.crt"), dir.join("node.key"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key, cert_pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_a_trusting_client_and_refuses_plain_http_and_untrusting_clients() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, cert_pem) = certificate(dir.path());
    let mut c = config(dir.path());
    c.http_tls_cert = Some(cert);
    c.http_tls_key = Some(key);
    let node = start(c).await;
    let http = node.http_addr.unwrap();
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = trusting
        .get(format!("https://127.0.0.1:{}/stats/io", http.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().starts_with('{'));
    // Writes with the token work over TLS too.
    let put = trusting
        .put(format!("https://127.0.0.1:{}/objects/tls-key", http.port()))
        .bearer_auth(TOKEN)
        .body("over tls")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    // The port speaks HTTPS only.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/stats/io", http.port()))
        .timeout(TIMEOUT)
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    // A client that does not trust the certificate refuses the connection.
    let untrusting = reqwest::Client::new()
        .get(format!("https://127.0.0.1:{}/stats/io", http.port()))
        .timeout(TIMEOUT)
        .send()
        .await;
    assert!(untrusting.is_err(), "an untrusted certificate was accepted");
    node.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_bad_certificate_stops_the_start_with_a_clear_error() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.http_tls_cert = Some(dir.path().join("absent.crt"));
    c.http_tls_key = Some(dir.path().join("absent.key"));
    let err = ellipsis_node::server::start(c.clone(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("http_tls_cert"), "{err}");
    std::fs::write(dir.path().join("absent.crt"), "not a certificate").unwrap();
    let err = ellipsis_node::server::start(c.clone(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("http_tls_cert"), "{err}");
    // A cert without its key is refused by validation.
    c.http_tls_key = None;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("http_tls_key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_never_appears_in_the_logs() {
    let logs = logs();
    let dir = tempfile::tempdir().unwrap();
    let node = start(config(dir.path())).await;
    let base = format!("http://{}", node.http_addr.unwrap());
    let http = reqwest::Client::new();
    for token in [WRONG, TOKEN] {
        for path in ["/admin/backends/1/read-only", "/admin/backends/1/writable"] {
            let r = http
                .post(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let expected = if token == TOKEN { 200 } else { 401 };
            assert_eq!(r.status(), expected, "{path} with {token}");
        }
        let r = http
            .put(format!("{base}/objects/logged"))
            .bearer_auth(token)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), if token == TOKEN { 201 } else { 401 });
    }
    // The wire protocol: AUTH wrong, an admin command (refused), AUTH right, the command.
    let conn = Conn::connect(node.addr, 1 << 20, TIMEOUT).await.unwrap();
    let ctl = BackendControl {
        backend: 1,
        action: BackendAction::Writable,
    }
    .encode();
    let call = |cmd: Command, payload: Vec<u8>| {
        let conn = conn.clone();
        async move {
            let h = Header::request(cmd, Id::ZERO, 1, 0);
            match conn.call(h, payload, TIMEOUT).await {
                Ok(f) => f.header.status,
                Err(e) => e.status(),
            }
        }
    };
    let auth = |t: &str| {
        Auth {
            token: t.to_owned(),
        }
        .encode()
    };
    assert_eq!(call(Command::Auth, auth(WRONG)).await, Status::ACCESS);
    assert_eq!(
        call(Command::BackendControl, ctl.clone()).await,
        Status::ACCESS
    );
    assert_eq!(call(Command::Auth, auth(TOKEN)).await, Status::OK);
    assert_eq!(call(Command::BackendControl, ctl).await, Status::OK);
    node.stop().await.unwrap();
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    // The capture works (the audit lines are there) and holds neither token.
    assert!(
        text.contains("admin operation"),
        "audit lines were captured"
    );
    assert!(!text.contains(TOKEN), "the admin token was logged");
    assert!(
        !text.contains(WRONG),
        "a presented (wrong) token was logged"
    );
}

/// The audit lines (target `audit`) captured so far that mention `marker`.
fn audit_lines(logs: &Captured, marker: &str) -> Vec<String> {
    String::from_utf8_lossy(&logs.0.lock().unwrap())
        .lines()
        .filter(|l| l.contains("audit:") && l.contains("admin operation") && l.contains(marker))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_request_and_every_refusal_writes_one_audit_line() {
    let logs = logs();
    let dir = tempfile::tempdir().unwrap();
    // Backend 77 in group 77 and HTTP from 127.0.0.2: markers no other test's lines carry.
    let mut c = config(dir.path());
    c.backends[0].id = 77;
    c.backends[0].group = 77;
    let node = start(c).await;
    let base = format!("http://{}", node.http_addr.unwrap());
    let http = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let send = |method: reqwest::Method, path: &str, token: &str, body: &str| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
    };
    use reqwest::Method;
    let schedule =
        r#"{"mode":"none","timeout_s":60,"time_hour":3,"splay_hours":1,"compact":false}"#;
    let http_calls: [(Method, &str, &str, &str, u16); 7] = [
        (
            Method::PUT,
            "/admin/backends/77/defrag/schedule",
            WRONG,
            schedule,
            401,
        ),
        (Method::POST, "/admin/jobs/424242/cancel", WRONG, "", 401),
        (Method::POST, "/admin/recovery", WRONG, "{}", 401),
        (Method::GET, "/admin/jobs", WRONG, "", 401),
        (
            Method::PUT,
            "/admin/backends/77/ring-ids",
            TOKEN,
            r#"{"ids":["zz"]}"#,
            400,
        ),
        (
            Method::PUT,
            "/admin/backends/77/delay",
            TOKEN,
            r#"{"delay_ms":5}"#,
            200,
        ),
        (
            Method::PUT,
            "/admin/backends/77/defrag/schedule",
            TOKEN,
            schedule,
            200,
        ),
    ];
    for (method, path, token, body, status) in http_calls.clone() {
        let r = send(method, path, token, body).await.unwrap();
        assert_eq!(r.status(), status, "{path}");
    }
    let lines = audit_lines(&logs, "http 127.0.0.2:");
    assert_eq!(lines.len(), http_calls.len(), "{lines:#?}");
    let refused = lines.iter().filter(|l| l.contains("refused")).count();
    assert_eq!(refused, 5, "{lines:#?}");
    for (operation, target) in [
        ("defrag-schedule", "backend 77"),
        ("job cancel", "job 424242"),
        ("recovery", "recovery"),
        ("job list", "jobs"),
        ("set-ring-ids", "backend 77"),
        ("set-delay", "backend 77"),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(operation) && l.contains(target)),
            "{operation} on {target}: {lines:#?}"
        );
    }
    assert_eq!(node.node.backend(77).unwrap().delay_ms(), 5);

    // The wire protocol: SEND, DEL_RANGE and ITERATOR without AUTH, then SEND (a payload it
    // cannot decode) and DEL_RANGE with it.
    let conn = Conn::connect(node.addr, 1 << 20, TIMEOUT).await.unwrap();
    let call = |cmd: Command, payload: Vec<u8>| {
        let conn = conn.clone();
        async move {
            let mut h = Header::request(cmd, Id::ZERO, 77, 0);
            h.backend = 77;
            match conn.call(h, payload, TIMEOUT).await {
                Ok(f) => f.header.status,
                Err(e) => e.status(),
            }
        }
    };
    let range = ellipsis_core::protocol::cmd::key_range::KeyRange {
        start: Id::ZERO,
        end: Id([0xff; 64]),
        ..Default::default()
    }
    .encode();
    let iterate = ellipsis_core::protocol::cmd::iterator::IteratorRequest {
        backend: 77,
        ..Default::default()
    }
    .encode();
    assert_eq!(call(Command::Send, Vec::new()).await, Status::ACCESS);
    assert_eq!(call(Command::DelRange, range.clone()).await, Status::ACCESS);
    assert_eq!(call(Command::Iterator, iterate).await, Status::ACCESS);
    let auth = Auth {
        token: TOKEN.to_owned(),
    }
    .encode();
    assert_eq!(call(Command::Auth, auth).await, Status::OK);
    assert_ne!(call(Command::Send, vec![1, 2, 3]).await, Status::OK);
    assert_eq!(call(Command::DelRange, range).await, Status::OK);
    node.stop().await.unwrap();
    let lines = audit_lines(&logs, "group 77 backend 77");
    let count = |operation: &str, result: &str| {
        let (op, res) = (
            format!("operation=\"{operation}\""),
            format!("result=\"{result}\""),
        );
        lines
            .iter()
            .filter(|l| l.contains(&op) && l.contains(&res))
            .count()
    };
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert_eq!(count("SEND", "refused"), 2, "{lines:#?}");
    assert_eq!(count("DEL_RANGE", "refused"), 1, "{lines:#?}");
    assert_eq!(count("DEL_RANGE", "ok"), 1, "{lines:#?}");
    assert_eq!(count("ITERATOR", "refused"), 1, "{lines:#?}");
    let all = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        !all.contains(TOKEN) && !all.contains(WRONG),
        "a token was logged"
    );
}

/// One `ell-node` process started from `config_path` (the environment's token set to
/// `env_token`, or unset) and killed once it serves: what it printed on stdout and stderr.
fn startup_output(config_path: &std::path::Path, env_token: Option<&str>) -> String {
    use std::io::{BufRead, BufReader};
    use std::process::{Command as Process, Stdio};
    let mut cmd = Process::new(env!("CARGO_BIN_EXE_ell-node"));
    cmd.arg("--config")
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match env_token {
        Some(t) => cmd.env(ellipsis_node::config::ADMIN_TOKEN_ENV, t),
        None => cmd.env_remove(ellipsis_node::config::ADMIN_TOKEN_ENV),
    };
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    // Both pipes are drained by threads (a full pipe would stall the node); each reports its
    // startup line (stderr: "serving on", printed once the listeners are bound; stdout: the
    // "node up" log, written by the serving task a moment later), and both end at EOF once the
    // process is killed. The node is killed only after both, so the whole startup is captured.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let reader = |pipe: Box<dyn std::io::Read + Send>, marker: &'static str| {
        let ready_tx = ready_tx.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if line.contains(marker) {
                    let _ = ready_tx.send(());
                }
                text.push_str(&line);
                text.push('\n');
            }
            text
        })
    };
    let out = reader(Box::new(stdout), "node up");
    let err = reader(Box::new(stderr), "ell-node: serving on");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let ready = (0..2).try_for_each(|_| {
        ready_rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    });
    let _ = child.kill();
    let _ = child.wait();
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    assert!(ready.is_ok(), "ell-node did not start:\n{text}");
    text
}

#[test]
fn ell_node_startup_logs_at_trace_hold_no_token() {
    const ENV_TOKEN: &str = "the-environment-admin-token-1d8e4f";
    let dir = tempfile::tempdir().unwrap();
    for (run, env_token) in [None, Some(ENV_TOKEN)].into_iter().enumerate() {
        let run_dir = dir.path().join(format!("run-{run}"));
        let mut cfg = config(&run_dir);
        // Every event of every crate, the most a log could say about the config.
        cfg.log_level = "trace".into();
        let path = dir.path().join(format!("node-{run}.toml"));
        std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
        let text = startup_output(&path, env_token);
        assert!(
            text.contains("node up"),
            "the startup log was captured:\n{text}"
        );
        assert!(
            !text.contains(TOKEN),
            "the config's token was logged:\n{text}"
        );
        assert!(
            !text.contains(ENV_TOKEN),
            "the environment's token was logged:\n{text}"
        );
    }
}
