//! The rate limiter's clock.
//!
//! Every decision reads it. In production a moment is the CPU's time-stamp counter (through
//! quanta, governor's default clock), turned into nanoseconds only when two moments are
//! subtracted: about 27 ns a reading and difference on the benchmark machine, against 57 ns for
//! `Instant::now` (`clock_gettime`) and the `Instant` arithmetic. With the `test-util` feature a
//! moment is tokio's instant instead, which paused time drives.

use std::sync::OnceLock;
use std::time::Instant;

use crate::algorithm::{nanos, Nanos};

/// A moment on the rate limiter's clock. One build takes one kind only.
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
            Moment::Ticks(tsc().raw())
        }
    }

    /// Nanoseconds from `earlier` to this moment; 0 if `earlier` is later.
    pub(crate) fn nanos_since(self, earlier: Moment) -> Nanos {
        match (earlier, self) {
            (Moment::Ticks(earlier), Moment::Ticks(now)) => tsc().delta_as_nanos(earlier, now),
            (Moment::At(earlier), Moment::At(now)) => nanos(now.saturating_duration_since(earlier)),
            // Never made: `now` takes one kind per build.
            _ => 0,
        }
    }
}

fn tsc() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_tsc_keeps_pace_with_std() {
        let ticks = || Moment::Ticks(tsc().raw());
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
            assert_eq!(last.nanos_since(now), 0, "never backwards");
            last = now;
        }
        let (c, std_end, d) = bracket();
        let std_took = std_end - std_start;
        // quanta's calibration is far better than 1%.
        let slack = std_took / 100;
        assert!(Duration::from_nanos(c.nanos_since(b)) <= std_took + slack);
        assert!(Duration::from_nanos(d.nanos_since(a)) + slack >= std_took);
    }
}
