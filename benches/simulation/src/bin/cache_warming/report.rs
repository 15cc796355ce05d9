//! Medians over seeds, the markdown table, the targets.

use std::fmt::Write as _;

use crate::sim::{Counts, TTL};
use crate::workload::{Workload, Zipf, KEYS, RATE, SECOND};

/// The medians over seeds of one workload and policy.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub hit_ratio: f64,
    pub origin: f64,
    pub misses: f64,
    pub refreshes: f64,
    pub prefetches: f64,
    pub expiry_misses: f64,
    /// Used prefetches over prefetches (`NaN` without prefetches).
    pub precision: f64,
    /// Used refreshes over refreshes (`NaN` without refreshes).
    pub refresh_use: f64,
    pub over_budget: f64,
    pub tracked: f64,
    pub memory: f64,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.retain(|x| !x.is_nan());
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// The medians of each figure over `runs` (one per seed).
pub fn summary(runs: &[Counts]) -> Summary {
    let m = |f: &dyn Fn(&Counts) -> f64| median(runs.iter().map(f).collect());
    Summary {
        hit_ratio: m(&|c| ratio(c.hits, c.requests)),
        origin: m(&|c| c.origin() as f64),
        misses: m(&|c| c.misses as f64),
        refreshes: m(&|c| c.refreshes as f64),
        prefetches: m(&|c| c.prefetches as f64),
        expiry_misses: m(&|c| c.expiry_misses as f64),
        precision: m(&|c| ratio(c.prefetches_used, c.prefetches)),
        refresh_use: m(&|c| ratio(c.refreshes_used, c.refreshes)),
        over_budget: m(&|c| c.over_budget as f64),
        tracked: m(&|c| c.tracked as f64),
        memory: m(&|c| c.memory as f64),
    }
}

/// The three policies' summaries of one workload: (a), (b), predictive.
pub struct Row {
    pub workload: Workload,
    pub none: Summary,
    pub on_access: Summary,
    pub predictive: Summary,
    /// The prefetch oracle, where it differs from (a).
    pub oracle: Option<Summary>,
}

fn thousands(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{:.1}k", x / 1000.0)
    }
}

fn percent(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * x)
    }
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

/// The share of (a)'s expiry misses that the best refresh policy knowing every key's true
/// rate removes with 10% more origin requests than (a), in the steady state: refresh the
/// keys of highest rate at every expiry (each refresh adds `1/(1 + λT)` origin requests and
/// saves `λT/(1 + λT)` misses) until the 10% are spent.
pub fn refresh_bound(exponent: f64, seconds: u64, none: &Summary) -> f64 {
    let ttl = TTL as f64 / SECOND as f64;
    let mut budget = 0.1 * none.origin;
    let mut saved = 0.0;
    for rate in Zipf::rates(KEYS, exponent, RATE) {
        let natural = 1.0 / (ttl + 1.0 / rate);
        let extra = (1.0 / ttl - natural) * seconds as f64;
        if extra > budget {
            break;
        }
        budget -= extra;
        saved += natural * seconds as f64;
    }
    (saved / none.expiry_misses).min(1.0)
}

/// The markdown report.
pub fn report(rows: &[Row], seeds: u64, seconds: u64, wall: std::time::Duration) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Predictive warming (issue 19): {seeds} seeds, medians, {seconds} s of virtual time, wall time {:.0} s\n",
        wall.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "Entries live 60 s; the origin answers in 50 ms; a request for a key being fetched waits \
         for that fetch (coalesced: counted a miss, no origin request, the fetch counts as used). \
         Origin requests = misses' fetches + refreshes + prefetches. Predictive warming at its \
         defaults.\n"
    );
    md.push_str(
        "| workload | policy | hit ratio | origin requests | misses | refreshes (used) | prefetches | expiry misses | prefetch precision | over budget |\n",
    );
    md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for row in rows {
        let mut policies = vec![
            ("(a) none", &row.none),
            ("(b) refresh-on-access 80%", &row.on_access),
            ("predictive", &row.predictive),
        ];
        if let Some(oracle) = &row.oracle {
            policies.push(("prefetch oracle (a ceiling)", oracle));
        }
        for (name, s) in policies {
            let refreshes = if s.refreshes > 0.0 {
                format!("{} ({})", thousands(s.refreshes), percent(s.refresh_use))
            } else {
                "0".into()
            };
            let _ = writeln!(
                md,
                "| {} | {name} | {} | {} | {} | {refreshes} | {} | {} | {} | {} |",
                row.workload.name(),
                percent(s.hit_ratio),
                thousands(s.origin),
                thousands(s.misses),
                thousands(s.prefetches),
                thousands(s.expiry_misses),
                percent(s.precision),
                thousands(s.over_budget),
            );
        }
    }
    md.push_str("\nPredictive warming's state at the end of a run: ");
    let state: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {:.0}k keys, {:.1} MB ({:.0} bytes a key)",
                r.workload.name(),
                r.predictive.tracked / 1000.0,
                r.predictive.memory / 1e6,
                r.predictive.memory / r.predictive.tracked
            )
        })
        .collect();
    md.push_str(&state.join("; "));
    md.push_str(".\n");
    md.push_str("\n| target | measured | result |\n|---|---|---|\n");
    for row in rows {
        let (a, b, p) = (&row.none, &row.on_access, &row.predictive);
        let name = row.workload.name();
        if row.workload.has_sessions() {
            let _ = writeln!(
                md,
                "| {name}: prefetch precision ≥ 60% | {} | {} |",
                percent(p.precision),
                pass(p.precision >= 0.6)
            );
            let gain = p.hit_ratio - a.hit_ratio;
            let _ = writeln!(
                md,
                "| {name}: hit ratio ≥ (a) + 10 points | {:+.1} points ({} vs {}) | {} |",
                100.0 * gain,
                percent(p.hit_ratio),
                percent(a.hit_ratio),
                pass(gain >= 0.10)
            );
        } else {
            let removed = 1.0 - p.expiry_misses / a.expiry_misses;
            let more = p.origin / a.origin - 1.0;
            let bound = refresh_bound(row.workload.exponent(), seconds, a);
            let _ = writeln!(
                md,
                "| {name}: removes ≥ 50% of (a)'s expiry misses with ≤ 10% more origin requests | \
                 removes {}, {:+.1}% origin requests (bound at +10%: {}) | {} |",
                percent(removed),
                100.0 * more,
                percent(bound),
                pass(removed >= 0.5 && more <= 0.1)
            );
            let _ = writeln!(
                md,
                "| {name}: hit ratio above (b)'s with ≤ its origin requests | {} vs {}, {} vs {} origin requests | {} |",
                percent(p.hit_ratio),
                percent(b.hit_ratio),
                thousands(p.origin),
                thousands(b.origin),
                pass(p.hit_ratio > b.hit_ratio && p.origin <= b.origin)
            );
        }
    }
    md
}
