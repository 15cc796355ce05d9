//! Counters a running application can show.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::service::Shared;

/// What the layer counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Allowed,
    Limited,
    Delayed,
    Dropped,
    ShadowLimited,
    MissingKey,
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
        }
    }
}

/// Threads count into different slots: one shared counter made both cores fight over its cache
/// line on every request. The first `OWNED` threads to count own a slot each and add without a
/// read-modify-write (a locked instruction was 5% of an allowed request); later threads share
/// one more slot and add atomically.
const OWNED: usize = 16;

/// One slot's counters, alone in its cache line (128 bytes: adjacent-line prefetch pairs them).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot([AtomicU64; 6]);

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

/// A handle on the counters of one [`RateLimitLayer`](crate::RateLimitLayer).
#[derive(Clone)]
pub struct Stats {
    pub(crate) shared: Arc<Shared>,
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
    /// Keys with state now, over all quotas.
    pub active_keys: u64,
    /// Bytes of the key tables, over all quotas.
    pub key_table_bytes: u64,
}

impl Stats {
    /// Reads the counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &self.shared.counters;
        let (active_keys, key_table_bytes) = self.shared.key_usage();
        StatsSnapshot {
            allowed: c.get(Counter::Allowed),
            limited: c.get(Counter::Limited),
            delayed: c.get(Counter::Delayed),
            dropped: c.get(Counter::Dropped),
            shadow_limited: c.get(Counter::ShadowLimited),
            missing_key: c.get(Counter::MissingKey),
            active_keys: active_keys as u64,
            key_table_bytes: key_table_bytes as u64,
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
