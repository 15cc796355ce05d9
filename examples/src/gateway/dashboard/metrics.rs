//! `/metrics`: the same figures in the Prometheus text format (version 0.0.4).
//!
//! The figures are read from the layers' snapshots when scraped, as a Prometheus collector
//! does; a registry-based client crate would need them copied into its own metric objects
//! first, so the few lines of the format are written here. Counters are since the start and
//! end in `_total`; durations are in seconds; ratios are 0 to 1; every name starts with
//! `proxflow_gateway_` (the layers' own `metrics` feature uses other names).

use std::fmt::Write as _;

use proxflow_breaker::State;
use proxflow_lb::Health;

use super::sample::{Context, Reading, Sample, UpstreamSample};

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The histogram's bucket bounds, in microseconds: powers of two from 64 µs to 33.5 s. They
/// are bounds of the gateway's own histogram, so the counts are exact (values below the
/// bound; a request of exactly 2^k µs counts in the next bucket).
const BOUNDS_US: std::ops::RangeInclusive<u32> = 6..=25;

/// Writes metric families: the `# HELP` and `# TYPE` lines once per family, then its samples.
struct Families {
    out: String,
}

impl Families {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"");
                escape(&mut self.out, value);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }
}

/// A label value: backslash, double quote and line feed escaped.
fn escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Closed => "closed",
        State::Open => "open",
        State::HalfOpen => "half_open",
        State::RampUp => "ramp_up",
        State::ForcedOpen => "forced_open",
        State::ForcedClosed => "forced_closed",
    }
}

const STATES: [State; 6] = [
    State::Closed,
    State::Open,
    State::HalfOpen,
    State::RampUp,
    State::ForcedOpen,
    State::ForcedClosed,
];

fn health_name(health: Health) -> &'static str {
    match health {
        Health::Healthy => "healthy",
        Health::Ejected => "ejected",
        Health::FailingChecks => "failing_checks",
        Health::Draining => "draining",
        Health::NotReady => "not_ready",
    }
}

/// The text of `/metrics`: the counters of `now`, and the gauges of the latest `sample`.
pub fn render(now: &Reading, sample: &Sample, context: &Context<'_>) -> String {
    let mut f = Families {
        out: String::with_capacity(16 * 1024),
    };
    let traffic = &now.traffic;

    f.family(
        "proxflow_gateway_requests_total",
        "counter",
        "Requests answered, by route (the first two path segments).",
    );
    for (route, r) in &traffic.routes {
        f.sample(
            "proxflow_gateway_requests_total",
            &[("route", route)],
            r.requests as f64,
        );
    }
    f.family(
        "proxflow_gateway_errors_total",
        "counter",
        "Requests answered with a 5xx status, by route.",
    );
    for (route, r) in &traffic.routes {
        f.sample(
            "proxflow_gateway_errors_total",
            &[("route", route)],
            r.errors as f64,
        );
    }
    f.family(
        "proxflow_gateway_cancelled_total",
        "counter",
        "Requests dropped before their answer (the client went away), by route.",
    );
    for (route, r) in &traffic.routes {
        f.sample(
            "proxflow_gateway_cancelled_total",
            &[("route", route)],
            r.cancelled as f64,
        );
    }
    let name = "proxflow_gateway_request_duration_seconds";
    f.family(
        name,
        "histogram",
        "Time from the request to its response head, by route (a request dropped before its \
         answer counts at its elapsed time).",
    );
    for (route, r) in &traffic.routes {
        for power in BOUNDS_US {
            let bound = 1u64 << power;
            let le = format!("{}", bound as f64 / 1e6);
            f.sample(
                &format!("{name}_bucket"),
                &[("route", route), ("le", &le)],
                r.latency.count_below(bound) as f64,
            );
        }
        let count = r.latency.count() as f64;
        f.sample(
            &format!("{name}_bucket"),
            &[("route", route), ("le", "+Inf")],
            count,
        );
        f.sample(
            &format!("{name}_sum"),
            &[("route", route)],
            r.latency.sum_seconds(),
        );
        f.sample(&format!("{name}_count"), &[("route", route)], count);
    }
    f.family(
        "proxflow_gateway_requests_in_flight",
        "gauge",
        "Requests being answered now.",
    );
    f.sample(
        "proxflow_gateway_requests_in_flight",
        &[],
        traffic.in_flight as f64,
    );
    f.family(
        "proxflow_gateway_active_connections",
        "gauge",
        "Client connections that sent a request during the dashboard's last update interval.",
    );
    f.sample(
        "proxflow_gateway_active_connections",
        &[],
        sample.active_connections as f64,
    );

    let rl = &now.ratelimit;
    f.family(
        "proxflow_gateway_ratelimit_requests_total",
        "counter",
        "Requests the rate limiter decided on, by decision.",
    );
    for (decision, count) in [
        ("allowed", rl.allowed),
        ("limited", rl.limited),
        ("delayed", rl.delayed),
        ("dropped", rl.dropped),
        ("shadow_limited", rl.shadow_limited),
    ] {
        f.sample(
            "proxflow_gateway_ratelimit_requests_total",
            &[("decision", decision)],
            count as f64,
        );
    }
    f.family(
        "proxflow_gateway_ratelimit_active_keys",
        "gauge",
        "Rate-limit keys with state now.",
    );
    f.sample(
        "proxflow_gateway_ratelimit_active_keys",
        &[],
        rl.active_keys as f64,
    );

    let upstreams = &sample.upstreams;
    type Gauge = fn(&UpstreamSample) -> Option<f64>;
    let gauges: [(&str, &str, Gauge); 6] = [
        (
            "proxflow_gateway_upstream_weight",
            "The weight the balancer's picks use now (0 when the upstream takes no traffic).",
            |u| Some(u.weight),
        ),
        (
            "proxflow_gateway_upstream_latency_seconds",
            "The balancer's peak-EWMA latency estimate of the upstream.",
            |u| Some(u.latency_ms / 1e3),
        ),
        (
            "proxflow_gateway_upstream_share_ratio",
            "The upstream's share of the requests balanced during the last update interval.",
            |u| u.share,
        ),
        (
            "proxflow_gateway_upstream_in_flight",
            "Requests sent to the upstream and not answered.",
            |u| Some(f64::from(u.in_flight)),
        ),
        (
            "proxflow_gateway_upstream_predicted_load",
            "The adaptive policy's predicted load (seconds of latency for the latency load).",
            |u| {
                let seconds = u.predicted_load_unit == "ms";
                u.predicted_load
                    .map(|load| if seconds { load / 1e3 } else { load })
            },
        ),
        (
            "proxflow_gateway_upstream_up",
            "1 when the balancer sends the upstream traffic, else 0 (health says why).",
            |u| Some(f64::from(u8::from(u.health == Health::Healthy))),
        ),
    ];
    for (name, help, gauge) in gauges {
        f.family(name, "gauge", help);
        for u in upstreams {
            if let Some(value) = gauge(u) {
                f.sample(
                    name,
                    &[("upstream", &u.name), ("address", &u.address)],
                    value,
                );
            }
        }
    }
    f.family(
        "proxflow_gateway_upstream_health",
        "gauge",
        "1 for the upstream's health state now, 0 for the others.",
    );
    for u in upstreams {
        for health in [
            Health::Healthy,
            Health::Ejected,
            Health::FailingChecks,
            Health::Draining,
            Health::NotReady,
        ] {
            f.sample(
                "proxflow_gateway_upstream_health",
                &[("upstream", &u.name), ("health", health_name(health))],
                f64::from(u8::from(u.health == health)),
            );
        }
    }
    for (name, help, failures) in [
        (
            "proxflow_gateway_upstream_requests_total",
            "Answers received from the upstream.",
            false,
        ),
        (
            "proxflow_gateway_upstream_failures_total",
            "Failed answers from the upstream.",
            true,
        ),
    ] {
        f.family(name, "counter", help);
        for u in &now.lb.upstreams {
            let address = u
                .upstream
                .split_once("://")
                .map_or(u.upstream.as_str(), |(_, a)| a);
            let value = if failures { u.failures } else { u.requests };
            f.sample(
                name,
                &[
                    ("upstream", &context.name_of(address)),
                    ("address", address),
                ],
                value as f64,
            );
        }
    }

    f.family(
        "proxflow_gateway_breaker_state",
        "gauge",
        "1 for the breaker's state now, 0 for the others.",
    );
    for b in &now.breakers {
        let upstream = context.name_of(&b.breaker);
        for state in STATES {
            f.sample(
                "proxflow_gateway_breaker_state",
                &[("upstream", &upstream), ("state", state_name(state))],
                f64::from(u8::from(b.state == state)),
            );
        }
    }
    f.family(
        "proxflow_gateway_breaker_failure_ratio",
        "gauge",
        "The breaker's failure rate over its window.",
    );
    for b in &now.breakers {
        f.sample(
            "proxflow_gateway_breaker_failure_ratio",
            &[("upstream", &context.name_of(&b.breaker))],
            b.failure_rate,
        );
    }
    f.family(
        "proxflow_gateway_breaker_calls_total",
        "counter",
        "Calls through the breaker, by outcome.",
    );
    for b in &now.breakers {
        let upstream = context.name_of(&b.breaker);
        let t = &b.totals;
        for (outcome, count) in [
            ("success", t.successes),
            ("failure", t.failures),
            ("refused", t.refused),
            ("ignored", t.ignored),
        ] {
            f.sample(
                "proxflow_gateway_breaker_calls_total",
                &[("upstream", &upstream), ("outcome", outcome)],
                count as f64,
            );
        }
    }
    f.family(
        "proxflow_gateway_breaker_transitions_total",
        "counter",
        "The breaker's changes of state.",
    );
    for b in &now.breakers {
        f.sample(
            "proxflow_gateway_breaker_transitions_total",
            &[("upstream", &context.name_of(&b.breaker))],
            b.totals.transitions as f64,
        );
    }

    let cache = &now.cache;
    f.family(
        "proxflow_gateway_cache_lookups_total",
        "counter",
        "Cacheable requests, by result (stale answers are hits too).",
    );
    for (result, count) in [
        ("hit", cache.hits),
        ("miss", cache.misses),
        ("stale", cache.stale),
    ] {
        f.sample(
            "proxflow_gateway_cache_lookups_total",
            &[("result", result)],
            count as f64,
        );
    }
    for (name, help, value) in [
        (
            "proxflow_gateway_cache_stored_total",
            "Responses stored or refreshed.",
            cache.stored,
        ),
        (
            "proxflow_gateway_cache_evictions_total",
            "Entries dropped to keep the store within its size.",
            cache.evicted,
        ),
        (
            "proxflow_gateway_cache_invalidations_total",
            "Entries removed by unsafe methods and the webhook.",
            cache.invalidated,
        ),
    ] {
        f.family(name, "counter", help);
        f.sample(name, &[], value as f64);
    }
    f.family(
        "proxflow_gateway_cache_entries",
        "gauge",
        "Stored responses now.",
    );
    f.sample("proxflow_gateway_cache_entries", &[], cache.entries as f64);
    f.family("proxflow_gateway_cache_bytes", "gauge", "Bytes held now.");
    f.sample("proxflow_gateway_cache_bytes", &[], cache.bytes as f64);
    f.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_numbers_are_prometheus_numbers() {
        let mut out = String::new();
        escape(&mut out, "a\"b\\c\nd");
        assert_eq!(out, r#"a\"b\\c\nd"#);
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(3.0), "3");
        assert_eq!(format!("{}", (1u64 << 10) as f64 / 1e6), "0.001024");
    }
}
