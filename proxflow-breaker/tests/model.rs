//! The breaker against a reference model, through the public generic layer under paused tokio
//! time.
//!
//! Random operations (advance the clock, start a call, end an in-flight call as a success, a
//! failure, a slow success or an ignored call, drop an in-flight call, bursts of calls) are
//! applied both to a `GenericCircuitBreakerLayer` over a `service_fn` whose calls the test ends
//! by hand, and to [`Model`], a plain transcription of the documented machine (lib.rs,
//! machine.rs, window.rs, config.rs). After every operation:
//!
//! - (a) no more than `half_open_max_requests` calls admitted in the current half-open period are
//!   in flight;
//! - (b) the state-change callback only ever reports the documented edges, one after the other
//!   (so Open never reaches Closed without HalfOpen and RampUp);
//! - (c) in ramp-up, the admitted share over every run of >= 20 decisions is within 5 points (or
//!   one call) of the mean target share, and the admitted count never strays a whole call from
//!   the sum of the target shares. The target is floor + (1 - floor) × progress with the
//!   time-only ramp (`ramp_up_mode: time`); with the adaptive one, whose share follows the
//!   calls' outcomes and latencies (its own rule is property-tested in `ramp.rs`), it is the
//!   share the snapshot reports at the decision, which must be within [floor, 1];
//! - (d) `handle().state()` is the model's state; the callback's transitions are the model's;
//!   refusals carry the model's state (and, open, its time left); the snapshot's window count,
//!   time left open and admitted share are the model's.
//!
//! The model decides every admission itself except ramp-up's, which the documentation leaves to
//! "deterministic error diffusion": there it takes the breaker's decision and checks (c). With
//! the adaptive ramp it also takes the breaker's end of the ramp (RampUp -> Closed), and checks
//! the rest: half-open, trips during and after the ramp, the window, epochs.
//!
//! Deterministic: a fixed proptest seed, no failure persistence, a current-thread runtime with
//! paused time per case, futures polled by hand with a no-op waker, no timers.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use proxflow_breaker::{
    BreakerConfig, BreakerError, CircuitBreakerLayer, Outcome, RampUpMode, State,
};
use proxflow_core::Clock;
use tokio::time::{advance, Instant};
use tower::util::UnsyncBoxService;
use tower::{service_fn, Layer, Service};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// The window's buckets, as documented in window.rs ("20 buckets").
const BUCKETS: u128 = 20;

// ---------------------------------------------------------------------------------------------
// The protected service: each call waits for the answer the test puts in its slot.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// A success.
    Done,
    /// An answer the classifier ignores (a 429, say).
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fail;

type Slot = Rc<RefCell<Option<Result<Reply, Fail>>>>;
type Protected = UnsyncBoxService<Slot, Reply, BreakerError<Fail>>;
type CallFuture = Pin<Box<dyn Future<Output = Result<Reply, BreakerError<Fail>>>>>;

fn classify(result: Result<&Reply, &Fail>) -> Outcome {
    match result {
        Ok(Reply::Done) => Outcome::Success,
        Ok(Reply::Ignore) => Outcome::Ignored,
        Err(Fail) => Outcome::Failure,
    }
}

/// Transitions reported by the state-change callback.
type Log = Arc<Mutex<Vec<(State, State)>>>;

fn protected(params: &Params, log: &Log) -> (Protected, proxflow_breaker::BreakerHandle) {
    let log = Arc::clone(log);
    let layer = CircuitBreakerLayer::from_config(&params.config())
        .expect("valid config")
        .clock(Clock::tokio())
        .on_state_change(move |change| log.lock().unwrap().push((change.from, change.to)))
        .generic()
        .classify(classify);
    let handle = layer.handle();
    let inner = service_fn(|slot: Slot| {
        std::future::poll_fn(move |_| match slot.borrow_mut().take() {
            Some(answer) => Poll::Ready(answer),
            None => Poll::Pending,
        })
    });
    (UnsyncBoxService::new(layer.layer(inner)), handle)
}

// ---------------------------------------------------------------------------------------------
// Settings and operations.

#[derive(Debug, Clone)]
struct Params {
    failure_threshold: f64,
    slow_call_threshold: Option<f64>,
    latency_threshold: Duration,
    min_requests: u32,
    window: Duration,
    recovery_timeout: Duration,
    recovery_backoff: f64,
    max_recovery_timeout: Duration,
    backoff_reset: Duration,
    half_open_max_requests: u32,
    ramp_up: Duration,
    ramp_up_floor: f64,
    /// `ramp_up_mode: adaptive` (else `time`).
    adaptive: bool,
}

impl Params {
    fn config(&self) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: self.failure_threshold,
            slow_call_threshold: self.slow_call_threshold,
            latency_threshold: self.latency_threshold,
            min_requests: self.min_requests,
            evaluation_window: self.window,
            recovery_timeout: self.recovery_timeout,
            recovery_backoff: self.recovery_backoff,
            max_recovery_timeout: self.max_recovery_timeout,
            backoff_reset: self.backoff_reset,
            half_open_max_requests: self.half_open_max_requests,
            ramp_up_duration: self.ramp_up,
            ramp_up_floor: self.ramp_up_floor,
            ramp_up_mode: if self.adaptive {
                RampUpMode::Adaptive
            } else {
                RampUpMode::Time
            },
            ..BreakerConfig::default()
        }
    }
}

fn params() -> impl Strategy<Value = Params> {
    // Thresholds, backoff factors and whole-second timeouts are exact in binary, so that the
    // model's arithmetic and the breaker's agree to the nanosecond (a rounding difference of
    // 1 ns in an open time is no bug, and must not look like one).
    (
        (
            prop::sample::select(vec![0.25, 0.5, 0.75, 1.0]),
            prop::option::of(prop::sample::select(vec![0.25, 0.5, 1.0])),
            50u64..2_000,
            1u32..=6,
            100u64..20_000,
        ),
        (
            1u64..=10,
            prop::sample::select(vec![1.0, 1.5, 2.0, 3.0]),
            prop::sample::select(vec![1u64, 2, 4, 10]),
            1u64..=60,
        ),
        (
            1u32..=4,
            500u64..20_000,
            prop::sample::select(vec![0.05, 0.1, 0.25, 0.5, 0.9]),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (failure_threshold, slow_call_threshold, latency_ms, min_requests, window_ms),
                (recovery_s, recovery_backoff, max_factor, backoff_reset_s),
                (half_open_max_requests, ramp_ms, ramp_up_floor, adaptive),
            )| Params {
                failure_threshold,
                slow_call_threshold,
                latency_threshold: Duration::from_millis(latency_ms),
                min_requests,
                window: Duration::from_millis(window_ms),
                recovery_timeout: Duration::from_secs(recovery_s),
                recovery_backoff,
                max_recovery_timeout: Duration::from_secs(recovery_s * max_factor),
                backoff_reset: Duration::from_secs(backoff_reset_s),
                half_open_max_requests,
                ramp_up: Duration::from_millis(ramp_ms),
                ramp_up_floor,
                adaptive,
            },
        )
}

/// How the test ends an in-flight call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Success,
    Failure,
    /// A success `latency_threshold` after now: the clock is advanced first.
    Slow,
    /// An answer the classifier ignores.
    Ignored,
}

#[derive(Debug, Clone)]
enum Op {
    Advance(Duration),
    Start,
    /// Ends the in-flight call the index picks (nothing if none is in flight).
    Finish(Index, End),
    /// Drops the in-flight call the index picks: the caller went away.
    Drop(Index),
    /// Calls `gap` apart, each ended at once (if admitted) as given.
    Burst(Duration, Vec<End>),
    /// Manual control through the handle (only in [`manual_control_matches_the_model`]).
    ForceOpen,
    ForceClosed,
    Reset,
}

fn end(bad: u32) -> impl Strategy<Value = End> {
    prop_oneof![
        (10 - bad) * 4 => Just(End::Success),
        bad * 4 => Just(End::Failure),
        2 => Just(End::Slow),
        2 => Just(End::Ignored),
    ]
}

fn op(bad: u32, manual: bool) -> impl Strategy<Value = Op> {
    let manual_weight = if manual { 1 } else { 0 };
    prop_oneof![
        8 => Just(Op::Start),
        6 => (any::<Index>(), end(bad)).prop_map(|(i, e)| Op::Finish(i, e)),
        1 => any::<Index>().prop_map(Op::Drop),
        3 => (0u64..=300).prop_map(|ms| Op::Advance(Duration::from_millis(ms))),
        2 => (0u64..=3_000).prop_map(|ms| Op::Advance(Duration::from_millis(ms))),
        1 => (0u64..=30_000).prop_map(|ms| Op::Advance(Duration::from_millis(ms))),
        3 => (0u64..=200, prop::collection::vec(end(bad), 1..60))
            .prop_map(|(ms, ends)| Op::Burst(Duration::from_millis(ms), ends)),
        manual_weight => prop_oneof![
            Just(Op::ForceOpen),
            Just(Op::ForceClosed),
            Just(Op::Reset)
        ],
    ]
}

/// Segments of operations, each with its own failure rate (from 10 % to 90 % of the ends), so
/// that a case goes through healthy and failing periods.
fn ops(manual: bool) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        (1u32..=9).prop_flat_map(move |bad| prop::collection::vec(op(bad, manual), 5..40)),
        2..14,
    )
    .prop_map(|segments| segments.into_iter().flatten().collect())
}

// ---------------------------------------------------------------------------------------------
// The reference model.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { in_flight: u32, succeeded: u32 },
    RampUp,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Decision {
    Admit {
        epoch: u64,
    },
    Refuse {
        state: State,
        /// Open: the time left until the probes.
        retry_after: Option<Duration>,
    },
}

/// One judged call in the window: when it ended, failed, slow.
#[derive(Debug, Clone, Copy)]
struct Ended {
    at: Instant,
    failed: bool,
    slow: bool,
}

#[derive(Debug)]
struct Model {
    p: Params,
    /// When the breaker was made: the window's buckets count from here.
    origin: Instant,
    phase: Phase,
    forced: Option<State>,
    /// When the phase (or forced state) began.
    since: Instant,
    /// Changes with every state (and every force or reset): calls admitted under another
    /// epoch are not judged.
    epoch: u64,
    trips_in_a_row: u32,
    window: Vec<Ended>,
    transitions: Vec<(State, State)>,
    /// This ramp-up's decisions: the target share at the time, admitted or not.
    ramp: Vec<(f64, bool)>,
    /// Ramp-ups with at least 20 decisions.
    long_ramps: u32,
}

impl Model {
    fn new(p: Params, origin: Instant) -> Model {
        Model {
            p,
            origin,
            phase: Phase::Closed,
            forced: None,
            since: origin,
            epoch: 0,
            trips_in_a_row: 0,
            window: Vec::new(),
            transitions: Vec::new(),
            ramp: Vec::new(),
            long_ramps: 0,
        }
    }

    fn state(&self) -> State {
        if let Some(forced) = self.forced {
            return forced;
        }
        match self.phase {
            Phase::Closed => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
            Phase::RampUp => State::RampUp,
        }
    }

    fn set(&mut self, now: Instant, phase: Phase) {
        let from = self.state();
        self.phase = phase;
        self.epoch += 1;
        self.since = now;
        if self.ramp.len() >= 20 {
            self.long_ramps += 1;
        }
        self.ramp.clear();
        let to = self.state();
        self.transitions.push((from, to));
    }

    /// Open time after `trips` trips in a row: recovery_timeout × backoff^(trips - 1), capped.
    fn open_time(&self, trips: u32) -> Duration {
        let secs =
            self.p.recovery_timeout.as_secs_f64() * self.p.recovery_backoff.powi(trips as i32 - 1);
        if secs < self.p.max_recovery_timeout.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            self.p.max_recovery_timeout
        }
    }

    /// The ramp-up target: floor + (1 - floor) × progress (linear: the default aggression).
    fn share(&self, now: Instant) -> f64 {
        let progress = ((now - self.since).as_secs_f64() / self.p.ramp_up.as_secs_f64()).min(1.0);
        self.p.ramp_up_floor + (1.0 - self.p.ramp_up_floor) * progress
    }

    fn trip(&mut self, now: Instant) {
        // "backoff_reset closed resets it": closed that long before this trip, it is the first.
        if self.phase == Phase::Closed && now - self.since >= self.p.backoff_reset {
            self.trips_in_a_row = 0;
        }
        self.trips_in_a_row += 1;
        let until = now + self.open_time(self.trips_in_a_row);
        self.window.clear();
        self.set(now, Phase::Open { until });
    }

    fn bucket(&self, at: Instant) -> u128 {
        (at - self.origin).as_nanos() / (self.p.window.as_nanos() / BUCKETS)
    }

    /// (calls, failures, slow) judged in the window at `now`: the calls that ended in the
    /// bucket of `now` or in the 19 before it.
    fn counts(&self, now: Instant) -> (u32, u32, u32) {
        let head = self.bucket(now);
        let mut counts = (0, 0, 0);
        for call in &self.window {
            if head - self.bucket(call.at) < BUCKETS {
                counts.0 += 1;
                counts.1 += u32::from(call.failed);
                counts.2 += u32::from(call.slow);
            }
        }
        counts
    }

    /// May a call go through at `now`? In ramp-up the breaker's decision (`admitted`) is
    /// taken and checked against the target share; with the adaptive ramp, the breaker's
    /// state and share after its decision (`breaker`) are taken as the ramp's end and target.
    fn acquire(
        &mut self,
        now: Instant,
        admitted: bool,
        breaker: (State, f64),
    ) -> Result<Decision, TestCaseError> {
        match self.forced {
            Some(State::ForcedClosed) => return Ok(Decision::Admit { epoch: self.epoch }),
            Some(state) => {
                return Ok(Decision::Refuse {
                    state,
                    retry_after: None,
                })
            }
            None => {}
        }
        if let Phase::Open { until } = self.phase {
            if now < until {
                return Ok(Decision::Refuse {
                    state: State::Open,
                    retry_after: Some(until - now),
                });
            }
            self.set(
                now,
                Phase::HalfOpen {
                    in_flight: 0,
                    succeeded: 0,
                },
            );
        }
        if self.p.adaptive {
            self.follow(now, breaker.0);
        } else if self.phase == Phase::RampUp && now - self.since >= self.p.ramp_up {
            self.set(now, Phase::Closed);
        }
        let admit = Decision::Admit { epoch: self.epoch };
        match &mut self.phase {
            Phase::Closed => Ok(admit),
            Phase::Open { .. } => unreachable!("left above"),
            Phase::HalfOpen {
                in_flight,
                succeeded,
            } => {
                if *in_flight + *succeeded < self.p.half_open_max_requests {
                    *in_flight += 1;
                    Ok(admit)
                } else {
                    Ok(Decision::Refuse {
                        state: State::HalfOpen,
                        retry_after: None,
                    })
                }
            }
            Phase::RampUp => {
                let target = if self.p.adaptive {
                    prop_assert!(
                        breaker.1 >= self.p.ramp_up_floor - 1e-9 && breaker.1 <= 1.0,
                        "adaptive share {} outside [{}, 1]",
                        breaker.1,
                        self.p.ramp_up_floor
                    );
                    breaker.1
                } else {
                    self.share(now)
                };
                self.ramp.push((target, admitted));
                self.check_ramp()?;
                Ok(if admitted {
                    admit
                } else {
                    Decision::Refuse {
                        state: State::RampUp,
                        retry_after: None,
                    }
                })
            }
        }
    }

    /// The adaptive ramp ends when its calls say so: the model follows the breaker there.
    fn follow(&mut self, now: Instant, breaker: State) {
        if self.p.adaptive
            && self.forced.is_none()
            && self.phase == Phase::RampUp
            && breaker == State::Closed
        {
            self.set(now, Phase::Closed);
        }
    }

    /// Property (c), on the runs of decisions that end with the newest one.
    fn check_ramp(&self) -> Result<(), TestCaseError> {
        let n = self.ramp.len();
        let mut target = 0.0;
        let mut admitted = 0.0;
        for (start, &(share, passed)) in self.ramp.iter().enumerate().rev() {
            target += share;
            admitted += f64::from(u8::from(passed));
            let calls = (n - start) as f64;
            if calls >= 20.0 {
                let allowed = (0.05 * calls).max(1.0) + 1e-9;
                prop_assert!(
                    (admitted - target).abs() <= allowed,
                    "ramp-up decisions {start}..{n}: {admitted} admitted of {calls} where the \
                     target shares sum to {target:.3} (allowed {allowed:.3})"
                );
            }
        }
        // "over any second the admitted share is within one call of the target": whatever the
        // number of calls, since the ramp began.
        prop_assert!(
            (admitted - target).abs() <= 1.0 + 1e-9,
            "ramp-up: {admitted} admitted of {n} where the target shares sum to {target:.3}"
        );
        Ok(())
    }

    /// Judges the end of a call admitted under `epoch` at `start`.
    fn record(&mut self, now: Instant, epoch: u64, start: Instant, outcome: Outcome) {
        if epoch != self.epoch || self.forced.is_some() {
            return;
        }
        let slow = now - start >= self.p.latency_threshold;
        match &mut self.phase {
            Phase::Open { .. } => {}
            Phase::HalfOpen {
                in_flight,
                succeeded,
            } => {
                *in_flight -= 1;
                match outcome {
                    Outcome::Ignored => {}
                    Outcome::Failure => self.trip(now),
                    Outcome::Success if slow => self.trip(now),
                    Outcome::Success => {
                        *succeeded += 1;
                        if *succeeded == self.p.half_open_max_requests {
                            self.window.clear();
                            self.set(now, Phase::RampUp);
                        }
                    }
                }
            }
            Phase::Closed | Phase::RampUp => {
                if outcome == Outcome::Ignored {
                    return;
                }
                self.window.push(Ended {
                    at: now,
                    failed: outcome == Outcome::Failure,
                    slow,
                });
                let (calls, failures, slow) = self.counts(now);
                let rate = |part: u32| f64::from(part) / f64::from(calls);
                let slow_threshold = self
                    .p
                    .slow_call_threshold
                    .unwrap_or(self.p.failure_threshold);
                if calls >= self.p.min_requests
                    && (rate(failures) >= self.p.failure_threshold || rate(slow) >= slow_threshold)
                {
                    self.trip(now);
                }
            }
        }
    }

    fn force(&mut self, now: Instant, state: State) {
        let from = self.state();
        self.forced = Some(state);
        self.epoch += 1;
        self.since = now;
        self.ramp.clear();
        if from != state {
            self.transitions.push((from, state));
        }
    }

    fn reset(&mut self, now: Instant) {
        let from = self.state();
        self.forced = None;
        self.phase = Phase::Closed;
        self.window.clear();
        self.trips_in_a_row = 0;
        self.epoch += 1;
        self.since = now;
        self.ramp.clear();
        if from != State::Closed {
            self.transitions.push((from, State::Closed));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run of one case.

struct InFlight {
    slot: Slot,
    future: CallFuture,
    start: Instant,
    /// The model's epoch when it was admitted.
    epoch: u64,
    /// Admitted while half-open: in which half-open period (the count of entries into it).
    probe_of: Option<usize>,
}

/// What the cases went through, to make sure the properties were exercised.
#[derive(Debug, Default, Clone)]
struct Coverage {
    cases: u32,
    transitions: std::collections::BTreeMap<String, u32>,
    ramp_decisions: u64,
    /// Ramp-ups that made at least 20 decisions (so that (c) judged runs of 20 or more).
    long_ramps: u32,
    /// The most calls admitted in half-open in flight at once, counting those of earlier
    /// half-open periods (which (a) does not count), beyond `half_open_max_requests`; with it.
    most_probes_beyond_the_limit: (usize, u32),
}

struct Run {
    model: Model,
    service: Protected,
    handle: proxflow_breaker::BreakerHandle,
    log: Log,
    in_flight: Vec<InFlight>,
    manual: bool,
    most_probes_beyond_the_limit: usize,
    ramp_decisions: u64,
}

fn legal(from: State, to: State, manual: bool) -> bool {
    use State::*;
    matches!(
        (from, to),
        (Closed, Open)
            | (Open, HalfOpen)
            | (HalfOpen, Open)
            | (HalfOpen, RampUp)
            | (RampUp, Open)
            | (RampUp, Closed)
    ) || (manual && from != to && matches!(to, ForcedOpen | ForcedClosed | Closed))
}

impl Run {
    fn context() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    fn start(&mut self) -> Result<(), TestCaseError> {
        let mut cx = Run::context();
        prop_assert!(matches!(
            self.service.poll_ready(&mut cx),
            Poll::Ready(Ok(()))
        ));
        let slot = Slot::default();
        let mut future = self.service.call(Rc::clone(&slot));
        let now = Instant::now();
        let refused = match future.as_mut().poll(&mut cx) {
            Poll::Pending => None,
            Poll::Ready(Err(BreakerError::Open(refusal))) => {
                Some((refusal.state, refusal.retry_after))
            }
            Poll::Ready(other) => {
                return Err(TestCaseError::fail(format!(
                    "a call ended before its answer: {other:?}"
                )))
            }
        };
        let was_ramp = self.model.phase == Phase::RampUp && self.model.forced.is_none();
        let breaker = (self.handle.state(), self.handle.snapshot().admitted_share);
        let decision = self.model.acquire(now, refused.is_none(), breaker)?;
        if was_ramp && self.model.phase == Phase::RampUp {
            self.ramp_decisions += 1;
        }
        match decision {
            Decision::Admit { epoch } => {
                prop_assert!(
                    refused.is_none(),
                    "refused {refused:?}, the model admits in {:?}",
                    self.model.state()
                );
                let probe_of = (self.handle.state() == State::HalfOpen).then(|| {
                    let log = self.log.lock().unwrap();
                    log.iter().filter(|(_, to)| *to == State::HalfOpen).count()
                });
                self.in_flight.push(InFlight {
                    slot,
                    future,
                    start: now,
                    epoch,
                    probe_of,
                });
            }
            Decision::Refuse { state, retry_after } => {
                let Some((refused_in, after)) = refused else {
                    return Err(TestCaseError::fail(format!(
                        "admitted, the model refuses in {state:?}"
                    )));
                };
                prop_assert_eq!(refused_in, state, "the state that refused");
                if let Some(expected) = retry_after {
                    prop_assert_eq!(after, expected, "retry-after while open");
                }
            }
        }
        Ok(())
    }

    async fn finish(&mut self, index: usize, end: End) -> Result<(), TestCaseError> {
        if end == End::Slow {
            advance(self.model.p.latency_threshold).await;
        }
        let mut call = self.in_flight.remove(index);
        let (answer, outcome) = match end {
            End::Success | End::Slow => (Ok(Reply::Done), Outcome::Success),
            End::Ignored => (Ok(Reply::Ignore), Outcome::Ignored),
            End::Failure => (Err(Fail), Outcome::Failure),
        };
        *call.slot.borrow_mut() = Some(answer);
        let mut cx = Run::context();
        let Poll::Ready(result) = call.future.as_mut().poll(&mut cx) else {
            return Err(TestCaseError::fail("the call did not end with its answer"));
        };
        match (answer, result) {
            (Ok(sent), Ok(got)) => prop_assert_eq!(sent, got),
            (Err(Fail), Err(BreakerError::Inner(Fail))) => {}
            (sent, got) => {
                return Err(TestCaseError::fail(format!(
                    "answered {sent:?}, the caller got {got:?}"
                )))
            }
        }
        let now = Instant::now();
        self.model.record(now, call.epoch, call.start, outcome);
        self.model.follow(now, self.handle.state());
        Ok(())
    }

    /// The caller went away: a call that ran `latency_threshold` is a timeout (a failure),
    /// a shorter one is ignored.
    fn drop_call(&mut self, index: usize) {
        let call = self.in_flight.remove(index);
        drop(call.future);
        let now = Instant::now();
        let outcome = if now - call.start >= self.model.p.latency_threshold {
            Outcome::Failure
        } else {
            Outcome::Ignored
        };
        self.model.record(now, call.epoch, call.start, outcome);
        self.model.follow(now, self.handle.state());
    }

    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Advance(by) => advance(*by).await,
            Op::Start => self.start()?,
            Op::Finish(pick, end) => {
                if !self.in_flight.is_empty() {
                    self.finish(pick.index(self.in_flight.len()), *end).await?;
                }
            }
            Op::Drop(pick) => {
                if !self.in_flight.is_empty() {
                    self.drop_call(pick.index(self.in_flight.len()));
                }
            }
            Op::Burst(gap, ends) => {
                for &end in ends {
                    advance(*gap).await;
                    let before = self.in_flight.len();
                    self.start()?;
                    if self.in_flight.len() > before {
                        self.finish(before, end).await?;
                    }
                    self.check()?;
                }
            }
            Op::ForceOpen => {
                self.handle.force_open();
                self.model.force(Instant::now(), State::ForcedOpen);
            }
            Op::ForceClosed => {
                self.handle.force_closed();
                self.model.force(Instant::now(), State::ForcedClosed);
            }
            Op::Reset => {
                self.handle.reset();
                self.model.reset(Instant::now());
            }
        }
        Ok(())
    }

    /// The properties, after each operation.
    fn check(&mut self) -> Result<(), TestCaseError> {
        let now = Instant::now();
        let model = &self.model;
        // (d) The state, the transitions, the figures.
        prop_assert_eq!(self.handle.state(), model.state(), "handle().state()");
        let log = self.log.lock().unwrap().clone();
        prop_assert_eq!(&log, &model.transitions, "state-change callback");
        let snapshot = self.handle.snapshot();
        prop_assert_eq!(snapshot.state, model.state(), "snapshot state");
        prop_assert_eq!(
            snapshot.calls_in_window,
            model.counts(now).0,
            "calls in the window"
        );
        match (model.forced, model.phase) {
            (None, Phase::Open { until }) => prop_assert_eq!(
                u128::from(snapshot.retry_after_ms),
                until.saturating_duration_since(now).as_millis(),
                "time left open"
            ),
            (None, Phase::RampUp) if model.p.adaptive => prop_assert!(
                snapshot.admitted_share >= model.p.ramp_up_floor - 1e-9
                    && snapshot.admitted_share <= 1.0,
                "adaptive share {}",
                snapshot.admitted_share
            ),
            (None, Phase::RampUp) => prop_assert!(
                (snapshot.admitted_share - model.share(now)).abs() < 1e-9,
                "admitted share {} vs {}",
                snapshot.admitted_share,
                model.share(now)
            ),
            _ => {}
        }
        // (b) Only documented edges, one after the other from Closed.
        let mut state = State::Closed;
        for &(from, to) in &log {
            prop_assert_eq!(from, state, "transitions {:?} are not a path", log);
            prop_assert!(
                legal(from, to, self.manual),
                "{from:?} -> {to:?} in {log:?}"
            );
            state = to;
        }
        // (a) The probes of this half-open period in flight.
        if self.handle.state() == State::HalfOpen {
            let period = log.iter().filter(|(_, to)| *to == State::HalfOpen).count();
            let probes = self
                .in_flight
                .iter()
                .filter(|call| call.probe_of == Some(period))
                .count();
            prop_assert!(
                probes <= model.p.half_open_max_requests as usize,
                "{probes} probes in flight, at most {}",
                model.p.half_open_max_requests
            );
        }
        let all_probes = self
            .in_flight
            .iter()
            .filter(|call| call.probe_of.is_some())
            .count();
        let beyond = all_probes.saturating_sub(self.model.p.half_open_max_requests as usize);
        self.most_probes_beyond_the_limit = self.most_probes_beyond_the_limit.max(beyond);
        Ok(())
    }
}

fn run_case(params: &Params, ops: &[Op], manual: bool) -> Result<Coverage, TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let log = Log::default();
        let (service, handle) = protected(params, &log);
        // The breaker is made with the service above, at this very instant: time is paused.
        let model = Model::new(params.clone(), Instant::now());
        let mut run = Run {
            model,
            service,
            handle,
            log,
            in_flight: Vec::new(),
            manual,
            most_probes_beyond_the_limit: 0,
            ramp_decisions: 0,
        };
        for op in ops {
            run.apply(op).await?;
            run.check()?;
        }
        let mut coverage = Coverage {
            cases: 1,
            ramp_decisions: run.ramp_decisions,
            long_ramps: run.model.long_ramps,
            most_probes_beyond_the_limit: (
                run.most_probes_beyond_the_limit,
                params.half_open_max_requests,
            ),
            ..Coverage::default()
        };
        for (from, to) in run.model.transitions.iter() {
            *coverage
                .transitions
                .entry(format!("{from:?}->{to:?}"))
                .or_default() += 1;
            if params.adaptive {
                *coverage
                    .transitions
                    .entry(format!("adaptive {from:?}->{to:?}"))
                    .or_default() += 1;
            }
        }
        Ok(coverage)
    })
}

fn runner(seed: u64) -> TestRunner {
    TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 4_096,
        ..Config::default()
    })
}

fn run_all(seed: u64, manual: bool) -> Coverage {
    let total = Mutex::new(Coverage::default());
    let result = runner(seed).run(&(params(), ops(manual)), |(params, ops)| {
        let coverage = run_case(&params, &ops, manual)?;
        let mut total = total.lock().unwrap();
        total.cases += 1;
        total.ramp_decisions += coverage.ramp_decisions;
        total.long_ramps += coverage.long_ramps;
        total.most_probes_beyond_the_limit = total
            .most_probes_beyond_the_limit
            .max(coverage.most_probes_beyond_the_limit);
        for (edge, count) in coverage.transitions {
            *total.transitions.entry(edge).or_default() += count;
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let total = total.into_inner().unwrap();
    eprintln!("coverage: {total:#?}");
    total
}

/// The properties over random runs of calls, clock advances and outcomes.
#[test]
fn the_breaker_follows_the_model() {
    let coverage = run_all(0x0b5e_55ed_b4ea_4e45, false);
    // The runs went through every documented edge, many times, and through long ramp-ups: the
    // properties above were exercised, not vacuously true.
    for edge in [
        "Closed->Open",
        "Open->HalfOpen",
        "HalfOpen->Open",
        "HalfOpen->RampUp",
        "RampUp->Open",
        "RampUp->Closed",
        "adaptive HalfOpen->RampUp",
        "adaptive RampUp->Open",
        "adaptive RampUp->Closed",
    ] {
        let count = coverage.transitions.get(edge).copied().unwrap_or(0);
        assert!(count >= 10, "{edge} happened {count} times only");
    }
    assert!(
        coverage.ramp_decisions >= 1_500 && coverage.long_ramps >= 10,
        "{} ramp-up decisions, {} ramp-ups of 20 or more only",
        coverage.ramp_decisions,
        coverage.long_ramps
    );
}

/// The same with `force_open`, `force_closed` and `reset` through the handle mixed in.
#[test]
fn manual_control_matches_the_model() {
    let coverage = run_all(0x5eed_0fc0_4701, true);
    for edge in [
        "Closed->ForcedOpen",
        "ForcedOpen->Closed",
        "ForcedClosed->Closed",
        "RampUp->Closed",
    ] {
        let count = coverage.transitions.get(edge).copied().unwrap_or(0);
        assert!(count >= 5, "{edge} happened {count} times only");
    }
}

/// `handle().reset()` on a closed breaker must leave it judging calls: "back to closed, with an
/// empty window and no backoff".
#[tokio::test(start_paused = true)]
async fn reset_while_closed_keeps_judging_calls() {
    let params = Params {
        failure_threshold: 0.5,
        slow_call_threshold: None,
        latency_threshold: 5 * SEC,
        min_requests: 3,
        window: 10 * SEC,
        recovery_timeout: 5 * SEC,
        recovery_backoff: 2.0,
        max_recovery_timeout: 60 * SEC,
        backoff_reset: 60 * SEC,
        half_open_max_requests: 1,
        ramp_up: 10 * SEC,
        ramp_up_floor: 0.1,
        adaptive: true,
    };
    let log = Log::default();
    let (mut service, handle) = protected(&params, &log);
    handle.reset();
    let mut cx = Run::context();
    for _ in 0..10 {
        let slot = Slot::default();
        *slot.borrow_mut() = Some(Err(Fail));
        let _ = service.call(slot).as_mut().poll(&mut cx);
        advance(10 * MS).await;
    }
    assert_eq!(
        handle.state(),
        State::Open,
        "10 failures in a row after a reset; snapshot: {:?}",
        handle.snapshot()
    );
}
