//! The ramp-up's controller: the share of calls to admit after the half-open probes succeed,
//! from what the admitted calls show. Plain data and arithmetic: no clock, no I/O; the time
//! since the ramp began is passed in.
//!
//! The rule, in [`RampUpMode::Adaptive`] (the default). The ramp is cut into steps, each at
//! least `ramp_up_step` and four usual latencies long, with at least `min_requests` calls
//! judged. Each step judges the calls that ended in it against the usual latency (see
//! [`Usual`]; without one, `latency_threshold` is the limit):
//!
//! - **Back**: their failure rate reached a quarter of `failure_threshold`, or their
//!   slow-call rate a quarter of the slow-call threshold: the share is halved. Such a step
//!   ends as soon as it has `min_requests` calls.
//! - **Hold**: their mean latency (successes faster than `latency_threshold`) is over the
//!   usual latency × (1 + `ramp_up_latency_tolerance`): the share grows no more. If fewer
//!   calls ended than started in the step (a queue is growing: the backend is saturated), it
//!   goes back to the lower of the last healthy step's share and 90 % of the share of calls
//!   the backend served, so that the queue drains.
//! - **Grow**: otherwise. The share is multiplied by `ramp_up_growth`, up to the share of the
//!   last Hold or Back; past it, or while the mean latency is over half the tolerance, by a
//!   tenth of that growth (× 1.02 for the default 1.2).
//!
//! Whatever the steps say, the share is never below the time-only ramp's (from
//! `ramp_up_floor` to all calls over `ramp_up_duration`, shaped by `ramp_up_aggression`),
//! except after a Back step, which delays that lower bound to the share it set. So without
//! failures the ramp takes `ramp_up_duration` at the longest, however high the latency. The
//! ramp ends when that lower bound reaches all calls, or after five healthy steps in a row
//! at the full share that growth reached. Only the window's thresholds, as in every state,
//! reopen the circuit.
//!
//! In [`RampUpMode::Time`] the share is the time-only ramp's, the origin's rule.

use std::time::Duration;

use crate::config::RampUpMode;

/// A Back step multiplies the share by this.
const BACK: f64 = 0.5;

/// A Back step comes when the step's failure (or slow-call) rate reaches this share of its
/// threshold.
const BACK_AT: f64 = 0.25;

/// Past the share of the last strain, or with the latency over half the tolerance, a Grow
/// step multiplies the share by `1 + (growth - 1) × CAUTION`.
const CAUTION: f64 = 0.1;

/// A saturated Hold goes back to this share of what the backend served.
const HEADROOM: f64 = 0.9;

/// Fewer calls ending than this share of those admitted in a step is a queue growing. Calls
/// still running at a step's end account for a few percent when the latency is a small part
/// of the step.
const SATURATED: f64 = 0.95;

/// A step lasts at least this many usual latencies, so that most calls it admits end in it.
const STEP_LATENCIES: u32 = 4;

/// Healthy steps in a row at the full share that end the ramp.
const CONFIRM: u32 = 5;

/// What the ramp's controller runs on, from a validated configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RampSettings {
    pub(crate) mode: RampUpMode,
    /// The time-only ramp's length: the adaptive ramp's longest without failures.
    pub(crate) duration: Duration,
    /// The share admitted when the ramp begins.
    pub(crate) floor: f64,
    /// The time-only ramp's shape: share = floor + (1 - floor) × progress^(1/aggression).
    pub(crate) aggression: f64,
    /// The shortest step.
    pub(crate) step: Duration,
    /// A Grow step's factor.
    pub(crate) growth: f64,
    /// A step is healthy while its mean latency is at most usual × (1 + tolerance).
    pub(crate) tolerance: f64,
    /// The fewest calls judged that a step needs.
    pub(crate) min_calls: u32,
    pub(crate) failure_threshold: f64,
    pub(crate) slow_call_threshold: f64,
    /// A call this slow is slow; without a usual latency, a step's mean latency over this is
    /// strain.
    pub(crate) latency_threshold: Duration,
}

impl RampSettings {
    /// The time-only ramp's share `elapsed` into the ramp: from the floor to 1 over the
    /// duration (1 at once for a zero duration).
    pub(crate) fn time_share(&self, elapsed: Duration) -> f64 {
        if self.duration.is_zero() {
            return 1.0;
        }
        let progress = (elapsed.as_secs_f64() / self.duration.as_secs_f64()).min(1.0);
        let floor = self.floor;
        floor + (1.0 - floor) * progress.powf(1.0 / self.aggression)
    }

    /// How far along the time-only ramp `share` is, in [0, 1].
    fn progress_of(&self, share: f64) -> f64 {
        if self.floor >= 1.0 {
            return 1.0;
        }
        let part = ((share - self.floor) / (1.0 - self.floor)).clamp(0.0, 1.0);
        part.powf(self.aggression)
    }

    /// The latency over which a step's mean is strain: the usual latency with the tolerance,
    /// never over `latency_threshold`; `latency_threshold` without a usual latency.
    fn latency_limit(&self, usual: Option<Duration>, tolerance: f64) -> Duration {
        match usual {
            Some(usual) => {
                let limit = usual.as_secs_f64() * (1.0 + tolerance);
                if limit < self.latency_threshold.as_secs_f64() {
                    Duration::from_secs_f64(limit)
                } else {
                    self.latency_threshold
                }
            }
            None => self.latency_threshold,
        }
    }
}

/// What the calls of one step showed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Observation {
    /// Calls that asked for leave in the step, admitted or not.
    pub(crate) offered: u32,
    /// Calls admitted in the step.
    pub(crate) admitted: u32,
    /// Calls that ended in the step, judged or ignored.
    pub(crate) ended: u32,
    /// Calls judged (ignored ones are not counted).
    pub(crate) calls: u32,
    pub(crate) failures: u32,
    /// Calls at or over `latency_threshold`, failed or not.
    pub(crate) slow: u32,
    /// Successes under `latency_threshold`, whose latencies `latency_ns` sums.
    pub(crate) fast_successes: u32,
    pub(crate) latency_ns: u64,
}

impl Observation {
    /// Counts a call that asked for leave.
    pub(crate) fn offer(&mut self, admitted: bool) {
        self.offered = self.offered.saturating_add(1);
        self.admitted = self.admitted.saturating_add(u32::from(admitted));
    }

    /// Counts a call that ended ignored.
    pub(crate) fn ignore(&mut self) {
        self.ended = self.ended.saturating_add(1);
    }

    /// Counts a call that ended and was judged.
    pub(crate) fn add(&mut self, failed: bool, slow: bool, latency: Duration) {
        self.ended = self.ended.saturating_add(1);
        self.calls = self.calls.saturating_add(1);
        self.failures = self.failures.saturating_add(u32::from(failed));
        self.slow = self.slow.saturating_add(u32::from(slow));
        if !failed && !slow {
            self.fast_successes = self.fast_successes.saturating_add(1);
            self.latency_ns = self
                .latency_ns
                .saturating_add(proxflow_core::clock::nanos(latency));
        }
    }

    /// The mean latency of the fast successes, if any.
    pub(crate) fn mean_latency(&self) -> Option<Duration> {
        (self.fast_successes > 0)
            .then(|| Duration::from_nanos(self.latency_ns / u64::from(self.fast_successes)))
    }

    /// Whether fewer calls ended than were admitted, by more than the calls still running
    /// at a step's end explain: a queue grows somewhere.
    fn saturated(&self) -> bool {
        f64::from(self.ended) < SATURATED * f64::from(self.admitted)
    }

    /// The share of the offered calls that succeeded.
    fn served(&self) -> f64 {
        let successes = self.calls.saturating_sub(self.failures);
        f64::from(successes) / f64::from(self.offered.max(1))
    }
}

/// A step's verdict on the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Healthy: admit more.
    Grow,
    /// Latency climbs: admit no more (saturated: less, so that the queue drains).
    Hold,
    /// Failures or slow calls climb: admit half as many.
    Back,
}

/// The share of calls a ramp-up admits. Made when the ramp begins; told each step's
/// [`Observation`]; asked the share at any moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RampController {
    settings: RampSettings,
    /// A step lasts at least this long.
    step: Duration,
    /// A step's mean latency over this is strain.
    limit: Duration,
    /// Over this, growth is cautious.
    warm: Duration,
    /// The share the last step set.
    share: f64,
    /// How late the time-only ramp, the share's lower bound, runs: Back steps delay it.
    delay: Duration,
    /// The share of the last healthy step.
    healthy: f64,
    /// The share at the last Back or Hold step, if any: growth is cautious past it.
    strained_at: Option<f64>,
    /// The share is full since a Grow step: healthy steps there end the ramp.
    full_by_growth: bool,
    /// Healthy steps in a row at the full share that growth reached.
    confirmed: u32,
}

impl RampController {
    /// A ramp beginning now, judged against `usual`, the closed breaker's usual latency.
    pub(crate) fn new(settings: RampSettings, usual: Option<Duration>) -> RampController {
        let floor = settings.floor.min(1.0);
        let step = usual.map_or(settings.step, |usual| {
            settings.step.max(usual.saturating_mul(STEP_LATENCIES))
        });
        RampController {
            settings,
            step,
            limit: settings.latency_limit(usual, settings.tolerance),
            warm: settings.latency_limit(usual, settings.tolerance / 2.0),
            share: floor,
            delay: Duration::ZERO,
            healthy: floor,
            strained_at: None,
            full_by_growth: false,
            confirmed: 0,
        }
    }

    /// When a refused call may ask again with a chance of another answer: after a step (the
    /// adaptive ramp's share changes at steps), or a second (the time-only ramp's grows
    /// slowly).
    pub(crate) fn retry_after(&self) -> Duration {
        match self.settings.mode {
            RampUpMode::Adaptive => self.step,
            RampUpMode::Time => Duration::from_secs(1),
        }
    }

    /// The time-only ramp's share `elapsed` into the ramp, as late as Back steps made it.
    fn time_share(&self, elapsed: Duration) -> f64 {
        self.settings.time_share(elapsed.saturating_sub(self.delay))
    }

    /// The share to admit `elapsed` into the ramp, in [floor, 1]: the time-only ramp's in
    /// the time mode; adaptive, the last step's, never below the (delayed) time-only ramp's.
    pub(crate) fn share(&self, elapsed: Duration) -> f64 {
        let time = self.time_share(elapsed);
        match self.settings.mode {
            RampUpMode::Time => time,
            RampUpMode::Adaptive => self.share.max(time).min(1.0),
        }
    }

    /// Whether the ramp is over: the (delayed) time-only ramp admits all calls, or enough
    /// healthy steps in a row ran at the full share that growth reached.
    pub(crate) fn done(&self, elapsed: Duration) -> bool {
        self.confirmed >= CONFIRM || self.time_share(elapsed) >= 1.0
    }

    /// Whether a step that began `in_step` ago and saw `seen` ends now: never in the time
    /// mode; else with `min_calls` calls judged, once the step's length has passed, or at
    /// once on a Back verdict.
    pub(crate) fn due(&self, seen: &Observation, in_step: Duration) -> bool {
        self.settings.mode == RampUpMode::Adaptive
            && seen.calls >= self.settings.min_calls
            && (in_step >= self.step || self.judge(seen) == Verdict::Back)
    }

    /// What a step's calls say about the backend.
    pub(crate) fn judge(&self, seen: &Observation) -> Verdict {
        let s = &self.settings;
        let calls = f64::from(seen.calls);
        let failing = f64::from(seen.failures) >= BACK_AT * s.failure_threshold * calls;
        let slow = f64::from(seen.slow) >= BACK_AT * s.slow_call_threshold * calls;
        if seen.calls > 0 && (failing || slow) {
            Verdict::Back
        } else if seen.mean_latency().is_some_and(|mean| mean > self.limit) {
            Verdict::Hold
        } else {
            Verdict::Grow
        }
    }

    /// Ends a step `elapsed` into the ramp whose calls showed `seen`; returns the share to
    /// admit from now on.
    pub(crate) fn step(&mut self, elapsed: Duration, seen: &Observation) -> f64 {
        if self.settings.mode == RampUpMode::Time {
            return self.share(elapsed);
        }
        let now = self.share(elapsed);
        let floor = self.settings.floor.min(1.0);
        let growth = self.settings.growth;
        let verdict = self.judge(seen);
        let next = match verdict {
            Verdict::Back => {
                self.strained_at = Some(now);
                let back = (now * BACK).max(floor);
                if back < self.time_share(elapsed) {
                    // The time-only ramp goes on from here, as if it had reached this share
                    // now.
                    let behind =
                        self.settings.progress_of(back) * self.settings.duration.as_secs_f64();
                    self.delay = elapsed.saturating_sub(Duration::from_secs_f64(behind));
                }
                back
            }
            Verdict::Hold => {
                self.strained_at = Some(now);
                if seen.saturated() {
                    self.healthy.min(seen.served() * HEADROOM).min(now)
                } else {
                    now
                }
            }
            Verdict::Grow => {
                self.healthy = now;
                let cautious = now * (1.0 + (growth - 1.0) * CAUTION);
                let warm = seen.mean_latency().is_some_and(|mean| mean > self.warm);
                match self.strained_at {
                    _ if warm => cautious,
                    Some(strain) if now * growth > strain => cautious.max(strain),
                    _ => now * growth,
                }
            }
        }
        .clamp(floor, 1.0);
        let full = verdict == Verdict::Grow && next >= 1.0;
        self.confirmed = if full && self.full_by_growth && now >= 1.0 {
            self.confirmed + 1
        } else {
            0
        };
        self.full_by_growth = full;
        self.share = next;
        self.share(elapsed)
    }
}

/// The usual latency of a closed breaker's fast successes: the lower of two means that
/// forget with time constants of one and ten evaluation windows. The short one follows a
/// backend that got faster; the long one keeps a few windows of overload (which the closed
/// breaker sees before it trips, or after a ramp that ended too soon) from passing for the
/// usual, and it learns a backend that got slower for good within about ten windows. Frozen
/// while the breaker is not closed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Usual {
    short: Decaying,
    long: Decaying,
}

/// How many evaluation windows the long mean remembers.
const LONG_MEMORY: f64 = 10.0;

/// Fewer calls than this (decayed) give no mean.
const USUAL_MIN_WEIGHT: f64 = 1.0;

/// A mean of latencies whose weights decay with a time constant.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Decaying {
    memory: f64,
    /// Decayed sums of latencies (seconds) and of calls.
    sum: f64,
    weight: f64,
    /// Seconds since the breaker was made of the last addition.
    at: f64,
}

impl Decaying {
    fn new(memory: f64) -> Decaying {
        Decaying {
            memory: memory.max(1e-3),
            sum: 0.0,
            weight: 0.0,
            at: 0.0,
        }
    }

    fn add(&mut self, at: f64, calls: u32, latency: f64) {
        // Additions a ten-thousandth of the memory apart (a millisecond of a 10 s window) count
        // as one instant: calls recorded one by one, under the breaker's lock, mostly skip the
        // exponential.
        if at - self.at > self.memory * 1e-4 {
            let decay = (-(at - self.at) / self.memory).exp();
            self.sum *= decay;
            self.weight *= decay;
            self.at = at;
        }
        self.sum += latency;
        self.weight += f64::from(calls);
    }

    fn mean(&self) -> Option<f64> {
        (self.weight >= USUAL_MIN_WEIGHT).then(|| self.sum / self.weight)
    }
}

impl Usual {
    /// Means that forget over `window` and ten times that.
    pub(crate) fn new(window: Duration) -> Usual {
        let window = window.as_secs_f64();
        Usual {
            short: Decaying::new(window),
            long: Decaying::new(window * LONG_MEMORY),
        }
    }

    /// Adds `calls` fast successes ending at `at` (seconds since the breaker was made) whose
    /// latencies sum to `latency`.
    pub(crate) fn add(&mut self, at: f64, calls: u32, latency: Duration) {
        if calls == 0 {
            return;
        }
        let latency = latency.as_secs_f64();
        self.short.add(at, calls, latency);
        self.long.add(at, calls, latency);
    }

    /// The usual latency, once a call was seen.
    pub(crate) fn mean(&self) -> Option<Duration> {
        let short = self.short.mean()?;
        let long = self.long.mean().unwrap_or(short);
        Some(Duration::from_secs_f64(short.min(long)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const S: Duration = Duration::from_secs(1);

    fn settings() -> RampSettings {
        RampSettings {
            mode: RampUpMode::Adaptive,
            duration: 30 * S,
            floor: 0.1,
            aggression: 1.0,
            step: 100 * MS,
            growth: 1.2,
            tolerance: 0.2,
            min_calls: 10,
            failure_threshold: 0.5,
            slow_call_threshold: 0.5,
            latency_threshold: 5 * S,
        }
    }

    /// What a step's calls show, relative to the controller's limits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        /// Every call succeeds at once.
        Healthy,
        /// Every call succeeds, slower than the limit, as many ending as starting.
        Slower,
        /// As `Slower`, with a fifth of the admitted calls still waiting: a queue grows.
        Saturated,
        /// Every call fails.
        Failing,
    }

    fn observe(controller: &RampController, kind: Kind, calls: u32) -> Observation {
        let mut seen = Observation::default();
        let admitted = match kind {
            Kind::Saturated => calls + calls / 4 + 1,
            _ => calls,
        };
        for i in 0..admitted * 2 {
            seen.offer(i % 2 == 0);
        }
        let slower = (controller.limit + controller.settings.latency_threshold) / 2;
        for _ in 0..calls {
            match kind {
                Kind::Healthy => seen.add(false, false, Duration::ZERO),
                Kind::Slower | Kind::Saturated => seen.add(false, false, slower),
                Kind::Failing => seen.add(true, false, MS),
            }
        }
        seen
    }

    fn arb_settings() -> impl Strategy<Value = (RampSettings, Option<Duration>)> {
        (
            prop::sample::select(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0]),
            1u64..=120,
            prop::sample::select(vec![0.5, 1.0, 2.0, 4.0]),
            1u64..=1_000,
            prop::sample::select(vec![1.0, 1.05, 1.2, 1.5, 2.0, 4.0]),
            prop::sample::select(vec![0.0, 0.1, 0.2, 0.5, 1.0]),
            1u32..=20,
            prop::sample::select(vec![0.1, 0.25, 0.5, 1.0]),
            prop::option::of(1u64..=500),
        )
            .prop_map(
                |(
                    floor,
                    duration,
                    aggression,
                    step,
                    growth,
                    tolerance,
                    min_calls,
                    threshold,
                    usual,
                )| {
                    let settings = RampSettings {
                        mode: RampUpMode::Adaptive,
                        duration: Duration::from_secs(duration),
                        floor,
                        aggression,
                        step: Duration::from_millis(step),
                        growth,
                        tolerance,
                        min_calls,
                        failure_threshold: threshold,
                        slow_call_threshold: threshold,
                        latency_threshold: 5 * S,
                    };
                    (settings, usual.map(Duration::from_millis))
                },
            )
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Healthy),
            Just(Kind::Slower),
            Just(Kind::Saturated),
            Just(Kind::Failing)
        ]
    }

    fn config() -> Config {
        Config {
            cases: 512,
            failure_persistence: None,
            rng_seed: RngSeed::Fixed(0x7a3b_0024),
            ..Config::default()
        }
    }

    /// The time-only ramp's share, for comparisons.
    fn time_share(settings: &RampSettings, elapsed: Duration) -> f64 {
        settings.time_share(elapsed)
    }

    proptest! {
        #![proptest_config(config())]

        /// Whatever the steps show and whenever they end, the share is in [floor, 1], a Back
        /// step halves it (not below the floor), a Hold step never raises it beyond the
        /// time-only bound, and without a Back step the ramp is over by `ramp_up_duration`.
        #[test]
        fn the_share_stays_in_bounds_and_follows_the_verdicts(
            (settings, usual) in arb_settings(),
            steps in prop::collection::vec((kind(), 0u64..3_000, 1u32..200), 1..80),
        ) {
            let mut controller = RampController::new(settings, usual);
            let mut elapsed = Duration::ZERO;
            let mut backed = false;
            for (kind, gap_ms, calls) in steps {
                elapsed += Duration::from_millis(gap_ms);
                let before = controller.share(elapsed);
                prop_assert!((settings.floor..=1.0).contains(&before), "share {before}");
                let seen = observe(&controller, kind, calls.max(settings.min_calls));
                let verdict = controller.judge(&seen);
                let after = controller.step(elapsed, &seen);
                prop_assert!((settings.floor..=1.0).contains(&after), "share {after}");
                match verdict {
                    Verdict::Back => {
                        backed = true;
                        // Within the rounding of the time-only ramp's delay to a nanosecond.
                        let expected = (before * BACK).max(settings.floor);
                        prop_assert!((after - expected).abs() < 1e-6, "{before} -> {after}");
                    }
                    Verdict::Hold => prop_assert!(after <= before + 1e-12, "{before} -> {after}"),
                    Verdict::Grow => prop_assert!(after >= before - 1e-12, "{before} -> {after}"),
                }
                // Between steps the share only grows, with time.
                let later = controller.share(elapsed + settings.step);
                prop_assert!(later >= after - 1e-12);
            }
            if !backed {
                prop_assert!(controller.done(elapsed.max(settings.duration)));
            }
        }

        /// Healthy steps only: the share never falls, grows by `ramp_up_growth` a step (or
        /// reaches all calls), and the ramp is over within the steps growth takes from the
        /// floor to all calls, plus the confirmation, whatever the time-only ramp says.
        #[test]
        fn healthy_steps_grow_the_share_to_the_end_in_bounded_steps(
            (settings, usual) in arb_settings(),
            step_ms in 1u64..=200,
        ) {
            prop_assume!(settings.growth > 1.0);
            let mut controller = RampController::new(settings, usual);
            let bound = ((1.0 / settings.floor).ln() / settings.growth.ln()).ceil() as u32
                + CONFIRM
                + 1;
            let mut elapsed = Duration::ZERO;
            let mut steps = 0;
            while !controller.done(elapsed) {
                prop_assert!(steps <= bound, "not over after {steps} healthy steps (bound {bound})");
                elapsed += Duration::from_millis(step_ms);
                let before = controller.share(elapsed);
                let seen = observe(&controller, Kind::Healthy, settings.min_calls);
                let after = controller.step(elapsed, &seen);
                prop_assert!(
                    after >= (before * settings.growth).min(1.0) - 1e-9,
                    "{before} -> {after}"
                );
                steps += 1;
            }
        }

        /// Strained from the start (the calls slower than the limit, the backend keeping up):
        /// the share is the time-only ramp's at every moment, never above it, and the ramp
        /// takes `ramp_up_duration`.
        #[test]
        fn a_strained_ramp_is_the_time_only_ramp(
            (settings, usual) in arb_settings(),
            gaps in prop::collection::vec(1u64..2_000, 1..60),
        ) {
            let usual = usual.unwrap_or(MS);
            let settings = RampSettings { tolerance: settings.tolerance.min(1.0), ..settings };
            let mut controller = RampController::new(settings, Some(usual));
            let mut elapsed = Duration::ZERO;
            for gap in gaps {
                elapsed += Duration::from_millis(gap);
                let seen = observe(&controller, Kind::Slower, settings.min_calls);
                prop_assert_eq!(controller.judge(&seen), Verdict::Hold);
                let share = controller.step(elapsed, &seen);
                prop_assert!((share - time_share(&settings, elapsed)).abs() < 1e-12);
                prop_assert_eq!(
                    controller.done(elapsed),
                    time_share(&settings, elapsed) >= 1.0
                );
            }
        }

        /// The time mode is the time-only ramp, whatever the calls show.
        #[test]
        fn the_time_mode_ignores_the_calls(
            (settings, usual) in arb_settings(),
            steps in prop::collection::vec((kind(), 0u64..3_000), 1..40),
        ) {
            let settings = RampSettings { mode: RampUpMode::Time, ..settings };
            let mut controller = RampController::new(settings, usual);
            let mut elapsed = Duration::ZERO;
            for (kind, gap) in steps {
                elapsed += Duration::from_millis(gap);
                let seen = observe(&controller, kind, settings.min_calls);
                prop_assert!(!controller.due(&seen, elapsed));
                let share = controller.step(elapsed, &seen);
                prop_assert_eq!(share, time_share(&settings, elapsed));
                prop_assert_eq!(controller.done(elapsed), share >= 1.0);
            }
        }
    }

    #[test]
    fn a_step_needs_its_length_and_its_calls_unless_failures_climb() {
        let controller = RampController::new(settings(), Some(20 * MS));
        let healthy = observe(&controller, Kind::Healthy, 10);
        assert!(!controller.due(&healthy, 99 * MS), "too short");
        assert!(controller.due(&healthy, 100 * MS));
        let few = observe(&controller, Kind::Healthy, 9);
        assert!(!controller.due(&few, S), "too few calls");
        let failing = observe(&controller, Kind::Failing, 10);
        assert!(controller.due(&failing, MS), "at once");
        // A step lasts four usual latencies at least.
        let slow_backend = RampController::new(settings(), Some(50 * MS));
        assert!(!slow_backend.due(&healthy, 150 * MS));
        assert!(slow_backend.due(&healthy, 200 * MS));
    }

    #[test]
    fn the_verdicts_read_failures_then_latency() {
        let controller = RampController::new(settings(), Some(20 * MS));
        let mut seen = Observation::default();
        for _ in 0..100 {
            seen.offer(true);
            seen.add(false, false, 24 * MS);
        }
        assert_eq!(
            controller.judge(&seen),
            Verdict::Grow,
            "at the limit: 20 ms × 1.2"
        );
        seen.add(false, false, 30 * MS);
        assert_eq!(controller.judge(&seen), Verdict::Hold);
        // 12.5 % failures: a quarter of the 0.5 threshold.
        for _ in 0..15 {
            seen.add(true, false, MS);
        }
        assert_eq!(controller.judge(&seen), Verdict::Back);
        // Slow calls count against the slow-call threshold the same way.
        let mut slow = Observation::default();
        for i in 0..8 {
            slow.add(false, i < 1, 6 * S);
        }
        assert_eq!(controller.judge(&slow), Verdict::Back);
    }

    #[test]
    fn a_saturated_hold_drains_the_queue() {
        let mut controller = RampController::new(settings(), Some(20 * MS));
        let mut elapsed = Duration::ZERO;
        // Healthy up to about 0.6.
        while controller.share(elapsed) < 0.6 {
            elapsed += 100 * MS;
            let seen = observe(&controller, Kind::Healthy, 50);
            controller.step(elapsed, &seen);
        }
        let healthy = controller.share(elapsed);
        elapsed += 100 * MS;
        let grown = controller.step(elapsed, &observe(&controller, Kind::Healthy, 50));
        assert!((grown - healthy * 1.2).abs() < 1e-9);
        // The backend served 40 % of the offered calls while 50 % were admitted and the
        // latency climbed: back to 90 % of what it served.
        let mut saturated = Observation::default();
        for i in 0..200 {
            saturated.offer(i % 2 == 0);
        }
        for _ in 0..80 {
            saturated.add(false, false, 100 * MS);
        }
        elapsed += 100 * MS;
        let held = controller.step(elapsed, &saturated);
        assert!((held - 0.36).abs() < 1e-9, "{held}");
        // Not saturated (as many ended as started): the share holds where it is.
        elapsed += 100 * MS;
        let slower = observe(&controller, Kind::Slower, 50);
        assert_eq!(controller.step(elapsed, &slower), held);
        // At the share of the last strain, growth is cautious: × 1.02 a step.
        let mut share = held;
        for _ in 0..3 {
            elapsed += 100 * MS;
            share = controller.step(elapsed, &observe(&controller, Kind::Healthy, 50));
        }
        assert!((share - 0.36 * 1.02f64.powi(3)).abs() < 1e-9, "{share}");
    }

    #[test]
    fn a_back_step_delays_the_time_only_ramp() {
        let mut controller = RampController::new(settings(), Some(20 * MS));
        let elapsed = 15 * S;
        // The time-only ramp is at 0.55 by now.
        assert!((controller.share(elapsed) - 0.55).abs() < 1e-9);
        let failing = observe(&controller, Kind::Failing, 10);
        let back = controller.step(elapsed, &failing);
        assert!((back - 0.275).abs() < 1e-9, "{back}");
        // From there, the time-only ramp's pace: 3 % a second.
        assert!((controller.share(elapsed + S) - 0.305).abs() < 1e-9);
        assert!(!controller.done(30 * S));
        assert!(controller.done(elapsed + S * 24 + S / 6 + MS));
    }

    #[test]
    fn the_ramp_ends_after_healthy_steps_at_the_full_share() {
        let mut controller = RampController::new(settings(), Some(20 * MS));
        let mut elapsed = Duration::ZERO;
        let mut steps = 0;
        while !controller.done(elapsed) {
            elapsed += 100 * MS;
            controller.step(elapsed, &observe(&controller, Kind::Healthy, 20));
            steps += 1;
        }
        // 13 steps from 10 % to all calls (1.2^13 > 10), then five at all calls.
        assert_eq!(steps, 13 + CONFIRM);
        assert!(elapsed < 2 * S);
    }

    #[test]
    fn the_usual_latency_forgets_a_short_overload() {
        let mut usual = Usual::new(10 * S);
        assert_eq!(usual.mean(), None);
        for second in 0..60 {
            usual.add(f64::from(second), 1_000, 20 * S);
        }
        let mean = usual.mean().unwrap();
        assert!((mean.as_secs_f64() - 0.020).abs() < 1e-9, "{mean:?}");
        // Five seconds of overload at 100 ms: the short mean goes up, the long one little.
        for second in 60..65 {
            usual.add(f64::from(second), 1_000, 100 * S);
        }
        let mean = usual.mean().unwrap();
        assert!(mean < 30 * MS, "{mean:?}");
        // A backend faster for good is learned within a few windows.
        for second in 65..115 {
            usual.add(f64::from(second), 1_000, 10 * S);
        }
        let mean = usual.mean().unwrap();
        assert!(mean < 11 * MS, "{mean:?}");
        // One slower for good, within ten windows or so (the long mean's memory).
        for second in 115..400 {
            usual.add(f64::from(second), 1_000, 40 * S);
        }
        let mean = usual.mean().unwrap();
        assert!(mean > 35 * MS, "{mean:?}");
    }
}
