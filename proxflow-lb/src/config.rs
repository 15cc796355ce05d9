//! The serde configuration, with the origin's names and defaults, and its validation.

use std::time::Duration;

use proxflow_core::ConfigError;
use serde::{Deserialize, Serialize};

use crate::upstream::{check_weight, Upstream};

/// How an upstream is chosen. Written as the origin writes it: a name
/// (`lb_policy: round_robin`) or a name with settings
/// (`lb_policy: {adaptive: {history_length: 10, update_interval: 1m, alpha: 0.3}}`), in JSON,
/// YAML (a plain map, no tags needed) or TOML.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// In turn. The same algorithm as `WeightedRoundRobin`: with equal static weights it is
    /// strictly in turn, and an unavailable upstream's turns spread over all the others.
    RoundRobin,
    /// In turn by static weight, spread out (nginx's smooth weighted round robin: weights
    /// 5, 1, 1 give `a a b a c a a`). A slow-starting upstream gets its ramped share.
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
    /// A client address always goes to the same upstream while it is available (weighted
    /// rendezvous hashing: a key moves only when its upstream leaves, or to an upstream that
    /// joins). The address is the request's [`ClientAddr`](crate::ClientAddr) extension,
    /// axum's `ConnectInfo<SocketAddr>` or a `SocketAddr` extension; requests without one are
    /// spread at random.
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

/// The adaptive policy's settings: the smoothed history's. The live load that takes traffic
/// away from a degrading upstream within a moment has no setting but `failure_penalty`
/// (see the crate docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Samples kept per upstream. Default 10.
    pub history_length: usize,
    /// How often a sample is taken and the predictions recomputed: how soon an upstream that
    /// was slow and is fast again regains its share. Default 1 min.
    #[serde(with = "humantime_serde")]
    pub update_interval: Duration,
    /// Smoothing factor of the prediction, in (0, 1]: the weight of the newest sample (a
    /// higher one forgives faster). Default 0.3.
    pub alpha: f64,
    /// The load sample. Default `latency`: weights then follow how fast each upstream answers,
    /// where a request count is blind to speed and a concurrency sees it only in part.
    pub load: LoadMetric,
    /// A failed answer weighs as `1 + failure_penalty` answers' worth of load, in the sample
    /// and in the live load, so that a backend answering fast errors loses traffic. Default 4.
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
    /// A request dropped before its answer (a timeout outside the balancer, a client that
    /// went away) counts as a failure in a row only when it waited at least this long: an
    /// upstream that stalls behind a timeout is ejected, and clients that leave (a load test
    /// ending, a closed browser tab) do not eject healthy upstreams. A drop sooner neither
    /// counts nor breaks the run. Either way it counts for the latency estimate and the
    /// failure ratio. 0 counts every drop. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        PassiveHealth {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            failure_statuses: vec![502, 503, 504],
            stall_after: Duration::from_secs(1),
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
/// TOML, in the origin's names and with its defaults.
///
/// The origin (a Caddy-based proxy) writes the adaptive policy as
///
/// ```text
/// lb_policy adaptive {
///     history_length 10
///     update_interval 1m
///     alpha 0.3
/// }
/// ```
///
/// which reads here as the map `lb_policy: {adaptive: {history_length: 10, update_interval: 1m,
/// alpha: 0.3}}`; the classic policies are a name alone (`lb_policy: round_robin`). Durations
/// are humantime strings (`"1m"`, `"30s"`, `"250ms"`). Unknown fields are refused, so that a
/// misspelt setting is an error instead of a silent default.
///
/// [`AdaptiveLb::from_config`](crate::AdaptiveLb::from_config) checks every value
/// ([`LbConfig::validate`]) and names the first bad field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LbConfig {
    /// The upstreams: at least one, as nginx refuses an `upstream` block without servers (an
    /// empty list in a file is a mistake more often than a plan). A balancer whose upstreams
    /// all come at run time is made in code: [`AdaptiveLb::new`](crate::AdaptiveLb::new) with
    /// none, then [`LbHandle::add`](crate::LbHandle::add).
    pub upstreams: Vec<UpstreamConfig>,
    /// The policy: `round_robin`, `weighted_round_robin`, `random`, `least_request`,
    /// `{peak_ewma: {decay: 10s}}`, `ip_hash`, `{header_hash: {header: x-user}}` or
    /// `{adaptive: {...}}`. Default adaptive with its defaults.
    pub lb_policy: Policy,
    /// `Host` of forwarded requests: `keep` or `upstream`. Default `keep`.
    pub host: HostHeader,
    /// Append `X-Forwarded-For`, set `X-Forwarded-Proto` and `X-Forwarded-Host`. Default on.
    pub forwarded_headers: bool,
    /// Requests that failed to connect are sent again to another upstream this many times, at
    /// most [`MAX_RETRIES`] (idempotent methods with an empty body only; see
    /// [`AdaptiveLb::retries`](crate::AdaptiveLb::retries)). Default 1.
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
    /// Checks every field; the error names the first bad one and says what is allowed. An
    /// empty `upstreams` is refused after every other check.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.upstreams()?;
        self.lb_policy.validate()?;
        self.passive_health.validate()?;
        if let Some(check) = &self.health_check {
            check.validate()?;
        }
        check_retries(self.retries).map_err(|reason| ConfigError::new("retries", reason))?;
        if self.upstreams.is_empty() {
            return Err(ConfigError::new(
                "upstreams",
                "at least one; got none (for upstreams known only at run time, \
                 AdaptiveLb::new with none and LbHandle::add)",
            ));
        }
        Ok(())
    }

    /// The upstreams, parsed.
    pub(crate) fn upstreams(&self) -> Result<Vec<Upstream>, ConfigError> {
        self.upstreams
            .iter()
            .map(|upstream| {
                let parsed: Upstream = upstream.url.parse()?;
                check_weight(upstream.weight)
                    .map_err(|reason| ConfigError::new("upstreams.weight", reason))?;
                Ok(parsed.weight(upstream.weight))
            })
            .collect()
    }
}

/// Periods shorter than 10 ms would have the balancer busy with itself.
fn at_least_10ms(field: &'static str, period: Duration) -> Result<(), ConfigError> {
    if period < Duration::from_millis(10) {
        return Err(ConfigError::new(
            field,
            format!("at least 10ms; got {period:?}"),
        ));
    }
    Ok(())
}

/// The most retries of one request.
pub const MAX_RETRIES: u32 = 10;

pub(crate) fn check_retries(retries: u32) -> Result<(), String> {
    if retries <= MAX_RETRIES {
        Ok(())
    } else {
        Err(format!("at most {MAX_RETRIES}; got {retries}"))
    }
}

impl Policy {
    /// Checks the policy's settings; the error names the bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Policy::Adaptive(adaptive) => adaptive.validate(),
            Policy::PeakEwma { decay } if decay.is_zero() => Err(ConfigError::new(
                "decay",
                "a positive duration such as \"10s\"; got 0",
            )),
            Policy::HeaderHash { header } if http::HeaderName::try_from(header).is_err() => {
                Err(ConfigError::new(
                    "header",
                    format!("a valid header name such as \"x-user\"; got {header:?}"),
                ))
            }
            _ => Ok(()),
        }
    }
}

impl AdaptiveConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10_000).contains(&self.history_length) {
            return Err(ConfigError::new(
                "history_length",
                format!("in 1..=10000; got {}", self.history_length),
            ));
        }
        at_least_10ms("update_interval", self.update_interval)?;
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(ConfigError::new(
                "alpha",
                format!("in (0, 1], e.g. 0.3; got {}", self.alpha),
            ));
        }
        if !(self.failure_penalty >= 0.0 && self.failure_penalty <= 1000.0) {
            return Err(ConfigError::new(
                "failure_penalty",
                format!("in [0, 1000]; got {}", self.failure_penalty),
            ));
        }
        Ok(())
    }
}

impl PassiveHealth {
    /// Checks that the ejections' lengths make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_ejection < self.base_ejection {
            return Err(ConfigError::new(
                "max_ejection",
                format!(
                    "at least `base_ejection` ({:?}); got {:?}",
                    self.base_ejection, self.max_ejection
                ),
            ));
        }
        Ok(())
    }
}

impl ActiveHealth {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.path.starts_with('/')
            || http::uri::PathAndQuery::try_from(self.path.as_str()).is_err()
        {
            return Err(ConfigError::new(
                "path",
                format!("an absolute path such as \"/health\"; got {:?}", self.path),
            ));
        }
        at_least_10ms("interval", self.interval)?;
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout", "a positive duration; got 0"));
        }
        if self.unhealthy_threshold == 0 {
            return Err(ConfigError::new("unhealthy_threshold", "at least 1; got 0"));
        }
        if self.healthy_threshold == 0 {
            return Err(ConfigError::new("healthy_threshold", "at least 1; got 0"));
        }
        Ok(())
    }
}
