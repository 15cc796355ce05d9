//! The serde configuration, with the origin's names and defaults, and the rules every value
//! must meet (the builder's and `from_config`'s alike).

use std::time::Duration;

use proxflow_core::ConfigError;
use serde::{Deserialize, Serialize};

/// Below this `latency_threshold` a breaker reads its clock as it is, not [`Clock::coarse`]:
/// the coarse clock's millisecond would be more than 1 % of the threshold.
///
/// [`Clock::coarse`]: proxflow_core::Clock::coarse
pub(crate) const COARSE_CLOCK_MIN_THRESHOLD: Duration = Duration::from_millis(100);

/// Everything a [`CircuitBreakerLayer`](crate::CircuitBreakerLayer) can be told, as read from
/// JSON, YAML or TOML. `{}` is valid and gives the origin's defaults.
///
/// The names and defaults are those of the origin, a Caddy directive:
///
/// ```text
/// circuit_breaker intelligent {
///     failure_threshold 0.5   recovery_timeout 60s   half_open_max_requests 3
///     latency_threshold 5s    min_requests 10        evaluation_window 60s
///     ramp_up_duration 30s }
/// ```
///
/// The same in TOML (durations read as `"60s"`, `"1m"`, `"500ms"`; the crate docs show YAML):
///
/// ```
/// use proxflow_breaker::BreakerConfig;
///
/// let config: BreakerConfig = toml::from_str(
///     r#"
///     failure_threshold = 0.5
///     recovery_timeout = "60s"
///     half_open_max_requests = 3
///     latency_threshold = "5s"
///     min_requests = 10
///     evaluation_window = "1m"
///     ramp_up_duration = "30s"
///     "#,
/// )?;
/// assert_eq!(config, BreakerConfig::default());
/// # Ok::<(), toml::de::Error>(())
/// ```
///
/// The fields beyond the origin's (`slow_call_threshold`, the backoff, the ramp's floor and
/// shape, `failure_statuses`, `timeout`, `readiness`, `max_keys`, `precise_clock`) have
/// defaults that keep the origin's behaviour, with one exception: the ramp-up listens to the
/// backend (`ramp_up_mode: adaptive`, with `ramp_up_step`, `ramp_up_growth` and
/// `ramp_up_latency_tolerance`). It admits more, faster, while the admitted calls succeed
/// within their usual latency, and never less than the origin's time-only ramp, so
/// `ramp_up_duration` stays the longest it takes; `ramp_up_mode: time` is the origin's ramp
/// exactly. Unknown fields are refused, so that a misspelt one is not silently ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failure rate (0..=1] over the window that opens the circuit. Default 0.5.
    pub failure_threshold: f64,
    /// Slow-call rate (0..=1] over the window that opens the circuit. Default: the same as
    /// `failure_threshold`.
    pub slow_call_threshold: Option<f64>,
    /// A call at least this slow is a slow call. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub latency_threshold: Duration,
    /// Fewer calls than this in the window never open the circuit. Default 10.
    pub min_requests: u32,
    /// The sliding window the rates are taken over. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub evaluation_window: Duration,
    /// Time open before the first probes. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub recovery_timeout: Duration,
    /// Each trip in a row multiplies the open time by this. Default 2.
    pub recovery_backoff: f64,
    /// The longest open time. Default 10 min.
    #[serde(with = "humantime_serde")]
    pub max_recovery_timeout: Duration,
    /// Closed this long without tripping, the open time goes back to `recovery_timeout`.
    /// Default 10 min.
    #[serde(with = "humantime_serde")]
    pub backoff_reset: Duration,
    /// Probe calls in half-open; all must succeed. Default 3.
    pub half_open_max_requests: u32,
    /// The time-only ramp's length, from the floor share to all traffic after the probes
    /// succeed: the adaptive ramp takes this at the longest unless failures step it back.
    /// Default 30 s; 0 closes the circuit at once.
    #[serde(with = "humantime_serde")]
    pub ramp_up_duration: Duration,
    /// The share of calls admitted when ramp-up starts. Default 0.1.
    pub ramp_up_floor: f64,
    /// The time-only ramp's shape, as Envoy's slow start: its share grows with
    /// progress^(1/aggression). 1 is linear (default); above 1 admits more early.
    pub ramp_up_aggression: f64,
    /// How the ramp decides the share it admits: `adaptive` (default), from what the admitted
    /// calls show, never below the time-only ramp; `time`, the time-only ramp alone (the
    /// origin's rule). See [`RampUpMode`].
    pub ramp_up_mode: RampUpMode,
    /// Adaptive ramp: the shortest step (a step also lasts four usual latencies, and until
    /// `min_requests` calls ended); each step judges the calls that ended in it and sets the
    /// share. Default 100 ms.
    #[serde(with = "humantime_serde")]
    pub ramp_up_step: Duration,
    /// Adaptive ramp: a healthy step multiplies the share by this, in [1, 100]; 1 grows no
    /// faster than the time-only ramp. Default 1.2 (from 10 % to all calls in 13 steps).
    pub ramp_up_growth: f64,
    /// Adaptive ramp: a step is healthy while its calls' mean latency is at most the usual
    /// latency × (1 + this), in [0, 100]. Default 0.2.
    pub ramp_up_latency_tolerance: f64,
    /// Statuses that count as failures. Default: every 5xx.
    pub failure_statuses: Vec<u16>,
    /// A call still running after this is answered 504 and counts as a failure. Default: none.
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// While refusing, make `poll_ready` wait instead of answering 503, so that a balancer
    /// routes around this service. Default `false`.
    pub readiness: bool,
    /// Keyed form: the most breakers kept (closed ones unused longest go first). Default 10,000.
    pub max_keys: u64,
    /// Read the breaker's clock as it is at each call's start and end, instead of its
    /// [`coarse`](proxflow_core::Clock::coarse) form (for the default TSC clock: a process-wide
    /// millisecond ticker, one atomic load a reading). Default `false`; a `latency_threshold`
    /// under 100 ms reads the clock as it is whatever this says.
    pub precise_clock: bool,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 0.5,
            slow_call_threshold: None,
            latency_threshold: Duration::from_secs(5),
            min_requests: 10,
            evaluation_window: Duration::from_secs(60),
            recovery_timeout: Duration::from_secs(60),
            recovery_backoff: 2.0,
            max_recovery_timeout: Duration::from_secs(600),
            backoff_reset: Duration::from_secs(600),
            half_open_max_requests: 3,
            ramp_up_duration: Duration::from_secs(30),
            ramp_up_floor: 0.1,
            ramp_up_aggression: 1.0,
            ramp_up_mode: RampUpMode::Adaptive,
            ramp_up_step: Duration::from_millis(100),
            ramp_up_growth: 1.2,
            ramp_up_latency_tolerance: 0.2,
            failure_statuses: (500..600).collect(),
            timeout: None,
            readiness: false,
            max_keys: 10_000,
            precise_clock: false,
        }
    }
}

impl BreakerConfig {
    /// Checks every field; the error names the first bad one and says what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        share("failure_threshold", self.failure_threshold)?;
        if let Some(threshold) = self.slow_call_threshold {
            share("slow_call_threshold", threshold)?;
        }
        positive("latency_threshold", self.latency_threshold, "5s")?;
        at_least_one("min_requests", self.min_requests.into())?;
        if self.evaluation_window < MIN_WINDOW {
            return invalid(
                "evaluation_window",
                format!("must be at least 20ms; got {:?}", self.evaluation_window),
            );
        }
        positive("recovery_timeout", self.recovery_timeout, "60s")?;
        if !(self.recovery_backoff >= 1.0 && self.recovery_backoff <= 100.0) {
            return invalid(
                "recovery_backoff",
                format!(
                    "must be in [1, 100]; 1 keeps the open time fixed; got {}",
                    self.recovery_backoff
                ),
            );
        }
        if self.max_recovery_timeout < self.recovery_timeout {
            return invalid(
                "max_recovery_timeout",
                format!(
                    "must be at least `recovery_timeout` ({:?}); got {:?}",
                    self.recovery_timeout, self.max_recovery_timeout
                ),
            );
        }
        at_least_one("half_open_max_requests", self.half_open_max_requests.into())?;
        share("ramp_up_floor", self.ramp_up_floor)?;
        if !(self.ramp_up_aggression > 0.0 && self.ramp_up_aggression <= 100.0) {
            return invalid(
                "ramp_up_aggression",
                format!(
                    "must be in (0, 100]; 1 is linear; got {}",
                    self.ramp_up_aggression
                ),
            );
        }
        if !(self.ramp_up_growth >= 1.0 && self.ramp_up_growth <= 100.0) {
            return invalid(
                "ramp_up_growth",
                format!(
                    "must be in [1, 100]; 1 grows no faster than the time-only ramp; got {}",
                    self.ramp_up_growth
                ),
            );
        }
        if !(self.ramp_up_latency_tolerance >= 0.0 && self.ramp_up_latency_tolerance <= 100.0) {
            return invalid(
                "ramp_up_latency_tolerance",
                format!(
                    "must be in [0, 100], e.g. 0.5 for 50 % over the usual latency; got {}",
                    self.ramp_up_latency_tolerance
                ),
            );
        }
        if let Some(status) = self
            .failure_statuses
            .iter()
            .find(|s| !STATUSES.contains(*s))
        {
            return invalid(
                "failure_statuses",
                format!("{status} is not an HTTP status (100..=999)"),
            );
        }
        if let Some(timeout) = self.timeout {
            positive("timeout", timeout, "10s")?;
        }
        at_least_one("max_keys", self.max_keys)?;
        for (field, value) in [
            ("latency_threshold", self.latency_threshold),
            ("evaluation_window", self.evaluation_window),
            ("max_recovery_timeout", self.max_recovery_timeout),
            ("backoff_reset", self.backoff_reset),
            ("ramp_up_duration", self.ramp_up_duration),
            ("ramp_up_step", self.ramp_up_step),
        ] {
            if value > MAX_DURATION {
                return invalid(field, format!("must be at most 100 years; got {value:?}"));
            }
        }
        Ok(())
    }

    pub(crate) fn slow_call_threshold(&self) -> f64 {
        self.slow_call_threshold.unwrap_or(self.failure_threshold)
    }
}

/// How the ramp-up decides the share of calls it admits after the half-open probes succeed.
///
/// Reads as `"adaptive"` or `"time"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RampUpMode {
    /// Closed loop, the default. Steps of at least `ramp_up_step` judge the calls that ended
    /// in them against the usual latency, measured while closed before the trip (without
    /// one, `latency_threshold` is the limit):
    ///
    /// - a failure or slow-call rate at a quarter of its threshold halves the share (at
    ///   once, with `min_requests` calls);
    /// - a mean latency over the usual × (1 + `ramp_up_latency_tolerance`) holds it, or if
    ///   fewer calls ended than started (a queue grows), takes it back to the last healthy
    ///   step's share and at most 90 % of what the backend served;
    /// - otherwise the share grows × `ramp_up_growth` (× a tenth of that growth past the share
    ///   of the last strain, or with the latency over half the tolerance).
    ///
    /// The share is never below the time-only ramp's, except after a halving, which delays
    /// the time-only ramp to it: without failures the ramp takes `ramp_up_duration` at the
    /// longest. It ends there, or after five healthy steps at the full share. The window's
    /// thresholds still reopen the circuit.
    #[default]
    Adaptive,
    /// Open loop, the origin's rule: the share grows from `ramp_up_floor` to all calls over
    /// `ramp_up_duration`, whatever the calls show.
    Time,
}

/// The statuses `failure_statuses` may hold.
pub(crate) const STATUSES: std::ops::RangeInclusive<u16> = 100..=999;

/// The shortest window: 20 buckets of a millisecond.
const MIN_WINDOW: Duration = Duration::from_millis(20);

fn invalid(field: &'static str, reason: String) -> Result<(), ConfigError> {
    Err(ConfigError::new(field, reason))
}

/// A share of the calls, in (0, 1].
fn share(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if value > 0.0 && value <= 1.0 {
        Ok(())
    } else {
        invalid(field, format!("must be in (0, 1], e.g. 0.5; got {value}"))
    }
}

fn positive(field: &'static str, value: Duration, example: &str) -> Result<(), ConfigError> {
    if value.is_zero() {
        invalid(
            field,
            format!("must be a positive duration such as \"{example}\"; got 0s"),
        )
    } else {
        Ok(())
    }
}

fn at_least_one(field: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        invalid(field, "must be at least 1; got 0".into())
    } else {
        Ok(())
    }
}

/// Longer durations are refused: instants that far ahead can overflow.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
