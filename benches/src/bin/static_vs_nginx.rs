//! Vendor comparison for static files: nginx vs proxflow's `static_server` vs tower-http's
//! `ServeDir` (the `servedir_server` baseline), on the same files, load and core.
//!
//! ServeDir is measured twice: served with `axum::serve` and its defaults, as the tower-http and
//! axum docs show it (`servedir_server --axum-defaults`: no `TCP_NODELAY`, so Nagle's algorithm
//! applies), and tuned (bare hyper with `TCP_NODELAY`). The ">= 10x ServeDir" target from
//! DESIGN.md is taken against the first; the ratio against the second is reported for information.
//!
//! Every server is pinned to CPU 0 and wrk to CPU 1 (`taskset`); each (server, file) pair gets a
//! short warm-up, then `--rounds` measured wrk runs with the servers interleaved, and the median
//! req/s is reported as a markdown table with the targets from DESIGN.md.
//!
//! Build both packages first so `static_server` sits next to this binary:
//!
//! ```text
//! cargo build --release -p proxflow-benches -p proxflow-examples
//! target/release/static_vs_nginx --duration 10 --rounds 3 --markdown benches/RESULTS.md
//! ```
//!
//! A server binary that is missing is skipped with a message; nginx is required.

use proxflow_benches::vendor::{
    free_port, http_get, median, pinned, run_wrk, start_printing_port, Response, Result, Server,
    CONNECTIONS, NGINX, SERVER_CPU, WRK_CPU,
};
use proxflow_benches::{command_output, shell_quote, thousands, utc_now};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;

/// Files served, with their sizes. The extensions map to types nobody compresses by default, and
/// wrk sends no `Accept-Encoding`, so every server sends the bytes as they are.
const FILES: [(&str, usize); 2] = [("1k.txt", 1024), ("100k.bin", 100 * 1024)];

/// Server names: ServeDir served as the docs show (`axum::serve`, no TCP_NODELAY) and tuned
/// (bare hyper with TCP_NODELAY).
const SERVEDIR_DEFAULTS: &str = "ServeDir-defaults";
const SERVEDIR_TUNED: &str = "ServeDir-tuned";

/// Column order of the report: (server name, column heading).
const SERVERS: [(&str, &str); 4] = [
    ("nginx", "nginx"),
    ("proxflow", "proxflow"),
    (SERVEDIR_DEFAULTS, "ServeDir (axum::serve defaults)"),
    (SERVEDIR_TUNED, "ServeDir (tuned: hyper + TCP_NODELAY)"),
];

/// (description, file, baseline server, minimum proxflow/baseline ratio), from DESIGN.md; a row
/// without a minimum is informational (no PASS/FAIL).
const TARGETS: [(&str, &str, &str, Option<f64>); 4] = [
    (
        "proxflow >= 1.0x nginx at 1 KiB",
        "1k.txt",
        "nginx",
        Some(1.0),
    ),
    (
        "proxflow >= 0.8x nginx at 100 KiB",
        "100k.bin",
        "nginx",
        Some(0.8),
    ),
    (
        "proxflow >= 10x ServeDir (axum::serve defaults) at 1 KiB",
        "1k.txt",
        SERVEDIR_DEFAULTS,
        Some(10.0),
    ),
    (
        "proxflow vs ServeDir (tuned: hyper + TCP_NODELAY) at 1 KiB",
        "1k.txt",
        SERVEDIR_TUNED,
        None,
    ),
];

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "Compare static-file throughput: nginx, proxflow static_server, ServeDir")]
struct Args {
    /// Seconds of each measured wrk run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    duration: u32,
    /// Measured rounds; the report gives the median per (server, file).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Seconds of the warm-up run per (server, file), not measured.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    warmup: u32,
    /// Append the report to this file as well.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

fn main() {
    // `run` returns before we exit, so every server guard has been dropped (and its process
    // stopped) by then; `process::exit` itself would skip destructors.
    if let Err(err) = run(Args::parse()) {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let docroot = tmp.path().join("www");
    fs::create_dir(&docroot)?;
    for (name, len) in FILES {
        fs::write(docroot.join(name), file_contents(name, len))?;
    }

    let bin_dir = std::env::current_exe()?
        .parent()
        .ok_or("executable has no parent directory")?
        .to_path_buf();
    let mut servers = vec![start_nginx(tmp.path(), &docroot)?];
    let docroot_arg = docroot.to_str().ok_or("temp dir path is not UTF-8")?;
    // (name, binary, args, how to build it); all get port 0 and report the port they bound.
    let optional = [
        (
            "proxflow",
            "static_server",
            vec![
                "--prod",
                "--quiet",
                "-H",
                "127.0.0.1",
                "-p",
                "0",
                docroot_arg,
            ],
            "cargo build --release -p proxflow-examples --bin static_server",
        ),
        (
            SERVEDIR_DEFAULTS,
            "servedir_server",
            vec!["--port", "0", "--dir", docroot_arg, "--axum-defaults"],
            "cargo build --release -p proxflow-benches --bin servedir_server",
        ),
        (
            SERVEDIR_TUNED,
            "servedir_server",
            vec!["--port", "0", "--dir", docroot_arg],
            "cargo build --release -p proxflow-benches --bin servedir_server",
        ),
    ];
    let mut skipped = Vec::new();
    for (name, bin, bin_args, build) in optional {
        let path = bin_dir.join(bin);
        if path.is_file() {
            servers.push(start_printing_port(name, &path, &bin_args, tmp.path())?);
        } else {
            eprintln!(
                "skipping {name}: {} not found (build it: `{build}`)",
                path.display()
            );
            skipped.push(name);
        }
    }

    for server in &servers {
        check_responses(server, &docroot)?;
    }
    eprintln!("all servers return 200 and the exact bytes; warming up");
    for server in &servers {
        for (file, _) in FILES {
            wrk(&url(server, file), args.warmup)
                .map_err(|e| format!("{} warm-up: {e}", server.name))?;
        }
    }

    let mut rps: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for round in 0..args.rounds {
        for (file, _) in FILES {
            // Rotating the start spreads any drift (thermal, the neighbour's build) over all servers.
            for i in 0..servers.len() {
                let server = &servers[(i + round as usize) % servers.len()];
                let result = wrk(&url(server, file), args.duration)
                    .map_err(|e| format!("{} {file}: {e}", server.name))?;
                eprintln!(
                    "round {}/{} {file:<9} {:<17} {:>10} req/s  p50 {:>8}  p99 {:>8}",
                    round + 1,
                    args.rounds,
                    server.name,
                    thousands(result.rps),
                    result.p50,
                    result.p99
                );
                rps.entry((server.name, file)).or_default().push(result.rps);
            }
        }
    }
    drop(servers);

    let medians = rps
        .into_iter()
        .map(|(key, mut values)| (key, median(&mut values)))
        .collect();
    let report = report(&args, &medians, &skipped);
    print!("{report}");
    if let Some(path) = &args.markdown {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?
            .write_all(format!("\n{report}").as_bytes())?;
        eprintln!("appended to {}", path.display());
    }
    Ok(())
}

/// Deterministic contents: printable lines for the text file, pseudo-random bytes for the binary.
fn file_contents(name: &str, len: usize) -> Vec<u8> {
    if name.ends_with(".txt") {
        b"proxflow static file benchmark, line of text 0123456789\n"
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    } else {
        let mut x: u32 = 0x9e37_79b9;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }
}

/// `http://127.0.0.1:PORT/file` of a server.
fn url(server: &Server, file: &str) -> String {
    format!("http://127.0.0.1:{}/{file}", server.port)
}

fn start_nginx(tmp: &Path, docroot: &Path) -> Result<Server> {
    let dir = tmp.join("nginx");
    fs::create_dir(&dir)?;
    let port = free_port()?;
    let error_log = dir.join("error.log");
    // One worker behind its master, as nginx runs in production. `user root` keeps the worker
    // able to read the private temp dir when we run as root (nginx ignores it otherwise); the
    // temp paths keep nginx out of /var/lib/nginx.
    let config = format!(
        r#"daemon off;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {error_log} warn;
events {{ worker_connections 1024; }}
http {{
    types {{ text/plain txt; application/octet-stream bin; }}
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=1000;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {docroot};
    }}
}}
"#,
        dir = dir.display(),
        error_log = error_log.display(),
        docroot = docroot.display(),
    );
    let conf = dir.join("nginx.conf");
    fs::write(&conf, config)?;

    let child = pinned(SERVER_CPU, Path::new(NGINX))
        .arg("-p")
        .arg(&dir)
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
        port,
        child,
        log: error_log,
    };
    // nginx prints nothing on start; poll the port, watching for an early exit (bad config).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = server.child.try_wait()? {
            return Err(format!("nginx exited at start ({status}){}", server.log_tail()).into());
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(server);
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

/// Before any load: 200, no content coding, and exactly the bytes on disk, for every file.
fn check_responses(server: &Server, docroot: &Path) -> Result<()> {
    for (file, _) in FILES {
        let expected = fs::read(docroot.join(file))?;
        let Response {
            status,
            headers,
            body,
        } = http_get(server.port, file)
            .map_err(|e| format!("{} GET /{file}: {e}{}", server.name, server.log_tail()))?;
        let problem = if status != 200 {
            format!("status {status}")
        } else if let Some((_, coding)) = headers.iter().find(|(n, _)| n == "content-encoding") {
            format!("content-encoding {coding}")
        } else if body != expected {
            format!(
                "body differs from the file ({} bytes, expected {})",
                body.len(),
                expected.len()
            )
        } else {
            continue;
        };
        return Err(format!("{} GET /{file}: {problem}; not benchmarking", server.name).into());
    }
    Ok(())
}

struct WrkResult {
    rps: f64,
    p50: String,
    p99: String,
}

/// One wrk run on the load core. Any socket error or non-2xx/3xx response fails the benchmark:
/// a fast server that drops or refuses requests is not fast.
fn wrk(url: &str, secs: u32) -> Result<WrkResult> {
    let text = run_wrk(url, secs, &["--latency"])?;
    let (mut rps, mut p50, mut p99) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("Requests/sec:") {
            rps = value.trim().parse().ok();
        } else if let Some(value) = line.strip_prefix("50%") {
            p50 = Some(value.trim().to_string());
        } else if let Some(value) = line.strip_prefix("99%") {
            p99 = Some(value.trim().to_string());
        } else if line.starts_with("Non-2xx or 3xx responses") {
            return Err(format!("wrk saw error responses:\n{text}").into());
        }
    }
    Ok(WrkResult {
        rps: rps.ok_or_else(|| format!("no Requests/sec in wrk output:\n{text}"))?,
        p50: p50.unwrap_or_default(),
        p99: p99.unwrap_or_default(),
    })
}

fn report(args: &Args, medians: &BTreeMap<(&str, &str), f64>, skipped: &[&str]) -> String {
    let get = |server: &str, file: &str| medians.get(&(server, file)).copied();
    let ratio = |file: &str, base: &str| Some(get("proxflow", file)? / get(base, file)?);
    let fmt_ratio = |r: Option<f64>| r.map_or("n/a".to_string(), |r| format!("{r:.2}x"));

    let command: Vec<String> = std::env::args().map(|a| shell_quote(&a)).collect();
    let mut out = String::from("### Static files: nginx vs proxflow vs ServeDir\n\n");
    out += &format!("Command: `{}`", command.join(" "));
    out += &format!(" ({})", utc_now());
    out += &format!(
        "\n\nServers pinned to CPU {SERVER_CPU}, wrk to CPU {WRK_CPU}: \
         `wrk -t1 -c{CONNECTIONS} -d{}s --latency`, median of {} round(s) after a {} s warm-up, \
         servers interleaved. {}, 1 worker, sendfile, open_file_cache, access_log off.\n",
        args.duration,
        args.rounds,
        args.warmup,
        command_output(NGINX, &["-v"]).unwrap_or_else(|| "nginx".into()),
    );
    for name in skipped {
        out += &format!("\n**{name} skipped: binary not built.**\n");
    }

    out += "\nServeDir is measured two ways. *axum::serve defaults* serves it as the tower-http and \
        axum docs show (`axum::serve(listener, Router::new().fallback_service(ServeDir::new(dir)))`), \
        which leaves `TCP_NODELAY` off: hyper often writes a response's headers and body separately \
        (the body once the file read completes), and Nagle's algorithm holds the second write back \
        until the client's delayed ACK of the first arrives; this is the ~9k req/s reference in \
        DESIGN.md and the baseline of the 10x target. \
        *tuned* runs ServeDir under bare hyper with `TCP_NODELAY` set, as nginx does on keep-alive \
        connections, and shows ServeDir's own cost; the ratio against it is for information.\n";

    let mut heading = String::from("\n| file |");
    let mut rule = String::from("|---|");
    for (_, column) in SERVERS {
        heading += &format!(" {column} req/s |");
        rule += "--:|";
    }
    for (_, column) in [SERVERS[0], SERVERS[2], SERVERS[3]] {
        heading += &format!(" proxflow/{column} |");
        rule += "--:|";
    }
    out += &format!("{heading}\n{rule}\n");
    for (file, _) in FILES {
        out += &format!("| {file} |");
        for (server, _) in SERVERS {
            out += &format!(" {} |", get(server, file).map_or("n/a".into(), thousands));
        }
        for base in ["nginx", SERVEDIR_DEFAULTS, SERVEDIR_TUNED] {
            out += &format!(" {} |", fmt_ratio(ratio(file, base)));
        }
        out += "\n";
    }

    out += "\n| target | measured | result |\n|---|--:|---|\n";
    for (description, file, base, min) in TARGETS {
        let measured = ratio(file, base);
        let verdict = match (measured, min) {
            (None, _) => "SKIP",
            (Some(_), None) => "info",
            (Some(r), Some(min)) if r >= min => "PASS",
            (Some(_), Some(_)) => "FAIL",
        };
        out += &format!("| {description} | {} | {verdict} |\n", fmt_ratio(measured));
    }
    out
}

#[cfg(test)]
mod tests {}
