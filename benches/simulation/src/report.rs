//! The markdown report.

use std::fmt::Write as _;
use std::time::Duration;

use crate::balancers::{adaptive_config, Contender};
use crate::cli::Args;
use crate::format::{ms, pct, settle_text};
use crate::scenarios::Scenario;
use crate::stats::{settle_threshold, Results, SETTLE_FLOOR};
use crate::targets::{checks, verdict};

/// The markdown report: the model, the scenarios, the matrices, the targets and each
/// scenario's details.
pub fn report(
    args: &Args,
    scenarios: &[Scenario],
    contenders: &[Contender],
    results: &Results,
    svg_name: &str,
    elapsed: Duration,
) -> String {
    let mut md = String::new();
    // The program's name without the build directory, and its arguments.
    let command: Vec<String> = std::env::args()
        .enumerate()
        .map(|(i, arg)| {
            if i == 0 {
                "target/release/lb_simulation".to_string()
            } else {
                arg
            }
        })
        .collect();
    let _ = writeln!(
        md,
        "### Load balancing: proxflow-lb vs tower's p2c, simulated (issues 5 and 18)\n"
    );
    let lengths = match args.duration {
        Some(duration) => format!("{duration} s runs (`--duration`)"),
        None => "each scenario's own length (S2L 300 s, the others 60 s)".into(),
    };
    let _ = writeln!(
        md,
        "Command: `{}` ({}; {} seeds per scenario, policy and timeout placement, {lengths}, \
         {:.0} s of wall time).\n",
        command.join(" "),
        proxflow_benches::utc_now(),
        args.seeds,
        elapsed.as_secs_f64()
    );
    let config = adaptive_config(args);
    let defaults = if args.update_interval_ms.is_none() && args.alpha.is_none() {
        "`AdaptiveConfig::default()`, the origin's defaults"
    } else {
        "overridden on the command line; the targets hold at the defaults"
    };
    let _ = writeln!(
        md,
        "Model (benches/simulation/src/main.rs): every run is a current-thread tokio \
         runtime with paused time (deterministic per seed; tokio's timers round every latency \
         up to the next millisecond); open-loop Poisson arrivals, each request a task at its \
         scheduled time, latency measured from that time; backends in the process, reached \
         through a client service. The 1 s timeout is either **outside** the balancer (a \
         deadline 1 s after the scheduled time drops the balancer's future, as `TimeoutLayer` \
         or a caller's deadline does; the client has no timeout) or **inside** the client (the \
         balancer sees a client error 1 s after its send); each row says which. A request \
         not answered 1 s after its scheduled time counts as 1000 ms and as an error. A \
         backend queues requests beyond its concurrency limit (FIFO; a queued request whose \
         client gave up leaves the queue, one in service keeps its slot to the end). \
         Percentiles are over every request, errors included; figures are medians over the \
         seeds, \"worst\" the worst seed. proxflow-lb runs through `AdaptiveLb` over the \
         client service, except in S8, where every balancer runs over one tower service per \
         backend (proxflow through `AdaptiveLb::balance`) so that a backend can be not ready. \
         `adaptive` is the adaptive policy with `history_length {}`, `update_interval {:?}`, \
         `alpha {}` ({defaults}), and its default load metric. tower 0.5's `p2c::Balance` \
         (seeded through tower's `Rng` trait) over `PeakEwmaDiscover` (default RTT 30 ms and \
         decay 10 s, as in tower's balance example) or `PendingRequestsDiscover`, behind a \
         `Buffer`. Plain proxflow names are the policy alone, like tower (no passive \
         ejection, no retry); `+ejection` is the layer's defaults (5 failures in a row eject \
         an upstream for 30 s; a refused connection is retried once on another upstream). \
         Slow start (30 s) applies to both.\n",
        config.history_length, config.update_interval, config.alpha
    );
    let _ = writeln!(
        md,
        "| scenario | setup | length | watched backend | its fair share |\n\
         |---|---|--:|---|--:|"
    );
    for s in scenarios {
        let fair = results
            .iter()
            .find(|((i, _), _)| scenarios[*i].id == s.id)
            .map_or(f64::NAN, |(_, r)| r.fair_share);
        let _ = writeln!(
            md,
            "| {} {} | {} | {:.0} s | {} | {} |",
            s.id,
            s.title,
            s.setup,
            s.duration,
            s.bad.label,
            pct(fair)
        );
    }
    let _ = writeln!(
        md,
        "\nFair share: the backend's share of the pool's capacity (limit x success ratio / \
         mean latency; none while down or not ready) at that moment. Settle: seconds after the \
         watched period starts until the backend's share of each 1 s window stays below twice \
         its fair share ({} while it has no capacity: a balancer must still try a backend that \
         is down to see it come back) to the end of the period.\n",
        pct(SETTLE_FLOOR)
    );

    // Matrices.
    for (title, value) in [
        ("p99 latency, ms (median over seeds)", 0),
        ("error rate (median over seeds)", 1),
    ] {
        let _ = writeln!(md, "**{title}**\n");
        let mut header = "| policy | timeout |".to_string();
        let mut rule = "|---|---|".to_string();
        for s in scenarios {
            let _ = write!(header, " {} |", s.id);
            rule.push_str("--:|");
        }
        let _ = writeln!(md, "{header}\n{rule}");
        for (c, contender) in contenders.iter().enumerate() {
            let mut row = format!("| {} | {} |", contender.name, contender.placement.name());
            for (s, _) in scenarios.iter().enumerate() {
                let cell = results.get(&(s, c)).map_or("-".into(), |r| {
                    if value == 0 {
                        ms(r.p99.median)
                    } else {
                        pct(r.errors.median)
                    }
                });
                let _ = write!(row, " {cell} |");
            }
            let _ = writeln!(md, "{row}");
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "![p99 latency and error rate per policy and scenario]({svg_name})\n"
    );

    // Targets.
    let adaptive: Vec<usize> = contenders
        .iter()
        .enumerate()
        .filter(|(_, c)| c.name.starts_with("adaptive"))
        .map(|(i, _)| i)
        .collect();
    let checks = checks(scenarios);
    if !adaptive.is_empty() && !checks.is_empty() {
        let _ = writeln!(
            md,
            "**Targets** (issue 18's, for `adaptive` at its defaults, passive ejection off; \
             medians over seeds; each against the baseline with the timeout in the same place; \
             the other adaptive columns are for information; a p99 within 1 ms of the bound, \
             the timer's resolution, is a tie and passes, marked as such)\n"
        );
        let mut header = "| target |".to_string();
        let mut rule = "|---|".to_string();
        for &a in &adaptive {
            let c = &contenders[a];
            let _ = write!(header, " {} ({}) |", c.name, c.placement.name());
            rule.push_str("---|");
        }
        let _ = writeln!(md, "{header}\n{rule}");
        let mut passes = vec![0usize; adaptive.len()];
        for check in &checks {
            let mut row = format!("| {} |", check.text);
            for (k, &a) in adaptive.iter().enumerate() {
                let cell = match verdict(check, a, contenders, results) {
                    Some((pass, text)) => {
                        passes[k] += usize::from(pass);
                        text
                    }
                    None => "-".into(),
                };
                let _ = write!(row, " {cell} |");
            }
            let _ = writeln!(md, "{row}");
        }
        let mut row = "| **passed** |".to_string();
        for p in &passes {
            let _ = write!(row, " **{p}/{}** |", checks.len());
        }
        let _ = writeln!(md, "{row}");
        // Over every scenario: how far from tower's PeakEwma on p99, and the errors.
        let peak = |a: usize| {
            contenders.iter().position(|c| {
                c.name == "tower p2c PeakEwma" && c.placement == contenders[a].placement
            })
        };
        let mut ratios = "| geometric mean of p99 / tower PeakEwma's, all scenarios |".to_string();
        let mut errors = "| mean error rate, all scenarios |".to_string();
        for &a in &adaptive {
            let mut logs = Vec::new();
            let mut errs = Vec::new();
            for s in 0..scenarios.len() {
                if let Some(mine) = results.get(&(s, a)) {
                    errs.push(mine.errors.median);
                    if let Some(theirs) = peak(a).and_then(|p| results.get(&(s, p))) {
                        logs.push((mine.p99.median / theirs.p99.median).ln());
                    }
                }
            }
            let geomean = (logs.iter().sum::<f64>() / logs.len().max(1) as f64).exp();
            let _ = write!(ratios, " {geomean:.2} |");
            let mean = errs.iter().sum::<f64>() / errs.len().max(1) as f64;
            let _ = write!(errors, " {} |", pct(mean));
        }
        if adaptive.iter().any(|&a| peak(a).is_some()) {
            let _ = writeln!(md, "{ratios}");
        }
        let _ = writeln!(md, "{errors}\n");
    }

    // Details.
    for (s, scenario) in scenarios.iter().enumerate() {
        let _ = writeln!(
            md,
            "**{} {}** ({}). Watched: {}.\n",
            scenario.id, scenario.title, scenario.setup, scenario.bad.label
        );
        let _ = writeln!(
            md,
            "| policy | timeout | p50 ms | p99 ms | p99.9 ms | errors | of which timeouts | \
             watched share | settle below | settle | worst p99 ms | worst errors |\n\
             |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        for (c, contender) in contenders.iter().enumerate() {
            let Some(r) = results.get(&(s, c)) else {
                continue;
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                contender.name,
                contender.placement.name(),
                ms(r.p50.median),
                ms(r.p99.median),
                ms(r.p999.median),
                pct(r.errors.median),
                pct(r.timeouts.median),
                pct(r.bad_share.median),
                pct(settle_threshold(r.fair_share)),
                settle_text(r),
                ms(r.p99.worst),
                pct(r.errors.worst),
            );
        }
        let _ = writeln!(md);
    }
    md
}
