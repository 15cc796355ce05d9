//! The per-key algorithms, as plain state and functions of the time (nanoseconds since the
//! limiter's origin). No I/O, no clock: the service passes `now` in.

/// Nanoseconds since the limiter's origin.
pub(crate) type Nanos = u64;

/// A rate: `rate` requests per `per_ns`, with `burst` for the algorithms that have one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Rate {
    pub(crate) rate: u32,
    pub(crate) per_ns: u64,
    pub(crate) burst: u32,
    /// `per_ns / rate`, divided out once: every decision of every algorithm uses it.
    interval: Nanos,
}

/// The longest span the algorithms reason about; longer periods and bursts are clamped to it,
/// which keeps every sum of times far from overflowing 64-bit nanoseconds.
pub(crate) const MAX_SPAN: Nanos = 100 * 365 * 24 * 3600 * 1_000_000_000;

impl Rate {
    /// A rate with `per` and `burst × per / rate` clamped to [`MAX_SPAN`].
    pub(crate) fn new(rate: u32, per_ns: u64, burst: u32) -> Rate {
        let rate = rate.max(1);
        let per_ns = per_ns.clamp(1, MAX_SPAN);
        let interval = (per_ns / u64::from(rate)).max(1);
        let burst = u64::from(burst).min(MAX_SPAN / interval) as u32;
        Rate {
            rate,
            per_ns,
            burst,
            interval,
        }
    }

    /// The emission interval: time between two requests at the sustained rate.
    pub(crate) fn interval(&self) -> Nanos {
        self.interval
    }
}

/// What the algorithm says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Admit now, or after `wait` (leaky bucket queueing and delayed admission).
    Admit {
        wait: Nanos,
        remaining: u32,
        reset_after: Nanos,
    },
    /// Refuse; the same request would be admitted `retry_after` from now.
    Refuse { retry_after: Nanos },
}

/// GCRA (the token bucket as a theoretical arrival time), the algorithm governor implements.
/// Used here only for *reservations*: admitting a request at a future time and holding its
/// place, which governor's API does not offer. State: the theoretical arrival time (TAT).
pub(crate) fn gcra_reserve(
    tat: Option<Nanos>,
    now: Nanos,
    rate: &Rate,
    max_wait: Nanos,
) -> (Verdict, Option<Nanos>) {
    let t = rate.interval();
    let tau = t.saturating_mul(u64::from(rate.burst.max(1) - 1));
    let tat = tat.unwrap_or(now).max(now);
    let earliest = tat.saturating_sub(tau);
    let wait = earliest.saturating_sub(now);
    if wait > max_wait {
        let verdict = Verdict::Refuse {
            retry_after: wait - max_wait,
        };
        return (verdict, None);
    }
    let new_tat = tat.saturating_add(t);
    let remaining = now
        .saturating_add(tau)
        .saturating_add(t)
        .saturating_sub(new_tat)
        / t;
    let verdict = Verdict::Admit {
        wait,
        remaining: remaining as u32,
        reset_after: new_tat - now,
    };
    (verdict, Some(new_tat))
}

/// nginx `limit_req` without `nodelay`: requests leave at one per interval; up to `burst` wait
/// their turn, the rest are refused. State: when the next request may leave.
pub(crate) fn leaky_bucket(
    next_free: Option<Nanos>,
    now: Nanos,
    rate: &Rate,
    max_wait: Nanos,
) -> (Verdict, Option<Nanos>) {
    let t = rate.interval();
    // `reject: delay` lengthens the line to `max_delay` but never shortens it: delaying must not
    // refuse a request the line alone would hold.
    let room = t.saturating_mul(u64::from(rate.burst)).max(max_wait);
    let start = next_free.unwrap_or(now).max(now);
    let wait = start - now;
    if wait > room {
        let retry_after = wait - room;
        return (Verdict::Refuse { retry_after }, None);
    }
    let new_next = start.saturating_add(t);
    let queued = (new_next - now).div_ceil(t);
    let remaining = u64::from(rate.burst).saturating_sub(queued.saturating_sub(1));
    (
        Verdict::Admit {
            wait,
            remaining: remaining as u32,
            reset_after: new_next - now,
        },
        Some(new_next),
    )
}

/// A queue of times in a ring: 24 bytes beside a key (`VecDeque` takes 32), and no allocation
/// until the first push, which makes room for one: most keys of a large table are clients seen
/// once.
#[derive(Debug, Default)]
pub(crate) struct Log {
    ring: Box<[Nanos]>,
    head: u32,
    len: u32,
}

impl Log {
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    pub(crate) fn front(&self) -> Option<Nanos> {
        (self.len > 0).then(|| self.ring[self.head as usize])
    }

    pub(crate) fn back(&self) -> Option<Nanos> {
        (self.len > 0).then(|| self.ring[self.slot(self.len - 1)])
    }

    fn pop_front(&mut self) {
        if self.len > 0 {
            self.head = (self.head + 1) % self.ring.len() as u32;
            self.len -= 1;
        }
    }

    fn push_back(&mut self, time: Nanos) {
        if self.len as usize == self.ring.len() {
            // Doubling, oldest first in the new ring. It never holds more than `rate` entries,
            // a `u32`, so its length stays one too (`pop_front` divides by it).
            let room = (self.ring.len() * 2).clamp(1, u32::MAX as usize);
            let ring: Box<[Nanos]> = (0..room)
                .map(|i| {
                    if i < self.len as usize {
                        self.ring[self.slot(i as u32)]
                    } else {
                        0
                    }
                })
                .collect();
            self.ring = ring;
            self.head = 0;
        }
        let slot = self.slot(self.len);
        self.ring[slot] = time;
        self.len += 1;
    }

    /// Every entry leaves `by` later.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn delay_all(&mut self, by: Nanos) {
        for index in 0..self.len {
            let slot = self.slot(index);
            self.ring[slot] = self.ring[slot].saturating_add(by);
        }
    }

    fn slot(&self, index: u32) -> usize {
        ((self.head as usize) + index as usize) % self.ring.len()
    }
}

/// The exact sliding log: at most `rate` admissions in any window of `per`. The log holds when
/// each admission leaves the window (its time plus `per`), oldest first, so that it needs no
/// `per` of its own to say when it empties. Memory: 8 bytes per admission in the window.
pub(crate) fn sliding_log(log: &mut Log, now: Nanos, rate: &Rate) -> Verdict {
    while log.front().is_some_and(|leaves| leaves <= now) {
        log.pop_front();
    }
    let limit = rate.rate as usize;
    if log.len() >= limit {
        // The oldest admission in the window leaves it first.
        let retry_after = log.front().map_or(0, |leaves| leaves - now);
        return Verdict::Refuse { retry_after };
    }
    log.push_back(now.saturating_add(rate.per_ns));
    let reset_after = log.front().map_or(rate.per_ns, |leaves| leaves - now);
    Verdict::Admit {
        wait: 0,
        remaining: (limit - log.len()) as u32,
        reset_after,
    }
}

/// The two-counter approximation of the sliding window (as Cloudflare and nginx's commercial
/// limiter use it): the previous fixed window's count, weighted by how much of it the sliding
/// window still covers, plus the current window's count.
///
/// Error bound: the estimate assumes the previous window's requests were spread evenly. Each
/// fixed window admits at most `rate`, so any window of length `per` (which overlaps two fixed
/// windows) holds at most `2 × rate`, reached only when the previous window's requests all came
/// at its very end; for evenly spread traffic it admits `rate`. Memory: 16 bytes per key, 32
/// with the key and the window length in the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    window: u64,
    previous: u32,
    current: u32,
}

impl Counters {
    /// When this state equals a fresh one: two windows after its current window started.
    pub(crate) fn idle_at(&self, per: Nanos) -> Nanos {
        (self.window + 2).saturating_mul(per)
    }
}

impl Counters {
    /// Moves the state to the fixed window holding `now`.
    fn roll(&mut self, now: Nanos, per: Nanos) {
        let window = now / per;
        if window != self.window {
            let previous = if window == self.window + 1 {
                self.current
            } else {
                0
            };
            *self = Counters {
                window,
                previous,
                current: 0,
            };
        }
    }
}

pub(crate) fn sliding_counter(state: &mut Counters, now: Nanos, rate: &Rate) -> Verdict {
    let per = rate.per_ns;
    state.roll(now, per);
    let elapsed = now % per;
    // previous * (per - elapsed) / per + current < rate, kept in integers.
    let weighted = |current: u32| {
        u128::from(state.previous) * u128::from(per - elapsed)
            + u128::from(current) * u128::from(per)
    };
    let limit = u128::from(rate.rate) * u128::from(per);
    let reset_after = per - elapsed;
    if weighted(state.current) < limit {
        state.current += 1;
        let used = weighted(state.current).div_ceil(u128::from(per));
        let remaining = u128::from(rate.rate).saturating_sub(used) as u32;
        return Verdict::Admit {
            wait: 0,
            remaining,
            reset_after,
        };
    }
    // The estimate falls as the previous window slides out; past the window's end only the
    // current count remains.
    let retry_after = if state.current >= rate.rate || state.previous == 0 {
        reset_after
    } else {
        // previous * (per - e) / per + current < rate  <=>  e > per - (rate - current) * per / previous
        let room =
            u128::from(rate.rate - state.current) * u128::from(per) / u128::from(state.previous);
        let target = u128::from(per).saturating_sub(room) as u64 + 1;
        target.saturating_sub(elapsed).max(1)
    };
    Verdict::Refuse { retry_after }
}

// The synced mode's folds: admissions another instance made, learnt at a sync, added to this
// instance's state as admissions that cannot be refused, at the time of the sync. An admission
// counted later than it happened never leaves a state more lenient than counting it on time:
// a bucket has refilled less by then, a window holds it longer.

/// `count` admissions of other instances, added to a GCRA theoretical arrival time (the token
/// bucket) or a leaky bucket's next departure: each moves it one interval on, from `now` if it
/// lies in the past. The result may lie more than the burst ahead: the instance then refuses
/// until the others' excess is paid back. Clamped to [`MAX_SPAN`] ahead.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn bucket_fold(state: Option<Nanos>, now: Nanos, rate: &Rate, count: u64) -> Nanos {
    let ahead = rate.interval().saturating_mul(count).min(MAX_SPAN);
    state
        .unwrap_or(now)
        .max(now)
        .saturating_add(ahead)
        .min(now.saturating_add(MAX_SPAN))
}

/// `count` admissions of other instances, added to the sliding log: each leaves the window
/// `per` from now, or, when the log is full, takes the place of the admission that leaves it
/// first and leaves `per` after that one, as if it had waited for that place. So the log keeps
/// at most `rate` entries, and an excess of the others is paid back (one window's worth of
/// refusals per window's worth of excess), as the buckets' folds pay it back.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn sliding_log_fold(log: &mut Log, now: Nanos, rate: &Rate, count: u64) {
    while log.front().is_some_and(|leaves| leaves <= now) {
        log.pop_front();
    }
    let limit = rate.rate as usize;
    let mut count = count;
    while count > 0 && log.len() < limit {
        log.push_back(now.saturating_add(rate.per_ns));
        count -= 1;
    }
    // A full log takes `rate` of them in a turn, each entry a window later: whole turns at
    // once, so that a large count costs no more than the log's length.
    let turns = (count / limit as u64).min(MAX_SPAN / rate.per_ns);
    if turns > 0 {
        log.delay_all(turns * rate.per_ns);
    }
    for _ in 0..count % limit as u64 {
        // Entries leave within `turns + 1` windows of now, oldest first: one a window after
        // the oldest leaves after all of them.
        if let Some(first) = log.front() {
            log.pop_front();
            log.push_back(first.saturating_add(rate.per_ns));
        }
    }
}

/// `count` admissions of other instances, added to the current fixed window's count.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn sliding_counter_fold(state: &mut Counters, now: Nanos, rate: &Rate, count: u64) {
    state.roll(now, rate.per_ns);
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    state.current = state.current.saturating_add(count);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config as ProptestConfig, RngSeed};

    const SECOND: Nanos = 1_000_000_000;

    fn rate(rate: u32, burst: u32) -> Rate {
        Rate::new(rate, SECOND, burst)
    }

    fn admitted(verdict: Verdict) -> bool {
        matches!(verdict, Verdict::Admit { wait: 0, .. })
    }

    #[test]
    fn gcra_allows_a_burst_then_the_rate() {
        let rate = rate(10, 5);
        let mut tat = None;
        let mut count = 0;
        for _ in 0..20 {
            let (verdict, next) = gcra_reserve(tat, 0, &rate, 0);
            if admitted(verdict) {
                count += 1;
                tat = next;
            }
        }
        assert_eq!(count, 5, "the burst");
        let (verdict, _) = gcra_reserve(tat, 0, &rate, 0);
        assert_eq!(
            verdict,
            Verdict::Refuse {
                retry_after: SECOND / 10
            }
        );
        let (verdict, _) = gcra_reserve(tat, SECOND / 10, &rate, 0);
        assert!(admitted(verdict), "one token back after 1/rate");
    }

    #[test]
    fn gcra_reservations_queue_in_order() {
        let rate = rate(10, 1);
        let mut tat = None;
        let mut waits = Vec::new();
        for _ in 0..4 {
            let (verdict, next) = gcra_reserve(tat, 0, &rate, SECOND);
            let Verdict::Admit { wait, .. } = verdict else {
                panic!("refused")
            };
            waits.push(wait);
            tat = next;
        }
        assert_eq!(waits, [0, SECOND / 10, 2 * SECOND / 10, 3 * SECOND / 10]);
        let (verdict, _) = gcra_reserve(tat, 0, &rate, SECOND / 4);
        assert!(matches!(verdict, Verdict::Refuse { .. }), "beyond max_wait");
    }

    #[test]
    fn leaky_bucket_queues_burst_and_refuses_the_rest() {
        let rate = rate(10, 3);
        let mut next = None;
        let mut waits = Vec::new();
        let mut refused = 0;
        for _ in 0..6 {
            match leaky_bucket(next, 0, &rate, 0) {
                (Verdict::Admit { wait, .. }, state) => {
                    waits.push(wait);
                    next = state;
                }
                (Verdict::Refuse { .. }, _) => refused += 1,
            }
        }
        // One goes now, three wait their turn (nginx burst=3 without nodelay), two are refused.
        assert_eq!(waits, [0, SECOND / 10, 2 * SECOND / 10, 3 * SECOND / 10]);
        assert_eq!(refused, 2);
    }

    #[test]
    fn sliding_log_is_exact() {
        let rate = rate(3, 0);
        let mut log = Log::default();
        assert!(admitted(sliding_log(&mut log, 0, &rate)));
        assert!(admitted(sliding_log(&mut log, 400_000_000, &rate)));
        assert!(admitted(sliding_log(&mut log, 800_000_000, &rate)));
        assert_eq!(
            sliding_log(&mut log, 999_999_999, &rate),
            Verdict::Refuse { retry_after: 1 }
        );
        assert!(
            admitted(sliding_log(&mut log, SECOND, &rate)),
            "the first left the window"
        );
    }

    #[test]
    fn sliding_counter_weighs_the_previous_window() {
        let rate = rate(10, 0);
        let mut state = Counters::default();
        for _ in 0..10 {
            assert!(admitted(sliding_counter(&mut state, SECOND - 1, &rate)));
        }
        assert!(!admitted(sliding_counter(&mut state, SECOND - 1, &rate)));
        // A quarter into the next window, 3/4 of the previous 10 still count: the estimate is
        // 7.5, 8.5, 9.5 before each of three more (each is checked before it is counted).
        let quarter = SECOND + SECOND / 4;
        for _ in 0..3 {
            assert!(admitted(sliding_counter(&mut state, quarter, &rate)));
        }
        let Verdict::Refuse { retry_after, .. } = sliding_counter(&mut state, quarter, &rate)
        else {
            panic!("admitted past the estimate")
        };
        // Allowed again once 10 * (1 - e) + 3 < 10, i.e. just after e = 0.3 s.
        let again = quarter + retry_after;
        assert!(
            admitted(sliding_counter(&mut state, again, &rate)),
            "retry_after was right"
        );
    }

    /// Reference token bucket: tokens as a real number, refilled continuously.
    fn reference_bucket(arrivals: &[Nanos], rate: &Rate) -> Vec<bool> {
        let capacity = f64::from(rate.burst.max(1));
        let per_token = rate.interval() as f64;
        let mut tokens = capacity;
        let mut last = 0;
        arrivals
            .iter()
            .map(|&now| {
                tokens = (tokens + (now - last) as f64 / per_token).min(capacity);
                last = now;
                if tokens >= 1.0 - 1e-9 {
                    tokens -= 1.0;
                    true
                } else {
                    false
                }
            })
            .collect()
    }

    /// Reference leaky bucket, simulated: one request leaves per interval, in arrival order. A
    /// request leaves at once if the last left an interval ago or more; otherwise it joins
    /// the line if fewer than `burst` are waiting, and is refused if not. `Some(wait)` for an
    /// admitted request.
    fn reference_leaky_bucket(arrivals: &[Nanos], rate: &Rate) -> Vec<Option<Nanos>> {
        let t = rate.interval();
        let mut departures: Vec<Nanos> = Vec::new();
        arrivals
            .iter()
            .map(|&now| {
                let waiting = departures.iter().filter(|&&left| left > now).count();
                let leaves = departures.last().map_or(now, |&last| (last + t).max(now));
                (leaves == now || waiting < rate.burst as usize).then(|| {
                    departures.push(leaves);
                    leaves - now
                })
            })
            .collect()
    }

    /// Reference sliding log: admitted iff fewer than `rate` admissions lie in the window of
    /// length `per` that ends now, counted afresh from every admission so far.
    fn reference_log(arrivals: &[Nanos], rate: &Rate) -> Vec<bool> {
        let mut admitted: Vec<Nanos> = Vec::new();
        arrivals
            .iter()
            .map(|&now| {
                let in_window = admitted
                    .iter()
                    .filter(|&&at| at + rate.per_ns > now)
                    .count();
                let admit = in_window < rate.rate as usize;
                if admit {
                    admitted.push(now);
                }
                admit
            })
            .collect()
    }

    /// Reference two-counter estimate, from every admission so far: the previous fixed
    /// window's count weighted by the part of it the sliding window still covers, plus the
    /// current window's count, must stay below `rate`.
    fn reference_counters(arrivals: &[Nanos], rate: &Rate) -> Vec<bool> {
        let per = rate.per_ns;
        let mut admitted: Vec<Nanos> = Vec::new();
        arrivals
            .iter()
            .map(|&now| {
                let window = now / per;
                let count = |w: u64| admitted.iter().filter(|&&at| at / per == w).count() as u128;
                let previous = if window == 0 { 0 } else { count(window - 1) };
                let (per, covered) = (u128::from(per), u128::from(per - now % per));
                // previous × covered / per + current < rate, multiplied out by `per`.
                let admit = previous * covered + count(window) * per < u128::from(rate.rate) * per;
                if admit {
                    admitted.push(now);
                }
                admit
            })
            .collect()
    }

    /// Admissions in each window of length `per` that starts at an admission.
    fn most_in_any_window(admitted_at: &[Nanos], per: Nanos) -> usize {
        (0..admitted_at.len())
            .map(|i| {
                admitted_at[i..]
                    .iter()
                    .take_while(|&&t| t < admitted_at[i] + per)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    /// Times in whole milliseconds (exact ratios), often several at once so that lines form.
    fn arrivals() -> impl Strategy<Value = Vec<Nanos>> {
        let gap = prop_oneof![1 => Just(0u64), 2 => 0u64..400];
        prop::collection::vec(gap, 1..200).prop_map(|gaps| {
            gaps.into_iter()
                .scan(0u64, |t, gap| {
                    *t += gap * 1_000_000;
                    Some(*t)
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            rng_seed: RngSeed::Fixed(0x7261_7465_6c69_6d69),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn gcra_matches_the_reference_token_bucket(times in arrivals(), r in 1u32..50, burst in 1u32..20) {
            let rate = Rate::new(r, 1_000_000_000 - 1_000_000_000 % u64::from(r), burst);
            let expected = reference_bucket(&times, &rate);
            let mut tat = None;
            for (now, expect) in times.iter().zip(expected) {
                let (verdict, next) = gcra_reserve(tat, *now, &rate, 0);
                prop_assert_eq!(admitted(verdict), expect, "at {}", now);
                if next.is_some() {
                    tat = next;
                }
            }
        }

        #[test]
        fn leaky_bucket_matches_the_reference_line(times in arrivals(), r in 1u32..50, burst in 0u32..10) {
            let rate = rate(r, burst);
            let expected = reference_leaky_bucket(&times, &rate);
            let mut next = None;
            let mut departures = Vec::new();
            for (now, expect) in times.iter().zip(expected) {
                let (verdict, state) = leaky_bucket(next, *now, &rate, 0);
                let wait = match verdict {
                    Verdict::Admit { wait, .. } => Some(wait),
                    Verdict::Refuse { .. } => None,
                };
                prop_assert_eq!(wait, expect, "at {}", now);
                if let Some(wait) = wait {
                    departures.push(now + wait);
                    next = state;
                }
            }
            for pair in departures.windows(2) {
                prop_assert!(pair[1] >= pair[0] + rate.interval(), "{:?}", pair);
            }
        }

        #[test]
        fn sliding_log_matches_the_reference_count(times in arrivals(), r in 1u32..20) {
            let rate = rate(r, 0);
            let expected = reference_log(&times, &rate);
            let mut log = Log::default();
            for (now, expect) in times.iter().zip(expected) {
                prop_assert_eq!(admitted(sliding_log(&mut log, *now, &rate)), expect, "at {}", now);
            }
        }

        #[test]
        fn sliding_counter_matches_the_reference_estimate(times in arrivals(), r in 1u32..20) {
            let rate = rate(r, 0);
            let expected = reference_counters(&times, &rate);
            let mut state = Counters::default();
            let mut admitted_at = Vec::new();
            for (&now, expect) in times.iter().zip(expected) {
                let admit = admitted(sliding_counter(&mut state, now, &rate));
                prop_assert_eq!(admit, expect, "at {}", now);
                if admit {
                    admitted_at.push(now);
                }
            }
            let most = most_in_any_window(&admitted_at, SECOND);
            prop_assert!(most <= 2 * r as usize, "{} in a window, rate {}", most, r);
            // Each fixed window holds at most `rate`.
            for window in 0..=admitted_at.last().copied().unwrap_or(0) / SECOND {
                let in_fixed = admitted_at.iter().filter(|&&t| t / SECOND == window).count();
                prop_assert!(in_fixed <= r as usize);
            }
        }

        /// The synced mode's folds: another instance's admissions, counted at the sync that
        /// brings them instead of when they happened, never leave a state that admits more
        /// afterwards, whatever the algorithm.
        #[test]
        fn a_late_fold_is_never_more_lenient_than_counting_on_time(
            others in arrivals(),
            own in arrivals(),
            lag in 0u64..2000,
            r in 1u32..20,
            burst in 1u32..10,
        ) {
            let rate = Rate::new(r, SECOND, burst);
            let sync = others.last().copied().unwrap_or(0) + lag * 1_000_000;
            let after: Vec<Nanos> = own.iter().map(|t| t + sync).collect();
            let count = others.len() as u64;
            // Each algorithm's admissions after the sync, from the state the others' admissions
            // left when counted on time and when folded at the sync.
            let buckets = |mut state: Option<Nanos>| {
                after
                    .iter()
                    .filter(|&&now| {
                        let (verdict, next) = gcra_reserve(state, now, &rate, 0);
                        state = next.or(state);
                        admitted(verdict)
                    })
                    .count()
            };
            let on_time = others
                .iter()
                .fold(None, |tat, &at| Some(bucket_fold(tat, at, &rate, 1)));
            let folded = Some(bucket_fold(None, sync, &rate, count));
            prop_assert!(buckets(folded) <= buckets(on_time), "token bucket");
            prop_assert!(folded >= on_time);

            let logs = |mut log: Log| {
                after
                    .iter()
                    .filter(|&&now| admitted(sliding_log(&mut log, now, &rate)))
                    .count()
            };
            let mut on_time = Log::default();
            for &at in &others {
                sliding_log_fold(&mut on_time, at, &rate, 1);
            }
            let mut folded = Log::default();
            sliding_log_fold(&mut folded, sync, &rate, count);
            prop_assert!(logs(folded) <= logs(on_time), "sliding log");

            let counters = |mut state: Counters| {
                after
                    .iter()
                    .filter(|&&now| admitted(sliding_counter(&mut state, now, &rate)))
                    .count()
            };
            let mut on_time = Counters::default();
            for &at in &others {
                sliding_counter_fold(&mut on_time, at, &rate, 1);
            }
            let mut folded = Counters::default();
            sliding_counter_fold(&mut folded, sync, &rate, count);
            prop_assert!(counters(folded) <= counters(on_time), "sliding counters");
        }
    }

    #[test]
    fn folds_take_the_others_admissions_from_the_state() {
        let rate = rate(10, 5);
        // Three of the five tokens taken elsewhere: two left, then refused for 100 ms.
        let mut tat = Some(bucket_fold(None, 0, &rate, 3));
        let mut verdicts = Vec::new();
        for _ in 0..3 {
            let (verdict, next) = gcra_reserve(tat, 0, &rate, 0);
            tat = next.or(tat);
            verdicts.push(verdict);
        }
        assert!(matches!(verdicts[0], Verdict::Admit { remaining: 1, .. }));
        assert!(matches!(verdicts[1], Verdict::Admit { remaining: 0, .. }));
        assert_eq!(
            verdicts[2],
            Verdict::Refuse {
                retry_after: SECOND / 10
            }
        );
        // Eight more taken elsewhere: a debt of eight intervals on top of the empty bucket.
        let tat = Some(bucket_fold(tat, 0, &rate, 8));
        assert_eq!(
            gcra_reserve(tat, 0, &rate, 0).0,
            Verdict::Refuse {
                retry_after: 9 * SECOND / 10
            }
        );
        // The fold never reaches further than the longest span.
        assert_eq!(bucket_fold(None, 7, &rate, u64::MAX), 7 + MAX_SPAN);

        let window = Rate::new(3, SECOND, 0);
        let mut log = Log::default();
        assert!(admitted(sliding_log(&mut log, 0, &window)));
        // Five more at 0.5 s: two fill the window, three wait for the places that free first.
        sliding_log_fold(&mut log, SECOND / 2, &window, 5);
        assert_eq!(log.len(), 3, "at most `rate` entries");
        assert_eq!(
            (log.front(), log.back()),
            (Some(2 * SECOND), Some(2 * SECOND + SECOND / 2))
        );
        assert_eq!(
            sliding_log(&mut log, SECOND / 2, &window),
            Verdict::Refuse {
                retry_after: 3 * SECOND / 2
            },
            "six admissions in all: two windows' worth"
        );
        // A large count at once (whole turns of the log) is the same as one at a time.
        for count in [0, 1, 2, 3, 7, 9, 10, 31] {
            let mut at_once = Log::default();
            let mut one_by_one = Log::default();
            for log in [&mut at_once, &mut one_by_one] {
                assert!(admitted(sliding_log(log, 0, &window)));
            }
            sliding_log_fold(&mut at_once, SECOND / 2, &window, count);
            for _ in 0..count {
                sliding_log_fold(&mut one_by_one, SECOND / 2, &window, 1);
            }
            let entries = |log: &mut Log| {
                std::iter::from_fn(|| {
                    let first = log.front();
                    log.pop_front();
                    first
                })
                .collect::<Vec<_>>()
            };
            assert_eq!(entries(&mut at_once), entries(&mut one_by_one), "{count}");
        }
        let mut counters = Counters::default();
        assert!(admitted(sliding_counter(&mut counters, 0, &window)));
        sliding_counter_fold(&mut counters, SECOND / 2, &window, 2);
        assert!(!admitted(sliding_counter(
            &mut counters,
            SECOND / 2,
            &window
        )));
        assert!(admitted(sliding_counter(
            &mut counters,
            SECOND + SECOND / 2,
            &window
        )));
    }

    /// Arrivals `k` times the rate, evenly spread (gaps that divide a second, the first half a
    /// gap in): every fixed window admits exactly `rate`, and no window of length `per` more.
    #[test]
    fn sliding_counter_admits_the_rate_of_evenly_spread_arrivals() {
        for r in [1u32, 2, 4, 5, 8, 10, 16, 20, 25] {
            for k in [1u64, 2, 4, 5] {
                let rate = rate(r, 0);
                let gap = SECOND / (k * u64::from(r));
                let mut state = Counters::default();
                let admitted_at: Vec<Nanos> = (0..6 * k * u64::from(r))
                    .map(|i| i * gap + gap / 2)
                    .filter(|&now| admitted(sliding_counter(&mut state, now, &rate)))
                    .collect();
                for window in 0..6 {
                    let in_fixed = admitted_at.iter().filter(|&&t| t / SECOND == window);
                    assert_eq!(
                        in_fixed.count(),
                        r as usize,
                        "rate {r}, {k}×, window {window}"
                    );
                }
                let most = most_in_any_window(&admitted_at, SECOND);
                assert_eq!(most, r as usize, "rate {r}, {k}×");
            }
        }
    }
}
