//! nginx as a comparison runs it: one worker behind its master (as in production), on the
//! server core, with its configuration, logs and temporary files in one directory.

use std::fs::{self, File};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::process::{pinned, Server};
use super::{Result, NGINX, SERVER_CPU};

/// Writes `nginx.conf` into `dir` (made if missing), starts nginx and waits until it accepts
/// on every port of `ports`; the server's `port` is the first of them.
///
/// `http` goes into the `http` block, indented by four spaces, after what every comparison
/// shares: no access log, no limit on the requests of a keep-alive connection, and nginx's
/// temporary paths in `dir` (out of /var/lib/nginx). `user root` keeps the worker able to read
/// a private temporary directory when the comparison runs as root (nginx ignores it
/// otherwise).
pub fn start(dir: &Path, http: &str, ports: &[u16]) -> Result<Server> {
    fs::create_dir_all(dir)?;
    let error_log = dir.join("error.log");
    let config = format!(
        r#"daemon off;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {error_log} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{http}}}
"#,
        dir = dir.display(),
        error_log = error_log.display(),
    );
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
    let deadline = Instant::now() + Duration::from_secs(5);
    for &port in ports {
        loop {
            if let Some(status) = server.child.try_wait()? {
                return Err(
                    format!("nginx exited at start ({status}){}", server.log_tail()).into(),
                );
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx not accepting on port {port} after 5 s{}",
                    server.log_tail()
                )
                .into());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
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
