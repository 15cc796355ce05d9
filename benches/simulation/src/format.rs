//! How the report and the plot write figures.

use crate::stats::Summary;

/// Milliseconds: one decimal below 10, none above; `-` for no figure.
pub fn ms(value: f64) -> String {
    if value.is_nan() {
        "-".into()
    } else if value < 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// A rate as a percentage, with more places for tiny ones; `-` for no figure.
pub fn pct(value: f64) -> String {
    if value.is_nan() {
        "-".into()
    } else if value == 0.0 {
        "0".into()
    } else if value < 0.001 {
        format!("{:.3}%", value * 100.0)
    } else {
        format!("{:.2}%", value * 100.0)
    }
}

/// Two rates as [`pct`] writes them, with more places when that would make different rates
/// look equal.
pub fn pct_pair(a: f64, b: f64) -> (String, String) {
    let (x, y) = (pct(a), pct(b));
    if x == y && a != b {
        (format!("{:.4}%", a * 100.0), format!("{:.4}%", b * 100.0))
    } else {
        (x, y)
    }
}

/// The median settle time, and in how many runs the backend never settled; `-` if none of
/// the watched period ran.
pub fn settle_text(s: &Summary) -> String {
    if s.fair_share.is_nan() {
        return "-".into();
    }
    let median = if s.settle.median.is_finite() {
        format!("{:.0} s", s.settle.median)
    } else {
        "never".into()
    };
    if s.never == s.runs {
        format!("never ({}/{})", s.never, s.runs)
    } else if s.never > 0 {
        format!("{median} (never in {}/{})", s.never, s.runs)
    } else {
        median
    }
}
