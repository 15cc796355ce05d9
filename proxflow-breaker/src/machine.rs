//! The breaker's state machine, as plain data and functions of the time: no I/O, no clock, no
//! locks. The services own one behind a mutex and pass `now` in. Its states and edges are
//! documented on [`State`].

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{BreakerConfig, COARSE_CLOCK_MIN_THRESHOLD};
use crate::ramp::{Observation, RampController, RampSettings, Usual};
use crate::window::{Counts, Window};

/// The state of a breaker.
///
/// ```text
/// Closed --(rates reach a threshold, >= min_requests calls)--> Open
/// Open --(recovery timeout, longer after each trip in a row)--> HalfOpen
/// HalfOpen --(every probe succeeds)--> RampUp --(share reaches 100 %)--> Closed
/// (the share grows as the admitted calls allow; with `ramp_up_mode: time`, with time alone)
/// HalfOpen --(a probe fails or is slow)--> Open
/// RampUp --(rates reach a threshold, >= min_requests calls)--> Open
/// ```
///
/// A [`BreakerHandle`](crate::BreakerHandle) holds it in `ForcedOpen` or `ForcedClosed` until
/// its `reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Every call passes; outcomes are counted.
    Closed,
    /// Every call is refused until the recovery timeout.
    Open,
    /// A few probe calls pass; the rest are refused.
    HalfOpen,
    /// A growing share of calls passes, the rest are refused.
    RampUp,
    /// Held open by hand until reset.
    ForcedOpen,
    /// Held closed by hand until reset; outcomes are not judged.
    ForcedClosed,
}

/// How a call ended, as a [`Classify`](crate::Classify) judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Counts as a success (and as a slow call if it took `latency_threshold` or more).
    Success,
    /// Counts as a failure.
    Failure,
    /// Not counted at all (a 429, a cancelled call).
    Ignored,
}

/// The breaker's no to a call, and when asking again makes sense.
///
/// The generic form returns it in [`BreakerError::Open`](crate::BreakerError::Open); the HTTP
/// forms answer `503 Service Unavailable` with `Retry-After` and put it in the response's
/// extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// When asking again makes sense (in the HTTP answer's `Retry-After` too, in whole
    /// seconds, rounded up).
    pub retry_after: Duration,
    /// The state that refused: open, half-open with its probes out, ramp-up, or forced open.
    pub state: State,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "circuit breaker refused the call ({:?}); retry after {:?}",
            self.state, self.retry_after
        )
    }
}

/// A change of state, as the machine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Transition {
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
}

/// The settings the machine runs on, taken from a validated [`BreakerConfig`].
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    failure_threshold: f64,
    slow_call_threshold: f64,
    latency_threshold: Duration,
    min_requests: u32,
    window: Duration,
    recovery_timeout: Duration,
    recovery_backoff: f64,
    max_recovery_timeout: Duration,
    backoff_reset: Duration,
    half_open_max_requests: u32,
    ramp: RampSettings,
    precise_clock: bool,
}

impl Settings {
    pub(crate) fn new(config: &BreakerConfig) -> Settings {
        Settings {
            failure_threshold: config.failure_threshold,
            slow_call_threshold: config.slow_call_threshold(),
            latency_threshold: config.latency_threshold,
            min_requests: config.min_requests,
            window: config.evaluation_window,
            recovery_timeout: config.recovery_timeout,
            recovery_backoff: config.recovery_backoff,
            max_recovery_timeout: config.max_recovery_timeout,
            backoff_reset: config.backoff_reset,
            half_open_max_requests: config.half_open_max_requests,
            ramp: RampSettings {
                mode: config.ramp_up_mode,
                duration: config.ramp_up_duration,
                floor: config.ramp_up_floor,
                aggression: config.ramp_up_aggression,
                step: config.ramp_up_step,
                growth: config.ramp_up_growth,
                tolerance: config.ramp_up_latency_tolerance,
                min_calls: config.min_requests,
                failure_threshold: config.failure_threshold,
                slow_call_threshold: config.slow_call_threshold(),
                latency_threshold: config.latency_threshold,
            },
            precise_clock: config.precise_clock
                || config.latency_threshold < COARSE_CLOCK_MIN_THRESHOLD,
        }
    }

    /// Whether the breaker reads its clock as it is rather than [`Clock::coarse`].
    ///
    /// [`Clock::coarse`]: proxflow_core::Clock::coarse
    pub(crate) fn precise_clock(&self) -> bool {
        self.precise_clock
    }

    /// Open time after `trips` trips in a row: the recovery timeout grown by the backoff,
    /// capped.
    fn open_time(&self, trips: u32) -> Duration {
        let factor = self
            .recovery_backoff
            .powi(i32::try_from(trips.saturating_sub(1)).unwrap_or(i32::MAX));
        let secs = self.recovery_timeout.as_secs_f64() * factor;
        if secs.is_finite() && secs < self.max_recovery_timeout.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            self.max_recovery_timeout
        }
    }

    /// Whether the window's counts open the circuit.
    fn trips(&self, counts: Counts) -> bool {
        counts.calls >= self.min_requests
            && (Counts::reaches(counts.failures, counts.calls, self.failure_threshold)
                || Counts::reaches(counts.slow, counts.calls, self.slow_call_threshold))
    }

    /// The share of calls the time-only ramp admits `elapsed` into it.
    #[cfg(test)]
    pub(crate) fn ramp_share(&self, elapsed: Duration) -> f64 {
        self.ramp.time_share(elapsed)
    }
}

/// Leave to call the protected service, or a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Admit(Permit),
    Refuse(Refusal),
}

/// What an admitted call must hand back with its outcome. Outcomes of calls admitted before
/// the last change of state (another epoch) are not counted: each state judges its own calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Permit {
    pub(crate) epoch: u64,
}

// The ramp's variant is the largest by far (its controller), and that is fine: a breaker has
// one phase, changed in place on the rare changes of state, never moved per call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        in_flight: u32,
        succeeded: u32,
    },
    RampUp {
        credit: f64,
        controller: RampController,
        /// The calls of the current step, and when it began.
        seen: Observation,
        step_began: Instant,
    },
}

/// Half-open refusals (and the time-only ramp's): come back soon; the share grows by the
/// second. The adaptive ramp's come back after a step, when its share may have changed.
const SOON: Duration = Duration::from_secs(1);

/// A copy of a machine's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Figures {
    pub(crate) state: State,
    pub(crate) window: Counts,
    pub(crate) time_in_state: Duration,
    pub(crate) trips_in_a_row: u32,
    /// Open: the time left. Otherwise zero.
    pub(crate) retry_after: Duration,
    /// Ramp-up: the share admitted now. Otherwise 1 if calls pass, 0 if not.
    pub(crate) admitted_share: f64,
    /// The usual latency of the closed breaker's fast successes (frozen while not closed).
    pub(crate) usual_latency: Option<Duration>,
}

#[derive(Debug)]
pub(crate) struct Machine {
    settings: Settings,
    phase: Phase,
    forced: Option<State>,
    window: Window,
    epoch: u64,
    trips_in_a_row: u32,
    /// When the current phase (or forced state) began.
    since: Instant,
    /// When the machine was made.
    origin: Instant,
    /// The closed breaker's usual latency, which the ramp judges its calls against.
    usual: Usual,
}

impl Machine {
    pub(crate) fn new(settings: Settings, now: Instant) -> Machine {
        let window = Window::new(settings.window, now);
        let settings_window = settings.window;
        Machine {
            settings,
            phase: Phase::Closed,
            forced: None,
            window,
            epoch: 0,
            trips_in_a_row: 0,
            since: now,
            origin: now,
            usual: Usual::new(settings_window),
        }
    }

    pub(crate) fn state(&self) -> State {
        if let Some(forced) = self.forced {
            return forced;
        }
        match self.phase {
            Phase::Closed => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
            Phase::RampUp { .. } => State::RampUp,
        }
    }

    pub(crate) fn latency_threshold(&self) -> Duration {
        self.settings.latency_threshold
    }

    /// The epoch of the closed state, if closed: a call admitted with it needs no lock.
    pub(crate) fn closed_epoch(&self) -> Option<u64> {
        matches!((self.forced, self.phase), (None, Phase::Closed)).then_some(self.epoch)
    }

    /// May a call go through now?
    pub(crate) fn acquire(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        let admit = Admission::Admit(Permit { epoch: self.epoch });
        match self.forced {
            Some(State::ForcedClosed) => return (admit, None),
            Some(state) => {
                let refuse = Admission::Refuse(Refusal {
                    retry_after: self.settings.recovery_timeout,
                    state,
                });
                return (refuse, None);
            }
            None => {}
        }
        let mut transition = None;
        if let Phase::Open { until } = self.phase {
            if now < until {
                let refuse = Admission::Refuse(Refusal {
                    retry_after: until - now,
                    state: State::Open,
                });
                return (refuse, None);
            }
            transition = self.enter(
                now,
                Phase::HalfOpen {
                    in_flight: 0,
                    succeeded: 0,
                },
            );
        }
        if let Phase::RampUp { .. } = self.phase {
            if self.ramp_step(now, None) {
                transition = self.enter(now, Phase::Closed);
            }
        }
        let permit = Permit { epoch: self.epoch };
        let admission = match &mut self.phase {
            Phase::Closed => Admission::Admit(permit),
            Phase::Open { .. } => unreachable!("left above"),
            Phase::HalfOpen {
                in_flight,
                succeeded,
            } => {
                if *in_flight + *succeeded < self.settings.half_open_max_requests {
                    *in_flight += 1;
                    Admission::Admit(permit)
                } else {
                    Admission::Refuse(Refusal {
                        retry_after: SOON,
                        state: State::HalfOpen,
                    })
                }
            }
            Phase::RampUp {
                credit,
                controller,
                seen,
                ..
            } => {
                // Error diffusion: the admitted count never strays a whole call from the sum
                // of the shares, so the admitted share follows the target deterministically.
                *credit += controller.share(now.saturating_duration_since(self.since));
                let admit = *credit >= 1.0;
                seen.offer(admit);
                if admit {
                    *credit -= 1.0;
                    Admission::Admit(permit)
                } else {
                    Admission::Refuse(Refusal {
                        retry_after: controller.retry_after().min(SOON),
                        state: State::RampUp,
                    })
                }
            }
        };
        (admission, transition)
    }

    /// Counts the outcome of an admitted call that ended at `now` after `latency`.
    pub(crate) fn record(
        &mut self,
        now: Instant,
        permit: Permit,
        outcome: Outcome,
        latency: Duration,
    ) -> Option<Transition> {
        if permit.epoch != self.epoch || self.forced.is_some() {
            return None;
        }
        let slow = latency >= self.settings.latency_threshold;
        match &mut self.phase {
            Phase::Open { .. } => None,
            Phase::HalfOpen {
                in_flight,
                succeeded,
            } => {
                *in_flight -= 1;
                match outcome {
                    Outcome::Ignored => None,
                    Outcome::Failure => self.trip(now),
                    Outcome::Success if slow => self.trip(now),
                    Outcome::Success => {
                        *succeeded += 1;
                        if *succeeded < self.settings.half_open_max_requests {
                            None
                        } else if self.settings.ramp.duration.is_zero() {
                            self.enter(now, Phase::Closed)
                        } else {
                            self.window.clear();
                            let controller =
                                RampController::new(self.settings.ramp, self.usual.mean());
                            self.enter(
                                now,
                                Phase::RampUp {
                                    credit: 0.0,
                                    controller,
                                    seen: Observation::default(),
                                    step_began: now,
                                },
                            )
                        }
                    }
                }
            }
            Phase::Closed | Phase::RampUp { .. } => {
                let closed = matches!(self.phase, Phase::Closed);
                if closed
                    && now.saturating_duration_since(self.since) >= self.settings.backoff_reset
                {
                    self.trips_in_a_row = 0;
                }
                if outcome == Outcome::Ignored {
                    if let Phase::RampUp { seen, .. } = &mut self.phase {
                        seen.ignore();
                    }
                    return None;
                }
                let failed = outcome == Outcome::Failure;
                let counts = self.window.record(now, failed, slow);
                if self.settings.trips(counts) {
                    return self.trip(now);
                }
                if closed {
                    if !failed && !slow {
                        let at = self.seconds(now);
                        self.usual.add(at, 1, latency);
                    }
                    None
                } else {
                    self.ramp_step(now, Some((failed, slow, latency)));
                    None
                }
            }
        }
    }

    /// Until when a call of this closed epoch that succeeds faster than `latency_threshold`,
    /// or is ignored, changes nothing but a count: a caller may count such calls apart and
    /// hand them to [`Self::record_quiet`] later, unjudged, and the machine ends as if each
    /// had been recorded. `None` when each call must be recorded: any other state, or a
    /// window where more successes could still trip it (they raise the calls to
    /// `min_requests` while the failures are at the threshold of that many).
    ///
    /// Successes only lower the rates once `min_requests` is reached, so none of them can
    /// trip a window that the next `min_requests` calls would not. Until the newest bucket
    /// ends no call leaves the window, and the backoff is not due to reset before
    /// `backoff_reset` has passed.
    pub(crate) fn quiet_until(&mut self, now: Instant) -> Option<Instant> {
        self.closed_epoch()?;
        let counts = self.window.totals(now);
        let next = Counts {
            calls: counts
                .calls
                .saturating_add(1)
                .max(self.settings.min_requests),
            ..counts
        };
        if self.settings.trips(next) {
            return None;
        }
        let head_ends = self.window.head_ends()?;
        let backoff_resets = (self.trips_in_a_row > 0)
            .then(|| self.since.checked_add(self.settings.backoff_reset))
            .flatten();
        Some(backoff_resets.map_or(head_ends, |resets| resets.min(head_ends)))
    }

    /// Counts `successes` fast successes of this closed epoch that ended before the instant
    /// [`Self::quiet_until`] gave at `now`; `sampled` of them, whose latencies sum to
    /// `latency`, feed the usual latency.
    pub(crate) fn record_quiet(
        &mut self,
        now: Instant,
        successes: u32,
        sampled: u32,
        latency: Duration,
    ) {
        debug_assert!(self.closed_epoch().is_some());
        self.window.add(
            now,
            Counts {
                calls: successes,
                ..Counts::default()
            },
        );
        if sampled > 0 {
            // The samples stand for every success of the period.
            let at = self.seconds(now);
            let scale = f64::from(successes) / f64::from(sampled);
            self.usual.add(at, successes, latency.mul_f64(scale));
        }
    }

    /// Seconds from the machine's making to `now`.
    fn seconds(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.origin).as_secs_f64()
    }

    /// Ramp-up: counts a call that ended at `now` in the current step and ends the step if it
    /// is due. Returns whether the ramp is over; the circuit closes when a call next asks for
    /// leave.
    fn ramp_step(&mut self, now: Instant, call: Option<(bool, bool, Duration)>) -> bool {
        let elapsed = now.saturating_duration_since(self.since);
        let Phase::RampUp {
            controller,
            seen,
            step_began,
            ..
        } = &mut self.phase
        else {
            return false;
        };
        if let Some((failed, slow, latency)) = call {
            seen.add(failed, slow, latency);
        }
        if controller.due(seen, now.saturating_duration_since(*step_began)) {
            controller.step(elapsed, seen);
            *seen = Observation::default();
            *step_began = now;
        }
        controller.done(elapsed)
    }

    /// Holds the breaker open (`ForcedOpen`) or closed (`ForcedClosed`) until [`Self::reset`].
    pub(crate) fn force(&mut self, now: Instant, state: State) -> Option<Transition> {
        debug_assert!(matches!(state, State::ForcedOpen | State::ForcedClosed));
        let from = self.state();
        self.forced = Some(state);
        self.epoch += 1;
        self.since = now;
        (from != state).then_some(Transition { from, to: state })
    }

    /// Back to closed with an empty window and no backoff, forced or not.
    pub(crate) fn reset(&mut self, now: Instant) -> Option<Transition> {
        let from = self.state();
        self.forced = None;
        self.window.clear();
        self.trips_in_a_row = 0;
        self.phase = Phase::Closed;
        self.epoch += 1;
        self.since = now;
        (from != State::Closed).then_some(Transition {
            from,
            to: State::Closed,
        })
    }

    pub(crate) fn figures(&mut self, now: Instant) -> Figures {
        let state = self.state();
        let (retry_after, admitted_share) = match (state, self.phase) {
            (State::Open, Phase::Open { until }) => (until.saturating_duration_since(now), 0.0),
            (State::RampUp, Phase::RampUp { controller, .. }) => (
                Duration::ZERO,
                controller.share(now.saturating_duration_since(self.since)),
            ),
            (State::ForcedOpen, _) => (Duration::ZERO, 0.0),
            _ => (Duration::ZERO, 1.0),
        };
        Figures {
            state,
            window: self.window.totals(now),
            time_in_state: now.saturating_duration_since(self.since),
            trips_in_a_row: self.trips_in_a_row,
            retry_after,
            admitted_share,
            usual_latency: self.usual.mean(),
        }
    }

    fn trip(&mut self, now: Instant) -> Option<Transition> {
        self.trips_in_a_row = self.trips_in_a_row.saturating_add(1);
        let until = now + self.settings.open_time(self.trips_in_a_row);
        self.window.clear();
        self.enter(now, Phase::Open { until })
    }

    fn enter(&mut self, now: Instant, phase: Phase) -> Option<Transition> {
        let from = self.state();
        self.phase = phase;
        self.epoch += 1;
        self.since = now;
        Some(Transition {
            from,
            to: self.state(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RampUpMode;

    const MS: Duration = Duration::from_millis(1);
    const S: Duration = Duration::from_secs(1);

    fn config() -> BreakerConfig {
        BreakerConfig {
            min_requests: 4,
            recovery_timeout: 10 * S,
            ramp_up_duration: 10 * S,
            half_open_max_requests: 2,
            ..BreakerConfig::default()
        }
    }

    fn machine(config: &BreakerConfig, now: Instant) -> Machine {
        Machine::new(Settings::new(config), now)
    }

    fn permit(machine: &mut Machine, now: Instant) -> Permit {
        match machine.acquire(now).0 {
            Admission::Admit(permit) => permit,
            refused => panic!("refused: {refused:?} in {:?}", machine.state()),
        }
    }

    fn call(machine: &mut Machine, now: Instant, outcome: Outcome) -> Option<Transition> {
        let permit = permit(machine, now);
        machine.record(now, permit, outcome, MS)
    }

    fn open(machine: &mut Machine, now: Instant) {
        for _ in 0..4 {
            if machine.state() == State::Closed {
                call(machine, now, Outcome::Failure);
            }
        }
        assert_eq!(machine.state(), State::Open);
    }

    #[test]
    fn opens_at_the_failure_rate_with_enough_calls() {
        let t0 = Instant::now();
        let mut m = machine(&config(), t0);
        call(&mut m, t0, Outcome::Failure);
        call(&mut m, t0, Outcome::Failure);
        assert_eq!(m.state(), State::Closed, "below min_requests");
        call(&mut m, t0, Outcome::Success);
        let transition = call(&mut m, t0, Outcome::Failure);
        assert_eq!(
            transition,
            Some(Transition {
                from: State::Closed,
                to: State::Open
            })
        );
        assert_eq!(
            m.acquire(t0 + S).0,
            Admission::Refuse(Refusal {
                retry_after: 9 * S,
                state: State::Open
            })
        );
    }

    #[test]
    fn slow_calls_open_it_too() {
        let t0 = Instant::now();
        let mut m = machine(&config(), t0);
        for _ in 0..4 {
            let p = permit(&mut m, t0);
            m.record(t0, p, Outcome::Success, 5 * S);
        }
        assert_eq!(m.state(), State::Open);
    }

    #[test]
    fn ignored_calls_do_not_count() {
        let t0 = Instant::now();
        let mut m = machine(&config(), t0);
        for _ in 0..10 {
            call(&mut m, t0, Outcome::Ignored);
        }
        call(&mut m, t0, Outcome::Failure);
        assert_eq!(m.figures(t0).window.calls, 1);
        assert_eq!(m.state(), State::Closed);
    }

    #[test]
    fn half_open_admits_the_probes_only_and_all_must_succeed() {
        let t0 = Instant::now();
        let mut m = machine(&config(), t0);
        open(&mut m, t0);
        let t1 = t0 + 10 * S;
        let (first, transition) = m.acquire(t1);
        assert_eq!(transition.map(|t| t.to), Some(State::HalfOpen));
        let Admission::Admit(first) = first else {
            panic!()
        };
        let second = permit(&mut m, t1);
        assert!(matches!(
            m.acquire(t1).0,
            Admission::Refuse(Refusal {
                state: State::HalfOpen,
                ..
            })
        ));
        assert_eq!(m.record(t1, first, Outcome::Success, MS), None);
        let to_ramp = m.record(t1, second, Outcome::Success, MS);
        assert_eq!(to_ramp.map(|t| t.to), Some(State::RampUp));
    }

    #[test]
    fn a_failed_probe_reopens_for_longer() {
        let t0 = Instant::now();
        let mut m = machine(&config(), t0);
        open(&mut m, t0);
        let t1 = t0 + 10 * S;
        let p = permit(&mut m, t1);
        assert_eq!(
            m.record(t1, p, Outcome::Failure, MS).map(|t| t.to),
            Some(State::Open)
        );
        // Second trip in a row: 20 s.
        assert_eq!(m.figures(t1).retry_after, 20 * S);
        let t2 = t1 + 20 * S;
        let p = permit(&mut m, t2);
        // A slow success is a failed probe as well.
        m.record(t2, p, Outcome::Success, 6 * S);
        assert_eq!(m.figures(t2).retry_after, 40 * S);
    }

    #[test]
    fn a_cancelled_probe_frees_its_place() {
        let t0 = Instant::now();
        let mut m = machine(&config(), t0);
        open(&mut m, t0);
        let t1 = t0 + 10 * S;
        let a = permit(&mut m, t1);
        let _b = permit(&mut m, t1);
        m.record(t1, a, Outcome::Ignored, MS);
        permit(&mut m, t1);
    }

    #[test]
    fn outcomes_from_an_earlier_state_are_not_counted() {
        let t0 = Instant::now();
        let mut m = machine(&config(), t0);
        let stale = permit(&mut m, t0);
        open(&mut m, t0);
        let t1 = t0 + 10 * S;
        let probe = permit(&mut m, t1);
        assert_eq!(m.record(t1, stale, Outcome::Failure, MS), None);
        assert_eq!(m.state(), State::HalfOpen);
        m.record(t1, probe, Outcome::Success, MS);
    }

    #[test]
    fn the_time_ramp_admits_the_target_share_then_closes() {
        let t0 = Instant::now();
        let time = BreakerConfig {
            ramp_up_mode: RampUpMode::Time,
            ..config()
        };
        let mut m = machine(&time, t0);
        open(&mut m, t0);
        let t1 = t0 + 10 * S;
        for _ in 0..2 {
            call(&mut m, t1, Outcome::Success);
        }
        assert_eq!(m.state(), State::RampUp);
        // 1000 calls per second for 10 s: each second's admitted share within a point of
        // the target at its middle (linear from 10 % to 100 %).
        for second in 0..10u32 {
            let mut admitted = 0;
            for i in 0..1000u32 {
                let now = t1 + second * S + i * MS;
                if let (Admission::Admit(p), _) = m.acquire(now) {
                    admitted += 1;
                    m.record(now, p, Outcome::Success, MS);
                }
            }
            let target = 0.1 + 0.9 * (f64::from(second) + 0.5) / 10.0;
            let share = f64::from(admitted) / 1000.0;
            assert!(
                (share - target).abs() < 0.01,
                "second {second}: {share} vs {target}"
            );
        }
        let (admission, transition) = m.acquire(t1 + 10 * S);
        assert!(matches!(admission, Admission::Admit(_)));
        assert_eq!(transition.map(|t| t.to), Some(State::Closed));
        assert_eq!(m.closed_epoch(), Some(m.epoch));
    }

    #[test]
    fn failures_during_ramp_up_reopen_it() {
        let t0 = Instant::now();
        let mut m = machine(&config(), t0);
        open(&mut m, t0);
        let t1 = t0 + 10 * S;
        for _ in 0..2 {
            call(&mut m, t1, Outcome::Success);
        }
        let mut now = t1;
        while m.state() == State::RampUp {
            now += 10 * MS;
            if let (Admission::Admit(p), _) = m.acquire(now) {
                m.record(now, p, Outcome::Failure, MS);
            }
        }
        assert_eq!(m.state(), State::Open);
        assert!(now < t1 + 2 * S, "after min_requests failures");
    }

    #[test]
    fn a_long_healthy_run_resets_the_backoff() {
        let t0 = Instant::now();
        let config = BreakerConfig {
            ramp_up_duration: Duration::ZERO,
            ..config()
        };
        let mut m = machine(&config, t0);
        open(&mut m, t0);
        let t1 = t0 + 10 * S;
        for _ in 0..2 {
            call(&mut m, t1, Outcome::Success);
        }
        assert_eq!(m.state(), State::Closed, "no ramp-up configured");
        assert_eq!(m.figures(t1).trips_in_a_row, 1);
        let t2 = t1 + 600 * S;
        call(&mut m, t2, Outcome::Success);
        open(&mut m, t2);
        assert_eq!(
            m.figures(t2).retry_after,
            10 * S,
            "back to the first open time"
        );
    }

    #[test]
    fn open_time_is_capped() {
        let settings = Settings::new(&BreakerConfig::default());
        assert_eq!(settings.open_time(1), 60 * S);
        assert_eq!(settings.open_time(2), 120 * S);
        assert_eq!(settings.open_time(4), 480 * S);
        assert_eq!(settings.open_time(5), 600 * S);
        assert_eq!(settings.open_time(u32::MAX), 600 * S);
    }

    #[test]
    fn forced_states_hold_until_reset() {
        let t0 = Instant::now();
        let mut m = machine(&config(), t0);
        m.force(t0, State::ForcedOpen);
        assert!(matches!(m.acquire(t0).0, Admission::Refuse(_)));
        m.force(t0, State::ForcedClosed);
        for _ in 0..10 {
            call(&mut m, t0, Outcome::Failure);
        }
        assert_eq!(m.state(), State::ForcedClosed, "outcomes are not judged");
        assert_eq!(
            m.reset(t0),
            Some(Transition {
                from: State::ForcedClosed,
                to: State::Closed
            })
        );
        assert_eq!(m.closed_epoch(), Some(m.epoch));
    }

    #[test]
    fn ramp_share_follows_the_aggression_curve() {
        let linear = Settings::new(&BreakerConfig::default());
        assert!((linear.ramp_share(Duration::ZERO) - 0.1).abs() < 1e-9);
        assert!((linear.ramp_share(15 * S) - 0.55).abs() < 1e-9);
        assert_eq!(linear.ramp_share(30 * S), 1.0);
        let eager = Settings::new(&BreakerConfig {
            ramp_up_aggression: 2.0,
            ..BreakerConfig::default()
        });
        assert!(eager.ramp_share(15 * S) > 0.7);
    }

    #[test]
    fn the_ticker_unless_asked_or_the_threshold_is_short() {
        let precise = |config: BreakerConfig| Settings::new(&config).precise_clock();
        assert!(!precise(BreakerConfig::default()));
        assert!(precise(BreakerConfig {
            precise_clock: true,
            ..BreakerConfig::default()
        }));
        assert!(precise(BreakerConfig {
            latency_threshold: 50 * MS,
            ..BreakerConfig::default()
        }));
        assert!(!precise(BreakerConfig {
            latency_threshold: 100 * MS,
            ..BreakerConfig::default()
        }));
    }
}
