//! The config file and HTTPS, through the real `ell` binary against real in-process nodes
//! (`ellipsis-tests`): a file gives remotes, HTTP addresses, token, read-only and TLS; flags
//! override it; a bad file is a clear usage error; an HTTPS-only node (certificate made here
//! with rcgen) is polled and administered when its CA is trusted, and is down when it is not.

// Test drivers panic on failure: that is the report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Output;

use ellipsis_core::stats::BackendState;
use ellipsis_tests::{Cluster, NodeSpec, TOKEN};

/// Runs `ell` with no token, remote or HTTP address from the environment, and `config_home`
/// as `XDG_CONFIG_HOME` (so the user's own config is never read).
async fn ell(config_home: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ell"))
        .args(args)
        .env("XDG_CONFIG_HOME", config_home)
        .env_remove("ELL_ADMIN_TOKEN")
        .env_remove("ELL_REMOTE")
        .env_remove("ELL_HTTP")
        .env_remove("ELL_CONFIG")
        .output()
        .await
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn status_json(out: &Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_gives_cluster_token_and_read_only_and_flags_override_it() {
    let c = Cluster::start(&[NodeSpec::groups(&[1])]).await;
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (addr, http) = (c.addr(0).to_string(), c.http(0).to_string());
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let file = dir.path().join("console.toml");
    // `token_file` is relative: to the config file's directory.
    std::fs::write(
        &file,
        format!("http = [\"http://{http}\"]\ntoken_file = \"token\"\nrefresh_ms = 500\ntimeout_ms = 3000\n"),
    )
    .unwrap();
    let cfg = file.display().to_string();
    let s = status_json(&ell(home.path(), &["--config", &cfg, "--json", "status"]).await);
    assert_eq!(s["nodes_up"], 1, "{s}");
    // The token comes from the file's token_file: an admin command works without a flag.
    let out = ell(
        home.path(),
        &[
            "--config",
            &cfg,
            "backend",
            "ro",
            "--node",
            &addr,
            "--backend",
            "1",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        c.node(0).backend(1).unwrap().state(),
        BackendState::ReadOnly
    );
    assert!(!text(&out.stdout).contains(TOKEN) && !text(&out.stderr).contains(TOKEN));
    // A flag wins over the file: this HTTP address answers nothing.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let out = ell(
        home.path(),
        &[
            "--config",
            &cfg,
            "--http",
            &dead_addr,
            "--timeout-ms",
            "500",
            "status",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));

    // read_only in the file refuses admin commands.
    std::fs::write(&file, format!("remote = [\"{addr}\"]\nread_only = true\n")).unwrap();
    let out = ell(
        home.path(),
        &[
            "--config",
            &cfg,
            "backend",
            "rw",
            "--node",
            &addr,
            "--backend",
            "1",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--read-only"),
        "{}",
        text(&out.stderr)
    );

    // The default path is read when it exists: `remote` there is enough for bare `ell status`.
    let default = home.path().join("ellipsis");
    std::fs::create_dir_all(&default).unwrap();
    std::fs::write(
        default.join("console.toml"),
        format!("remote = [\"{addr}\"]\n"),
    )
    .unwrap();
    let s = status_json(&ell(home.path(), &["--json", "status"]).await);
    assert_eq!(s["nodes_total"], 1, "{s}");
    let frame = ell(home.path(), &["--once", "--width", "100"]).await;
    assert_eq!(frame.status.code(), Some(0), "{}", text(&frame.stderr));
    assert!(
        text(&frame.stdout).contains("1/1 up"),
        "{}",
        text(&frame.stdout)
    );

    // Bad files: a clear message and exit 2.
    for (body, expected) in [
        ("refresh = 1\n", "unknown field `refresh`"),
        ("remote = \"not a list\"\n", "invalid type"),
        ("remote = [\"nowhere\"]\n", "remote"),
        ("token = \"a\"\ntoken_file = \"b\"\n", "not both"),
    ] {
        std::fs::write(&file, body).unwrap();
        let out = ell(home.path(), &["--config", &cfg, "status"]).await;
        assert_eq!(out.status.code(), Some(2), "{body}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.contains(&cfg) && err.contains(expected),
            "{body}: {err}"
        );
    }
    let out = ell(
        home.path(),
        &["--config", "/nonexistent/console.toml", "status"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/console.toml"));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_only_nodes_are_polled_and_administered_when_their_ca_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key, ca) = (
        dir.path().join("node.crt"),
        dir.path().join("node.key"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let mut c = Cluster::start(&[]).await;
    c.add_node_with(&NodeSpec::groups(&[1]), |cfg| {
        cfg.http_tls_cert = Some(cert.clone());
        cfg.http_tls_key = Some(key.clone());
    })
    .await;
    c.converge().await;
    let (addr, http) = (c.addr(0).to_string(), c.http(0).to_string());
    let https = format!("https://{http}");
    let ca = ca.display().to_string();
    let home = dir.path();

    let s = status_json(
        &ell(
            home,
            &["--http", &https, "--ca-file", &ca, "--json", "status"],
        )
        .await,
    );
    assert_eq!(s["nodes_up"], 1, "{s}");
    assert!(s["capacity"]["free_bytes"].as_u64().unwrap() > 0, "{s}");
    // `--tls` with discovery from the protocol address: the node's HTTP address is learnt
    // from its route list and asked over HTTPS.
    let s = status_json(
        &ell(
            home,
            &[
                "--remote",
                &addr,
                "--tls",
                "--ca-file",
                &ca,
                "--json",
                "status",
            ],
        )
        .await,
    );
    assert_eq!(s["nodes_up"], 1, "{s}");
    let frame = ell(home, &["--http", &https, "--ca-file", &ca, "top", "--once"]).await;
    assert_eq!(frame.status.code(), Some(0), "{}", text(&frame.stderr));
    assert!(text(&frame.stdout).contains("1/1 up"));
    // An admin call over HTTPS changes the node.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ell"))
        .args([
            "--http",
            &https,
            "--ca-file",
            &ca,
            "backend",
            "ro",
            "--node",
            &addr,
        ])
        .args(["--backend", "1"])
        .env("XDG_CONFIG_HOME", home)
        .env("ELL_ADMIN_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        c.node(0).backend(1).unwrap().state(),
        BackendState::ReadOnly
    );
    // The same settings from a config file.
    let file = dir.path().join("tls.toml");
    std::fs::write(
        &file,
        format!("http = [\"{http}\"]\ntls = true\nca_file = \"ca.pem\"\n"),
    )
    .unwrap();
    let cfg = file.display().to_string();
    let s = status_json(&ell(home, &["--config", &cfg, "--json", "status"]).await);
    assert_eq!(s["nodes_up"], 1, "{s}");

    // Without the CA the certificate is not trusted: the node is down, exit 1.
    let out = ell(home, &["--http", &https, "--timeout-ms", "2000", "status"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("DOWN"), "{}", text(&out.stdout));
    // Plain HTTP to an HTTPS-only port: down too.
    let out = ell(home, &["--http", &http, "--timeout-ms", "2000", "status"]).await;
    assert_eq!(out.status.code(), Some(1));
    // A CA file that holds no certificate is a usage error.
    let out = ell(
        home,
        &[
            "--http",
            &https,
            "--ca-file",
            &cert.display().to_string().replace("node.crt", "node.key"),
            "status",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no PEM certificate"),
        "{}",
        text(&out.stderr)
    );
    c.shutdown().await;
}
