//! [`AdaptiveLb`] and its builder.

use std::sync::Arc;
use std::time::Duration;

use proxflow_core::{Clock, ConfigError};
use tower_layer::Layer;

use crate::balance::Balance;
use crate::config::{check_retries, ActiveHealth, HostHeader, LbConfig, PassiveHealth, Policy};
use crate::handle::LbHandle;
use crate::pool::Pool;
use crate::service::Lb;
use crate::settings::Draft;
use crate::upstream::Upstream;

/// A load balancer over a client service: picks an upstream per request and sends the
/// request there.
///
/// Builder methods state their defaults, which are those of [`LbConfig`].
///
/// # Its own answers
///
/// The balancer never fails: where no upstream answers, it answers itself, with a short
/// plain-text body and a `warn` log line.
///
/// - **503 Service Unavailable** when no upstream is available (all ejected, failing their
///   health checks, drained, or none at all). It carries `Retry-After`: the whole seconds
///   until the first ejected upstream returns, rounded up, or 1 when none is ejected (nothing
///   says when a drained or failing upstream comes back; nginx sends none). Extension:
///   [`NoUpstream`].
/// - **502 Bad Gateway** when an upstream failed: a connection refused once
///   [`retries`](Self::retries) are spent (or when the request cannot be retried), an answer
///   that is not HTTP, a connection reset or closed before the answer, as nginx answers them.
///   Extension: [`UpstreamFailed`], with the error and the upstreams tried. Only a refused
///   connection is retried (the others may have reached the upstream, which may have acted on
///   it); each counts as a failure for passive health.
///
/// The balancer sets no deadline of its own: an upstream that never answers is cut off by a
/// timeout outside it (tower-http's `TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT,
/// ..)`, or the client's own deadline). The request then dropped counts as a failure of its
/// upstream at its elapsed time, so that the upstream is avoided and, after
/// `consecutive_failures` of them, ejected.
///
/// [`NoUpstream`]: crate::NoUpstream
/// [`UpstreamFailed`]: crate::UpstreamFailed
///
/// Cheap to clone. Clones, the services they make and their [`LbHandle`]s share one set of
/// upstreams and one set of settings: a builder call on any clone configures them all, and a
/// handle taken before later builder calls watches the balancer they configured. The settings
/// are fixed when the balancer first serves: its first [`layer`](Layer::layer), or the first
/// [`LbHandle::pick`]. A builder call after that panics, so that no service runs on settings
/// that another one no longer has.
#[derive(Clone)]
pub struct AdaptiveLb {
    pool: Arc<Pool>,
}

impl AdaptiveLb {
    /// The adaptive policy with the origin's defaults (history 10, update every minute,
    /// alpha 0.3) over these upstreams: [`Upstream`]s, or socket addresses (`http://`).
    ///
    /// None at all is allowed, for upstreams that come at run time through
    /// [`LbHandle::add`]: until then every request is answered 503 with `Retry-After: 1`.
    ///
    /// ```
    /// use proxflow_lb::{AdaptiveLb, Upstream};
    ///
    /// let lb = AdaptiveLb::new([
    ///     Upstream::from_static("http://10.0.0.1:8080"),
    ///     Upstream::from_static("http://10.0.0.2:8080").weight(2),
    /// ]);
    /// let local = AdaptiveLb::new([std::net::SocketAddr::from(([127, 0, 0, 1], 3000))]);
    /// # drop((lb, local));
    /// ```
    pub fn new<I>(upstreams: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Upstream>,
    {
        let upstreams = upstreams.into_iter().map(Into::into).collect();
        AdaptiveLb {
            pool: Arc::new(Pool::new(Draft::new(&LbConfig::default()), upstreams)),
        }
    }

    /// A balancer from a configuration read from untrusted text; the error names the bad
    /// field and says what is allowed. On the TSC clock (see [`AdaptiveLb::clock`]).
    pub fn from_config(config: &LbConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let upstreams = config.upstreams()?;
        Ok(AdaptiveLb {
            pool: Arc::new(Pool::new(Draft::new(config), upstreams)),
        })
    }

    fn change(self, method: &str, change: impl FnOnce(&mut Draft)) -> Self {
        self.pool.settings.change(method, change);
        self
    }

    /// The policy. Default [`Policy::Adaptive`] with its defaults.
    ///
    /// # Panics
    ///
    /// If a setting of the policy is out of its range ([`Policy::validate`] says which), or if
    /// the balancer serves already.
    pub fn policy(self, policy: Policy) -> Self {
        refuse("AdaptiveLb::policy", policy.validate());
        self.change("AdaptiveLb::policy", |draft| draft.policy = policy)
    }

    /// `Host` of forwarded requests. Default [`HostHeader::Keep`].
    ///
    /// # Panics
    ///
    /// If the balancer serves already.
    pub fn host(self, host: HostHeader) -> Self {
        self.change("AdaptiveLb::host", |draft| draft.host = host)
    }

    /// Append `X-Forwarded-For`, set `X-Forwarded-Proto` and `-Host`. Default on.
    ///
    /// # Panics
    ///
    /// If the balancer serves already.
    pub fn forwarded_headers(self, on: bool) -> Self {
        self.change("AdaptiveLb::forwarded_headers", |draft| {
            draft.forwarded_headers = on
        })
    }

    /// Times a request that failed to connect is sent to another upstream. Default 1.
    ///
    /// Only requests that surely never reached an upstream (the connection was refused or
    /// unreachable), with an idempotent method and an empty body, are sent again. The
    /// balancer needs a second, empty body of the request's type for that; it makes one for
    /// axum's `Body` (with the `axum` feature), `String`, and http-body-util's `Empty<Bytes>`
    /// and `Full<Bytes>`. A request with any other body type (hyper's `Incoming` has no empty
    /// value a library can make) is not retried: its failure is answered `502`.
    ///
    /// # Panics
    ///
    /// If `retries` is above [`MAX_RETRIES`](crate::MAX_RETRIES), or if the balancer serves
    /// already.
    pub fn retries(self, retries: u32) -> Self {
        if let Err(reason) = check_retries(retries) {
            panic!("AdaptiveLb::retries: {reason}");
        }
        self.change("AdaptiveLb::retries", |draft| draft.retries = retries)
    }

    /// Ramp of a new or returning upstream from 10 % of its weight to all of it; zero turns
    /// it off. Default 30 s.
    ///
    /// # Panics
    ///
    /// If the balancer serves already.
    pub fn slow_start(self, ramp: Duration) -> Self {
        self.change("AdaptiveLb::slow_start", |draft| draft.slow_start = ramp)
    }

    /// Passive health (ejection after failures in a row). Default [`PassiveHealth::default`].
    ///
    /// # Panics
    ///
    /// If `max_ejection` is below `base_ejection`, or if the balancer serves already.
    pub fn passive_health(self, passive: PassiveHealth) -> Self {
        refuse("AdaptiveLb::passive_health", passive.validate());
        self.change("AdaptiveLb::passive_health", |draft| {
            draft.passive = passive
        })
    }

    /// Active health checks through the client; they start with the first request. Default:
    /// none.
    ///
    /// A probe is a `GET` with an empty body of the client's request body type, which the
    /// balancer makes for the types listed under [`AdaptiveLb::retries`]; with another body
    /// type the checks do not run (a warning says so).
    ///
    /// # Panics
    ///
    /// If a setting is out of its range ([`ActiveHealth::validate`] says which), or if the
    /// balancer serves already.
    pub fn health_check(self, check: ActiveHealth) -> Self {
        refuse("AdaptiveLb::health_check", check.validate());
        self.change("AdaptiveLb::health_check", |draft| {
            draft.health_check = Some(check)
        })
    }

    /// With every upstream unavailable, spread over all instead of answering 503. Default off.
    ///
    /// # Panics
    ///
    /// If the balancer serves already.
    pub fn panic_mode(self, on: bool) -> Self {
        self.change("AdaptiveLb::panic_mode", |draft| draft.panic_mode = on)
    }

    /// Seed of the random choices (tests, simulations). Default: from the OS.
    ///
    /// # Panics
    ///
    /// If the balancer serves already.
    pub fn seed(self, seed: u64) -> Self {
        self.change("AdaptiveLb::seed", |draft| draft.seed = Some(seed))
    }

    /// The clock every pick and answer reads. Default [`Clock::tsc`]. Tests and simulations
    /// that run on tokio's paused time give [`Clock::tokio`], made inside the paused runtime.
    ///
    /// # Panics
    ///
    /// If the balancer serves already.
    pub fn clock(self, clock: Clock) -> Self {
        self.change("AdaptiveLb::clock", |draft| draft.clock = clock)
    }

    /// The generic form: a balancer with this policy and these settings over the services of
    /// a `Discover` stream (tower's `ServiceList`, a channel of `Change`s, ...), for any
    /// request type. The upstreams of this balancer are not used; endpoints that are not ready
    /// (an open proxflow-breaker in readiness mode) get no traffic until they are. It has
    /// upstreams and settings of its own: [`Balance::handle`] watches it.
    pub fn balance<D, Req>(&self, discover: D) -> Balance<D, Req>
    where
        D: tower::discover::Discover,
    {
        let pool = Pool::new(self.pool.settings.draft(), Vec::new());
        Balance::new(discover, Arc::new(pool))
    }

    /// A handle to add, remove and drain upstreams, and to read their figures.
    pub fn handle(&self) -> LbHandle {
        LbHandle::new(Arc::clone(&self.pool))
    }
}

/// Panics with the method's name if `checked` is an error.
fn refuse(method: &str, checked: Result<(), ConfigError>) {
    if let Err(error) = checked {
        panic!("{method}: {error}");
    }
}

impl std::fmt::Debug for AdaptiveLb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveLb")
            .field("settings", &self.pool.settings.draft())
            .field("upstreams", &self.pool.list().len())
            .finish()
    }
}

impl<S> Layer<S> for AdaptiveLb {
    type Service = Lb<S>;

    /// The balancer's service over `inner`; fixes the settings.
    fn layer(&self, inner: S) -> Self::Service {
        self.pool.running();
        Lb::new(inner, Arc::clone(&self.pool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_calls_configure_the_same_balancer() {
        let lb = AdaptiveLb::new([Upstream::from_static("http://a:1")]);
        let handle = lb.handle();
        let lb = lb.policy(Policy::RoundRobin).retries(3);
        assert_eq!(handle.snapshot().policy, "round_robin");
        assert_eq!(lb.pool.settings.draft().retries, 3);
        assert!(lb.pool.settings.get().is_none(), "not fixed yet");
        let _service = lb.layer(());
        assert!(lb.pool.settings.get().is_some(), "fixed by `layer`");
    }

    #[test]
    #[should_panic(expected = "AdaptiveLb::retries: at most 10; got 11")]
    fn too_many_retries_panic_at_the_call() {
        let _ = AdaptiveLb::new(Vec::<Upstream>::new()).retries(11);
    }

    #[test]
    #[should_panic(expected = "AdaptiveLb::policy: `alpha`: in (0, 1], e.g. 0.3; got 0")]
    fn a_bad_policy_panics_at_the_call() {
        let policy = Policy::Adaptive(crate::AdaptiveConfig {
            alpha: 0.0,
            ..Default::default()
        });
        let _ = AdaptiveLb::new(Vec::<Upstream>::new()).policy(policy);
    }

    #[test]
    #[should_panic(expected = "AdaptiveLb::seed: the balancer serves already")]
    fn a_builder_call_after_serving_panics() {
        let lb = AdaptiveLb::new(Vec::<Upstream>::new());
        let _service = lb.layer(());
        let _ = lb.seed(1);
    }
}
