//! Load balancing as a Tower layer over any HTTP client service: the adaptive
//! exponential-smoothing policy of the origin proxy, the classic policies, passive ejection,
//! active health checks, slow start, retries of refused connections, and a handle to change
//! and watch the upstreams at run time.
//!
//! A balancer from a configuration file, in the origin's names ([`LbConfig`] lists them all):
//!
//! ```
//! use proxflow_lb::{AdaptiveLb, LbConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config: LbConfig = serde_yaml::from_str(
//!     "
//! upstreams:
//!   - url: http://10.0.0.1:8080
//!   - url: http://10.0.0.2:8080
//!     weight: 2
//! lb_policy:
//!   adaptive: { history_length: 10, update_interval: 1m, alpha: 0.3 }
//! health_check: { path: /health, interval: 10s }
//! slow_start: 30s
//! ",
//! )?;
//! let lb = AdaptiveLb::from_config(&config)?;
//! assert_eq!(lb.handle().snapshot().upstreams[1].static_weight, 2);
//!
//! // A bad value is refused with the field it came from.
//! let bad: LbConfig = serde_yaml::from_str("lb_policy: {adaptive: {alpha: 2}}")?;
//! let error = AdaptiveLb::from_config(&bad).unwrap_err();
//! assert_eq!(error.field, "alpha");
//! # Ok(()) }
//! ```
//!
//! The same in code, in front of a client service:
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use proxflow_lb::{AdaptiveConfig, AdaptiveLb, Policy, Upstream};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lb = AdaptiveLb::new([
//!     Upstream::from_static("http://10.0.0.1:8080"),
//!     Upstream::from_static("http://10.0.0.2:8080").weight(2),
//! ])
//! .policy(Policy::Adaptive(AdaptiveConfig {
//!     alpha: 0.5,
//!     ..AdaptiveConfig::default()
//! }));
//! let handle = lb.handle();
//! // Any client service: hyper-util's `Client` in a real gateway.
//! let client = tower::service_fn(|request: Request<String>| async move {
//!     Ok::<_, Infallible>(Response::new(format!("{}", request.uri())))
//! });
//! let service = ServiceBuilder::new().layer(lb).service(client);
//! let response = service.oneshot(Request::new(String::new())).await?;
//! assert!(response.status().is_success());
//! assert_eq!(handle.snapshot().upstreams.iter().map(|u| u.requests).sum::<u64>(), 1);
//! # Ok(()) }
//! ```
//!
//! - **Forwarding.** The chosen upstream's scheme and authority replace the URI's (path and
//!   query kept); `Host` is kept or set to the upstream ([`HostHeader`]); `X-Forwarded-For`
//!   is appended and `X-Forwarded-Proto`/`-Host` set (on by default); hop-by-hop fields are
//!   dropped both ways. A refused connection is tried again on another upstream
//!   ([`AdaptiveLb::retries`]: idempotent methods with an empty body of a type the balancer
//!   can make again; hyper's `Incoming` is not one, so its requests are not retried). An
//!   upstream that fails is answered `502` (the error in the [`UpstreamFailed`] extension); no
//!   available upstream `503` with `Retry-After` ([`AdaptiveLb`] says which value). Request and response bodies stream through untouched.
//! - **The adaptive policy.** Two signals, one fast and one smoothed, set each upstream's
//!   weight; two candidates are drawn by weight and the one with the lower live load ×
//!   (in flight + 1) / weight wins (weighted power of two choices).
//!   - *Live, from the first answer:* every answer updates a peak-EWMA latency estimate (a
//!     slower answer sets it at once, faster ones pull it down over 10 s; a failure raises it
//!     when it took longer, a timeout or a dropped request, and never lowers it) and a failure
//!     ratio over about the last 16 answers. The live load is the estimate ×
//!     `1 + failure_penalty × failure ratio`. Each thread's weights follow it every 100 ms, so
//!     an upstream that slows down, stalls or fails fast loses traffic within a moment.
//!   - *Smoothed, every `update_interval`:* each upstream's load sample joins a history of
//!     `history_length`; the prediction is its exponential smoothing with `alpha`. The sample
//!     (`load`): the mean latency of the answers, a failure counting at least as long as the
//!     mean success (default), time-averaged concurrency, or the request count, each ×
//!     `1 + failure_penalty × failure ratio`. An interval where every answer failed scores its
//!     own latency or the pool's mean, whichever is higher, fully penalised; one without answers
//!     gives the mean of the others, so that the upstream is tried again.
//!   - *The weight* is inverse to the worse of the two, each relative to its median over the
//!     pool, normalised to a mean of 1 (within 1/100..100): the live load takes traffic away at
//!     once, and the history gives it back at its own pace.
//!
//!   What each parameter changes: `update_interval` (default 1 min) is how often the history
//!   learns, and so how soon an upstream that was slow and is fast again regains its share;
//!   `history_length` (10) and `alpha` (0.3) how much one interval weighs against the earlier
//!   ones (a higher `alpha` forgives faster); `failure_penalty` (4) how much a failed answer
//!   weighs, in the live load and in the sample; `load` what a sample measures. None of them
//!   delays the reaction to a degrading upstream, which the live load carries.
//! - **Classic policies.** Round robin, smooth weighted round robin, random, least request,
//!   peak EWMA, and weighted rendezvous hashing by client address or header (a key moves only
//!   when its upstream leaves, or to a better-scoring upstream that joins).
//! - **Cancellation.** A request dropped before its answer (a timeout outside the balancer, a
//!   client that went away) counts as a failed answer at its elapsed time: it raises its
//!   upstream's latency estimate and the interval's sample, so a stalled upstream never looks
//!   idle; for passive ejection it counts once it waited `stall_after` (1 s), so clients that
//!   leave do not eject healthy upstreams.
//! - **Availability.** Passive ejection after `consecutive_failures` (connection errors or
//!   502/503/504), doubling per ejection in a row; active checks (`GET /health`, thresholds
//!   3 down / 2 up) started with the first request; draining. An upstream new or back from
//!   ejection has no history and ramps from 10 % over `slow_start`. With none available, 503,
//!   or with `panic_mode` all of them.
//! - **Monitoring.** [`LbHandle::snapshot`] lists per upstream its weight, adaptive weight,
//!   predicted load, history, live load, failure ratio, share of the last interval's
//!   requests, in-flight, requests, failures, latency EWMA and health (how to read them: the
//!   [`UpstreamSnapshot`] fields); a `metrics` feature; `tracing` on prediction updates
//!   (debug) and ejections (warn).
//! - **Generic form.** [`AdaptiveLb::balance`] balances any tower services from a `Discover`
//!   stream with the same policies; an endpoint that is not ready (an open proxflow-breaker in
//!   readiness mode) gets weight 0 until it is.
//!
//! **The client address** that `ip_hash` hashes and `X-Forwarded-For` appends is read as
//! every proxflow layer reads it ([`proxflow_core::client::peer_addr`]): a [`ClientAddr`]
//! extension (what a plain hyper server inserts per connection), axum's
//! `ConnectInfo<SocketAddr>` (`into_make_service_with_connect_info`, `axum` feature), or a
//! bare `SocketAddr` extension. Without any, `ip_hash` spreads requests at random.
//!
//! **Time** is read only through the [`Clock`] given to [`AdaptiveLb::clock`]: the CPU's
//! time-stamp counter by default. Tests and simulations on tokio's paused time pass
//! [`Clock::tokio`], made inside the paused runtime:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use std::time::Duration;
//! use proxflow_lb::{AdaptiveLb, Clock, Upstream};
//!
//! let lb = AdaptiveLb::new([Upstream::from_static("http://10.0.0.1:8080")])
//!     .clock(Clock::tokio());
//! let handle = lb.handle();
//! let pick = handle.pick(None).unwrap();
//! tokio::time::advance(Duration::from_millis(250)).await;
//! pick.finish(false);
//! assert_eq!(handle.snapshot().upstreams[0].latency_ewma_ms, 250.0);
//! # }
//! ```

mod active;
mod backend;
mod balance;
mod config;
mod error;
mod handle;
mod layer;
mod passive;
mod policy;
mod pool;
mod proxy;
mod service;
mod settings;
mod upstream;

pub use backend::Health;
pub use balance::{Balance, BalanceFuture};
pub use config::{
    ActiveHealth, AdaptiveConfig, HostHeader, LbConfig, LoadMetric, PassiveHealth, Policy,
    UpstreamConfig, MAX_RETRIES,
};
pub use error::{NoUpstream, UpstreamFailed};
pub use handle::{LbHandle, LbSnapshot, Pick, UpstreamSnapshot};
pub use layer::AdaptiveLb;
pub use proxflow_core::{BoxError, ClientAddr, Clock, ConfigError, LayerBody};
pub use service::{Lb, ResponseFuture};
pub use upstream::{Upstream, MAX_WEIGHT};
