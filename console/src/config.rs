//! The console's config file: where the cluster is and how to reach it, so an operator does
//! not repeat `--remote`, `--http`, `--token-file`, TLS and refresh flags on every call.
//!
//! `ell --config FILE` reads FILE (it must exist); without it `ell` reads
//! `$XDG_CONFIG_HOME/ellipsis/console.toml` (or `~/.config/ellipsis/console.toml`) only if
//! that file exists. Flags and environment variables override the file; the file overrides
//! the built-in defaults. Relative paths in the file are relative to the file's directory.
//!
//! Not a place for secrets by default: `token_file` is preferred to an inline `token`, and
//! neither is ever printed. Unknown keys are errors, so a typo does not silently do nothing.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything the file may set; every key is optional. `Debug` says whether `token` is set,
/// never what it is.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Protocol addresses to discover the cluster from (`--remote`).
    #[serde(default)]
    pub remote: Vec<String>,
    /// HTTP addresses to poll, skipping discovery (`--http`); `https://` implies `tls`.
    #[serde(default)]
    pub http: Vec<String>,
    /// The admin token itself (prefer `token_file`).
    pub token: Option<String>,
    /// File whose first line is the admin token (`--token-file`).
    pub token_file: Option<PathBuf>,
    /// Poll interval of `ell top` (`--refresh-ms`).
    pub refresh_ms: Option<u64>,
    /// Per-request timeout (`--timeout-ms`).
    pub timeout_ms: Option<u64>,
    /// Hide and refuse admin actions (`--read-only`).
    pub read_only: Option<bool>,
    /// Speak HTTPS to every node (`--tls`).
    pub tls: Option<bool>,
    /// PEM file of certificates to trust besides the system roots (`--ca-file`).
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for ConsoleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured so a new field cannot be left out of (or leak through) this impl.
        let ConsoleConfig {
            remote,
            http,
            token,
            token_file,
            refresh_ms,
            timeout_ms,
            read_only,
            tls,
            ca_file,
        } = self;
        f.debug_struct("ConsoleConfig")
            .field("remote", remote)
            .field("http", http)
            .field("token", &token.as_ref().map(|_| "<redacted>"))
            .field("token_file", token_file)
            .field("refresh_ms", refresh_ms)
            .field("timeout_ms", timeout_ms)
            .field("read_only", read_only)
            .field("tls", tls)
            .field("ca_file", ca_file)
            .finish()
    }
}

/// Why the config could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not valid TOML for [`ConsoleConfig`].
    #[error("config {path}: {error}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (names the key and line).
        error: String,
    },
}

/// The default config path, from `XDG_CONFIG_HOME` or else `HOME`.
pub fn default_path(xdg_config_home: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    let base = match (xdg_config_home.filter(|x| !x.is_empty()), home) {
        (Some(x), _) => PathBuf::from(x),
        (None, Some(h)) if !h.is_empty() => Path::new(h).join(".config"),
        _ => return None,
    };
    Some(base.join("ellipsis").join("console.toml"))
}

/// Reads and parses `path`; relative `token_file` / `ca_file` become relative to its directory.
pub fn load(path: &Path) -> Result<ConsoleConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.display().to_string(),
        error,
    })?;
    let mut cfg: ConsoleConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        // The parser's own Display quotes the offending line, which may be the token's.
        error: ellipsis_core::config_text::located(&text, e.span(), e.message()),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    for p in [&mut cfg.token_file, &mut cfg.ca_file]
        .into_iter()
        .flatten()
    {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_prefers_xdg_then_home() {
        assert_eq!(
            default_path(Some("/x"), Some("/h")),
            Some(PathBuf::from("/x/ellipsis/console.toml"))
        );
        assert_eq!(
            default_path(Some(""), Some("/h")),
            Some(PathBuf::from("/h/.config/ellipsis/console.toml"))
        );
        assert_eq!(default_path(None, None), None);
    }

    #[test]
    fn relative_paths_follow_the_file_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("console.toml");
        std::fs::write(
            &path,
            "http = [\"https://n1:8443\"]\ntoken_file = \"token\"\nca_file = \"/etc/ca.pem\"\nrefresh_ms = 500\n",
        )
        .expect("write");
        let cfg = load(&path).expect("valid");
        assert_eq!(cfg.token_file, Some(dir.path().join("token")));
        assert_eq!(cfg.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(cfg.refresh_ms, Some(500));
        std::fs::write(&path, "refresh = 500\n").expect("write");
        let e = load(&path).expect_err("unknown key").to_string();
        assert!(e.contains("unknown field `refresh`"), "{e}");
    }

    #[test]
    fn the_token_never_shows_in_debug_or_in_parse_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("console.toml");
        std::fs::write(&path, "token = \"s3cret-token\"\n").expect("write");
        let cfg = load(&path).expect("valid");
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        // A typo on the token's line: the error names where, not what.
        std::fs::write(&path, "remote = []\ntoken = \"s3cret-token\" x\n").expect("write");
        let e = load(&path).expect_err("trailing garbage").to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(e.contains("line 2, column 24"), "{e}");
    }
}
