//! Horizontal bar charts as SVG, written by hand: the vendor comparison's pictures need bars,
//! labels and an axis, which a plotting crate would bring with fonts and a raster backend.

use std::fmt::Write;

/// One horizontal bar.
#[derive(Debug, Clone)]
pub struct Row {
    /// A heading drawn above the first row of each run of equal groups (empty: none).
    pub group: String,
    /// The bar's label, on its left.
    pub label: String,
    /// The bar's length.
    pub value: f64,
    /// A second, darker bar drawn over the first from zero (a median under a p99).
    pub inner: Option<f64>,
    /// A whisker from `low` to `high` (the spread of the rounds).
    pub range: Option<(f64, f64)>,
    /// proxflow's bars have their own colour.
    pub proxflow: bool,
    /// The text right of the bar.
    pub text: String,
}

/// A chart: a title, an axis and its rows.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Above the chart.
    pub title: String,
    /// Under the axis.
    pub unit: String,
    /// A logarithmic axis (latencies spanning decades).
    pub log: bool,
    /// Top to bottom.
    pub rows: Vec<Row>,
}

const WIDTH: f64 = 960.0;
const LABEL_WIDTH: f64 = 230.0;
const TEXT_WIDTH: f64 = 220.0;
const ROW_HEIGHT: f64 = 22.0;
const BAR_HEIGHT: f64 = 15.0;
const PROXFLOW: (&str, &str) = ("#f4a261", "#c2410c");
const VENDOR: (&str, &str) = ("#93b4f5", "#1d4ed8");

/// The panels stacked under a title and a subtitle, as one SVG document.
pub fn svg(title: &str, subtitle: &str, panels: &[Panel]) -> String {
    let mut body = String::new();
    let mut y = 56.0;
    for panel in panels {
        y = draw_panel(&mut body, panel, y) + 24.0;
    }
    let height = y + 20.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="12" y="24" font-size="16" font-weight="bold">{}</text>
<text x="12" y="42" fill="#555">{}</text>
"##,
        escape(title),
        escape(subtitle)
    );
    out += &body;
    out += "</svg>\n";
    out
}

/// Draws `panel` from `top`; returns where it ends.
fn draw_panel(out: &mut String, panel: &Panel, top: f64) -> f64 {
    let _ = writeln!(
        out,
        r#"<text x="12" y="{}" font-size="14" font-weight="bold">{}</text>"#,
        top + 14.0,
        escape(&panel.title)
    );
    let plot_left = LABEL_WIDTH;
    let plot_width = WIDTH - LABEL_WIDTH - TEXT_WIDTH;
    let values = panel
        .rows
        .iter()
        .flat_map(|row| {
            [Some(row.value), row.inner, row.range.map(|r| r.1)]
                .into_iter()
                .flatten()
        })
        .filter(|v| v.is_finite() && *v > 0.0);
    let max = values.clone().fold(0.0, f64::max);
    let min = values.fold(f64::INFINITY, f64::min);
    let axis = Axis::new(panel.log, min, max);
    let x = |value: f64| plot_left + axis.fraction(value) * plot_width;

    let mut y = top + 26.0;
    let mut group = "";
    let rows_top = y;
    for row in &panel.rows {
        if !row.group.is_empty() && row.group != group {
            group = &row.group;
            let _ = writeln!(
                out,
                r##"<text x="12" y="{}" font-style="italic" fill="#333">{}</text>"##,
                y + 14.0,
                escape(group)
            );
            y += ROW_HEIGHT;
        }
        let (light, dark) = if row.proxflow { PROXFLOW } else { VENDOR };
        let bar_top = y + (ROW_HEIGHT - BAR_HEIGHT) / 2.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            plot_left - 8.0,
            y + 15.0,
            escape(&row.label)
        );
        let (main, main_colour) = match row.inner {
            Some(_) => (row.value, light),
            None => (row.value, dark),
        };
        bar(out, x(axis.low), x(main), bar_top, main_colour);
        if let Some(inner) = row.inner {
            bar(out, x(axis.low), x(inner), bar_top, dark);
        }
        if let Some((low, high)) = row.range {
            let mid = bar_top + BAR_HEIGHT / 2.0;
            let (a, b) = (x(low), x(high));
            let _ = writeln!(
                out,
                r##"<path d="M{a:.1} {mid:.1}H{b:.1}M{a:.1} {:.1}V{:.1}M{b:.1} {:.1}V{:.1}" stroke="#111" stroke-width="1.2" fill="none"/>"##,
                mid - 4.0,
                mid + 4.0,
                mid - 4.0,
                mid + 4.0
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}">{}</text>"#,
            plot_left + plot_width + 8.0,
            y + 15.0,
            escape(&row.text)
        );
        y += ROW_HEIGHT;
    }
    // The axis: a line under the rows, ticks and grid lines.
    let _ = writeln!(
        out,
        r##"<path d="M{plot_left} {y:.1}H{:.1}" stroke="#333"/>"##,
        plot_left + plot_width
    );
    for tick in axis.ticks() {
        let tx = x(tick);
        let _ = writeln!(
            out,
            r##"<path d="M{tx:.1} {rows_top:.1}V{y:.1}" stroke="#ddd" stroke-dasharray="2,3"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle" fill="#333">{}</text>"##,
            y + 14.0,
            tick_label(tick)
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
        plot_left + plot_width / 2.0,
        y + 30.0,
        escape(&panel.unit)
    );
    y + 34.0
}

fn bar(out: &mut String, from: f64, to: f64, top: f64, colour: &str) {
    let _ = writeln!(
        out,
        r#"<rect x="{from:.1}" y="{top:.1}" width="{:.1}" height="{BAR_HEIGHT}" fill="{colour}"/>"#,
        (to - from).max(0.5)
    );
}

/// Where values fall on the axis.
struct Axis {
    log: bool,
    low: f64,
    high: f64,
}

impl Axis {
    /// A linear axis from 0 to a round number above `max`, or a logarithmic one over the
    /// decades that hold `min` to `max`.
    fn new(log: bool, min: f64, max: f64) -> Axis {
        let max = if max > 0.0 { max } else { 1.0 };
        if log {
            let min = if min.is_finite() && min > 0.0 {
                min
            } else {
                max / 10.0
            };
            let low = 10f64.powf(min.log10().floor());
            let mut high = 10f64.powf(max.log10().ceil());
            if high <= low {
                high = low * 10.0;
            }
            Axis {
                log: true,
                low,
                high,
            }
        } else {
            let step = nice_step(max / 5.0);
            Axis {
                log: false,
                low: 0.0,
                high: (max / step).ceil() * step,
            }
        }
    }

    fn fraction(&self, value: f64) -> f64 {
        let f = if self.log {
            (value.max(self.low).log10() - self.low.log10())
                / (self.high.log10() - self.low.log10())
        } else {
            (value - self.low) / (self.high - self.low)
        };
        f.clamp(0.0, 1.0)
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let mut ticks = Vec::new();
            let mut t = self.low;
            while t <= self.high * 1.0001 {
                ticks.push(t);
                t *= 10.0;
            }
            ticks
        } else {
            let step = nice_step(self.high / 5.0);
            (0..=((self.high / step).round() as usize))
                .map(|i| i as f64 * step)
                .collect()
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let raw = if raw > 0.0 { raw } else { 1.0 };
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * power)
}

/// `120k`, `1.5M`, `0.1`, `20`.
fn tick_label(value: f64) -> String {
    if value >= 1e6 {
        format!("{}M", trim(value / 1e6))
    } else if value >= 1e3 {
        format!("{}k", trim(value / 1e3))
    } else {
        trim(value)
    }
}

fn trim(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::{nice_step, svg, tick_label, Axis, Panel, Row};

    #[test]
    fn axes_and_labels() {
        assert_eq!(nice_step(17.0), 20.0);
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(Axis::new(false, 3.0, 93_000.0).high, 100_000.0);
        let log = Axis::new(true, 0.25, 12.0);
        assert_eq!((log.low, log.high), (0.1, 100.0));
        assert_eq!(log.ticks().len(), 4);
        assert_eq!(tick_label(120_000.0), "120k");
        assert_eq!(tick_label(0.1), "0.1");
    }

    #[test]
    fn a_chart_is_one_svg_document() {
        let row = |label: &str, value| Row {
            group: "at 50%".into(),
            label: label.into(),
            value,
            inner: Some(value / 3.0),
            range: Some((value * 0.9, value * 1.1)),
            proxflow: label.starts_with("proxflow"),
            text: format!("{value} <ms>"),
        };
        let panel = Panel {
            title: "p50 & p99".into(),
            unit: "ms".into(),
            log: true,
            rows: vec![row("proxflow", 1.0), row("nginx", 2.0)],
        };
        let out = svg("title", "subtitle", &[panel]);
        assert!(out.starts_with("<svg") && out.ends_with("</svg>\n"));
        assert!(out.contains("p50 &amp; p99") && out.contains("&lt;ms&gt;"));
        assert_eq!(out.matches("<rect").count(), 1 + 4);
    }
}
