//! proxflow against the vendor proxies, side by side on one machine, in one command: nginx,
//! HAProxy, Caddy and Varnish.
//!
//! ```text
//! cargo run --release -p proxflow-benches --bin vendor_compare -- [--quick] [SCENARIO...]
//! ```
//!
//! Scenarios (all by default, in this order):
//!
//! - `static`: `static_server` (proxflow-static) vs nginx, Caddy `file_server` and tower-http
//!   `ServeDir`, 1 KiB and 100 KiB files (the files and nginx of `static_vs_nginx`).
//! - `reverse_proxy`: `hyper_proxy` (proxflow-lb, round robin and adaptive) vs nginx
//!   `upstream`, HAProxy `roundrobin`, Caddy `reverse_proxy`, over three loopback upstreams.
//! - `ratelimit`: proxflow-ratelimit vs nginx `limit_req` at 1000/s, burst 100: the admitted
//!   count and the rejection path's throughput (measured by `ratelimit_vs_nginx`, run as is).
//! - `cache`: `caching_proxy` (proxflow-cache) vs nginx `proxy_cache` and Varnish, 1 KiB hits
//!   (the contestants of `cache_vs_vendors`).
//! - `heterogeneous`: the same proxies over three upstreams, one ten times slower; proxflow-lb
//!   adaptive vs nginx `least_conn`, HAProxy `leastconn`, Caddy `least_conn` at a fixed rate:
//!   p50/p99 and the share sent to the slow upstream.
//! - `gateway`: the `gateway` program (cache, rate limit, balancer, breakers on `/api`) vs nginx
//!   with `limit_req`, `proxy_cache` and `upstream`, and each one's bare proxy for the cost of
//!   the composition.
//!
//! The program checks that the Debian packages it needs are installed (naming the
//! `apt-get install` line otherwise), builds proxflow's programs under test (asking the cargo
//! that runs it), writes each vendor's configuration from its committed template in
//! `benches/vendor_configs/` into a temporary directory, and starts everything on 127.0.0.1:
//! the server under test pinned to CPU 0, the load generators and the upstreams (this program)
//! to CPU 1. Contestants are interleaved round by round. Throughput comes from wrk (closed
//! loop); latency from an open-loop generator of this program (a constant rate, latency from
//! each request's scheduled send) at 50% and 90% of the slowest contestant's maximum.
//! Everything started is stopped at the end, on an error, and on Ctrl-C.
//!
//! It prints a markdown report per scenario and writes an SVG plot of each. A full run keeps
//! its sections of `benches/RESULTS.md` up to date (each between markers of its own) and writes
//! the plots to `benches/plots/`; a `--quick` run (a smoke check of all six scenarios, rough
//! figures) writes neither unless `--results` and `--plots` say where.
//!
//! A full run takes about 45 minutes; `--quick` about three, plus the builds.

mod binaries;
mod engine;
mod report;
mod scenarios;
mod upstream;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use proxflow_benches::exit_on_error;
use proxflow_benches::vendor::process::pin_this_process;
use proxflow_benches::vendor::{
    interrupt, require, Result, CADDY, HAPROXY, NGINX, TASKSET, VARNISHD, WRK, WRK_CPU,
};

use engine::Plan;
use report::{Outputs, Section};
use scenarios::Context;

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
#[value(rename_all = "snake_case")]
enum Scenario {
    /// Scenario 1: static files, 1 KiB and 100 KiB.
    Static,
    /// Scenario 2: reverse proxy over three loopback upstreams, round robin.
    ReverseProxy,
    /// Scenario 3: rate limiting at a fixed rate and burst.
    Ratelimit,
    /// Scenario 4: a caching proxy serving 1 KiB hits.
    Cache,
    /// Scenario 5: one upstream of three ten times slower, tail latency at a fixed rate.
    Heterogeneous,
    /// Scenario 6: the whole gateway stack against nginx with the same features.
    Gateway,
}

impl Scenario {
    /// The programs from Debian's packages it runs.
    fn programs(self) -> &'static [&'static str] {
        match self {
            Scenario::ReverseProxy | Scenario::Heterogeneous => {
                &[NGINX, HAPROXY, CADDY, WRK, TASKSET]
            }
            Scenario::Cache => &[NGINX, VARNISHD, WRK, TASKSET],
            Scenario::Static => &[NGINX, CADDY, WRK, TASKSET],
            Scenario::Ratelimit | Scenario::Gateway => &[NGINX, WRK, TASKSET],
        }
    }

    /// proxflow's programs it runs: (package, binary).
    fn binaries(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Scenario::ReverseProxy | Scenario::Heterogeneous => {
                &[("proxflow-examples", "hyper_proxy")]
            }
            Scenario::Cache => &[("proxflow-examples", "caching_proxy")],
            Scenario::Static => &[
                ("proxflow-examples", "static_server"),
                ("proxflow-benches", "servedir_server"),
            ],
            Scenario::Ratelimit => &[
                ("proxflow-benches", "ratelimit_server"),
                ("proxflow-benches", "ratelimit_vs_nginx"),
            ],
            Scenario::Gateway => &[
                ("proxflow-examples", "gateway"),
                ("proxflow-examples", "hyper_proxy"),
            ],
        }
    }

    fn run(self, ctx: &Context) -> Result<Section> {
        match self {
            Scenario::ReverseProxy => scenarios::reverse_proxy::run(ctx),
            Scenario::Cache => scenarios::cache::run(ctx),
            Scenario::Static => scenarios::statics::run(ctx),
            Scenario::Ratelimit => scenarios::ratelimit::run(ctx),
            Scenario::Heterogeneous => scenarios::hetero::run(ctx),
            Scenario::Gateway => scenarios::gateway::run(ctx),
        }
    }
}

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "proxflow vs nginx, HAProxy, Caddy and Varnish, side by side")]
struct Args {
    /// The scenarios to run (default: all).
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// A smoke run: all six scenarios in about three minutes (one round of 2 s wrk runs and 1 s
    /// open-loop runs after 1 s of warm-up). Rough figures; RESULTS.md is left alone unless
    /// `--results` is given.
    #[arg(long)]
    quick: bool,
    /// Seconds of each measured wrk run (default 10; 2 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    duration: Option<u32>,
    /// Measured wrk rounds (default 3; 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: Option<u32>,
    /// Seconds of each contestant's warm-up (default 2; 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    warmup: Option<u32>,
    /// Seconds of each open-loop run (default 10; 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    open_duration: Option<u32>,
    /// Open-loop rounds (default 3; 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    open_rounds: Option<u32>,
    /// The open-loop generator's keep-alive connections.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    open_connections: u32,
    /// The heterogeneous scenario's fixed rate, requests per second.
    #[arg(long, default_value_t = 2000.0)]
    hetero_rate: f64,
    /// The heterogeneous scenario's fast upstreams' delay in milliseconds; the slow one waits
    /// ten times as long.
    #[arg(long, default_value_t = 2)]
    hetero_delay_ms: u64,
    /// The markdown file whose sections are kept up to date (default: benches/RESULTS.md, not
    /// with --quick).
    #[arg(long)]
    results: Option<PathBuf>,
    /// Leave every results file alone.
    #[arg(long, conflicts_with = "results")]
    no_results: bool,
    /// Where the SVG plots go (default: benches/plots, or the system's temporary directory with
    /// --quick).
    #[arg(long)]
    plots: Option<PathBuf>,
}

fn main() {
    // Every server guard is dropped, and its process stopped, when `run` returns.
    exit_on_error(run(Args::parse()));
}

fn run(args: Args) -> Result<()> {
    let mut selected = args.scenarios.clone();
    if selected.is_empty() {
        selected = Scenario::value_variants().to_vec();
    }
    selected.sort();
    selected.dedup();
    let (duration, rounds, warmup, open_duration, open_rounds) = if args.quick {
        (2, 1, 1, 1, 1)
    } else {
        (10, 3, 2, 10, 3)
    };
    let plan = Plan {
        duration: args.duration.unwrap_or(duration),
        rounds: args.rounds.unwrap_or(rounds),
        warmup: args.warmup.unwrap_or(warmup),
        open_duration: args.open_duration.unwrap_or(open_duration),
        open_rounds: args.open_rounds.unwrap_or(open_rounds),
        open_connections: args.open_connections as usize,
        quick: args.quick,
    };
    let benches = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let outputs = Outputs {
        results: match (&args.results, args.no_results || args.quick) {
            (Some(path), _) => Some(path.clone()),
            (None, true) => None,
            (None, false) => Some(benches.join("RESULTS.md")),
        },
        plots: args.plots.clone().unwrap_or_else(|| {
            if args.quick {
                std::env::temp_dir().join("vendor_compare")
            } else {
                benches.join("plots")
            }
        }),
    };

    let programs: Vec<&str> = selected
        .iter()
        .flat_map(|s| s.programs())
        .copied()
        .collect();
    require(&programs)?;
    let mut binaries: Vec<(&str, &str)> = selected
        .iter()
        .flat_map(|s| s.binaries())
        .copied()
        .collect();
    binaries.sort();
    binaries.dedup();
    binaries::ensure(&binaries)?;

    // Before any thread starts, so that every thread of this program (the upstreams and the
    // open-loop generator) stays off the servers' core; the servers pin themselves as they
    // start.
    pin_this_process(WRK_CPU)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let tmp = tempfile::tempdir()?;
    interrupt::stop_children_on_signal(&runtime, tmp.path().to_path_buf())?;
    let ctx = Context {
        runtime,
        tmp: tmp.path().to_path_buf(),
        plan,
        hetero_rate: args.hetero_rate,
        hetero_delay: Duration::from_millis(args.hetero_delay_ms),
    };

    let mut failed = Vec::new();
    for scenario in selected {
        let name = scenario
            .to_possible_value()
            .map_or(String::new(), |v| v.get_name().to_string());
        eprintln!("== {name}");
        match scenario.run(&ctx) {
            Ok(section) => {
                let markdown = report::render(&section, &outputs)?;
                println!("{markdown}");
                if let Some(svg) = section.plot.as_ref().map(|_| report::plot_file(&section)) {
                    eprintln!("plot: {}", outputs.plots.join(svg).display());
                }
                if let Some(results) = &outputs.results {
                    report::update_results(results, section.id, &markdown)?;
                    eprintln!("updated {}", results.display());
                }
            }
            Err(error) => {
                eprintln!("{name} failed: {error}");
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("scenarios failed: {}", failed.join(", ")).into())
    }
}
