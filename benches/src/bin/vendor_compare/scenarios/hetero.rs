//! Scenario 5: three upstreams, one ten times slower than the other two, at a fixed request
//! rate. proxflow-lb's adaptive policy vs each vendor's best built-in answer (nginx
//! `least_conn`, HAProxy `leastconn`, Caddy `least_conn`), with proxflow's round robin as the
//! reference of a policy blind to latency: p50/p99 from the open-loop generator, and the share
//! of requests each proxy sends to the slow upstream.

use proxflow_benches::plot::{self, Panel, Row};
use proxflow_benches::stats::median;
use proxflow_benches::thousands;
use proxflow_benches::vendor::{Result, SERVER_CPU, WRK_CPU};

use super::proxies::{self, VendorPolicy};
use super::{preamble, Context};
use crate::engine::{self, check_body, OpenRun};
use crate::report::{latency_panel, latency_table, short, targets_table, Measured, Section};
use crate::upstream;

/// The scenario's name.
pub const ID: &str = "heterogeneous";

/// The adaptive contestant, whose p99 the targets compare.
const ADAPTIVE: &str = "proxflow adaptive";

/// Runs the scenario.
pub fn run(ctx: &Context) -> Result<Section> {
    let load_before = proxflow_benches::vendor::cpu::load_average();
    let fast = ctx.hetero_delay;
    let slow = fast * 10;
    let upstreams = [fast, fast, slow]
        .into_iter()
        .map(|delay| upstream::start(&ctx.runtime, delay))
        .collect::<Result<Vec<_>>>()?;
    let contestants = proxies::start(
        ctx,
        ID,
        &upstreams,
        &["adaptive", "round_robin"],
        VendorPolicy::LeastConn,
        &proxies::ALL,
    )?;
    let path = "/";
    let body = upstream::body();
    for contestant in &contestants {
        check_body(contestant, path, &body)?;
    }
    let plan = &ctx.plan;
    let rate = ctx.hetero_rate;
    let counters = || upstreams.iter().map(upstream::Upstream::requests).collect();
    eprintln!("heterogeneous upstreams: warming up at {rate} req/s");
    for contestant in &contestants {
        engine::open_run(
            &ctx.runtime,
            contestant,
            path,
            rate,
            plan.warmup,
            plan,
            &counters,
        )
        .map_err(|e| format!("{} warm-up: {e}", contestant.label))?;
    }
    let m = Measured {
        labels: contestants
            .iter()
            .map(|c| (c.label.clone(), c.proxflow))
            .collect(),
        wrk: vec![Vec::new(); contestants.len()],
        rates: vec![("fixed rate".to_string(), rate)],
        open: engine::latency(&ctx.runtime, &contestants, path, &[rate], plan, &counters)?,
    };
    drop(contestants);

    let slow_share = |runs: &[OpenRun]| -> Vec<f64> {
        runs.iter()
            .map(|run| {
                let total: u64 = run.counted.iter().sum();
                run.counted[2] as f64 / total.max(1) as f64
            })
            .collect()
    };

    let mut body = preamble(plan, load_before);
    body += &format!(
        "Three upstreams in this program answer with the same 1 KiB body, two after {} ms and \
         one after {} ms (tokio's timer rounds each wait up to its next millisecond tick: they \
         waited {:.2}, {:.2} and {:.2} ms on average). \
         Proxies pinned to CPU {SERVER_CPU}; the open-loop generator and the upstreams on CPU \
         {WRK_CPU}. Each proxy gets {} s at the rate to learn, then {} round(s) of {} s at {} \
         req/s over {} keep-alive connections, proxies interleaved; latency from each request's \
         scheduled send. proxflow: `hyper_proxy --policy adaptive|round_robin`; {}, each with \
         its least-connections policy, no health checks, keep-alive both sides, logging off \
         (`benches/vendor_configs/`).\n\n",
        fast.as_secs_f64() * 1e3,
        slow.as_secs_f64() * 1e3,
        upstreams[0].mean_wait_ms(),
        upstreams[1].mean_wait_ms(),
        upstreams[2].mean_wait_ms(),
        plan.warmup,
        plan.open_rounds,
        plan.open_duration,
        thousands(rate),
        plan.open_connections,
        proxies::versions(),
    );
    body += &latency_table(&m);
    body += "\n| contestant | share of requests to the slow upstream (all rounds) | each round |\n|---|--:|---|\n";
    let mut share_rows = Vec::new();
    for (i, (label, proxflow)) in m.labels.iter().enumerate() {
        let runs = &m.open[i][0];
        let shares = slow_share(runs);
        let total: Vec<u64> = (0..3)
            .map(|u| runs.iter().map(|r| r.counted[u]).sum())
            .collect();
        let share = total[2] as f64 / total.iter().sum::<u64>().max(1) as f64;
        let each: Vec<String> = shares
            .iter()
            .map(|s| format!("{:.2}%", s * 100.0))
            .collect();
        body += &format!(
            "| {label} | {:.2}% | {} |\n",
            share * 100.0,
            each.join(", ")
        );
        share_rows.push(Row {
            group: String::new(),
            label: label.clone(),
            value: share * 100.0,
            inner: None,
            range: (shares.len() > 1).then(|| {
                let low = shares.iter().copied().fold(f64::INFINITY, f64::min) * 100.0;
                let high = shares.iter().copied().fold(0.0, f64::max) * 100.0;
                (low, high)
            }),
            proxflow: *proxflow,
            text: format!("{:.2}%", share * 100.0),
        });
    }
    let p99 = |label: &str| -> Option<f64> {
        let i = m.index(label)?;
        Some(m.latency(i, 0)?.ms(0.99))
    };
    let p99_median_round = |label: &str| -> Option<f64> {
        let i = m.index(label)?;
        let mut values: Vec<f64> = m.open[i][0].iter().map(|r| r.outcome.ms(0.99)).collect();
        (!values.is_empty()).then(|| median(&mut values))
    };
    let mut targets = Vec::new();
    for vendor in m.labels.iter().filter(|(_, p)| !p).map(|(l, _)| l) {
        let (measured, verdict) = match (p99(ADAPTIVE), p99(vendor)) {
            (Some(a), Some(v)) => (
                format!("{} vs {} ms", short(a), short(v)),
                if a < v { "PASS" } else { "FAIL" },
            ),
            _ => ("n/a".into(), "not measured"),
        };
        targets.push((
            format!("{ADAPTIVE} p99 < {vendor} p99 (all rounds' requests)"),
            measured,
            verdict.to_string(),
        ));
        if let (Some(a), Some(v)) = (p99_median_round(ADAPTIVE), p99_median_round(vendor)) {
            targets.push((
                "the same, median of the rounds' p99 (info)".to_string(),
                format!("{} vs {} ms", short(a), short(v)),
                "info".into(),
            ));
        }
    }
    body += "\n";
    body += &targets_table(&targets);

    let title = "Heterogeneous upstreams (one ten times slower): tail latency at a fixed rate";
    let plot = plot::svg(
        title,
        &format!(
            "upstreams {} ms, {} ms, {} ms; {} req/s open loop",
            short(fast.as_secs_f64() * 1e3),
            short(fast.as_secs_f64() * 1e3),
            short(slow.as_secs_f64() * 1e3),
            thousands(rate)
        ),
        &[
            latency_panel(&m, "Latency at a fixed rate (open loop)"),
            Panel {
                title: "Share of requests sent to the slow upstream".into(),
                unit: "% of requests (whiskers: the rounds' lowest and highest)".into(),
                log: false,
                rows: share_rows,
            },
        ],
    );
    Ok(Section {
        id: ID,
        title: title.to_string(),
        body,
        plot: Some(plot),
    })
}
