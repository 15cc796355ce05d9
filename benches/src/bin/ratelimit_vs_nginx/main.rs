//! Vendor comparison for rate limiting: nginx `limit_req` vs proxflow's `ratelimit_server`
//! (`RateLimitLayer`), same rate and burst, same load, same core.
//!
//! Both servers are pinned to CPU 0 and wrk to CPU 1 (`wrk -t1 -c32 -dDs`, 32 connections from
//! 127.0.0.1, so one key). The rate is far below what the load offers, so almost every request
//! is rejected: the throughput measured is that of the rejection path, and the admitted count
//! is that of the algorithm.
//!
//! Equivalences (nginx 1.22 `ngx_http_limit_req_module`, checked by `check_statuses` and in the
//! report): nginx keeps an "excess" per key, in thousandths of a request, which leaks at the
//! rate; a request is admitted if the excess it would leave is at most `burst`, and the first
//! request of a key leaves 0. So `burst=b nodelay` admits `b + 1` at once and then one per
//! `1/rate`: a token bucket of capacity `b + 1` (`--algorithm token_bucket --burst b+1`), and
//! over a run of `D` seconds from a full bucket both admit `b + 1 + rate x D`. Without
//! `nodelay` the admitted requests wait their turn (one per `1/rate`, up to `b` waiting, the
//! rest rejected): `--algorithm leaky_bucket --burst b`, admitting about `1 + rate x D` in `D`
//! seconds (up to `b` still waiting at the end are not counted by wrk).
//!
//! nginx applies `limit_req` in its preaccess phase, after the rewrite phase in which `return`
//! answers: `location / { limit_req ...; return 200 "ok\n"; }` never limits anything. The
//! limited location therefore answers from the content phase: `try_files /nonexistent @ok`,
//! and `location @ok { return 200 "ok\n"; }`.
//!
//! nginx logs every rejected request at `error` level by default (`limit_req_log_level`); the
//! proxflow layer logs them at `debug`, which the server filters out. For like with like,
//! nginx gets `limit_req_log_level info` under `error_log ... warn`, so neither logs per
//! request; `--nginx-log-rejections` keeps nginx's default instead.
//!
//! Admitted and rejected requests are counted by wrk itself (`N requests`, `Non-2xx or 3xx
//! responses: M`): before loading, `check_statuses` makes sure each server answers only 200
//! (`ok\n`) or 429, so `N - M` are the 200s. No Lua script: a `response()` callback would make
//! wrk, on its one core, the bottleneck. wrk stops within 100 ms after the duration (it checks
//! its stop flag on a 100 ms timer), so a 10 s run lasts 10.0 to 10.1 s, which alone moves a
//! count by up to 1%: the counts are compared per unit of run length (admitted / expected, where
//! expected is `burst + rate x` the run length wrk reports), and the raw counts are shown too.
//!
//! Besides wall-clock req/s, each run records the CPU time the server used (user + system, from
//! `/proc/PID/stat`; nginx's worker), and reports requests per server CPU-second: on a shared
//! machine where other programs take the server's core now and then, this moves much less than
//! req/s. A third server, `ratelimit_server --no-limit` (the same program without the layer,
//! every request answered 200), shows the server's own ceiling, so that the layer's share of
//! any gap to nginx can be told from hyper's.
//!
//! Each run also records where the time went: the server's CPU time split into user and kernel
//! (on loopback most of it is the kernel's, and it is the same work for both servers), and from
//! `/proc/stat` how busy each of the two cores was and how much of it the hypervisor took for
//! other guests ("stolen": the host's noise, made visible). wrk saturates its core against
//! either server, so req/s is bounded by the client as much as by the server; requests per
//! server CPU-second is the figure that measures the server alone.
//!
//! ```text
//! cargo build --release -p proxflow-benches
//! target/release/ratelimit_vs_nginx --rate 1000 --burst 100 --duration 10 --rounds 3 --leaky
//! target/release/ratelimit_vs_nginx --rate 1000 --burst 100 --duration 10 --rounds 1 --pairs 30
//! ```

mod cli;
mod measure;
mod report;
mod scenario;
mod servers;

use std::collections::BTreeMap;
use std::fs;
use std::thread;
use std::time::Duration;

use clap::Parser;
use proxflow_benches::vendor::process::{sibling_binary, start_printing_port};
use proxflow_benches::vendor::{publish, Result};
use proxflow_benches::{exit_on_error, thousands};

use cli::Args;
use measure::{children_of, wrk, Run};
use scenario::Scenario;
use servers::{Target, NO_LIMIT};

fn main() {
    // Every server guard is dropped, and its process stopped, when `run` returns.
    exit_on_error(run(Args::parse()));
}

fn run(args: Args) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let proxflow_bin = sibling_binary("ratelimit_server")?;
    if !proxflow_bin.is_file() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p proxflow-benches --bin ratelimit_server`",
            proxflow_bin.display()
        )
        .into());
    }
    let scenarios: Vec<Scenario> = if args.leaky {
        vec![Scenario::TokenBucket, Scenario::LeakyBucket]
    } else {
        vec![Scenario::TokenBucket]
    };

    let (nginx, nginx_ports) = servers::start_nginx(tmp.path(), &args)?;
    let proxflow = servers::start_proxflow(&proxflow_bin, &args, &scenarios, tmp.path())?;
    // The server's own ceiling: the same program without the layer (every request 200).
    let baseline = start_printing_port(
        NO_LIMIT,
        &proxflow_bin,
        &["-p", "0", "--no-limit"],
        tmp.path(),
    )?;

    let nginx_workers = children_of(nginx.child.id());
    if nginx_workers.is_empty() {
        return Err("cannot find nginx's worker process in /proc".into());
    }
    let mut targets = Vec::new();
    for &scenario in &scenarios {
        targets.push(Target {
            scenario,
            name: "nginx",
            port: nginx_ports[&scenario],
            pids: nginx_workers.clone(),
        });
        let server = &proxflow[&scenario].0;
        targets.push(Target {
            scenario,
            name: "proxflow",
            port: server.port,
            pids: vec![server.child.id()],
        });
    }
    targets.push(Target {
        scenario: Scenario::TokenBucket,
        name: NO_LIMIT,
        port: baseline.port,
        pids: vec![baseline.child.id()],
    });
    for target in &targets {
        let (scenario, name) = (target.scenario, target.name);
        let seen = servers::check_statuses(target.port, name != NO_LIMIT)
            .map_err(|e| format!("{name} ({}): {e}", scenario.name()))?;
        eprintln!(
            "{name} ({}): {} x 200 ok, {} x 429 in a burst of concurrent requests",
            scenario.name(),
            seen.0,
            seen.1
        );
    }
    let refill = Duration::from_secs(1)
        + Duration::from_secs_f64(
            f64::from(args.burst.max(args.leaky_burst) + 1) / f64::from(args.rate),
        );
    for target in &targets {
        thread::sleep(refill);
        wrk(target.port, args.warmup, &target.pids)
            .map_err(|e| format!("{} ({}) warm-up: {e}", target.name, target.scenario.name()))?;
    }

    let runs = rounds(&args, &scenarios, &targets, refill)?;
    let pairs = pairs(&args, &targets)?;

    drop(nginx);
    drop(baseline);
    // Stopped with SIGTERM, ratelimit_server prints its counters on stderr.
    let mut configs = BTreeMap::new();
    let mut server_counts = Vec::new();
    for (scenario, (server, server_args)) in proxflow {
        let log = server.log.clone();
        drop(server);
        let text = fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with("ratelimit stats:")) {
            server_counts.push(format!("{}: {line}", scenario.name()));
        }
        let config = server_args.trim_start_matches("-p 0 ").to_string();
        configs.insert(scenario, config);
    }
    let report = report::report(&args, &scenarios, &runs, &pairs, &configs, &server_counts);
    if let Some(path) = &args.json {
        fs::write(path, report::json(&args, &runs).to_string())?;
    }
    publish(&report, args.markdown.as_deref())
}

/// The measured rounds: in each, every server of each scenario once, the bucket refilled before
/// each run.
fn rounds(
    args: &Args,
    scenarios: &[Scenario],
    targets: &[Target],
    refill: Duration,
) -> Result<BTreeMap<(Scenario, &'static str), Vec<Run>>> {
    let mut runs: BTreeMap<(Scenario, &str), Vec<Run>> = BTreeMap::new();
    for round in 0..args.rounds {
        for &scenario in scenarios {
            let pair: Vec<_> = targets.iter().filter(|t| t.scenario == scenario).collect();
            for i in 0..pair.len() {
                // Alternate which server goes first, to spread drift over both.
                let target = pair[(i + round as usize) % pair.len()];
                let name = target.name;
                // Long enough for the bucket to be full again (and the leaky queue empty).
                thread::sleep(refill);
                let result = wrk(target.port, args.duration, &target.pids)
                    .map_err(|e| format!("{name} ({}): {e}", scenario.name()))?;
                eprintln!(
                    "round {}/{} {:<12} {:<10} {:>8} req/s {:>8} req/CPU-s  {:>9} requests in {:.2} s  {:>7} x 200  {:>9} x 429  {}",
                    round + 1,
                    args.rounds,
                    scenario.name(),
                    name,
                    thousands(result.rps),
                    thousands(result.per_cpu_second()),
                    result.requests,
                    result.seconds,
                    result.admitted(),
                    result.non_2xx,
                    result.time_split(),
                );
                runs.entry((scenario, name)).or_default().push(result);
            }
        }
    }
    Ok(runs)
}

/// `--pairs`: short token-bucket runs of nginx and proxflow back to back, the first of each
/// pair alternating; (nginx, proxflow) per pair.
fn pairs(args: &Args, targets: &[Target]) -> Result<Vec<(Run, Run)>> {
    let mut pairs = Vec::new();
    let pick = |name: &str| {
        targets
            .iter()
            .find(|t| t.scenario == Scenario::TokenBucket && t.name == name)
    };
    if let (Some(ng), Some(pf), true) = (pick("nginx"), pick("proxflow"), args.pairs > 0) {
        let run = |target: &Target| wrk(target.port, args.pair_duration, &target.pids);
        for pair in 0..args.pairs {
            let (n, p) = if pair % 2 == 0 {
                let n = run(ng)?;
                (n, run(pf)?)
            } else {
                let p = run(pf)?;
                (run(ng)?, p)
            };
            eprintln!(
                "pair {}/{}: proxflow / nginx {:.3}x req/s, {:.3}x per server CPU-second",
                pair + 1,
                args.pairs,
                p.rps / n.rps,
                p.per_cpu_second() / n.per_cpu_second()
            );
            pairs.push((n, p));
        }
    }
    Ok(pairs)
}
