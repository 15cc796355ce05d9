//! `least_request`: of two upstreams drawn by weight, the one with fewer requests in flight
//! per unit of weight.

/// Whether `b` is less loaded than `a`, each given as (requests in flight, weight now): by
/// (in flight + 1) / weight, so that of two idle upstreams the heavier wins.
#[inline]
pub(crate) fn less_loaded(
    (b_in_flight, b_weight): (u32, f64),
    (a_in_flight, a_weight): (u32, f64),
) -> bool {
    (f64::from(b_in_flight) + 1.0) / b_weight < (f64::from(a_in_flight) + 1.0) / a_weight
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use proptest::prelude::*;

    use super::*;
    use crate::policy::random::{advance, two_choices, Cumulative};
    use crate::policy::testing::config;

    proptest! {
        #![proptest_config(config(0x006c_6561_7374))]

        /// The most loaded upstream loses every comparison, so it is never picked while
        /// another is available.
        #[test]
        fn the_most_loaded_is_never_picked(
            upstreams in prop::collection::vec((0u32..50, 0.5f64..4.0), 2..10),
            seed: u64,
        ) {
            let load = |i: usize| (f64::from(upstreams[i].0) + 1.0) / upstreams[i].1;
            let busiest = (0..upstreams.len())
                .max_by(|&a, &b| load(a).total_cmp(&load(b)))
                .unwrap();
            prop_assume!((0..upstreams.len()).all(|i| i == busiest || load(i) < load(busiest)));
            let weights: Vec<f64> = upstreams.iter().map(|u| u.1).collect();
            let mut sums = Vec::new();
            let positive = Cumulative::fill(&weights, &mut sums);
            let cumulative = Cumulative { sums: &sums, positive };
            let rng = AtomicU64::new(seed);
            for _ in 0..200 {
                let picked = two_choices(cumulative, |n| advance(&rng, n), |b, a| {
                    less_loaded(upstreams[b], upstreams[a])
                });
                prop_assert_ne!(picked, busiest);
            }
        }
    }

    #[test]
    fn of_two_idle_upstreams_the_heavier_wins() {
        assert!(less_loaded((0, 2.0), (0, 1.0)));
        assert!(!less_loaded((0, 1.0), (0, 2.0)));
        assert!(less_loaded((1, 4.0), (0, 1.0)), "2/4 < 1/1");
    }
}
