//! `ell-node`: run a storage node from a TOML config file or quick-start flags.

/// See the `mimalloc` line in Cargo.toml for why.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use ellipsis_node::config::{BackendConfig, NodeConfig};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// An Ellipsis storage node.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// TOML configuration (see node/ell-node.sample.toml); flags below override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Protocol listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// HTTP listen address (stats, metrics, traces, objects, admin).
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Node to join (repeatable).
    #[arg(long = "remote")]
    remotes: Vec<String>,
    /// A backend as `DIR:GROUP` (repeatable; ids are assigned in order from 1).
    #[arg(long = "backend")]
    backends: Vec<String>,
    /// File holding the admin token (instead of the config or ELLIPSIS_ADMIN_TOKEN).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Log filter (EnvFilter syntax).
    #[arg(long)]
    log_level: Option<String>,
}

fn config(args: &Args) -> anyhow::Result<NodeConfig> {
    let mut c = match &args.config {
        Some(p) => NodeConfig::load(p).with_context(|| format!("config {}", p.display()))?,
        None => NodeConfig::default(),
    };
    if let Some(l) = args.listen {
        c.listen = vec![l];
    }
    if let Some(h) = args.http {
        c.http_listen = Some(h);
    }
    c.remotes.extend(args.remotes.iter().cloned());
    for spec in &args.backends {
        let Some((dir, group)) = spec.rsplit_once(':') else {
            bail!("--backend wants DIR:GROUP, got {spec:?}");
        };
        let group: u32 = group
            .parse()
            .with_context(|| format!("--backend {spec:?}: group must be a number"))?;
        c.backends.push(BackendConfig {
            id: c.backends.len() as u32 + 1,
            group,
            dir: PathBuf::from(dir),
            ..BackendConfig::default()
        });
    }
    if let Some(f) = &args.admin_token_file {
        let t =
            std::fs::read_to_string(f).with_context(|| format!("token file {}", f.display()))?;
        c.admin_token = Some(t.trim().to_owned());
    }
    if let Some(l) = &args.log_level {
        c.log_level.clone_from(l);
    }
    c.validate()?;
    if c.backends.is_empty() {
        bail!("no backends: give --config FILE or --backend DIR:GROUP");
    }
    Ok(c)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ell-node: {e:#}");
            std::process::exit(2);
        }
    };
    let tracer = react_trace::Tracer::new(react_trace::TracerConfig {
        sampling_rate: cfg.trace_sampling_rate,
        ring_capacity: cfg.trace_ring_size as usize,
        ..Default::default()
    })?;
    let mut filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .with_context(|| format!("log_level {:?}", cfg.log_level))?;
    // Admin operations are always on the record, whatever the level chosen for the rest,
    // unless the filter names the `audit` target itself.
    if !cfg.log_level.contains("audit") {
        filter = filter.add_directive("audit=info".parse()?);
    }
    tracing_subscriber::registry()
        .with(tracer.layer())
        .with(
            tracing_subscriber::fmt::layer()
                // Colour codes only for a person at a terminal, not in files or journald.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .with_filter(filter),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let node = ellipsis_node::server::start(cfg, Some(tracer)).await?;
        eprintln!(
            "ell-node: serving on {} (http {})",
            node.addr,
            node.http_addr.map_or("off".into(), |a| a.to_string())
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("ell-node: shutting down");
        node.stop().await?;
        Ok(())
    })
}
