//! Running the programs of a vendor comparison: servers pinned to one core, wrk on the other.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Errors of the comparison programs: reported and fatal.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Debian's nginx.
pub const NGINX: &str = "/usr/sbin/nginx";
/// Debian's wrk.
pub const WRK: &str = "/usr/bin/wrk";
/// The core of the server under test.
pub const SERVER_CPU: &str = "0";
/// The core of the load generator.
pub const WRK_CPU: &str = "1";
/// wrk's connections.
pub const CONNECTIONS: u32 = 32;

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

/// Runs `wrk -t1 -c32 -d<secs>s <extra> <url>` on the load core and returns its report; fails
/// if wrk fails or saw socket errors.
pub fn run_wrk(url: &str, secs: u32, extra: &[&str]) -> Result<String> {
    let output = pinned(WRK_CPU, Path::new(WRK))
        .args(["-t1", &format!("-c{CONNECTIONS}"), &format!("-d{secs}s")])
        .args(extra)
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run {WRK}: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("wrk failed ({}):\n{text}{stderr}", output.status).into());
    }
    let socket_errors = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Socket errors:"))
        // "connect 0, read 0, write 0, timeout 0"
        .flat_map(|counts| counts.split(','))
        .filter_map(|kv| kv.split_whitespace().nth(1))
        .any(|n| n != "0");
    if socket_errors {
        return Err(format!("wrk saw socket errors:\n{text}").into());
    }
    Ok(text)
}

/// The median (the mean of the middle two for an even count). Sorts `values`.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// An answer read by [`http_get`].
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// A minimal HTTP/1.1 GET on a fresh connection.
pub fn http_get(port: u16, file: &str) -> Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /{file} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;

    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..head_end])?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or("bad status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);

    let rest = &raw[head_end + 4..];
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse()?;
        rest.get(..len)
            .ok_or("body shorter than content-length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size_field = std::str::from_utf8(&data[..line_end])?;
        let size = usize::from_str_radix(size_field.split(';').next().unwrap_or("").trim(), 16)?;
        if size == 0 {
            return Ok(body);
        }
        let chunk = data
            .get(line_end + 2..line_end + 2 + size)
            .ok_or("truncated chunk")?;
        body.extend_from_slice(chunk);
        data = data.get(line_end + 4 + size..).ok_or("truncated chunk")?;
    }
}
