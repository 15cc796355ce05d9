//! The serde configuration, with the origin's names and defaults:
//!
//! ```text
//! lb_policy adaptive { history_length 10  update_interval 1m  alpha 0.3 }
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// How an upstream is chosen. Written as the origin writes it: a name
/// (`lb_policy: round_robin`) or a name with settings
/// (`lb_policy: {adaptive: {history_length: 10, update_interval: 1m, alpha: 0.3}}`), in JSON,
/// YAML (a plain map, no tags needed) or TOML.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// In turn.
    RoundRobin,
    /// In turn by static weight, spread out (nginx's smooth weighted round robin).
    WeightedRoundRobin,
    /// By static weight at random (seeded).
    Random,
    /// The fewer requests in flight of two picked at random (power of two choices).
    LeastRequest,
    /// The lower of two random picks by peak-EWMA latency × (in flight + 1), as Finagle and
    /// tower's `PeakEwma`.
    PeakEwma {
        /// Decay time of the latency average. Default 10 s.
        #[serde(with = "humantime_serde")]
        decay: Duration,
    },
    /// A client address always goes to the same upstream while it is available (rendezvous
    /// hashing: a key moves only when its upstream leaves, or to an upstream that joins).
    IpHash,
    /// The same, keyed by a request header (requests without it are spread at random).
    HeaderHash {
        /// The header's name.
        header: String,
    },
    /// The origin's adaptive policy: smoothed load history, weights inversely proportional to
    /// the predicted load; between updates, weighted power of two choices by the live signals
    /// (peak-EWMA latency × (in flight + 1) / weight).
    Adaptive(AdaptiveConfig),
}

impl<'de> Deserialize<'de> for Policy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // serde's own enum form needs YAML tags (`!adaptive`); this reads a name or a map with
        // one key in every format.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Empty {}
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct PeakEwmaSettings {
            #[serde(with = "humantime_serde", default = "default_decay")]
            decay: Duration,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct HeaderHashSettings {
            header: String,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Settings {
            round_robin: Option<Empty>,
            weighted_round_robin: Option<Empty>,
            random: Option<Empty>,
            least_request: Option<Empty>,
            peak_ewma: Option<PeakEwmaSettings>,
            ip_hash: Option<Empty>,
            header_hash: Option<HeaderHashSettings>,
            adaptive: Option<AdaptiveConfig>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Name(String),
            Map(Settings),
        }
        const EXPECTED: &str = "`lb_policy`: expected round_robin, weighted_round_robin, random, \
            least_request, ip_hash, {peak_ewma: {decay}}, {header_hash: {header}} or \
            {adaptive: {history_length, update_interval, alpha, load, failure_penalty}}";
        let error = || serde::de::Error::custom(EXPECTED);
        let policy = match Text::deserialize(deserializer).map_err(|_| error())? {
            Text::Name(name) => match name.as_str() {
                "round_robin" => Policy::RoundRobin,
                "weighted_round_robin" => Policy::WeightedRoundRobin,
                "random" => Policy::Random,
                "least_request" => Policy::LeastRequest,
                "peak_ewma" => Policy::PeakEwma {
                    decay: default_decay(),
                },
                "ip_hash" => Policy::IpHash,
                "adaptive" => Policy::Adaptive(AdaptiveConfig::default()),
                _ => return Err(error()),
            },
            Text::Map(settings) => {
                let mut chosen = [
                    settings.round_robin.map(|_| Policy::RoundRobin),
                    settings
                        .weighted_round_robin
                        .map(|_| Policy::WeightedRoundRobin),
                    settings.random.map(|_| Policy::Random),
                    settings.least_request.map(|_| Policy::LeastRequest),
                    settings
                        .peak_ewma
                        .map(|s| Policy::PeakEwma { decay: s.decay }),
                    settings.ip_hash.map(|_| Policy::IpHash),
                    settings
                        .header_hash
                        .map(|s| Policy::HeaderHash { header: s.header }),
                    settings.adaptive.map(Policy::Adaptive),
                ]
                .into_iter()
                .flatten();
                match (chosen.next(), chosen.next()) {
                    (Some(policy), None) => policy,
                    _ => return Err(error()),
                }
            }
        };
        Ok(policy)
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::Adaptive(AdaptiveConfig::default())
    }
}

fn default_decay() -> Duration {
    Duration::from_secs(10)
}

/// What one interval's load sample of an upstream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LoadMetric {
    /// The number of requests it answered (the origin's text). Weighting by it only evens out
    /// counts: it is blind to latency and failures.
    Requests,
    /// Time-averaged requests in flight: total request time / interval.
    Concurrency,
    /// Mean latency of its answers.
    #[default]
    Latency,
}

/// The adaptive policy's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Samples kept per upstream. Default 10.
    pub history_length: usize,
    /// How often a sample is taken and the weights recomputed. Default 1 min.
    #[serde(with = "humantime_serde")]
    pub update_interval: Duration,
    /// Smoothing factor of the prediction, in (0, 1]: the weight of the newest sample.
    /// Default 0.3.
    pub alpha: f64,
    /// The load sample. Default `latency` (see benches/RESULTS.md for the evaluation).
    pub load: LoadMetric,
    /// A failed answer weighs in the sample as `1 + failure_penalty` answers' worth of load,
    /// so that a backend answering fast errors loses traffic. Default 4.
    pub failure_penalty: f64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            history_length: 10,
            update_interval: Duration::from_secs(60),
            alpha: 0.3,
            load: LoadMetric::Latency,
            failure_penalty: 4.0,
        }
    }
}

/// Whose name goes in the `Host` header of the forwarded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HostHeader {
    /// The client's `Host` (and URI authority) as sent, as nginx's `proxy_set_header Host $host`.
    #[default]
    Keep,
    /// The chosen upstream's authority, as nginx's default.
    Upstream,
}

/// Passive health: upstreams that keep failing are ejected for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassiveHealth {
    /// Consecutive failures (connection errors, or statuses in `failure_statuses`) that eject
    /// an upstream. 0 turns passive ejection off. Default 5.
    pub consecutive_failures: u32,
    /// The first ejection's length; each ejection in a row doubles it. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub base_ejection: Duration,
    /// The longest ejection. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub max_ejection: Duration,
    /// Statuses that count as failures. Default 502, 503, 504.
    pub failure_statuses: Vec<u16>,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        PassiveHealth {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            failure_statuses: vec![502, 503, 504],
        }
    }
}

/// Active health checks: a `GET path` to each upstream every `interval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActiveHealth {
    /// The path probed. Default `/health`.
    pub path: String,
    /// Time between probes of one upstream. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A probe not answered within this fails. Default 2 s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Failed probes in a row that mark an upstream unhealthy. Default 3.
    pub unhealthy_threshold: u32,
    /// Passed probes in a row that mark it healthy again. Default 2.
    pub healthy_threshold: u32,
}

impl Default for ActiveHealth {
    fn default() -> Self {
        ActiveHealth {
            path: "/health".into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        }
    }
}

/// An upstream: its base URI (`http://10.0.0.1:8080`) and static weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Scheme and authority, e.g. `http://10.0.0.1:8080`.
    pub url: String,
    /// Static weight (weighted round robin; a multiplier for the others). Default 1.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// Everything an [`AdaptiveLb`](crate::AdaptiveLb) can be told, as read from JSON, YAML or
/// TOML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LbConfig {
    /// The upstreams.
    pub upstreams: Vec<UpstreamConfig>,
    /// The policy: `round_robin`, `weighted_round_robin`, `random`, `least_request`,
    /// `{peak_ewma: {decay: 10s}}`, `ip_hash`, `{header_hash: {header: x-user}}` or
    /// `{adaptive: {...}}`. Default adaptive with its defaults.
    pub lb_policy: Policy,
    /// `Host` of forwarded requests: `keep` or `upstream`. Default `keep`.
    pub host: HostHeader,
    /// Append `X-Forwarded-For`, set `X-Forwarded-Proto` and `X-Forwarded-Host`. Default on.
    pub forwarded_headers: bool,
    /// Requests that failed to connect are sent again to another upstream this many times
    /// (idempotent methods with an empty body only). Default 1.
    pub retries: u32,
    /// A new upstream, or one back from ejection, ramps from 10 % to its full share over this.
    /// Default 30 s.
    #[serde(with = "humantime_serde")]
    pub slow_start: Duration,
    /// Passive health.
    pub passive_health: PassiveHealth,
    /// Active health checks. Default: none.
    pub health_check: Option<ActiveHealth>,
    /// With every upstream unavailable, spread over all of them anyway instead of answering
    /// 503. Default off.
    pub panic_mode: bool,
    /// Seed of the random choices; default: from the OS.
    pub seed: Option<u64>,
}

impl Default for LbConfig {
    fn default() -> Self {
        LbConfig {
            upstreams: Vec::new(),
            lb_policy: Policy::default(),
            host: HostHeader::Keep,
            forwarded_headers: true,
            retries: 1,
            slow_start: Duration::from_secs(30),
            passive_health: PassiveHealth::default(),
            health_check: None,
            panic_mode: false,
            seed: None,
        }
    }
}

impl LbConfig {
    /// Checks every field; the error names the first bad one and says what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.into(),
            })
        };
        for upstream in &self.upstreams {
            crate::upstream::parse_base(&upstream.url)?;
            if upstream.weight == 0 || upstream.weight > 1_000_000 {
                return invalid("upstreams.weight", "must be in 1..=1000000");
            }
        }
        match &self.lb_policy {
            Policy::Adaptive(adaptive) => {
                if !(1..=10_000).contains(&adaptive.history_length) {
                    return invalid("history_length", "must be in 1..=10000");
                }
                if adaptive.update_interval < Duration::from_millis(10) {
                    return invalid("update_interval", "must be at least 10ms");
                }
                if !(adaptive.alpha > 0.0 && adaptive.alpha <= 1.0) {
                    return invalid("alpha", "must be in (0, 1], e.g. 0.3");
                }
                if !(adaptive.failure_penalty >= 0.0 && adaptive.failure_penalty <= 1000.0) {
                    return invalid("failure_penalty", "must be in [0, 1000]");
                }
            }
            Policy::PeakEwma { decay } if decay.is_zero() => {
                return invalid("decay", "must be a positive duration such as \"10s\"");
            }
            Policy::HeaderHash { header } if http::HeaderName::try_from(header).is_err() => {
                return invalid("header", "must be a valid header name");
            }
            _ => {}
        }
        let passive = &self.passive_health;
        if passive.max_ejection < passive.base_ejection {
            return invalid("max_ejection", "must be at least `base_ejection`");
        }
        if let Some(check) = &self.health_check {
            if !check.path.starts_with('/')
                || http::uri::PathAndQuery::try_from(check.path.as_str()).is_err()
            {
                return invalid("path", "must be an absolute path such as \"/health\"");
            }
            if check.interval < Duration::from_millis(10) || check.timeout.is_zero() {
                return invalid(
                    "interval",
                    "interval must be at least 10ms and timeout positive",
                );
            }
            if check.unhealthy_threshold == 0 || check.healthy_threshold == 0 {
                return invalid("unhealthy_threshold", "thresholds must be at least 1");
            }
        }
        if self.retries > 10 {
            return invalid("retries", "must be at most 10");
        }
        Ok(())
    }
}
