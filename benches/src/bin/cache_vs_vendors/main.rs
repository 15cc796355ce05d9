//! Vendor comparison for HTTP caching: proxflow's `caching_proxy` (proxflow-cache in front of
//! one origin) vs nginx `proxy_cache` vs Varnish, serving 1 KiB hits over HTTP/1.1, one core
//! each.
//!
//! Each cache has an origin of its own, served by this program: `GET /1k` answered with 1024
//! bytes, `Cache-Control: max-age=3600` and `Content-Type: application/octet-stream`. Before
//! the load, a first `GET /1k` must be a miss and a later one a hit (`Cache-Status: proxflow;
//! hit`, nginx's `X-Cache-Status: HIT`, Varnish's `X-Varnish` with two ids), with the origin's
//! bytes. Each origin counts its requests, and the report shows how many arrived under load:
//! none, when every answer measured was a hit.
//!
//! The caches are pinned to CPU 0 (`taskset`; Varnish's manager and the cache process it forks
//! both, so its worker threads share the core as nginx's one worker and caching_proxy's
//! one-thread runtime do). wrk runs on CPU 1, and so does this program, origins included: they
//! answer only the first requests, so under load the core is wrk's. Each cache gets a short
//! warm-up, then `--rounds` measured wrk runs (`wrk -t1 -c32`, keep-alive) with the caches
//! interleaved, and the median req/s is reported as a markdown table with the project's
//! targets.
//!
//! ```text
//! cargo build --release -p proxflow-benches -p proxflow-examples
//! target/release/cache_vs_vendors --duration 10 --rounds 3 --markdown benches/RESULTS.md
//! target/release/cache_vs_vendors --quick
//! ```
//!
//! Needs nginx, varnish and wrk (Debian: `apt-get install nginx varnish wrk`). Everything
//! started is stopped when the program ends, on an error or a signal too.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use proxflow_benches::stats::median;
use proxflow_benches::vendor::interrupt;
use proxflow_benches::vendor::process::{pin_this_process, Server};
use proxflow_benches::vendor::{
    nginx, publish, varnish, wrk, Result, CONNECTIONS, SERVER_CPU, WRK_CPU,
};
use proxflow_benches::{command_line, exit_on_error, thousands, utc_now};

use proxflow_benches::compare::cache::{
    self as contestants, CACHING_PROXY, NGINX, VARNISH, VARNISH_PARAMS,
};
use proxflow_benches::compare::origin::{self, Origin};

/// (server name, column heading), in the report's order.
const CACHES: [(&str, &str); 3] = [
    (CACHING_PROXY, "caching_proxy"),
    (NGINX, "nginx proxy_cache"),
    (VARNISH, "Varnish"),
];

/// (description, baseline, minimum caching_proxy/baseline ratio): the project's targets.
const TARGETS: [(&str, &str, f64); 2] = [
    ("caching_proxy >= 1.0x nginx proxy_cache", NGINX, 1.0),
    ("caching_proxy >= 1.5x Varnish", VARNISH, 1.5),
];

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "Compare 1 KiB cache hits: caching_proxy, nginx proxy_cache, Varnish")]
struct Args {
    /// Seconds of each measured wrk run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    duration: u32,
    /// Measured rounds; the report gives the median per cache.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Seconds of the warm-up run per cache, not measured.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    warmup: u32,
    /// A smoke run of about half a minute: 2 rounds of 3 s after 1 s of warm-up. Its figures are
    /// rough.
    #[arg(long, conflicts_with_all = ["duration", "rounds", "warmup"])]
    quick: bool,
    /// Append the report to this file as well.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// One measured wrk run.
struct Run {
    rps: f64,
    p50: String,
    p99: String,
    /// Requests that reached the cache's origin during the run.
    origin_requests: u64,
}

/// A cache under test, in front of its own origin.
struct Cache {
    server: Server,
    origin: Origin,
}

fn main() {
    // Every server guard is dropped, and its process stopped, when `run` returns.
    exit_on_error(run(Args::parse()));
}

fn run(mut args: Args) -> Result<()> {
    if args.quick {
        (args.duration, args.rounds, args.warmup) = (3, 2, 1);
    }
    // Before any thread starts, so that every thread of this program (the origins' included)
    // stays off the caches' core; the servers pin themselves to it as they start.
    pin_this_process(WRK_CPU)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let tmp = tempfile::tempdir()?;
    interrupt::stop_children_on_signal(&runtime, tmp.path().to_path_buf())?;

    let starts = [
        contestants::start_caching_proxy,
        contestants::start_nginx,
        contestants::start_varnish,
    ];
    let mut caches = Vec::new();
    for start in starts {
        let origin = origin::start(&runtime)?;
        let server = start(tmp.path(), &origin)?;
        caches.push(Cache { server, origin });
    }
    for cache in &caches {
        let headers = contestants::check_hit(&cache.server)?;
        eprintln!("{}: /1k is a hit: {headers}", cache.server.name);
    }
    eprintln!("warming up");
    for cache in &caches {
        measure(cache, args.warmup).map_err(|e| format!("{} warm-up: {e}", cache.server.name))?;
    }

    let mut runs: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    for round in 0..args.rounds {
        // Rotating the start spreads any drift (thermal, a neighbour's job) over all caches.
        for i in 0..caches.len() {
            let cache = &caches[(i + round as usize) % caches.len()];
            let result = measure(cache, args.duration)
                .map_err(|e| format!("{} round {}: {e}", cache.server.name, round + 1))?;
            eprintln!(
                "round {}/{} {:<14} {:>10} req/s  p50 {:>8}  p99 {:>8}  origin requests {}",
                round + 1,
                args.rounds,
                cache.server.name,
                thousands(result.rps),
                result.p50,
                result.p99,
                result.origin_requests
            );
            runs.entry(cache.server.name).or_default().push(result);
        }
    }
    drop(caches);
    publish(&report(&args, &runs), args.markdown.as_deref())
}

/// One wrk run against a cache on the load core, and the requests its origin got meanwhile.
/// Any socket error or non-2xx/3xx answer fails the benchmark: a fast cache that drops or
/// refuses requests is not fast.
fn measure(cache: &Cache, secs: u32) -> Result<Run> {
    let url = format!("http://127.0.0.1:{}/{}", cache.server.port, origin::FILE);
    let before = cache.origin.requests();
    let report = wrk::run(&url, secs, &["--latency"])?;
    if report.non_2xx > 0 {
        return Err(format!("wrk saw error responses:\n{}", report.text).into());
    }
    Ok(Run {
        rps: report.rps,
        p50: report.p50,
        p99: report.p99,
        origin_requests: cache.origin.requests() - before,
    })
}

fn report(args: &Args, runs: &BTreeMap<&str, Vec<Run>>) -> String {
    let median_rps = |name: &str| {
        let mut values: Vec<f64> = runs.get(name)?.iter().map(|run| run.rps).collect();
        Some(median(&mut values))
    };
    let origin_requests = |name: &str| -> u64 {
        runs.get(name)
            .map_or(0, |r| r.iter().map(|run| run.origin_requests).sum())
    };
    let ratio = |base: &str| Some(median_rps(CACHING_PROXY)? / median_rps(base)?);
    let fmt_ratio = |r: Option<f64>| r.map_or("n/a".to_string(), |r| format!("{r:.2}x"));

    let mut out = String::from(
        "### HTTP cache, 1 KiB hits: caching_proxy vs nginx proxy_cache vs Varnish\n\n",
    );
    out += &format!("Command: `{}` ({})", command_line(), utc_now());
    if args.quick {
        out += ", a smoke run: rough figures";
    }
    out += &format!(
        "\n\nCaches pinned to CPU {SERVER_CPU}; wrk, and the origins (which answer only each \
         cache's first request), on CPU {WRK_CPU}: `wrk -t1 -c{CONNECTIONS} -d{}s --latency` on \
         `GET /1k` (1024 bytes, `Cache-Control: max-age=3600`), median of {} round(s) after a \
         {} s warm-up, caches interleaved. caching_proxy: its default configuration, one-thread \
         runtime. {}: 1 worker, proxy_cache on files in a temporary directory, sendfile, \
         open_file_cache, keep-alive to the origin, access_log off. {}: built-in VCL, `{}`, \
         manager and cache process on the one core.\n",
        args.duration,
        args.rounds,
        args.warmup,
        nginx::version(),
        varnish::version(),
        VARNISH_PARAMS.join(" "),
    );

    out += "\n| cache | req/s (median) | each round | p50 / p99 (median round) | origin requests under load | caching_proxy / it |\n";
    out += "|---|--:|---|--:|--:|--:|\n";
    for (name, heading) in CACHES {
        let rounds = runs.get(name).map(Vec::as_slice).unwrap_or_default();
        let each: Vec<String> = rounds.iter().map(|run| thousands(run.rps)).collect();
        let latency =
            median_run(rounds).map_or("n/a".into(), |run| format!("{} / {}", run.p50, run.p99));
        out += &format!(
            "| {heading} | {} | {} | {latency} | {} | {} |\n",
            median_rps(name).map_or("n/a".into(), thousands),
            each.join(", "),
            origin_requests(name),
            fmt_ratio(ratio(name)),
        );
    }

    out += "\n| target | measured | result |\n|---|--:|---|\n";
    for (description, base, min) in TARGETS {
        let measured = ratio(base);
        // Load that reached an origin was not all hits: not the comparison the target means.
        let all_hits = origin_requests(CACHING_PROXY) == 0 && origin_requests(base) == 0;
        let verdict = match measured {
            None => "not measured",
            Some(_) if !all_hits => "INVALID (not all hits)",
            Some(r) if r >= min => "PASS",
            Some(_) => "FAIL",
        };
        out += &format!("| {description} | {} | {verdict} |\n", fmt_ratio(measured));
    }
    out
}

/// The run whose req/s is the median (the lower of the middle two for an even count).
fn median_run(runs: &[Run]) -> Option<&Run> {
    let mut sorted: Vec<&Run> = runs.iter().collect();
    sorted.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}
