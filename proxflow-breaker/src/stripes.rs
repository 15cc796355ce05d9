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

/// One thread's counts: `tag << 32 | successes << 16 | ignored`, alone on its cache lines
/// (128 bytes: Intel prefetches lines in pairs).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicU64);

const FIELD: u64 = 0xFFFF;

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
}

impl Stripes {
    pub(crate) fn new() -> Stripes {
        Stripes {
            slots: (0..slot_count()).map(|_| Slot::default()).collect(),
        }
    }

    /// Adds a call to the period `tag` in this thread's slot. False if the period is closed,
    /// or if the slot's count is full (the caller then records the call under the lock,
    /// which closes the period and empties the slots).
    pub(crate) fn add(&self, tag: u32, tally: Tally) -> bool {
        let slot = &self.slots[this_thread_slot()].0;
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
                Ok(_) => return true,
                Err(actual) => value = actual,
            }
        }
    }

    /// Closes the open period (if any), giving every slot the tag `next`; returns the calls
    /// counted in it. Only a period's own tag can carry counts: adding needs the tag.
    pub(crate) fn close(&self, next: u32) -> Taken {
        let mut taken = Taken::default();
        for slot in self.slots.iter() {
            let value = slot.0.swap(u64::from(next) << 32, Ordering::AcqRel);
            taken.successes += ((value >> 16) & FIELD) as u32;
            taken.ignored += (value & FIELD) as u32;
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
        assert!(!stripes.add(1, Tally::Success), "no period open yet");
        assert_eq!(stripes.close(1), Taken::default());
        assert!(stripes.add(1, Tally::Success));
        assert!(stripes.add(1, Tally::Success));
        assert!(stripes.add(1, Tally::Ignored));
        assert_eq!(
            stripes.close(2),
            Taken {
                successes: 2,
                ignored: 1
            }
        );
        assert!(!stripes.add(1, Tally::Success), "period 1 is closed");
        assert_eq!(stripes.close(3), Taken::default());
    }

    #[test]
    fn a_full_slot_refuses_until_emptied() {
        let stripes = Stripes::new();
        stripes.close(7);
        for _ in 0..FIELD {
            assert!(stripes.add(7, Tally::Ignored));
        }
        assert!(!stripes.add(7, Tally::Ignored));
        assert!(stripes.add(7, Tally::Success), "the other count has room");
        let taken = stripes.close(8);
        assert_eq!(taken.ignored, 0xFFFF);
        assert!(stripes.add(8, Tally::Ignored));
    }

    #[test]
    fn threads_count_in_their_own_slots_and_nothing_is_lost() {
        let stripes = Stripes::new();
        stripes.close(1);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        assert!(stripes.add(1, Tally::Success));
                    }
                });
            }
        });
        assert_eq!(stripes.close(2).successes, 40_000);
    }
}
