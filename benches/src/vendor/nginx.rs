//! nginx as a comparison runs it: one worker behind its master (as in production), on the
//! server core, with its configuration, logs and temporary files in one directory.

use std::fs::{self, File};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::process::{pinned, wait_for_ports, Server};
use super::{template, Result, NGINX, SERVER_CPU};

/// Writes `nginx.conf` into `dir` (made if missing), starts nginx and waits until it accepts
/// on every port of `ports`; the server's `port` is the first of them.
///
/// `http` goes into the `http` block of the committed frame
/// ([`template::NGINX_MAIN`]), after what every comparison shares:
/// one worker, no access log, no limit on the requests of a keep-alive connection, and nginx's
/// temporary paths in `dir`.
pub fn start(dir: &Path, http: &str, ports: &[u16]) -> Result<Server> {
    fs::create_dir_all(dir)?;
    let error_log = dir.join("error.log");
    let config = template::render(
        template::NGINX_MAIN,
        &[
            ("dir", &dir.display().to_string()),
            ("error_log", &error_log.display().to_string()),
            ("http", http.trim_end_matches('\n')),
        ],
    )?;
    let conf = dir.join("nginx.conf");
    fs::write(&conf, config)?;

    let child = pinned(SERVER_CPU, Path::new(NGINX))
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(&error_log)
        .stdout(File::create(dir.join("stdout.log"))?)
        .stderr(File::create(dir.join("stderr.log"))?)
        .spawn()
        .map_err(|e| format!("cannot start {NGINX}: {e}"))?;
    let mut server = Server {
        name: "nginx",
        port: *ports.first().ok_or("nginx needs a port")?,
        child,
        log: error_log,
    };
    // nginx prints nothing on start; poll the ports, watching for an early exit (bad config).
    wait_for_ports(&mut server, ports, Duration::from_secs(5))?;
    Ok(server)
}

/// What `nginx -v` says (`nginx/1.22.1`; it writes to stderr), or `nginx`.
pub fn version() -> String {
    let Ok(output) = Command::new(NGINX).arg("-v").output() else {
        return "nginx".into();
    };
    let text = if output.stdout.is_empty() {
        output.stderr
    } else {
        output.stdout
    };
    let text = String::from_utf8_lossy(&text);
    match text.lines().next() {
        Some(line) => {
            let line = line.trim();
            line.strip_prefix("nginx version: ")
                .unwrap_or(line)
                .to_string()
        }
        None => "nginx".into(),
    }
}
