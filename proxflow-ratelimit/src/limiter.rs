//! The algorithms wired to their per-key state and a clock.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos as GovernorNanos;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

use crate::algorithm::{
    self, gcra_reserve, leaky_bucket, sliding_counter, sliding_log, Nanos, Rate, Verdict,
};
use crate::config::Algorithm;
use crate::store::{KeyState, KeyStore};

/// A clock whose first reading is zero. governor takes its origin from the first reading, so
/// its theoretical arrival times and this crate's reservations share one frame. Built on
/// tokio's clock, so tests control it with paused time.
#[derive(Debug, Clone, Default)]
pub(crate) struct LimiterClock {
    origin: Arc<OnceLock<tokio::time::Instant>>,
}

impl LimiterClock {
    pub(crate) fn now_ns(&self) -> Nanos {
        let origin = self.origin.get_or_init(tokio::time::Instant::now);
        u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Clock for LimiterClock {
    type Instant = GovernorNanos;

    fn now(&self) -> GovernorNanos {
        GovernorNanos::from(self.now_ns())
    }
}

/// governor's keyed state, kept in the bounded store.
#[derive(Clone)]
struct BoundedGcraStore {
    keys: Arc<KeyStore<u64>>,
    clock: LimiterClock,
}

impl StateStore for BoundedGcraStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<GovernorNanos>) -> Result<(T, GovernorNanos), E>,
    {
        let now = self.clock.now_ns();
        self.keys.update(*key, now, |state| {
            let (value, tat) = f(state.map(GovernorNanos::from))?;
            *state = Some(tat.as_u64());
            Ok(value)
        })
    }
}

type KeyedGcra = RateLimiter<u64, BoundedGcraStore, LimiterClock, StateInformationMiddleware>;
type DirectGcra = RateLimiter<NotKeyed, InMemoryState, LimiterClock, StateInformationMiddleware>;

/// A sliding log and the rate it is judged by (its idle time depends on the window).
#[derive(Default)]
struct LogState {
    log: VecDeque<Nanos>,
    per: Nanos,
}

impl KeyState for LogState {
    fn idle_at(&self) -> Nanos {
        self.log.back().map_or(0, |last| last + self.per)
    }
}

#[derive(Default)]
struct CounterState {
    counters: algorithm::Counters,
    per: Nanos,
}

impl KeyState for CounterState {
    fn idle_at(&self) -> Nanos {
        self.counters.idle_at(&Rate {
            rate: 1,
            per_ns: self.per,
            burst: 0,
        })
    }
}

enum Engine {
    TokenBucket {
        keyed: KeyedGcra,
        direct: DirectGcra,
        tats: Arc<KeyStore<u64>>,
    },
    LeakyBucket(KeyStore<u64>),
    SlidingLog(KeyStore<LogState>),
    SlidingCounter(KeyStore<CounterState>),
}

/// One rate, one algorithm, the state of every key.
pub(crate) struct Limiter {
    engine: Engine,
    rate: Rate,
    clock: LimiterClock,
}

impl Limiter {
    pub(crate) fn new(algorithm: Algorithm, rate: Rate, max_keys: usize) -> Limiter {
        let clock = LimiterClock::default();
        let engine = match algorithm {
            Algorithm::TokenBucket => {
                let tats = Arc::new(KeyStore::new(max_keys));
                let quota = quota(&rate);
                let store = BoundedGcraStore {
                    keys: Arc::clone(&tats),
                    clock: clock.clone(),
                };
                // Built first: its reading of the clock is the first, so its origin is zero and
                // the reservations below share its frame.
                let keyed: KeyedGcra = RateLimiter::new(quota, store, clock.clone());
                let direct: DirectGcra =
                    RateLimiter::new(quota, InMemoryState::default(), clock.clone());
                Engine::TokenBucket {
                    keyed,
                    direct,
                    tats,
                }
            }
            Algorithm::LeakyBucket => Engine::LeakyBucket(KeyStore::new(max_keys)),
            Algorithm::SlidingWindow => Engine::SlidingLog(KeyStore::new(max_keys)),
            Algorithm::SlidingWindowApprox => Engine::SlidingCounter(KeyStore::new(max_keys)),
        };
        Limiter {
            engine,
            rate,
            clock,
        }
    }

    pub(crate) fn rate(&self) -> &Rate {
        &self.rate
    }

    /// Decides for one request of `key` (`None`: the single global key). With `max_wait`, a
    /// request may be admitted after a wait instead of refused.
    pub(crate) fn check(&self, key: Option<u64>, max_wait: Nanos) -> Verdict {
        let now = self.clock.now_ns();
        let rate = &self.rate;
        match &self.engine {
            Engine::TokenBucket {
                keyed,
                direct,
                tats,
            } => {
                if max_wait > 0 {
                    // A reservation: governor can only say "not until", not hold the place.
                    let key = key.unwrap_or(0);
                    return tats.update(key, now, |tat| {
                        let (verdict, next) = gcra_reserve(*tat, now, rate, max_wait);
                        if next.is_some() {
                            *tat = next;
                        }
                        verdict
                    });
                }
                let outcome = match key {
                    Some(key) => keyed.check_key(&key),
                    None => direct.check(),
                };
                let t = rate.interval();
                match outcome {
                    Ok(snapshot) => {
                        let remaining = snapshot.remaining_burst_capacity();
                        let used = u64::from(rate.burst.saturating_sub(remaining));
                        Verdict::Admit {
                            wait: 0,
                            remaining,
                            reset_after: used * t,
                        }
                    }
                    Err(not_until) => {
                        let wait = not_until.wait_time_from(GovernorNanos::from(now));
                        let retry_after = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
                        Verdict::Refuse {
                            retry_after,
                            reset_after: u64::from(rate.burst) * t,
                        }
                    }
                }
            }
            Engine::LeakyBucket(store) => store.update(key.unwrap_or(0), now, |next| {
                let (verdict, new_next) = leaky_bucket(*next, now, rate, max_wait);
                if new_next.is_some() {
                    *next = new_next;
                }
                verdict
            }),
            Engine::SlidingLog(store) => store.update(key.unwrap_or(0), now, |state| {
                let state = state.get_or_insert_with(|| LogState {
                    log: VecDeque::new(),
                    per: rate.per_ns,
                });
                sliding_log(&mut state.log, now, rate)
            }),
            Engine::SlidingCounter(store) => store.update(key.unwrap_or(0), now, |state| {
                let state = state.get_or_insert_with(|| CounterState {
                    counters: Default::default(),
                    per: rate.per_ns,
                });
                sliding_counter(&mut state.counters, now, rate)
            }),
        }
    }

    /// Keys with state now.
    pub(crate) fn active_keys(&self) -> usize {
        match &self.engine {
            Engine::TokenBucket { tats, .. } => tats.len(),
            Engine::LeakyBucket(store) => store.len(),
            Engine::SlidingLog(store) => store.len(),
            Engine::SlidingCounter(store) => store.len(),
        }
    }

    /// Bytes of the key tables (see `KeyStore::table_bytes`).
    pub(crate) fn table_bytes(&self) -> usize {
        match &self.engine {
            Engine::TokenBucket { tats, .. } => tats.table_bytes(),
            Engine::LeakyBucket(store) => store.table_bytes(),
            Engine::SlidingLog(store) => store.table_bytes(),
            Engine::SlidingCounter(store) => store.table_bytes(),
        }
    }
}

fn quota(rate: &Rate) -> Quota {
    let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(Duration::from_nanos(rate.interval()))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate() -> Rate {
        Rate {
            rate: 10,
            per_ns: 1_000_000_000,
            burst: 3,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket_through_governor_matches_the_reservation_math() {
        let limiter = Limiter::new(Algorithm::TokenBucket, rate(), 100);
        let verdicts: Vec<bool> = (0..5)
            .map(|_| matches!(limiter.check(Some(7), 0), Verdict::Admit { .. }))
            .collect();
        assert_eq!(verdicts, [true, true, true, false, false]);
        let Verdict::Refuse { retry_after, .. } = limiter.check(Some(7), 0) else {
            panic!()
        };
        assert_eq!(retry_after, 100_000_000);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(matches!(
            limiter.check(Some(7), 0),
            Verdict::Admit { remaining: 0, .. }
        ));
        // Reservations share governor's state: the next slot is 100 ms away.
        assert!(matches!(
            limiter.check(Some(7), 1_000_000_000),
            Verdict::Admit {
                wait: 100_000_000,
                ..
            }
        ));
        assert!(
            matches!(
                limiter.check(Some(8), 0),
                Verdict::Admit { remaining: 2, .. }
            ),
            "keys are separate"
        );
        assert_eq!(limiter.active_keys(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_global_key_uses_governors_direct_limiter() {
        let limiter = Limiter::new(Algorithm::TokenBucket, rate(), 100);
        let admitted = (0..10)
            .filter(|_| matches!(limiter.check(None, 0), Verdict::Admit { .. }))
            .count();
        assert_eq!(admitted, 3);
        assert_eq!(limiter.active_keys(), 0, "no keyed state");
    }

    #[tokio::test(start_paused = true)]
    async fn every_algorithm_refuses_past_its_limit() {
        for algorithm in [
            Algorithm::LeakyBucket,
            Algorithm::SlidingWindow,
            Algorithm::SlidingWindowApprox,
        ] {
            let limiter = Limiter::new(algorithm, rate(), 100);
            let refused = (0..30)
                .filter(|_| matches!(limiter.check(Some(1), 0), Verdict::Refuse { .. }))
                .count();
            assert!(refused >= 15, "{algorithm:?}: {refused}");
        }
    }
}
