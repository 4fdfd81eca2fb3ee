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

/// Everything the file may set; every key is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
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
        error: e.to_string().trim_end().to_owned(),
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
}
