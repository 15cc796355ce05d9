//! Scenario 3: rate limiting at a fixed rate and burst, proxflow-ratelimit vs nginx
//! `limit_req`: the admitted count and the throughput of the rejection path. Measured by the
//! `ratelimit_vs_nginx` program, run as it is (so that its figures stay comparable with those it
//! has published), whose report this section carries, with a plot of its medians.

use std::process::{Command, Stdio};

use proxflow_benches::plot::{self, Panel, Row};
use proxflow_benches::thousands;
use proxflow_benches::vendor::process::sibling_binary;
use proxflow_benches::vendor::Result;

use super::{preamble, Context};
use crate::report::Section;

/// The scenario's name.
pub const ID: &str = "ratelimit";

/// The rate (requests per second) and nginx's burst: `ratelimit_vs_nginx`'s defaults.
const RATE: u32 = 1000;
const BURST: u32 = 100;

/// Runs the scenario.
pub fn run(ctx: &Context) -> Result<Section> {
    let load_before = proxflow_benches::vendor::cpu::load_average();
    let dir = ctx.dir(ID, "");
    std::fs::create_dir_all(&dir)?;
    let json_path = dir.join("ratelimit.json");
    let program = sibling_binary("ratelimit_vs_nginx")?;
    let plan = &ctx.plan;
    let args: Vec<String> = [
        "--rate".to_string(),
        RATE.to_string(),
        "--burst".into(),
        BURST.to_string(),
        "--duration".into(),
        plan.duration.to_string(),
        "--rounds".into(),
        plan.rounds.to_string(),
        "--warmup".into(),
        plan.warmup.to_string(),
        "--json".into(),
        json_path.display().to_string(),
    ]
    .into();
    eprintln!(
        "ratelimit: running {} {}",
        program.display(),
        args.join(" ")
    );
    let output = Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if !output.status.success() {
        return Err(format!("ratelimit_vs_nginx failed ({})", output.status).into());
    }
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let medians: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_path)?)?;

    let mut body = preamble(plan, load_before);
    body += &format!(
        "Measured by `ratelimit_vs_nginx --rate {RATE} --burst {BURST} --duration {} --rounds {} \
         --warmup {}` (nginx `limit_req ... burst={BURST} nodelay` vs proxflow's token bucket of \
         capacity {}; nginx's configuration and the equivalence are in its documentation), whose \
         report follows.\n\n",
        plan.duration,
        plan.rounds,
        plan.warmup,
        BURST + 1,
    );
    // Its heading becomes a subheading of this section.
    body += &report.replacen("### ", "#### ", 1);

    let rows = medians.as_array().cloned().unwrap_or_default();
    let row = |value: &serde_json::Value, figure: f64, text: String| Row {
        group: value["scenario"].as_str().unwrap_or("").to_string(),
        label: value["server"].as_str().unwrap_or("").to_string(),
        value: figure,
        inner: None,
        range: None,
        proxflow: value["server"].as_str() == Some("proxflow"),
        text,
    };
    let throughput = rows
        .iter()
        .filter_map(|v| {
            let rps = v["rps"].as_f64()?;
            let per_cpu = v["per_cpu_second"].as_f64().unwrap_or(0.0);
            Some(row(
                v,
                rps,
                format!("{} req/s; {}/CPU-s", thousands(rps), thousands(per_cpu)),
            ))
        })
        .collect();
    let admitted = rows
        .iter()
        .filter_map(|v| {
            let admitted = v["admitted"].as_f64()?;
            let expected = v["expected"].as_f64()?;
            Some(row(
                v,
                admitted / expected,
                format!("{} of {}", thousands(admitted), thousands(expected)),
            ))
        })
        .collect();
    let title = "Rate limiting: proxflow-ratelimit vs nginx limit_req";
    let plot = plot::svg(
        title,
        &format!("{RATE} requests/s, burst {BURST}; wrk -c32 from one address, almost every request refused"),
        &[
            Panel {
                title: "Throughput of the rejection path (closed loop, wrk)".into(),
                unit: "requests per second, median of the rounds".into(),
                log: false,
                rows: throughput,
            },
            Panel {
                title: "Admitted requests over the algorithm's expected count".into(),
                unit: "admitted / (burst + rate x run length); 1 is exact".into(),
                log: false,
                rows: admitted,
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
