//! The serde configuration, with the origin's names and defaults:
//!
//! ```text
//! circuit_breaker intelligent {
//!     failure_threshold 0.5   recovery_timeout 60s   half_open_max_requests 3
//!     latency_threshold 5s    min_requests 10        evaluation_window 60s
//!     ramp_up_duration 30s }
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Everything a [`CircuitBreakerLayer`](crate::CircuitBreakerLayer) can be told, as read from
/// JSON, YAML or TOML. `{}` is valid and gives the origin's defaults.
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
    /// Time from the floor share to all traffic after the probes succeed. Default 30 s;
    /// 0 closes the circuit at once.
    #[serde(with = "humantime_serde")]
    pub ramp_up_duration: Duration,
    /// The share of calls admitted when ramp-up starts. Default 0.1.
    pub ramp_up_floor: f64,
    /// The ramp's shape, as Envoy's slow start: the share grows with progress^(1/aggression).
    /// 1 is linear (default); above 1 admits more early.
    pub ramp_up_aggression: f64,
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
    /// Read the time-stamp counter at each call's start and end (about 20 ns each) instead of
    /// the millisecond ticker (one atomic load; one thread per process, running while a breaker
    /// reads it). Default `false`; a `latency_threshold` under 100 ms reads the counter
    /// whatever this says.
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
        let invalid = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.into(),
            })
        };
        let is_share = |v: f64| v > 0.0 && v <= 1.0;
        if !is_share(self.failure_threshold) {
            return invalid("failure_threshold", "must be in (0, 1], e.g. 0.5");
        }
        if self.slow_call_threshold.is_some_and(|v| !is_share(v)) {
            return invalid("slow_call_threshold", "must be in (0, 1], e.g. 0.5");
        }
        if self.latency_threshold.is_zero() {
            return invalid(
                "latency_threshold",
                "must be a positive duration such as \"5s\"",
            );
        }
        if self.min_requests == 0 {
            return invalid("min_requests", "must be at least 1");
        }
        if self.evaluation_window < Duration::from_millis(20) {
            return invalid("evaluation_window", "must be at least 20ms");
        }
        if self.recovery_timeout.is_zero() {
            return invalid(
                "recovery_timeout",
                "must be a positive duration such as \"60s\"",
            );
        }
        if !(self.recovery_backoff >= 1.0 && self.recovery_backoff <= 100.0) {
            return invalid(
                "recovery_backoff",
                "must be in [1, 100]; 1 keeps the open time fixed",
            );
        }
        if self.max_recovery_timeout < self.recovery_timeout {
            return invalid(
                "max_recovery_timeout",
                "must be at least `recovery_timeout`",
            );
        }
        if self.half_open_max_requests == 0 {
            return invalid("half_open_max_requests", "must be at least 1");
        }
        if !(self.ramp_up_floor > 0.0 && self.ramp_up_floor <= 1.0) {
            return invalid("ramp_up_floor", "must be in (0, 1], e.g. 0.1");
        }
        if !(self.ramp_up_aggression > 0.0 && self.ramp_up_aggression <= 100.0) {
            return invalid("ramp_up_aggression", "must be in (0, 100]; 1 is linear");
        }
        if let Some(status) = self
            .failure_statuses
            .iter()
            .find(|s| !(100..=999).contains(*s))
        {
            return invalid(
                "failure_statuses",
                &format!("{status} is not an HTTP status (100..=999)"),
            );
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return invalid("timeout", "must be a positive duration, or absent for none");
        }
        if self.max_keys == 0 {
            return invalid("max_keys", "must be at least 1");
        }
        for (field, value) in [
            ("latency_threshold", self.latency_threshold),
            ("evaluation_window", self.evaluation_window),
            ("max_recovery_timeout", self.max_recovery_timeout),
            ("backoff_reset", self.backoff_reset),
            ("ramp_up_duration", self.ramp_up_duration),
        ] {
            if value > MAX_DURATION {
                return invalid(field, "must be at most 100 years");
            }
        }
        Ok(())
    }

    pub(crate) fn slow_call_threshold(&self) -> f64 {
        self.slow_call_threshold.unwrap_or(self.failure_threshold)
    }
}

/// Longer durations are refused: instants that far ahead can overflow.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
