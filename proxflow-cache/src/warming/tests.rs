use std::time::Duration;

use proptest::prelude::*;

use super::*;

const TTL: Duration = Duration::from_secs(60);

fn s(secs: f64) -> Duration {
    Duration::from_secs_f64(secs)
}

/// Seeded exponential gaps (SplitMix64), for Poisson arrivals.
struct Gaps(u64);

impl Gaps {
    fn next(&mut self, rate: f64) -> f64 {
        let u = (keys::mix(self.0) >> 11) as f64 / (1u64 << 53) as f64;
        self.0 = self.0.wrapping_add(1);
        -(1.0 - u).ln() / rate
    }
}

/// Requests `key` at `at` as a cache would: a miss (nothing stored) is stored 50 ms later
/// with a 60 s lifetime. Returns the prefetches.
fn request(w: &mut Warming, key: u64, client: u64, at: f64) -> Vec<u64> {
    let stored = w.keys.get(key).is_some_and(|k| k.is_stored(nanos(s(at))));
    let prefetches = w.on_request(key, client, s(at));
    if !stored {
        w.on_stored(key, s(at + 0.05), s(at + 0.05) + TTL);
    }
    prefetches
}

#[test]
fn a_frequently_requested_key_is_refreshed_just_before_expiry() {
    let mut w = Warming::new(WarmingConfig::default());
    // Every 10 s: λT = 6.
    for i in 0..6 {
        request(&mut w, 1, 1, f64::from(i) * 10.0);
    }
    assert_eq!(w.next_due(), Some(s(59.05)));
    assert!(w.due_refreshes(s(59.0), 10).is_empty());
    assert_eq!(w.due_refreshes(s(59.05), 10), [1]);
    // In flight: not due again, and a request meanwhile counts the refresh as used.
    assert!(w.due_refreshes(s(59.06), 10).is_empty());
    w.on_stored(1, s(59.1), s(119.1));
    w.on_request(1, 1, s(61.0));
    assert_eq!(w.stats().refreshes, 1);
    assert_eq!(w.stats().refreshes_used, 1);
    assert_eq!(w.next_due(), Some(s(118.1)));
}

#[test]
fn a_key_requested_once_is_left_to_expire() {
    let mut w = Warming::new(WarmingConfig::default());
    request(&mut w, 1, 1, 0.0);
    assert!(w.due_refreshes(s(59.05), 10).is_empty());
    assert_eq!(w.stats(), WarmingStats::default());
}

#[test]
fn the_refresh_follows_the_estimated_rate() {
    // Poisson keys at λT = 6 and λT = 0.3 over 20 minutes: the first is refreshed at nearly
    // every expiry, the second almost never.
    let mut w = Warming::new(WarmingConfig::default());
    let mut gaps = Gaps(42);
    let mut refreshed = [0u32; 2];
    let mut expiries = [0u32; 2];
    let rates = [0.1, 0.005];
    let mut next = [0.0, 0.0];
    let mut expires = [f64::NEG_INFINITY; 2];
    let mut t = 0.0;
    while t < 1200.0 {
        let k = if next[0] <= next[1] { 0 } else { 1 };
        t = next[k];
        // Refreshes due before this request.
        for key in w.due_refreshes(s(t), 10) {
            let i = key as usize;
            refreshed[i] += 1;
            w.on_stored(key, s(t + 0.05), s(t + 60.05));
            expires[i] = t + 60.05;
        }
        let stored = t < expires[k];
        w.on_request(k as u64, 1, s(t));
        if !stored {
            if expires[k].is_finite() {
                expiries[k] += 1;
            }
            w.on_stored(k as u64, s(t + 0.05), s(t + 60.05));
            expires[k] = t + 60.05;
        }
        next[k] = t + gaps.next(rates[k]);
    }
    assert!(refreshed[0] >= 15, "{refreshed:?} {expiries:?}");
    assert!(expiries[0] <= 2, "{refreshed:?} {expiries:?}");
    assert!(refreshed[1] <= 1, "{refreshed:?} {expiries:?}");
}

#[test]
fn a_periodic_key_is_refreshed_before_its_next_request_even_after_expiry() {
    let mut w = Warming::new(WarmingConfig::default());
    // Polled every 90 s: λT = 0.67, below the Poisson rule, but regular.
    for i in 0..6 {
        request(&mut w, 7, 1, f64::from(i) * 90.0);
    }
    // The entry of the request at 450 s expires at 510.05; the next poll is at 540, and the
    // refresh is timed before it with a margin for the jitter (none, but few periods seen).
    assert!(w.due_refreshes(s(509.05), 10).is_empty());
    let at = w.next_due().expect("a refresh is scheduled");
    assert!(at > s(509.05) && at < s(540.0), "{at:?}");
    assert_eq!(w.due_refreshes(at, 10), [7]);
    w.on_stored(7, at + s(0.05), at + s(60.05));
    // The poll hits.
    w.on_request(7, 1, s(540.0));
    assert_eq!(w.stats().refreshes_used, 1);
}

#[test]
fn refreshes_stop_after_two_unused_lifetimes() {
    let mut w = Warming::new(WarmingConfig::default());
    for i in 0..12 {
        request(&mut w, 1, 1, f64::from(i) * 5.0);
    }
    // No request after 55 s: the refreshes at 114.05 and 173.1 find the entry unused.
    let mut refreshes = 0;
    let mut t = 0.0;
    while t < 600.0 {
        t += 0.05;
        for key in w.due_refreshes(s(t), 10) {
            refreshes += 1;
            w.on_stored(key, s(t + 0.05), s(t + 60.05));
        }
    }
    assert_eq!(refreshes, 2);
    assert_eq!(w.stats().refreshes_used, 0);
}

#[test]
fn a_removed_entry_is_not_refreshed() {
    let mut w = Warming::new(WarmingConfig::default());
    for i in 0..6 {
        request(&mut w, 1, 1, f64::from(i) * 10.0);
    }
    w.on_removed(1);
    assert!(w.due_refreshes(s(100.0), 10).is_empty());
}

#[test]
fn at_most_max_refreshes_are_returned_and_the_others_stay_due() {
    let mut w = Warming::new(WarmingConfig::default());
    for key in 0..5 {
        for i in 0..6 {
            request(&mut w, key, 1, f64::from(i) * 10.0);
        }
    }
    assert_eq!(w.due_refreshes(s(60.0), 2).len(), 2);
    assert_eq!(w.due_refreshes(s(60.0), 10).len(), 3);
}

#[test]
fn the_origin_budget_limits_refreshes() {
    let mut w = Warming::new(WarmingConfig {
        budget: 0.0,
        budget_burst: 0.0,
        ..WarmingConfig::default()
    });
    for i in 0..6 {
        request(&mut w, 1, 1, f64::from(i) * 10.0);
    }
    assert!(w.due_refreshes(s(60.0), 10).is_empty());
    assert_eq!(w.stats().over_budget, 1);
}

#[test]
fn a_follower_seen_twice_after_its_leader_is_prefetched() {
    let mut w = Warming::new(WarmingConfig::default());
    // Client 1 asks for list 100 then detail 200, an hour apart each time (entries long
    // expired), twice.
    for round in 0..2 {
        let t = f64::from(round) * 3600.0;
        assert!(request(&mut w, 100, 1, t).is_empty());
        request(&mut w, 200, 1, t + 1.0);
    }
    assert!((w.followers(100)[0].1 - 2.0 / 3.0).abs() < 0.05);
    // The third time, another client: 200 is prefetched after 100.
    assert_eq!(request(&mut w, 100, 2, 7200.0), [200]);
    assert_eq!(w.stats().prefetches, 1);
    // Being fetched: not again.
    assert!(request(&mut w, 100, 3, 7200.01).is_empty());
    w.on_stored(200, s(7200.05), s(7260.05));
    request(&mut w, 200, 2, 7201.0);
    assert_eq!(w.stats().prefetches_used, 1);
    // Stored: not again.
    assert!(request(&mut w, 100, 4, 7210.0).is_empty());
}

#[test]
fn a_follower_seen_once_or_from_another_client_is_not_prefetched() {
    let mut w = Warming::new(WarmingConfig::default());
    request(&mut w, 100, 1, 0.0);
    request(&mut w, 200, 2, 1.0);
    request(&mut w, 100, 1, 3600.0);
    request(&mut w, 200, 1, 3601.0);
    assert!(request(&mut w, 100, 3, 7200.0).is_empty());
    // Too late to follow.
    request(&mut w, 100, 1, 10_800.0);
    request(&mut w, 200, 1, 10_803.0);
    assert!(w.followers(100)[0].1 < 0.6);
}

#[test]
fn a_rare_follower_is_not_prefetched() {
    let mut w = Warming::new(WarmingConfig::default());
    // 300 follows 100 one time in four.
    for round in 0..20 {
        let t = f64::from(round) * 3600.0;
        request(&mut w, 100, 1, t);
        if round % 4 == 0 {
            request(&mut w, 300, 1, t + 1.0);
        }
    }
    assert!(request(&mut w, 100, 1, 72_000.0).is_empty());
}

#[test]
fn established_links_survive_noise() {
    let mut w = Warming::new(WarmingConfig::default());
    for round in 0..10u32 {
        let t = f64::from(round) * 3600.0;
        request(&mut w, 100, 1, t);
        request(&mut w, 200, 1, t + 0.5);
        // Noise: a different key each time.
        request(&mut w, 1000 + u64::from(round), 1, t + 1.0);
    }
    let followers = w.followers(100);
    assert_eq!(followers[0].0, 200);
    assert!(followers.len() <= 4);
}

#[test]
fn the_state_is_small() {
    // The module documentation's memory figure.
    assert!(std::mem::size_of::<KeyState>() <= 88);
}

/// An operation on warming, for the property tests.
#[derive(Clone, Debug)]
enum Op {
    Request { key: u64, client: u64 },
    Store { key: u64, ttl: u64 },
    Fail { key: u64 },
    Remove { key: u64 },
    Due { max: usize },
    Wait { millis: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..40u64, 0..4u64).prop_map(|(key, client)| Op::Request { key, client }),
        3 => (0..40u64, 0..120u64).prop_map(|(key, ttl)| Op::Store { key, ttl }),
        1 => (0..40u64).prop_map(|key| Op::Fail { key }),
        1 => (0..40u64).prop_map(|key| Op::Remove { key }),
        2 => (0..4usize).prop_map(|max| Op::Due { max }),
        4 => (0..20_000u64).prop_map(|millis| Op::Wait { millis }),
    ]
}

proptest! {
    #[test]
    fn bounds_hold_and_answers_make_sense(ops in prop::collection::vec(op(), 1..400)) {
        let config = WarmingConfig {
            max_keys: 16,
            max_followers: 3,
            client_slots: 4,
            ..WarmingConfig::default()
        };
        let mut w = Warming::new(config);
        let mut now = Duration::ZERO;
        // A model: the keys stored and not removed since, and the fetches warming asked for
        // that have not been reported yet (with when they were asked for), of keys tracked.
        let mut stored = std::collections::HashSet::new();
        let mut in_flight = std::collections::HashMap::new();
        for op in ops {
            let recent = |in_flight: &std::collections::HashMap<u64, Duration>, key: u64, now: Duration| {
                in_flight.get(&key).is_some_and(|&at| now - at < Duration::from_secs(30))
            };
            match op {
                Op::Request { key, client } => {
                    let prefetches = w.on_request(key, client, now);
                    prop_assert!(prefetches.len() <= 3);
                    prop_assert!(!prefetches.contains(&key));
                    let mut unique = prefetches.clone();
                    unique.sort_unstable();
                    unique.dedup();
                    prop_assert_eq!(unique.len(), prefetches.len());
                    for p in prefetches {
                        prop_assert!(!recent(&in_flight, p, now));
                        let state = w.keys.get(p);
                        prop_assert!(state.is_none_or(|s| !s.is_stored(nanos(now))));
                        in_flight.insert(p, now);
                    }
                }
                Op::Store { key, ttl } => {
                    w.on_stored(key, now, now + Duration::from_secs(ttl));
                    stored.insert(key);
                    in_flight.remove(&key);
                }
                Op::Fail { key } => {
                    w.on_fetch_failed(key);
                    in_flight.remove(&key);
                }
                Op::Remove { key } => {
                    w.on_removed(key);
                    stored.remove(&key);
                }
                Op::Due { max } => {
                    let due = w.due_refreshes(now, max);
                    prop_assert!(due.len() <= max);
                    for key in due {
                        prop_assert!(stored.contains(&key), "{} was not stored", key);
                        prop_assert!(!recent(&in_flight, key, now), "{} is being fetched", key);
                        in_flight.insert(key, now);
                    }
                }
                Op::Wait { millis } => now += Duration::from_millis(millis),
            }
            // Warming forgets the fetches of keys it no longer tracks.
            in_flight.retain(|k, _| w.keys.get(*k).is_some());
            prop_assert!(w.tracked_keys() <= 16);
            prop_assert!(w.keys.iter().all(|s| s.link_len <= 3));
            prop_assert!(w.due.len() <= 2 * w.tracked_keys() + 1024 + 1);
            prop_assert!(w.tokens <= w.config.budget_burst);
        }
    }
}
