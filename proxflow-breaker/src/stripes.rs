//! Counters a closed breaker keeps per thread, so that calls which change nothing but a count
//! are counted without its lock and without moving a cache line between cores.
//!
//! The breaker's lock holder opens a period under a tag and later closes it, taking the
//! counts. Each slot carries the tag of the period it counts for; a call adds to its thread's
//! slot only if the slot still carries the tag it read with the period's terms. Closing a
//! period swaps every slot to the next tag, so a call that read the terms of a period now
//! closed fails to add and is recorded under the lock instead: no count lands in a period
//! whose terms its call did not check.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// How a call is counted in a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tally {
    /// Succeeded faster than `latency_threshold`.
    Success,
    /// Ignored by the classifier, or dropped before it ended.
    Ignored,
}

/// One thread's counts: `tag << 32 | successes << 16 | ignored`, and the latency samples of
/// its successes (`samples << 48 | microseconds`), alone on their cache lines (128 bytes:
/// Intel prefetches lines in pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
    counts: AtomicU64,
    latency: AtomicU64,
}

const FIELD: u64 = 0xFFFF;

/// One success in this many (by the slot's count) adds its latency to the samples: the usual
/// latency needs a mean, not every call, and the extra atomic add then costs a sixteenth.
const SAMPLE_EVERY: u64 = 16;

/// A sample's latency is at most this many microseconds (71 minutes), so that the 4,096
/// samples a period can hold (65,535 successes / 16) sum to under 2^44.
const MAX_SAMPLE_US: u64 = u32::MAX as u64;

const SAMPLE: u64 = 1 << 48;

/// The slots of one breaker.
#[derive(Debug)]
pub(crate) struct Stripes {
    slots: Box<[Slot]>,
}

/// Counts taken from the slots when a period closes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Taken {
    pub(crate) successes: u32,
    pub(crate) ignored: u32,
    /// Successes whose latencies were sampled, and the sum of those, in microseconds.
    pub(crate) sampled: u32,
    pub(crate) latency_us: u64,
}

impl Stripes {
    pub(crate) fn new() -> Stripes {
        Stripes {
            slots: (0..slot_count()).map(|_| Slot::default()).collect(),
        }
    }

    /// Adds a call to the period `tag` in this thread's slot; a success's `latency_ns` may
    /// be sampled. False if the period is closed, or if the slot's count is full (the caller
    /// then records the call under the lock, which closes the period and empties the slots).
    pub(crate) fn add(&self, tag: u32, tally: Tally, latency_ns: u64) -> bool {
        let this = &self.slots[this_thread_slot()];
        let slot = &this.counts;
        let shift = match tally {
            Tally::Success => 16,
            Tally::Ignored => 0,
        };
        let mut value = slot.load(Ordering::Relaxed);
        loop {
            if value >> 32 != u64::from(tag) || (value >> shift) & FIELD == FIELD {
                return false;
            }
            // Relaxed is enough: the period's terms were read with Acquire after the lock
            // holder swapped the tags of the period it closed, so a closed period's tag is
            // never seen here once its terms changed.
            match slot.compare_exchange_weak(
                value,
                value + (1 << shift),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    if tally == Tally::Success && (value >> 16).is_multiple_of(SAMPLE_EVERY) {
                        // A sample a period closed in between lands in the next one: a mean
                        // of latencies loses nothing by it.
                        let us = (latency_ns / 1_000).min(MAX_SAMPLE_US);
                        this.latency.fetch_add(SAMPLE | us, Ordering::Relaxed);
                    }
                    return true;
                }
                Err(actual) => value = actual,
            }
        }
    }

    /// Closes the open period (if any), giving every slot the tag `next`; returns the calls
    /// counted in it. Only a period's own tag can carry counts: adding needs the tag.
    pub(crate) fn close(&self, next: u32) -> Taken {
        let mut taken = Taken::default();
        for slot in self.slots.iter() {
            let value = slot.counts.swap(u64::from(next) << 32, Ordering::AcqRel);
            taken.successes += ((value >> 16) & FIELD) as u32;
            taken.ignored += (value & FIELD) as u32;
            let latency = slot.latency.swap(0, Ordering::Relaxed);
            taken.sampled += (latency >> 48) as u32;
            taken.latency_us += latency & (SAMPLE - 1);
        }
        taken
    }
}

/// Slots of anything kept per thread: one per core, up to 64 (a power of two: the thread's
/// slot is a mask away).
pub(crate) fn slot_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, usize::from)
            .next_power_of_two()
            .min(64)
    })
}

/// This thread's slot, given out in turn, so threads spread over the slots.
pub(crate) fn this_thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|index| *index) & (slot_count() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_go_to_the_open_period_only() {
        let stripes = Stripes::new();
        assert!(!stripes.add(1, Tally::Success, 0), "no period open yet");
        assert_eq!(stripes.close(1), Taken::default());
        assert!(stripes.add(1, Tally::Success, 0));
        assert!(stripes.add(1, Tally::Success, 0));
        assert!(stripes.add(1, Tally::Ignored, 0));
        assert_eq!(
            stripes.close(2),
            Taken {
                successes: 2,
                ignored: 1,
                sampled: 1,
                latency_us: 0,
            }
        );
        assert!(!stripes.add(1, Tally::Success, 0), "period 1 is closed");
        assert_eq!(stripes.close(3), Taken::default());
    }

    #[test]
    fn a_full_slot_refuses_until_emptied() {
        let stripes = Stripes::new();
        stripes.close(7);
        for _ in 0..FIELD {
            assert!(stripes.add(7, Tally::Ignored, 0));
        }
        assert!(!stripes.add(7, Tally::Ignored, 0));
        assert!(
            stripes.add(7, Tally::Success, 0),
            "the other count has room"
        );
        let taken = stripes.close(8);
        assert_eq!(taken.ignored, 0xFFFF);
        assert!(stripes.add(8, Tally::Ignored, 0));
    }

    #[test]
    fn threads_count_in_their_own_slots_and_nothing_is_lost() {
        let stripes = Stripes::new();
        stripes.close(1);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        assert!(stripes.add(1, Tally::Success, 0));
                    }
                });
            }
        });
        assert_eq!(stripes.close(2).successes, 40_000);
    }
}
