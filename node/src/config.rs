//! `ell-node` configuration: a TOML file, validated as a whole before anything starts.
//!
//! Every option has a default (see `node/ell-node.sample.toml`, which a test keeps equal to
//! these defaults), unknown keys are errors (a typo must not silently fall back to a default),
//! and every limit is bounded. What it is not: live configuration. Run-time changes (data-sort
//! schedules, backend state) go through the admin API and are persisted by the node itself.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cache::CacheConfig;

/// Environment variable that overrides `admin_token`, so the secret need not sit in a file.
pub const ADMIN_TOKEN_ENV: &str = "ELLIPSIS_ADMIN_TOKEN";

/// The whole node configuration.
///
/// `Debug` shows every field but the admin token, which prints as `<redacted>` (or `<none>`):
/// configs end up in logs and panic messages, the token must not.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Wire-protocol listen addresses. Loopback by default: exposing a node is a decision.
    pub listen: Vec<SocketAddr>,
    /// The address announced to peers and clients in route lists, when it differs from the
    /// bound one (NAT, port forwarding, a proxy); `None` announces the first listen address.
    pub advertise_addr: Option<SocketAddr>,
    /// Nodes to join at start (`host:port`); the rest of the ring is learned from them.
    pub remotes: Vec<String>,
    /// HTTP port for stats, metrics, traces, admin and the object API; `None` disables it.
    pub http_listen: Option<SocketAddr>,
    /// Bearer token for admin operations and HTTP writes. Overridden by `ELLIPSIS_ADMIN_TOKEN`.
    /// Without a token admin operations are refused, never open.
    pub admin_token: Option<String>,
    /// Log filter in `tracing_subscriber::EnvFilter` syntax (`info`, `ellipsis_node=debug`).
    pub log_level: String,
    /// How often to reconnect to dead peers and refresh routes.
    pub check_timeout_s: u64,
    /// Default per-request timeout, for forwarded requests and the node's own client calls.
    pub wait_timeout_ms: u64,
    /// A prepared record still uncommitted after this long is an abandoned upload: recovery
    /// removes it when every newest replica of its key is one (a recovery request may override).
    pub prepare_timeout_s: u64,
    /// Largest accepted wire frame (header + payload); bigger frames close the connection.
    pub max_frame_bytes: u64,
    /// Memory, node-wide, for the payloads of large frames (above 64 KiB) while they arrive and
    /// while their requests run: such a payload is received into one buffer of exactly its
    /// size, and its connection stops reading until that fits. At least `max_frame_bytes`.
    pub receive_buffer_bytes: u64,
    /// Records this node copies to other nodes (recovery, server-send) go with `sendfile(2)`;
    /// off, each is read into a 1 MiB buffer and written from it. On loopback neither wins
    /// reliably (`recovery-bench --copy`, node/BENCHMARKS.md); measure both on your network.
    pub sendfile: bool,
    /// Protocol connections served at once; one more is accepted, its first request is answered
    /// with EAGAIN ("too many connections") and it is closed.
    pub max_connections: u32,
    /// A frame must arrive whole within this time of its first byte (slowloris, half-open
    /// clients); 0 disables the limit.
    pub frame_read_timeout_ms: u64,
    /// A protocol connection with no request in flight, no NOTIFY watch and nothing received
    /// for this long is closed; 0 disables the limit.
    pub idle_timeout_ms: u64,
    /// A protocol or HTTP connection whose replies cannot be written for this long (the client
    /// does not read) is closed; 0 disables the limit.
    pub send_timeout_ms: u64,
    /// Requests in flight on one protocol connection; more are answered with EAGAIN.
    pub max_requests_per_connection: u32,
    /// HTTP connections served at once; more get `503 Service Unavailable` and are closed.
    pub http_max_connections: u32,
    /// An HTTP client must send a request's headers within this time (also closes idle
    /// keep-alive connections).
    pub http_header_timeout_ms: u64,
    /// An HTTP request body must arrive whole within this time (408 otherwise).
    pub http_body_timeout_ms: u64,
    /// Largest HTTP request body (`PUT /objects`, admin JSON); larger ones get 413.
    pub http_max_body_bytes: u64,
    /// PEM certificate chain for HTTPS; with `http_tls_key` set the HTTP port speaks TLS only.
    pub http_tls_cert: Option<PathBuf>,
    /// PEM private key for `http_tls_cert`.
    pub http_tls_key: Option<PathBuf>,
    /// Threads running engine calls.
    pub blocking_threads: u32,
    /// Requests waiting for an engine thread before new ones are refused with EAGAIN.
    pub blocking_queue_limit: u32,
    /// Fraction of requests traced without the client asking (0.0 to 1.0).
    pub trace_sampling_rate: f64,
    /// Recent call trees kept for `/traces`.
    pub trace_ring_size: u32,
    /// Share of wall time each kind of background job may work (the rest it rests), so
    /// foreground latency holds while it runs.
    pub work_share: WorkShareConfig,
    /// The node's storage backends.
    #[serde(rename = "backend")]
    pub backends: Vec<BackendConfig>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 1025))],
            advertise_addr: None,
            remotes: Vec::new(),
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            admin_token: None,
            log_level: "info".to_owned(),
            check_timeout_s: 60,
            wait_timeout_ms: 5_000,
            prepare_timeout_s: 3_600,
            max_frame_bytes: 64 << 20,
            receive_buffer_bytes: 256 << 20,
            sendfile: true,
            max_connections: 1_024,
            frame_read_timeout_ms: 30_000,
            idle_timeout_ms: 3_600_000,
            send_timeout_ms: 30_000,
            max_requests_per_connection: 1_024,
            http_max_connections: 1_024,
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 120_000,
            http_max_body_bytes: 64 << 20,
            http_tls_cert: None,
            http_tls_key: None,
            blocking_threads: 16,
            blocking_queue_limit: 1_024,
            trace_sampling_rate: 0.001,
            trace_ring_size: 256,
            work_share: WorkShareConfig::default(),
            backends: Vec::new(),
        }
    }
}

/// Throttles of the node's background jobs, each a share of wall time in `0.01..=1.0`: after
/// a unit of work that took `t` a job rests `t * (1 - share) / share` (capped at a second), so
/// at 0.25 it works a quarter of the time and leaves the disk and CPUs to foreground requests
/// the rest. 1.0 never rests. Shown per job as `rests` / `rested_ms` in `/stats/workers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkShareConfig {
    /// Data-sort: rests between groups of bases (where a pause also waits).
    pub data_sort: f64,
    /// Recovery jobs whose request names no `work_share`: rests between batches.
    pub recovery: f64,
    /// ITERATOR: rests between records (on top of the client's flow control).
    pub iterator: f64,
    /// Server-send (key lists and backend iterations): rests between keys.
    pub server_send: f64,
    /// Periodic cache write-back: rests between objects (a shutdown or explicit flush never
    /// rests: it should end as soon as it can).
    pub cache_sync: f64,
}

impl Default for WorkShareConfig {
    fn default() -> Self {
        // Unthrottled by default: the copy-rate targets (BENCHMARKS.md) assume full speed;
        // an operator lowers a share where foreground latency matters more.
        WorkShareConfig {
            data_sort: 1.0,
            recovery: 1.0,
            iterator: 1.0,
            server_send: 1.0,
            cache_sync: 1.0,
        }
    }
}

impl WorkShareConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let all = [
            ("data_sort", self.data_sort),
            ("recovery", self.recovery),
            ("iterator", self.iterator),
            ("server_send", self.server_send),
            ("cache_sync", self.cache_sync),
        ];
        for (name, share) in all {
            if !(0.01..=1.0).contains(&share) {
                return Err(ConfigError::Invalid(format!(
                    "work_share.{name} must be between 0.01 and 1.0, got {share}"
                )));
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured so that a new field cannot be added without deciding here whether
        // it is a secret.
        let NodeConfig {
            listen,
            advertise_addr,
            remotes,
            http_listen,
            admin_token,
            log_level,
            check_timeout_s,
            wait_timeout_ms,
            prepare_timeout_s,
            max_frame_bytes,
            receive_buffer_bytes,
            sendfile,
            max_connections,
            frame_read_timeout_ms,
            idle_timeout_ms,
            send_timeout_ms,
            max_requests_per_connection,
            http_max_connections,
            http_header_timeout_ms,
            http_body_timeout_ms,
            http_max_body_bytes,
            http_tls_cert,
            http_tls_key,
            blocking_threads,
            blocking_queue_limit,
            trace_sampling_rate,
            trace_ring_size,
            work_share,
            backends,
        } = self;
        f.debug_struct("NodeConfig")
            .field("listen", listen)
            .field("advertise_addr", advertise_addr)
            .field("remotes", remotes)
            .field("http_listen", http_listen)
            .field("admin_token", &redacted(admin_token))
            .field("log_level", log_level)
            .field("check_timeout_s", check_timeout_s)
            .field("wait_timeout_ms", wait_timeout_ms)
            .field("prepare_timeout_s", prepare_timeout_s)
            .field("max_frame_bytes", max_frame_bytes)
            .field("receive_buffer_bytes", receive_buffer_bytes)
            .field("sendfile", sendfile)
            .field("max_connections", max_connections)
            .field("frame_read_timeout_ms", frame_read_timeout_ms)
            .field("idle_timeout_ms", idle_timeout_ms)
            .field("send_timeout_ms", send_timeout_ms)
            .field("max_requests_per_connection", max_requests_per_connection)
            .field("http_max_connections", http_max_connections)
            .field("http_header_timeout_ms", http_header_timeout_ms)
            .field("http_body_timeout_ms", http_body_timeout_ms)
            .field("http_max_body_bytes", http_max_body_bytes)
            .field("http_tls_cert", http_tls_cert)
            .field("http_tls_key", http_tls_key)
            .field("blocking_threads", blocking_threads)
            .field("blocking_queue_limit", blocking_queue_limit)
            .field("trace_sampling_rate", trace_sampling_rate)
            .field("trace_ring_size", trace_ring_size)
            .field("work_share", work_share)
            .field("backends", backends)
            .finish()
    }
}

/// How a secret shows in `Debug`: whether it is set, never what it is.
fn redacted(secret: &Option<String>) -> &'static str {
    match secret {
        Some(_) => "<redacted>",
        None => "<none>",
    }
}

/// One eblob backend: a directory, a replica group and the engine's options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    /// Unique within the node; names the backend in stats and admin commands.
    pub id: u32,
    /// Replica group this backend belongs to.
    pub group: u32,
    /// The eblob directory (created if missing).
    pub dir: PathBuf,
    /// Ring ids generated on first start (more for bigger disks); persisted in `dir` after.
    pub ring_ids: u32,
    /// `always` (fsync before acknowledging), `never`, or a period such as `5s`.
    pub sync: SyncSetting,
    /// Open base is closed and a new one started at this size.
    pub blob_size_bytes: u64,
    /// ... or at this many records.
    pub records_in_blob: u64,
    /// Records per index block in sorted bases.
    pub index_block_size: u32,
    /// A base wants data-sort when removed bytes reach this share of it.
    pub defrag_percentage: u8,
    /// Writes beyond this total size fail with "no space"; `None` means no limit.
    pub total_size_limit_bytes: Option<u64>,
    /// Writes fail with "no space" when the filesystem has less free space than this.
    pub min_free_space_bytes: u64,
    /// Start read-only (writes refused with EROFS).
    pub read_only: bool,
    /// At start, hash every record's data (reading the whole backend) and report damaged
    /// records then, instead of when they are read. Slow on big backends; headers, the
    /// last record of the open base and records past its index are always checked.
    pub verify_data_on_open: bool,
    /// The backend's SLRU cache; `size_bytes = 0` disables it.
    pub cache: CacheConfig,
    /// Data-sort scheduling.
    pub defrag: DefragConfig,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            id: 0,
            group: 0,
            dir: PathBuf::new(),
            ring_ids: 4,
            sync: SyncSetting::EverySeconds(1),
            blob_size_bytes: 10 << 30,
            records_in_blob: 50_000_000,
            index_block_size: 40,
            defrag_percentage: 25,
            total_size_limit_bytes: None,
            min_free_space_bytes: 1 << 30,
            read_only: false,
            verify_data_on_open: false,
            cache: CacheConfig::default(),
            defrag: DefragConfig::default(),
        }
    }
}

pub use ellipsis_core::stats::DefragMode;

/// Data-sort schedule of one backend (the initial one: the admin API can change it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DefragConfig {
    /// Scheduling mode.
    pub mode: DefragMode,
    /// Period for `timed`.
    pub timeout_s: u64,
    /// Centre of the daily window for `scheduled`, hour of day (0-23, UTC).
    pub time_hour: u8,
    /// Half-width of the daily window in hours (0-12).
    pub splay_hours: u8,
    /// Sort only bases that want it (removed share above `defrag_percentage`).
    pub compact: bool,
}

impl Default for DefragConfig {
    fn default() -> Self {
        DefragConfig {
            mode: DefragMode::Auto,
            timeout_s: 86_400,
            time_hour: 3,
            splay_hours: 1,
            compact: false,
        }
    }
}

/// Engine sync policy as written in the config: `always`, `never`, or `<N>s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncSetting {
    /// fsync before acknowledging every write.
    Always,
    /// fsync in the background every N seconds.
    EverySeconds(u32),
    /// Leave it to the kernel.
    Never,
}

impl FromStr for SyncSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(SyncSetting::Always),
            "never" => Ok(SyncSetting::Never),
            other => other
                .strip_suffix('s')
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|&n| n > 0)
                .map(SyncSetting::EverySeconds)
                .ok_or_else(|| {
                    format!(
                        "sync must be \"always\", \"never\" or a period like \"5s\", got {other:?}"
                    )
                }),
        }
    }
}

impl std::fmt::Display for SyncSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncSetting::Always => f.write_str("always"),
            SyncSetting::Never => f.write_str("never"),
            SyncSetting::EverySeconds(n) => write!(f, "{n}s"),
        }
    }
}

impl Serialize for SyncSetting {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SyncSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type (the message has the line).
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column (never the file's text).
        message: String,
    },
    /// Parsed, but a value is out of range or inconsistent with another.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Limits on values, so a typo cannot ask for a terabyte frame or a million threads.
const MAX_FRAME_BYTES: u64 = 1 << 30;
/// Large-frame receive memory: 64 GiB (permits are counted in KiB, see `server.rs`).
const MAX_RECEIVE_BUFFER_BYTES: u64 = 64 << 30;
const MAX_THREADS: u32 = 1_024;
const MAX_CONNECTIONS: u32 = 100_000;
const MAX_QUEUE: u32 = 1_000_000;
const MAX_RING_IDS: u32 = 1_024;
const MAX_TRACE_RING: u32 = 100_000;

impl NodeConfig {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        // The parser's own Display quotes the offending line, which may be the admin token's.
        let config: NodeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: ellipsis_core::config_text::located(text, e.span(), e.message()),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The address this node announces, given the address its listener is bound to.
    pub fn advertised(&self, bound: SocketAddr) -> SocketAddr {
        self.advertise_addr.unwrap_or(bound)
    }

    /// The admin token: the environment variable wins over the file.
    pub fn effective_admin_token(&self) -> Option<String> {
        std::env::var(ADMIN_TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| self.admin_token.clone())
    }

    /// Checks ranges and cross-field consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.listen.is_empty() {
            return bad("listen must name at least one address".into());
        }
        if !(1..=MAX_FRAME_BYTES).contains(&self.max_frame_bytes) {
            return bad(format!("max_frame_bytes must be 1..={MAX_FRAME_BYTES}"));
        }
        if !(self.max_frame_bytes..=MAX_RECEIVE_BUFFER_BYTES).contains(&self.receive_buffer_bytes) {
            return bad(format!(
                "receive_buffer_bytes must be max_frame_bytes ({})..={MAX_RECEIVE_BUFFER_BYTES}",
                self.max_frame_bytes
            ));
        }
        if !(1..=MAX_THREADS).contains(&self.blocking_threads) {
            return bad(format!("blocking_threads must be 1..={MAX_THREADS}"));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            return bad(format!("max_connections must be 1..={MAX_CONNECTIONS}"));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.http_max_connections) {
            return bad(format!(
                "http_max_connections must be 1..={MAX_CONNECTIONS}"
            ));
        }
        if !(1..=MAX_QUEUE).contains(&self.max_requests_per_connection) {
            return bad(format!(
                "max_requests_per_connection must be 1..={MAX_QUEUE}"
            ));
        }
        if self.http_header_timeout_ms == 0 || self.http_body_timeout_ms == 0 {
            return bad("http_header_timeout_ms and http_body_timeout_ms must be positive".into());
        }
        if !(1..=MAX_FRAME_BYTES).contains(&self.http_max_body_bytes) {
            return bad(format!("http_max_body_bytes must be 1..={MAX_FRAME_BYTES}"));
        }
        if self.http_tls_cert.is_some() != self.http_tls_key.is_some() {
            return bad("http_tls_cert and http_tls_key must be set together".into());
        }
        if !(1..=MAX_QUEUE).contains(&self.blocking_queue_limit) {
            return bad(format!("blocking_queue_limit must be 1..={MAX_QUEUE}"));
        }
        if !(0.0..=1.0).contains(&self.trace_sampling_rate) {
            return bad("trace_sampling_rate must be between 0.0 and 1.0".into());
        }
        if !(1..=MAX_TRACE_RING).contains(&self.trace_ring_size) {
            return bad(format!("trace_ring_size must be 1..={MAX_TRACE_RING}"));
        }
        if self.wait_timeout_ms == 0 || self.check_timeout_s == 0 {
            return bad("wait_timeout_ms and check_timeout_s must be positive".into());
        }
        self.work_share.validate()?;
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return bad("admin_token must be at least 16 characters".into());
        }
        let mut ids = HashSet::new();
        let mut dirs = HashSet::new();
        for b in &self.backends {
            let name = format!("backend {}", b.id);
            if !ids.insert(b.id) {
                return bad(format!("{name}: backend ids must be unique"));
            }
            if b.dir.as_os_str().is_empty() {
                return bad(format!("{name}: dir is required"));
            }
            if !dirs.insert(b.dir.clone()) {
                return bad(format!(
                    "{name}: dir {} is used by another backend",
                    b.dir.display()
                ));
            }
            if !(1..=MAX_RING_IDS).contains(&b.ring_ids) {
                return bad(format!("{name}: ring_ids must be 1..={MAX_RING_IDS}"));
            }
            if b.blob_size_bytes < 1 << 20 || b.records_in_blob == 0 {
                return bad(format!(
                    "{name}: blob_size_bytes must be >= 1 MiB and records_in_blob > 0"
                ));
            }
            if b.index_block_size == 0 || b.index_block_size > 65_536 {
                return bad(format!("{name}: index_block_size must be 1..=65536"));
            }
            if b.defrag_percentage == 0 || b.defrag_percentage > 100 {
                return bad(format!("{name}: defrag_percentage must be 1..=100"));
            }
            if b.defrag.time_hour > 23 || b.defrag.splay_hours > 12 {
                return bad(format!(
                    "{name}: defrag time_hour must be 0..=23 and splay_hours 0..=12"
                ));
            }
            if b.defrag.mode == DefragMode::Timed && b.defrag.timeout_s == 0 {
                return bad(format!(
                    "{name}: defrag timeout_s must be positive in timed mode"
                ));
            }
            if let Err(e) = crate::cache::Cache::<u8, ()>::new(b.cache.clone()) {
                return bad(format!("{name}: cache: {e}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../ell-node.sample.toml");

    #[test]
    fn debug_output_redacts_the_admin_token() {
        let token = "a-secret-admin-token-4b1d";
        let cfg = NodeConfig {
            admin_token: Some(token.into()),
            http_tls_key: Some(PathBuf::from("/etc/ellipsis/key.pem")),
            ..NodeConfig::default()
        };
        for text in [format!("{cfg:?}"), format!("{cfg:#?}")] {
            assert!(!text.contains(token), "token in {text}");
            assert!(text.contains("admin_token: \"<redacted>\""), "{text}");
            // The rest is still there: a path to a key file is not key material.
            assert!(text.contains("/etc/ellipsis/key.pem") && text.contains("max_frame_bytes"));
        }
        let none = format!("{:?}", NodeConfig::default());
        assert!(none.contains("admin_token: \"<none>\""), "{none}");
    }

    #[test]
    fn parse_errors_say_where_without_quoting_the_file() {
        let text = "log_level = \"warn\"\nadmin_token = \"a-secret-admin-token-4b1d\" oops\n";
        let e = NodeConfig::parse(text).unwrap_err().to_string();
        assert!(!e.contains("a-secret"), "token in {e}");
        assert!(e.contains("line 2, column 43"), "{e}");
        let e = NodeConfig::parse("log_levle = \"warn\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown field `log_levle`") && e.contains("line 1"),
            "{e}"
        );
    }

    #[test]
    fn sample_file_documents_exactly_the_defaults() {
        let sample = NodeConfig::parse(SAMPLE).expect("the sample parses");
        let mut expected = NodeConfig::default();
        // The sample shows one backend so its section is documented; its values are defaults
        // apart from the three that have none.
        expected.backends.push(BackendConfig {
            id: 1,
            group: 1,
            dir: PathBuf::from("/var/lib/ellipsis/backend-1"),
            ..BackendConfig::default()
        });
        assert_eq!(sample, expected);
    }

    /// Keys of every table in `v`, with their table path (`backend.cache.size_bytes`).
    fn keys(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
        let table = match v {
            toml::Value::Table(t) => t,
            toml::Value::Array(a) => {
                a.iter().for_each(|v| keys(prefix, v, out));
                return;
            }
            _ => return,
        };
        for (k, v) in table {
            let path = format!("{prefix}{k}");
            match v {
                toml::Value::Table(_) => keys(&format!("{path}."), v, out),
                toml::Value::Array(a) if a.first().is_some_and(toml::Value::is_table) => {
                    keys(&format!("{path}."), v, out)
                }
                _ => out.push(path),
            }
        }
    }

    #[test]
    fn sample_file_names_every_option() {
        // Equal values do not prove a key is documented: a missing key parses to its default.
        // Every option must appear, set or as a commented-out `# key =` example.
        let mut cfg = NodeConfig::default();
        cfg.backends.push(BackendConfig::default());
        cfg.advertise_addr = Some(SocketAddr::from(([127, 0, 0, 1], 1)));
        cfg.admin_token = Some("x".repeat(16));
        cfg.http_tls_cert = Some(PathBuf::from("c"));
        cfg.http_tls_key = Some(PathBuf::from("k"));
        cfg.backends[0].total_size_limit_bytes = Some(1);
        let value = toml::Value::try_from(&cfg).expect("config serialises");
        let mut all = Vec::new();
        keys("", &value, &mut all);
        let documented: Vec<&str> = SAMPLE
            .lines()
            .filter_map(|l| l.trim_start_matches("# ").split_once(" = ").map(|(k, _)| k))
            .collect();
        let missing: Vec<&String> = all
            .iter()
            .filter(|path| {
                let leaf = path.rsplit('.').next().unwrap_or(path);
                !documented.contains(&leaf)
            })
            .collect();
        assert!(all.len() > 30, "walked the whole config: {all:?}");
        assert!(
            missing.is_empty(),
            "options missing from the sample: {missing:?}"
        );
    }

    #[test]
    fn default_listen_addresses_are_loopback() {
        let c = NodeConfig::default();
        assert!(c.listen.iter().all(|a| a.ip().is_loopback()));
        assert!(c.http_listen.is_some_and(|a| a.ip().is_loopback()));
    }

    #[test]
    fn unknown_key_is_an_error_with_its_line() {
        let err =
            NodeConfig::parse("listen = [\"127.0.0.1:1\"]\nmax_frame_byts = 5\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("max_frame_byts") && msg.contains("line 2"),
            "{msg}"
        );
    }

    #[test]
    fn sync_setting_parses_and_rejects() {
        assert_eq!("always".parse::<SyncSetting>(), Ok(SyncSetting::Always));
        assert_eq!("never".parse::<SyncSetting>(), Ok(SyncSetting::Never));
        assert_eq!(
            "5s".parse::<SyncSetting>(),
            Ok(SyncSetting::EverySeconds(5))
        );
        for bad in ["0s", "5", "s", "sometimes", "-1s"] {
            assert!(bad.parse::<SyncSetting>().is_err(), "{bad}");
        }
        let err =
            NodeConfig::parse("[[backend]]\nid = 1\ngroup = 1\ndir = \"/x\"\nsync = \"often\"\n")
                .unwrap_err();
        assert!(err.to_string().contains("sync must be"), "{err}");
    }

    #[test]
    fn inconsistent_backends_are_refused() {
        let two = |a: &str, b: &str| {
            format!("[[backend]]\nid = 1\ngroup = 1\ndir = \"{a}\"\n[[backend]]\nid = {b}\ngroup = 2\ndir = \"/d2\"\n")
        };
        let dup_id = NodeConfig::parse(&two("/d1", "1")).unwrap_err();
        assert!(dup_id.to_string().contains("unique"), "{dup_id}");
        let dup_dir = NodeConfig::parse(&two("/d2", "2")).unwrap_err();
        assert!(
            dup_dir.to_string().contains("used by another backend"),
            "{dup_dir}"
        );
        let no_dir = NodeConfig::parse("[[backend]]\nid = 1\ngroup = 1\n").unwrap_err();
        assert!(no_dir.to_string().contains("dir is required"), "{no_dir}");
    }

    #[test]
    fn out_of_range_limits_are_refused() {
        for (text, needle) in [
            ("max_frame_bytes = 0", "max_frame_bytes"),
            ("max_frame_bytes = 99999999999", "max_frame_bytes"),
            ("receive_buffer_bytes = 1048576", "receive_buffer_bytes"),
            (
                "receive_buffer_bytes = 99999999999999",
                "receive_buffer_bytes",
            ),
            ("blocking_threads = 0", "blocking_threads"),
            ("trace_sampling_rate = 1.5", "trace_sampling_rate"),
            ("admin_token = \"short\"", "admin_token"),
            ("listen = []", "listen"),
        ] {
            let err = NodeConfig::parse(text).unwrap_err();
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
        let bad_window =
            "[[backend]]\nid = 1\ngroup = 1\ndir = \"/d\"\n[backend.defrag]\ntime_hour = 24\n";
        assert!(NodeConfig::parse(bad_window)
            .unwrap_err()
            .to_string()
            .contains("time_hour"));
        let bad_cache =
            "[[backend]]\nid = 1\ngroup = 1\ndir = \"/d\"\n[backend.cache]\nshards = 0\n";
        assert!(NodeConfig::parse(bad_cache)
            .unwrap_err()
            .to_string()
            .contains("shards"));
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let err = NodeConfig::load(Path::new("/nonexistent/ell-node.toml")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/ell-node.toml"),
            "{err}"
        );
    }
}
