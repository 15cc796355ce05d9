//! [`AdaptiveLb`], its builder, and the handle on its upstreams.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;
use tower_layer::Layer;

use crate::balance::Balance;
use crate::clock::Moment;
use crate::config::{ActiveHealth, HostHeader, LbConfig, PassiveHealth, Policy, UpstreamConfig};
use crate::error::ConfigError;
use crate::pool::{Pool, UpstreamSnapshot};
use crate::service::Lb;
use crate::upstream::InFlight;

/// A load balancer over a client service: picks an upstream per request and sends the
/// request there. Cheap to clone; clones and every service they make share the upstreams.
///
/// Builder methods state their defaults, which are those of [`LbConfig`].
#[derive(Clone)]
pub struct AdaptiveLb {
    config: LbConfig,
    pool: Arc<OnceLock<Result<Arc<Pool>, ConfigError>>>,
}

impl AdaptiveLb {
    /// The adaptive policy with the origin's defaults (history 10, update every minute,
    /// alpha 0.3) over these upstreams (`http://10.0.0.1:8080`), each of weight 1. Fails on
    /// a URL that is not `scheme://authority`.
    pub fn new<I>(upstreams: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let config = LbConfig {
            upstreams: upstreams
                .into_iter()
                .map(|url| UpstreamConfig {
                    url: url.as_ref().to_string(),
                    weight: 1,
                })
                .collect(),
            ..LbConfig::default()
        };
        Self::from_config(&config)
    }

    /// A balancer from a configuration; the error names the bad field.
    pub fn from_config(config: &LbConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(AdaptiveLb {
            config: config.clone(),
            pool: Arc::default(),
        })
    }

    fn with(mut self, change: impl FnOnce(&mut LbConfig)) -> Self {
        change(&mut self.config);
        self.pool = Arc::default();
        self
    }

    /// The policy. Default [`Policy::Adaptive`] with its defaults.
    pub fn policy(self, policy: Policy) -> Result<Self, ConfigError> {
        let layer = self.with(|c| c.lb_policy = policy);
        layer.config.validate()?;
        Ok(layer)
    }

    /// `Host` of forwarded requests. Default [`HostHeader::Keep`].
    pub fn host(self, host: HostHeader) -> Self {
        self.with(|c| c.host = host)
    }

    /// Append `X-Forwarded-For`, set `X-Forwarded-Proto` and `-Host`. Default on.
    pub fn forwarded_headers(self, on: bool) -> Self {
        self.with(|c| c.forwarded_headers = on)
    }

    /// Times a request that failed to connect is sent to another upstream (idempotent
    /// methods with an empty body), at most 10. Default 1.
    pub fn retries(self, retries: u32) -> Self {
        self.with(|c| c.retries = retries.min(10))
    }

    /// Ramp of a new or returning upstream from 10 % of its weight to all of it. Default 30 s.
    pub fn slow_start(self, ramp: Duration) -> Self {
        self.with(|c| c.slow_start = ramp)
    }

    /// Passive health (ejection after failures in a row). Default [`PassiveHealth::default`].
    pub fn passive_health(self, passive: PassiveHealth) -> Result<Self, ConfigError> {
        let layer = self.with(|c| c.passive_health = passive);
        layer.config.validate()?;
        Ok(layer)
    }

    /// Active health checks through the client; they start with the first request. Default:
    /// none.
    pub fn health_check(self, check: ActiveHealth) -> Result<Self, ConfigError> {
        let layer = self.with(|c| c.health_check = Some(check));
        layer.config.validate()?;
        Ok(layer)
    }

    /// With every upstream unavailable, spread over all instead of answering 503. Default off.
    pub fn panic_mode(self, on: bool) -> Self {
        self.with(|c| c.panic_mode = on)
    }

    /// Seed of the random choices (tests, simulations). Default: from the OS.
    pub fn seed(self, seed: u64) -> Self {
        self.with(|c| c.seed = Some(seed))
    }

    /// The configuration in force.
    pub fn config(&self) -> &LbConfig {
        &self.config
    }

    /// The generic form: a balancer with this policy and these settings over the services of
    /// a `Discover` stream (tower's `ServiceList`, a channel of `Change`s, ...), for any
    /// request type. The configured URLs are not used; endpoints that are not ready (an open
    /// proxflow-breaker in readiness mode) get no traffic until they are.
    pub fn balance<D, Req>(&self, discover: D) -> Balance<D, Req>
    where
        D: tower::discover::Discover,
    {
        let config = LbConfig {
            upstreams: Vec::new(),
            ..self.config.clone()
        };
        match Pool::new(config) {
            Ok(pool) => Balance::new(discover, Arc::new(pool)),
            Err(error) => unreachable!("validated configuration refused: {error}"),
        }
    }

    /// A handle to add, remove and drain upstreams, and to read their figures.
    pub fn handle(&self) -> LbHandle {
        LbHandle { pool: self.pool() }
    }

    fn pool(&self) -> Arc<Pool> {
        let pool = self
            .pool
            .get_or_init(|| Pool::new(self.config.clone()).map(Arc::new));
        match pool {
            Ok(pool) => Arc::clone(pool),
            // `from_config` and the fallible builder methods validated the configuration.
            Err(error) => unreachable!("validated configuration refused: {error}"),
        }
    }
}

impl std::fmt::Debug for AdaptiveLb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveLb")
            .field("config", &self.config)
            .finish()
    }
}

impl<S> Layer<S> for AdaptiveLb {
    type Service = Lb<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Lb::new(inner, self.pool())
    }
}

/// Changes and figures of a balancer's upstreams. Cheap to clone.
#[derive(Clone)]
pub struct LbHandle {
    pool: Arc<Pool>,
}

impl LbHandle {
    pub(crate) fn new(pool: Arc<Pool>) -> LbHandle {
        LbHandle { pool }
    }
}

/// The figures of a balancer; serializes to JSON.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LbSnapshot {
    /// The policy's name.
    pub policy: &'static str,
    /// Each upstream, in the order they were added.
    pub upstreams: Vec<UpstreamSnapshot>,
}

impl LbHandle {
    /// Adds an upstream; it ramps up over `slow_start`. `Ok(false)` if it is there already.
    pub fn add(&self, url: &str, weight: u32) -> Result<bool, ConfigError> {
        self.pool.add(url, weight)
    }

    /// Removes an upstream at once; its requests in flight finish. False if unknown.
    pub fn remove(&self, url: &str) -> bool {
        self.pool.remove(url)
    }

    /// Sends no new request to an upstream; remove it once its in-flight count is 0.
    /// False if unknown.
    pub fn drain(&self, url: &str) -> bool {
        self.pool.drain(url)
    }

    /// Picks an upstream as a request would, for traffic the balancer does not send itself (a
    /// WebSocket or gRPC connection of your own client): the [`Pick`] counts as in flight
    /// until it is finished with its outcome, so the policy and passive health see that
    /// traffic too. `key` is the hashing policies' key (a client address, a header value).
    /// `None` when no upstream is available.
    pub fn pick(&self, key: Option<&[u8]>) -> Option<Pick> {
        let started = Moment::now();
        let upstream = self.pool.pick(started, key, &[])?;
        Some(Pick {
            in_flight: InFlight::new(upstream),
            started,
        })
    }

    /// The figures now.
    pub fn snapshot(&self) -> LbSnapshot {
        LbSnapshot {
            policy: policy_name(&self.pool.config.lb_policy),
            upstreams: self.pool.snapshot(Moment::now()),
        }
    }
}

impl std::fmt::Debug for LbHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// An upstream chosen by [`LbHandle::pick`], in flight until finished (or dropped, which
/// records nothing).
pub struct Pick {
    started: Moment,
    in_flight: InFlight,
}

impl Pick {
    /// `scheme://authority` of the chosen upstream.
    pub fn upstream(&self) -> &str {
        &self.in_flight.upstream().name
    }

    /// The request ended: its latency (from the pick) and whether it failed count as a
    /// balanced request's would.
    pub fn finish(self, failed: bool) {
        let ended = Moment::now();
        self.in_flight
            .upstream()
            .answered(self.started, ended, failed);
    }
}

impl std::fmt::Debug for Pick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pick")
            .field("upstream", &self.upstream())
            .finish()
    }
}

fn policy_name(policy: &Policy) -> &'static str {
    match policy {
        Policy::RoundRobin => "round_robin",
        Policy::WeightedRoundRobin => "weighted_round_robin",
        Policy::Random => "random",
        Policy::LeastRequest => "least_request",
        Policy::PeakEwma { .. } => "peak_ewma",
        Policy::IpHash => "ip_hash",
        Policy::HeaderHash { .. } => "header_hash",
        Policy::Adaptive(_) => "adaptive",
    }
}
