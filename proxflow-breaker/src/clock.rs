//! The breaker's clock.
//!
//! A call reads it twice (when it starts and when it ends), so its cost is a large part of the
//! closed path's. Two sources, chosen per breaker:
//!
//! - **The ticker** (default): a thread stores a reading of the time-stamp counter every
//!   millisecond, and a call reads that store: one atomic load. One thread serves the whole
//!   process; it runs while a breaker that reads it exists (started by the first, it ends
//!   within a tick of the last one's drop). Latencies are then known to about a millisecond,
//!   plenty against the default `latency_threshold` of 5 s. This is the cached time of
//!   nginx's event loop and of Envoy's `approximateMonotonicTime`, kept by a thread because a
//!   Tower layer has no loop to hook.
//! - **The TSC** itself, read through quanta per reading: about 20 ns on the machine the
//!   benchmarks run on (`std`'s `Instant::now`, `clock_gettime`, about 40 ns). Chosen with
//!   `precise_clock`, or when `latency_threshold` is under [`TICKER_MAX_THRESHOLD`].
//!
//! A reading is a [`Moment`]: a TSC count, turned into nanoseconds only by subtracting
//! another, and into a `std` instant (an anchor plus the TSC's progress since) only when the
//! state machine needs one; the `Instant` arithmetic of a conversion cost about 15 ns a
//! reading. With the `test-util` feature a moment is tokio's instant instead, which paused
//! time drives, whichever source is chosen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How often the ticker stores a reading.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Below this `latency_threshold` a breaker reads the TSC per call: a tick would be more than
/// 1 % of the threshold.
pub(crate) const TICKER_MAX_THRESHOLD: Duration = Duration::from_millis(100);

/// Where a breaker takes its readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The TSC, per reading.
    Tsc,
    /// The ticker's latest reading.
    Ticker,
}

impl Source {
    #[inline]
    pub(crate) fn now(self) -> Moment {
        match self {
            Source::Tsc => Moment::now(),
            Source::Ticker => Moment::recent(),
        }
    }
}

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

    /// The ticker's latest reading, at most about a [`TICK`] old while a [`TickerHold`] lives.
    #[inline]
    pub(crate) fn recent() -> Moment {
        if cfg!(feature = "test-util") {
            Moment::now()
        } else {
            // Relaxed: one thread stores, in increasing order, so each reader sees the counts
            // in that order; a call whose future moves to another thread is handed over with
            // a synchronization that orders its two readings.
            Moment::Ticks(RECENT.load(Ordering::Relaxed))
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

/// The duration in nanoseconds, saturating (no 128-bit arithmetic on the closed path).
pub(crate) fn nanos(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(duration.subsec_nanos()))
}

/// The ticker's latest TSC reading.
static RECENT: AtomicU64 = AtomicU64::new(0);

/// The ticker's thread, and the breakers that read it.
struct Ticker {
    /// Where it stores its readings.
    recent: &'static AtomicU64,
    state: Mutex<TickerState>,
}

#[derive(Default)]
struct TickerState {
    holds: usize,
    running: bool,
}

/// A breaker's hold on the ticker: its thread runs while one exists.
pub(crate) struct TickerHold(&'static Ticker);

impl TickerHold {
    /// A hold on the process's ticker, its thread started if it is not running; `None` if
    /// it could not be started.
    pub(crate) fn take() -> Option<TickerHold> {
        static TICKER: Ticker = Ticker {
            recent: &RECENT,
            state: Mutex::new(TickerState {
                holds: 0,
                running: false,
            }),
        };
        TICKER.hold()
    }
}

impl Drop for TickerHold {
    fn drop(&mut self) {
        self.0.lock().holds -= 1;
    }
}

impl Ticker {
    fn hold(&'static self) -> Option<TickerHold> {
        let mut state = self.lock();
        if !state.running {
            // A reading before the first call's, whatever the new thread's first tick waits.
            self.tick();
            thread::Builder::new()
                .name("proxflow-breaker-clock".into())
                .spawn(move || self.run())
                .ok()?;
            state.running = true;
        }
        state.holds += 1;
        Some(TickerHold(self))
    }

    fn run(&self) {
        loop {
            thread::sleep(TICK);
            let mut state = self.lock();
            if state.holds == 0 {
                state.running = false;
                return;
            }
            self.tick();
        }
    }

    fn tick(&self) {
        self.recent.store(anchor().clock.raw(), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TickerState> {
        // Nothing panics while holding it; a poisoned count is still the count.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
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

    /// A ticker of the test's own, so that other tests' breakers do not hold it.
    fn own_ticker() -> &'static Ticker {
        Box::leak(Box::new(Ticker {
            recent: Box::leak(Box::new(AtomicU64::new(0))),
            state: Mutex::default(),
        }))
    }

    /// Waits until `done`, failing after ten seconds.
    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            thread::sleep(TICK);
        }
    }

    #[test]
    fn the_ticker_follows_the_tsc_while_held() {
        let ticker = own_ticker();
        let recent = || Moment::Ticks(ticker.recent.load(Ordering::Relaxed));
        let hold = ticker.hold().expect("a thread");
        let first = recent();
        assert!(first.nanos_since(Moment::Ticks(0)) > 0, "a reading at once");
        wait_until("the ticker never ticked", || {
            recent().nanos_since(first) > 0
        });
        // Never ahead of the TSC: a reading taken after it is as late or later.
        let advanced = recent();
        let now = ticks();
        assert_eq!(advanced.nanos_since(now), 0);

        // Two holds, one thread; it ends when the last hold is dropped.
        let second = ticker.hold().expect("the same thread");
        drop(hold);
        assert!(ticker.lock().running);
        drop(second);
        wait_until("the thread kept running", || !ticker.lock().running);
        let stopped = recent();
        thread::sleep(TICK * 5);
        assert_eq!(recent().nanos_since(stopped), 0, "no tick after it ended");

        // A new hold starts it again, with a fresh reading.
        let _again = ticker.hold().expect("a new thread");
        assert!(recent().nanos_since(stopped) > 0);
        assert!(ticker.lock().running);
    }

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
