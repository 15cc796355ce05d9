//! `peak_ewma`, and the live signal of `adaptive` between updates: each upstream's latency
//! estimate jumps up to a slower answer at once and decays towards faster ones, as in Finagle
//! and tower's `PeakEwma`; of two upstreams drawn by weight, the lower estimate × (requests in
//! flight + 1) / weight wins.
//!
//! Estimates are in nanoseconds and times in [`Nanos`]; `decay` is the decay time in
//! nanoseconds (an estimate left alone for `decay` falls to 1/e of itself).

use super::Nanos;

/// The estimate of an upstream that has not answered yet: a guess, as tower's default RTT is.
pub(crate) const DEFAULT_RTT_NS: f64 = 1_000_000.0;

/// The share of an estimate left after `elapsed` nanoseconds.
#[inline]
fn kept(elapsed: Nanos, decay: f64) -> f64 {
    (-(elapsed as f64) / decay).exp()
}

/// `estimate`, set at `at`, decayed to `now` (no decay if `now` is earlier).
#[inline]
pub(crate) fn decayed(estimate: f64, at: Nanos, now: Nanos, decay: f64) -> f64 {
    estimate * kept(now.saturating_sub(at), decay)
}

/// The estimate after an answer that took `rtt` nanoseconds, at `now`: a slower answer than
/// the decayed estimate replaces it at once; a faster one pulls it down with the decay.
#[inline]
pub(crate) fn observe(estimate: f64, at: Nanos, now: Nanos, rtt: f64, decay: f64) -> f64 {
    let kept = kept(now.saturating_sub(at), decay);
    let estimate = estimate * kept;
    if rtt > estimate {
        rtt
    } else {
        estimate + rtt * (1.0 - kept)
    }
}

/// Whether `b`'s cost is below `a`'s, each given undecayed with the time it decays from. Both
/// decay by the same factor per nanosecond, so only the older is decayed to the newer's time:
/// one `exp` per comparison instead of two.
#[inline]
pub(crate) fn lower_cost(
    (b_cost, b_at): (f64, Nanos),
    (a_cost, a_at): (f64, Nanos),
    decay: f64,
) -> bool {
    if a_at <= b_at {
        b_cost < a_cost * kept(b_at - a_at, decay)
    } else {
        b_cost * kept(a_at - b_at, decay) < a_cost
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::policy::testing::config;

    const MS: f64 = 1e6;
    const SECOND: f64 = 1e9;

    #[test]
    fn the_estimate_jumps_up_and_decays_down() {
        let estimate = observe(DEFAULT_RTT_NS, 0, 0, 100.0 * MS, SECOND);
        assert_eq!(estimate, 100.0 * MS);
        assert_eq!(
            observe(estimate, 0, 0, MS, SECOND),
            100.0 * MS,
            "no time passed: the peak holds"
        );
        let later = decayed(estimate, 0, 1_000_000_000, SECOND);
        assert!((later - 100.0 * MS / std::f64::consts::E).abs() < 1.0);
    }

    fn cost() -> impl Strategy<Value = (f64, Nanos)> {
        (1e3f64..1e10, 0u64..50_000_000_000)
    }

    proptest! {
        #![proptest_config(config(0x6577_6d61))]

        /// Comparing the undecayed costs agrees with comparing both decayed to any later time.
        #[test]
        fn costs_compare_as_if_both_were_decayed_to_now(
            b in cost(),
            a in cost(),
            later in 0u64..100_000_000_000,
            decay in 1e8f64..1e11,
        ) {
            let now = b.1.max(a.1) + later;
            let (b_now, a_now) = (decayed(b.0, b.1, now, decay), decayed(a.0, a.1, now, decay));
            prop_assume!(b_now.min(a_now) > 0.0);
            // Far enough apart that rounding cannot swap them.
            prop_assume!((b_now / a_now - 1.0).abs() > 1e-9);
            prop_assert_eq!(lower_cost(b, a, decay), b_now < a_now);
        }

        /// An answer leaves the estimate between the answer's latency and the larger of the
        /// latency and the estimate before it: never below what was just seen, never above
        /// what was ever seen.
        #[test]
        fn an_answer_bounds_the_estimate(
            estimate in 1e3f64..1e10,
            at in 0u64..10_000_000_000,
            elapsed in 0u64..10_000_000_000,
            rtt in 1e3f64..1e10,
            decay in 1e8f64..1e11,
        ) {
            let updated = observe(estimate, at, at + elapsed, rtt, decay);
            prop_assert!(updated >= rtt);
            prop_assert!(updated <= estimate.max(rtt) * (1.0 + 1e-12));
            if rtt > decayed(estimate, at, at + elapsed, decay) {
                prop_assert_eq!(updated, rtt, "a slower answer is the new peak");
            }
        }
    }
}
