//! The figures of a run (latency percentiles, errors, the watched backend's share and settle
//! time) and their medians and worst over the seeds.

use std::collections::BTreeMap;

use proxflow_benches::stats::median;

use crate::scenarios::Scenario;

/// What one request got.
#[derive(Clone, Copy)]
pub struct Record {
    pub latency_us: u32,
    pub ok: bool,
    pub timed_out: bool,
}

/// The figures of one run.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub errors: f64,
    pub timeouts: f64,
    pub bad_share: f64,
    pub fair_share: f64,
    /// Seconds after the bad period starts; `None`: never.
    pub settle: Option<f64>,
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1]) / 1000.0
}

/// The share of sends below which a backend without capacity (down, not ready) has settled:
/// twice its fair share would be zero, and a balancer must still try it now and then to see
/// it come back.
pub const SETTLE_FLOOR: f64 = 0.01;

/// The share below which the watched backends have settled, for a fair share of `fair`:
/// twice that, or [`SETTLE_FLOOR`] for none (NaN for NaN: no watched period).
pub fn settle_threshold(fair: f64) -> f64 {
    if fair == 0.0 {
        SETTLE_FLOOR
    } else {
        2.0 * fair
    }
}

/// A run's figures from what each request got and what each backend was sent.
pub fn summarize(scenario: &Scenario, records: Vec<Record>, sends: &[Vec<u32>]) -> RunResult {
    let n = records.len().max(1) as f64;
    let errors = records.iter().filter(|r| !r.ok).count() as f64 / n;
    let timeouts = records.iter().filter(|r| r.timed_out).count() as f64 / n;
    let mut latencies: Vec<u32> = records.iter().map(|r| r.latency_us).collect();
    latencies.sort_unstable();
    let (bad_share, fair_share, settle) = watched(scenario, sends);
    RunResult {
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        p999: percentile(&latencies, 0.999),
        errors,
        timeouts,
        bad_share,
        fair_share,
        settle,
    }
}

/// The watched backends' share of the sends over the part of their period that ran, their
/// mean fair share then, and when they settled. With none of the period run, the shares are
/// NaN ("-" in the report).
fn watched(scenario: &Scenario, sends: &[Vec<u32>]) -> (f64, f64, Option<f64>) {
    let bad = &scenario.bad;
    let first = bad.from.floor() as usize;
    let last = bad.to.min(scenario.duration).ceil() as usize;
    if last <= first {
        return (f64::NAN, f64::NAN, None);
    }
    let mut below = Vec::new();
    let (mut bad_sends, mut all_sends, mut fair_sum) = (0u64, 0u64, 0.0);
    for second in first..last {
        let all: u64 = sends.iter().map(|row| u64::from(row[second])).sum();
        let to_bad: u64 = bad
            .backends
            .iter()
            .map(|&i| u64::from(sends[i][second]))
            .sum();
        let fair = scenario.fair_share(second as f64 + 0.5);
        fair_sum += fair;
        bad_sends += to_bad;
        all_sends += all;
        below.push(all == 0 || (to_bad as f64 / all as f64) < settle_threshold(fair));
    }
    let settle = if below.last().copied().unwrap_or(true) {
        let settled_from = below.iter().rposition(|b| !b).map_or(0, |i| i + 1);
        Some(((first + settled_from) as f64 - bad.from).max(0.0))
    } else {
        None
    };
    let share = bad_sends as f64 / all_sends.max(1) as f64;
    (share, fair_sum / (last - first) as f64, settle)
}

/// The median and the worst of one figure over the seeds.
#[derive(Clone, Copy, Debug)]
pub struct Figure {
    pub median: f64,
    pub worst: f64,
}

fn figure(values: impl Iterator<Item = f64>) -> Figure {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return Figure {
            median: f64::NAN,
            worst: f64::NAN,
        };
    }
    // Sorts `v`: its last value is the worst.
    let median = median(&mut v);
    Figure {
        median,
        worst: v.last().copied().unwrap_or(f64::NAN),
    }
}

/// The figures of one scenario and contender over the seeds.
#[derive(Clone, Debug)]
pub struct Summary {
    pub p50: Figure,
    pub p99: Figure,
    pub p999: Figure,
    pub errors: Figure,
    pub timeouts: Figure,
    pub bad_share: Figure,
    pub fair_share: f64,
    /// Median settle time (infinite: never), and in how many runs it never settled.
    pub settle: Figure,
    pub never: usize,
    pub runs: usize,
}

/// The figures of a scenario and contender over the seeds.
pub fn summary(runs: &[RunResult]) -> Summary {
    Summary {
        p50: figure(runs.iter().map(|r| r.p50)),
        p99: figure(runs.iter().map(|r| r.p99)),
        p999: figure(runs.iter().map(|r| r.p999)),
        errors: figure(runs.iter().map(|r| r.errors)),
        timeouts: figure(runs.iter().map(|r| r.timeouts)),
        bad_share: figure(runs.iter().map(|r| r.bad_share)),
        fair_share: runs.first().map_or(f64::NAN, |r| r.fair_share),
        settle: figure(runs.iter().map(|r| r.settle.unwrap_or(f64::INFINITY))),
        never: runs.iter().filter(|r| r.settle.is_none()).count(),
        runs: runs.len(),
    }
}

/// The summaries by (scenario, contender) index.
pub type Results = BTreeMap<(usize, usize), Summary>;
