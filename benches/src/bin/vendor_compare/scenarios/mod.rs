//! The scenarios, each a function from the run's context to its report.

pub mod cache;
pub mod gateway;
pub mod hetero;
pub mod proxies;
pub mod ratelimit;
pub mod reverse_proxy;
pub mod statics;

use std::path::PathBuf;

use proxflow_benches::vendor::cpu;
use proxflow_benches::{command_line, utc_now};
use tokio::runtime::Runtime;

use proxflow_benches::vendor::Result;

use crate::engine::{self, Contestant, Plan};
use crate::report::Measured;

/// What every scenario gets.
pub struct Context {
    /// The runtime of the upstreams and the open-loop generator, on the load core.
    pub runtime: Runtime,
    /// Where the vendors' configurations and logs go; removed at the end.
    pub tmp: PathBuf,
    /// How long and how often.
    pub plan: Plan,
    /// Scenario 5's fixed rate, requests per second.
    pub hetero_rate: f64,
    /// Scenario 5's fast upstreams' delay (the slow one waits ten times as long).
    pub hetero_delay: std::time::Duration,
}

impl Context {
    /// A fresh directory for one contestant's files.
    pub fn dir(&self, scenario: &str, name: &str) -> PathBuf {
        self.tmp.join(scenario).join(name)
    }
}

/// The lines that open every section: the command, the time, the machine and its load, and
/// whether the figures are a smoke run's.
pub fn preamble(plan: &Plan, load_before: Option<f64>) -> String {
    let load = match (load_before, cpu::load_average()) {
        (Some(before), Some(after)) => format!("{before:.2} at the start, {after:.2} at the end"),
        _ => "unknown".into(),
    };
    let mut out = format!(
        "Command: `{}` ({}). Machine: {}; 1-minute load average {load}.",
        command_line(),
        utc_now(),
        cpu::machine(),
    );
    if plan.quick {
        out += " **A smoke run (`--quick`): rough figures, not of record.**";
    }
    out += "\n\n";
    out
}

/// Throughput with wrk, then latency with the open-loop generator at 50% and 90% of the
/// slowest contestant's maximum, on `path`. `what` names the runs in the progress lines;
/// `counters` reads the upstreams' request counts (see [`engine::latency`]).
pub fn measure(
    ctx: &Context,
    contestants: &[Contestant],
    path: &str,
    what: &str,
    counters: &dyn Fn() -> Vec<u64>,
) -> Result<Measured> {
    eprintln!("{what}: throughput");
    let wrk = engine::throughput(contestants, path, &ctx.plan)?;
    let mut m = Measured {
        labels: contestants
            .iter()
            .map(|c| (c.label.clone(), c.proxflow))
            .collect(),
        wrk,
        rates: Vec::new(),
        open: Vec::new(),
    };
    let slowest = (0..contestants.len())
        .filter_map(|i| m.rps(i))
        .fold(f64::INFINITY, f64::min);
    m.rates = open_rates(slowest);
    let rates: Vec<f64> = m.rates.iter().map(|(_, r)| *r).collect();
    eprintln!("{what}: latency at {rates:?} req/s");
    m.open = engine::latency(&ctx.runtime, contestants, path, &rates, &ctx.plan, counters)?;
    Ok(m)
}

/// The rates of the latency runs: 50% and 90% of the slowest contestant's maximum.
fn open_rates(slowest: f64) -> Vec<(String, f64)> {
    vec![
        (
            "50% of the slowest maximum".to_string(),
            (slowest * 0.5).round(),
        ),
        (
            "90% of the slowest maximum".to_string(),
            (slowest * 0.9).round(),
        ),
    ]
}
