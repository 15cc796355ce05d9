//! The balancer's clock.
//!
//! Every pick and every answer reads it: `std`'s `Instant::now` (`clock_gettime`) takes about
//! 40 ns on the machine the benchmarks run on, the TSC read through quanta about 20 ns. Its
//! readings are `std` instants (an anchor plus the TSC's progress since). With the
//! `test-util` feature it is tokio's clock instead, which paused time drives (the simulation
//! in benches/simulation and this crate's tests run on it).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Now, on the balancer's clock.
pub(crate) fn now() -> Instant {
    if cfg!(feature = "test-util") {
        tokio::time::Instant::now().into_std()
    } else {
        tsc_now()
    }
}

fn tsc_now() -> Instant {
    struct Anchor {
        clock: quanta::Clock,
        raw: u64,
        at: Instant,
    }
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    let anchor = ANCHOR.get_or_init(|| {
        let clock = quanta::Clock::new();
        Anchor {
            raw: clock.raw(),
            at: Instant::now(),
            clock,
        }
    });
    let since = anchor.clock.delta_as_nanos(anchor.raw, anchor.clock.raw());
    anchor.at + Duration::from_nanos(since)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tsc_clock_keeps_pace_with_std() {
        // Each std reading is bracketed by two TSC readings, so that a preemption between
        // readings widens the bracket instead of failing the test.
        let bracket = || {
            let before = tsc_now();
            let std = Instant::now();
            (before, std, tsc_now())
        };
        let (a, std_start, b) = bracket();
        let mut last = b;
        while std_start.elapsed() < Duration::from_millis(20) {
            let now = tsc_now();
            assert!(now >= last, "monotonic");
            last = now;
        }
        let (c, std_end, d) = bracket();
        let std_took = std_end - std_start;
        // quanta's calibration is far better than 1%.
        let slack = std_took / 100;
        assert!(c - b <= std_took + slack, "{:?} > {std_took:?}", c - b);
        assert!(d - a + slack >= std_took, "{:?} < {std_took:?}", d - a);
    }
}
