//! One breaker: the state machine behind a mutex, the lock-free closed path, the counters, the
//! state-change callback and the events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::machine::{Admission, Machine, Outcome, Permit, Settings, State, Transition};

/// Called on every change of state, after the breaker's lock is released.
pub(crate) type OnStateChange = Arc<dyn Fn(&StateChange) + Send + Sync>;

/// A change of state of one breaker.
#[derive(Debug, Clone, Serialize)]
pub struct StateChange {
    /// The breaker's name: `default`, or its key in the keyed form.
    pub breaker: Arc<str>,
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
}

/// `closed` while the breaker is not plainly closed.
const NOT_CLOSED: u64 = u64::MAX;

pub(crate) struct Breaker {
    name: Arc<str>,
    inner: Mutex<Inner>,
    /// The epoch of the closed state while closed, else [`NOT_CLOSED`]: a closed breaker admits
    /// a call with one atomic load.
    closed: AtomicU64,
    on_change: Option<OnStateChange>,
}

struct Inner {
    machine: Machine,
    totals: Totals,
}

/// Calls counted since the breaker was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Calls that succeeded (slow ones included).
    pub successes: u64,
    /// Calls that failed (timeouts included).
    pub failures: u64,
    /// Calls at or over `latency_threshold`.
    pub slow_calls: u64,
    /// Calls the classifier ignored, or dropped before they ended.
    pub ignored: u64,
    /// Calls refused without reaching the service.
    pub refused: u64,
    /// Calls answered 504 (or `Error::Timeout`) after `timeout`.
    pub timeouts: u64,
    /// Changes of state.
    pub transitions: u64,
}

/// A point-in-time copy of one breaker's figures; serializes to JSON.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BreakerSnapshot {
    /// `default`, or the key in the keyed form.
    pub breaker: Arc<str>,
    /// The state now.
    pub state: State,
    /// Failure rate over the window (0 with no calls).
    pub failure_rate: f64,
    /// Slow-call rate over the window.
    pub slow_call_rate: f64,
    /// Calls in the window (closed and ramp-up count; others start it empty).
    pub calls_in_window: u32,
    /// Milliseconds in the current state.
    pub time_in_state_ms: u64,
    /// Trips since the breaker was last healthy for `backoff_reset`.
    pub trips_in_a_row: u32,
    /// Open: milliseconds until the probes.
    pub retry_after_ms: u64,
    /// The share of calls let through now (ramp-up: the growing share).
    pub admitted_share: f64,
    /// Counts since the breaker was made.
    pub totals: Totals,
}

/// How a call ended, for [`Breaker::record`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ending {
    pub(crate) outcome: Outcome,
    pub(crate) latency: Duration,
    pub(crate) timed_out: bool,
}

impl Breaker {
    pub(crate) fn new(
        name: Arc<str>,
        settings: Settings,
        now: Instant,
        on_change: Option<OnStateChange>,
    ) -> Breaker {
        let machine = Machine::new(settings, now);
        let closed = AtomicU64::new(machine.closed_epoch().unwrap_or(NOT_CLOSED));
        Breaker {
            name,
            inner: Mutex::new(Inner {
                machine,
                totals: Totals::default(),
            }),
            closed,
            on_change,
        }
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// May a call go through now? Closed: one atomic load, no lock, no clock.
    pub(crate) fn acquire(&self, now: impl FnOnce() -> Instant) -> Admission {
        let epoch = self.closed.load(Ordering::Acquire);
        if epoch != NOT_CLOSED {
            return Admission::Admit(Permit { epoch });
        }
        let mut inner = self.lock();
        let (admission, transition) = inner.machine.acquire(now());
        if let Admission::Refuse { .. } = admission {
            inner.totals.refused += 1;
        }
        self.after(inner, transition);
        admission
    }

    /// Counts the end of an admitted call.
    pub(crate) fn record(&self, now: Instant, permit: Permit, ending: Ending) {
        let mut inner = self.lock();
        let totals = &mut inner.totals;
        match ending.outcome {
            Outcome::Success => totals.successes += 1,
            Outcome::Failure => totals.failures += 1,
            Outcome::Ignored => totals.ignored += 1,
        }
        if ending.outcome != Outcome::Ignored && ending.latency >= inner.machine.latency_threshold()
        {
            inner.totals.slow_calls += 1;
        }
        inner.totals.timeouts += u64::from(ending.timed_out);
        let transition = inner
            .machine
            .record(now, permit, ending.outcome, ending.latency);
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "proxflow_breaker_calls_total",
            "breaker" => self.name.to_string(),
            "outcome" => outcome_name(ending.outcome)
        )
        .increment(1);
        self.after(inner, transition);
    }

    pub(crate) fn force(&self, now: Instant, state: State) {
        let mut inner = self.lock();
        let transition = inner.machine.force(now, state);
        self.publish_epoch(&inner);
        self.after(inner, transition);
    }

    pub(crate) fn reset(&self, now: Instant) {
        let mut inner = self.lock();
        let transition = inner.machine.reset(now);
        // A reset of a closed breaker is no transition, but it starts a new epoch: calls
        // admitted with the old one would not be counted.
        self.publish_epoch(&inner);
        self.after(inner, transition);
    }

    fn publish_epoch(&self, inner: &Inner) {
        let epoch = inner.machine.closed_epoch().unwrap_or(NOT_CLOSED);
        self.closed.store(epoch, Ordering::Release);
    }

    pub(crate) fn state(&self) -> State {
        if self.closed.load(Ordering::Acquire) != NOT_CLOSED {
            return State::Closed;
        }
        self.lock().machine.state()
    }

    pub(crate) fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        let mut inner = self.lock();
        let figures = inner.machine.figures(now);
        BreakerSnapshot {
            breaker: Arc::clone(&self.name),
            state: figures.state,
            failure_rate: figures.window.failure_rate(),
            slow_call_rate: figures.window.slow_rate(),
            calls_in_window: figures.window.calls,
            time_in_state_ms: millis(figures.time_in_state),
            trips_in_a_row: figures.trips_in_a_row,
            retry_after_ms: millis(figures.retry_after),
            admitted_share: figures.admitted_share,
            totals: inner.totals,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The machine is left consistent at every step; a panic elsewhere cannot corrupt it.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes a change of state: the lock-free flag, then (unlocked) the events.
    fn after(&self, mut inner: MutexGuard<'_, Inner>, transition: Option<Transition>) {
        let Some(Transition { from, to }) = transition else {
            return;
        };
        inner.totals.transitions += 1;
        self.publish_epoch(&inner);
        drop(inner);
        let change = StateChange {
            breaker: Arc::clone(&self.name),
            from,
            to,
        };
        match to {
            State::Open | State::ForcedOpen => {
                tracing::warn!(breaker = %self.name, ?from, ?to, "circuit breaker opened")
            }
            _ => tracing::info!(breaker = %self.name, ?from, ?to, "circuit breaker state change"),
        }
        #[cfg(feature = "metrics")]
        {
            metrics::gauge!("proxflow_breaker_state", "breaker" => self.name.to_string())
                .set(state_number(to));
            metrics::counter!(
                "proxflow_breaker_transitions_total",
                "breaker" => self.name.to_string(),
                "to" => state_name(to)
            )
            .increment(1);
        }
        if let Some(callback) = &self.on_change {
            callback(&change);
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(feature = "metrics")]
fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::Ignored => "ignored",
    }
}

#[cfg(feature = "metrics")]
fn state_name(state: State) -> &'static str {
    match state {
        State::Closed => "closed",
        State::Open => "open",
        State::HalfOpen => "half_open",
        State::RampUp => "ramp_up",
        State::ForcedOpen => "forced_open",
        State::ForcedClosed => "forced_closed",
    }
}

/// The state as a gauge value: 0 closed, 1 open, 2 half-open, 3 ramp-up, 4 forced open,
/// 5 forced closed.
#[cfg(feature = "metrics")]
fn state_number(state: State) -> f64 {
    match state {
        State::Closed => 0.0,
        State::Open => 1.0,
        State::HalfOpen => 2.0,
        State::RampUp => 3.0,
        State::ForcedOpen => 4.0,
        State::ForcedClosed => 5.0,
    }
}
