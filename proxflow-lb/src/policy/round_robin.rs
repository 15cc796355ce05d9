//! `round_robin` and `weighted_round_robin`: nginx's smooth weighted round robin. Each pick,
//! every upstream's running weight gains its weight; the richest is picked and pays the total.
//!
//! Both policies are this one algorithm over the weights now (static weight, ramped during
//! slow start, 0 when unavailable): with equal weights it takes turns in order, and an
//! unavailable upstream's turns spread over all the others instead of falling on the next in
//! line.

/// The weights as the algorithm counts them: integers in thousandths, at least 1 for a
/// positive weight, 0 for an unavailable upstream. Computed with the weights, not per pick.
pub(crate) fn turns(weights: &[f64], turns: &mut Vec<i64>) {
    turns.clear();
    turns.extend(weights.iter().map(|&weight| {
        if weight <= 0.0 {
            0
        } else {
            (weight * 1000.0).round().max(1.0) as i64
        }
    }));
}

/// One pick over `turns` (from [`turns`]). `add(i, amount)` adds `amount` to upstream `i`'s
/// running weight and returns the sum; the caller keeps the running weights (under its lock).
/// At least one turn must be positive; index 0 otherwise.
#[inline]
pub(crate) fn pick(turns: &[i64], mut add: impl FnMut(usize, i64) -> i64) -> usize {
    let mut best = 0;
    let mut best_current = i64::MIN;
    let mut total = 0i64;
    for (i, &weight) in turns.iter().enumerate() {
        if weight == 0 {
            continue;
        }
        total += weight;
        let current = add(i, weight);
        if current > best_current {
            best = i;
            best_current = current;
        }
    }
    add(best, -total);
    best
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::policy::testing::config;

    /// `picks` picks over `turns`, from running weights of 0.
    fn run(turns: &[i64], picks: usize) -> (Vec<usize>, Vec<i64>) {
        let mut running = vec![0i64; turns.len()];
        let order = (0..picks)
            .map(|_| {
                pick(turns, |i, amount| {
                    running[i] += amount;
                    running[i]
                })
            })
            .collect();
        (order, running)
    }

    #[test]
    fn nginx_sequence_for_five_one_one() {
        let (order, _) = run(&[5, 1, 1], 7);
        let order: String = order.iter().map(|&i| (b'a' + i as u8) as char).collect();
        assert_eq!(order, "aabacaa");
    }

    #[test]
    fn turns_are_thousandths_and_zero_only_when_unavailable() {
        let mut out = Vec::new();
        turns(&[1.0, 0.0, 0.0001, 2.5], &mut out);
        assert_eq!(out, [1000, 0, 1, 2500]);
    }

    fn turns_strategy() -> impl Strategy<Value = Vec<i64>> {
        prop::collection::vec(prop_oneof![1 => Just(0i64), 4 => 1i64..20], 1..8)
            .prop_filter("one available", |t| t.iter().any(|&t| t > 0))
    }

    proptest! {
        #![proptest_config(config(0x7277_7272))]

        /// Equal weights take turns in order, skipping the unavailable.
        #[test]
        fn equal_weights_take_turns(available in prop::collection::vec(any::<bool>(), 1..10)) {
            prop_assume!(available.iter().any(|&a| a));
            let turns: Vec<i64> = available.iter().map(|&a| i64::from(a) * 1000).collect();
            let (order, _) = run(&turns, 3 * turns.len());
            let expected: Vec<usize> = (0..turns.len()).filter(|&i| available[i]).collect();
            for (n, picked) in order.iter().enumerate() {
                prop_assert_eq!(*picked, expected[n % expected.len()]);
            }
        }

        /// Over one round of `sum(turns)` picks each upstream is picked exactly its turns, and
        /// the running weights are back at 0.
        #[test]
        fn a_round_gives_each_its_weight(turns in turns_strategy()) {
            let total: i64 = turns.iter().sum();
            let (order, running) = run(&turns, total as usize);
            for (i, &weight) in turns.iter().enumerate() {
                let count = order.iter().filter(|&&p| p == i).count() as i64;
                prop_assert_eq!(count, weight, "upstream {}", i);
            }
            prop_assert!(running.iter().all(|&r| r == 0), "{:?}", running);
        }

        /// Smooth: after any number of picks `n`, each upstream's count is off its exact share
        /// (`n × weight / total`) by fewer picks than there are upstreams, so that a heavy
        /// upstream's turns are spread out instead of coming in a burst.
        #[test]
        fn every_prefix_stays_near_the_exact_share(turns in turns_strategy(), picks in 1usize..200) {
            let total: i64 = turns.iter().sum();
            let (order, _) = run(&turns, picks);
            for (i, &weight) in turns.iter().enumerate() {
                let count = order.iter().filter(|&&p| p == i).count() as f64;
                let exact = picks as f64 * weight as f64 / total as f64;
                prop_assert!(
                    (count - exact).abs() < turns.len() as f64,
                    "upstream {i}: {count} picks, {exact} exact"
                );
            }
        }
    }
}
