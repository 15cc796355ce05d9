//! Scenario 1: static files of 1 KiB and 100 KiB. proxflow's `static_server` (proxflow-static)
//! vs nginx, Caddy `file_server` and tower-http's `ServeDir` (served as the docs show it, and
//! tuned), on the files, nginx configuration and checks of `static_vs_nginx`: throughput per
//! file, and latency at 50% and 90% of the slowest server's maximum.

use proxflow_benches::compare::statics::{
    check_responses, start_caddy, start_nginx, write_files, FILES,
};
use proxflow_benches::plot;
use proxflow_benches::vendor::process::{sibling_binary, start_printing_port};
use proxflow_benches::vendor::{caddy, nginx, Result, CONNECTIONS, SERVER_CPU, WRK_CPU};

use super::{measure, preamble, Context};
use crate::engine::Contestant;
use crate::report::{
    latency_panel, latency_table, ratio_target, targets_table, throughput_panel, throughput_table,
    Section,
};

/// The scenario's name.
pub const ID: &str = "static";

const PROXFLOW: &str = "proxflow static_server";
const NGINX: &str = "nginx";
const CADDY: &str = "Caddy";
const SERVEDIR_DEFAULTS: &str = "ServeDir (axum::serve defaults)";
const SERVEDIR_TUNED: &str = "ServeDir (tuned)";

/// Runs the scenario.
pub fn run(ctx: &Context) -> Result<Section> {
    let load_before = proxflow_benches::vendor::cpu::load_average();
    let dir = ctx.dir(ID, "");
    let docroot = dir.join("www");
    write_files(&docroot)?;
    let docroot_arg = docroot.to_str().ok_or("temporary path is not UTF-8")?;

    let mut contestants = Vec::new();
    let static_server = sibling_binary("static_server")?;
    let args = [
        "--prod",
        "--quiet",
        "-H",
        "127.0.0.1",
        "-p",
        "0",
        docroot_arg,
    ];
    let server = start_printing_port("static_server", &static_server, &args, &dir)?;
    contestants.push(Contestant::new(PROXFLOW, true, server));
    contestants.push(Contestant::new(NGINX, false, start_nginx(&dir, &docroot)?));
    contestants.push(Contestant::new(CADDY, false, start_caddy(&dir, &docroot)?));
    let servedir = sibling_binary("servedir_server")?;
    for (label, extra) in [
        (SERVEDIR_DEFAULTS, Some("--axum-defaults")),
        (SERVEDIR_TUNED, None),
    ] {
        let mut args = vec!["--port", "0", "--dir", docroot_arg];
        args.extend(extra);
        let server = start_printing_port("servedir_server", &servedir, &args, &dir)?;
        contestants.push(Contestant::new(label, false, server));
    }
    for contestant in &contestants {
        check_responses(&contestant.server, &docroot)
            .map_err(|e| format!("{}: {e}", contestant.label))?;
    }
    eprintln!("static: every server sends the files' exact bytes");

    let mut measured = Vec::new();
    for (file, _) in FILES {
        let what = format!("static: {file}");
        let m = measure(ctx, &contestants, &format!("/{file}"), &what, &Vec::new)?;
        measured.push((file, m));
    }
    drop(contestants);
    let plan = &ctx.plan;

    let mut body = preamble(plan, load_before);
    body += &format!(
        "Servers pinned to CPU {SERVER_CPU}; wrk and the open-loop generator on CPU {WRK_CPU}. \
         Throughput: `wrk -t1 -c{CONNECTIONS} -d{}s --latency`, median of {} round(s) after a \
         {} s warm-up; latency: {} open-loop round(s) of {} s per rate over {} connections; \
         servers interleaved. proxflow: `static_server --prod --quiet` (a one-thread runtime \
         under taskset). {}: 1 worker, sendfile, tcp_nopush, open_file_cache, access_log off \
         (`benches/vendor_configs/nginx/static.conf`). {}: `file_server`, `GOMAXPROCS=1`, no \
         access log (`benches/vendor_configs/caddy/static.Caddyfile`). ServeDir: \
         `servedir_server`, with `axum::serve` and its defaults as the tower-http and axum \
         docs show it (`TCP_NODELAY` off, so Nagle's algorithm and delayed ACKs apply), and \
         tuned (bare hyper, `TCP_NODELAY`).\n\n",
        plan.duration,
        plan.rounds,
        plan.warmup,
        plan.open_rounds,
        plan.open_duration,
        plan.open_connections,
        nginx::version(),
        caddy::version(),
    );
    let mut targets = Vec::new();
    let mut panels = Vec::new();
    for (file, m) in &measured {
        body += &format!("#### {file}\n\n");
        body += &throughput_table(m, NGINX);
        body += "\n";
        body += &latency_table(m);
        body += "\n";
        panels.push(throughput_panel(
            m,
            &format!("{file}: throughput (closed loop, wrk)"),
        ));
        panels.push(latency_panel(
            m,
            &format!("{file}: latency at fixed rates (open loop)"),
        ));
        match *file {
            "1k.txt" => {
                targets.push(ratio_target(
                    "proxflow >= 1.0x nginx at 1 KiB",
                    m.rps_ratio(PROXFLOW, NGINX),
                    1.0,
                ));
                targets.push(ratio_target(
                    "proxflow >= 10x ServeDir (axum::serve defaults) at 1 KiB",
                    m.rps_ratio(PROXFLOW, SERVEDIR_DEFAULTS),
                    10.0,
                ));
                for (base, what) in [(SERVEDIR_TUNED, "ServeDir (tuned)"), (CADDY, "Caddy")] {
                    if let Some(r) = m.rps_ratio(PROXFLOW, base) {
                        targets.push((
                            format!("proxflow vs {what} at 1 KiB"),
                            format!("{r:.2}x"),
                            "info".into(),
                        ));
                    }
                }
            }
            _ => targets.push(ratio_target(
                "proxflow >= 0.8x nginx at 100 KiB",
                m.rps_ratio(PROXFLOW, NGINX),
                0.8,
            )),
        }
    }
    body += &targets_table(&targets);
    let title = "Static files: proxflow-static vs nginx, Caddy and tower-http ServeDir";
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
