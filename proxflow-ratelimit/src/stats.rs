//! Counters a running application can show.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use serde::Serialize;

/// What the layer counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Allowed,
    Limited,
    Delayed,
    Dropped,
    ShadowLimited,
    MissingKey,
    NoClientAddress,
    FailOpen,
    FailClosed,
}

impl Counter {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fn name(self) -> &'static str {
        match self {
            Counter::Allowed => "allowed",
            Counter::Limited => "limited",
            Counter::Delayed => "delayed",
            Counter::Dropped => "dropped",
            Counter::ShadowLimited => "shadow_limited",
            Counter::MissingKey => "missing_key",
            Counter::NoClientAddress => "no_client_address",
            Counter::FailOpen => "fail_open",
            Counter::FailClosed => "fail_closed",
        }
    }
}

/// Threads count into different slots, so that cores do not fight over one counter's cache
/// line on every request. The first `OWNED` threads to count own a slot each and add without a
/// read-modify-write (a locked instruction is a large share of an allowed request); later
/// threads share one more slot and add atomically.
const OWNED: usize = 16;

/// One slot's counters, alone in its cache line (128 bytes: adjacent-line prefetch pairs them).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot([AtomicU64; 9]);

#[derive(Debug, Default)]
pub(crate) struct Counters {
    slots: [Slot; OWNED + 1],
}

/// The slot of the calling thread, and whether the thread is its only writer.
fn slot_of_thread() -> (usize, bool) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // A constant initializer and a sentinel: a lazily initialized thread local checks its
    // state on every access.
    thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    let mut slot = SLOT.get();
    if slot == usize::MAX {
        slot = NEXT.fetch_add(1, Ordering::Relaxed).min(OWNED);
        SLOT.set(slot);
    }
    (slot, slot < OWNED)
}

impl Counters {
    #[inline]
    pub(crate) fn add(&self, counter: Counter) {
        let (slot, owned) = slot_of_thread();
        let count = &self.slots[slot].0[counter as usize];
        if owned {
            count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        } else {
            count.fetch_add(1, Ordering::Relaxed);
        }
        #[cfg(feature = "metrics")]
        metrics::counter!("proxflow_ratelimit_requests_total", "outcome" => counter.name())
            .increment(1);
        tracing::trace!(outcome = counter.name(), "rate limit decision");
    }

    fn get(&self, counter: Counter) -> u64 {
        self.slots
            .iter()
            .map(|slot| slot.0[counter as usize].load(Ordering::Relaxed))
            .sum()
    }
}

/// What a layer's handles see, made with the layer and kept through its builder calls: the
/// counters, and the key tables of the limiters built from it.
#[derive(Default)]
pub(crate) struct LayerState {
    pub(crate) counters: Counters,
    /// The limiters built from the layer; weak, so that a limiter no service uses any more is
    /// freed.
    built: Mutex<Vec<Weak<dyn KeyUsage>>>,
}

/// A limiter's key tables, as the stats report them.
pub(crate) trait KeyUsage: Send + Sync {
    /// Keys with state, and the bytes of the tables.
    fn key_usage(&self) -> (usize, usize);

    /// In the Redis mode, whether Redis decides now (`None` before the first connection);
    /// `None` otherwise.
    fn redis_connected(&self) -> Option<bool>;

    /// In the synced mode: keys synced, admissions not shared yet, syncs done.
    fn synced(&self) -> (u64, u64, u64);
}

impl LayerState {
    /// Counts `limiter`'s keys in this layer's stats from now on.
    pub(crate) fn register(&self, limiter: Weak<dyn KeyUsage>) {
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        built.retain(|limiter| limiter.strong_count() > 0);
        built.push(limiter);
    }

    fn key_usage(&self) -> (usize, usize) {
        let built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        built
            .iter()
            .filter_map(Weak::upgrade)
            .map(|limiter| limiter.key_usage())
            .fold((0, 0), |(keys, bytes), (k, b)| (keys + k, bytes + b))
    }

    /// The synced mode's figures of the limiters built from the layer.
    fn synced(&self) -> (u64, u64, u64) {
        let built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        built
            .iter()
            .filter_map(Weak::upgrade)
            .map(|limiter| limiter.synced())
            .fold((0, 0, 0), |(k, u, s), (keys, unshared, syncs)| {
                (k + keys, u + unshared, s + syncs)
            })
    }

    /// The Redis state of the newest limiter built from the layer.
    fn redis_connected(&self) -> Option<bool> {
        let built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        built
            .iter()
            .rev()
            .find_map(Weak::upgrade)
            .and_then(|limiter| limiter.redis_connected())
    }
}

/// A handle on the counters of one [`RateLimitLayer`](crate::RateLimitLayer). Taken before or
/// after the builder calls, it reads the same counters: those of every service the layer (and
/// its clones) made.
#[derive(Clone)]
pub struct Stats {
    pub(crate) state: Arc<LayerState>,
}

/// A point-in-time copy of the counters; serializes to JSON for a dashboard.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Requests passed to the inner service without waiting.
    pub allowed: u64,
    /// Requests answered 429.
    pub limited: u64,
    /// Requests held before being passed on.
    pub delayed: u64,
    /// Requests whose connection was closed without an answer.
    pub dropped: u64,
    /// Shadow mode: requests that would have been held, refused or dropped (all passed at
    /// once).
    pub shadow_limited: u64,
    /// Requests without a key (counted whatever `missing_key` does with them).
    pub missing_key: u64,
    /// Requests of an `ip` layer without a client address: the server recorded no peer
    /// address (a plain `axum::serve` without `into_make_service_with_connect_info`, no
    /// [`ClientAddr`](crate::ClientAddr), no [`with_peer`](crate::RateLimit::with_peer)). They
    /// count as `missing_key` too, and share one bucket unless `missing_key` says otherwise. Not
    /// 0 means the server is set up wrong: see [`Key::Ip`](crate::Key::Ip).
    pub no_client_address: u64,
    /// Keys with state now, over all quotas.
    pub active_keys: u64,
    /// Bytes of the key tables, over all quotas. In the exact Redis mode the tables hold only
    /// the state `fail_open` made while Redis was unavailable; in the synced mode they hold
    /// every key's state, as without Redis.
    pub key_table_bytes: u64,
    /// Exact Redis mode: requests decided by the instance's own limiter because Redis could
    /// not answer in time (`fail_open`). They count as what happened to them too (`allowed`,
    /// `limited`, ...).
    pub fail_open: u64,
    /// Exact Redis mode: requests answered 503 because Redis could not answer in time
    /// (`fail_closed`).
    pub fail_closed: u64,
    /// Redis mode: whether Redis answers now (in exact mode: decides); `None` before the first
    /// connection and without the Redis mode.
    pub redis_connected: Option<bool>,
    /// Synced mode: keys whose counts this instance shares at each sync (those with requests
    /// lately; at most `max_keys`).
    pub synced_keys: u64,
    /// Synced mode: admissions not shared yet. They wait for the next sync, or while Redis is
    /// unavailable for the first one after it is back (at most
    /// `burst + rate × (sync_interval / per + 1)` a key).
    pub unshared_admissions: u64,
    /// Synced mode: syncs done with Redis.
    pub syncs: u64,
}

impl Stats {
    /// Reads the counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &self.state.counters;
        let (active_keys, key_table_bytes) = self.state.key_usage();
        let (synced_keys, unshared_admissions, syncs) = self.state.synced();
        StatsSnapshot {
            allowed: c.get(Counter::Allowed),
            limited: c.get(Counter::Limited),
            delayed: c.get(Counter::Delayed),
            dropped: c.get(Counter::Dropped),
            shadow_limited: c.get(Counter::ShadowLimited),
            missing_key: c.get(Counter::MissingKey),
            no_client_address: c.get(Counter::NoClientAddress),
            active_keys: active_keys as u64,
            key_table_bytes: key_table_bytes as u64,
            fail_open: c.get(Counter::FailOpen),
            fail_closed: c.get(Counter::FailClosed),
            redis_connected: self.state.redis_connected(),
            synced_keys,
            unshared_admissions,
            syncs,
        }
    }
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_count_is_lost_past_the_owned_slots() {
        let counters = Counters::default();
        let threads = 2 * OWNED + 8;
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        counters.add(Counter::Allowed);
                    }
                });
            }
        });
        assert_eq!(counters.get(Counter::Allowed), threads as u64 * 10_000);
        assert_eq!(counters.get(Counter::Limited), 0);
    }
}
