//! Bad input on real sockets against one real node: slow, half-open, idle, excess and
//! non-reading clients on the protocol port; slow headers, slow and oversized bodies and excess
//! connections on HTTP; admin calls without the token; names that look like paths.
//!
//! Every limit is set small in the test config so the tests stay fast. Tests never sleep to
//! synchronise: they wait for the node to close a connection (EOF or reset) under a deadline
//! that is far above the configured limit, and check that other clients are served meanwhile.
//! The only sleeps are the slowloris client's pauses between bytes, which *are* the behaviour
//! under test.

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ellipsis_core::client::{Checker, Client, ClientConfig, Conn};
use ellipsis_core::protocol::cmd::auth::Auth;
use ellipsis_core::protocol::cmd::backend_control::{BackendAction, BackendControl};
use ellipsis_core::protocol::cmd::io::IoPayload;
use ellipsis_core::protocol::cmd::key_range::KeyRange;
use ellipsis_core::protocol::cmd::notify::{NotifyEvent, NotifyKind, NotifyRequest};
use ellipsis_core::protocol::cmd::send::{SendMode, SendRequest};
use ellipsis_core::protocol::cmd::Payload;
use ellipsis_core::protocol::{flags, Command, Header, IoAttr, Status, HEADER_SIZE};
use ellipsis_core::Id;
use ellipsis_node::config::{BackendConfig, NodeConfig, SyncSetting};
use ellipsis_node::server::{RunningNode, StartOptions};
use ellipsis_tests::{poll_until, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far above every limit set below: reaching it means a limit was not enforced.
const DEADLINE: Duration = Duration::from_secs(10);
/// The small limit the tests configure (ms).
const LIMIT_MS: u64 = 300;

/// One node with one backend in group 1, in its own temp dir.
struct One {
    node: Option<RunningNode>,
    dir: tempfile::TempDir,
}

impl One {
    async fn start(tune: impl FnOnce(&mut NodeConfig)) -> One {
        One::start_with(tune, None).await
    }

    /// [`One::start`] with an engine IO hook.
    async fn start_with(
        tune: impl FnOnce(&mut NodeConfig),
        engine_faults: Option<Arc<dyn eblob::FaultInjector>>,
    ) -> One {
        ellipsis_tests::tracer();
        let dir = tempfile::tempdir().unwrap();
        let mut config = NodeConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            admin_token: Some(TOKEN.into()),
            check_timeout_s: 3600,
            blocking_threads: 4,
            backends: vec![BackendConfig {
                id: 1,
                group: 1,
                dir: dir.path().join("backend-1"),
                ring_ids: 4,
                sync: SyncSetting::Never,
                min_free_space_bytes: 0,
                ..BackendConfig::default()
            }],
            ..NodeConfig::default()
        };
        tune(&mut config);
        let options = StartOptions {
            tracer: Some(ellipsis_tests::tracer()),
            engine_faults,
            ..StartOptions::default()
        };
        let node = ellipsis_node::server::start_with(config, options)
            .await
            .unwrap();
        One {
            node: Some(node),
            dir,
        }
    }

    fn running(&self) -> &RunningNode {
        self.node.as_ref().unwrap()
    }

    fn addr(&self) -> SocketAddr {
        self.running().addr
    }

    fn http(&self) -> SocketAddr {
        self.running().http_addr.unwrap()
    }

    async fn client(&self) -> std::sync::Arc<Client> {
        Client::connect(ClientConfig {
            remotes: vec![self.addr()],
            groups: vec![1],
            checker: Checker::All,
            timeout_ms: 5_000,
            admin_token: Some(TOKEN.into()),
            ..ClientConfig::default()
        })
        .await
        .unwrap()
    }

    /// The node's `/stats/io` over HTTP.
    async fn http_io(&self) -> ellipsis_core::stats::IoStats {
        reqwest::get(format!("http://{}/stats/io", self.http()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        self.node.take().unwrap().stop().await.unwrap();
    }
}

fn key(i: u64) -> Id {
    Id::for_key(b"badinput", format!("key-{i}").as_bytes())
}

/// Prove the node still serves normal clients: a write and a read back through the library.
async fn served(one: &One, i: u64) {
    served_at(one.addr(), i).await;
}

/// [`served`] against a node at `addr`.
async fn served_at(addr: SocketAddr, i: u64) {
    let client = Client::connect(ClientConfig {
        remotes: vec![addr],
        groups: vec![1],
        checker: Checker::All,
        timeout_ms: 5_000,
        admin_token: Some(TOKEN.into()),
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    let value = Bytes::from(format!("value-{i}").into_bytes());
    client
        .write(&key(i), value.clone(), IoAttr::default())
        .await
        .unwrap();
    assert_eq!(client.read(&key(i), 0, 0).await.unwrap().data, value);
}

/// Wait until the node closes `sock`: reads (and discards) until EOF or a reset. Returns the
/// bytes read before the close. Panics if the connection is still open at the deadline.
async fn closed_by_node(sock: &mut (impl AsyncReadExt + Unpin)) -> usize {
    let mut total = 0;
    let mut buf = vec![0u8; 64 << 10];
    let started = Instant::now();
    loop {
        let left = DEADLINE
            .checked_sub(started.elapsed())
            .expect("the node did not close the connection before the deadline");
        match tokio::time::timeout(left, sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return total,
            Ok(Ok(n)) => total += n,
            Err(_) => panic!("the node did not close the connection before the deadline"),
        }
    }
}

/// One request frame on a raw socket, and its reply (header + payload).
async fn raw_call(
    sock: &mut TcpStream,
    cmd: Command,
    trans: u64,
    payload: &[u8],
) -> (Header, Vec<u8>) {
    let mut h = Header::request(cmd, Id::ZERO, 1, trans);
    h.size = payload.len() as u64;
    sock.write_all(&h.encode()).await.unwrap();
    sock.write_all(payload).await.unwrap();
    raw_reply(sock).await
}

async fn raw_reply(sock: &mut TcpStream) -> (Header, Vec<u8>) {
    let mut head = [0u8; HEADER_SIZE];
    tokio::time::timeout(DEADLINE, sock.read_exact(&mut head))
        .await
        .expect("reply in time")
        .unwrap();
    let h = Header::decode(&head).unwrap();
    let mut body = vec![0u8; h.size as usize];
    sock.read_exact(&mut body).await.unwrap();
    (h, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_frame_is_cut_at_the_frame_read_timeout_while_others_are_served() {
    let one = One::start(|c| c.frame_read_timeout_ms = LIMIT_MS).await;
    let sock = TcpStream::connect(one.addr()).await.unwrap();
    let (mut rd, mut wr) = sock.into_split();
    // A PING with a 64-byte payload, sent one byte every 20 ms: it would need ~3.5 s.
    let mut h = Header::request(Command::Ping, Id::ZERO, 1, 1);
    h.size = 64;
    let mut frame = h.encode().to_vec();
    frame.extend_from_slice(&[0u8; 64]);
    let total = frame.len();
    let trickle = tokio::spawn(async move {
        let mut sent = 0;
        for b in frame {
            if wr.write_all(&[b]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sent
    });
    // Others are served while the slow client trickles.
    served(&one, 1).await;
    assert_eq!(
        closed_by_node(&mut rd).await,
        0,
        "no reply to a partial frame"
    );
    let sent = trickle.await.unwrap();
    assert!(
        sent < total,
        "the frame was cut before it completed ({sent} of {total} bytes)"
    );
    served(&one, 2).await;
    one.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_is_closed_after_the_frame_read_timeout() {
    let one = One::start(|c| c.frame_read_timeout_ms = LIMIT_MS).await;
    let mut sock = TcpStream::connect(one.addr()).await.unwrap();
    // Half a header, then silence.
    let h = Header::request(Command::Ping, Id::ZERO, 1, 1).encode();
    sock.write_all(&h[..HEADER_SIZE / 2]).await.unwrap();
    assert_eq!(closed_by_node(&mut sock).await, 0);
    // A header announcing a payload that never comes is cut the same way.
    let mut sock = TcpStream::connect(one.addr()).await.unwrap();
    let mut h = Header::request(Command::Write, key(1), 1, 2);
    h.size = 1 << 20;
    sock.write_all(&h.encode()).await.unwrap();
    sock.write_all(&[7u8; 1000]).await.unwrap();
    assert_eq!(closed_by_node(&mut sock).await, 0);
    // The room the node took for that payload is given back with the connection.
    let node = one.running().node.clone();
    poll_until(DEADLINE, "the cut frame's room was kept", || {
        ellipsis_node::stats::collect(&node).io.receive_buffer_bytes == 0
    })
    .await;
    served(&one, 3).await;
    one.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_idle_timeout_but_watchers_stay() {
    let one = One::start(|c| c.idle_timeout_ms = LIMIT_MS).await;
    // A watcher subscribes first, so it has been silent longer than the idle connection below.
    let k = key(10);
    let watcher = Conn::connect(one.addr(), 1 << 30, DEADLINE).await.unwrap();
    let mut events = watcher
        .request(
            Header::request(Command::Notify, k, 1, 0),
            NotifyRequest { subscribe: true }.encode(),
            DEADLINE,
        )
        .await
        .unwrap();
    let ack = events.next().await.unwrap().unwrap();
    assert!(ack.header.has(flags::MORE) && ack.header.status.is_ok());
    let mut idle = TcpStream::connect(one.addr()).await.unwrap();
    let (reply, _) = raw_call(&mut idle, Command::Ping, 5, &[]).await;
    assert_eq!((reply.trans, reply.status), (5, Status::OK));
    assert_eq!(closed_by_node(&mut idle).await, 0, "idle connection closed");
    // The watcher, silent even longer, still gets events.
    let client = one.client().await;
    client
        .write(&k, Bytes::from_static(b"hello"), IoAttr::default())
        .await
        .unwrap();
    let e = NotifyEvent::decode(&events.next().await.unwrap().unwrap().payload).unwrap();
    assert_eq!((e.kind, e.attr.size), (NotifyKind::Write, 5));
    one.stop().await;
}

/// Most resident memory one idle connection may cost the node process. Measured at 16.7 KiB
/// (2026-12-02, 2 000 connections after one PING each, release build, four runs within 0.3 %:
/// its tasks, socket and frame buffers, which grow only as bytes arrive); the bound is about
/// 3.8× that, room for allocator and kernel variation while still catching a per-connection
/// buffer of a frame's size (64 MiB by default) or a thread per connection (8 MiB stacks).
const MAX_IDLE_CONNECTION_RSS_BYTES: u64 = 64 << 10;

/// A node in its own process (the soak binary's `--run-node` mode), so its resident memory
/// is its own and not shared with this test binary's other tests running in parallel.
struct NodeProcess {
    child: std::process::Child,
    addr: SocketAddr,
    /// Held open: the child stops when its stdin closes.
    _stdin: std::process::ChildStdin,
    _dir: tempfile::TempDir,
}

impl NodeProcess {
    fn start(tune: impl FnOnce(&mut NodeConfig)) -> NodeProcess {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let mut config = NodeConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            http_listen: None,
            admin_token: Some(TOKEN.into()),
            check_timeout_s: 3600,
            blocking_threads: 4,
            log_level: "warn".into(),
            backends: vec![BackendConfig {
                id: 1,
                group: 1,
                dir: dir.path().join("backend-1"),
                ring_ids: 4,
                sync: SyncSetting::Never,
                min_free_space_bytes: 0,
                ..BackendConfig::default()
            }],
            ..NodeConfig::default()
        };
        tune(&mut config);
        let path = dir.path().join("node.toml");
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_soak"))
            .arg("--run-node")
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads every line (so the pipe never fills) and reports the serving address, or
        // everything the process said if it exits first.
        std::thread::spawn(move || {
            let mut said = Vec::new();
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("soak-node: serving (listen ") {
                    let addr = rest.split(',').next().unwrap_or_default().to_owned();
                    let _ = tx.send(Ok(addr));
                }
                said.push(line);
            }
            let _ = tx.send(Err(said.join("\n")));
        });
        let addr = match rx.recv_timeout(DEADLINE * 6) {
            Ok(Ok(addr)) => addr.parse().unwrap(),
            other => {
                let _ = child.kill();
                panic!("the node process did not start: {other:?}");
            }
        };
        NodeProcess {
            child,
            addr,
            _stdin: stdin,
            _dir: dir,
        }
    }

    /// Its resident memory, from `/proc/PID/status`.
    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cost_bounded_memory_in_the_node_process_while_others_are_served() {
    const IDLE: usize = 2_000;
    let node = NodeProcess::start(|c| c.max_connections = 2_100);
    // Warm up: the first write opens the engine's base and the first connections grow the
    // allocator's arenas, so the baseline is a serving node, not a cold one.
    served_at(node.addr, 1).await;
    let mut warm = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(node.addr).await.unwrap();
        let (h, _) = raw_call(&mut s, Command::Ping, i, &[]).await;
        assert_eq!(h.status, Status::OK);
        warm.push(s);
    }
    drop(warm);
    let rss_before = node.rss_bytes();
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let mut s = TcpStream::connect(node.addr).await.unwrap();
        // A round trip proves the node accepted it and holds its state.
        let (h, _) = raw_call(&mut s, Command::Ping, i as u64, &[]).await;
        assert_eq!(h.status, Status::OK);
        idle.push(s);
    }
    let rss_after = node.rss_bytes();
    let per_connection = rss_after.saturating_sub(rss_before) / IDLE as u64;
    eprintln!(
        "{IDLE} idle connections: node RSS {} -> {} KiB, {per_connection} bytes per connection (bound {MAX_IDLE_CONNECTION_RSS_BYTES})",
        rss_before >> 10,
        rss_after >> 10
    );
    // Others are served while they are held, and every 100th idle one still answers.
    for i in 0..20 {
        served_at(node.addr, 100 + i).await;
    }
    for (i, s) in idle.iter_mut().enumerate().step_by(100) {
        let (h, _) = raw_call(s, Command::Ping, 10_000 + i as u64, &[]).await;
        assert_eq!((h.trans, h.status), (10_000 + i as u64, Status::OK));
    }
    assert!(
        per_connection <= MAX_IDLE_CONNECTION_RSS_BYTES,
        "{per_connection} bytes of node memory per idle connection (bound {MAX_IDLE_CONNECTION_RSS_BYTES})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_max_connections_gets_eagain_with_the_reason() {
    let one = One::start(|c| c.max_connections = 3).await;
    let mut held = Vec::new();
    for i in 0..3 {
        let mut s = TcpStream::connect(one.addr()).await.unwrap();
        let (h, _) = raw_call(&mut s, Command::Ping, i, &[]).await;
        assert_eq!(h.status, Status::OK);
        held.push(s);
    }
    let mut extra = TcpStream::connect(one.addr()).await.unwrap();
    let (h, body) = raw_call(&mut extra, Command::Ping, 42, &[]).await;
    assert_eq!((h.trans, h.status), (42, Status::AGAIN));
    let why = String::from_utf8(body).unwrap();
    assert!(why.contains("max_connections"), "{why}");
    assert_eq!(closed_by_node(&mut extra).await, 0);
    // A freed slot is usable again once the node has seen the close (bounded retries: each
    // refused attempt is answered at once, so this waits on the node, not on a timer).
    drop(held.pop());
    let started = Instant::now();
    loop {
        let mut s = TcpStream::connect(one.addr()).await.unwrap();
        let (h, _) = raw_call(&mut s, Command::Ping, 43, &[]).await;
        if h.status == Status::OK {
            break;
        }
        assert_eq!(h.status, Status::AGAIN);
        assert!(started.elapsed() < DEADLINE, "the slot was never freed");
        tokio::task::yield_now().await;
    }
    one.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_replies_is_dropped_while_others_are_served() {
    let one = One::start(|c| {
        c.send_timeout_ms = LIMIT_MS;
        c.max_requests_per_connection = 64;
    })
    .await;
    let big = Bytes::from(vec![0x5au8; 1 << 20]);
    one.client()
        .await
        .write(&key(20), big, IoAttr::default())
        .await
        .unwrap();
    // A small receive buffer so the node's replies back up quickly.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut hog = sock.connect(one.addr()).await.unwrap();
    let mut h = Header::request(Command::Read, key(20), 1, 0);
    let read = IoPayload::default().encode();
    h.size = read.len() as u64;
    let started = Instant::now();
    let mut requests = 0u64;
    // Pipeline 1 MiB reads and never read a reply, until the node hangs up on us.
    let dropped = loop {
        h.trans = requests;
        let mut frame = h.encode().to_vec();
        frame.extend_from_slice(&read);
        let write = tokio::time::timeout(DEADLINE, hog.write_all(&frame)).await;
        match write {
            Ok(Ok(())) => requests += 1,
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
        if started.elapsed() > DEADLINE {
            break false;
        }
        if requests % 16 == 0 {
            // Others are served while the hog's replies pile up.
            served(&one, 200 + requests).await;
        }
    };
    assert!(
        dropped,
        "the node kept a non-reading client ({requests} requests)"
    );
    served(&one, 300).await;
    one.stop().await;
}

/// A raw HTTP exchange: send `request`, return everything the server sends before closing
/// (or before the deadline).
async fn http_raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
        .await
        .expect("the server answered and closed before the deadline");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_headers_must_arrive_within_the_header_timeout() {
    let one = One::start(|c| c.http_header_timeout_ms = LIMIT_MS).await;
    // Nothing at all.
    let mut silent = TcpStream::connect(one.http()).await.unwrap();
    closed_by_node(&mut silent).await;
    // Half the headers.
    let mut slow = TcpStream::connect(one.http()).await.unwrap();
    slow.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    closed_by_node(&mut slow).await;
    // A keep-alive connection left idle after a request is closed too.
    let mut kept = TcpStream::connect(one.http()).await.unwrap();
    kept.write_all(b"GET /stats/io HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut status = [0u8; 12];
    kept.read_exact(&mut status).await.unwrap();
    assert_eq!(&status, b"HTTP/1.1 200");
    closed_by_node(&mut kept).await;
    // Prompt clients are served.
    let r = reqwest::get(format!("http://{}/stats/io", one.http()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    one.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bodies_beyond_the_limit_get_413_and_slow_bodies_408() {
    let one = One::start(|c| {
        c.http_max_body_bytes = 1024;
        c.http_body_timeout_ms = LIMIT_MS;
    })
    .await;
    let put = |len: &str, extra: &str| {
        format!(
            "PUT /objects/k HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{len}Connection: close\r\n\r\n{extra}"
        )
    };
    // Announced too large: refused before reading.
    let r = http_raw(one.http(), put("Content-Length: 2048\r\n", "").as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    // Chunked, and larger than announced nowhere: refused once the limit is crossed.
    let mut chunked = put("Transfer-Encoding: chunked\r\n", "").into_bytes();
    for _ in 0..3 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'a'; 0x200]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = http_raw(one.http(), &chunked).await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    // Announced 100 bytes, sent 10, then silence.
    let r = http_raw(
        one.http(),
        put("Content-Length: 100\r\n", "0123456789").as_bytes(),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    // At the limit it is stored.
    let ok = reqwest::Client::new()
        .put(format!("http://{}/objects/k", one.http()))
        .bearer_auth(TOKEN)
        .body(vec![1u8; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
    one.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_beyond_the_limit_get_503() {
    let one = One::start(|c| c.http_max_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(one.http()).await.unwrap();
        s.write_all(b"GET /stats/io HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let r = http_raw(one.http(), b"GET /stats/io HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.contains("http_max_connections"), "{r}");
    drop(held);
    one.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_endpoint_and_command_refuses_without_the_token() {
    let one = One::start(|_| {}).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", one.http());
    let calls = [
        (reqwest::Method::POST, "/admin/backends/1/read-only", ""),
        (reqwest::Method::POST, "/admin/backends/1/defrag-start", ""),
        (
            reqwest::Method::PUT,
            "/admin/backends/1/defrag/schedule",
            r#"{"mode":"none"}"#,
        ),
        (reqwest::Method::GET, "/admin/jobs", ""),
        (reqwest::Method::POST, "/admin/jobs/1/cancel", ""),
        (reqwest::Method::POST, "/admin/recovery", r#"{"kind":"dc"}"#),
        (reqwest::Method::PUT, "/objects/k", "data"),
        (reqwest::Method::DELETE, "/objects/k", ""),
    ];
    for (method, path, body) in calls {
        for auth in [None, Some("Bearer wrong-token-0123456789"), Some(TOKEN)] {
            let mut req = http.request(method.clone(), format!("{base}{path}"));
            if let Some(a) = auth {
                // The bare token, without the Bearer scheme, is refused too.
                req = req.header("Authorization", a);
            }
            let r = req.body(body).send().await.unwrap();
            assert_eq!(r.status(), 401, "{method} {path} with {auth:?}");
        }
    }
    assert!(one
        .running()
        .node
        .backend(1)
        .unwrap()
        .read_only_reason()
        .is_none());
    // Protocol admin commands: refused without AUTH, and after a failed AUTH.
    let admin: [(Command, Vec<u8>); 4] = [
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
                groups: vec![2],
                ids: vec![key(1)],
                backend: None,
            }
            .encode(),
        ),
        (
            Command::DelRange,
            KeyRange {
                start: Id::ZERO,
                end: Id([0xff; 64]),
                limit: 0,
                io_flags: 0,
            }
            .encode(),
        ),
        (Command::Iterator, Vec::new()),
    ];
    let mut sock = TcpStream::connect(one.addr()).await.unwrap();
    for (i, (cmd, payload)) in admin.iter().enumerate() {
        let (h, _) = raw_call(&mut sock, *cmd, i as u64, payload).await;
        assert_eq!(h.status, Status::ACCESS, "{cmd} without AUTH");
    }
    let wrong = Auth {
        token: "wrong-token-0123456789".into(),
    }
    .encode();
    let (h, _) = raw_call(&mut sock, Command::Auth, 10, &wrong).await;
    assert_eq!(h.status, Status::ACCESS);
    for (i, (cmd, payload)) in admin.iter().enumerate() {
        let (h, _) = raw_call(&mut sock, *cmd, 20 + i as u64, payload).await;
        assert_eq!(h.status, Status::ACCESS, "{cmd} after a wrong AUTH");
    }
    assert!(one
        .running()
        .node
        .backend(1)
        .unwrap()
        .read_only_reason()
        .is_none());
    // With the right token the same command works.
    let right = Auth {
        token: TOKEN.into(),
    }
    .encode();
    let (h, _) = raw_call(&mut sock, Command::Auth, 30, &right).await;
    assert_eq!(h.status, Status::OK);
    let (h, _) = raw_call(&mut sock, admin[0].0, 31, &admin[0].1).await;
    assert_eq!(h.status, Status::OK);
    assert!(one
        .running()
        .node
        .backend(1)
        .unwrap()
        .read_only_reason()
        .is_some());
    // A wrong AUTH later revokes what the right one granted: the connection is as good as
    // its last presented token.
    let (h, _) = raw_call(&mut sock, Command::Auth, 40, &wrong).await;
    assert_eq!(h.status, Status::ACCESS);
    for (i, (cmd, payload)) in admin.iter().enumerate() {
        let (h, _) = raw_call(&mut sock, *cmd, 50 + i as u64, payload).await;
        assert_eq!(
            h.status,
            Status::ACCESS,
            "{cmd} after right then wrong AUTH"
        );
    }
    one.stop().await;
}

fn tree(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_look_like_paths_are_refused_or_hashed() {
    let one = One::start(|_| {}).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", one.http());
    // Ids and categories are parsed, never joined to a path: traversal is a client error.
    for (method, path) in [
        (reqwest::Method::GET, "/stats/..%2F..%2Fetc%2Fpasswd"),
        (reqwest::Method::GET, "/stats/%2E%2E"),
        (reqwest::Method::GET, "/traces/..%2F..%2Fetc%2Fpasswd"),
        (reqwest::Method::POST, "/admin/backends/..%2F1/enable"),
        (reqwest::Method::POST, "/admin/backends/1/..%2F..%2Fenable"),
        (reqwest::Method::POST, "/admin/jobs/..%2F1/cancel"),
        (
            reqwest::Method::PUT,
            "/admin/backends/%2Ftmp%2Fx/defrag/schedule",
        ),
    ] {
        let r = http
            .request(method.clone(), format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_client_error(),
            "{method} {path}: {}",
            r.status()
        );
    }
    // Object keys are hashed: a path-like key is an ordinary key and touches no path.
    served(&one, 1).await;
    let before = tree(one.dir.path());
    let url = format!("{base}/objects/..%2F..%2F..%2Ftmp%2Fellipsis-escape");
    let put = http
        .put(&url)
        .bearer_auth(TOKEN)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(
        http.get(&url).send().await.unwrap().text().await.unwrap(),
        "x"
    );
    assert_eq!(
        tree(one.dir.path()),
        before,
        "no file was created or renamed"
    );
    assert!(!std::path::Path::new("/tmp/ellipsis-escape").exists());
    one.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_client_that_never_reads_responses_is_dropped_while_others_are_served() {
    let one = One::start(|c| c.send_timeout_ms = LIMIT_MS).await;
    let url = format!("http://{}/objects/big", one.http());
    let put = reqwest::Client::new()
        .put(&url)
        .bearer_auth(TOKEN)
        .body(vec![0x5au8; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut hog = sock.connect(one.http()).await.unwrap();
    let get = b"GET /objects/big HTTP/1.1\r\nHost: x\r\n\r\n";
    let started = Instant::now();
    let mut sent = 0u64;
    // Pipelined GETs of 1 MiB, never reading a response, until the node hangs up.
    let dropped = loop {
        match tokio::time::timeout(DEADLINE, hog.write_all(get)).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
        if started.elapsed() > DEADLINE {
            break false;
        }
        if sent % 64 == 0 {
            let r = reqwest::get(format!("http://{}/stats/io", one.http()))
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "others are served meanwhile");
        }
    };
    assert!(
        dropped,
        "the node kept a non-reading HTTP client ({sent} requests)"
    );
    one.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_get_invalid_and_the_connection_keeps_serving() {
    let one = One::start(|_| {}).await;
    let mut s = TcpStream::connect(one.addr()).await.unwrap();
    let cases: [(Command, &[u8]); 4] = [
        (Command::Write, &[1, 2, 3]),
        (Command::Read, &[0; 5]),
        (Command::Notify, &[]),
        (Command::BulkRead, &[0xff; 7]),
    ];
    for (trans, (cmd, payload)) in (1u64..).zip(cases) {
        let (h, body) = raw_call(&mut s, cmd, trans, payload).await;
        let why = String::from_utf8_lossy(&body);
        assert_eq!(
            (h.trans, h.status),
            (trans, Status::INVALID),
            "{cmd:?}: {why}"
        );
        assert!(!why.is_empty(), "{cmd:?}: the reply says why");
        let (p, _) = raw_call(&mut s, Command::Ping, 100 + trans, &[]).await;
        assert_eq!(
            (p.trans, p.status),
            (100 + trans, Status::OK),
            "after {cmd:?} the same connection still serves"
        );
    }
    // A header of garbage (its size beyond any frame limit) is answered TOO_BIG, then closed.
    let mut junk = TcpStream::connect(one.addr()).await.unwrap();
    junk.write_all(&[0xff; HEADER_SIZE]).await.unwrap();
    let (h, _) = raw_reply(&mut junk).await;
    assert_eq!(h.status, Status::TOO_BIG);
    closed_by_node(&mut junk).await;
    served(&one, 1).await;
    one.stop().await;
}

/// Holds every engine call of one kind (reads unless made with [`IoGate::writes`]) while
/// closed: parks the threads that make them in the engine.
#[derive(Debug, Default)]
struct IoGate {
    writes: bool,
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    closed: bool,
    held: usize,
}

impl IoGate {
    /// A gate on engine writes.
    fn writes() -> IoGate {
        IoGate {
            writes: true,
            ..IoGate::default()
        }
    }

    fn set_closed(&self, closed: bool) {
        self.state.lock().unwrap().closed = closed;
        self.changed.notify_all();
    }

    fn held(&self) -> usize {
        self.state.lock().unwrap().held
    }
}

impl eblob::FaultInjector for IoGate {
    fn on_io(&self, op: eblob::IoOp, _: &std::path::Path, _: u64, _: u64) -> eblob::Fault {
        let gated = if self.writes {
            eblob::IoOp::Write
        } else {
            eblob::IoOp::Read
        };
        if op == gated {
            let mut s = self.state.lock().unwrap();
            if s.closed {
                s.held += 1;
                while s.closed {
                    s = self.changed.wait(s).unwrap();
                }
                s.held -= 1;
            }
        }
        eblob::Fault::None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_engine_pool_refuses_with_again_and_reports_its_queue() {
    let gate = Arc::new(IoGate::default());
    let one = One::start_with(
        |c| {
            c.blocking_threads = 1;
            c.blocking_queue_limit = 1;
        },
        Some(gate.clone()),
    )
    .await;
    let client = one.client().await;
    // Distinct keys: reads of one key would queue on its key lock, not in the pool.
    for i in 0..4 {
        client
            .write(&key(i), Bytes::from_static(b"queued"), IoAttr::default())
            .await
            .unwrap();
    }
    gate.set_closed(true);
    // One read takes the thread (held in the engine), one waits for it, two are refused.
    let first = {
        let c = client.clone();
        tokio::spawn(async move { c.read(&key(0), 0, 0).await })
    };
    poll_until(DEADLINE, "the first read never reached the engine", || {
        gate.held() != 0
    })
    .await;
    let waiting = {
        let c = client.clone();
        tokio::spawn(async move { c.read(&key(1), 0, 0).await })
    };
    let node = one.running().node.clone();
    poll_until(DEADLINE, "the second read never queued", || {
        ellipsis_node::stats::collect(&node).io.blocking_waiting != 0
    })
    .await;
    for i in 2..4 {
        let e = client.read(&key(i), 0, 0).await.unwrap_err();
        assert_eq!(e.status(), Status::AGAIN, "{e}");
    }
    let io = one.http_io().await;
    assert_eq!(
        (io.blocking_active, io.blocking_waiting, io.blocking_queue),
        (1, 1, 2),
        "{io:?}"
    );
    assert_eq!(
        (io.blocking_queue_limit, io.blocking_refused),
        (2, 2),
        "{io:?}"
    );
    gate.set_closed(false);
    for t in [first, waiting] {
        assert_eq!(&t.await.unwrap().unwrap().data[..], b"queued");
    }
    one.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_frames_wait_for_receive_buffer_room_and_every_byte_arrives() {
    const LARGE: usize = 3 << 19; // 1.5 MiB: two do not fit the 2 MiB receive buffer
    let one = One::start(|c| {
        c.max_frame_bytes = 2 << 20;
        c.receive_buffer_bytes = 2 << 20;
    })
    .await;
    let node = one.running().node.clone();
    let io = || ellipsis_node::stats::collect(&node).io;
    let value = |seed: u8| -> Vec<u8> { (0..LARGE).map(|i| (i as u8) ^ seed).collect() };
    // A raw client sends the header of a large WRITE and half its payload: the node has
    // taken room for all of it.
    let first = value(1);
    let (head, tail) = IoPayload {
        attr: IoAttr {
            size: LARGE as u64,
            ts_sec: 1,
            ..IoAttr::default()
        },
        data: Bytes::from(first.clone()),
    }
    .into_parts();
    let mut h = Header::request(Command::Write, key(100), 1, 1);
    h.flags |= flags::NEED_ACK;
    h.size = (head.len() + tail.len()) as u64;
    let mut raw = TcpStream::connect(one.addr()).await.unwrap();
    raw.write_all(&h.encode()).await.unwrap();
    raw.write_all(&head).await.unwrap();
    raw.write_all(&tail[..LARGE / 2]).await.unwrap();
    poll_until(DEADLINE, "the large frame took no room", || {
        io().receive_buffer_bytes != 0
    })
    .await;
    assert_eq!(
        io().receive_buffer_bytes,
        (h.size).div_ceil(1024) * 1024,
        "room for the whole announced payload"
    );
    // A second large write through the library waits for that room...
    let client = one.client().await;
    let second = {
        let c = client.clone();
        let v = Bytes::from(value(2));
        tokio::spawn(async move { c.write(&key(101), v, IoAttr::default()).await })
    };
    poll_until(DEADLINE, "the second frame never waited", || {
        io().receive_buffer_waits != 0
    })
    .await;
    // ...and small requests are served meanwhile.
    served(&one, 102).await;
    assert!(!second.is_finished());
    // The first frame completes: its write lands, then the second gets the room.
    raw.write_all(&tail[LARGE / 2..]).await.unwrap();
    let (reply, _) = raw_reply(&mut raw).await;
    assert_eq!(reply.status, Status::OK);
    second.await.unwrap().unwrap();
    assert_eq!(client.read(&key(100), 0, 0).await.unwrap().data, first);
    assert_eq!(client.read(&key(101), 0, 0).await.unwrap().data, value(2));
    // Room is given back when the requests are done.
    poll_until(DEADLINE, "room was not given back", || {
        io().receive_buffer_bytes == 0
    })
    .await;
    let io = one.http_io().await;
    assert_eq!(
        (
            io.receive_buffer_bytes,
            io.receive_buffer_bytes_limit,
            io.receive_buffer_waits
        ),
        (0, 2 << 20, 1),
        "{io:?}"
    );
    one.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_waited_for_room_longer_than_the_frame_timeout_still_arrives() {
    const LARGE: usize = 3 << 19; // 1.5 MiB: two do not fit the 2 MiB receive buffer
    let gate = Arc::new(IoGate::writes());
    let one = One::start_with(
        |c| {
            c.max_frame_bytes = 2 << 20;
            c.receive_buffer_bytes = 2 << 20;
            c.frame_read_timeout_ms = LIMIT_MS;
        },
        Some(gate.clone()),
    )
    .await;
    let node = one.running().node.clone();
    let client = one.client().await;
    let write = |k: u64| {
        let c = client.clone();
        tokio::spawn(async move {
            c.write(
                &key(k),
                Bytes::from(vec![k as u8; LARGE]),
                IoAttr::default(),
            )
            .await
        })
    };
    // The first large write holds its room while the engine holds its write.
    gate.set_closed(true);
    let first = write(200);
    poll_until(DEADLINE, "the first write never reached the engine", || {
        gate.held() != 0
    })
    .await;
    let second = write(201);
    poll_until(DEADLINE, "the second frame never waited", || {
        ellipsis_node::stats::collect(&node).io.receive_buffer_waits != 0
    })
    .await;
    // Waiting for room for longer than the frame read timeout is the behaviour under test:
    // the wait is the node's, so it must not count against the client's frame.
    tokio::time::sleep(Duration::from_millis(3 * LIMIT_MS)).await;
    gate.set_closed(false);
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    for k in [200u64, 201] {
        assert_eq!(
            client.read(&key(k), 0, 0).await.unwrap().data,
            vec![k as u8; LARGE]
        );
    }
    one.stop().await;
}
