//! Load-balancing simulation (issues 5 and 18): proxflow-lb's policies, through the real
//! `AdaptiveLb` layer (or its generic form), against tower's own p2c balancers
//! (`tower::balance::p2c::Balance` over `PeakEwmaDiscover` and `PendingRequestsDiscover`, the
//! tower crate itself), on simulated backends in one process.
//!
//! ```text
//! cargo build --release -p proxflow-simulation --bin lb_simulation
//! target/release/lb_simulation --seeds 10 --markdown /tmp/lb.md --svg /tmp/lb.svg
//! target/release/lb_simulation --seeds 1 --duration 10 --scenarios S1 --timeout outside
//! ```
//!
//! The model:
//!
//! - **Time.** Each run is a current-thread tokio runtime started with paused time: sleeps
//!   are free, the clock jumps to the next timer, and a run is deterministic for its seed.
//!   tokio's timers have a 1 ms resolution, so every latency is rounded up to the next
//!   millisecond, for every balancer alike. A scenario has its own length (S2L 300 s, the
//!   others 60 s); `--duration` sets every run's length to try things out.
//! - **Arrivals.** Open loop: Poisson arrivals from a seeded RNG, each request spawned as a
//!   task at its scheduled time whatever the state of earlier ones. Latency is the answer's
//!   time minus the scheduled time.
//! - **Client.** The client service (what hyper-util's `Client` is in a gateway) routes by
//!   the URI's authority (`http://b3:80`) to backend 3. A backend that is down refuses the
//!   connection at once (an `io::Error` of kind `ConnectionRefused`).
//! - **The 1 s timeout**, in one of two places (`--timeout`, both by default, each a row of
//!   its own). *Outside*: a deadline 1 s after the scheduled time drops the balancer's
//!   future, as `TimeoutLayer` or a caller's deadline does; the client has no timeout, and
//!   dropping tower's response future drops its PeakEwma handle, which records. *Inside*:
//!   the client's own timeout, 1 s after its send; the balancers see a client error
//!   (proxflow answers it 502; tower's balancer returns the error). Either way a request not
//!   answered 1 s after its scheduled time is a timeout and counts as 1000 ms.
//! - **Backends.** A latency drawn uniformly between a low and a high bound (tower's own
//!   balance example draws uniformly in `[0, max)`; S1 uses exactly that), taken when the
//!   request starts service. A concurrency limit: requests beyond it wait in a FIFO queue; a
//!   queued request whose client gave up leaves the queue (the server never read it), a
//!   request in service keeps its slot until its service time is over (the server does not
//!   notice the client left). S4's failing backend answers its failures with a 503 after
//!   1 ms, without taking a slot. S7's backend is down (refuses at once) and S8's not ready
//!   (its tower service's `poll_ready` is pending, waking when it is ready) for the middle
//!   half of the run.
//! - **Balancers.** proxflow-lb as its users get it: `AdaptiveLb` over the client service;
//!   in S8, where readiness needs a tower service per backend, every balancer runs over one
//!   such service per backend (proxflow through `AdaptiveLb::balance`, tower's p2c over the
//!   same services). The adaptive policy runs at `AdaptiveConfig::default()`, the origin's
//!   defaults (`history_length 10`, `update_interval 1m`, `alpha 0.3`);
//!   `--update-interval-ms` and `--alpha` override them for exploration. Plain proxflow
//!   names are the policy alone, like tower's balancers, which have nothing else: passive
//!   ejection off and no retry. `+ejection` is the layer's defaults: 5 failures in a row
//!   eject an upstream for 30 s, and a refused connection is retried once on another
//!   upstream.
//! - **Errors.** A non-2xx answer (proxflow's 502 for a client error, the 503s of S4) or a
//!   tower error, or the 1 s timeout. Latency percentiles are over every request, errors
//!   included at their latency.
//! - **Fair share.** A backend's share of the capacity of the pool at that moment:
//!   `limit × (1 − failure ratio) / mean latency` (none while down or not ready), over the
//!   backends in the balancer then. The "bad backend" of each scenario is sent a share of
//!   each 1 s window of sends; its settle time is how long after the bad period starts its
//!   share falls below twice its fair share (1% while it has no capacity) and stays there
//!   until the period ends ("never" if it is above in the last window).
//! - **Targets.** Issue 18's, for `adaptive` at its defaults with ejection off, per timeout
//!   placement: p99 at most tower PeakEwma's in every scenario and at most half of it in S1;
//!   errors at most PeakEwma's in S2 and S2L, and below round robin's and PeakEwma's in S4.

mod backends;
mod balancers;
mod cli;
mod format;
mod report;
mod run;
mod scenarios;
mod stats;
mod svg;
mod targets;

use std::collections::BTreeMap;

use clap::Parser;
use proxflow_benches::exit_on_error;
use proxflow_benches::parallel::run_jobs;
use proxflow_benches::vendor::publish;

use backends::Result;
use balancers::contenders;
use cli::Args;
use scenarios::{scenarios, Scenario};
use stats::{summary, Results, RunResult};

fn main() {
    exit_on_error(real_main(Args::parse()));
}

fn real_main(args: Args) -> Result<()> {
    let wall = std::time::Instant::now();
    let mut scenarios: Vec<Scenario> = scenarios()
        .into_iter()
        .filter(|s| {
            args.scenarios
                .iter()
                .any(|id| id.eq_ignore_ascii_case(s.id))
        })
        .collect();
    if scenarios.is_empty() {
        return Err("no scenario selected (S1, S2, S2L, S3..S8)".into());
    }
    if let Some(duration) = args.duration {
        for scenario in &mut scenarios {
            scenario.duration = f64::from(duration);
        }
    }
    let contenders = contenders(&args);
    if contenders.is_empty() {
        return Err("no policy selected".into());
    }
    let mut jobs = Vec::new();
    for s in 0..scenarios.len() {
        for c in 0..contenders.len() {
            for seed in 1..=args.seeds {
                jobs.push((s, c, seed));
            }
        }
    }
    // The heaviest scenarios first, so that the threads finish together.
    let requests = |s: &Scenario| s.rate * s.duration;
    jobs.sort_by(|a, b| requests(&scenarios[b.0]).total_cmp(&requests(&scenarios[a.0])));
    let outcomes = run_jobs(
        &jobs,
        args.threads,
        |&(s, c, seed)| run::run(&scenarios[s], &contenders[c], seed),
        |&(s, c, seed)| {
            format!(
                "({} {} {} seed {seed})",
                scenarios[s].id,
                contenders[c].name,
                contenders[c].placement.name()
            )
        },
    );
    let mut runs: BTreeMap<(usize, usize), Vec<RunResult>> = BTreeMap::new();
    for (&(s, c, _), outcome) in jobs.iter().zip(outcomes) {
        let result = outcome?;
        runs.entry((s, c)).or_default().push(result);
    }
    let results: Results = runs.iter().map(|(&k, v)| (k, summary(v))).collect();

    let svg_path = args.svg.clone().unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lb_simulation.svg")
    });
    std::fs::write(&svg_path, svg::svg(&scenarios, &contenders, &results))?;
    let svg_name = svg_path
        .file_name()
        .map_or("lb_simulation.svg".into(), |n| {
            n.to_string_lossy().into_owned()
        });
    let md = report::report(
        &args,
        &scenarios,
        &contenders,
        &results,
        &svg_name,
        wall.elapsed(),
    );
    publish(&md, args.markdown.as_deref())?;
    eprintln!("plot written to {}", svg_path.display());
    eprintln!("wall time {:.0} s", wall.elapsed().as_secs_f64());
    Ok(())
}
