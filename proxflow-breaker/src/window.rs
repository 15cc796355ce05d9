//! A time-bucketed sliding window of call outcomes: O(1) per call, no allocation after it is
//! made.
//!
//! The window is cut into [`BUCKETS`] buckets of `window / BUCKETS` each; a call is counted in
//! the bucket of its end time, and a bucket leaves the window whole. So the rates cover the
//! last `window` to `window - window / BUCKETS` of calls (60 s to 57 s with the defaults), the
//! resolution resilience4j's time-based window has with one-second buckets.

use std::time::{Duration, Instant};

use proxflow_core::clock::nanos;

/// Buckets per window.
pub(crate) const BUCKETS: usize = 20;

/// Counts of one bucket, or of the whole window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Calls judged (ignored calls are not counted at all).
    pub(crate) calls: u32,
    pub(crate) failures: u32,
    /// Slow calls, failed or not.
    pub(crate) slow: u32,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.calls = self.calls.saturating_add(other.calls);
        self.failures = self.failures.saturating_add(other.failures);
        self.slow = self.slow.saturating_add(other.slow);
    }

    fn sub(&mut self, other: Counts) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }

    /// Whether `part` of the calls is at least `threshold` of them (no division).
    pub(crate) fn reaches(part: u32, calls: u32, threshold: f64) -> bool {
        f64::from(part) >= threshold * f64::from(calls)
    }

    pub(crate) fn failure_rate(&self) -> f64 {
        rate(self.failures, self.calls)
    }

    pub(crate) fn slow_rate(&self) -> f64 {
        rate(self.slow, self.calls)
    }
}

fn rate(part: u32, calls: u32) -> f64 {
    if calls == 0 {
        0.0
    } else {
        f64::from(part) / f64::from(calls)
    }
}

#[derive(Debug)]
pub(crate) struct Window {
    origin: Instant,
    bucket_ns: u64,
    buckets: [Counts; BUCKETS],
    /// Number (since `origin`) of the newest bucket.
    head: u64,
    /// The sum of the buckets, kept as calls come and buckets leave.
    totals: Counts,
}

impl Window {
    pub(crate) fn new(length: Duration, origin: Instant) -> Window {
        Window {
            origin,
            bucket_ns: (nanos(length) / BUCKETS as u64).max(1),
            buckets: [Counts::default(); BUCKETS],
            head: 0,
            totals: Counts::default(),
        }
    }

    /// Counts one call that ended at `now`; returns the counts of the window with it.
    pub(crate) fn record(&mut self, now: Instant, failure: bool, slow: bool) -> Counts {
        self.add(
            now,
            Counts {
                calls: 1,
                failures: u32::from(failure),
                slow: u32::from(slow),
            },
        )
    }

    /// Counts `calls` that ended at `now`; returns the counts of the window with them.
    pub(crate) fn add(&mut self, now: Instant, calls: Counts) -> Counts {
        self.advance(now);
        self.buckets[(self.head % BUCKETS as u64) as usize].add(calls);
        self.totals.add(calls);
        self.totals
    }

    /// When the newest bucket ends: until then no call leaves the window. `None` past what an
    /// `Instant` can hold.
    pub(crate) fn head_ends(&self) -> Option<Instant> {
        let end_ns = self.head.saturating_add(1).saturating_mul(self.bucket_ns);
        self.origin.checked_add(Duration::from_nanos(end_ns))
    }

    /// The counts of the calls in the window at `now`.
    pub(crate) fn totals(&mut self, now: Instant) -> Counts {
        self.advance(now);
        self.totals
    }

    /// Forgets every call (a new state judges only its own calls).
    pub(crate) fn clear(&mut self) {
        self.buckets = [Counts::default(); BUCKETS];
        self.totals = Counts::default();
    }

    /// Moves the head to the bucket of `now`, dropping the buckets that left the window. At
    /// most [`BUCKETS`] steps however long the pause.
    fn advance(&mut self, now: Instant) {
        // 64-bit arithmetic: every call recorded under the lock runs this, and a 128-bit
        // division costs several times a 64-bit one.
        let bucket = nanos(now.saturating_duration_since(self.origin)) / self.bucket_ns;
        if bucket <= self.head {
            return;
        }
        if bucket - self.head >= BUCKETS as u64 {
            self.clear();
        } else {
            for number in self.head + 1..=bucket {
                let slot = &mut self.buckets[(number % BUCKETS as u64) as usize];
                self.totals.sub(*slot);
                *slot = Counts::default();
            }
        }
        self.head = bucket;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn calls_leave_the_window_a_bucket_at_a_time() {
        let t0 = Instant::now();
        let mut window = Window::new(20 * SECOND, t0);
        window.record(t0, true, false);
        window.record(t0 + SECOND / 2, false, true);
        window.record(t0 + 5 * SECOND, false, false);
        let totals = window.totals(t0 + 19 * SECOND);
        assert_eq!(
            totals,
            Counts {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        assert_eq!(totals.failure_rate(), 1.0 / 3.0);
        // The first bucket (0..1 s) leaves at 20 s.
        assert_eq!(window.totals(t0 + 20 * SECOND).calls, 1);
        assert_eq!(window.totals(t0 + 26 * SECOND).calls, 0);
    }

    #[test]
    fn a_long_pause_empties_it_and_counting_goes_on() {
        let t0 = Instant::now();
        let mut window = Window::new(60 * SECOND, t0);
        for i in 0..100 {
            window.record(t0 + i * SECOND / 10, i % 2 == 0, false);
        }
        assert_eq!(window.totals(t0 + 10 * SECOND).calls, 100);
        let later = t0 + 3600 * SECOND;
        assert_eq!(window.totals(later), Counts::default());
        window.record(later, true, true);
        assert_eq!(window.totals(later).failure_rate(), 1.0);
        assert_eq!(window.totals(later).slow_rate(), 1.0);
    }

    #[test]
    fn the_head_ends_with_its_bucket() {
        let t0 = Instant::now();
        let mut window = Window::new(20 * SECOND, t0);
        assert_eq!(window.head_ends(), Some(t0 + SECOND));
        window.add(
            t0 + 5 * SECOND / 2,
            Counts {
                calls: 7,
                ..Counts::default()
            },
        );
        assert_eq!(window.head_ends(), Some(t0 + 3 * SECOND));
        assert_eq!(window.totals(t0 + 3 * SECOND).calls, 7);
    }

    #[test]
    fn time_going_backwards_counts_in_the_newest_bucket() {
        let t0 = Instant::now();
        let mut window = Window::new(SECOND, t0 + SECOND);
        window.record(t0, true, false);
        assert_eq!(window.totals(t0).calls, 1);
    }
}
