//! How every scenario measures: the contestants interleaved round by round, throughput with wrk
//! (closed loop) and latency with the open-loop generator at fixed rates.

use std::time::Duration;

use proxflow_benches::thousands;
use proxflow_benches::vendor::cpu::{self, CoreUse};
use proxflow_benches::vendor::openloop::{self, Outcome, Schedule};
use proxflow_benches::vendor::process::Server;
use proxflow_benches::vendor::{wrk, Result, SERVER_CPU, WRK_CPU};
use tokio::runtime::Runtime;

/// How long and how often each measurement runs.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Seconds of each measured wrk run.
    pub duration: u32,
    /// Measured rounds of wrk runs and of open-loop runs.
    pub rounds: u32,
    /// Seconds of the warm-up run per contestant, not measured.
    pub warmup: u32,
    /// Seconds of each open-loop run.
    pub open_duration: u32,
    /// Open-loop rounds.
    pub open_rounds: u32,
    /// The open-loop generator's connections.
    pub open_connections: usize,
    /// A smoke run: rough figures.
    pub quick: bool,
}

/// A server under test.
pub struct Contestant {
    /// Its name in the report.
    pub label: String,
    /// proxflow's contestants have their own colour in the plots and are the numerators of the
    /// ratios.
    pub proxflow: bool,
    /// The process, stopped when dropped.
    pub server: Server,
}

impl Contestant {
    /// A contestant from a started server.
    pub fn new(label: impl Into<String>, proxflow: bool, server: Server) -> Contestant {
        Contestant {
            label: label.into(),
            proxflow,
            server,
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.server.port)
    }
}

/// One wrk run against one contestant.
#[derive(Debug, Clone)]
pub struct WrkRun {
    /// Requests per second.
    pub rps: f64,
    /// Requests answered per second of the server's CPU time (all its processes and threads):
    /// what one dedicated core would serve, less disturbed than req/s by the load core's limits.
    pub per_cpu: f64,
    /// What the server's core and the load core did meanwhile.
    pub server_core: CoreUse,
    /// The load core: wrk and the upstreams.
    pub load_core: CoreUse,
    /// wrk's median and 99th percentile latency, as it prints them.
    pub p50: String,
    /// See `p50`.
    pub p99: String,
}

/// One wrk run on the load core, with the server's CPU time and both cores' use. Any socket
/// error or non-2xx/3xx answer fails it: a fast server that drops or refuses requests is not
/// fast.
pub fn wrk_run(contestant: &Contestant, path: &str, secs: u32) -> Result<WrkRun> {
    let pids = cpu::process_tree(contestant.server.child.id());
    let [user_before, system_before] = cpu::cpu_seconds(&pids);
    let cores_before = (cpu::core_ticks(SERVER_CPU)?, cpu::core_ticks(WRK_CPU)?);
    let report = wrk::run(&contestant.url(path), secs, &["--latency"])?;
    let cores_after = (cpu::core_ticks(SERVER_CPU)?, cpu::core_ticks(WRK_CPU)?);
    let [user, system] = cpu::cpu_seconds(&pids);
    if report.non_2xx > 0 {
        return Err(format!(
            "wrk saw error responses:\n{}\nnow: {}",
            report.text,
            sample(contestant, path)
        )
        .into());
    }
    let cpu_seconds = (user - user_before) + (system - system_before);
    Ok(WrkRun {
        rps: report.rps,
        per_cpu: report.requests as f64 / cpu_seconds.max(0.01),
        server_core: cpu::core_use(cores_before.0, cores_after.0),
        load_core: cpu::core_use(cores_before.1, cores_after.1),
        p50: report.p50,
        p99: report.p99,
    })
}

/// One answer to `GET path`, in a line, for an error message.
fn sample(contestant: &Contestant, path: &str) -> String {
    match proxflow_benches::vendor::http::get(contestant.server.port, path.trim_start_matches('/'))
    {
        Ok(response) => {
            let body = String::from_utf8_lossy(&response.body);
            let body: String = body.chars().take(200).collect();
            format!("{} {body:?}", response.status)
        }
        Err(error) => format!("no answer: {error}"),
    }
}

/// A warm-up wrk run per contestant, then `plan.rounds` rounds of one wrk run each, the first
/// contestant of a round rotating; the runs per contestant, in the contestants' order.
pub fn throughput(contestants: &[Contestant], path: &str, plan: &Plan) -> Result<Vec<Vec<WrkRun>>> {
    for contestant in contestants {
        wrk_run(contestant, path, plan.warmup)
            .map_err(|e| format!("{} warm-up: {e}", contestant.label))?;
    }
    let mut runs = vec![Vec::new(); contestants.len()];
    for round in 0..plan.rounds as usize {
        // Rotating the start spreads any drift (thermal, a neighbour's job) over everyone.
        for i in 0..contestants.len() {
            let index = (i + round) % contestants.len();
            let contestant = &contestants[index];
            let run = wrk_run(contestant, path, plan.duration)
                .map_err(|e| format!("{} round {}: {e}", contestant.label, round + 1))?;
            eprintln!(
                "  round {}/{} {:<26} {:>9} req/s {:>9} req/CPU-s  server core {:>3.0}% busy, load core {:>3.0}% busy",
                round + 1,
                plan.rounds,
                contestant.label,
                thousands(run.rps),
                thousands(run.per_cpu),
                run.server_core.busy * 100.0,
                run.load_core.busy * 100.0,
            );
            runs[index].push(run);
        }
    }
    Ok(runs)
}

/// One open-loop run against one contestant, and how much each counter of `counters` grew
/// meanwhile (the upstreams' request counts, say).
#[derive(Debug, Clone)]
pub struct OpenRun {
    /// What the generator measured.
    pub outcome: Outcome,
    /// The growth of each counter.
    pub counted: Vec<u64>,
    /// What the load core (the generator and the upstreams) did meanwhile: when it is busy
    /// nearly all the time, the latencies are the generator's as much as the server's.
    pub load_core: CoreUse,
}

/// One open-loop run of `secs` at `rate` on the load core.
pub fn open_run(
    runtime: &Runtime,
    contestant: &Contestant,
    path: &str,
    rate: f64,
    secs: u32,
    plan: &Plan,
    counters: &dyn Fn() -> Vec<u64>,
) -> Result<OpenRun> {
    let schedule = Schedule {
        rate,
        duration: Duration::from_secs(u64::from(secs)),
        connections: plan.open_connections,
    };
    let before = counters();
    let core_before = cpu::core_ticks(WRK_CPU)?;
    let outcome = runtime.block_on(openloop::run(contestant.server.port, path, schedule))?;
    let load_core = cpu::core_use(core_before, cpu::core_ticks(WRK_CPU)?);
    let after = counters();
    let counted = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    Ok(OpenRun {
        outcome,
        counted,
        load_core,
    })
}

/// `plan.open_rounds` rounds, in each an open-loop run per rate and contestant (the first
/// contestant rotating); the runs indexed `[contestant][rate]`.
pub fn latency(
    runtime: &Runtime,
    contestants: &[Contestant],
    path: &str,
    rates: &[f64],
    plan: &Plan,
    counters: &dyn Fn() -> Vec<u64>,
) -> Result<Vec<Vec<Vec<OpenRun>>>> {
    let mut runs = vec![vec![Vec::new(); rates.len()]; contestants.len()];
    for round in 0..plan.open_rounds as usize {
        for (r, &rate) in rates.iter().enumerate() {
            for i in 0..contestants.len() {
                let index = (i + round) % contestants.len();
                let contestant = &contestants[index];
                let run = open_run(
                    runtime,
                    contestant,
                    path,
                    rate,
                    plan.open_duration,
                    plan,
                    counters,
                )
                .map_err(|e| format!("{} at {rate:.0} req/s: {e}", contestant.label))?;
                let outcome = &run.outcome;
                eprintln!(
                    "  round {}/{} {:<26} at {:>7} req/s: p50 {:>8.3} ms  p99 {:>8.3} ms  p99.9 {:>8.3} ms  load core {:>3.0}% busy{}",
                    round + 1,
                    plan.open_rounds,
                    contestant.label,
                    thousands(rate),
                    outcome.ms(0.5),
                    outcome.ms(0.99),
                    outcome.ms(0.999),
                    run.load_core.busy * 100.0,
                    problems(outcome),
                );
                runs[index][r].push(run);
            }
        }
    }
    Ok(runs)
}

/// What went wrong in an open-loop run, for the log and the tables: errors, non-2xx answers,
/// unfinished requests, a late generator.
pub fn problems(outcome: &Outcome) -> String {
    let mut out = String::new();
    if outcome.errors > 0 {
        out += &format!("  {} errors", outcome.errors);
    }
    if outcome.non_2xx > 0 {
        out += &format!("  {} non-2xx", outcome.non_2xx);
    }
    if outcome.unfinished > 0 {
        out += &format!("  {} unfinished", outcome.unfinished);
    }
    if outcome.pacer_late_max > Duration::from_millis(5) {
        out += &format!(
            "  generator up to {:.1} ms late",
            outcome.pacer_late_max.as_secs_f64() * 1e3
        );
    }
    out
}

/// The open-loop runs' histograms merged: percentiles over every request of every round.
pub fn merged(runs: &[OpenRun]) -> Option<Outcome> {
    let mut iter = runs.iter();
    let mut total = iter.next()?.outcome.clone();
    for run in iter {
        let o = &run.outcome;
        let _ = total.latency.add(&o.latency);
        total.scheduled += o.scheduled;
        total.answered += o.answered;
        total.non_2xx += o.non_2xx;
        total.errors += o.errors;
        total.unfinished += o.unfinished;
        total.pacer_late_max = total.pacer_late_max.max(o.pacer_late_max);
    }
    Some(total)
}

/// The check every scenario makes before any load: `GET path` answers 200 with `expected`.
pub fn check_body(contestant: &Contestant, path: &str, expected: &[u8]) -> Result<()> {
    let file = path.trim_start_matches('/');
    let response =
        proxflow_benches::vendor::http::get(contestant.server.port, file).map_err(|e| {
            format!(
                "{} GET {path}: {e}{}",
                contestant.label,
                contestant.server.log_tail()
            )
        })?;
    if response.status != 200 || response.body != expected {
        return Err(format!(
            "{} GET {path}: status {}, {} bytes (expected 200 and {} bytes); not benchmarking{}",
            contestant.label,
            response.status,
            response.body.len(),
            expected.len(),
            contestant.server.log_tail()
        )
        .into());
    }
    Ok(())
}
