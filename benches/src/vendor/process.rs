//! The processes of a comparison: servers pinned to the server core, stopped when dropped.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::{Result, SERVER_CPU};

/// A server process, stopped when dropped.
pub struct Server {
    /// Its name in the report.
    pub name: &'static str,
    /// Where it listens on 127.0.0.1.
    pub port: u16,
    /// The process (taskset execs the server, so this is the server).
    pub child: Child,
    /// Where the server's stderr (or nginx's error log) goes, quoted in error messages.
    pub log: PathBuf,
}

impl Server {
    /// The last 20 lines of its log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("\n--- {} ---\n{tail}", self.log.display())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM first, so nginx's master takes its worker down with it and our servers print
        // their counters; std can only SIGKILL (and `unsafe` for libc::kill is forbidden in this
        // workspace), hence the `kill` program.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `server` accepts connections on every port of `ports`, failing if it exits first
/// (a bad configuration) or takes longer than `limit`.
pub fn wait_for_ports(server: &mut Server, ports: &[u16], limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    for &port in ports {
        loop {
            if let Some(status) = server.child.try_wait()? {
                return Err(format!(
                    "{} exited at start ({status}){}",
                    server.name,
                    server.log_tail()
                )
                .into());
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not accepting on port {port} after {limit:?}{}",
                    server.name,
                    server.log_tail()
                )
                .into());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// `taskset -a -p -c CPU PID` on this process: every thread it has, and those it starts later,
/// on `cpu`. Call it before starting threads that must stay off the server's core.
pub fn pin_this_process(cpu: &str) -> Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run taskset: {e}"))?;
    if !status.success() {
        return Err(format!("taskset could not pin this program to CPU {cpu} ({status})").into());
    }
    Ok(())
}

/// `taskset -c CPU program`: taskset execs the program, so the child's pid is the server's.
pub fn pinned(cpu: &str, program: &Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cpu]).arg(program).stdin(Stdio::null());
    cmd
}

/// A port free now on 127.0.0.1 (for nginx, which cannot report the port it was given).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts a server given port 0 and reads the port from its `listening on ...:PORT` line.
pub fn start_printing_port(
    name: &'static str,
    program: &Path,
    args: &[&str],
    tmp: &Path,
) -> Result<Server> {
    // One log per server and arguments; arguments may hold paths.
    let tag: String = args
        .join("_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let log = tmp.join(format!("{name}-{tag}.stderr.log"));
    let mut child = pinned(SERVER_CPU, program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(File::create(&log)?)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut server = Server {
        name,
        port: 0,
        child,
        log,
    };

    // The reader thread keeps draining stdout after the line so the server never blocks on a
    // full pipe; it ends when the server exits.
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(|line| line.ok()) {
            if line.contains("listening on") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(line);
                }
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(10)).map_err(|_| {
        format!(
            "{name} did not print `listening on ...` within 10 s{}",
            server.log_tail()
        )
    })?;
    server.port = line
        .trim()
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .ok_or_else(|| format!("{name}: no port in {line:?}"))?;
    Ok(server)
}

/// The program `name` built next to the running one (cargo puts a workspace's binaries in one
/// directory).
pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let bin_dir = std::env::current_exe()?
        .parent()
        .ok_or("executable has no parent directory")?
        .to_path_buf();
    Ok(bin_dir.join(name))
}
