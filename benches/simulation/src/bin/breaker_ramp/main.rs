//! The breaker's ramp-up evaluation (issue 24): the adaptive ramp at its defaults against
//! instant close (`ramp_up_duration` 0) and the time-only ramp of 10 s and 30 s, by
//! discrete-event simulation on virtual time through the real `CircuitBreakerLayer` (its
//! generic form on a `ManualClock`).
//!
//! ```text
//! cargo build --release -p proxflow-simulation --bin breaker_ramp
//! target/release/breaker_ramp                          # 5 seeds, every load, with and without collapse
//! target/release/breaker_ramp --seeds 1 --loads 0.5,1.2 --collapse yes
//! target/release/breaker_ramp --trace 0.5,adaptive,yes,1   # one run, second by second
//! target/release/breaker_ramp --cold slower-calls      # cold: slower calls, not fewer slots
//! target/release/breaker_ramp --growth 1.5 --step-ms 200   # other adaptive settings
//! ```
//!
//! The report (markdown on stdout, appended to `--markdown FILE` too) has a table per backend
//! (with collapse, without) with a row per load at the probe and policy, then the targets.
//!
//! The model:
//!
//! - **Time.** Virtual, in nanoseconds: the loop jumps from event to event (an arrival, an
//!   answer). The breaker reads a `ManualClock` moved to each event's time. A run is
//!   deterministic for its seed, and every policy sees the same arrivals for a seed.
//! - **Load.** Poisson arrivals at 1,500 requests/s, open loop (a refused request is not
//!   retried), for the whole run.
//! - **Backend.** 50 slots, each call uniform in [10, 30] ms (20 ms mean): 2,500 requests/s
//!   when warm. A call that finds every slot busy waits in a FIFO queue of at most 50; one
//!   that finds the queue full is answered 503 after 1 ms. Warm until 10 s; down from 10 s
//!   (every call answered 503 after 1 ms) until its return; back cold, with 20 % of its slots
//!   (10: 500 requests/s, a third of the load), growing linearly to all 50 over 30 s. With
//!   collapse, a backlog (calls waiting for a slot) that lasts more than 1 s without a break
//!   sends it back to 20 % of its slots, warming again from there. With `--cold
//!   slower-calls`, cold means every slot serves but each call takes 1 / warmth as long (five
//!   times at first): the same capacity, with the latency up from the start.
//! - **Breaker.** `failure_threshold` 0.5, `min_requests` 10, `evaluation_window` 10 s,
//!   `recovery_timeout` 10 s, `half_open_max_requests` 3, the rest at the defaults (backoff
//!   ×2 per trip, `latency_threshold` 5 s). The 10 s window full of successes, it trips at
//!   about 14.5 s, when failures reach half of it, and probes 10, 30 and 70 s after the trip;
//!   the backend returns at a time after the trip set so that the probes 70 s after it find
//!   its capacity at the given share of the load (0.4: 600 requests/s, 1.5 s after its
//!   return; 1.5: 2,250, 26.25 s after). The adaptive ramp's usual latency is the backend's
//!   20 ms, learned in the first 10 s.
//! - **Policies.** `instant`: `ramp_up_duration` 0. `time 10s`, `time 30s`:
//!   `ramp_up_mode: time`. `adaptive`: the defaults (`ramp_up_mode: adaptive`, 30 s).
//! - **Figures**, from the return on, median over seeds (with the range where they differ):
//!   failures (503s from the backend); re-opens (RampUp or Closed → Open); time to 99 %: from
//!   the return to the start of the first second from which every second up to 120 s after
//!   the return has at least 99 % of its requests succeeding; successes within those 120 s.

mod report;
mod sim;

use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use proxflow_benches::exit_on_error;
use proxflow_benches::parallel::run_jobs;
use proxflow_benches::vendor::publish;
use proxflow_breaker::{BreakerConfig, RampUpMode};

use report::{report, trace};
use sim::{return_after_trip, run, Cold, Policy, RunResult};

/// Which backends to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Collapse {
    /// Only the backend that collapses when its backlog lasts over a second.
    Yes,
    /// Only the backend that never collapses.
    No,
    /// Both.
    Both,
}

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "The breaker's ramp-up after an outage, simulated")]
struct Args {
    /// Seeds per load, backend and policy (seeds 1..=N).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// The backend's capacity at the first successful probe, as shares of the offered load.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.4,0.5,0.6,0.7,0.8,0.9,1.0,1.1,1.2,1.3,1.4,1.5"
    )]
    loads: Vec<f64>,
    /// Backends with collapse, without, or both.
    #[arg(long, value_enum, default_value_t = Collapse::Both)]
    collapse: Collapse,
    /// What cold means: fewer slots (each call at its warm speed), or slower calls.
    #[arg(long, value_enum, default_value_t = Cold::FewerSlots)]
    cold: Cold,
    /// Run only the policies whose name contains one of these, comma-separated.
    #[arg(long, value_delimiter = ',')]
    policies: Vec<String>,
    /// Worker threads (each run is single-threaded). Default: the number of CPUs.
    #[arg(long)]
    threads: Option<usize>,
    /// Also append the markdown report to this file.
    #[arg(long)]
    markdown: Option<std::path::PathBuf>,
    /// One run, second by second: `load,policy,collapse(yes|no),seed`.
    #[arg(long)]
    trace: Option<String>,
    /// Exploration: the adaptive ramp's `ramp_up_step` in milliseconds.
    #[arg(long)]
    step_ms: Option<u64>,
    /// Exploration: the adaptive ramp's `ramp_up_growth`.
    #[arg(long)]
    growth: Option<f64>,
    /// Exploration: the adaptive ramp's `ramp_up_latency_tolerance`.
    #[arg(long)]
    tolerance: Option<f64>,
}

/// The breaker of the scenario, before the ramp's settings.
fn base() -> BreakerConfig {
    BreakerConfig {
        recovery_timeout: Duration::from_secs(10),
        evaluation_window: Duration::from_secs(10),
        ..BreakerConfig::default()
    }
}

fn policies(args: &Args) -> Vec<Policy> {
    let time = |seconds: u64| BreakerConfig {
        ramp_up_mode: RampUpMode::Time,
        ramp_up_duration: Duration::from_secs(seconds),
        ..base()
    };
    let mut adaptive = base();
    if let Some(ms) = args.step_ms {
        adaptive.ramp_up_step = Duration::from_millis(ms);
    }
    if let Some(growth) = args.growth {
        adaptive.ramp_up_growth = growth;
    }
    if let Some(tolerance) = args.tolerance {
        adaptive.ramp_up_latency_tolerance = tolerance;
    }
    let all = vec![
        Policy {
            name: "instant".into(),
            config: BreakerConfig {
                ramp_up_duration: Duration::ZERO,
                ..base()
            },
        },
        Policy {
            name: "time 10s".into(),
            config: time(10),
        },
        Policy {
            name: "time 30s".into(),
            config: time(30),
        },
        Policy {
            name: "adaptive".into(),
            config: adaptive,
        },
    ];
    all.into_iter()
        .filter(|p| args.policies.is_empty() || args.policies.iter().any(|f| p.name.contains(f)))
        .collect()
}

fn main() {
    exit_on_error(real_main(Args::parse()));
}

fn real_main(args: Args) -> proxflow_benches::vendor::Result<()> {
    let wall = Instant::now();
    let policies = policies(&args);
    if let Some(spec) = &args.trace {
        let parts: Vec<&str> = spec.split(',').collect();
        let [load, name, collapse, seed] = parts[..] else {
            return Err("--trace takes load,policy,collapse,seed".into());
        };
        let load: f64 = load.parse()?;
        let policy = policies
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("no policy named {name}"))?;
        let result = run(
            policy,
            return_after_trip(load),
            collapse == "yes",
            args.cold,
            seed.parse()?,
        );
        print!("{}", trace(policy, load, &result));
        return Ok(());
    }
    let collapses: &[bool] = match args.collapse {
        Collapse::Yes => &[true],
        Collapse::No => &[false],
        Collapse::Both => &[true, false],
    };
    let mut jobs = Vec::new();
    for &collapse in collapses {
        for l in 0..args.loads.len() {
            for p in 0..policies.len() {
                for seed in 1..=args.seeds {
                    jobs.push((collapse, l, p, seed));
                }
            }
        }
    }
    let results = run_jobs(
        &jobs,
        args.threads,
        |&(collapse, l, p, seed)| {
            let load = return_after_trip(args.loads[l]);
            run(&policies[p], load, collapse, args.cold, seed)
        },
        |_| String::new(),
    );
    let runs: Vec<((bool, usize, usize, u64), RunResult)> = jobs.into_iter().zip(results).collect();
    let md = report(
        &args.loads,
        collapses,
        &policies,
        &runs,
        args.seeds,
        wall.elapsed(),
    );
    publish(&md, args.markdown.as_deref())?;
    eprintln!("wall time {:.0} s", wall.elapsed().as_secs_f64());
    Ok(())
}
