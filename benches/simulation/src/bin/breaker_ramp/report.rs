//! Medians over seeds, the tables, the targets, and one run's trace.

use std::fmt::Write as _;
use std::time::Duration;

use proxflow_benches::stats::median;
use proxflow_benches::{command_line, thousands, utc_now};

use crate::sim::{return_after_trip, warm_after, Policy, RunResult, WINDOW};

/// One figure over the seeds: median, least, most.
#[derive(Clone, Copy, Debug)]
struct Figure {
    median: f64,
    min: f64,
    max: f64,
}

fn figure(values: impl Iterator<Item = f64>) -> Figure {
    let mut v: Vec<f64> = values.collect();
    let median = median(&mut v);
    Figure {
        median,
        min: v.first().copied().unwrap_or(f64::NAN),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

/// A whole-number figure: the median, and the range when the seeds differ.
fn count(f: Figure) -> String {
    if f.min == f.max {
        thousands(f.median)
    } else {
        format!(
            "{} ({}-{})",
            thousands(f.median),
            thousands(f.min),
            thousands(f.max)
        )
    }
}

/// Seconds (infinite: never).
fn seconds(f: Figure) -> String {
    let one = |v: f64| {
        if v.is_finite() {
            format!("{v:.0}")
        } else {
            "never".into()
        }
    };
    if f.min == f.max {
        format!("{} s", one(f.median))
    } else {
        format!("{} s ({}-{})", one(f.median), one(f.min), one(f.max))
    }
}

/// The figures of one load, backend and policy.
#[derive(Clone, Copy, Debug)]
struct Summary {
    failures: Figure,
    reopens: Figure,
    to_99: Figure,
    successes: Figure,
    collapses: Figure,
    load_at_probe: Figure,
}

fn summary(runs: &[&RunResult]) -> Summary {
    Summary {
        failures: figure(runs.iter().map(|r| r.failures as f64)),
        reopens: figure(runs.iter().map(|r| f64::from(r.reopens))),
        to_99: figure(runs.iter().map(|r| r.to_99.unwrap_or(f64::INFINITY))),
        successes: figure(runs.iter().map(|r| r.successes as f64)),
        collapses: figure(runs.iter().map(|r| f64::from(r.collapses))),
        load_at_probe: figure(runs.iter().map(|r| r.load_at_probe)),
    }
}

type Runs = [((bool, usize, usize, u64), RunResult)];

/// The markdown report: a table per backend (a row per load and policy), then the targets.
pub fn report(
    loads: &[f64],
    collapses: &[bool],
    policies: &[Policy],
    runs: &Runs,
    seeds: u64,
    wall: Duration,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## proxflow-breaker: ramp-up after an outage (issue 24), {}\n",
        utc_now()
    );
    let _ = writeln!(out, "```text\n{}\n```\n", command_line());
    let _ = writeln!(
        out,
        "{seeds} seeds; medians (range over the seeds where they differ). Failures: 503s from \
         the backend from its return on. Time to 99 %: from the return to the first second \
         from which every second has 99 % of its requests succeeding. Successes: in the {WINDOW} s \
         after the return (offered: about {}).\n",
        thousands(crate::sim::RATE * WINDOW as f64)
    );
    let summaries = |collapse: bool, l: usize| -> Vec<Summary> {
        (0..policies.len())
            .map(|p| {
                let these: Vec<&RunResult> = runs
                    .iter()
                    .filter(|((c, jl, jp, _), _)| *c == collapse && *jl == l && *jp == p)
                    .map(|(_, r)| r)
                    .collect();
                summary(&these)
            })
            .collect()
    };
    let mut verdicts = Vec::new();
    for &collapse in collapses {
        let _ = writeln!(
            out,
            "### Backend {} collapse\n",
            if collapse { "with" } else { "without" }
        );
        let _ = writeln!(
            out,
            "| load at probe | return (s after trip) | policy | failures | re-opens | collapses | time to 99 % | successes |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
        for (l, &load) in loads.iter().enumerate() {
            let all = summaries(collapse, l);
            for (p, policy) in policies.iter().enumerate() {
                let s = &all[p];
                let _ = writeln!(
                    out,
                    "| {:.0} % ({:.0} %) | {:.2} | {} | {} | {} | {} | {} | {} |",
                    load * 100.0,
                    s.load_at_probe.median * 100.0,
                    return_after_trip(load),
                    policy.name,
                    count(s.failures),
                    count(s.reopens),
                    count(s.collapses),
                    seconds(s.to_99),
                    count(s.successes),
                );
            }
            verdicts.push((collapse, load, targets(policies, &all)));
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "### Targets (adaptive at its defaults, medians)\n\n\
         (a) failures and re-opens at most `time 30s`'s; (b) time to 99 % at most `instant`'s \
         + 5 s where `instant` has no failures; (c) successes at least the better of `instant` \
         and `time 30s`, minus 2 %.\n"
    );
    let _ = writeln!(out, "| backend | load at probe | (a) | (b) | (c) |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    let mut all_pass = true;
    for (collapse, load, verdict) in &verdicts {
        let Some([a, b, c]) = verdict else {
            continue;
        };
        all_pass &= a.0 && b.0 && c.0;
        let _ = writeln!(
            out,
            "| {} | {:.0} % | {} | {} | {} |",
            if *collapse { "collapse" } else { "no collapse" },
            load * 100.0,
            a.1,
            b.1,
            c.1
        );
    }
    let _ = writeln!(
        out,
        "\nEvery target {}. Wall time {:.0} s.\n",
        if all_pass {
            "**PASS**"
        } else {
            "not met: see **FAIL** above"
        },
        wall.as_secs_f64()
    );
    out
}

type Verdict = (bool, String);

fn mark(pass: bool, text: String) -> Verdict {
    (
        pass,
        format!("{} {text}", if pass { "PASS" } else { "**FAIL**" }),
    )
}

/// The three targets for one load and backend, if the policies they compare ran.
fn targets(policies: &[Policy], all: &[Summary]) -> Option<[Verdict; 3]> {
    let find = |name: &str| policies.iter().position(|p| p.name == name).map(|i| all[i]);
    let (instant, slow, adaptive) = (find("instant")?, find("time 30s")?, find("adaptive")?);
    let a = mark(
        adaptive.failures.median <= slow.failures.median
            && adaptive.reopens.median <= slow.reopens.median,
        format!(
            "{} / {} failures, {} / {} re-opens",
            thousands(adaptive.failures.median),
            thousands(slow.failures.median),
            adaptive.reopens.median,
            slow.reopens.median
        ),
    );
    let b = if instant.failures.median == 0.0 {
        mark(
            adaptive.to_99.median <= instant.to_99.median + 5.0,
            format!(
                "{:.0} s / {:.0} s + 5",
                adaptive.to_99.median, instant.to_99.median
            ),
        )
    } else {
        (true, "n/a (instant fails)".into())
    };
    let best = instant.successes.median.max(slow.successes.median);
    let c = mark(
        adaptive.successes.median >= 0.98 * best,
        format!(
            "{} / {} ({:+.2} %)",
            thousands(adaptive.successes.median),
            thousands(best),
            (adaptive.successes.median / best - 1.0) * 100.0
        ),
    );
    Some([a, b, c])
}

/// One run, second by second from the return.
pub fn trace(policy: &Policy, load: f64, result: &RunResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: return at {:.2} s, capacity {:.0} % of the load at {:.2} s after it; \
         failures {}, re-opens {}, collapses {}, successes {}, time to 99 % {:?}",
        policy.name,
        return_after_trip(load),
        load * 100.0,
        warm_after(load),
        result.failures,
        result.reopens,
        result.collapses,
        result.successes,
        result.to_99
    );
    let _ = writeln!(
        out,
        "  s  requests  ok      failed  refused  share  state         slots  queue  latency(ms)"
    );
    for (s, second) in result.trace.iter().enumerate() {
        let _ = writeln!(
            out,
            "{s:>3}  {:>8}  {:>6}  {:>6}  {:>7}  {:.3}  {:<12}  {:>5}  {:>5}  {:.1}",
            second.requests,
            second.successes,
            second.failures,
            second.refused,
            second.share,
            second.state.map_or("-".into(), |s| format!("{s:?}")),
            second.slots,
            second.queue,
            second.mean_latency_ms
        );
    }
    out
}
