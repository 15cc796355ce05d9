//! The layers and their builders.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderMap, Uri};
use proxflow_core::{Clock, ConfigError};
use tower_layer::Layer;

use crate::breaker::{Holders, StateChange};
use crate::classify::{ErrorClassifier, StatusClassifier};
use crate::config::{BreakerConfig, RampUpMode};
use crate::handle::{BreakerHandle, KeyedBreakerHandle};
use crate::keyed::{authority, Breakers, KeyFn, KeyedCircuitBreaker};
use crate::machine::Settings;
use crate::service::{CircuitBreaker, Core, GenericCircuitBreaker};
use crate::shared::{Setup, Shared};

/// A circuit breaker for an HTTP service: closed, open, half-open probing, then a ramp-up of
/// traffic. Cheap to clone; clones and every service they make share one breaker.
///
/// Builder methods state their defaults, which are those of [`BreakerConfig`], and refuse a
/// value out of range with a panic that names the field, as [`Self::from_config`] refuses it
/// with a [`ConfigError`]. They configure the one breaker that the layer, its clones and its
/// [`handle`](Self::handle)s share: the breaker is made from the settings at its first use (the
/// first service made, or a handle's first call), and a builder call after that panics.
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = StatusClassifier> {
    shared: Arc<Shared>,
    classify: C,
    /// The breaker's holders with this layer's classifier, made with its first service.
    holders: Arc<OnceLock<Holders<C>>>,
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl CircuitBreakerLayer {
    /// The origin's defaults: opens at 50 % failures (or slow calls over 5 s) with at least
    /// 10 calls in 60 s; open 60 s; 3 probes; a ramp-up from 10 % that listens to the calls,
    /// 30 s at the longest without failures.
    pub fn new() -> Self {
        CircuitBreakerLayer::with_setup(
            Setup::new(BreakerConfig::default()),
            StatusClassifier::default(),
        )
    }

    /// A layer from a configuration, validated; the error names the bad field.
    pub fn from_config(config: &BreakerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let classify = StatusClassifier::new(config.failure_statuses.iter().copied());
        Ok(CircuitBreakerLayer::with_setup(
            Setup::new(config.clone()),
            classify,
        ))
    }
}

impl<C> CircuitBreakerLayer<C> {
    fn with_setup(setup: Setup, classify: C) -> Self {
        CircuitBreakerLayer {
            shared: Shared::new(setup),
            classify,
            holders: Arc::default(),
        }
    }

    fn with(self, method: &str, change: impl FnOnce(&mut Setup)) -> Self {
        self.shared.configure(method, change);
        self
    }

    fn set(self, method: &str, change: impl FnOnce(&mut BreakerConfig)) -> Self {
        self.with(method, |setup| change(&mut setup.config))
    }

    /// Failure rate over the window that opens the circuit, in (0, 1]. Default 0.5.
    ///
    /// # Panics
    ///
    /// If `share` is not in (0, 1], or once the breaker is in use.
    pub fn failure_threshold(self, share: f64) -> Self {
        self.set("failure_threshold", |c| c.failure_threshold = share)
    }

    /// Slow-call rate over the window that opens the circuit, in (0, 1]. Default: the failure
    /// threshold.
    ///
    /// # Panics
    ///
    /// If `share` is not in (0, 1], or once the breaker is in use.
    pub fn slow_call_threshold(self, share: f64) -> Self {
        self.set("slow_call_threshold", |c| {
            c.slow_call_threshold = Some(share)
        })
    }

    /// A call this slow or slower is a slow call. Default 5 s.
    ///
    /// # Panics
    ///
    /// If `latency` is zero or over 100 years, or once the breaker is in use.
    pub fn latency_threshold(self, latency: Duration) -> Self {
        self.set("latency_threshold", |c| c.latency_threshold = latency)
    }

    /// Calls the window needs before it can open the circuit. Default 10.
    ///
    /// # Panics
    ///
    /// If `calls` is 0, or once the breaker is in use.
    pub fn min_requests(self, calls: u32) -> Self {
        self.set("min_requests", |c| c.min_requests = calls)
    }

    /// The sliding window the rates are taken over. Default 60 s.
    ///
    /// # Panics
    ///
    /// If `window` is under 20 ms or over 100 years, or once the breaker is in use.
    pub fn evaluation_window(self, window: Duration) -> Self {
        self.set("evaluation_window", |c| c.evaluation_window = window)
    }

    /// Open time before the first probes. Default 60 s.
    ///
    /// # Panics
    ///
    /// If `timeout` is zero or over `max_recovery_timeout` (10 min unless set: raise it
    /// first), or once the breaker is in use.
    pub fn recovery_timeout(self, timeout: Duration) -> Self {
        self.set("recovery_timeout", |c| c.recovery_timeout = timeout)
    }

    /// Each trip in a row multiplies the open time by this, in [1, 100]; 1 keeps it fixed.
    /// Default 2.
    ///
    /// # Panics
    ///
    /// If `factor` is not in [1, 100], or once the breaker is in use.
    pub fn recovery_backoff(self, factor: f64) -> Self {
        self.set("recovery_backoff", |c| c.recovery_backoff = factor)
    }

    /// The longest open time. Default 10 min.
    ///
    /// # Panics
    ///
    /// If `timeout` is under `recovery_timeout` (60 s unless set: lower it first) or over 100
    /// years, or once the breaker is in use.
    pub fn max_recovery_timeout(self, timeout: Duration) -> Self {
        self.set("max_recovery_timeout", |c| c.max_recovery_timeout = timeout)
    }

    /// Closed this long without tripping, the open time goes back to the recovery timeout.
    /// Default 10 min.
    ///
    /// # Panics
    ///
    /// If `after` is over 100 years, or once the breaker is in use.
    pub fn backoff_reset(self, after: Duration) -> Self {
        self.set("backoff_reset", |c| c.backoff_reset = after)
    }

    /// Probe calls in half-open, all of which must succeed. Default 3.
    ///
    /// # Panics
    ///
    /// If `probes` is 0, or once the breaker is in use.
    pub fn half_open_max_requests(self, probes: u32) -> Self {
        self.set("half_open_max_requests", |c| {
            c.half_open_max_requests = probes
        })
    }

    /// The time-only ramp's length, from the floor share to all traffic: the adaptive ramp's
    /// longest without failures (it goes faster while the calls stay healthy); zero closes at
    /// once. Default 30 s.
    ///
    /// # Panics
    ///
    /// If `duration` is over 100 years, or once the breaker is in use.
    pub fn ramp_up_duration(self, duration: Duration) -> Self {
        self.set("ramp_up_duration", |c| c.ramp_up_duration = duration)
    }

    /// Share of calls admitted when ramp-up starts, in (0, 1]. Default 0.1.
    ///
    /// # Panics
    ///
    /// If `share` is not in (0, 1], or once the breaker is in use.
    pub fn ramp_up_floor(self, share: f64) -> Self {
        self.set("ramp_up_floor", |c| c.ramp_up_floor = share)
    }

    /// Shape of the time-only ramp: share = floor + (1 - floor) × progress^(1/aggression); 1
    /// is linear, above 1 admits more early. In (0, 100]. Default 1.
    ///
    /// # Panics
    ///
    /// If `aggression` is not in (0, 100], or once the breaker is in use.
    pub fn ramp_up_aggression(self, aggression: f64) -> Self {
        self.set("ramp_up_aggression", |c| c.ramp_up_aggression = aggression)
    }

    /// How the ramp decides its share: [`RampUpMode::Adaptive`] (from what the admitted calls
    /// show, never below the time-only ramp unless failures step it back) or
    /// [`RampUpMode::Time`] (the time-only ramp, the origin's). Default adaptive.
    ///
    /// # Panics
    ///
    /// Once the breaker is in use.
    pub fn ramp_up_mode(self, mode: RampUpMode) -> Self {
        self.set("ramp_up_mode", |c| c.ramp_up_mode = mode)
    }

    /// Adaptive ramp: the shortest step. Each step (also at least four usual latencies long,
    /// with at least `min_requests` calls ended) judges the calls that ended in it and sets
    /// the share. Default 100 ms.
    ///
    /// # Panics
    ///
    /// If `step` is over 100 years, or once the breaker is in use.
    pub fn ramp_up_step(self, step: Duration) -> Self {
        self.set("ramp_up_step", |c| c.ramp_up_step = step)
    }

    /// Adaptive ramp: a healthy step multiplies the share by this, in [1, 100]; 1 grows no
    /// faster than the time-only ramp. Default 1.2.
    ///
    /// # Panics
    ///
    /// If `factor` is not in [1, 100], or once the breaker is in use.
    pub fn ramp_up_growth(self, factor: f64) -> Self {
        self.set("ramp_up_growth", |c| c.ramp_up_growth = factor)
    }

    /// Adaptive ramp: a step is healthy while its calls' mean latency is at most the usual
    /// latency × (1 + `tolerance`), in [0, 100]. The usual latency is measured while closed,
    /// before the trip (`BreakerSnapshot::usual_latency_ms`); without one, `latency_threshold`
    /// is the limit. Default 0.2.
    ///
    /// # Panics
    ///
    /// If `tolerance` is not in [0, 100], or once the breaker is in use.
    pub fn ramp_up_latency_tolerance(self, tolerance: f64) -> Self {
        self.set("ramp_up_latency_tolerance", |c| {
            c.ramp_up_latency_tolerance = tolerance
        })
    }

    /// Calls still running after this are answered 504 (generic form: `Timeout`) and count as
    /// failures. Default: none.
    ///
    /// # Panics
    ///
    /// If `timeout` is zero, or once the breaker is in use.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.set("timeout", |c| c.timeout = Some(timeout))
    }

    /// While refusing, make `poll_ready` wait instead of answering 503, so that a balancer
    /// (tower's or proxflow-lb) routes around this service. Not for the keyed form. Default:
    /// off.
    ///
    /// # Panics
    ///
    /// Once the breaker is in use.
    pub fn readiness(self, on: bool) -> Self {
        self.set("readiness", |c| c.readiness = on)
    }

    /// Keyed form: the most breakers kept. Default 10,000.
    ///
    /// # Panics
    ///
    /// If `max_keys` is 0, or once the breaker is in use.
    pub fn max_keys(self, max_keys: u64) -> Self {
        self.set("max_keys", |c| c.max_keys = max_keys)
    }

    /// The clock the breaker reads: each call's start and end, and the time its states and
    /// window follow. Default [`Clock::tsc()`].
    ///
    /// The breaker reads the clock's [`coarse`](Clock::coarse) form (for the TSC, a
    /// millisecond ticker: one atomic load a reading) unless [`Self::precise_clock`] is on or
    /// `latency_threshold` is under 100 ms. Tests on tokio's paused time pass
    /// [`Clock::tokio()`], made inside the paused runtime; tests without a runtime, a
    /// [`ManualClock`](proxflow_core::ManualClock)'s. The `timeout` and the readiness waits
    /// are tokio timers.
    ///
    /// # Panics
    ///
    /// Once the breaker is in use.
    pub fn clock(self, clock: Clock) -> Self {
        self.with("clock", |setup| setup.clock = clock)
    }

    /// Read the clock as it is at each call's start and end instead of its coarse form (see
    /// [`Self::clock`]). Default off; a `latency_threshold` under 100 ms reads it as it is
    /// whatever this says.
    ///
    /// # Panics
    ///
    /// Once the breaker is in use.
    pub fn precise_clock(self, on: bool) -> Self {
        self.set("precise_clock", |c| c.precise_clock = on)
    }

    /// The breaker's name in events, stats and metrics. Default `default`.
    ///
    /// # Panics
    ///
    /// Once the breaker is in use.
    pub fn name(self, name: &str) -> Self {
        self.with("name", |setup| setup.name = Arc::from(name))
    }

    /// Called on every change of state (outside the breaker's lock). Default: none.
    ///
    /// # Panics
    ///
    /// Once the breaker is in use.
    pub fn on_state_change(self, callback: impl Fn(&StateChange) + Send + Sync + 'static) -> Self {
        self.with("on_state_change", |setup| {
            setup.on_change = Some(Arc::new(callback))
        })
    }

    /// Statuses that count as failures, with the default classifier. Default: every 5xx.
    ///
    /// # Panics
    ///
    /// If a status is outside 100..=999, or once the breaker is in use.
    pub fn failure_statuses(
        self,
        statuses: impl IntoIterator<Item = u16>,
    ) -> CircuitBreakerLayer<StatusClassifier> {
        let statuses: Vec<u16> = statuses.into_iter().collect();
        let classify = statuses.clone();
        self.set("failure_statuses", |c| c.failure_statuses = statuses)
            .classify(StatusClassifier::new(classify))
    }

    /// Decides what a failure is (see [`Classify`](crate::Classify)). Default:
    /// [`StatusClassifier`].
    pub fn classify<C2>(self, classify: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            shared: self.shared,
            classify,
            holders: Arc::default(),
        }
    }

    /// The configuration in force (a copy).
    pub fn config(&self) -> BreakerConfig {
        self.shared.setup().config.clone()
    }

    /// A handle on the breaker: its state and figures, and manual control. The same breaker
    /// whatever builder calls come after.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::of_layer(Arc::clone(&self.shared))
    }

    /// One breaker per key, by default the request's authority (URI authority, else `Host`),
    /// each made with this layer's settings.
    pub fn keyed(self) -> KeyedCircuitBreakerLayer<C>
    where
        C: Clone,
    {
        let setup = self.shared.setup().clone();
        let breakers = Breakers::new(
            setup.config.max_keys,
            Settings::new(&setup.config),
            setup.on_change,
            self.classify,
            &setup.clock,
        );
        KeyedCircuitBreakerLayer {
            breakers: Arc::new(breakers),
            key: Arc::new(authority),
            config: setup.config,
        }
    }

    /// The generic form for any request and response types: refusals and timeouts are
    /// [`BreakerError`](crate::BreakerError) values; by default only errors are failures.
    pub fn generic(self) -> GenericCircuitBreakerLayer<ErrorClassifier> {
        GenericCircuitBreakerLayer {
            layer: self.classify(ErrorClassifier),
        }
    }

    fn core<S>(&self, inner: S) -> Core<S, C>
    where
        C: Clone,
    {
        let holders = self
            .holders
            .get_or_init(|| Holders::new(Arc::clone(self.shared.breaker()), &self.classify));
        let setup = self.shared.setup();
        Core::new(
            inner,
            holders.clone(),
            setup.config.timeout,
            setup.config.readiness,
        )
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(self.core(inner))
    }
}

impl<C> std::fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let setup = self.shared.setup();
        f.debug_struct("CircuitBreakerLayer")
            .field("name", &setup.name)
            .field("config", &setup.config)
            .field("clock", &setup.clock)
            .finish()
    }
}

/// The generic form of [`CircuitBreakerLayer`]; made by [`CircuitBreakerLayer::generic`].
#[derive(Clone, Debug)]
pub struct GenericCircuitBreakerLayer<C = ErrorClassifier> {
    layer: CircuitBreakerLayer<C>,
}

impl<C> GenericCircuitBreakerLayer<C> {
    /// Decides what a failure is. Default: [`ErrorClassifier`] (errors fail).
    pub fn classify<C2>(self, classify: C2) -> GenericCircuitBreakerLayer<C2> {
        GenericCircuitBreakerLayer {
            layer: self.layer.classify(classify),
        }
    }

    /// A handle on the breaker, the same as the HTTP layer's it was made from.
    pub fn handle(&self) -> BreakerHandle {
        self.layer.handle()
    }
}

impl<S, C: Clone> Layer<S> for GenericCircuitBreakerLayer<C> {
    type Service = GenericCircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        GenericCircuitBreaker::new(self.layer.core(inner))
    }
}

/// One breaker per key in one layer; made by [`CircuitBreakerLayer::keyed`]. Refusals of a
/// key's breaker are 503s (readiness mode does not apply: `poll_ready` has no request).
#[derive(Clone)]
pub struct KeyedCircuitBreakerLayer<C = StatusClassifier> {
    breakers: Arc<Breakers<C>>,
    key: KeyFn,
    config: BreakerConfig,
}

impl<C> KeyedCircuitBreakerLayer<C> {
    /// The key of a request, from its URI and headers; `None` puts it under
    /// [`NO_KEY`](crate::NO_KEY). Default: the authority (URI authority, else `Host`).
    pub fn key(
        self,
        key: impl Fn(&Uri, &HeaderMap) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        KeyedCircuitBreakerLayer {
            key: Arc::new(key),
            ..self
        }
    }

    /// A handle on the breakers, the same whatever builder calls come after.
    pub fn handle(&self) -> KeyedBreakerHandle
    where
        C: Send + Sync + 'static,
    {
        KeyedBreakerHandle::new(self.breakers.clone())
    }
}

impl<S, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<C> {
    type Service = KeyedCircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker::new(
            inner,
            Arc::clone(&self.breakers),
            self.config.timeout,
            Arc::clone(&self.key),
        )
    }
}

impl<C> std::fmt::Debug for KeyedCircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("config", &self.config)
            .finish()
    }
}
