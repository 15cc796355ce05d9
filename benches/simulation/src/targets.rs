//! The targets the adaptive policies are held to, and their verdicts.

use crate::backends::TIMEOUT;
use crate::balancers::Contender;
use crate::format::pct_pair;
use crate::scenarios::Scenario;
use crate::stats::Results;

/// tokio's timer resolution: latencies closer than this are a tie.
const RESOLUTION_MS: f64 = 1.0;

/// One target.
pub struct Check {
    /// What it says, in the report.
    pub text: String,
    scenario: usize,
    metric: Metric,
    baseline: Baseline,
}

#[derive(Clone, Copy)]
enum Metric {
    /// Median p99 at most `ratio` times the baseline's.
    P99AtMost(f64),
    /// Median error rate at most the baseline's.
    ErrorsAtMost,
    /// Median error rate lower than the baseline's.
    ErrorsBelow,
}

#[derive(Clone, Copy)]
enum Baseline {
    TowerPeakEwma,
    RoundRobin,
}

impl Baseline {
    /// The contender's name.
    fn name(self) -> &'static str {
        match self {
            Baseline::TowerPeakEwma => "tower p2c PeakEwma",
            Baseline::RoundRobin => "round_robin",
        }
    }

    /// Its figure, in a target's text.
    fn figure(self) -> &'static str {
        match self {
            Baseline::TowerPeakEwma => "tower PeakEwma's",
            Baseline::RoundRobin => "round robin's",
        }
    }
}

/// Issue 18's targets for the selected scenarios: p99 at most tower PeakEwma's everywhere and
/// at most half of it in S1; errors at most PeakEwma's in S2 (S2 and S2L), and below round
/// robin's and PeakEwma's in S4.
pub fn checks(scenarios: &[Scenario]) -> Vec<Check> {
    let mut list = Vec::new();
    let mut add = |scenario: usize, metric, baseline: Baseline| {
        let id = scenarios[scenario].id;
        let theirs = baseline.figure();
        let text = match metric {
            Metric::P99AtMost(1.0) => format!("{id}: p99 <= {theirs}"),
            Metric::P99AtMost(ratio) => format!("{id}: p99 <= {ratio} x {theirs}"),
            Metric::ErrorsAtMost => format!("{id}: errors <= {theirs}"),
            Metric::ErrorsBelow => format!("{id}: errors < {theirs}"),
        };
        list.push(Check {
            text,
            scenario,
            metric,
            baseline,
        });
    };
    for (i, scenario) in scenarios.iter().enumerate() {
        let ratio = if scenario.id == "S1" { 0.5 } else { 1.0 };
        add(i, Metric::P99AtMost(ratio), Baseline::TowerPeakEwma);
    }
    for (i, scenario) in scenarios.iter().enumerate() {
        match scenario.id {
            "S2" | "S2L" => add(i, Metric::ErrorsAtMost, Baseline::TowerPeakEwma),
            "S4" => {
                add(i, Metric::ErrorsBelow, Baseline::RoundRobin);
                add(i, Metric::ErrorsBelow, Baseline::TowerPeakEwma);
            }
            _ => {}
        }
    }
    list
}

/// "PASS (120 vs 318)" for one adaptive contender and one check, against the baseline with
/// the timeout in the same place, or `None` if a figure is missing.
pub fn verdict(
    check: &Check,
    candidate: usize,
    contenders: &[Contender],
    results: &Results,
) -> Option<(bool, String)> {
    let placement = contenders[candidate].placement;
    let baseline = contenders
        .iter()
        .position(|c| c.name == check.baseline.name() && c.placement == placement)?;
    let mine = results.get(&(check.scenario, candidate))?;
    let theirs = results.get(&(check.scenario, baseline))?;
    Some(match check.metric {
        Metric::P99AtMost(ratio) => {
            let bound = ratio * theirs.p99.median;
            // Differences below the timer's resolution are not measured: a tie.
            let tie = mine.p99.median > bound && mine.p99.median <= bound + RESOLUTION_MS;
            let pass = mine.p99.median <= bound + RESOLUTION_MS;
            let bound = if ratio == 1.0 {
                format!("{:.1}", theirs.p99.median)
            } else {
                format!("{:.1} x {ratio}", theirs.p99.median)
            };
            let cap = TIMEOUT.as_secs_f64() * 1000.0;
            let capped = mine.p99.median >= cap && theirs.p99.median >= cap;
            let verdict = match (pass, tie, capped) {
                (true, _, true) => "PASS (both at the 1 s timeout)",
                (true, false, _) => "PASS",
                (true, true, _) => "PASS (tie within 1 ms)",
                _ => "FAIL",
            };
            (
                pass,
                format!("{verdict} ({:.1} vs {bound} ms)", mine.p99.median),
            )
        }
        Metric::ErrorsAtMost | Metric::ErrorsBelow => {
            let pass = match check.metric {
                Metric::ErrorsBelow => mine.errors.median < theirs.errors.median,
                _ => mine.errors.median <= theirs.errors.median,
            };
            let (mine, theirs) = pct_pair(mine.errors.median, theirs.errors.median);
            let verdict = if pass { "PASS" } else { "FAIL" };
            (pass, format!("{verdict} ({mine} vs {theirs})"))
        }
    })
}
