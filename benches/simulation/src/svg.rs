//! The plot: p99 latency and error rate per scenario and policy, on log scales.

use std::fmt::Write as _;

use crate::backends::Placement;
use crate::balancers::Contender;
use crate::format::{ms, pct};
use crate::scenarios::Scenario;
use crate::stats::Results;

/// A policy's colour in the plot: its `+ejection` variant gets the lighter shade.
fn colour(name: &str) -> &'static str {
    let ejection = name.ends_with(" +ejection");
    let (dark, light) = match name.trim_end_matches(" +ejection") {
        "round_robin" => ("#1f77b4", "#aec7e8"),
        "random" => ("#ff7f0e", "#ffbb78"),
        "least_request" => ("#2ca02c", "#98df8a"),
        "peak_ewma" => ("#9467bd", "#c5b0d5"),
        "adaptive/requests" => ("#8c564b", "#c49c94"),
        "adaptive/concurrency" => ("#e377c2", "#f7b6d2"),
        "adaptive" => ("#d62728", "#ff9896"),
        "tower p2c PeakEwma" => ("#111111", "#111111"),
        "tower p2c PendingRequests" => ("#7f7f7f", "#7f7f7f"),
        _ => ("#17becf", "#9edae5"),
    };
    if ejection {
        light
    } else {
        dark
    }
}

/// One panel of the plot: a log scale from `min` to `max`, for one timeout placement.
struct Panel {
    title: String,
    placement: Placement,
    min: f64,
    max: f64,
    ticks: Vec<(f64, String)>,
    /// Error rates (else p99 latencies).
    errors: bool,
}

/// For each timeout placement, two panels of grouped bars on log scales: p99 (1..1000 ms) and
/// error rate (0.001%..100%), a group per scenario, a bar per policy.
pub fn svg(scenarios: &[Scenario], contenders: &[Contender], results: &Results) -> String {
    // A bar's place in its group is its policy's, whatever the placement.
    let mut names: Vec<&str> = Vec::new();
    let mut placements: Vec<Placement> = Vec::new();
    for c in contenders {
        if !names.contains(&c.name.as_str()) {
            names.push(&c.name);
        }
        if !placements.contains(&c.placement) {
            placements.push(c.placement);
        }
    }
    let bar = 9.0;
    let gap = 24.0;
    let left = 70.0;
    let group = bar * names.len() as f64 + gap;
    let width = left + group * scenarios.len() as f64 + 20.0;
    let panel_height = 230.0;
    let panels_height = 2.0 * placements.len() as f64 * (panel_height + 60.0);
    let legend_rows = names.len().div_ceil(3);
    let height = 40.0 + panels_height + 18.0 * legend_rows as f64 + 20.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{left}" y="20" font-size="14">proxflow-lb vs tower p2c: median over seeds (log scales)</text>"#
    );
    let mut panels = Vec::new();
    for &placement in &placements {
        let timeout = format!("timeout {}", placement.name());
        panels.push(Panel {
            title: format!("p99 latency (ms), {timeout}"),
            placement,
            min: 1.0,
            max: 1000.0,
            ticks: [1.0, 10.0, 100.0, 1000.0]
                .iter()
                .map(|&v| (v, format!("{v}")))
                .collect(),
            errors: false,
        });
        panels.push(Panel {
            title: format!("error rate, {timeout}"),
            placement,
            min: 1e-5,
            max: 1.0,
            ticks: [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
                .iter()
                .map(|&v| (v, pct(v)))
                .collect(),
            errors: true,
        });
    }
    for (p, panel) in panels.iter().enumerate() {
        let Panel {
            title,
            placement,
            min,
            max,
            ticks,
            errors,
        } = panel;
        let top = 40.0 + p as f64 * (panel_height + 60.0);
        let bottom = top + panel_height;
        let y = |v: f64| {
            let f = (v.clamp(*min, *max).log10() - min.log10()) / (max.log10() - min.log10());
            bottom - f * (panel_height - 10.0)
        };
        let _ = writeln!(
            out,
            r#"<text x="{left}" y="{:.0}" font-size="12">{title}</text>"#,
            top - 4.0
        );
        for (v, label) in ticks {
            let ty = y(*v);
            let _ = writeln!(
                out,
                r##"<line x1="{left}" x2="{:.0}" y1="{ty:.1}" y2="{ty:.1}" stroke="#ddd"/><text x="{:.0}" y="{:.1}" text-anchor="end">{label}</text>"##,
                width - 20.0,
                left - 4.0,
                ty + 4.0
            );
        }
        for (s, scenario) in scenarios.iter().enumerate() {
            let x0 = left + gap / 2.0 + s as f64 * group;
            for (c, contender) in contenders.iter().enumerate() {
                if contender.placement != *placement {
                    continue;
                }
                let Some(r) = results.get(&(s, c)) else {
                    continue;
                };
                let slot = names.iter().position(|&n| n == contender.name).unwrap_or(0);
                let value = if *errors {
                    r.errors.median
                } else {
                    r.p99.median
                };
                let x = x0 + slot as f64 * bar;
                if value <= 0.0 || value.is_nan() {
                    let _ = writeln!(
                        out,
                        r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="2" fill="{}"/>"#,
                        bottom - 2.0,
                        bar - 1.0,
                        colour(&contender.name)
                    );
                    continue;
                }
                let ty = y(value);
                let _ = writeln!(
                    out,
                    r#"<rect x="{x:.1}" y="{ty:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {} (timeout {}): {}</title></rect>"#,
                    bar - 1.0,
                    (bottom - ty).max(1.0),
                    colour(&contender.name),
                    scenario.id,
                    contender.name,
                    placement.name(),
                    if *errors {
                        pct(value)
                    } else {
                        format!("{} ms", ms(value))
                    }
                );
            }
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.0}" text-anchor="middle">{}</text>"#,
                x0 + bar * names.len() as f64 / 2.0,
                bottom + 16.0,
                scenario.id
            );
        }
        let _ = writeln!(
            out,
            r##"<line x1="{left}" x2="{:.0}" y1="{bottom}" y2="{bottom}" stroke="#333"/>"##,
            width - 20.0
        );
    }
    let legend_top = 40.0 + panels_height;
    let column = (width - left) / 3.0;
    for (c, name) in names.iter().enumerate() {
        let x = left + (c % 3) as f64 * column;
        let y = legend_top + (c / 3) as f64 * 18.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x:.0}" y="{:.0}" width="12" height="12" fill="{}"/><text x="{:.0}" y="{:.0}">{}</text>"#,
            y - 10.0,
            colour(name),
            x + 16.0,
            y,
            name
        );
    }
    out.push_str("</svg>\n");
    out
}
