//! One function per `ell` subcommand: parse nothing (clap did), talk to the cluster, print,
//! and map outcomes to exit codes through [`Fail`].

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ellipsis_console::admin::{load_token, AdminClient, ScheduleBody};
use ellipsis_console::app::{App, Tab};
use ellipsis_console::loadgen::{self, LoadConfig};
use ellipsis_console::model::{ActionNode, ClusterModel};
use ellipsis_console::poll::{trace_summary, PollConfig, Poller};
use ellipsis_console::ui::{bytes as fmt_bytes, render_to_text};
use ellipsis_core::client::{Client, ClientConfig, ClientError};
use ellipsis_core::protocol::{IoAttr, Status};
use ellipsis_core::stats::{JobState, JobStatus, RecoveryJob};
use ellipsis_core::Id;
use serde_json::json;

use crate::tui;
use crate::{
    BackendArgs, BackendCtl, BenchArgs, DefragAction, DefragArgs, Fail, Global, RecoverArgs,
    RecoverKind, TopArgs,
};

/// Largest object `ell put` reads into memory (the node's default frame bound).
const MAX_PUT_BYTES: u64 = ellipsis_core::protocol::DEFAULT_MAX_FRAME_BYTES;

/// `ELL_ADMIN_TOKEN`, else `--token-file` (or the config's `token_file`), else the config's
/// inline `token`.
fn token(g: &Global) -> Result<Option<String>, Fail> {
    let t = load_token(
        std::env::var("ELL_ADMIN_TOKEN").ok(),
        g.token_file.as_deref(),
    )
    .map_err(|e| Fail::usage(format!("admin token: {e}")))?;
    Ok(t.or_else(|| g.config_token.clone()))
}

fn admin_client(g: &Global) -> Result<AdminClient, Fail> {
    AdminClient::with_tls(token(g)?, g.timeout_ms, g.tls_config.clone())
        .map_err(|e| Fail::failure(e.to_string()))
}

fn client_config(g: &Global) -> Result<ClientConfig, Fail> {
    Ok(ClientConfig {
        remotes: g.remote.clone(),
        groups: g.groups.clone(),
        timeout_ms: g.timeout_ms,
        checker: g.checker,
        admin_token: token(g)?,
        ..ClientConfig::default()
    })
}

async fn connect(g: &Global) -> Result<Arc<Client>, Fail> {
    let cfg = client_config(g)?;
    Client::connect(cfg)
        .await
        .map_err(|e| Fail::failure(format!("cannot reach the cluster: {e}")))
}

/// HTTP addresses to poll: `--http`, or every node the route list names.
async fn http_seeds(g: &Global) -> Result<Vec<String>, Fail> {
    if !g.http.is_empty() {
        return Ok(g.http.clone());
    }
    let client = connect(g).await?;
    let seeds: Vec<String> = client
        .nodes()
        .values()
        .flatten()
        .map(|a| a.to_string())
        .collect();
    if seeds.is_empty() {
        return Err(Fail::failure(
            "no node announces an HTTP address; pass --http HOST:PORT",
        ));
    }
    Ok(seeds)
}

async fn poller(g: &Global, traces_per_node: usize) -> Result<Poller, Fail> {
    let seeds = http_seeds(g).await?;
    Poller::new(PollConfig {
        seeds,
        timeout_ms: g.timeout_ms,
        traces_per_node,
        tls: g.tls_config.clone(),
    })
    .map_err(|e| Fail::failure(e.to_string()))
}

fn key_id(g: &Global, key: &str) -> Id {
    Id::for_key(g.namespace.as_bytes(), key.as_bytes())
}

fn client_fail(key: &str, e: &ClientError) -> Fail {
    if e.status() == Status::NOT_FOUND {
        Fail::not_found(format!("not found: {key}"))
    } else {
        Fail::failure(format!("{key}: {e}"))
    }
}

fn print_json(v: &serde_json::Value) -> Result<(), Fail> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Fail::failure(e.to_string()))?;
    println!("{text}");
    Ok(())
}

fn view(name: &str) -> Result<Tab, Fail> {
    Tab::ALL
        .iter()
        .copied()
        .find(|t| t.command() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = Tab::ALL.iter().map(|t| t.command()).collect();
            Fail::usage(format!(
                "unknown view {name:?}; one of {}",
                names.join(", ")
            ))
        })
}

/// `ell top`.
pub async fn top(g: &Global, a: &TopArgs) -> Result<(), Fail> {
    let tab = view(&a.view)?;
    if a.width < 20 || a.height < 5 {
        return Err(Fail::usage("--width must be ≥ 20 and --height ≥ 5"));
    }
    let mut poller = poller(g, 16).await?;
    let refresh_ms = a.refresh_ms.or(g.config_refresh_ms).unwrap_or(1_000);
    let mut app = App::new(g.read_only, refresh_ms.clamp(250, 60_000));
    app.tab = tab;
    if a.once {
        let model = poller.poll().await;
        let up = model.nodes_up();
        app.on_model(model);
        print!("{}", render_to_text(&app, a.width, a.height));
        if up == 0 {
            return Err(Fail::failure("no node answered"));
        }
        return Ok(());
    }
    let admin = admin_client(g)?;
    tui::run(app, poller, admin)
        .await
        .map_err(|e| Fail::failure(format!("console: {e:#}")))
}

fn status_text(m: &ClusterModel) -> String {
    let (used, free) = m.capacity();
    let mut out = format!(
        "{}/{} nodes up · groups {:?} · {:.0} ops/s · p99 {} µs · used {} · free {}\n",
        m.nodes_up(),
        m.nodes.len(),
        m.groups(),
        m.ops_per_s(),
        m.p99_us(),
        fmt_bytes(used),
        fmt_bytes(free)
    );
    for n in &m.nodes {
        let state = if n.up {
            "up".to_owned()
        } else {
            format!("DOWN ({})", n.error.as_deref().unwrap_or("no answer"))
        };
        out.push_str(&format!(
            "  {:<22} {:<10} groups {:?} backends {} errors {}\n",
            n.addr,
            state,
            n.groups,
            n.backends.len(),
            n.errors_total
        ));
    }
    let alerts = m.alerts();
    if alerts.is_empty() {
        out.push_str("no alerts\n");
    }
    for a in alerts {
        out.push_str(&format!(
            "{} {}\n",
            if a.severe { "ALERT" } else { "warn " },
            a.text
        ));
    }
    out
}

/// `ell status`.
pub async fn status(g: &Global) -> Result<(), Fail> {
    let mut poller = poller(g, 0).await?;
    let m = poller.poll().await;
    if g.json {
        print_json(&json!({
            "nodes_up": m.nodes_up(),
            "nodes_total": m.nodes.len(),
            "groups": m.groups(),
            "ops_per_s": m.ops_per_s(),
            "p99_us": m.p99_us(),
            "capacity": { "used_bytes": m.capacity().0, "free_bytes": m.capacity().1 },
            "alerts": m.alerts(),
            "nodes": m.nodes,
            "rings": m.rings,
            "jobs": m.jobs,
        }))?;
    } else {
        print!("{}", status_text(&m));
    }
    let down = m.nodes.len() - m.nodes_up();
    if m.nodes.is_empty() || down > 0 {
        return Err(Fail::failure(format!(
            "{down} of {} nodes down",
            m.nodes.len()
        )));
    }
    Ok(())
}

fn read_input(file: Option<&Path>) -> Result<Vec<u8>, Fail> {
    let mut data = Vec::new();
    let limit = MAX_PUT_BYTES + 1;
    let read = match file {
        None => std::io::stdin().take(limit).read_to_end(&mut data),
        Some(p) if p == Path::new("-") => std::io::stdin().take(limit).read_to_end(&mut data),
        Some(p) => std::fs::File::open(p)
            .and_then(|f| f.take(limit).read_to_end(&mut data))
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
    };
    read.map_err(|e| Fail::failure(format!("cannot read input: {e}")))?;
    if data.len() as u64 > MAX_PUT_BYTES {
        return Err(Fail::failure(format!(
            "input larger than {MAX_PUT_BYTES} bytes; split it or use the object HTTP API"
        )));
    }
    Ok(data)
}

/// `ell put`.
pub async fn put(g: &Global, key: &str, file: Option<&Path>) -> Result<(), Fail> {
    let data = read_input(file)?;
    let client = connect(g).await?;
    let size = data.len();
    let id = key_id(g, key);
    let w = client
        .write(&id, Bytes::from(data), IoAttr::default())
        .await
        .map_err(|e| client_fail(key, &e))?;
    if g.json {
        let groups: Vec<_> = w
            .groups
            .iter()
            .map(|r| {
                json!({
                    "group": r.group,
                    "ok": r.status.is_ok(),
                    "status": r.status.name(),
                    "node": r.node.map(|n| n.to_string()),
                })
            })
            .collect();
        print_json(
            &json!({ "key": key, "id": id.to_string(), "size_bytes": size, "groups": groups }),
        )?;
    } else {
        let failed: Vec<String> = w
            .groups
            .iter()
            .filter(|r| !r.status.is_ok())
            .map(|r| format!("group {}: {}", r.group, r.status.name()))
            .collect();
        println!(
            "stored {key}: {size} bytes in groups {:?}{}",
            w.ok_groups(),
            if failed.is_empty() {
                String::new()
            } else {
                format!(" (failed: {})", failed.join(", "))
            }
        );
    }
    Ok(())
}

/// `ell get`.
pub async fn get(g: &Global, key: &str, output: Option<&Path>, trace: bool) -> Result<(), Fail> {
    let client = connect(g).await?;
    let r = client
        .read_traced(&key_id(g, key), 0, 0, trace)
        .await
        .map_err(|e| client_fail(key, &e))?;
    if trace && !g.json {
        // stderr: stdout carries the object's bytes.
        eprintln!("trace {:016x} (ell trace {:016x})", r.trace_id, r.trace_id);
    }
    if let Some(p) = output {
        std::fs::write(p, &r.data)
            .map_err(|e| Fail::failure(format!("cannot write {}: {e}", p.display())))?;
    }
    if g.json {
        let mut v = json!({
            "key": key,
            "group": r.group,
            "size_bytes": r.data.len(),
            "timestamp": { "sec": r.attr.ts_sec, "nsec": r.attr.ts_nsec },
            "user_flags": r.attr.user_flags,
        });
        if trace {
            v["trace_id"] = json!(format!("{:016x}", r.trace_id));
        }
        match (output, std::str::from_utf8(&r.data)) {
            (Some(p), _) => v["output"] = json!(p.display().to_string()),
            (None, Ok(text)) => v["data"] = json!(text),
            (None, Err(_)) => v["data_hex"] = json!(hex_string(&r.data)),
        }
        print_json(&v)?;
    } else if output.is_none() {
        let mut out = std::io::stdout().lock();
        out.write_all(&r.data)
            .and_then(|()| out.flush())
            .map_err(|e| Fail::failure(format!("cannot write stdout: {e}")))?;
    } else if let Some(p) = output {
        println!(
            "wrote {} bytes of {key} to {} (group {})",
            r.data.len(),
            p.display(),
            r.group
        );
    }
    Ok(())
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `ell rm`.
pub async fn rm(g: &Global, key: &str) -> Result<(), Fail> {
    let client = connect(g).await?;
    let w = client
        .remove(&key_id(g, key))
        .await
        .map_err(|e| client_fail(key, &e))?;
    if g.json {
        let groups: Vec<_> = w
            .groups
            .iter()
            .map(|r| json!({ "group": r.group, "ok": r.status.is_ok(), "status": r.status.name() }))
            .collect();
        print_json(&json!({ "key": key, "groups": groups }))?;
    } else {
        println!("removed {key} from groups {:?}", w.ok_groups());
    }
    Ok(())
}

/// `ell lookup`.
pub async fn lookup(g: &Global, key: &str) -> Result<(), Fail> {
    let client = connect(g).await?;
    let id = key_id(g, key);
    let results = client.lookup_all(&id).await;
    if g.json {
        let rows: Vec<_> = results
            .iter()
            .map(|r| {
                let mut v = json!({
                    "group": r.group,
                    "status": r.status.name(),
                    "node": r.node.map(|n| n.to_string()),
                });
                if let Some(i) = &r.info {
                    v["backend"] = json!(i.backend);
                    v["size_bytes"] = json!(i.attr.total_size);
                    v["timestamp"] = json!({ "sec": i.attr.ts_sec, "nsec": i.attr.ts_nsec });
                    v["path"] = json!(i.path);
                    v["data_offset"] = json!(i.data_offset);
                    v["checksum"] = json!(format!("{:016x}", i.attr.checksum));
                }
                v
            })
            .collect();
        print_json(&json!({ "key": key, "id": id.to_string(), "groups": rows }))?;
    } else {
        println!("{key} → {}", id.short());
        for r in &results {
            let node = r.node.map_or("-".to_owned(), |n| n.to_string());
            match &r.info {
                Some(i) => println!(
                    "  group {:<3} {node:<22} backend {:<3} {:>10} bytes  ts {}.{:09}  {} @ {}",
                    r.group,
                    i.backend,
                    i.attr.total_size,
                    i.attr.ts_sec,
                    i.attr.ts_nsec,
                    i.path,
                    i.data_offset
                ),
                None => println!("  group {:<3} {node:<22} {}", r.group, r.status.name()),
            }
        }
    }
    if results.iter().any(|r| r.status.is_ok()) {
        Ok(())
    } else if !results.is_empty() && results.iter().all(|r| r.status == Status::NOT_FOUND) {
        Err(Fail::not_found(format!("not found: {key}")))
    } else {
        Err(Fail::failure(format!("{key}: no group answered")))
    }
}

/// `ell bench`.
pub async fn bench(g: &Global, a: &BenchArgs) -> Result<(), Fail> {
    if !(a.duration_s > 0.0 && a.duration_s <= 86_400.0) {
        return Err(Fail::usage("--duration-s must be in (0, 86400]"));
    }
    let cfg = LoadConfig {
        keys: a.keys,
        value_bytes: a.value_bytes,
        concurrency: a.concurrency,
        read_ratio: a.read_ratio,
        duration: Duration::from_secs_f64(a.duration_s),
        namespace: g.namespace.as_bytes().to_vec(),
        seed: 0x5eed,
    };
    loadgen::validate(&cfg).map_err(Fail::usage)?;
    if a.value_bytes as u64 > MAX_PUT_BYTES {
        return Err(Fail::usage(format!(
            "--value-bytes must be ≤ {MAX_PUT_BYTES}"
        )));
    }
    let client = connect(g).await?;
    if a.prefill {
        let filled = loadgen::prefill(client.clone(), &cfg).await;
        if let Err(e) = filled {
            return Err(Fail::failure(format!("prefill: {e}")));
        }
    }
    let report = loadgen::run(client, cfg).await;
    if g.json {
        print_json(&serde_json::to_value(&report).map_err(|e| Fail::failure(e.to_string()))?)?;
    } else {
        print!("{}", report.to_text());
    }
    if report.ops == 0 || report.errors == report.ops {
        return Err(Fail::failure("no request succeeded"));
    }
    Ok(())
}

fn tree_lines(a: &ActionNode, depth: usize, total_us: u64, out: &mut String) {
    const BAR: usize = 40;
    let scale = |us: u64| (us as u128 * BAR as u128 / u128::from(total_us.max(1))) as usize;
    let (from, to) = (scale(a.start_us).min(BAR), scale(a.stop_us).min(BAR));
    let mut bar = " ".repeat(from);
    bar.push_str(&"█".repeat(to.saturating_sub(from).max(1)));
    out.push_str(&format!(
        "{:<40} {:>9} µs |{:<40}|\n",
        format!("{}{}", "  ".repeat(depth), a.name),
        a.stop_us.saturating_sub(a.start_us),
        bar
    ));
    for c in &a.children {
        tree_lines(c, depth + 1, total_us, out);
    }
}

/// `ell trace`.
pub async fn trace(g: &Global, id: Option<&str>, limit: usize) -> Result<(), Fail> {
    match id {
        Some(id) => {
            if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Fail::usage(format!(
                    "trace id must be 16 hex digits, got {id:?}"
                )));
            }
            let mut p = poller(g, 0).await?;
            // One poll learns every node of the cluster, so the id is asked of all of them.
            let _ = p.poll().await;
            match p
                .trace(id)
                .await
                .map_err(|e| Fail::failure(e.to_string()))?
            {
                None => Err(Fail::not_found(format!("no node has trace {id}"))),
                Some((node, tree)) => {
                    if g.json {
                        print_json(
                            &serde_json::to_value(&tree)
                                .map_err(|e| Fail::failure(e.to_string()))?,
                        )?;
                    } else {
                        let s = trace_summary(&tree, &node);
                        let mut out = format!(
                            "trace {} on {}: {} {} µs{}\n",
                            s.id,
                            s.node,
                            s.command,
                            s.duration_us,
                            if tree.complete { "" } else { " (incomplete)" }
                        );
                        tree_lines(&s.root, 0, s.root.stop_us, &mut out);
                        print!("{out}");
                    }
                    Ok(())
                }
            }
        }
        None => {
            let mut p = poller(g, limit.clamp(1, 1_000)).await?;
            let m = p.poll().await;
            if g.json {
                let rows: Vec<_> = m
                    .traces
                    .iter()
                    .map(|t| json!({ "id": t.id, "node": t.node, "command": t.command, "duration_us": t.duration_us }))
                    .collect();
                print_json(&json!(rows))?;
            } else {
                for t in &m.traces {
                    println!(
                        "{}  {:<22} {:<12} {:>9} µs",
                        t.id, t.node, t.command, t.duration_us
                    );
                }
            }
            Ok(())
        }
    }
}

fn refuse_read_only(g: &Global) -> Result<(), Fail> {
    if g.read_only {
        return Err(Fail::usage("--read-only: admin commands are disabled"));
    }
    Ok(())
}

/// `ell defrag`.
pub async fn defrag(g: &Global, a: &DefragArgs) -> Result<(), Fail> {
    if a.action == DefragAction::Status {
        return defrag_status(g, a).await;
    }
    refuse_read_only(g)?;
    let admin = admin_client(g)?;
    if !admin.has_token() {
        return Err(Fail::usage(
            "no admin token: set ELL_ADMIN_TOKEN or pass --token-file",
        ));
    }
    let mut p = poller(g, 0).await?;
    let _ = p.poll().await;
    let http = p
        .http_addr_of(&a.node)
        .ok_or_else(|| Fail::failure(format!("no node {} in the cluster", a.node)))?;
    let result = match a.action {
        DefragAction::Start => admin.backend_action(&http, a.backend, "defrag-start").await,
        DefragAction::StartCompact => {
            admin
                .backend_action(&http, a.backend, "defrag-start-compact")
                .await
        }
        DefragAction::Stop => admin.backend_action(&http, a.backend, "defrag-stop").await,
        // Answered above, without a token.
        DefragAction::Status => Ok(()),
        DefragAction::Schedule => {
            if !["auto", "timed", "scheduled", "none"].contains(&a.mode.as_str()) {
                return Err(Fail::usage("--mode must be auto, timed, scheduled or none"));
            }
            if a.hour > 23 || a.splay > 12 {
                return Err(Fail::usage("--hour must be 0..=23 and --splay 0..=12"));
            }
            admin
                .set_schedule(
                    &http,
                    a.backend,
                    &ScheduleBody {
                        mode: a.mode.clone(),
                        timeout_s: a.timeout_s,
                        time_hour: a.hour,
                        splay_hours: a.splay,
                        compact: a.compact,
                    },
                )
                .await
        }
    };
    result.map_err(|e| Fail::failure(e.to_string()))?;
    if g.json {
        print_json(&json!({ "ok": true, "node": a.node, "backend": a.backend }))?;
    } else {
        println!("done: {:?} backend {} on {}", a.action, a.backend, a.node);
    }
    Ok(())
}

/// `ell recover`.
/// The recovery request document (`POST /admin/recovery`, RECOVERY) for `ell recover`.
fn recovery_body(a: &RecoverArgs, groups: &[u32]) -> serde_json::Value {
    let mut body = json!({
        "kind": match a.kind {
            RecoverKind::Merge => "merge",
            RecoverKind::Dc => "dc",
        },
        "dry_run": a.dry_run,
        "groups": groups,
        "safe": a.safe,
        "verify": a.verify,
    });
    if let Some(s) = a.since {
        body["since_unix_s"] = json!(s);
    }
    if let Some((start, end)) = &a.key_range {
        body["key_range"] = json!([start, end]);
    }
    if let Some(n) = a.batch {
        body["batch"] = json!(n);
    }
    if let Some(r) = a.rate_limit {
        body["bytes_per_s"] = json!(r);
    }
    body
}

pub async fn recover(g: &Global, a: &RecoverArgs) -> Result<(), Fail> {
    refuse_read_only(g)?;
    if token(g)?.is_none() {
        return Err(Fail::usage(
            "no admin token: set ELL_ADMIN_TOKEN or pass --token-file",
        ));
    }
    let mut p = poller(g, 0).await?;
    let m = p.poll().await;
    let node = match &a.node {
        Some(n) => n.clone(),
        None => m
            .nodes
            .iter()
            .find(|n| n.up)
            .map(|n| n.addr.clone())
            .ok_or_else(|| Fail::failure("no node is up to run recovery"))?,
    };
    let http = p
        .http_addr_of(&node)
        .ok_or_else(|| Fail::failure(format!("no node {node} in the cluster")))?;
    let groups = if g.groups.is_empty() {
        m.groups()
    } else {
        g.groups.clone()
    };
    // The answer names the jobs fanned out to the other nodes, which the progress below
    // follows too.
    let started = start_recovery(g, &http, &recovery_body(a, &groups)).await?;
    let job = &started.job;
    let summary = format!(
        "job {} on {node}: {:?} {:?} ({}), {} more on other nodes",
        job.id,
        job.kind,
        job.state,
        job.target,
        started.fanned_out.len()
    );
    if a.detach {
        if g.json {
            print_json(&serde_json::to_value(&started).map_err(|e| Fail::failure(e.to_string()))?)?;
        } else {
            println!("{summary}");
        }
        return Ok(());
    }
    if !g.json {
        println!("{summary}");
    }
    let mut watched = vec![(http.clone(), job.clone())];
    for r in &started.fanned_out {
        let mut j = job.clone();
        j.id = r.job;
        watched.push((r.http_addr.clone(), j));
    }
    let ended = watch_jobs(g, watched).await?;
    let local = ended
        .first()
        .map(|(_, j)| j.clone())
        .ok_or_else(|| Fail::failure("no job followed"))?;
    if g.json {
        // The starting node's job at the top level (it parses as a job status), every
        // node's final job under "jobs".
        let mut v = serde_json::to_value(&local).map_err(|e| Fail::failure(e.to_string()))?;
        v["fanned_out"] =
            serde_json::to_value(&started.fanned_out).map_err(|e| Fail::failure(e.to_string()))?;
        v["jobs"] = ended
            .iter()
            .map(|(h, j)| json!({"http_addr": h, "job": j}))
            .collect();
        print_json(&v)?;
    } else {
        for (h, j) in &ended {
            println!(
                "job {} on {h}: {:?}: {}",
                j.id,
                j.state,
                j.result.as_deref().unwrap_or("")
            );
        }
    }
    match ended.iter().find(|(_, j)| j.state != JobState::Done) {
        None => Ok(()),
        Some((h, j)) => Err(Fail::failure(format!(
            "job {} on {h} ended {:?}",
            j.id, j.state
        ))),
    }
}

/// `POST /admin/recovery` on `http`: the node's job and the jobs it fanned out.
async fn start_recovery(
    g: &Global,
    http: &str,
    body: &serde_json::Value,
) -> Result<RecoveryJob, Fail> {
    let token = token(g)?.ok_or_else(|| Fail::usage("no admin token"))?;
    let url = g.tls_config.url(http, "/admin/recovery");
    let resp = ellipsis_console::poll::http_client(g.timeout_ms, &g.tls_config)
        .map_err(|e| Fail::failure(e.to_string()))?
        .post(&url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .map_err(|e| Fail::failure(format!("{url}: {e}")))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| Fail::failure(format!("{url}: {e}")))?;
    if !status.is_success() {
        return Err(Fail::failure(format!(
            "{url}: {status}: {}",
            String::from_utf8_lossy(&bytes).trim()
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| Fail::failure(format!("{url}: {e}")))
}

/// Polls `/stats/workers` of every node in `jobs` until each of its jobs finishes; draws one
/// progress bar for their sum on stderr meanwhile (unless `--json`). Returns the finished
/// jobs in the same order.
async fn watch_jobs(
    g: &Global,
    mut jobs: Vec<(String, JobStatus)>,
) -> Result<Vec<(String, JobStatus)>, Fail> {
    let client = ellipsis_console::poll::http_client(g.timeout_ms, &g.tls_config)
        .map_err(|e| Fail::failure(e.to_string()))?;
    // A live bar for a human; polling the nodes' stats is the only way to see progress.
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        for (http, last) in jobs.iter_mut().filter(|(_, j)| !j.state.is_finished()) {
            let url = g.tls_config.url(http, "/stats/workers");
            let listed: Vec<JobStatus> = match client.get(&url).send().await {
                Ok(r) => r
                    .json()
                    .await
                    .map_err(|e| Fail::failure(format!("{url}: {e}")))?,
                Err(e) => return Err(Fail::failure(format!("{url}: {e}"))),
            };
            *last = listed
                .into_iter()
                .find(|j| j.id == last.id)
                .ok_or_else(|| {
                    Fail::failure(format!("job {} is no longer listed on {http}", last.id))
                })?;
        }
        let total = sum_jobs(jobs.iter().map(|(_, j)| j));
        if !g.json {
            eprint!("\r{}", progress_line(&total));
            let _ = std::io::stderr().flush();
        }
        if total.state.is_finished() {
            if !g.json {
                eprintln!();
            }
            return Ok(jobs);
        }
    }
}

/// One status for a recovery running as several jobs: counters and rates summed, totals
/// known only if every job's is, running until the last job ends (then the worst outcome).
fn sum_jobs<'a>(jobs: impl Iterator<Item = &'a JobStatus>) -> JobStatus {
    let jobs: Vec<&JobStatus> = jobs.collect();
    let mut total = jobs.first().map(|j| (*j).clone()).unwrap_or(JobStatus {
        id: 0,
        kind: ellipsis_core::stats::JobKind::RecoveryDc,
        target: String::new(),
        state: JobState::Done,
        done_keys: 0,
        total_keys: None,
        done_bytes: 0,
        total_bytes: None,
        rate_keys_per_s: 0.0,
        rate_bytes_per_s: 0.0,
        errors: 0,
        rests: 0,
        rested_ms: 0,
        last_error: None,
        started_at_s: None,
        finished_at_s: None,
        result: None,
    });
    total.done_keys = jobs.iter().map(|j| j.done_keys).sum();
    total.done_bytes = jobs.iter().map(|j| j.done_bytes).sum();
    total.total_keys = jobs.iter().map(|j| j.total_keys).sum();
    total.rate_bytes_per_s = jobs.iter().map(|j| j.rate_bytes_per_s).sum();
    total.rate_keys_per_s = jobs.iter().map(|j| j.rate_keys_per_s).sum();
    total.errors = jobs.iter().map(|j| j.errors).sum();
    total.rests = jobs.iter().map(|j| j.rests).sum();
    total.rested_ms = jobs.iter().map(|j| j.rested_ms).sum();
    total.state = if let Some(j) = jobs.iter().find(|j| !j.state.is_finished()) {
        j.state
    } else if let Some(j) = jobs.iter().find(|j| j.state != JobState::Done) {
        j.state
    } else {
        JobState::Done
    };
    total
}

/// `[#####.....]  50%  512/1024 keys  12.5 MB/s  running`.
fn progress_line(j: &JobStatus) -> String {
    const WIDTH: usize = 30;
    let fraction = match j.total_keys {
        Some(t) if t > 0 => (j.done_keys as f64 / t as f64).min(1.0),
        _ if j.state.is_finished() => 1.0,
        _ => 0.0,
    };
    let filled = (fraction * WIDTH as f64).round() as usize;
    format!(
        "[{}{}] {:>3.0}%  {}/{} keys  {}/s  {:?}  ",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        fraction * 100.0,
        j.done_keys,
        j.total_keys.map_or("?".to_owned(), |t| t.to_string()),
        fmt_bytes(j.rate_bytes_per_s as u64),
        j.state
    )
}

/// `ell defrag status`: the backend's data-sort state, from the node's stats (no token).
async fn defrag_status(g: &Global, a: &DefragArgs) -> Result<(), Fail> {
    let mut p = poller(g, 0).await?;
    let m = p.poll().await;
    let http = p
        .http_addr_of(&a.node)
        .ok_or_else(|| Fail::failure(format!("no node {} in the cluster", a.node)))?;
    let node = m
        .nodes
        .iter()
        .find(|n| n.addr == a.node || p.http_addr_of(&n.addr).as_deref() == Some(&http))
        .ok_or_else(|| Fail::failure(format!("node {} did not answer", a.node)))?;
    let b = node
        .backends
        .iter()
        .find(|b| b.id == a.backend)
        .ok_or_else(|| Fail::failure(format!("no backend {} on {}", a.backend, a.node)))?;
    if g.json {
        print_json(&serde_json::to_value(b).map_err(|e| Fail::failure(e.to_string()))?)?;
    } else {
        let d = &b.defrag;
        println!(
            "backend {} on {}: mode {}{}, state {}{}, next start {}, {} of {} bases want defrag",
            b.id,
            node.addr,
            d.mode,
            d.window.map_or(String::new(), |(h, s)| format!(
                " (window {h:02}:00 ± {s} h)"
            )),
            d.state,
            d.progress
                .map_or(String::new(), |p| format!(" {:.0}%", p * 100.0)),
            d.next_start_s
                .map_or("none".to_owned(), |s| format!("at unix {s}")),
            b.want_defrag_bases,
            b.bases
        );
        if let Some(r) = &d.last_result {
            println!("last run: {r}");
        }
    }
    Ok(())
}

/// `ell backend enable|disable|ro|rw`.
pub async fn backend(g: &Global, a: &BackendArgs) -> Result<(), Fail> {
    refuse_read_only(g)?;
    let admin = admin_client(g)?;
    if !admin.has_token() {
        return Err(Fail::usage(
            "no admin token: set ELL_ADMIN_TOKEN or pass --token-file",
        ));
    }
    let mut p = poller(g, 0).await?;
    let _ = p.poll().await;
    let http = p
        .http_addr_of(&a.node)
        .ok_or_else(|| Fail::failure(format!("no node {} in the cluster", a.node)))?;
    let action = match a.action {
        BackendCtl::Enable => "enable",
        BackendCtl::Disable => "disable",
        BackendCtl::Ro => "read-only",
        BackendCtl::Rw => "writable",
    };
    admin
        .backend_action(&http, a.backend, action)
        .await
        .map_err(|e| Fail::failure(e.to_string()))?;
    if g.json {
        print_json(&json!({ "ok": true, "node": a.node, "backend": a.backend, "action": action }))?;
    } else {
        println!("done: {action} backend {} on {}", a.backend, a.node);
    }
    Ok(())
}
