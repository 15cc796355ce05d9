//! Scenario 4: a caching proxy serving 1 KiB hits. proxflow's `caching_proxy` (proxflow-cache)
//! vs nginx `proxy_cache` and Varnish, each in front of its own origin, as `cache_vs_vendors`
//! runs them (the same contestants, configurations and checks, from `proxflow_benches::compare`):
//! throughput, and latency at 50% and 90% of the slowest cache's maximum.

use proxflow_benches::compare::cache::{self, VARNISH_PARAMS};
use proxflow_benches::compare::origin::{self, Origin};
use proxflow_benches::vendor::process::Server;
use proxflow_benches::vendor::{nginx, varnish, Result, CONNECTIONS, SERVER_CPU, WRK_CPU};

use super::{measure, preamble, Context};
use crate::engine::Contestant;
use crate::report::{
    latency_table, ratio_target, section, targets_table, throughput_table, Section,
};

/// The scenario's name.
pub const ID: &str = "cache";

const PROXFLOW: &str = "proxflow caching_proxy";
const NGINX: &str = "nginx proxy_cache";
const VARNISH: &str = "Varnish";

type Start = fn(&std::path::Path, &Origin) -> Result<Server>;

/// Runs the scenario.
pub fn run(ctx: &Context) -> Result<Section> {
    let load_before = proxflow_benches::vendor::cpu::load_average();
    let dir = ctx.dir(ID, "");
    std::fs::create_dir_all(&dir)?;
    let starts: [(&str, bool, Start); 3] = [
        (PROXFLOW, true, cache::start_caching_proxy),
        (NGINX, false, cache::start_nginx),
        (VARNISH, false, cache::start_varnish),
    ];
    let mut contestants = Vec::new();
    let mut origins = Vec::new();
    for (label, proxflow, start) in starts {
        let origin = origin::start(&ctx.runtime)?;
        let server = start(&dir, &origin)?;
        contestants.push(Contestant::new(label, proxflow, server));
        origins.push(origin);
    }
    for contestant in &contestants {
        let headers = cache::check_hit(&contestant.server)?;
        eprintln!(
            "{}: /{} is a hit: {headers}",
            contestant.label,
            origin::FILE
        );
    }
    let asked_before: Vec<u64> = origins.iter().map(Origin::requests).collect();
    let path = format!("/{}", origin::FILE);
    let counters = || origins.iter().map(Origin::requests).collect();
    let m = measure(ctx, &contestants, &path, "cache", &counters)?;
    drop(contestants);
    let plan = &ctx.plan;
    let under_load: Vec<u64> = origins
        .iter()
        .zip(&asked_before)
        .map(|(o, before)| o.requests() - before)
        .collect();

    let mut body = preamble(plan, load_before);
    body += &format!(
        "Each cache has an origin of its own in this program: `GET /{}` answered with 1024 \
         bytes and `Cache-Control: max-age=3600`; before the load a first GET must be a miss \
         and a later one a hit. Caches pinned to CPU {SERVER_CPU}; wrk, the open-loop \
         generator and the origins on CPU {WRK_CPU}. Throughput: `wrk -t1 -c{CONNECTIONS} \
         -d{}s --latency`, median of {} round(s) after a {} s warm-up; latency: {} open-loop \
         round(s) of {} s per rate over {} connections; caches interleaved. caching_proxy: its \
         default configuration, a one-thread runtime. {}: 1 worker, `proxy_cache` on files, \
         sendfile, open_file_cache, keep-alive to the origin, access_log off \
         (`benches/vendor_configs/nginx/cache.conf`). {}: built-in VCL \
         (`benches/vendor_configs/varnish/cache.vcl`), `{}`, manager and cache process on the \
         one core.\n\n",
        origin::FILE,
        plan.duration,
        plan.rounds,
        plan.warmup,
        plan.open_rounds,
        plan.open_duration,
        plan.open_connections,
        nginx::version(),
        varnish::version(),
        VARNISH_PARAMS.join(" "),
    );
    body += &throughput_table(&m, NGINX);
    body += "\nRequests that reached each origin under load (0: every answer measured was a hit): ";
    let counts: Vec<String> = m
        .labels
        .iter()
        .zip(&under_load)
        .map(|((label, _), n)| format!("{label} {n}"))
        .collect();
    body += &counts.join(", ");
    body += ".\n\n";
    body += &latency_table(&m);
    let all_hits = under_load.iter().all(|&n| n == 0);
    let mut targets = vec![
        ratio_target(
            "caching_proxy req/s >= 1.0x nginx proxy_cache",
            m.rps_ratio(PROXFLOW, NGINX),
            1.0,
        ),
        ratio_target(
            "caching_proxy req/s >= 1.5x Varnish",
            m.rps_ratio(PROXFLOW, VARNISH),
            1.5,
        ),
    ];
    if !all_hits {
        for target in &mut targets {
            target.2 = "INVALID (not all hits)".into();
        }
    }
    for (vendor, name) in [(NGINX, "nginx proxy_cache"), (VARNISH, "Varnish")] {
        if let Some(r) = m.per_cpu_ratio(PROXFLOW, vendor) {
            targets.push((
                format!("caching_proxy / {name} in requests per server CPU-second"),
                format!("{r:.2}x"),
                "info".into(),
            ));
        }
    }
    body += "\n";
    body += &targets_table(&targets);
    let title = "HTTP cache, 1 KiB hits: caching_proxy vs nginx proxy_cache vs Varnish";
    Ok(section(ID, title, "cache", body, &m))
}
