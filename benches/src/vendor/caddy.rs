//! Caddy as a comparison runs it: `caddy run` on the server core with one OS thread running Go
//! code (`GOMAXPROCS=1`), its Caddyfile, data and configuration directories in one directory.

use std::fs::{self, File};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::process::{pinned, wait_for_ports, Server};
use super::{Result, CADDY, SERVER_CPU};

/// Writes `Caddyfile` (`config`, filled from a committed template) into `dir` (made if missing),
/// starts Caddy and waits until it accepts on `port`.
///
/// `GOMAXPROCS=1`: the Go runtime runs Go code on one thread, as nginx and HAProxy run one
/// worker; taskset already keeps all its threads on the server core, and without it Go would
/// still size its scheduler to the core count it reads (1 under taskset, so this says it out
/// loud). `HOME`, `XDG_DATA_HOME` and `XDG_CONFIG_HOME` point into `dir`, so that Caddy's
/// autosaved configuration and storage stay in the run's directory.
pub fn start(dir: &Path, config: &str, port: u16) -> Result<Server> {
    fs::create_dir_all(dir)?;
    let caddyfile = dir.join("Caddyfile");
    fs::write(&caddyfile, config)?;
    let log = dir.join("caddy.log");
    let output = File::create(&log)?;
    let child = pinned(SERVER_CPU, Path::new(CADDY))
        .arg("run")
        .arg("--adapter")
        .arg("caddyfile")
        .arg("--config")
        .arg(&caddyfile)
        .env("GOMAXPROCS", "1")
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdout(output.try_clone()?)
        .stderr(output)
        .spawn()
        .map_err(|e| format!("cannot start {CADDY}: {e}"))?;
    let mut server = Server {
        name: "caddy",
        port,
        child,
        log,
    };
    wait_for_ports(&mut server, &[port], Duration::from_secs(10))?;
    Ok(server)
}

/// What `caddy version` says (`v2.6.2`), as `Caddy 2.6.2`, or `Caddy`.
pub fn version() -> String {
    let Ok(output) = Command::new(CADDY).arg("version").output() else {
        return "Caddy".into();
    };
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace().next().map_or("Caddy".into(), |v| {
        format!("Caddy {}", v.trim_start_matches('v'))
    })
}
