//! Passive health: an upstream that fails `consecutive_failures` answers in a row is ejected
//! for `base_ejection`, twice as long for each ejection in a row, at most `max_ejection`; back
//! from an ejection (or new) it ramps up over `slow_start`. No clock: the time is passed in.

use std::time::Duration;

use proxflow_core::clock::nanos;

use crate::config::PassiveHealth;
use crate::policy::Nanos;

/// One upstream's failures and ejections in a row.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Ejections {
    failures_in_a_row: u32,
    ejections_in_a_row: u32,
}

/// An ejection that an answer caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ejected {
    /// Its length.
    pub(crate) length: Duration,
    /// When it ends.
    pub(crate) until: Nanos,
}

impl Ejections {
    /// One answer at `now`, to an upstream ejected until `ejected_until` (0 or a past time if
    /// it is not). A success ends the failures in a row, and, outside an ejection, the
    /// ejections in a row; the failure that completes a run outside an ejection ejects it.
    pub(crate) fn answer(
        &mut self,
        failed: bool,
        now: Nanos,
        ejected_until: Nanos,
        passive: &PassiveHealth,
    ) -> Option<Ejected> {
        if !failed {
            self.failures_in_a_row = 0;
            if now >= ejected_until {
                self.ejections_in_a_row = 0;
            }
            return None;
        }
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        if passive.consecutive_failures == 0
            || self.failures_in_a_row < passive.consecutive_failures
            || now < ejected_until
        {
            return None;
        }
        self.failures_in_a_row = 0;
        self.ejections_in_a_row = self.ejections_in_a_row.saturating_add(1);
        let factor = 2u32.saturating_pow(self.ejections_in_a_row - 1);
        let length = passive
            .base_ejection
            .saturating_mul(factor)
            .min(passive.max_ejection);
        Some(Ejected {
            length,
            until: now.saturating_add(nanos(length)),
        })
    }
}

/// Slow start's weights change in steps this long (a tenth of a second), so that a thread's
/// picks weigh the upstreams again at each step instead of on every pick.
pub(crate) const SLOW_START_STEP: Nanos = 100_000_000;

/// The share of its weight an upstream gets `age` after it joined (or came back): 10 % at
/// once, all of it after `slow_start`, linear between.
pub(crate) fn slow_start_factor(age: Duration, slow_start: Duration) -> f64 {
    if slow_start.is_zero() || age >= slow_start {
        return 1.0;
    }
    0.1 + 0.9 * age.as_secs_f64() / slow_start.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::policy::testing::config;

    const S: Nanos = 1_000_000_000;

    fn passive(consecutive_failures: u32) -> PassiveHealth {
        PassiveHealth {
            consecutive_failures,
            ..PassiveHealth::default()
        }
    }

    #[test]
    fn failures_in_a_row_eject_for_longer_each_time() {
        let passive = passive(3);
        let mut ejections = Ejections::default();
        let mut answer = |failed, now, until| ejections.answer(failed, now, until, &passive);
        assert_eq!(answer(true, 0, 0), None);
        assert_eq!(answer(false, 0, 0), None, "a success resets the count");
        answer(true, 0, 0);
        answer(true, 0, 0);
        let first = answer(true, 0, 0).unwrap();
        assert_eq!(first.length, Duration::from_secs(30));
        assert_eq!(first.until, 30 * S);
        // Back, it fails again at once: a second ejection in a row, twice as long.
        assert_eq!(answer(true, 30 * S, first.until), None);
        assert_eq!(answer(true, 30 * S, first.until), None);
        let second = answer(true, 30 * S, first.until).unwrap();
        assert_eq!(second.length, Duration::from_secs(60));
        // Failures during an ejection (of requests that were in flight) do not extend it, and
        // count towards the next run.
        for _ in 0..3 {
            assert_eq!(answer(true, 60 * S, second.until), None);
        }
        let third = answer(true, 90 * S, second.until).unwrap();
        assert_eq!(third.length, Duration::from_secs(120));
        // A success after it ends starts over.
        assert_eq!(answer(false, 210 * S, third.until), None);
        for _ in 0..2 {
            answer(true, 210 * S, third.until);
        }
        let fourth = answer(true, 210 * S, third.until).unwrap();
        assert_eq!(fourth.length, Duration::from_secs(30));
    }

    #[test]
    fn slow_start_ramps_linearly_from_a_tenth() {
        let ramp = Duration::from_secs(30);
        assert!((slow_start_factor(Duration::ZERO, ramp) - 0.1).abs() < 1e-9);
        assert!((slow_start_factor(Duration::from_secs(15), ramp) - 0.55).abs() < 1e-9);
        assert_eq!(slow_start_factor(ramp, ramp), 1.0);
        assert_eq!(slow_start_factor(Duration::ZERO, Duration::ZERO), 1.0);
    }

    proptest! {
        #![proptest_config(config(0x0070_6173_7369_7665))]

        /// Against a model: an ejection comes exactly on the `consecutive_failures`-th failure
        /// in a row outside an ejection, and lasts `base_ejection` doubled per ejection in a
        /// row, at most `max_ejection`; with `consecutive_failures` 0 nothing is ejected.
        #[test]
        fn ejections_follow_the_failures_in_a_row(
            threshold in 0u32..6,
            answers in prop::collection::vec((any::<bool>(), 0u64..20), 0..200),
        ) {
            let passive = PassiveHealth {
                consecutive_failures: threshold,
                base_ejection: Duration::from_secs(2),
                max_ejection: Duration::from_secs(20),
                ..PassiveHealth::default()
            };
            let mut ejections = Ejections::default();
            let (mut now, mut until) = (0, 0);
            let (mut run, mut in_a_row) = (0u32, 0u32);
            for (failed, step) in answers {
                now += step * S;
                let ejected = ejections.answer(failed, now, until, &passive);
                run = if failed { run + 1 } else { 0 };
                if !failed && now >= until {
                    in_a_row = 0;
                }
                let expected = failed && threshold > 0 && run >= threshold && now >= until;
                prop_assert_eq!(ejected.is_some(), expected);
                if let Some(ejected) = ejected {
                    run = 0;
                    in_a_row += 1;
                    let length = (2u64 << (in_a_row - 1).min(10)).min(20);
                    prop_assert_eq!(ejected.length, Duration::from_secs(length));
                    prop_assert_eq!(ejected.until, now + length * S);
                    until = ejected.until;
                }
            }
        }
    }
}
