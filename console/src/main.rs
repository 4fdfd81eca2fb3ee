//! `ell`: the Ellipsis console (`ell top`, the default) and command-line tool.
//!
//! Exit codes: 0 success, 1 failure (unreachable cluster, refused write, nodes down for
//! `status`), 2 usage errors, 3 key not found. The admin token comes from `ELL_ADMIN_TOKEN` or
//! `--token-file` and is never printed. Each subcommand is one function in [`commands`]; a new
//! one is a new `Cmd` variant and a new function there. `demo` is the exception: it lives in
//! [`demo`] because it alone links `ellipsis-node`.

mod commands;
mod demo;
mod tui;

/// See the `mimalloc` line in Cargo.toml for why.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ellipsis_console::config::{self, ConsoleConfig};
use ellipsis_console::poll::TlsConfig;
use ellipsis_core::client::Checker;
use ellipsis_core::Id;

/// Ellipsis console and command-line tool.
#[derive(Debug, Parser)]
#[command(name = "ell", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    /// `ell` alone is `ell top`: its options are taken without the subcommand too
    /// (`ell --once` is `ell top --once`).
    #[command(flatten)]
    top: TopArgs,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

/// Options every subcommand takes. Flags and environment variables win over the config file,
/// which wins over the defaults; [`Global::resolve`] merges them once, before any command.
#[derive(Clone, Debug, Args)]
pub struct Global {
    /// Config file (default: $XDG_CONFIG_HOME/ellipsis/console.toml, read only if it exists).
    #[arg(long = "config", global = true, env = "ELL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Node protocol address to start from (repeatable or comma-separated; default
    /// 127.0.0.1:1025).
    #[arg(
        long = "remote",
        global = true,
        env = "ELL_REMOTE",
        value_delimiter = ',',
        value_parser = parse_addr
    )]
    pub remote: Vec<SocketAddr>,
    /// Node HTTP address to poll (repeatable); skips discovery over the wire protocol.
    /// `https://HOST:PORT` speaks HTTPS (as `--tls` does).
    #[arg(long = "http", global = true, env = "ELL_HTTP", value_delimiter = ',')]
    pub http: Vec<String>,
    /// Groups to write to and read from, in read order (default: every group).
    #[arg(long, global = true, value_delimiter = ',')]
    pub groups: Vec<u32>,
    /// Write success rule: at-least-one, quorum or all.
    #[arg(long, global = true, default_value = "at-least-one", value_parser = parse_checker)]
    pub checker: Checker,
    /// Per-request timeout (default 5000).
    #[arg(long = "timeout-ms", global = true)]
    pub timeout_ms_flag: Option<u64>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Hide and refuse admin actions.
    #[arg(long, global = true)]
    pub read_only: bool,
    /// File whose first line is the admin token (`ELL_ADMIN_TOKEN` wins).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Speak HTTPS to the nodes' HTTP ports.
    #[arg(long, global = true)]
    pub tls: bool,
    /// PEM file of certificates to trust for HTTPS besides the system roots.
    #[arg(long, global = true)]
    pub ca_file: Option<PathBuf>,
    /// Key namespace.
    #[arg(long, global = true, default_value = "")]
    pub namespace: String,
    /// Per-request timeout, resolved.
    #[arg(skip)]
    pub timeout_ms: u64,
    /// The admin token given inline in the config file (used when no flag or env gives one).
    #[arg(skip)]
    pub config_token: Option<String>,
    /// `ell top`'s poll interval from the config file.
    #[arg(skip)]
    pub config_refresh_ms: Option<u64>,
    /// HTTP or HTTPS, and the CA to trust, resolved.
    #[arg(skip)]
    pub tls_config: TlsConfig,
}

impl Global {
    /// Merges the config file (given, or the default path if it exists) under the flags,
    /// strips `http://` / `https://` from HTTP addresses and loads the CA file. A bad file,
    /// address or CA is a usage error.
    pub fn resolve(
        &mut self,
        xdg_config_home: Option<&str>,
        home: Option<&str>,
    ) -> Result<(), Fail> {
        let file = match &self.config {
            Some(p) => Some(p.clone()),
            None => config::default_path(xdg_config_home, home).filter(|p| p.is_file()),
        };
        let cfg = match &file {
            Some(p) => config::load(p).map_err(|e| Fail::usage(e.to_string()))?,
            None => ConsoleConfig::default(),
        };
        let from = |key: &str| {
            format!(
                "config {}: {key}",
                file.as_deref().unwrap_or(Path::new("?")).display()
            )
        };
        if self.remote.is_empty() {
            for r in &cfg.remote {
                let a =
                    parse_addr(r).map_err(|e| Fail::usage(format!("{}: {e}", from("remote"))))?;
                self.remote.push(a);
            }
        }
        if self.remote.is_empty() {
            self.remote.push(SocketAddr::from(([127, 0, 0, 1], 1025)));
        }
        if self.http.is_empty() {
            self.http = cfg.http.clone();
        }
        let mut https = self.tls || cfg.tls.unwrap_or(false);
        let mut plain = false;
        for h in &mut self.http {
            if let Some(rest) = h.strip_prefix("https://") {
                https = true;
                *h = rest.trim_end_matches('/').to_owned();
            } else if let Some(rest) = h.strip_prefix("http://") {
                plain = true;
                *h = rest.trim_end_matches('/').to_owned();
            }
        }
        if https && plain {
            return Err(Fail::usage(
                "--http mixes http:// and https:// addresses; one console speaks one of them",
            ));
        }
        self.timeout_ms = self.timeout_ms_flag.or(cfg.timeout_ms).unwrap_or(5_000);
        self.read_only |= cfg.read_only.unwrap_or(false);
        if self.token_file.is_none() {
            match (&cfg.token, &cfg.token_file) {
                (Some(_), Some(_)) => {
                    return Err(Fail::usage(format!(
                        "{}: set token or token_file, not both",
                        from("token")
                    )))
                }
                (Some(t), None) => self.config_token = Some(t.clone()),
                (None, f) => self.token_file = f.clone(),
            }
        }
        self.config_refresh_ms = cfg.refresh_ms;
        let ca_file = self.ca_file.clone().or(cfg.ca_file);
        let ca_pem = match &ca_file {
            None => None,
            Some(p) => {
                let pem = std::fs::read(p)
                    .map_err(|e| Fail::usage(format!("CA file {}: {e}", p.display())))?;
                let ok = reqwest::Certificate::from_pem_bundle(&pem)
                    .map(|c| !c.is_empty())
                    .unwrap_or(false);
                if !ok {
                    return Err(Fail::usage(format!(
                        "CA file {}: no PEM certificate in it",
                        p.display()
                    )));
                }
                Some(pem)
            }
        };
        self.tls_config = TlsConfig {
            enabled: https,
            ca_pem,
        };
        Ok(())
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// The live console (default).
    Top(TopArgs),
    /// One-shot cluster summary; exit 1 when a node is down.
    Status,
    /// Store FILE (or stdin, `-`) under KEY.
    Put {
        /// Key.
        key: String,
        /// File to read, `-` or nothing for stdin.
        file: Option<PathBuf>,
    },
    /// Print the object stored under KEY (or write it to a file).
    Get {
        /// Key.
        key: String,
        /// Write the data here instead of stdout.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Trace the read on the node that serves it; prints its trace id (see `ell trace`).
        #[arg(long)]
        trace: bool,
    },
    /// Remove KEY from every group.
    Rm {
        /// Key.
        key: String,
    },
    /// Where KEY is stored, group by group.
    Lookup {
        /// Key.
        key: String,
    },
    /// Load generator: ops/s and latency percentiles.
    Bench(BenchArgs),
    /// Recent call trees, or one tree by id.
    Trace {
        /// A 16-hex-digit trace id.
        id: Option<String>,
        /// Trees per node when listing.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Data-sort control of one backend.
    Defrag(DefragArgs),
    /// Start a recovery job.
    Recover(RecoverArgs),
    /// Enable, disable, or switch one backend read-only / writable.
    Backend(BackendArgs),
    /// Start an embedded local cluster with a light load and open the console on it.
    Demo(demo::DemoArgs),
}

/// `ell top` options.
#[derive(Clone, Debug, PartialEq, Args)]
pub struct TopArgs {
    /// Print one frame as plain text and exit (no terminal needed).
    #[arg(long)]
    pub once: bool,
    /// Frame width for `--once`.
    #[arg(long, default_value_t = 160)]
    pub width: u16,
    /// Frame height for `--once`.
    #[arg(long, default_value_t = 48)]
    pub height: u16,
    /// Poll interval (`+`/`-` change it live; default 1000, or the config file's).
    #[arg(long)]
    pub refresh_ms: Option<u64>,
    /// View to open: overview, ring, node, defrag, recovery, traces, events.
    #[arg(long, default_value = "overview")]
    pub view: String,
}

impl Default for TopArgs {
    /// The clap defaults: what `ell` alone means.
    fn default() -> TopArgs {
        TopArgs {
            once: false,
            width: 160,
            height: 48,
            refresh_ms: None,
            view: "overview".into(),
        }
    }
}

/// `ell bench` options.
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Bytes per value written.
    #[arg(long, default_value_t = 1_024)]
    pub value_bytes: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Fraction of reads, 0..=1.
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Run time.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// Write every key once before measuring, so reads find their keys.
    #[arg(long)]
    pub prefill: bool,
    /// Client threads driving the load (1, like `redis-benchmark`'s default: one event loop
    /// for every connection and request, so the generator's own cross-thread wakeups do not
    /// share the cores with the nodes it measures).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
}

/// Data-sort actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DefragAction {
    /// Show mode, window, next planned start, state and progress.
    Status,
    /// Start now.
    Start,
    /// Start now, only bases that want it.
    StartCompact,
    /// Stop after the current base.
    Stop,
    /// Change the schedule (`--mode`, `--hour`, `--splay`, `--timeout-s`, `--compact`).
    Schedule,
}

/// `ell defrag` options.
#[derive(Clone, Debug, Args)]
pub struct DefragArgs {
    /// What to do.
    pub action: DefragAction,
    /// Node (protocol or HTTP address).
    pub node: String,
    /// Backend id on it.
    pub backend: u32,
    /// Schedule mode: auto, timed, scheduled, none.
    #[arg(long, default_value = "scheduled")]
    pub mode: String,
    /// Window centre hour (UTC).
    #[arg(long, default_value_t = 3)]
    pub hour: u8,
    /// Window half-width, hours.
    #[arg(long, default_value_t = 1)]
    pub splay: u8,
    /// Period of `timed`.
    #[arg(long, default_value_t = 86_400)]
    pub timeout_s: u64,
    /// Compact mode.
    #[arg(long)]
    pub compact: bool,
}

/// Backend control actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendCtl {
    /// Open it and announce its ring ranges.
    Enable,
    /// Withdraw its ranges and close it.
    Disable,
    /// Refuse writes.
    Ro,
    /// Accept writes again.
    Rw,
}

/// `ell backend` options.
#[derive(Clone, Debug, Args)]
pub struct BackendArgs {
    /// What to do.
    pub action: BackendCtl,
    /// Node (protocol or HTTP address).
    #[arg(long)]
    pub node: String,
    /// Backend id on it.
    #[arg(long)]
    pub backend: u32,
}

/// Recovery kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RecoverKind {
    /// Move keys to their owners after a ring change.
    Merge,
    /// Copy the newest replica to groups that lack it.
    Dc,
}

/// `ell recover` options.
#[derive(Clone, Debug, Args)]
pub struct RecoverArgs {
    /// Which recovery.
    pub kind: RecoverKind,
    /// Only report what would be copied.
    #[arg(long)]
    pub dry_run: bool,
    /// Node to run it on (default: the first node that answers).
    #[arg(long)]
    pub node: Option<String>,
    /// Return once the job started instead of following it to its end.
    #[arg(long)]
    pub detach: bool,
    /// Only records written at or after this time (Unix seconds).
    #[arg(long, value_name = "UNIX_S")]
    pub since: Option<u64>,
    /// Only keys in START..=END (hex ids, inclusive).
    #[arg(long, value_name = "START:END", value_parser = parse_key_range)]
    pub key_range: Option<(Id, Id)>,
    /// Merge: keep the local copy after moving it to its owner.
    #[arg(long)]
    pub safe: bool,
    /// Record locations each node processes per batch (the node's default: 256).
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    /// Throughput limit of each node's job in bytes per second (suffix K, M or G: powers of
    /// 1024).
    #[arg(long, value_name = "BYTES_PER_S", value_parser = parse_rate)]
    pub rate_limit: Option<u64>,
    /// dc: verify every replica in full (a scrub: reads each copy once) so that copies whose
    /// bytes rotted are found and replaced.
    #[arg(long)]
    pub verify: bool,
}

fn parse_key_range(s: &str) -> Result<(Id, Id), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not START:END"))?;
    let start: Id = a.parse().map_err(|e| format!("start: {e}"))?;
    let end: Id = b.parse().map_err(|e| format!("end: {e}"))?;
    if start > end {
        return Err("the range's start is after its end".into());
    }
    Ok((start, end))
}

fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
        _ => (t, ' '),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a byte rate such as 500K or 10M"))?;
    let scale: u64 = match unit {
        ' ' => 1,
        'K' => 1 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        other => return Err(format!("unknown unit {other:?} (K, M or G)")),
    };
    n.checked_mul(scale)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("{s:?} is not host:port: {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

fn parse_checker(s: &str) -> Result<Checker, String> {
    s.parse()
}

/// A failure with its exit code.
#[derive(Debug)]
pub struct Fail {
    /// 1 failure, 2 usage, 3 not found.
    pub code: u8,
    /// What to print on stderr.
    pub message: String,
}

impl Fail {
    /// Exit 1.
    pub fn failure(message: impl Into<String>) -> Fail {
        Fail {
            code: 1,
            message: message.into(),
        }
    }
    /// Exit 2.
    pub fn usage(message: impl Into<String>) -> Fail {
        Fail {
            code: 2,
            message: message.into(),
        }
    }
    /// Exit 3.
    pub fn not_found(message: impl Into<String>) -> Fail {
        Fail {
            code: 3,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for Fail {
    fn from(e: anyhow::Error) -> Fail {
        Fail::failure(format!("{e:#}"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `ell bench` sizes its own runtime (`--threads`); everything else gets one worker per core.
    let mut builder = match &cli.cmd {
        Some(Cmd::Bench(a)) if a.threads == 1 => tokio::runtime::Builder::new_current_thread(),
        Some(Cmd::Bench(a)) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(a.threads));
            b
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = builder.enable_all().build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ell: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let mut g = cli.global;
    let result = runtime.block_on(async move {
        g.resolve(
            std::env::var("XDG_CONFIG_HOME").ok().as_deref(),
            std::env::var("HOME").ok().as_deref(),
        )?;
        let cmd = match cli.cmd {
            None => Cmd::Top(cli.top),
            Some(cmd) if cli.top == TopArgs::default() => cmd,
            Some(_) => {
                return Err(Fail::usage(
                    "top options (--once, --view, --width, --height, --refresh-ms) go with `ell top` or no subcommand",
                ))
            }
        };
        match cmd {
            Cmd::Top(a) => commands::top(&g, &a).await,
            Cmd::Status => commands::status(&g).await,
            Cmd::Put { key, file } => commands::put(&g, &key, file.as_deref()).await,
            Cmd::Get { key, output, trace } => {
                commands::get(&g, &key, output.as_deref(), trace).await
            }
            Cmd::Rm { key } => commands::rm(&g, &key).await,
            Cmd::Lookup { key } => commands::lookup(&g, &key).await,
            Cmd::Bench(a) => commands::bench(&g, &a).await,
            Cmd::Trace { id, limit } => commands::trace(&g, id.as_deref(), limit).await,
            Cmd::Defrag(a) => commands::defrag(&g, &a).await,
            Cmd::Recover(a) => commands::recover(&g, &a).await,
            Cmd::Backend(a) => commands::backend(&g, &a).await,
            Cmd::Demo(a) => demo::demo(&g, &a).await,
        }
    });
    // Do not wait for lingering connection tasks at exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("ell: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
