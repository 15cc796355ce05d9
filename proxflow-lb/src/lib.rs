//! Load balancing as a Tower layer over any HTTP client service: the adaptive
//! exponential-smoothing policy of the origin proxy, the classic policies, passive ejection,
//! active health checks, slow start, retries of failed connections, and a handle to change
//! and watch the upstreams at run time.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use proxflow_lb::{AdaptiveLb, Policy};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lb = AdaptiveLb::new(["http://10.0.0.1:8080", "http://10.0.0.2:8080"])?;
//! let handle = lb.handle();
//! // Any client service: hyper-util's `Client` in a real gateway.
//! let client = tower::service_fn(|request: Request<String>| async move {
//!     Ok::<_, Infallible>(Response::new(format!("{}", request.uri())))
//! });
//! let service = ServiceBuilder::new().layer(lb).service(client);
//! let response = service.oneshot(Request::new(String::new())).await?;
//! assert!(response.status().is_success());
//! assert_eq!(handle.snapshot().upstreams.len(), 2);
//! # Ok(()) }
//! ```
//!
//! - **Forwarding.** The chosen upstream's scheme and authority replace the URI's (path and
//!   query kept); `Host` is kept or set to the upstream ([`HostHeader`]); `X-Forwarded-For`
//!   is appended and `X-Forwarded-Proto`/`-Host` set (on by default). A connection error is
//!   tried again on another upstream (`retries`, default 1; idempotent methods with an empty
//!   body). A client error is answered `502` (the error in the [`UpstreamFailed`] extension);
//!   no available upstream is `503`.
//! - **The adaptive policy.** Every `update_interval`, each upstream's load sample joins a
//!   history of `history_length`; the prediction is its exponential smoothing with `alpha`;
//!   weights are 1 / prediction, normalised to a mean of 1 (within 1/100..100). The sample
//!   (`load`): the mean latency of the successful answers (default; it won the evaluation in
//!   benches/RESULTS.md), time-averaged concurrency, or the request count, each × `1 +
//!   failure_penalty × failure ratio`. An interval where every answer failed scores the pool's
//!   mean, fully penalised; one without answers gives the mean of the others, so that the
//!   upstream is tried again. Between updates, picks are weighted power of two choices by
//!   peak-EWMA latency × (in flight + 1) / weight, so a backend that slows down or stalls
//!   mid-interval loses traffic at once.
//! - **Classic policies.** Round robin, smooth weighted round robin, random, least request,
//!   peak EWMA, and weighted rendezvous hashing by client address or header (a key moves only
//!   when its upstream leaves, or to a better-scoring upstream that joins).
//! - **Availability.** Passive ejection after `consecutive_failures` (connection errors or
//!   502/503/504), doubling per ejection in a row; active checks (`GET /health`, thresholds
//!   3 down / 2 up) started with the first request; draining. An upstream new or back from
//!   ejection has no history and ramps from 10 % over `slow_start`. With none available, 503,
//!   or with `panic_mode` all of them.
//! - **Monitoring.** [`LbHandle::snapshot`] lists per upstream its weight, adaptive weight,
//!   predicted load, history, in-flight, requests, failures, latency EWMA and health; a
//!   `metrics` feature; `tracing` on weight updates (debug) and ejections (warn).
//!
//! - **Generic form.** [`AdaptiveLb::balance`] balances any tower services from a `Discover`
//!   stream with the same policies; an endpoint that is not ready (an open proxflow-breaker in
//!   readiness mode) gets weight 0 until it is.
//!
//! Time is the CPU's time-stamp counter (through quanta, as governor reads it), about half the
//! cost of `Instant::now` on the benchmark machine; every pick and answer reads it. Tests and
//! simulations that drive the balancer with tokio's paused time (`tokio::time::pause`,
//! `advance`, `start_paused`) enable the `test-util` feature, which makes it read tokio's
//! clock:
//!
//! ```toml
//! [dev-dependencies]
//! proxflow-lb = { version = "*", features = ["test-util"] }
//! ```

mod adaptive;
mod balance;
mod body;
mod clock;
mod config;
mod error;
mod health;
mod layer;
mod pool;
mod service;
mod upstream;

pub use balance::{Balance, BalanceFuture};
pub use body::LbBody;
pub use config::{
    ActiveHealth, AdaptiveConfig, HostHeader, LbConfig, LoadMetric, PassiveHealth, Policy,
    UpstreamConfig,
};
pub use error::{ConfigError, NoUpstream, UpstreamFailed};
pub use layer::{AdaptiveLb, LbHandle, LbSnapshot, Pick};
pub use pool::UpstreamSnapshot;
pub use service::{BoxError, Lb, ResponseFuture};
pub use upstream::Health;
