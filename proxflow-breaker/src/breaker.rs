//! One breaker: the state machine behind a mutex, the lock-free closed path, the counters, the
//! state-change callback and the events.
//!
//! While closed, a call is admitted with one atomic load, and a call that succeeds fast (or
//! is ignored) while the machine says such calls cannot change its state
//! ([`Machine::quiet_until`]) is counted in its thread's slot ([`Stripes`]) without the lock.
//! Every other call is recorded under the lock, which first folds the slots' counts into the
//! machine, so the machine judges every call as if each had been recorded in turn.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use proxflow_core::clock::nanos;
use proxflow_core::{Clock, Moment};
use serde::Serialize;

use crate::machine::{Admission, Machine, Outcome, Permit, Settings, State, Transition};
use crate::stripes::{self, Stripes, Tally};

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

/// `tag` while no period is open.
const NO_PERIOD: u32 = 0;

/// Keeps a breaker alive while a call runs, and judges the call's result. A breaker that every
/// call shares has one holder per thread slot and a call clones its thread's, so that calls on
/// different cores do not write one reference count. The classifier is here rather than in
/// each call's future, which a call would otherwise copy (the default one is 128 bytes).
#[repr(align(128))]
pub(crate) struct Holder<C> {
    breaker: Arc<Breaker>,
    classify: C,
}

impl<C> Holder<C> {
    pub(crate) fn new(breaker: Arc<Breaker>, classify: C) -> Arc<Holder<C>> {
        Arc::new(Holder { breaker, classify })
    }

    pub(crate) fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    pub(crate) fn classifier(&self) -> &C {
        &self.classify
    }
}

impl<C> std::ops::Deref for Holder<C> {
    type Target = Breaker;

    fn deref(&self) -> &Breaker {
        &self.breaker
    }
}

/// The holders of one breaker, one per thread slot. Cheap to clone.
pub(crate) struct Holders<C>(Arc<[Arc<Holder<C>>]>);

impl<C> Clone for Holders<C> {
    fn clone(&self) -> Self {
        Holders(Arc::clone(&self.0))
    }
}

impl<C: Clone> Holders<C> {
    pub(crate) fn new(breaker: Arc<Breaker>, classify: &C) -> Holders<C> {
        Holders(
            (0..stripes::slot_count())
                .map(|_| Holder::new(Arc::clone(&breaker), classify.clone()))
                .collect(),
        )
    }
}

impl<C> Holders<C> {
    /// The calling thread's holder.
    pub(crate) fn this_thread(&self) -> &Arc<Holder<C>> {
        &self.0[stripes::this_thread_slot()]
    }

    pub(crate) fn breaker(&self) -> &Arc<Breaker> {
        self.0[0].breaker()
    }
}

pub(crate) struct Breaker {
    /// Read by every call, on lines of its own (calls write their holder's count instead of
    /// the `Arc`'s).
    hot: Hot,
    name: Arc<str>,
    inner: Mutex<Inner>,
    on_change: Option<OnStateChange>,
}

/// What a call reads without the lock; written only under it.
#[repr(align(128))]
struct Hot {
    /// The epoch of the closed state while closed, else [`NOT_CLOSED`].
    closed: AtomicU64,
    /// The tag of the open quiet period, or [`NO_PERIOD`].
    tag: AtomicU32,
    /// Calls ending this many nanoseconds after `origin` or later are not quiet.
    until: AtomicU64,
    origin: Moment,
    /// What every reading of this breaker's time reads.
    clock: Clock,
    /// In nanoseconds (saturating, as the latencies are).
    latency_threshold: u64,
    stripes: Stripes,
}

struct Inner {
    machine: Machine,
    totals: Totals,
    /// The tag the slots carry: the open period's, or the next one's.
    tag: u32,
    /// When the open period was opened (its calls are counted in that bucket), if one is.
    period: Option<Instant>,
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
    /// Calls the classifier ignored, or dropped before they ended and before `latency_threshold`.
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
    /// The usual latency of the calls that succeed faster than `latency_threshold` while the
    /// breaker is closed, in milliseconds, over about the last `evaluation_window` (frozen
    /// while it is not closed): what the adaptive ramp-up judges its calls against. `None`
    /// before the first such call.
    pub usual_latency_ms: Option<f64>,
    /// Counts since the breaker was made.
    pub totals: Totals,
}

/// How a call ended, for [`Breaker::record`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ending {
    pub(crate) outcome: Outcome,
    /// In nanoseconds.
    pub(crate) latency: u64,
    pub(crate) timed_out: bool,
}

impl Breaker {
    /// A breaker that reads `clock`, or its coarse form ([`Breaker::clock_for`]).
    pub(crate) fn new(
        name: Arc<str>,
        settings: Settings,
        on_change: Option<OnStateChange>,
        clock: &Clock,
    ) -> Breaker {
        let clock = Breaker::clock_for(&settings, clock);
        let origin = clock.now();
        let now = clock.instant(origin);
        let machine = Machine::new(settings, now);
        let stripes = Stripes::new();
        let first_tag = NO_PERIOD + 1;
        stripes.close(first_tag);
        let breaker = Breaker {
            hot: Hot {
                closed: AtomicU64::new(NOT_CLOSED),
                tag: AtomicU32::new(NO_PERIOD),
                until: AtomicU64::new(0),
                origin,
                clock,
                latency_threshold: nanos(machine.latency_threshold()),
                stripes,
            },
            name,
            inner: Mutex::new(Inner {
                machine,
                totals: Totals::default(),
                tag: first_tag,
                period: None,
            }),
            on_change,
        };
        breaker.update(now, |_| ((), None));
        breaker
    }

    /// The clock a breaker with `settings` reads: `clock` itself if its calls' latencies are
    /// needed precisely, else its [`Clock::coarse`] form (which a coarse clock is already).
    pub(crate) fn clock_for(settings: &Settings, clock: &Clock) -> Clock {
        if settings.precise_clock() {
            clock.clone()
        } else {
            clock.coarse()
        }
    }

    /// A reading of this breaker's clock.
    #[inline]
    pub(crate) fn now(&self) -> Moment {
        self.hot.clock.now()
    }

    /// A call at least this long (in nanoseconds) is slow.
    #[inline]
    pub(crate) fn latency_threshold(&self) -> u64 {
        self.hot.latency_threshold
    }

    /// Nanoseconds from `earlier` to `later`, two readings of [`Self::now`].
    #[inline]
    pub(crate) fn nanos_between(&self, earlier: Moment, later: Moment) -> u64 {
        self.hot.clock.nanos_between(earlier, later)
    }

    /// A reading as the machine's time.
    fn instant(&self, moment: Moment) -> Instant {
        self.hot.clock.instant(moment)
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// May a call go through now? Closed: one atomic load, no lock.
    #[inline]
    pub(crate) fn acquire(&self, now: Moment) -> Admission {
        let epoch = self.hot.closed.load(Ordering::Acquire);
        if epoch != NOT_CLOSED {
            return Admission::Admit(Permit { epoch });
        }
        self.acquire_in_turn(now)
    }

    fn acquire_in_turn(&self, now: Moment) -> Admission {
        let now = self.instant(now);
        self.update(now, |inner| {
            let (admission, transition) = inner.machine.acquire(now);
            if let Admission::Refuse(_) = admission {
                inner.totals.refused += 1;
            }
            (admission, transition)
        })
    }

    /// Counts the end of an admitted call.
    pub(crate) fn record(&self, now: Moment, permit: Permit, ending: Ending) {
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "proxflow_breaker_calls_total",
            "breaker" => Arc::clone(&self.name),
            "outcome" => outcome_name(ending.outcome)
        )
        .increment(1);
        let slow = ending.latency >= self.hot.latency_threshold;
        let tally = match ending.outcome {
            Outcome::Success if !slow && !ending.timed_out => Some(Tally::Success),
            Outcome::Ignored => Some(Tally::Ignored),
            _ => None,
        };
        if tally.is_some_and(|tally| self.count_quietly(now, permit, tally, ending.latency)) {
            return;
        }
        let now = self.instant(now);
        let latency = Duration::from_nanos(ending.latency);
        self.update(now, |inner| {
            let totals = &mut inner.totals;
            match ending.outcome {
                Outcome::Success => totals.successes += 1,
                Outcome::Failure => totals.failures += 1,
                Outcome::Ignored => totals.ignored += 1,
            }
            totals.slow_calls += u64::from(ending.outcome != Outcome::Ignored && slow);
            totals.timeouts += u64::from(ending.timed_out);
            let transition = inner.machine.record(now, permit, ending.outcome, latency);
            ((), transition)
        })
    }

    /// Counts the call in this thread's slot if it ended inside the open quiet period of its
    /// own epoch.
    fn count_quietly(&self, now: Moment, permit: Permit, tally: Tally, latency: u64) -> bool {
        let hot = &self.hot;
        let tag = hot.tag.load(Ordering::Acquire);
        tag != NO_PERIOD
            && hot.closed.load(Ordering::Acquire) == permit.epoch
            && hot.clock.nanos_between(hot.origin, now) < hot.until.load(Ordering::Acquire)
            && hot.stripes.add(tag, tally, latency)
    }

    pub(crate) fn force(&self, state: State) {
        let now = self.instant(self.now());
        self.update(now, |inner| ((), inner.machine.force(now, state)));
    }

    /// A reset of a closed breaker is no transition, but it starts a new epoch: calls
    /// admitted with the old one are not counted.
    pub(crate) fn reset(&self) {
        let now = self.instant(self.now());
        self.update(now, |inner| ((), inner.machine.reset(now)));
    }

    pub(crate) fn state(&self) -> State {
        if self.hot.closed.load(Ordering::Acquire) != NOT_CLOSED {
            return State::Closed;
        }
        self.lock().machine.state()
    }

    pub(crate) fn snapshot(&self) -> BreakerSnapshot {
        let now = self.instant(self.now());
        let (figures, totals) = self.update(now, |inner| {
            let figures = inner.machine.figures(now);
            ((figures, inner.totals), None)
        });
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
            usual_latency_ms: figures.usual_latency.map(|d| d.as_secs_f64() * 1_000.0),
            totals,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The machine is left consistent at every step; a panic elsewhere cannot corrupt it.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `change` under the lock at `now`: the open quiet period's counts are folded into
    /// the machine first, and after it the lock-free flags are published (a new period
    /// opened if the machine allows one) before the events of a change of state.
    fn update<T>(
        &self,
        now: Instant,
        change: impl FnOnce(&mut Inner) -> (T, Option<Transition>),
    ) -> T {
        let mut inner = self.lock();
        self.close_period(&mut inner);
        let (value, transition) = change(&mut inner);
        inner.totals.transitions += u64::from(transition.is_some());
        self.open_period(&mut inner, now);
        drop(inner);
        if let Some(transition) = transition {
            self.announce(transition);
        }
        value
    }

    fn close_period(&self, inner: &mut Inner) {
        let Some(opened) = inner.period.take() else {
            return;
        };
        inner.tag = inner.tag.checked_add(1).unwrap_or(NO_PERIOD + 1);
        let taken = self.hot.stripes.close(inner.tag);
        inner.totals.successes += u64::from(taken.successes);
        inner.totals.ignored += u64::from(taken.ignored);
        if taken.successes > 0 {
            let latency = Duration::from_micros(taken.latency_us);
            inner
                .machine
                .record_quiet(opened, taken.successes, taken.sampled, latency);
        }
    }

    /// Publishes the closed epoch, then opens a quiet period under the tag the slots carry
    /// (never published before: each close gives them a new one) if the machine allows one.
    fn open_period(&self, inner: &mut Inner, now: Instant) {
        let hot = &self.hot;
        let epoch = inner.machine.closed_epoch().unwrap_or(NOT_CLOSED);
        if hot.closed.load(Ordering::Relaxed) != epoch {
            hot.closed.store(epoch, Ordering::Release);
        }
        let Some(until) = inner.machine.quiet_until(now) else {
            hot.tag.store(NO_PERIOD, Ordering::Release);
            return;
        };
        // One nanosecond short: a call's nanoseconds since `origin` may be one less than
        // those between their instants, by which the machine would judge it.
        let until = nanos(until.saturating_duration_since(self.instant(hot.origin)));
        hot.until.store(until.saturating_sub(1), Ordering::Release);
        hot.tag.store(inner.tag, Ordering::Release);
        inner.period = Some(now);
    }

    /// The events of a change of state, after the lock is released.
    fn announce(&self, Transition { from, to }: Transition) {
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
            metrics::gauge!("proxflow_breaker_state", "breaker" => Arc::clone(&self.name))
                .set(state_number(to));
            metrics::counter!(
                "proxflow_breaker_transitions_total",
                "breaker" => Arc::clone(&self.name),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proxflow_core::ManualClock;

    use super::*;
    use crate::config::BreakerConfig;

    #[test]
    fn the_breaker_reads_the_coarse_clock_unless_it_needs_precision() {
        let clock_for = |config: BreakerConfig, clock: &Clock| {
            Breaker::clock_for(&Settings::new(&config), clock).is_coarse()
        };
        let tsc = Clock::tsc();
        assert!(clock_for(BreakerConfig::default(), &tsc));
        let precise = BreakerConfig {
            precise_clock: true,
            ..BreakerConfig::default()
        };
        assert!(!clock_for(precise, &tsc));
        let short = BreakerConfig {
            latency_threshold: Duration::from_millis(99),
            ..BreakerConfig::default()
        };
        assert!(!clock_for(short, &tsc));
        // A clock with no coarse form is read as it is given.
        let manual = ManualClock::new().clock();
        assert!(!clock_for(BreakerConfig::default(), &manual));
    }
}
