//! The targets the adaptive policies are held to, and their verdicts.

use crate::backends::TIMEOUT;
use crate::balancers::Contender;
use crate::format::pct;
use crate::scenarios::Scenario;
use crate::stats::Results;

/// tokio's timer resolution: latencies closer than this are a tie.
const RESOLUTION_MS: f64 = 1.0;

/// One target.
pub struct Check {
    /// What it says, in the report.
    pub text: String,
    scenario: usize,
    /// p99 or errors; against which contender; allowed ratio; strict.
    metric: Metric,
    baseline: Baseline,
}

#[derive(Clone, Copy)]
enum Metric {
    /// Median p99 at most `ratio` times the baseline's.
    P99AtMost(f64),
    /// Median error rate lower than the baseline's.
    ErrorsBelow,
}

#[derive(Clone, Copy)]
enum Baseline {
    TowerPeakEwma,
    /// Round robin of the same family (with or without ejection).
    RoundRobin,
}

/// The targets of the selected scenarios.
pub fn checks(scenarios: &[Scenario]) -> Vec<Check> {
    let index = |id: &str| scenarios.iter().position(|s| s.id == id);
    let mut list = Vec::new();
    for id in ["S1", "S2", "S3", "S6"] {
        if let Some(scenario) = index(id) {
            list.push(Check {
                text: format!("{id}: p99 <= tower PeakEwma's"),
                scenario,
                metric: Metric::P99AtMost(1.0),
                baseline: Baseline::TowerPeakEwma,
            });
        }
    }
    if let Some(scenario) = index("S4") {
        list.push(Check {
            text: "S4: error rate < tower PeakEwma's".into(),
            scenario,
            metric: Metric::ErrorsBelow,
            baseline: Baseline::TowerPeakEwma,
        });
    }
    for id in ["S1", "S2"] {
        if let Some(scenario) = index(id) {
            list.push(Check {
                text: format!("{id}: p99 <= 1/2 round robin's"),
                scenario,
                metric: Metric::P99AtMost(0.5),
                baseline: Baseline::RoundRobin,
            });
        }
    }
    list
}

/// "PASS (120 vs 318)" for one adaptive contender and one check, or `None` if a figure is
/// missing.
pub fn verdict(
    check: &Check,
    candidate: usize,
    contenders: &[Contender],
    results: &Results,
) -> Option<(bool, String)> {
    let ejection = contenders[candidate].name.ends_with("+ejection");
    let baseline_name = match check.baseline {
        Baseline::TowerPeakEwma => "tower p2c PeakEwma".to_string(),
        Baseline::RoundRobin if ejection => "round_robin +ejection".to_string(),
        Baseline::RoundRobin => "round_robin".to_string(),
    };
    let baseline = contenders.iter().position(|c| c.name == baseline_name)?;
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
        Metric::ErrorsBelow => {
            let pass = mine.errors.median < theirs.errors.median;
            (
                pass,
                format!(
                    "{} ({} vs {})",
                    if pass { "PASS" } else { "FAIL" },
                    pct(mine.errors.median),
                    pct(theirs.errors.median)
                ),
            )
        }
    })
}
