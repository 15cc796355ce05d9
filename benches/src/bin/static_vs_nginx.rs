//! Vendor comparison for static files: nginx vs proxflow's `static_server` vs tower-http's
//! `ServeDir` (the `servedir_server` baseline), on the same files, load and core.
//!
//! ServeDir is measured twice: served with `axum::serve` and its defaults, as the tower-http and
//! axum docs show it (`servedir_server --axum-defaults`: no `TCP_NODELAY`, so Nagle's algorithm
//! applies), and tuned (bare hyper with `TCP_NODELAY`). The ">= 10x ServeDir" target is taken
//! against the first; the ratio against the second is reported for information.
//!
//! Every server is pinned to CPU 0 and wrk to CPU 1 (`taskset`); each (server, file) pair gets a
//! short warm-up, then `--rounds` measured wrk runs with the servers interleaved, and the median
//! req/s is reported as a markdown table with the project's targets.
//!
//! Build both packages first so `static_server` sits next to this binary:
//!
//! ```text
//! cargo build --release -p proxflow-benches -p proxflow-examples
//! target/release/static_vs_nginx --duration 10 --rounds 3 --markdown benches/RESULTS.md
//! ```
//!
//! A server binary that is missing is skipped with a message; nginx is required.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use proxflow_benches::compare::statics::{check_responses, start_nginx, write_files, FILES};
use proxflow_benches::stats::median;
use proxflow_benches::vendor::process::{sibling_binary, start_printing_port, Server};
use proxflow_benches::vendor::{nginx, publish, wrk, Result, CONNECTIONS, SERVER_CPU, WRK_CPU};
use proxflow_benches::{command_line, exit_on_error, thousands, utc_now};

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

/// (description, file, baseline server, minimum proxflow/baseline ratio): the project's
/// targets; a row without a minimum is informational (no PASS/FAIL).
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
    // Every server guard is dropped, and its process stopped, when `run` returns.
    exit_on_error(run(Args::parse()));
}

fn run(args: Args) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let docroot = tmp.path().join("www");
    write_files(&docroot)?;

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
        let path = sibling_binary(bin)?;
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
    publish(&report(&args, &medians, &skipped), args.markdown.as_deref())
}

/// `http://127.0.0.1:PORT/file` of a server.
fn url(server: &Server, file: &str) -> String {
    format!("http://127.0.0.1:{}/{file}", server.port)
}

/// One wrk run on the load core. Any socket error or non-2xx/3xx response fails the benchmark:
/// a fast server that drops or refuses requests is not fast.
fn wrk(url: &str, secs: u32) -> Result<wrk::Report> {
    let report = wrk::run(url, secs, &["--latency"])?;
    if report.non_2xx > 0 {
        return Err(format!("wrk saw error responses:\n{}", report.text).into());
    }
    Ok(report)
}

fn report(args: &Args, medians: &BTreeMap<(&str, &str), f64>, skipped: &[&str]) -> String {
    let get = |server: &str, file: &str| medians.get(&(server, file)).copied();
    let ratio = |file: &str, base: &str| Some(get("proxflow", file)? / get(base, file)?);
    let fmt_ratio = |r: Option<f64>| r.map_or("n/a".to_string(), |r| format!("{r:.2}x"));

    let mut out = String::from("### Static files: nginx vs proxflow vs ServeDir\n\n");
    out += &format!("Command: `{}`", command_line());
    out += &format!(" ({})", utc_now());
    out += &format!(
        "\n\nServers pinned to CPU {SERVER_CPU}, wrk to CPU {WRK_CPU}: \
         `wrk -t1 -c{CONNECTIONS} -d{}s --latency`, median of {} round(s) after a {} s warm-up, \
         servers interleaved. {}, 1 worker, sendfile, open_file_cache, access_log off.\n",
        args.duration,
        args.rounds,
        args.warmup,
        nginx::version(),
    );
    for name in skipped {
        out += &format!("\n**{name} skipped: binary not built.**\n");
    }

    out += "\nServeDir is measured two ways. *axum::serve defaults* serves it as the tower-http and \
        axum docs show (`axum::serve(listener, Router::new().fallback_service(ServeDir::new(dir)))`), \
        which leaves `TCP_NODELAY` off: hyper often writes a response's headers and body separately \
        (the body once the file read completes), and Nagle's algorithm holds the second write back \
        until the client's delayed ACK of the first arrives; this is the ~9k req/s reference \
        point and the baseline of the 10x target. \
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
