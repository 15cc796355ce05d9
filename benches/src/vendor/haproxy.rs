//! HAProxy as a comparison runs it: in the foreground on the server core, one thread, with its
//! configuration in one directory.

use std::fs::{self, File};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::process::{pinned, wait_for_ports, Server};
use super::{Result, HAPROXY, SERVER_CPU};

/// Writes `haproxy.cfg` (`config`, filled from a committed template) into `dir` (made if
/// missing), starts HAProxy and waits until it accepts on `port`.
///
/// `-db`: in the foreground, no daemon, so the server's pid is HAProxy's and SIGTERM stops it.
/// The configuration is checked first (`-c`), so a mistake in it reads as HAProxy's own message.
pub fn start(dir: &Path, config: &str, port: u16) -> Result<Server> {
    fs::create_dir_all(dir)?;
    let cfg = dir.join("haproxy.cfg");
    fs::write(&cfg, config)?;
    let check = Command::new(HAPROXY)
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .map_err(|e| format!("cannot run {HAPROXY}: {e}"))?;
    if !check.status.success() {
        return Err(format!(
            "haproxy refuses {}:\n{}{}",
            cfg.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        )
        .into());
    }
    let log = dir.join("haproxy.log");
    let output = File::create(&log)?;
    let child = pinned(SERVER_CPU, Path::new(HAPROXY))
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(output.try_clone()?)
        .stderr(output)
        .spawn()
        .map_err(|e| format!("cannot start {HAPROXY}: {e}"))?;
    let mut server = Server {
        name: "haproxy",
        port,
        child,
        log,
    };
    wait_for_ports(&mut server, &[port], Duration::from_secs(5))?;
    Ok(server)
}

/// What `haproxy -v` says (`HAProxy 2.6.12-1+deb12u4`), or `HAProxy`.
pub fn version() -> String {
    let Ok(output) = Command::new(HAPROXY).arg("-v").output() else {
        return "HAProxy".into();
    };
    let text = String::from_utf8_lossy(&output.stdout);
    // "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"
    text.lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(2))
        .map_or("HAProxy".into(), |v| format!("HAProxy {v}"))
}
