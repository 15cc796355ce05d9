//! What a scenario reports: markdown tables and targets, SVG plots, and the sections of
//! `benches/RESULTS.md` that the program keeps up to date (each between markers of its own, so
//! that a later run replaces it).

use std::fs;
use std::path::{Path, PathBuf};

use proxflow_benches::plot::{self, Panel, Row};
use proxflow_benches::stats::median;
use proxflow_benches::thousands;
use proxflow_benches::vendor::{Result, CONNECTIONS};

use crate::engine::{merged, problems, OpenRun, WrkRun};

/// A scenario's report.
pub struct Section {
    /// Its name on the command line, in file names and in the RESULTS.md markers.
    pub id: &'static str,
    /// Its heading.
    pub title: String,
    /// Markdown: set-up, tables, targets.
    pub body: String,
    /// Its picture.
    pub plot: Option<String>,
}

/// What a scenario measured with the shared engine.
pub struct Measured {
    /// Each contestant's label, and whether it is proxflow's.
    pub labels: Vec<(String, bool)>,
    /// wrk runs, per contestant (empty where not measured).
    pub wrk: Vec<Vec<WrkRun>>,
    /// The open-loop rates: a name (`50% of the slowest maximum`) and requests per second.
    pub rates: Vec<(String, f64)>,
    /// Open-loop runs, `[contestant][rate]`.
    pub open: Vec<Vec<Vec<OpenRun>>>,
}

impl Measured {
    /// The contestant labelled `label`.
    pub fn index(&self, label: &str) -> Option<usize> {
        self.labels.iter().position(|(l, _)| l == label)
    }

    /// The median req/s of contestant `i`.
    pub fn rps(&self, i: usize) -> Option<f64> {
        let runs = self.wrk.get(i).filter(|r| !r.is_empty())?;
        Some(median(&mut runs.iter().map(|r| r.rps).collect::<Vec<_>>()))
    }

    /// The median requests per server CPU-second of contestant `i`.
    pub fn per_cpu(&self, i: usize) -> Option<f64> {
        let runs = self.wrk.get(i).filter(|r| !r.is_empty())?;
        Some(median(
            &mut runs.iter().map(|r| r.per_cpu).collect::<Vec<_>>(),
        ))
    }

    /// Median req/s of `a` over that of `b`, by label.
    pub fn rps_ratio(&self, a: &str, b: &str) -> Option<f64> {
        Some(self.rps(self.index(a)?)? / self.rps(self.index(b)?)?)
    }

    /// The same in requests per server CPU-second.
    pub fn per_cpu_ratio(&self, a: &str, b: &str) -> Option<f64> {
        Some(self.per_cpu(self.index(a)?)? / self.per_cpu(self.index(b)?)?)
    }

    /// The merged open-loop outcome of contestant `i` at rate `r`.
    pub fn latency(
        &self,
        i: usize,
        r: usize,
    ) -> Option<proxflow_benches::vendor::openloop::Outcome> {
        merged(self.open.get(i)?.get(r)?)
    }
}

/// The throughput table: median req/s, each round, requests per server CPU-second, how busy the
/// two cores were, and each contestant against `baseline` (by label).
pub fn throughput_table(m: &Measured, baseline: &str) -> String {
    let base = m.index(baseline);
    let mut out = format!(
        "| contestant | req/s (median) | each round | req per server CPU-second | server core busy | load core busy | wrk p50 / p99 | req/s vs {baseline} | per CPU-second vs {baseline} |\n|---|--:|---|--:|--:|--:|--:|--:|--:|\n"
    );
    for (i, (label, _)) in m.labels.iter().enumerate() {
        let Some(rps) = m.rps(i) else { continue };
        let runs = &m.wrk[i];
        let each: Vec<String> = runs.iter().map(|r| thousands(r.rps)).collect();
        let pick = |f: &dyn Fn(&WrkRun) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
        let median_run = median_run(runs);
        let ratio = |value: Option<f64>, of: &dyn Fn(usize) -> Option<f64>| match (
            value,
            base.and_then(of),
        ) {
            (Some(v), Some(b)) => format!("{:.2}x", v / b),
            _ => "n/a".into(),
        };
        out += &format!(
            "| {label} | {} | {} | {} | {:.0}% | {:.0}% | {} / {} | {} | {} |\n",
            thousands(rps),
            each.join(", "),
            thousands(m.per_cpu(i).unwrap_or(0.0)),
            pick(&|r| r.server_core.busy) * 100.0,
            pick(&|r| r.load_core.busy) * 100.0,
            median_run.map_or("", |r| r.p50.as_str()),
            median_run.map_or("", |r| r.p99.as_str()),
            ratio(Some(rps), &|b| m.rps(b)),
            ratio(m.per_cpu(i), &|b| m.per_cpu(b)),
        );
    }
    out
}

/// The run whose req/s is the median (the lower of the middle two for an even count).
fn median_run(runs: &[WrkRun]) -> Option<&WrkRun> {
    let mut sorted: Vec<&WrkRun> = runs.iter().collect();
    sorted.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

/// The latency table: per rate and contestant, percentiles over every request of every round,
/// and anything that went wrong.
pub fn latency_table(m: &Measured) -> String {
    let mut out = String::from(
        "| load | contestant | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | p99 per round | requests | load core busy | problems |\n|---|---|--:|--:|--:|--:|--:|---|--:|--:|---|\n",
    );
    for (r, (name, rate)) in m.rates.iter().enumerate() {
        for (i, (label, _)) in m.labels.iter().enumerate() {
            let Some(outcome) = m.latency(i, r) else {
                continue;
            };
            let per_round: Vec<String> = m.open[i][r]
                .iter()
                .map(|run| format!("{:.2}", run.outcome.ms(0.99)))
                .collect();
            let mut busy: Vec<f64> = m.open[i][r].iter().map(|run| run.load_core.busy).collect();
            let busy = median(&mut busy);
            let mut problems = problems(&outcome).trim().to_string();
            if busy > 0.95 {
                problems += " load core saturated: the generator's latency as much as the server's";
            }
            out += &format!(
                "| {name}: {} req/s | {label} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {:.0}% | {} |\n",
                thousands(*rate),
                outcome.ms(0.5),
                outcome.ms(0.9),
                outcome.ms(0.99),
                outcome.ms(0.999),
                outcome.ms(1.0),
                per_round.join(", "),
                thousands(outcome.scheduled as f64),
                busy * 100.0,
                problems.trim(),
            );
        }
    }
    out
}

/// A target's row: what it asks, the ratio measured, PASS or FAIL.
pub fn ratio_target(what: &str, ratio: Option<f64>, min: f64) -> (String, String, String) {
    let (measured, verdict) = match ratio {
        None => ("n/a".to_string(), "not measured"),
        Some(r) if r >= min => (format!("{r:.2}x"), "PASS"),
        Some(r) => (format!("{r:.2}x"), "FAIL"),
    };
    (what.to_string(), measured, verdict.to_string())
}

/// The targets table.
pub fn targets_table(targets: &[(String, String, String)]) -> String {
    let mut out = String::from("| target | measured | result |\n|---|--:|---|\n");
    for (what, measured, verdict) in targets {
        out += &format!("| {what} | {measured} | {verdict} |\n");
    }
    out
}

/// A scenario's section with the usual picture: throughput (wrk) and latency at fixed rates
/// (open loop), one core per `server` (what the contestants are: "proxy", "cache").
pub fn section(id: &'static str, title: &str, server: &str, body: String, m: &Measured) -> Section {
    let plot = plot::svg(
        title,
        &format!(
            "one core per {server}; wrk -c{CONNECTIONS} for throughput; open loop at 50% and 90% of the slowest maximum"
        ),
        &[
            throughput_panel(m, "Throughput (closed loop, wrk)"),
            latency_panel(m, "Latency at fixed rates (open loop)"),
        ],
    );
    Section {
        id,
        title: title.to_string(),
        body,
        plot: Some(plot),
    }
}

/// The throughput panel: median req/s per contestant, the rounds' spread as a whisker.
pub fn throughput_panel(m: &Measured, title: &str) -> Panel {
    let rows = m
        .labels
        .iter()
        .enumerate()
        .filter_map(|(i, (label, proxflow))| {
            let rps = m.rps(i)?;
            let runs = &m.wrk[i];
            let low = runs.iter().map(|r| r.rps).fold(f64::INFINITY, f64::min);
            let high = runs.iter().map(|r| r.rps).fold(0.0, f64::max);
            Some(Row {
                group: String::new(),
                label: label.clone(),
                value: rps,
                inner: None,
                range: Some((low, high)),
                proxflow: *proxflow,
                text: format!(
                    "{} req/s; {}/CPU-s",
                    thousands(rps),
                    thousands(m.per_cpu(i).unwrap_or(0.0))
                ),
            })
        })
        .collect();
    Panel {
        title: title.into(),
        unit: "requests per second (median of the rounds; whiskers: slowest and fastest round)"
            .into(),
        log: false,
        rows,
    }
}

/// The latency panel: per rate, each contestant's p99 with its p50 inside, on a log axis.
pub fn latency_panel(m: &Measured, title: &str) -> Panel {
    let mut rows = Vec::new();
    for (r, (name, rate)) in m.rates.iter().enumerate() {
        for (i, (label, proxflow)) in m.labels.iter().enumerate() {
            let Some(outcome) = m.latency(i, r) else {
                continue;
            };
            rows.push(Row {
                group: format!("{name}: {} req/s", thousands(*rate)),
                label: label.clone(),
                value: outcome.ms(0.99),
                inner: Some(outcome.ms(0.5)),
                range: None,
                proxflow: *proxflow,
                text: format!(
                    "p50 {} / p99 {} ms{}",
                    short(outcome.ms(0.5)),
                    short(outcome.ms(0.99)),
                    if outcome.clean() { "" } else { " (!)" }
                ),
            });
        }
    }
    Panel {
        title: title.into(),
        unit: "latency from each request's scheduled send, ms (log scale; dark: p50, light: p99)"
            .into(),
        log: true,
        rows,
    }
}

/// A latency in ms with three significant digits.
pub fn short(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

/// Where the plots of a run go, and where RESULTS.md (if any) is.
pub struct Outputs {
    /// The markdown file whose sections are kept up to date, if any.
    pub results: Option<PathBuf>,
    /// The directory of the SVG files.
    pub plots: PathBuf,
}

/// The file name of a section's plot.
pub fn plot_file(section: &Section) -> String {
    format!("vendor_compare_{}.svg", section.id)
}

/// Writes `section`'s plot and returns the section as markdown, the plot linked relative to the
/// results file (or by its absolute path).
pub fn render(section: &Section, outputs: &Outputs) -> Result<String> {
    let mut out = format!("### {}\n\n{}", section.title, section.body);
    if let Some(svg) = &section.plot {
        fs::create_dir_all(&outputs.plots)?;
        let path = outputs.plots.join(plot_file(section));
        fs::write(&path, svg)?;
        let link = outputs
            .results
            .as_ref()
            .and_then(|results| results.parent())
            .and_then(|dir| path.strip_prefix(dir).ok())
            .map_or_else(|| path.display().to_string(), |p| p.display().to_string());
        out += &format!("\n![{}]({link})\n", section.title);
    }
    Ok(out)
}

/// The heading under which the sections are added to a results file the first time.
const HEADING: &str = "## Vendor comparison (`vendor_compare`)";

/// Puts `markdown` into `results` between the markers of `id`: in place of the section of an
/// earlier run; else after the last section of this program; else under [`HEADING`], which
/// goes before the file's first `## ` heading (the newest results come first), or at the end.
pub fn update_results(results: &Path, id: &str, markdown: &str) -> Result<()> {
    let text = fs::read_to_string(results).unwrap_or_default();
    let begin = format!("<!-- vendor_compare:{id} begin -->");
    let end = format!("<!-- vendor_compare:{id} end -->");
    let block = format!("{begin}\n{}\n{end}", markdown.trim_end());
    let updated = if let (Some(a), Some(b)) = (text.find(&begin), text.find(&end)) {
        if a > b {
            return Err(format!(
                "{}: the markers of {id} are out of order",
                results.display()
            )
            .into());
        }
        format!("{}{block}{}", &text[..a], &text[b + end.len()..])
    } else if let Some(heading) = text.find(HEADING) {
        // After the last of this program's sections under the heading, if any.
        let after_heading = heading + HEADING.len();
        let section_end = text[after_heading..]
            .find("\n## ")
            .map_or(text.len(), |i| after_heading + i);
        let at = text[after_heading..section_end]
            .rfind(" end -->")
            .map_or(after_heading, |i| after_heading + i + " end -->".len());
        format!("{}\n\n{block}{}", &text[..at], &text[at..])
    } else {
        match text.find("\n## ") {
            Some(at) => format!(
                "{}\n\n{HEADING}\n\n{block}\n{}",
                text[..at].trim_end(),
                &text[at..]
            ),
            None => format!("{}\n\n{HEADING}\n\n{block}\n", text.trim_end()),
        }
    };
    fs::write(results, updated)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::update_results;

    #[test]
    fn sections_are_replaced_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("RESULTS.md");
        std::fs::write(&path, "# Results\n\nintro\n\n## Older\n\nolder text\n").unwrap();
        update_results(&path, "proxy", "### A\n\nfirst").unwrap();
        update_results(&path, "cache", "### B\n\nsecond").unwrap();
        update_results(&path, "proxy", "### A\n\nthird").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Results\n\nintro\n\n## Vendor comparison"));
        assert!(text.ends_with("## Older\n\nolder text\n"));
        assert_eq!(text.matches("## Vendor comparison").count(), 1);
        assert!(!text.contains("first") && text.contains("third") && text.contains("second"));
        assert!(text.find("third").unwrap() < text.find("second").unwrap());
        assert!(text.find("second").unwrap() < text.find("## Older").unwrap());
    }
}
