//! The algorithms wired to their per-key state and a clock.

use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos as GovernorNanos;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

use proxflow_core::clock::nanos;
use proxflow_core::{Clock as LayerClock, Moment};

use crate::algorithm::{
    self, gcra_reserve, leaky_bucket, sliding_counter, sliding_log, Log, Nanos, Rate, Verdict,
};
use crate::config::Algorithm;
use crate::store::{KeyState, KeyStore};

/// The layer's clock: nanoseconds since the layer was built, read through the injected
/// [`proxflow_core::Clock`]. Every key table holds times in this frame.
#[derive(Debug, Clone)]
pub(crate) struct LimiterClock {
    clock: LayerClock,
    origin: Moment,
}

impl LimiterClock {
    pub(crate) fn new(clock: LayerClock) -> LimiterClock {
        LimiterClock {
            origin: clock.now(),
            clock,
        }
    }

    #[inline]
    pub(crate) fn now_ns(&self) -> Nanos {
        self.clock.nanos_since(self.origin)
    }
}

/// The burst as the algorithm uses it: a token bucket holds at least one token, and saying so
/// here keeps the `RateLimit` fields true to it.
pub(crate) fn capacity(algorithm: Algorithm, burst: u32) -> u32 {
    match algorithm {
        Algorithm::TokenBucket => burst.max(1),
        _ => burst,
    }
}

/// The clock one governor limiter sees: zero at its first reading. governor counts from its
/// first reading, so this offset is how its times map to the layer's frame.
#[derive(Debug, Clone)]
struct QuotaClock {
    layer: LimiterClock,
    offset: Arc<OnceLock<Nanos>>,
}

impl QuotaClock {
    fn offset(&self) -> Nanos {
        *self.offset.get_or_init(|| self.layer.now_ns())
    }
}

impl Clock for QuotaClock {
    type Instant = GovernorNanos;

    fn now(&self) -> GovernorNanos {
        let offset = self.offset();
        GovernorNanos::from(self.layer.now_ns().saturating_sub(offset))
    }
}

/// governor's keyed state, kept in the layer's bounded table in the layer's frame.
#[derive(Clone)]
struct BoundedGcraStore {
    keys: Arc<KeyStore<u64>>,
    clock: QuotaClock,
}

impl StateStore for BoundedGcraStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<GovernorNanos>) -> Result<(T, GovernorNanos), E>,
    {
        let offset = self.clock.offset();
        self.keys.update(
            *key,
            || self.clock.layer.now_ns(),
            |state| {
                let local = state.map(|tat| GovernorNanos::from(tat.saturating_sub(offset)));
                let (value, tat) = f(local)?;
                *state = Some(tat.as_u64().saturating_add(offset));
                Ok(value)
            },
        )
    }
}

type KeyedGcra = RateLimiter<u64, BoundedGcraStore, QuotaClock, StateInformationMiddleware>;
type DirectGcra = RateLimiter<NotKeyed, InMemoryState, QuotaClock, StateInformationMiddleware>;

/// A sliding log: when each admission in the window leaves it (see [`sliding_log`]).
#[derive(Default)]
pub(crate) struct LogState(Log);

impl KeyState for LogState {
    fn idle_at(&self) -> Nanos {
        self.0.back().unwrap_or(0)
    }
}

#[derive(Default)]
pub(crate) struct CounterState {
    counters: algorithm::Counters,
    per: Nanos,
}

impl KeyState for CounterState {
    fn idle_at(&self) -> Nanos {
        self.counters.idle_at(self.per)
    }
}

/// The key table of a layer, shared by all its quotas, so that `max_keys` bounds the layer.
#[derive(Clone)]
pub(crate) enum Tables {
    Gcra(Arc<KeyStore<u64>>),
    Leaky(Arc<KeyStore<u64>>),
    Log(Arc<KeyStore<LogState>>),
    Counter(Arc<KeyStore<CounterState>>),
}

impl Tables {
    pub(crate) fn new(algorithm: Algorithm, max_keys: usize) -> Tables {
        match algorithm {
            Algorithm::TokenBucket => Tables::Gcra(Arc::new(KeyStore::new(max_keys))),
            Algorithm::LeakyBucket => Tables::Leaky(Arc::new(KeyStore::new(max_keys))),
            Algorithm::SlidingWindow => Tables::Log(Arc::new(KeyStore::new(max_keys))),
            Algorithm::SlidingWindowApprox => Tables::Counter(Arc::new(KeyStore::new(max_keys))),
        }
    }

    /// The algorithm whose state the tables hold.
    pub(crate) fn algorithm(&self) -> Algorithm {
        match self {
            Tables::Gcra(_) => Algorithm::TokenBucket,
            Tables::Leaky(_) => Algorithm::LeakyBucket,
            Tables::Log(_) => Algorithm::SlidingWindow,
            Tables::Counter(_) => Algorithm::SlidingWindowApprox,
        }
    }

    /// Keys with state now.
    pub(crate) fn len(&self) -> usize {
        match self {
            Tables::Gcra(store) | Tables::Leaky(store) => store.len(),
            Tables::Log(store) => store.len(),
            Tables::Counter(store) => store.len(),
        }
    }

    /// Bytes of the tables (see `KeyStore::table_bytes`).
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Tables::Gcra(store) | Tables::Leaky(store) => store.table_bytes(),
            Tables::Log(store) => store.table_bytes(),
            Tables::Counter(store) => store.table_bytes(),
        }
    }
}

// One engine per quota, in the layer's shared state: boxing the large variant would save
// nothing that matters and cost every token-bucket decision one more dependent load.
#[allow(clippy::large_enum_variant)]
enum Engine {
    TokenBucket {
        keyed: KeyedGcra,
        direct: DirectGcra,
        clock: QuotaClock,
        tats: Arc<KeyStore<u64>>,
    },
    LeakyBucket(Arc<KeyStore<u64>>),
    SlidingLog(Arc<KeyStore<LogState>>),
    SlidingCounter(Arc<KeyStore<CounterState>>),
}

/// One quota over the layer's key table. Its keys are salted, so that quotas sharing the table
/// never read each other's state.
pub(crate) struct Limiter {
    engine: Engine,
    rate: Rate,
    clock: LimiterClock,
    salt: u64,
    /// The quota as the Redis scripts take it, in the Redis mode.
    #[cfg(feature = "redis")]
    pub(crate) remote: Option<crate::remote::RemoteQuota>,
}

impl Limiter {
    pub(crate) fn new(tables: &Tables, rate: Rate, clock: &LimiterClock, salt: u64) -> Limiter {
        let engine = match tables {
            Tables::Gcra(tats) => {
                let quota_clock = QuotaClock {
                    layer: clock.clone(),
                    offset: Arc::default(),
                };
                let quota = quota(&rate);
                let store = BoundedGcraStore {
                    keys: Arc::clone(tats),
                    clock: quota_clock.clone(),
                };
                let keyed: KeyedGcra = RateLimiter::new(quota, store, quota_clock.clone());
                let direct: DirectGcra =
                    RateLimiter::new(quota, InMemoryState::default(), quota_clock.clone());
                Engine::TokenBucket {
                    keyed,
                    direct,
                    clock: quota_clock,
                    tats: Arc::clone(tats),
                }
            }
            Tables::Leaky(store) => Engine::LeakyBucket(Arc::clone(store)),
            Tables::Log(store) => Engine::SlidingLog(Arc::clone(store)),
            Tables::Counter(store) => Engine::SlidingCounter(Arc::clone(store)),
        };
        Limiter {
            engine,
            rate,
            clock: clock.clone(),
            salt,
            #[cfg(feature = "redis")]
            remote: None,
        }
    }

    /// The same limiter, deciding through Redis with `quota` (its own state is then used only
    /// while Redis is unavailable).
    #[cfg(feature = "redis")]
    pub(crate) fn with_remote(mut self, quota: Option<crate::remote::RemoteQuota>) -> Self {
        self.remote = quota;
        self
    }

    pub(crate) fn rate(&self) -> &Rate {
        &self.rate
    }

    /// The key `check` and `fold` use in the shared table for `key`: quotas sharing the table
    /// never share a key's state.
    #[cfg(feature = "redis")]
    pub(crate) fn salted(&self, key: u64) -> u64 {
        key ^ self.salt
    }

    /// The synced mode: `count` admissions other instances made for `key`, learnt at a sync,
    /// added to its state now as admissions that cannot be refused (see
    /// [`algorithm::bucket_fold`]).
    #[cfg(feature = "redis")]
    pub(crate) fn fold(&self, key: u64, count: u64) {
        if count == 0 {
            return;
        }
        let rate = &self.rate;
        let salted = key ^ self.salt;
        let now = self.clock.now_ns();
        match &self.engine {
            // governor keeps the token bucket's TATs in `tats` in the layer's frame, as the
            // reservations read them.
            Engine::TokenBucket { tats: store, .. } | Engine::LeakyBucket(store) => {
                store.update(
                    salted,
                    || now,
                    |state| *state = Some(algorithm::bucket_fold(*state, now, rate, count)),
                );
            }
            Engine::SlidingLog(store) => store.update(
                salted,
                || now,
                |state| {
                    let log = &mut state.get_or_insert_with(LogState::default).0;
                    algorithm::sliding_log_fold(log, now, rate, count);
                },
            ),
            Engine::SlidingCounter(store) => store.update(
                salted,
                || now,
                |state| {
                    let state = state.get_or_insert_with(|| CounterState {
                        counters: Default::default(),
                        per: rate.per_ns,
                    });
                    algorithm::sliding_counter_fold(&mut state.counters, now, rate, count);
                },
            ),
        }
    }

    /// Decides for one request of `key` (`None`: the single global key). With `max_wait`, a
    /// request may be admitted after a wait instead of refused. Without `report`, an admission
    /// through governor leaves `remaining` and `reset_after` at 0: no answer will show them, and
    /// they cost a division.
    pub(crate) fn check(&self, key: Option<u64>, max_wait: Nanos, report: bool) -> Verdict {
        let rate = &self.rate;
        let salted = key.unwrap_or(0) ^ self.salt;
        match &self.engine {
            Engine::TokenBucket {
                keyed,
                direct,
                clock,
                tats,
            } => {
                if max_wait > 0 {
                    // A reservation: governor can only say "not until", not hold the place.
                    let now = self.clock.now_ns();
                    return tats.update(
                        salted,
                        || now,
                        |tat| {
                            let (verdict, next) = gcra_reserve(*tat, now, rate, max_wait);
                            if next.is_some() {
                                *tat = next;
                            }
                            verdict
                        },
                    );
                }
                let outcome = match key {
                    Some(_) => keyed.check_key(&salted),
                    None => direct.check(),
                };
                match outcome {
                    Ok(_) if !report => Verdict::Admit {
                        wait: 0,
                        remaining: 0,
                        reset_after: 0,
                    },
                    Ok(snapshot) => {
                        let remaining = snapshot.remaining_burst_capacity();
                        let used = u64::from(rate.burst.saturating_sub(remaining));
                        Verdict::Admit {
                            wait: 0,
                            remaining,
                            reset_after: used.saturating_mul(rate.interval()),
                        }
                    }
                    Err(not_until) => {
                        let wait = not_until.wait_time_from(clock.now());
                        Verdict::Refuse {
                            retry_after: nanos(wait),
                        }
                    }
                }
            }
            Engine::LeakyBucket(store) => {
                let now = self.clock.now_ns();
                store.update(
                    salted,
                    || now,
                    |next| {
                        let (verdict, new_next) = leaky_bucket(*next, now, rate, max_wait);
                        if new_next.is_some() {
                            *next = new_next;
                        }
                        verdict
                    },
                )
            }
            Engine::SlidingLog(store) => {
                let now = self.clock.now_ns();
                store.update(
                    salted,
                    || now,
                    |state| {
                        sliding_log(
                            &mut state.get_or_insert_with(LogState::default).0,
                            now,
                            rate,
                        )
                    },
                )
            }
            Engine::SlidingCounter(store) => {
                let now = self.clock.now_ns();
                store.update(
                    salted,
                    || now,
                    |state| {
                        let state = state.get_or_insert_with(|| CounterState {
                            counters: Default::default(),
                            per: rate.per_ns,
                        });
                        sliding_counter(&mut state.counters, now, rate)
                    },
                )
            }
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
        Rate::new(10, 1_000_000_000, 3)
    }

    fn limiter(algorithm: Algorithm) -> (Limiter, Tables) {
        let tables = Tables::new(algorithm, 100);
        let clock = LimiterClock::new(LayerClock::tokio());
        (Limiter::new(&tables, rate(), &clock, 0), tables)
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket_through_governor_matches_the_reservation_math() {
        let (limiter, tables) = limiter(Algorithm::TokenBucket);
        let verdicts: Vec<bool> = (0..5)
            .map(|_| matches!(limiter.check(Some(7), 0, true), Verdict::Admit { .. }))
            .collect();
        assert_eq!(verdicts, [true, true, true, false, false]);
        let Verdict::Refuse { retry_after, .. } = limiter.check(Some(7), 0, true) else {
            panic!()
        };
        assert_eq!(retry_after, 100_000_000);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(matches!(
            limiter.check(Some(7), 0, true),
            Verdict::Admit { remaining: 0, .. }
        ));
        // Reservations share governor's state: the next slot is 100 ms away.
        assert!(matches!(
            limiter.check(Some(7), 1_000_000_000, true),
            Verdict::Admit {
                wait: 100_000_000,
                ..
            }
        ));
        assert!(
            matches!(
                limiter.check(Some(8), 0, true),
                Verdict::Admit { remaining: 2, .. }
            ),
            "keys are separate"
        );
        assert_eq!(tables.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn quotas_share_the_table_without_sharing_state() {
        let tables = Tables::new(Algorithm::TokenBucket, 100);
        let clock = LimiterClock::new(LayerClock::tokio());
        let small = Limiter::new(&tables, rate(), &clock, 0);
        tokio::time::advance(Duration::from_secs(3600)).await;
        // Made an hour later: its governor counts from a later origin.
        let large = Limiter::new(&tables, Rate::new(100, 1_000_000_000, 50), &clock, 0xABCD);
        let admitted = |limiter: &Limiter| {
            (0..60)
                .filter(|_| matches!(limiter.check(Some(1), 0, true), Verdict::Admit { .. }))
                .count()
        };
        assert_eq!(admitted(&small), 3);
        assert_eq!(admitted(&large), 50);
        assert_eq!(tables.len(), 2);
        // Both frames agree: a reservation on the large quota sees the state governor left.
        assert!(matches!(
            large.check(Some(1), 1_000_000_000, true),
            Verdict::Admit {
                wait: 10_000_000,
                ..
            }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_global_key_uses_governors_direct_limiter() {
        let (limiter, tables) = limiter(Algorithm::TokenBucket);
        let admitted = (0..10)
            .filter(|_| matches!(limiter.check(None, 0, true), Verdict::Admit { .. }))
            .count();
        assert_eq!(admitted, 3);
        assert_eq!(tables.len(), 0, "no keyed state");
    }

    #[tokio::test(start_paused = true)]
    async fn every_algorithm_refuses_past_its_limit() {
        for algorithm in [
            Algorithm::LeakyBucket,
            Algorithm::SlidingWindow,
            Algorithm::SlidingWindowApprox,
        ] {
            let (limiter, _tables) = limiter(algorithm);
            let refused = (0..30)
                .filter(|_| matches!(limiter.check(Some(1), 0, true), Verdict::Refuse { .. }))
                .count();
            assert!(refused >= 15, "{algorithm:?}: {refused}");
        }
    }
}
