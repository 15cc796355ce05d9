//! The clock every layer reads, injected the way governor injects its own.
//!
//! A layer takes a [`Clock`] from its builder (`.clock(...)`) and reads nothing else, so that no
//! cargo feature and no other package of a build can change the time a layer sees. Three kinds:
//!
//! - [`Clock::tsc`] (the default): the CPU's time-stamp counter through quanta, as governor
//!   reads it by default. A reading is a raw count, turned into nanoseconds only when two are
//!   subtracted, which is cheaper than `Instant::now` and its arithmetic.
//! - [`Clock::tokio`]: tokio's clock, so that `tokio::time::pause` and `advance` drive a layer in
//!   tests and simulations.
//! - [`ManualClock`]: a clock moved only by hand, for tests without a runtime.
//!
//! [`Clock::coarse`] gives a cheaper reading of the same time for layers that read the clock
//! on every call and need it only to about a millisecond.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// A reading of a [`Clock`]. Only the clock that took it can tell what it means: compare and
/// subtract readings through that clock ([`Clock::nanos_between`], [`Clock::instant`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Moment(u64);

/// A source of time for a layer. Cheap to clone; clones read the same time.
///
/// The default is [`Clock::tsc`].
#[derive(Clone)]
pub struct Clock {
    source: Source,
}

#[derive(Clone)]
enum Source {
    /// A raw count of the time-stamp counter. The anchor is held here so that a reading
    /// does not ask the process-wide cell for it.
    Tsc { anchor: &'static Anchor },
    /// The ticker's latest count of the time-stamp counter; the ticker runs while a hold lives.
    Ticker {
        anchor: &'static Anchor,
        _hold: Arc<TickerHold>,
    },
    /// Nanoseconds since `origin`, offset by [`ORIGIN`] so that a reading before the origin
    /// (another runtime's paused clock) still orders right.
    Tokio { origin: tokio::time::Instant },
    /// Nanoseconds set by hand.
    Manual {
        nanos: Arc<AtomicU64>,
        origin: Instant,
    },
}

/// Where [`Source::Tokio`] counts from: the middle of the range.
const ORIGIN: u64 = 1 << 63;

impl Clock {
    /// The CPU's time-stamp counter (through quanta, calibrated against the OS clock once per
    /// process). What every layer reads unless told otherwise.
    pub fn tsc() -> Clock {
        Clock {
            source: Source::Tsc { anchor: tsc() },
        }
    }

    /// Tokio's clock: `tokio::time::Instant::now()`, which `tokio::time::pause` and `advance`
    /// drive when tokio's `test-util` feature is on. For tests and simulations; built outside a
    /// runtime it reads the OS clock.
    pub fn tokio() -> Clock {
        Clock {
            source: Source::Tokio {
                origin: tokio::time::Instant::now(),
            },
        }
    }

    /// A cheaper reading of the same time, to about a millisecond: for a [`Clock::tsc`], a
    /// process-wide thread (`proxflow-clock`) stores a reading of the counter every
    /// millisecond while a coarse clock exists, and a reading is one atomic load, the cached
    /// time of nginx's and Envoy's event loops. Any other clock is returned as it is.
    ///
    /// If the thread cannot be started, the clock reads the counter itself.
    pub fn coarse(&self) -> Clock {
        match self.source {
            Source::Tsc { anchor } => match TickerHold::take() {
                Some(hold) => Clock {
                    source: Source::Ticker {
                        anchor,
                        _hold: Arc::new(hold),
                    },
                },
                None => self.clone(),
            },
            _ => self.clone(),
        }
    }

    /// Whether readings are only as precise as the ticker's millisecond ([`Clock::coarse`]).
    pub fn is_coarse(&self) -> bool {
        matches!(self.source, Source::Ticker { .. })
    }

    /// The current time.
    #[inline]
    pub fn now(&self) -> Moment {
        match &self.source {
            Source::Tsc { anchor } => Moment(anchor.clock.raw()),
            // Relaxed: one thread stores, in increasing order, so each reader sees the counts
            // in that order.
            Source::Ticker { .. } => Moment(RECENT.load(Ordering::Relaxed)),
            Source::Tokio { origin } => {
                let now = tokio::time::Instant::now();
                Moment(match now.checked_duration_since(*origin) {
                    Some(after) => ORIGIN.saturating_add(nanos(after)),
                    None => ORIGIN.saturating_sub(nanos(*origin - now)),
                })
            }
            Source::Manual { nanos, .. } => Moment(nanos.load(Ordering::Acquire)),
        }
    }

    /// Nanoseconds from `earlier` to `later`; 0 if `earlier` is the later one.
    #[inline]
    pub fn nanos_between(&self, earlier: Moment, later: Moment) -> u64 {
        match self.source {
            Source::Tsc { anchor } | Source::Ticker { anchor, .. } => {
                anchor.clock.delta_as_nanos(earlier.0, later.0)
            }
            Source::Tokio { .. } | Source::Manual { .. } => later.0.saturating_sub(earlier.0),
        }
    }

    /// Nanoseconds from `earlier` to now: [`Clock::nanos_between`] `earlier` and
    /// [`Clock::now`], in one step.
    #[inline]
    pub fn nanos_since(&self, earlier: Moment) -> u64 {
        match self.source {
            Source::Tsc { anchor } => anchor.clock.delta_as_nanos(earlier.0, anchor.clock.raw()),
            _ => self.nanos_between(earlier, self.now()),
        }
    }

    /// The time from `earlier` to `later`; zero if `earlier` is the later one.
    pub fn duration_between(&self, earlier: Moment, later: Moment) -> Duration {
        Duration::from_nanos(self.nanos_between(earlier, later))
    }

    /// The time since `earlier`.
    pub fn elapsed(&self, earlier: Moment) -> Duration {
        Duration::from_nanos(self.nanos_since(earlier))
    }

    /// A reading as a `std` instant, for algorithms that take one. Two readings' instants are
    /// apart by their [`Clock::nanos_between`], give or take a nanosecond of rounding.
    pub fn instant(&self, moment: Moment) -> Instant {
        match &self.source {
            Source::Tsc { anchor } | Source::Ticker { anchor, .. } => {
                anchor.at + Duration::from_nanos(anchor.clock.delta_as_nanos(anchor.raw, moment.0))
            }
            Source::Tokio { origin } => {
                let origin = origin.into_std();
                match moment.0.checked_sub(ORIGIN) {
                    Some(after) => origin + Duration::from_nanos(after),
                    None => origin - Duration::from_nanos(ORIGIN - moment.0),
                }
            }
            Source::Manual { origin, .. } => *origin + Duration::from_nanos(moment.0),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::tsc()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.source {
            Source::Tsc { .. } => "Clock::tsc",
            Source::Ticker { .. } => "Clock::tsc (coarse)",
            Source::Tokio { .. } => "Clock::tokio",
            Source::Manual { .. } => "Clock::manual",
        })
    }
}

/// A clock that moves only when told to, for tests that run without a runtime.
///
/// ```
/// use std::time::Duration;
/// use proxflow_core::ManualClock;
///
/// let manual = ManualClock::new();
/// let clock = manual.clock();
/// let start = clock.now();
/// manual.advance(Duration::from_millis(250));
/// assert_eq!(clock.elapsed(start), Duration::from_millis(250));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
    origin: Instant,
}

impl ManualClock {
    /// A clock at its start. Its readings' [`Clock::instant`]s count from the moment it is made.
    pub fn new() -> ManualClock {
        ManualClock {
            nanos: Arc::new(AtomicU64::new(0)),
            origin: Instant::now(),
        }
    }

    /// A [`Clock`] that reads this one, for a layer's `.clock(...)`.
    pub fn clock(&self) -> Clock {
        Clock {
            source: Source::Manual {
                nanos: Arc::clone(&self.nanos),
                origin: self.origin,
            },
        }
    }

    /// Moves the time forward.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(nanos(by), Ordering::AcqRel);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

/// The duration in nanoseconds, saturating (no 128-bit arithmetic where it is read per call).
pub fn nanos(duration: Duration) -> u64 {
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

fn tsc() -> &'static Anchor {
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

/// How often the ticker stores a reading.
pub const TICK: Duration = Duration::from_millis(1);

/// The ticker's latest TSC reading.
static RECENT: AtomicU64 = AtomicU64::new(0);

/// The ticker's thread, and the clocks that read it.
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

/// A coarse clock's hold on the ticker: its thread runs while one exists.
struct TickerHold(&'static Ticker);

impl TickerHold {
    /// A hold on the process's ticker, its thread started if it is not running; `None` if it
    /// could not be started.
    fn take() -> Option<TickerHold> {
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
                .name("proxflow-clock".into())
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
        self.recent.store(tsc().clock.raw(), Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, TickerState> {
        // Nothing panics while holding it; a poisoned count is still the count.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ticker of the test's own, so that other tests' clocks do not hold it.
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
        let clock = Clock::tsc();
        let ticker = own_ticker();
        let recent = || Moment(ticker.recent.load(Ordering::Relaxed));
        let hold = ticker.hold().expect("a thread");
        let first = recent();
        assert!(
            clock.nanos_between(Moment(0), first) > 0,
            "a reading at once"
        );
        wait_until("the ticker never ticked", || {
            clock.nanos_between(first, recent()) > 0
        });
        // Never ahead of the TSC: a reading taken after it is as late or later.
        let advanced = recent();
        assert_eq!(clock.nanos_between(clock.now(), advanced), 0);

        // Two holds, one thread; it ends when the last hold is dropped.
        let second = ticker.hold().expect("the same thread");
        drop(hold);
        assert!(ticker.lock().running);
        drop(second);
        wait_until("the thread kept running", || !ticker.lock().running);
        let stopped = recent();
        thread::sleep(TICK * 5);
        assert_eq!(
            clock.nanos_between(stopped, recent()),
            0,
            "no tick after it ended"
        );

        // A new hold starts it again, with a fresh reading.
        let _again = ticker.hold().expect("a new thread");
        assert!(clock.nanos_between(stopped, recent()) > 0);
        assert!(ticker.lock().running);
    }

    #[test]
    fn the_tsc_clock_keeps_pace_with_std() {
        let clock = Clock::tsc();
        // Each std reading is bracketed by two TSC readings, so that a preemption between
        // readings widens the bracket instead of failing the test.
        let bracket = || {
            let before = clock.now();
            let std = Instant::now();
            (before, std, clock.now())
        };
        let (a, std_start, b) = bracket();
        let mut last = b;
        while std_start.elapsed() < Duration::from_millis(20) {
            let now = clock.now();
            assert!(clock.instant(now) >= clock.instant(last), "monotonic");
            assert_eq!(clock.nanos_between(now, last), 0, "never backwards");
            last = now;
        }
        let (c, std_end, d) = bracket();
        let std_took = std_end - std_start;
        // quanta's calibration is far better than 1%.
        let slack = std_took / 100;
        let took = clock.duration_between(b, c);
        assert!(took <= std_took + slack, "{took:?} > {std_took:?}");
        let took = clock.duration_between(a, d);
        assert!(took + slack >= std_took, "{took:?} < {std_took:?}");
        assert!(
            clock.nanos_since(a) >= clock.nanos_between(a, d),
            "since reads now"
        );
        // A difference of readings and the difference of their instants agree within the
        // rounding of each instant.
        let apart = nanos(clock.instant(d) - clock.instant(a));
        assert!(apart.abs_diff(clock.nanos_between(a, d)) <= 1, "{apart}");
    }

    #[test]
    fn a_coarse_clock_reads_the_same_time() {
        let precise = Clock::tsc();
        let coarse = precise.coarse();
        assert!(coarse.is_coarse());
        let before = precise.now();
        thread::sleep(TICK * 3);
        let reading = coarse.now();
        assert!(precise.nanos_between(before, reading) > 0, "ticked since");
        assert_eq!(
            precise.nanos_between(precise.now(), reading),
            0,
            "not ahead"
        );
        assert!(!Clock::tokio().coarse().is_coarse());
    }

    #[tokio::test(start_paused = true)]
    async fn paused_time_drives_the_tokio_clock() {
        let clock = Clock::tokio();
        let start = clock.now();
        tokio::time::advance(Duration::from_secs(3)).await;
        let later = clock.now();
        assert_eq!(clock.duration_between(start, later), Duration::from_secs(3));
        assert_eq!(clock.nanos_between(later, start), 0);
        assert_eq!(
            clock.instant(later) - clock.instant(start),
            Duration::from_secs(3)
        );
        assert_eq!(clock.instant(later), tokio::time::Instant::now().into_std());
    }

    #[test]
    fn a_tokio_clock_orders_readings_before_its_origin() {
        let origin = tokio::time::Instant::now();
        let clock = Clock {
            source: Source::Tokio {
                origin: origin + Duration::from_secs(10),
            },
        };
        let before = clock.now();
        assert!(before < Moment(ORIGIN));
        let instant = clock.instant(before);
        assert!(
            instant >= origin.into_std() && instant < origin.into_std() + Duration::from_secs(1)
        );
    }

    #[test]
    fn a_manual_clock_moves_only_by_hand() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        let start = clock.now();
        thread::sleep(TICK);
        assert_eq!(clock.now(), start);
        manual.advance(Duration::from_secs(2));
        assert_eq!(clock.elapsed(start), Duration::from_secs(2));
        assert_eq!(clock.nanos_since(start), 2_000_000_000);
        assert_eq!(
            clock.instant(clock.now()) - clock.instant(start),
            Duration::from_secs(2)
        );
    }
}
