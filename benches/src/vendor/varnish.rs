//! Varnish as a comparison runs it: `varnishd` in the foreground on the server core (its manager
//! and the cache process it forks both), with its VCL and working directory (shared memory log,
//! compiled VCL) in one directory.

use std::fs::{self, File};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::process::{pinned, Server};
use super::{http, Result, SERVER_CPU, VARNISHD};

/// Writes `bench.vcl` into `dir` (made if missing), starts varnishd listening on
/// 127.0.0.1:`port` with `params` (`-s`, `-p` and the like) and waits until it answers a
/// request.
///
/// `-F` keeps varnishd in the foreground, so the server's pid is the manager's, which stops its
/// cache process on SIGTERM. `-T none`: no management port. `-j none`: no jail, so it runs as
/// the user who started it, root included, with no other user needing to read `dir`.
pub fn start(dir: &Path, vcl: &str, port: u16, params: &[&str]) -> Result<Server> {
    fs::create_dir_all(dir)?;
    let vcl_path = dir.join("bench.vcl");
    fs::write(&vcl_path, vcl)?;
    let log = dir.join("varnishd.log");
    // The manager writes to both; one file keeps its lines in order.
    let output = File::create(&log)?;
    let child = pinned(SERVER_CPU, Path::new(VARNISHD))
        .arg("-F")
        .arg("-n")
        .arg(dir.join("work"))
        .arg("-a")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-f")
        .arg(&vcl_path)
        .args(["-T", "none", "-j", "none"])
        .args(params)
        .stdout(output.try_clone()?)
        .stderr(output)
        .spawn()
        .map_err(|e| format!("cannot start {VARNISHD}: {e}"))?;
    let mut server = Server {
        name: "varnish",
        port,
        child,
        log,
    };
    // The manager listens before its cache process (started after the VCL is compiled) accepts,
    // so a connection alone proves nothing: wait for an answer, any answer.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.child.try_wait()? {
            return Err(format!("varnishd exited at start ({status}){}", server.log_tail()).into());
        }
        if http::get(port, "").is_ok() {
            return Ok(server);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "varnishd not answering on port {port} after 20 s{}",
                server.log_tail()
            )
            .into());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// What `varnishd -V` says (`varnish-7.1.1`; it writes to stderr), or `varnish`.
pub fn version() -> String {
    let Ok(output) = Command::new(VARNISHD).arg("-V").output() else {
        return "varnish".into();
    };
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    // "varnishd (varnish-7.1.1 revision 7cee1c5...)"
    text.split(['(', ' '])
        .find(|word| word.starts_with("varnish-"))
        .map_or("varnish".into(), str::to_string)
}
