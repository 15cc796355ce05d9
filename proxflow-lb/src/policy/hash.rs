//! `ip_hash` and `header_hash`: weighted rendezvous hashing. Every upstream scores every key;
//! the key goes to the highest score. A key moves only when its upstream leaves (or becomes
//! unavailable), or to a joining upstream that outscores it; no other key moves.

use super::random::mix;

/// FNV-1a: a fixed, well-spread hash of keys and upstream names, the same in every process
/// (unlike `RandomState`), so that every instance of a gateway maps keys alike.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// An upstream as hashing sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    /// [`fnv1a`] of its name.
    pub(crate) name_hash: u64,
    /// Its static weight.
    pub(crate) weight: u32,
    /// Whether it takes traffic now.
    pub(crate) available: bool,
}

/// The index of the upstream the key (hashed) goes to: the highest `-weight / ln(u)`, `u` a
/// uniform number in (0, 1) from the key and the upstream's name. `equal_weights` says that
/// every candidate has the same weight; the score then grows with `u` alone, and no logarithm
/// is taken. Index 0 if none is available.
#[inline]
pub(crate) fn rendezvous(
    key: u64,
    candidates: impl Iterator<Item = Candidate>,
    equal_weights: bool,
) -> usize {
    let mut best = 0;
    let mut best_score = f64::NEG_INFINITY;
    for (i, candidate) in candidates.enumerate() {
        if !candidate.available {
            continue;
        }
        let unit = unit(key, candidate.name_hash);
        let score = if equal_weights {
            unit
        } else {
            -f64::from(candidate.weight) / unit.ln()
        };
        if score > best_score {
            best = i;
            best_score = score;
        }
    }
    best
}

/// A uniform number in (0, 1), never 0 (whose logarithm is minus infinity).
#[inline]
fn unit(key: u64, name_hash: u64) -> f64 {
    ((mix(key ^ name_hash) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::policy::testing::config;

    fn candidates(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Candidate {
                name_hash: fnv1a(format!("http://upstream-{i}:80").as_bytes()),
                weight,
                available: true,
            })
            .collect()
    }

    /// Where each of `keys` goes, as the name hash of its upstream.
    fn placement(list: &[Candidate], keys: u64) -> Vec<u64> {
        let equal = list.windows(2).all(|pair| pair[0].weight == pair[1].weight);
        (0..keys)
            .map(|key| list[rendezvous(mix(key), list.iter().copied(), equal)].name_hash)
            .collect()
    }

    #[test]
    fn equal_weights_hash_as_the_weighted_score_would() {
        let list = candidates(&[1, 1, 1]);
        for key in 0..2000u64 {
            let key = mix(key);
            let by_score = (0..3)
                .max_by(|&a, &b| {
                    let score = |i: usize| -1.0 / unit(key, list[i].name_hash).ln();
                    score(a).total_cmp(&score(b))
                })
                .unwrap();
            assert_eq!(rendezvous(key, list.iter().copied(), true), by_score);
            assert_eq!(rendezvous(key, list.iter().copied(), false), by_score);
        }
    }

    fn weights() -> impl Strategy<Value = Vec<u32>> {
        prop_oneof![
            (2usize..8).prop_map(|n| vec![1; n]),
            prop::collection::vec(1u32..10, 2..8),
        ]
    }

    proptest! {
        #![proptest_config(config(0x6861_7368))]

        /// When an upstream leaves, only the keys it had move.
        #[test]
        fn only_the_keys_of_a_leaving_upstream_move(weights in weights(), leaving in any::<prop::sample::Index>()) {
            let list = candidates(&weights);
            let before = placement(&list, 500);
            let gone = leaving.index(list.len());
            let mut after_list = list.clone();
            after_list.remove(gone);
            let after = placement(&after_list, 500);
            for (key, (old, new)) in before.iter().zip(&after).enumerate() {
                if *old != list[gone].name_hash {
                    prop_assert_eq!(old, new, "key {} moved though its upstream stayed", key);
                }
            }
            // Unavailable is the same as gone.
            let mut unavailable = list.clone();
            unavailable[gone].available = false;
            let equal = list.windows(2).all(|pair| pair[0].weight == pair[1].weight);
            for key in 0..500u64 {
                let index = rendezvous(mix(key), unavailable.iter().copied(), equal);
                prop_assert_eq!(unavailable[index].name_hash, after[key as usize]);
            }
        }

        /// When an upstream joins, keys move only to it.
        #[test]
        fn keys_move_only_to_a_joining_upstream(weights in weights(), weight in 1u32..10) {
            let list = candidates(&weights);
            let before = placement(&list, 500);
            let mut joined = list.clone();
            joined.push(Candidate {
                name_hash: fnv1a(b"http://joining:80"),
                weight,
                available: true,
            });
            let after = placement(&joined, 500);
            for (old, new) in before.iter().zip(&after) {
                prop_assert!(old == new || *new == fnv1a(b"http://joining:80"));
            }
        }
    }

    proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 24,
            ..config(0x7765_6967_6874)
        })]

        /// Each upstream gets a share of the keys proportional to its weight.
        #[test]
        fn shares_follow_the_weights(weights in prop::collection::vec(1u32..6, 2..6)) {
            let list = candidates(&weights);
            let keys = 20_000;
            let placed = placement(&list, keys);
            let total: u32 = weights.iter().sum();
            for candidate in &list {
                let share = placed.iter().filter(|&&h| h == candidate.name_hash).count() as f64
                    / keys as f64;
                let expected = f64::from(candidate.weight) / f64::from(total);
                prop_assert!((share - expected).abs() < 0.025, "{share} for {expected}");
            }
        }
    }
}
