//! The layers, their builders, and the handles on their breakers.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderMap, Uri};
use tower_layer::Layer;

use crate::breaker::{Breaker, BreakerSnapshot, Holders, OnStateChange, StateChange};
use crate::classify::{ErrorClassifier, StatusClassifier};
use crate::config::BreakerConfig;
use crate::error::ConfigError;
use crate::keyed::{authority, Breakers, KeyFn, KeyedCircuitBreaker, Registry};
use crate::machine::{Settings, State};
use crate::service::{CircuitBreaker, Core, GenericCircuitBreaker};

/// A circuit breaker for an HTTP service: closed, open, half-open probing, then a ramp-up of
/// traffic. Cheap to clone; clones and every service they make share one breaker.
///
/// Builder methods state their defaults, which are those of [`BreakerConfig`]; values out of
/// range are clamped to the nearest allowed one ([`Self::from_config`] refuses them instead).
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = StatusClassifier> {
    config: BreakerConfig,
    classify: C,
    name: Arc<str>,
    on_change: Option<OnStateChange>,
    breaker: Arc<OnceLock<Holders<C>>>,
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl CircuitBreakerLayer {
    /// The origin's defaults: opens at 50 % failures (or slow calls over 5 s) with at least
    /// 10 calls in 60 s; open 60 s; 3 probes; 30 s ramp-up from 10 %.
    pub fn new() -> Self {
        CircuitBreakerLayer {
            config: BreakerConfig::default(),
            classify: StatusClassifier::default(),
            name: Arc::from("default"),
            on_change: None,
            breaker: Arc::default(),
        }
    }

    /// A layer from a validated configuration; the error names the bad field.
    pub fn from_config(config: &BreakerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(CircuitBreakerLayer {
            config: config.clone(),
            classify: StatusClassifier::new(config.failure_statuses.iter().copied()),
            ..CircuitBreakerLayer::new()
        })
    }
}

impl<C> CircuitBreakerLayer<C> {
    fn with(mut self, change: impl FnOnce(&mut BreakerConfig)) -> Self {
        change(&mut self.config);
        // A changed layer gets its own breaker.
        self.breaker = Arc::default();
        self
    }

    /// Failure rate that opens the circuit, in (0, 1]. Default 0.5.
    pub fn failure_threshold(self, share: f64) -> Self {
        self.with(|c| c.failure_threshold = share_in_range(share))
    }

    /// Slow-call rate that opens the circuit, in (0, 1]. Default: the failure threshold.
    pub fn slow_call_threshold(self, share: f64) -> Self {
        self.with(|c| c.slow_call_threshold = Some(share_in_range(share)))
    }

    /// A call this slow or slower is a slow call. Default 5 s.
    pub fn latency_threshold(self, latency: Duration) -> Self {
        self.with(|c| c.latency_threshold = latency.max(Duration::from_nanos(1)))
    }

    /// Calls the window needs before it can open the circuit. Default 10.
    pub fn min_requests(self, calls: u32) -> Self {
        self.with(|c| c.min_requests = calls.max(1))
    }

    /// The sliding window of the rates (at least 20 ms). Default 60 s.
    pub fn evaluation_window(self, window: Duration) -> Self {
        self.with(|c| c.evaluation_window = window.max(Duration::from_millis(20)))
    }

    /// Open time before the first probes. Default 60 s.
    pub fn recovery_timeout(self, timeout: Duration) -> Self {
        self.with(|c| {
            c.recovery_timeout = timeout.max(Duration::from_millis(1));
            c.max_recovery_timeout = c.max_recovery_timeout.max(c.recovery_timeout);
        })
    }

    /// Each trip in a row multiplies the open time by this, in [1, 100]. Default 2.
    pub fn recovery_backoff(self, factor: f64) -> Self {
        self.with(|c| {
            c.recovery_backoff = if factor >= 1.0 {
                factor.min(100.0)
            } else {
                1.0
            }
        })
    }

    /// The longest open time (at least the recovery timeout). Default 10 min.
    pub fn max_recovery_timeout(self, timeout: Duration) -> Self {
        self.with(|c| c.max_recovery_timeout = timeout.max(c.recovery_timeout))
    }

    /// Closed this long, the open time goes back to the recovery timeout. Default 10 min.
    pub fn backoff_reset(self, after: Duration) -> Self {
        self.with(|c| c.backoff_reset = after)
    }

    /// Probe calls in half-open, all of which must succeed. Default 3.
    pub fn half_open_max_requests(self, probes: u32) -> Self {
        self.with(|c| c.half_open_max_requests = probes.max(1))
    }

    /// Time from the floor share to all traffic; zero closes at once. Default 30 s.
    pub fn ramp_up_duration(self, duration: Duration) -> Self {
        self.with(|c| c.ramp_up_duration = duration)
    }

    /// Share of calls admitted when ramp-up starts, in (0, 1]. Default 0.1.
    pub fn ramp_up_floor(self, share: f64) -> Self {
        self.with(|c| c.ramp_up_floor = share_in_range(share))
    }

    /// Shape of the ramp: share = floor + (1 - floor) × progress^(1/aggression); 1 is linear,
    /// above 1 admits more early. In (0, 100]. Default 1.
    pub fn ramp_up_aggression(self, aggression: f64) -> Self {
        self.with(|c| {
            c.ramp_up_aggression = if aggression > 0.0 {
                aggression.min(100.0)
            } else {
                1.0
            }
        })
    }

    /// Calls still running after this are answered 504 (generic form: `Timeout`) and count as
    /// failures. Default: none.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.with(|c| c.timeout = Some(timeout.max(Duration::from_nanos(1))))
    }

    /// While refusing, make `poll_ready` wait instead of answering 503, so that a balancer
    /// (tower's or proxflow-lb) routes around this service. Not for the keyed form. Default:
    /// off.
    pub fn readiness(self, on: bool) -> Self {
        self.with(|c| c.readiness = on)
    }

    /// Keyed form: the most breakers kept. Default 10,000.
    pub fn max_keys(self, max_keys: u64) -> Self {
        self.with(|c| c.max_keys = max_keys.max(1))
    }

    /// Read the time-stamp counter at each call's start and end (about 20 ns each) instead of
    /// the millisecond ticker (one atomic load; one thread per process, running while a breaker
    /// reads it). Default off; a `latency_threshold` under 100 ms reads the counter whatever
    /// this says.
    pub fn precise_clock(self, on: bool) -> Self {
        self.with(|c| c.precise_clock = on)
    }

    /// The breaker's name in events, stats and metrics. Default `default`.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Arc::from(name);
        self.with(|_| {})
    }

    /// Called on every change of state (outside the breaker's lock).
    pub fn on_state_change(
        mut self,
        callback: impl Fn(&StateChange) + Send + Sync + 'static,
    ) -> Self {
        self.on_change = Some(Arc::new(callback));
        self.with(|_| {})
    }

    /// Statuses that count as failures, with the default classifier. Default: every 5xx.
    pub fn failure_statuses(
        self,
        statuses: impl IntoIterator<Item = u16>,
    ) -> CircuitBreakerLayer<StatusClassifier> {
        let statuses: Vec<u16> = statuses.into_iter().collect();
        let classify = StatusClassifier::new(statuses.iter().copied());
        self.classify(classify)
            .with(|c| c.failure_statuses = statuses)
    }

    /// Decides what a failure is (see [`Classify`](crate::Classify)). Default:
    /// [`StatusClassifier`].
    pub fn classify<C2>(self, classify: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            config: self.config,
            classify,
            name: self.name,
            on_change: self.on_change,
            breaker: Arc::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// A handle on the breaker: its state and figures, and manual control.
    pub fn handle(&self) -> BreakerHandle
    where
        C: Clone,
    {
        BreakerHandle {
            breaker: self.breaker(),
        }
    }

    /// One breaker per key, by default the request's authority (URI authority, else `Host`).
    pub fn keyed(self) -> KeyedCircuitBreakerLayer<C> {
        KeyedCircuitBreakerLayer {
            layer: self,
            key: Arc::new(authority),
            breakers: Arc::default(),
        }
    }

    /// The generic form for any request and response types: refusals and timeouts are
    /// [`BreakerError`](crate::BreakerError) values; by default only errors are failures.
    pub fn generic(self) -> GenericCircuitBreakerLayer<ErrorClassifier> {
        GenericCircuitBreakerLayer {
            layer: self.classify(ErrorClassifier),
        }
    }

    fn holders(&self) -> &Holders<C>
    where
        C: Clone,
    {
        self.breaker.get_or_init(|| {
            let breaker = Breaker::new(
                Arc::clone(&self.name),
                Settings::new(&self.config),
                self.on_change.clone(),
            );
            Holders::new(Arc::new(breaker), &self.classify)
        })
    }

    fn breaker(&self) -> Arc<Breaker>
    where
        C: Clone,
    {
        Arc::clone(self.holders().breaker())
    }

    fn core<S>(&self, inner: S) -> Core<S, C>
    where
        C: Clone,
    {
        Core::new(
            inner,
            self.holders().clone(),
            self.config.timeout,
            self.config.readiness,
        )
    }
}

fn share_in_range(share: f64) -> f64 {
    if share > 0.0 {
        share.min(1.0)
    } else {
        f64::MIN_POSITIVE
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
        f.debug_struct("CircuitBreakerLayer")
            .field("name", &self.name)
            .field("config", &self.config)
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

    /// A handle on the breaker.
    pub fn handle(&self) -> BreakerHandle
    where
        C: Clone,
    {
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
    layer: CircuitBreakerLayer<C>,
    key: KeyFn,
    breakers: Arc<OnceLock<Arc<Breakers<C>>>>,
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
            breakers: Arc::default(),
            ..self
        }
    }

    /// A handle on the breakers.
    pub fn handle(&self) -> KeyedBreakerHandle
    where
        C: Clone + Send + Sync + 'static,
    {
        KeyedBreakerHandle {
            breakers: self.breakers(),
        }
    }

    fn breakers(&self) -> Arc<Breakers<C>>
    where
        C: Clone,
    {
        let breakers = self.breakers.get_or_init(|| {
            Arc::new(Breakers::new(
                self.layer.config.max_keys,
                Settings::new(&self.layer.config),
                self.layer.on_change.clone(),
                self.layer.classify.clone(),
            ))
        });
        Arc::clone(breakers)
    }
}

impl<S, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<C> {
    type Service = KeyedCircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker::new(
            inner,
            self.breakers(),
            self.layer.config.timeout,
            Arc::clone(&self.key),
        )
    }
}

impl<C> std::fmt::Debug for KeyedCircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("config", &self.layer.config)
            .finish()
    }
}

/// A handle on one breaker: its figures, and manual control. Cheap to clone.
#[derive(Clone)]
pub struct BreakerHandle {
    breaker: Arc<Breaker>,
}

impl BreakerHandle {
    /// The state now.
    pub fn state(&self) -> State {
        self.breaker.state()
    }

    /// Its figures now.
    pub fn snapshot(&self) -> BreakerSnapshot {
        self.breaker.snapshot()
    }

    /// Refuses every call until [`Self::reset`].
    pub fn force_open(&self) {
        self.breaker.force(State::ForcedOpen);
    }

    /// Lets every call through, judging none, until [`Self::reset`].
    pub fn force_closed(&self) {
        self.breaker.force(State::ForcedClosed);
    }

    /// Back to closed, with an empty window and no backoff.
    pub fn reset(&self) {
        self.breaker.reset();
    }
}

impl std::fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// A handle on the breakers of a keyed layer. Cheap to clone.
#[derive(Clone)]
pub struct KeyedBreakerHandle {
    breakers: Arc<dyn Registry>,
}

impl KeyedBreakerHandle {
    /// The breaker of `key`, if it has one now.
    pub fn get(&self, key: &str) -> Option<BreakerHandle> {
        let breaker = self.breakers.get(key)?;
        Some(BreakerHandle { breaker })
    }

    /// Every breaker's figures, sorted by key.
    pub fn snapshot(&self) -> Vec<BreakerSnapshot> {
        let mut all: Vec<BreakerSnapshot> = self
            .breakers
            .all()
            .iter()
            .map(|breaker| breaker.snapshot())
            .collect();
        all.sort_by(|a, b| a.breaker.cmp(&b.breaker));
        all
    }
}

impl std::fmt::Debug for KeyedBreakerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.snapshot()).finish()
    }
}
