//! The markdown report.

use std::collections::BTreeMap;

use proxflow_benches::stats::{median, median_interval};
use proxflow_benches::vendor::{nginx, CONNECTIONS, SERVER_CPU, WRK_CPU};
use proxflow_benches::{command_line, thousands, utc_now};

use crate::cli::Args;
use crate::measure::Run;
use crate::scenario::{expected, Scenario};
use crate::servers::NO_LIMIT;

/// The medians per scenario and server, as JSON: `[{"scenario", "server", "rps",
/// "per_cpu_second", "admitted", "expected"}]` (no admitted or expected count for the server
/// without a limit).
pub fn json(args: &Args, runs: &BTreeMap<(Scenario, &str), Vec<Run>>) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = runs
        .iter()
        .map(|(&(scenario, name), list)| {
            let pick =
                |f: &dyn Fn(&Run) -> f64| median(&mut list.iter().map(f).collect::<Vec<_>>());
            let limited = name != NO_LIMIT;
            serde_json::json!({
                "scenario": scenario.name(),
                "server": name,
                "rps": pick(&|r| r.rps),
                "per_cpu_second": pick(&Run::per_cpu_second),
                "admitted": limited.then(|| pick(&|r| r.admitted() as f64)),
                "expected": limited.then(|| pick(&|r| expected(args, scenario, r.seconds))),
            })
        })
        .collect();
    serde_json::Value::Array(rows)
}

/// The report: the medians per scenario and server, the targets, where the time went, and every
/// round.
pub fn report(
    args: &Args,
    scenarios: &[Scenario],
    runs: &BTreeMap<(Scenario, &str), Vec<Run>>,
    pairs: &[(Run, Run)],
    configs: &BTreeMap<Scenario, String>,
    server_counts: &[String],
) -> String {
    let mut out = String::from("### Rate limiting: nginx limit_req vs proxflow RateLimitLayer\n\n");
    out += &format!("Command: `{}` ({})\n\n", command_line(), utc_now());
    out += &format!(
        "Servers pinned to CPU {SERVER_CPU}, wrk to CPU {WRK_CPU}: `wrk -t1 -c{CONNECTIONS} -d{}s` \
         (one client address, so one key), median of {} round(s) after a {} s warm-up, servers \
         interleaved, the bucket refilled before each run. {}, 1 worker, access_log off, \
         keepalive_requests 1000000, {}; proxflow `ratelimit_server` (hyper HTTP/1.1, mimalloc, \
         current-thread runtime, TCP_NODELAY). Admitted = wrk's requests minus its `Non-2xx` \
         count (both servers answer only 200 or 429, checked first).\n",
        args.duration,
        args.rounds,
        args.warmup,
        nginx::version(),
        if args.nginx_log_rejections {
            "rejections logged at error level (nginx's default)"
        } else {
            "`limit_req_log_level info` under `error_log warn` (rejections not logged, as proxflow)"
        },
    );

    out += "\n| scenario | server | configuration | req/s | req per server CPU-second | admitted (200) | rejected (429) | expected admitted | admitted / expected |\n";
    out += "|---|---|---|--:|--:|--:|--:|--:|--:|\n";
    let mut targets = Vec::new();
    for &scenario in scenarios {
        let mut medians = BTreeMap::new();
        let mut per_cpu_medians = BTreeMap::new();
        for name in ["nginx", "proxflow", NO_LIMIT] {
            let Some(list) = runs.get(&(scenario, name)) else {
                continue;
            };
            if name == NO_LIMIT {
                let rps = median(&mut list.iter().map(|r| r.rps).collect::<Vec<_>>());
                let per_cpu = median(&mut list.iter().map(Run::per_cpu_second).collect::<Vec<_>>());
                out += &format!(
                    "| {} | {name} | `ratelimit_server --no-limit`: the same server without the layer; every request 200 | {} | {} | | | | |\n",
                    scenario.name(),
                    thousands(rps),
                    thousands(per_cpu),
                );
                medians.insert(name, rps);
                per_cpu_medians.insert(name, per_cpu);
                continue;
            }
            let pick =
                |f: &dyn Fn(&Run) -> f64| median(&mut list.iter().map(f).collect::<Vec<_>>());
            let rps = pick(&|r| r.rps);
            let per_cpu = pick(&|r| r.per_cpu_second());
            let admitted = pick(&|r| r.admitted() as f64);
            let rejected = pick(&|r| r.non_2xx as f64);
            let expect = pick(&|r| expected(args, scenario, r.seconds));
            let ratio = pick(&|r| r.admitted() as f64 / expected(args, scenario, r.seconds));
            let config = match (name, scenario) {
                ("nginx", Scenario::TokenBucket) => format!(
                    "`limit_req_zone ... rate={}r/s; limit_req ... burst={} nodelay;`",
                    args.rate, args.burst
                ),
                ("nginx", Scenario::LeakyBucket) => format!(
                    "`limit_req_zone ... rate={}r/s; limit_req ... burst={};`",
                    args.rate, args.leaky_burst
                ),
                _ => format!("`{}`", configs[&scenario]),
            };
            out += &format!(
                "| {} | {name} | {config} | {} | {} | {} | {} | {} | {:.4} |\n",
                scenario.name(),
                thousands(rps),
                thousands(per_cpu),
                thousands(admitted),
                thousands(rejected),
                thousands(expect),
                ratio,
            );
            medians.insert(name, rps);
            per_cpu_medians.insert(name, per_cpu);
        }
        let (Some(ng), Some(pf)) = (
            runs.get(&(scenario, "nginx")),
            runs.get(&(scenario, "proxflow")),
        ) else {
            continue;
        };
        // Per round: |proxflow - nginx| / nginx of the admitted counts, median over rounds.
        let mut diffs: Vec<f64> = ng
            .iter()
            .zip(pf)
            .map(|(n, p)| (p.admitted() as f64 - n.admitted() as f64).abs() / n.admitted() as f64)
            .collect();
        let diff = median(&mut diffs);
        let worst = diffs.iter().copied().fold(0.0, f64::max);
        // The same after dividing each count by its run's expected count (rate x run length +
        // burst), which takes out the runs' different lengths.
        let mut normalized: Vec<f64> = ng
            .iter()
            .zip(pf)
            .map(|(n, p)| {
                let rn = n.admitted() as f64 / expected(args, scenario, n.seconds);
                let rp = p.admitted() as f64 / expected(args, scenario, p.seconds);
                (rp - rn).abs() / rn
            })
            .collect();
        let normalized = median(&mut normalized);
        let throughput = medians["proxflow"] / medians["nginx"];
        let per_round: Vec<String> = ng
            .iter()
            .zip(pf)
            .map(|(n, p)| format!("{:.2}", p.rps / n.rps))
            .collect();
        let (tag, strict) = match scenario {
            Scenario::TokenBucket => ("", true),
            Scenario::LeakyBucket => (" (leaky)", false),
        };
        // The verdict compares counts per unit of run length: wrk checks its stop flag every
        // 100 ms, so a "10 s" run lasts 10.0 or 10.1 s, and two identical limiters can differ
        // by 1% in raw counts (rate x 0.1 s out of rate x 10 s).
        targets.push((
            format!(
                "admitted counts agree within 1%{tag}: abs(proxflow - nginx) / nginx of admitted / expected, median over rounds"
            ),
            format!("{:.2}%", normalized * 100.0),
            if normalized <= 0.01 { "PASS" } else { "FAIL" },
        ));
        targets.push((
            format!(
                "the same on raw counts{tag} (runs last {d} to {d}.1 s; worst round {:.2}%)",
                worst * 100.0,
                d = args.duration
            ),
            format!("{:.2}%", diff * 100.0),
            "info",
        ));
        targets.push((
            format!(
                "proxflow req/s >= nginx req/s{tag} (medians; per round: {})",
                per_round.join(", ")
            ),
            // Three places: a ratio of 0.997 shown as "1.00x" next to FAIL reads as a bug.
            format!("{throughput:.3}x"),
            match (strict, throughput >= 1.0) {
                (true, true) => "PASS",
                (true, false) => "FAIL",
                (false, true) => "PASS (info)",
                (false, false) => "FAIL (info)",
            },
        ));
        targets.push((
            format!("proxflow / nginx in requests per server CPU-second{tag}"),
            format!(
                "{:.2}x",
                per_cpu_medians["proxflow"] / per_cpu_medians["nginx"]
            ),
            "info",
        ));
        if let Some(ceiling) = medians.get(NO_LIMIT) {
            targets.push((
                "the same server without the layer / nginx (the server's ceiling)".to_string(),
                format!("{:.2}x", ceiling / medians["nginx"]),
                "info",
            ));
            targets.push((
                "proxflow with the layer / without (what the layer costs end to end)".to_string(),
                format!("{:.2}x", medians["proxflow"] / ceiling),
                "info",
            ));
            let cpu_ceiling = per_cpu_medians[NO_LIMIT];
            targets.push((
                "the same two ratios in requests per server CPU-second".to_string(),
                format!(
                    "{:.2}x, {:.2}x",
                    cpu_ceiling / per_cpu_medians["nginx"],
                    per_cpu_medians["proxflow"] / cpu_ceiling
                ),
                "info",
            ));
        }
    }
    if !pairs.is_empty() {
        let ratios = |f: &dyn Fn(&Run) -> f64| -> Vec<f64> {
            pairs.iter().map(|(n, p)| f(p) / f(n)).collect()
        };
        for (what, values) in [
            ("req/s", ratios(&|r| r.rps)),
            (
                "requests per server CPU-second",
                ratios(&Run::per_cpu_second),
            ),
        ] {
            let (measured, reading) = match median_interval(&values) {
                Some((low, mid, high)) => (
                    format!("{mid:.3}x [{low:.3}, {high:.3}]"),
                    if low >= 1.0 {
                        "proxflow faster (info)"
                    } else if high < 1.0 {
                        "nginx faster (info)"
                    } else {
                        "no difference the runs resolve (info)"
                    },
                ),
                None => (
                    format!("{:.3}x", median(&mut values.clone())),
                    "too few pairs for an interval (info)",
                ),
            };
            targets.push((
                format!(
                    "proxflow / nginx {what}, {} pairs of {} s runs back to back: median of the pairs' ratios [95% interval of the median]",
                    pairs.len(),
                    args.pair_duration
                ),
                measured,
                reading,
            ));
        }
    }
    out += "\n| target | measured | result |\n|---|--:|---|\n";
    for (what, measured, verdict) in targets {
        out += &format!("| {what} | {measured} | {verdict} |\n");
    }

    out += "\nWhere the time went (medians over rounds; a core's time is busy, stolen by the \
        hypervisor, or idle). When wrk's core is busy or stolen nearly all the time, req/s is the \
        client's ceiling as much as the server's, and requests per server CPU-second is the \
        comparison that still measures the server:\n\n";
    out += "| scenario | server | server CPU in the kernel | server core busy | server core stolen | wrk core busy | wrk core stolen |\n";
    out += "|---|---|--:|--:|--:|--:|--:|\n";
    for (&(scenario, name), list) in runs {
        let pick = |f: &dyn Fn(&Run) -> f64| {
            let value = median(&mut list.iter().map(f).collect::<Vec<_>>());
            format!("{:.0}%", value * 100.0)
        };
        out += &format!(
            "| {} | {name} | {} | {} | {} | {} | {} |\n",
            scenario.name(),
            pick(&Run::kernel_share),
            pick(&|r| r.server_core.busy),
            pick(&|r| r.server_core.stolen),
            pick(&|r| r.load_core.busy),
            pick(&|r| r.load_core.stolen),
        );
    }

    out += "\nPer round (req/s, requests per server CPU-second, admitted):\n";
    for (&(scenario, name), list) in runs {
        let cells: Vec<String> = list
            .iter()
            .map(|r| {
                format!(
                    "{} / {} / {}",
                    thousands(r.rps),
                    thousands(r.per_cpu_second()),
                    r.admitted()
                )
            })
            .collect();
        out += &format!("- {} {name}: {}\n", scenario.name(), cells.join(", "));
    }
    if !server_counts.is_empty() {
        out += "\nproxflow's own counters over all its runs (checks and warm-up included):\n";
        for line in server_counts {
            out += &format!("- {line}\n");
        }
    }
    out
}
