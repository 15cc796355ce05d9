//! The breaker's clock.
//!
//! A call reads it twice (when it starts and when it ends), so its cost is a large part of the
//! closed path's: `std`'s `Instant::now` (`clock_gettime`) takes about 40 ns on the machine the
//! benchmarks run on, the TSC read through quanta about 20 ns. A reading is a [`Moment`]: a
//! TSC count, turned into nanoseconds only by subtracting another, and into a `std` instant (an
//! anchor plus the TSC's progress since) only when the state machine needs one; the `Instant`
//! arithmetic of a conversion cost about 15 ns a reading. With the `test-util` feature a moment
//! is tokio's instant instead, which paused time drives.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A reading of the breaker's clock. One build takes one kind only.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Moment {
    /// A count of the time-stamp counter.
    Ticks(u64),
    /// Tokio's clock (`test-util`).
    At(Instant),
}

impl Moment {
    pub(crate) fn now() -> Moment {
        if cfg!(feature = "test-util") {
            Moment::At(tokio::time::Instant::now().into_std())
        } else {
            Moment::Ticks(anchor().clock.raw())
        }
    }

    /// Nanoseconds from `earlier` to this moment; 0 if `earlier` is later.
    ///
    /// Between TSC moments this may be one nanosecond less than the difference of their
    /// [`Self::instant`]s, each of which is rounded down on its own.
    pub(crate) fn nanos_since(self, earlier: Moment) -> u64 {
        match (earlier, self) {
            (Moment::Ticks(earlier), Moment::Ticks(now)) => {
                anchor().clock.delta_as_nanos(earlier, now)
            }
            (Moment::At(earlier), Moment::At(now)) => nanos(now.saturating_duration_since(earlier)),
            // Never made: `now` takes one kind per build.
            _ => 0,
        }
    }

    /// The moment as a `std` instant, for the state machine.
    pub(crate) fn instant(self) -> Instant {
        match self {
            Moment::Ticks(ticks) => {
                let anchor = anchor();
                anchor.at + Duration::from_nanos(anchor.clock.delta_as_nanos(anchor.raw, ticks))
            }
            Moment::At(at) => at,
        }
    }
}

/// Now, as a `std` instant.
pub(crate) fn now() -> Instant {
    Moment::now().instant()
}

/// The duration in nanoseconds, saturating (no 128-bit arithmetic on the closed path).
pub(crate) fn nanos(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(duration.subsec_nanos()))
}

/// The TSC clock, and a reading of it taken at a known `std` instant.
struct Anchor {
    clock: quanta::Clock,
    raw: u64,
    at: Instant,
}

fn anchor() -> &'static Anchor {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    ANCHOR.get_or_init(|| {
        let clock = quanta::Clock::new();
        Anchor {
            raw: clock.raw(),
            at: Instant::now(),
            clock,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks() -> Moment {
        Moment::Ticks(anchor().clock.raw())
    }

    #[test]
    fn the_tsc_clock_keeps_pace_with_std() {
        // Each std reading is bracketed by two TSC readings, so that a preemption between
        // readings widens the bracket instead of failing the test.
        let bracket = || {
            let before = ticks();
            let std = Instant::now();
            (before, std, ticks())
        };
        let (a, std_start, b) = bracket();
        let mut last = b;
        while std_start.elapsed() < Duration::from_millis(20) {
            let now = ticks();
            assert!(now.instant() >= last.instant(), "monotonic");
            assert_eq!(last.nanos_since(now), 0, "never backwards");
            last = now;
        }
        let (c, std_end, d) = bracket();
        let std_took = std_end - std_start;
        // quanta's calibration is far better than 1%.
        let slack = std_took / 100;
        let took = |from: Moment, to: Moment| Duration::from_nanos(to.nanos_since(from));
        assert!(
            took(b, c) <= std_took + slack,
            "{:?} > {std_took:?}",
            took(b, c)
        );
        assert!(
            took(a, d) + slack >= std_took,
            "{:?} < {std_took:?}",
            took(a, d)
        );
        // A difference of moments and the difference of their instants agree within the
        // rounding of each instant.
        let apart = nanos(d.instant() - a.instant());
        assert!(apart.abs_diff(d.nanos_since(a)) <= 1, "{apart}");
    }
}
