//! A circuit breaker as a Tower layer, with the state no other breaker has: after the half-open
//! probes succeed, traffic ramps up from a floor share to all of it instead of flooding a
//! backend that just came back, as fast as the admitted calls show the backend can take.
//!
//! From a configuration file, in the origin's names (see [`BreakerConfig`] for every field):
//!
//! ```
//! use axum::{routing::get, Router};
//! use proxflow_breaker::{BreakerConfig, CircuitBreakerLayer, State};
//!
//! let yaml = r#"
//! failure_threshold: 0.5      # 50 % failures (5xx, errors, timeouts)
//! latency_threshold: 5s       # or 50 % slow calls
//! min_requests: 10            # with 10 calls in the window
//! evaluation_window: 60s
//! recovery_timeout: 60s       # open 60 s (x2 per trip in a row)
//! half_open_max_requests: 3   # then 3 probes
//! ramp_up_duration: 30s       # then 10 % -> 100 %, 30 s at the longest
//! timeout: 10s                # 504 after 10 s, a failure
//! "#;
//! let config: BreakerConfig = serde_yaml::from_str(yaml)?;
//! let breaker = CircuitBreakerLayer::from_config(&config)?; // the error names a bad field
//! let handle = breaker.handle();
//! let app: Router = Router::new()
//!     .route("/api/orders", get(|| async { "orders" }))
//!     .layer(breaker);
//! assert_eq!(handle.state(), State::Closed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The same with the builder, whose methods panic on a value out of range:
//!
//! ```
//! use std::time::Duration;
//! use proxflow_breaker::{CircuitBreakerLayer, RampUpMode};
//!
//! let breaker = CircuitBreakerLayer::new() // the origin's defaults, as `{}` gives
//!     .failure_threshold(0.5)
//!     .latency_threshold(Duration::from_secs(5))
//!     .min_requests(10)
//!     .evaluation_window(Duration::from_secs(60))
//!     .recovery_timeout(Duration::from_secs(60))
//!     .half_open_max_requests(3)
//!     .ramp_up_duration(Duration::from_secs(30))
//!     .ramp_up_mode(RampUpMode::Adaptive) // the default; `Time` is the origin's ramp
//!     .timeout(Duration::from_secs(10));
//! # let _ = breaker;
//! ```
//!
//! - **States.** Closed (all pass, outcomes counted) → Open (all refused: 503 with
//!   `Retry-After` and the [`Refusal`] in the response's extensions, or
//!   [`BreakerError::Open`]) → HalfOpen (at most `half_open_max_requests` probes; any failure
//!   or slow probe reopens) → RampUp → Closed. Each trip in a row multiplies the open time
//!   by `recovery_backoff` (up to `max_recovery_timeout`); `backoff_reset` closed resets it.
//! - **Ramp-up.** The admitted share starts at `ramp_up_floor` (10 %) and listens to the
//!   backend ([`RampUpMode::Adaptive`], the default). Steps of `ramp_up_step` (100 ms; at
//!   least four usual latencies and `min_requests` calls) judge the calls that ended in them
//!   against the *usual latency*, the mean of the fast successes while closed before the trip
//!   (without one, `latency_threshold`). A healthy step multiplies the share by
//!   `ramp_up_growth` (1.2); a mean latency over the usual × (1 + `ramp_up_latency_tolerance`,
//!   0.2) holds it, or if fewer calls ended than started (a queue grows) takes it back under
//!   what the backend served; a failure or slow-call rate at a quarter of its threshold halves
//!   it, before the threshold is reached. The share never falls below the time-only ramp
//!   (`ramp_up_floor` to 100 % over `ramp_up_duration`, shaped by `ramp_up_aggression`)
//!   except after a halving, which delays it: without failures the ramp takes
//!   `ramp_up_duration` at the longest, and as little as two seconds when the backend keeps
//!   up. [`RampUpMode::Time`] is the origin's open-loop ramp. Admission is deterministic error
//!   diffusion, so the admitted count stays within one call of the sum of the shares; only
//!   the window's thresholds, as in every state, reopen the circuit.
//! - **Judging.** A [`Classify`] decides success, failure or ignored (default: errors and
//!   5xx fail); a call at least `latency_threshold` long is slow. The rates are taken over a
//!   time-bucketed sliding window (20 buckets, O(1) per call, no allocation per call).
//!   Outcomes of calls admitted in an earlier state are not counted; a call dropped before it
//!   ends (a timeout outside the breaker, a client gone) counts as a timeout, a failure, once
//!   it has run `latency_threshold`, and is ignored before that; either way it frees its probe
//!   place.
//! - **Closed path.** Admission is one atomic load (no lock, no clock). A call that succeeds
//!   faster than `latency_threshold` (or is ignored) is counted in its thread's own slot, with
//!   no lock, while no run of such calls could change the state (none can trip a window that
//!   already holds `min_requests` calls below the thresholds, and no bucket leaves the window
//!   before the current one ends); one such success in sixteen also adds its latency to the
//!   slot, for the usual latency the ramp-up judges by. Any other call is judged under the
//!   breaker's mutex, which first takes in the slots' counts. So every call is judged as if
//!   recorded in turn. The latency takes two clock readings per call (see **Time**).
//! - **Forms.** [`CircuitBreakerLayer`] (HTTP), [`CircuitBreakerLayer::generic`] (any
//!   service; errors are [`BreakerError`]), [`CircuitBreakerLayer::keyed`] (one breaker per
//!   authority or custom key, at most `max_keys`). With `readiness(true)` an open breaker makes
//!   `poll_ready` wait instead of refusing, so balancers route around it.
//! - **Control and observability.** [`BreakerHandle`]: state, [`BreakerSnapshot`] (rates,
//!   counts, time in state, the admitted share, the usual latency), force open, force closed,
//!   reset; a state-change callback; `tracing` events (warn on opening); a `metrics` feature.
//!   A handle taken before later builder calls controls the breaker that serves.
//! - **Time.** The breaker reads only the [`Clock`](proxflow_core::Clock) given to
//!   [`CircuitBreakerLayer::clock`] (default: the CPU's time-stamp counter). A call's latency
//!   is the difference of two readings, at its start and at its end, so a reading's cost is
//!   part of every call's. By default the breaker reads the clock's coarse form: a thread
//!   (named `proxflow-clock`, one per process, running while a coarse clock exists) stores a
//!   reading of the counter every millisecond, and a reading is one atomic load, the cached
//!   time nginx's and Envoy's event loops keep. Latencies are then known to about a
//!   millisecond. With `precise_clock(true)`, or a `latency_threshold` under 100 ms, each
//!   reading reads the counter itself. Tests drive the breaker with tokio's paused time by
//!   giving it tokio's clock:
//!
//!   ```
//!   # #[tokio::main(flavor = "current_thread", start_paused = true)]
//!   # async fn main() {
//!   use std::time::Duration;
//!   use proxflow_breaker::{CircuitBreakerLayer, State};
//!   use proxflow_core::Clock;
//!
//!   let breaker = CircuitBreakerLayer::new().clock(Clock::tokio()); // inside the paused runtime
//!   let handle = breaker.handle();
//!   handle.force_open();
//!   tokio::time::advance(Duration::from_secs(5)).await;
//!   assert_eq!(handle.snapshot().time_in_state_ms, 5_000);
//!   # }
//!   ```

#[macro_use]
mod macros;

mod breaker;
mod classify;
mod config;
mod error;
mod future;
mod handle;
mod keyed;
mod layer;
mod machine;
mod ramp;
mod service;
mod shared;
mod stripes;
mod window;

pub use breaker::{BreakerSnapshot, StateChange, Totals};
pub use classify::{Classify, ErrorClassifier, StatusClassifier};
pub use config::{BreakerConfig, RampUpMode};
pub use error::BreakerError;
pub use handle::{BreakerHandle, KeyedBreakerHandle};
pub use keyed::{KeyedCircuitBreaker, NO_KEY};
pub use layer::{CircuitBreakerLayer, GenericCircuitBreakerLayer, KeyedCircuitBreakerLayer};
pub use machine::{Outcome, Refusal, State};
pub use proxflow_core::ConfigError;
pub use service::{
    CallTimedOut, CircuitBreaker, GenericCircuitBreaker, GenericFuture, ResponseFuture,
};
