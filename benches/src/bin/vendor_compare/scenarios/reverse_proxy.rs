//! Scenario 2: a reverse proxy over three loopback upstreams that answer at once, round robin.
//! proxflow's `hyper_proxy` (proxflow-lb, round robin and adaptive) vs nginx `upstream`,
//! HAProxy `roundrobin` and Caddy `reverse_proxy`: throughput, and latency at 50% and 90% of the
//! slowest proxy's maximum.

use std::time::Duration;

use proxflow_benches::vendor::{Result, CONNECTIONS, SERVER_CPU, WRK_CPU};

use super::proxies::{self, VendorPolicy};
use super::{measure, preamble, Context};
use crate::engine::check_body;
use crate::report::{
    latency_table, ratio_target, section, targets_table, throughput_table, Section,
};
use crate::upstream;

/// The scenario's name.
pub const ID: &str = "reverse_proxy";

/// Runs the scenario.
pub fn run(ctx: &Context) -> Result<Section> {
    let load_before = proxflow_benches::vendor::cpu::load_average();
    let upstreams = (0..3)
        .map(|_| upstream::start(&ctx.runtime, Duration::ZERO))
        .collect::<Result<Vec<_>>>()?;
    let contestants = proxies::start(
        ctx,
        ID,
        &upstreams,
        &["round_robin", "adaptive"],
        VendorPolicy::RoundRobin,
        &proxies::ALL,
    )?;
    let path = "/";
    let body = upstream::body();
    for contestant in &contestants {
        check_body(contestant, path, &body)?;
    }
    eprintln!("reverse proxy: every proxy answers with the upstreams' body");
    let counters = || upstreams.iter().map(upstream::Upstream::requests).collect();
    let m = measure(ctx, &contestants, path, "reverse proxy", &counters)?;
    drop(contestants);
    let plan = &ctx.plan;

    let mut body = preamble(plan, load_before);
    body += &format!(
        "Three upstreams in this program answer every request at once with the same 1 KiB body. \
         Proxies pinned to CPU {SERVER_CPU}; wrk, the open-loop generator and the upstreams on \
         CPU {WRK_CPU}. Throughput: `wrk -t1 -c{CONNECTIONS} -d{}s --latency`, median of {} \
         round(s) after a {} s warm-up, proxies interleaved. Latency: {} open-loop round(s) of \
         {} s per rate over {} keep-alive connections, latency from each request's scheduled \
         send. proxflow: `hyper_proxy --policy round_robin|adaptive` (proxflow-lb over \
         hyper-util's pooled client, a one-thread runtime under taskset). {}: one worker or \
         thread each, keep-alive to the client and the upstreams, logging off, configured from \
         `benches/vendor_configs/` (nginx `reverse_proxy.conf`, HAProxy `reverse_proxy.cfg`, \
         Caddy `reverse_proxy.Caddyfile`).\n\n",
        plan.duration,
        plan.rounds,
        plan.warmup,
        plan.open_rounds,
        plan.open_duration,
        plan.open_connections,
        proxies::versions(),
    );
    body +=
        "When the load core is busy nearly all the time, req/s is the load generator's and the \
        upstreams' ceiling as much as the proxy's; requests per server CPU-second is the figure \
        that measures the proxy alone.\n\n";
    body += &throughput_table(&m, "nginx");
    body += "\n";
    body += &latency_table(&m);
    let targets = vec![
        ratio_target(
            "proxflow round_robin req/s >= 1.0x nginx (both round robin)",
            m.rps_ratio("proxflow round_robin", "nginx"),
            1.0,
        ),
        ratio_target(
            "proxflow adaptive req/s >= 1.0x nginx",
            m.rps_ratio("proxflow adaptive", "nginx"),
            1.0,
        ),
        ratio_target(
            "proxflow round_robin per server CPU-second >= 1.0x nginx",
            m.per_cpu_ratio("proxflow round_robin", "nginx"),
            1.0,
        ),
    ];
    body += "\n";
    body += &targets_table(&targets);
    let title = "Reverse proxy over three loopback upstreams: proxflow-lb vs nginx, HAProxy, Caddy";
    Ok(section(ID, title, "proxy", body, &m))
}
