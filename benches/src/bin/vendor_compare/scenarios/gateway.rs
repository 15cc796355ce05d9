//! Scenario 6: the whole stack. proxflow's `gateway` (on `/api`: cache, rate limit, balancer, a
//! breaker per upstream) against nginx configured with the same features as far as nginx has
//! them (`limit_req`, `proxy_cache`, `upstream` with its passive health), over the three
//! upstreams of the reverse proxy scenario; and, for the cost of the composition, each one's
//! bare proxy (`hyper_proxy` round robin, nginx `upstream` alone) on the same path.
//!
//! Two paths: `/api/pass`, whose answers may not be stored (every layer runs and an upstream
//! answers), and `/api/cached/1k`, served from the cache.

use std::path::PathBuf;
use std::time::Duration;

use proxflow_benches::plot;
use proxflow_benches::vendor::http;
use proxflow_benches::vendor::process::{free_port, sibling_binary, start_printing_port};
use proxflow_benches::vendor::template::{self, NGINX_GATEWAY, PROXFLOW_GATEWAY};
use proxflow_benches::vendor::{nginx, Result, CONNECTIONS, SERVER_CPU, WRK_CPU};

use super::proxies::{self, Vendor, VendorPolicy};
use super::{measure, preamble, Context};
use crate::engine::{check_body, Contestant};
use crate::report::{
    latency_panel, latency_table, targets_table, throughput_panel, throughput_table, Section,
};
use crate::upstream::{self, Upstream};

/// The scenario's name.
pub const ID: &str = "gateway";

const GATEWAY: &str = "proxflow gateway";
const NGINX: &str = "nginx (same features)";
const BARE_PROXFLOW: &str = "proxflow round_robin";
const BARE_NGINX: &str = "nginx";

const PASS: &str = "/api/pass";
const HIT: &str = "/api/cached/1k";

/// Runs the scenario.
pub fn run(ctx: &Context) -> Result<Section> {
    let load_before = proxflow_benches::vendor::cpu::load_average();
    let upstreams = (0..3)
        .map(|_| upstream::start(&ctx.runtime, Duration::ZERO))
        .collect::<Result<Vec<_>>>()?;
    let mut contestants = vec![
        start_gateway(ctx, &upstreams)?,
        start_nginx(ctx, &upstreams)?,
    ];
    // The bare proxies: proxflow round robin and nginx, as in the reverse proxy scenario.
    contestants.extend(proxies::start(
        ctx,
        ID,
        &upstreams,
        &["round_robin"],
        VendorPolicy::RoundRobin,
        &[Vendor::Nginx],
    )?);
    let body = upstream::body();
    for contestant in &contestants {
        check_body(contestant, PASS, &body)?;
    }
    for contestant in &contestants[..2] {
        check_hit(contestant)?;
    }
    eprintln!("gateway: both stacks answer; {HIT} is a hit in both");

    let plan = &ctx.plan;
    let counters = || upstreams.iter().map(Upstream::requests).collect::<Vec<_>>();
    let mut measured = Vec::new();
    for (path, stacks) in [(PASS, &contestants[..]), (HIT, &contestants[..2])] {
        let before: u64 = counters().iter().sum();
        let m = measure(ctx, stacks, path, &format!("gateway: {path}"), &counters)?;
        let upstream_requests = counters().iter().sum::<u64>() - before;
        measured.push((path, m, upstream_requests));
    }
    drop(contestants);

    let mut body = preamble(plan, load_before);
    body += &format!(
        "Three upstreams in this program answer at once with the same 1 KiB body: `no-store` on \
         `{PASS}`, `max-age=3600` on `{HIT}`. Servers pinned to CPU {SERVER_CPU}; wrk, the \
         open-loop generator and the upstreams on CPU {WRK_CPU}. Throughput: `wrk -t1 \
         -c{CONNECTIONS} -d{}s --latency`, median of {} round(s) after a {} s warm-up; \
         latency: {} open-loop round(s) of {} s per rate over {} connections; servers \
         interleaved.\n\n\
         - {GATEWAY}: the `gateway` program of proxflow-examples with \
         `benches/vendor_configs/proxflow/gateway.yaml`: on `/api` the cache (64 MB, the \
         answers' own freshness), the rate limit (per address, 1,000,000/s: checked, never \
         refusing), round robin with proxflow-lb's default passive ejection (5 failures in a \
         row), a breaker per upstream (defaults); \
         the gateway's traffic recorder and dashboard sampler run as they do in production; \
         one-thread runtime.\n\
         - {NGINX}: {} with `benches/vendor_configs/nginx/gateway.conf`: `limit_req` (the same \
         rate), `proxy_cache` (64 MB on files), round robin with nginx's default passive health \
         (`max_fails=1 fail_timeout=10s`, its nearest thing to a breaker), keep-alive to the \
         upstreams, one worker, logging off.\n\
         - {BARE_PROXFLOW} and {BARE_NGINX}: the bare proxies of the reverse proxy scenario, on \
         `{PASS}` only: what the composition costs over balancing alone.\n\n\
         The layering differs where the products differ: the gateway's cache sits above its \
         rate limit (a hit is not counted), nginx's `limit_req` runs before its cache.\n\n",
        plan.duration,
        plan.rounds,
        plan.warmup,
        plan.open_rounds,
        plan.open_duration,
        plan.open_connections,
        nginx::version(),
    );
    let mut targets = Vec::new();
    let mut panels = Vec::new();
    for (path, m, upstream_requests) in &measured {
        body += &format!("#### `{path}`\n\n");
        body += &throughput_table(m, if *path == PASS { BARE_NGINX } else { NGINX });
        body += &format!(
            "\nRequests that reached the upstreams during these runs: {upstream_requests}.\n\n"
        );
        body += &latency_table(m);
        body += "\n";
        panels.push(throughput_panel(
            m,
            &format!("{path}: throughput (closed loop, wrk)"),
        ));
        panels.push(latency_panel(
            m,
            &format!("{path}: latency at fixed rates (open loop)"),
        ));
        let info = |what: String, ratio: Option<f64>| {
            ratio.map(|r| (what, format!("{r:.2}x"), "info".to_string()))
        };
        targets.extend(info(
            format!("{GATEWAY} / {NGINX} req/s on `{path}`"),
            m.rps_ratio(GATEWAY, NGINX),
        ));
        targets.extend(info(
            format!("{GATEWAY} / {NGINX} per server CPU-second on `{path}`"),
            m.per_cpu_ratio(GATEWAY, NGINX),
        ));
        if *path == PASS {
            targets.extend(info(
                format!("the composition's cost, proxflow: {GATEWAY} / {BARE_PROXFLOW} req/s"),
                m.rps_ratio(GATEWAY, BARE_PROXFLOW),
            ));
            targets.extend(info(
                format!("the composition's cost, nginx: {NGINX} / {BARE_NGINX} req/s"),
                m.rps_ratio(NGINX, BARE_NGINX),
            ));
        }
    }
    body += &targets_table(&targets);
    let title =
        "The gateway stack (rate limit, breaker, balancer, cache) vs nginx with the same features";
    let plot = plot::svg(
        title,
        &format!("one core per server; wrk -c{CONNECTIONS}; open loop at 50% and 90% of the slowest maximum"),
        &panels,
    );
    Ok(Section {
        id: ID,
        title: title.to_string(),
        body,
        plot: Some(plot),
    })
}

/// The example site the gateway serves besides `/api`.
fn site() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/site")
}

/// The `gateway` program with the committed configuration, filled in.
fn start_gateway(ctx: &Context, upstreams: &[Upstream]) -> Result<Contestant> {
    let dir = ctx.dir(ID, "gateway");
    std::fs::create_dir_all(&dir)?;
    let site = site().canonicalize()?;
    let list: Vec<String> = upstreams
        .iter()
        .map(|u| format!("    - {{url: \"{}\", weight: 1}}", u.url()))
        .collect();
    let config = template::render(
        PROXFLOW_GATEWAY,
        &[
            ("site", &site.display().to_string()),
            ("upstreams", &list.join("\n")),
        ],
    )?;
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, config)?;
    let program = sibling_binary("gateway")?;
    let config_arg = path.display().to_string();
    let server = start_printing_port("gateway", &program, &["--config", &config_arg], &dir)?;
    Ok(Contestant::new(GATEWAY, true, server))
}

/// nginx with the committed configuration, filled in.
fn start_nginx(ctx: &Context, upstreams: &[Upstream]) -> Result<Contestant> {
    let dir = ctx.dir(ID, "nginx-gateway");
    let port = free_port()?;
    let servers: Vec<String> = upstreams
        .iter()
        .map(|u| format!("        server {};", u.addr()))
        .collect();
    let http = template::render(
        NGINX_GATEWAY,
        &[
            ("dir", &dir.display().to_string()),
            ("servers", &servers.join("\n")),
            ("port", &port.to_string()),
        ],
    )?;
    let server = nginx::start(&dir, &http, &[port])?;
    Ok(Contestant::new(NGINX, false, server))
}

/// A later `GET HIT` is a hit: `Cache-Status: proxflow; hit` (RFC 9211) or nginx's
/// `X-Cache-Status: HIT`.
fn check_hit(contestant: &Contestant) -> Result<()> {
    let file = HIT.trim_start_matches('/');
    for _ in 0..20 {
        let response = http::get(contestant.server.port, file)?;
        let hit = response.headers.iter().any(|(name, value)| {
            (name == "cache-status" && value.split(';').any(|p| p.trim() == "hit"))
                || (name == "x-cache-status" && value == "HIT")
        });
        if response.status == 200 && hit {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{}: {HIT} is not a hit after 20 GETs", contestant.label).into())
}
