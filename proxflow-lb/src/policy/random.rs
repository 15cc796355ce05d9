//! `random`: a draw by weight from a seeded generator; and the power of two choices, two
//! distinct draws of which a comparison keeps one.

use std::sync::atomic::{AtomicU64, Ordering};

/// SplitMix64's increment.
pub(crate) const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Takes `draws` states of SplitMix64 kept in `state` at once and returns the first; the
/// others follow by [`GOLDEN`] steps, as if drawn one by one. An atomic add instead of a lock:
/// concurrent picks each get states of their own.
#[inline]
pub(crate) fn advance(state: &AtomicU64, draws: u64) -> u64 {
    state
        .fetch_add(GOLDEN.wrapping_mul(draws), Ordering::Relaxed)
        .wrapping_add(GOLDEN)
}

/// SplitMix64's finaliser: spreads every input bit over the output.
#[inline]
pub(crate) fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A uniform number in [0, 1) from a generator state.
#[inline]
pub(crate) fn unit(state: u64) -> f64 {
    (mix(state) >> 11) as f64 / (1u64 << 53) as f64
}

/// The weights laid end to end: `cumulative[i]` is the sum of the weights up to `i`, so that
/// a draw is a binary search instead of a walk over every upstream.
#[derive(Clone, Copy)]
pub(crate) struct Cumulative<'a> {
    pub(crate) sums: &'a [f64],
    /// How many weights are positive.
    pub(crate) positive: usize,
}

impl Cumulative<'_> {
    /// Running sums of `weights` into `sums`; how many are positive.
    pub(crate) fn fill(weights: &[f64], sums: &mut Vec<f64>) -> usize {
        sums.clear();
        let mut total = 0.0;
        sums.extend(weights.iter().map(|&w| {
            total += w.max(0.0);
            total
        }));
        weights.iter().filter(|&&w| w > 0.0).count()
    }

    fn total(&self) -> f64 {
        self.sums.last().copied().unwrap_or(0.0)
    }

    fn start(&self, i: usize) -> f64 {
        if i == 0 {
            0.0
        } else {
            self.sums[i - 1]
        }
    }

    fn weight(&self, i: usize) -> f64 {
        self.sums[i] - self.start(i)
    }
}

/// The index that `unit` (in [0, 1)) falls on when the weights are laid end to end, leaving
/// out `skip` and the weights of 0.
#[inline]
pub(crate) fn weighted(weights: Cumulative<'_>, skip: Option<usize>, unit: f64) -> usize {
    let skipped = skip.map_or(0.0, |i| weights.weight(i));
    let mut target = unit * (weights.total() - skipped);
    if let Some(skip) = skip {
        if target >= weights.start(skip) {
            target += skipped;
        }
    }
    let index = weights.sums.partition_point(|&sum| sum <= target);
    if index < weights.sums.len() && Some(index) != skip {
        return index;
    }
    // Rounding left a sliver past the end (or on the skipped one): the last other positive.
    (0..weights.sums.len())
        .rev()
        .find(|&i| Some(i) != skip && weights.weight(i) > 0.0)
        .unwrap_or(0)
}

/// Power of two choices: two distinct indexes drawn by weight; the second wins if
/// `cheaper(second, first)`. With a single index of positive weight, that one. `draw(n)`
/// takes `n` states of the generator and returns the first (as [`advance`]): both draws come
/// from one call.
#[inline]
pub(crate) fn two_choices(
    weights: Cumulative<'_>,
    draw: impl FnOnce(u64) -> u64,
    cheaper: impl Fn(usize, usize) -> bool,
) -> usize {
    let choice = weights.positive >= 2;
    let state = draw(if choice { 2 } else { 1 });
    let first = weighted(weights, None, unit(state));
    if !choice {
        return first;
    }
    let second = weighted(weights, Some(first), unit(state.wrapping_add(GOLDEN)));
    if cheaper(second, first) {
        second
    } else {
        first
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::policy::testing::config;

    #[test]
    fn both_draws_at_once_follow_the_one_by_one_sequence() {
        let (together, apart) = (AtomicU64::new(7), AtomicU64::new(7));
        let first = advance(&together, 2);
        assert_eq!(first, advance(&apart, 1));
        assert_eq!(first.wrapping_add(GOLDEN), advance(&apart, 1));
        assert_eq!(advance(&together, 1), advance(&apart, 1));
    }

    fn weights() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(prop_oneof![Just(0.0), 0.1f64..1000.0], 1..12)
            .prop_filter("one positive weight", |w| w.iter().any(|&w| w > 0.0))
    }

    proptest! {
        #![proptest_config(config(0x7261_6e64_6f6d))]

        /// Evenly spread units land on each index in proportion to its weight: within one
        /// unit's share of the count, and never on a weight of 0.
        #[test]
        fn draws_are_proportional_to_the_weights(weights in weights(), draws in 100usize..2000) {
            let total: f64 = weights.iter().sum();
            let mut sums = Vec::new();
            let positive = Cumulative::fill(&weights, &mut sums);
            let cumulative = Cumulative { sums: &sums, positive };
            let mut counts = vec![0usize; weights.len()];
            for k in 0..draws {
                let unit = (k as f64 + 0.5) / draws as f64;
                counts[weighted(cumulative, None, unit)] += 1;
            }
            for (i, &weight) in weights.iter().enumerate() {
                let expected = draws as f64 * weight / total;
                prop_assert!(
                    (counts[i] as f64 - expected).abs() <= 1.0,
                    "index {i}: {} draws, {expected} expected", counts[i]
                );
            }
        }

        /// Leaving one index out, the others are drawn in proportion to their weights.
        #[test]
        fn a_skipped_index_is_never_drawn(weights in weights(), skip in 0usize..12, draws in 100usize..2000) {
            let skip = skip % weights.len();
            let mut sums = Vec::new();
            let positive = Cumulative::fill(&weights, &mut sums);
            prop_assume!(positive >= 2 || weights[skip] == 0.0);
            let cumulative = Cumulative { sums: &sums, positive };
            let total: f64 = weights.iter().sum::<f64>() - weights[skip];
            let mut counts = vec![0usize; weights.len()];
            for k in 0..draws {
                let unit = (k as f64 + 0.5) / draws as f64;
                counts[weighted(cumulative, Some(skip), unit)] += 1;
            }
            prop_assert_eq!(counts[skip], 0);
            for (i, &weight) in weights.iter().enumerate() {
                if i != skip {
                    let expected = draws as f64 * weight / total;
                    prop_assert!((counts[i] as f64 - expected).abs() <= 1.0);
                }
            }
        }

        /// The second draw of two choices is never the first, and neither has weight 0.
        #[test]
        fn two_choices_draw_distinct_available_indexes(weights in weights(), state: u64) {
            let mut sums = Vec::new();
            let positive = Cumulative::fill(&weights, &mut sums);
            let cumulative = Cumulative { sums: &sums, positive };
            let drawn = std::cell::RefCell::new(None);
            let rng = AtomicU64::new(state);
            let picked = two_choices(cumulative, |n| advance(&rng, n), |second, first| {
                *drawn.borrow_mut() = Some((second, first));
                false
            });
            prop_assert!(weights[picked] > 0.0);
            let drawn = drawn.into_inner();
            match drawn {
                Some((second, first)) => {
                    prop_assert_ne!(second, first);
                    prop_assert!(weights[second] > 0.0 && weights[first] > 0.0);
                    prop_assert_eq!(picked, first);
                }
                None => prop_assert!(positive < 2),
            }
        }
    }
}
