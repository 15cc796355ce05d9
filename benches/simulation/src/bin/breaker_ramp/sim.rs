//! One run: the backend, the arrivals and the breaker, event by event on virtual time.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use proxflow_breaker::{BreakerConfig, BreakerError, CircuitBreakerLayer, Outcome, State};
use proxflow_core::ManualClock;
use tower::util::UnsyncBoxService;
use tower::{service_fn, Layer, Service};

/// Nanoseconds of virtual time.
pub type Nanos = u64;

pub const SECOND: Nanos = 1_000_000_000;
const MS: Nanos = 1_000_000;

/// Offered load, requests per second (Poisson arrivals).
pub const RATE: f64 = 1_500.0;
/// The backend's slots when warm.
pub const SLOTS: f64 = 50.0;
/// Mean service time when warm; each call's is uniform in [10, 30] ms.
pub const SERVICE_MS: f64 = 20.0;
/// Requests that may wait for a slot; more are answered 503 at once.
pub const QUEUE: usize = 50;
/// The share of its slots a cold backend serves with.
pub const COLD: f64 = 0.2;
/// Seconds from cold to warm.
pub const WARMING: f64 = 30.0;
/// A backlog (requests waiting for a slot) that lasts longer than this collapses the backend
/// back to cold, in the runs with collapse.
pub const COLLAPSE_AFTER: Nanos = SECOND;
/// The backend goes down at this second (the breaker learns its usual latency before).
pub const DOWN_AT: f64 = 10.0;
/// Seconds counted after the backend's return.
pub const WINDOW: usize = 120;

/// Not yet.
const NEVER: Nanos = u64::MAX;

/// The warm backend's capacity, in requests per second.
pub fn full_capacity() -> f64 {
    SLOTS / (SERVICE_MS / 1_000.0)
}

/// Seconds after its return at which the backend's capacity is `load` times the offered
/// load.
pub fn warm_after(load: f64) -> f64 {
    let warmth = load * RATE / full_capacity();
    (warmth - COLD) / (1.0 - COLD) * WARMING
}

/// When the backend returns, in seconds after the breaker's first trip, so that the probes
/// 70 s after the trip (open 10 s, 20 s, 40 s) find its capacity at `load` times the offered
/// load.
pub fn return_after_trip(load: f64) -> f64 {
    70.0 - warm_after(load)
}

/// What "cold" means for the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Cold {
    /// A share of its slots serve (20 % at first), each call at its warm speed.
    FewerSlots,
    /// Every slot serves, each call slower by the same share (five times at first).
    SlowerCalls,
}

/// A breaker configuration to compare.
#[derive(Clone, Debug)]
pub struct Policy {
    pub name: String,
    pub config: BreakerConfig,
}

/// What one run measured, from the backend's return on.
#[derive(Clone, Debug, Default)]
pub struct RunResult {
    /// Requests the backend answered 503 (full queue, or still down).
    pub failures: u64,
    /// Requests that succeeded in the [`WINDOW`] seconds after the return.
    pub successes: u64,
    /// Transitions from RampUp or Closed to Open.
    pub reopens: u32,
    /// Seconds from the return to the start of the first second from which every second of
    /// the window has at least 99 % of its requests succeeding; `None`: never.
    pub to_99: Option<f64>,
    /// Times the backend collapsed back to cold.
    pub collapses: u32,
    /// The backend's capacity over the offered load when the breaker let calls through again
    /// (the first HalfOpen → RampUp or Closed after the return).
    pub load_at_probe: f64,
    /// Per second after the return: (requests, successes, failures, refused, share at the
    /// second's end, state, slots, queue).
    pub trace: Vec<Second>,
}

/// One second of the trace.
#[derive(Clone, Copy, Debug, Default)]
pub struct Second {
    pub requests: u32,
    pub successes: u32,
    pub failures: u32,
    pub refused: u32,
    pub share: f64,
    pub state: Option<State>,
    pub slots: u32,
    pub queue: u32,
    pub mean_latency_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fail;

type Slot = Rc<RefCell<Option<Result<(), Fail>>>>;
type Guarded = UnsyncBoxService<Slot, (), BreakerError<Fail>>;
type CallFuture = Pin<Box<dyn Future<Output = Result<(), BreakerError<Fail>>>>>;

fn classify(result: Result<&(), &Fail>) -> Outcome {
    match result {
        Ok(()) => Outcome::Success,
        Err(Fail) => Outcome::Failure,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrival,
    /// Request `id` has its answer: served, or refused by the backend.
    Answer {
        id: usize,
        ok: bool,
    },
}

struct Call {
    slot: Slot,
    future: CallFuture,
    arrived: Nanos,
}

struct Backend {
    down_at: Nanos,
    back_at: Nanos,
    /// When it last started warming (its return, or its last collapse).
    warm_from: Nanos,
    collapse: bool,
    cold: Cold,
    busy: usize,
    queue: VecDeque<usize>,
    backlog_since: Option<Nanos>,
    collapses: u32,
}

impl Backend {
    fn warmth(&self, now: Nanos) -> f64 {
        if now < self.down_at {
            return 1.0;
        }
        let warming = now.saturating_sub(self.warm_from) as f64 / SECOND as f64;
        (COLD + (1.0 - COLD) * warming / WARMING).min(1.0)
    }

    fn slots(&self, now: Nanos) -> usize {
        match self.cold {
            Cold::FewerSlots => ((SLOTS * self.warmth(now)).floor() as usize).max(1),
            Cold::SlowerCalls => SLOTS as usize,
        }
    }

    /// A call's service time: uniform in [0.5, 1.5] × [`SERVICE_MS`], over the warmth for a
    /// backend whose calls are slower cold.
    fn service_time(&self, rng: &mut fastrand::Rng, now: Nanos) -> Nanos {
        let warm = (0.5 + rng.f64()) * SERVICE_MS * MS as f64;
        match self.cold {
            Cold::FewerSlots => warm as Nanos,
            Cold::SlowerCalls => (warm / self.warmth(now)) as Nanos,
        }
    }

    fn down(&self, now: Nanos) -> bool {
        now >= self.down_at && now < self.back_at
    }

    /// A backlog that lasted too long collapses it.
    fn check_collapse(&mut self, now: Nanos) {
        if let Some(since) = self.backlog_since {
            if self.collapse && now - since > COLLAPSE_AFTER {
                self.warm_from = now;
                self.collapses += 1;
                self.backlog_since = Some(now);
            }
        }
    }
}

/// One run of `policy` with the backend back `back_after` seconds after the breaker's first
/// trip, for `seed`.
pub fn run(policy: &Policy, back_after: f64, collapse: bool, cold: Cold, seed: u64) -> RunResult {
    let manual = ManualClock::new();
    let now_ns = Arc::new(AtomicU64::new(0));
    let changes: Arc<Mutex<Vec<(Nanos, State, State)>>> = Arc::default();
    let first_trip = Arc::new(AtomicU64::new(NEVER));
    let layer = CircuitBreakerLayer::from_config(&policy.config)
        .expect("valid config")
        .clock(manual.clock())
        .on_state_change({
            let changes = Arc::clone(&changes);
            let now_ns = Arc::clone(&now_ns);
            let first_trip = Arc::clone(&first_trip);
            move |change| {
                let at = now_ns.load(Ordering::Relaxed);
                if change.to == State::Open && first_trip.load(Ordering::Relaxed) == NEVER {
                    first_trip.store(at, Ordering::Relaxed);
                }
                changes.lock().unwrap().push((at, change.from, change.to));
            }
        })
        .generic()
        .classify(classify);
    let handle = layer.handle();
    let inner = service_fn(|slot: Slot| {
        std::future::poll_fn(move |_| match slot.borrow_mut().take() {
            Some(answer) => Poll::Ready(answer),
            None => Poll::Pending,
        })
    });
    let mut service: Guarded = UnsyncBoxService::new(layer.layer(inner));
    let mut cx = Context::from_waker(Waker::noop());

    // Known at the first trip.
    let mut back_at_ns = NEVER;
    let mut end = NEVER;
    let mut backend = Backend {
        down_at: (DOWN_AT * SECOND as f64) as Nanos,
        back_at: NEVER,
        warm_from: NEVER,
        collapse,
        cold,
        busy: 0,
        queue: VecDeque::new(),
        backlog_since: None,
        collapses: 0,
    };
    // Arrivals and service times from generators of their own: every policy sees the same
    // arrivals for a seed.
    let mut arrivals = fastrand::Rng::with_seed(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xa11);
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xb4ea);
    let mut events: BinaryHeap<Reverse<(Nanos, u64, Event)>> = BinaryHeap::new();
    let mut sequence = 0u64;
    let mut push = |events: &mut BinaryHeap<_>, at: Nanos, event: Event| {
        sequence += 1;
        events.push(Reverse((at, sequence, event)));
    };
    push(&mut events, 0, Event::Arrival);
    let mut calls: Vec<Option<Call>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut result = RunResult {
        trace: vec![Second::default(); WINDOW],
        ..RunResult::default()
    };
    let mut latency_sums = vec![0u64; WINDOW];
    let mut now: Nanos = 0;
    let mut next_trace = NEVER;
    let second_of = |at: Nanos, back_at_ns: Nanos| -> Option<usize> {
        (at >= back_at_ns)
            .then(|| ((at - back_at_ns) / SECOND) as usize)
            .filter(|s| *s < WINDOW)
    };

    while let Some(Reverse((at, _, event))) = events.pop() {
        if back_at_ns == NEVER {
            let trip = first_trip.load(Ordering::Relaxed);
            if trip != NEVER {
                back_at_ns = trip + (back_after * SECOND as f64) as Nanos;
                end = back_at_ns + WINDOW as Nanos * SECOND;
                next_trace = back_at_ns + SECOND;
                backend.back_at = back_at_ns;
                backend.warm_from = back_at_ns;
            }
        }
        // The trace's view at each second's end.
        while next_trace <= at && next_trace <= end {
            let snapshot = handle.snapshot();
            if let Some(s) = second_of(next_trace - 1, back_at_ns) {
                let second = &mut result.trace[s];
                second.share = snapshot.admitted_share;
                second.state = Some(snapshot.state);
                second.slots = backend.slots(next_trace) as u32;
                second.queue = backend.queue.len() as u32;
            }
            next_trace += SECOND;
        }
        if at > now {
            manual.advance(Duration::from_nanos(at - now));
            now = at;
            now_ns.store(now, Ordering::Relaxed);
        }
        backend.check_collapse(now);

        match event {
            Event::Arrival => {
                let gap = -(1.0 - arrivals.f64()).ln() / RATE;
                let next = now + (gap * SECOND as f64) as Nanos;
                if next < end {
                    push(&mut events, next, Event::Arrival);
                }
                let second = second_of(now, back_at_ns);
                if let Some(s) = second {
                    result.trace[s].requests += 1;
                }
                let slot = Slot::default();
                let mut future = service.call(Rc::clone(&slot));
                match future.as_mut().poll(&mut cx) {
                    Poll::Ready(Err(BreakerError::Open(_))) => {
                        if let Some(s) = second {
                            result.trace[s].refused += 1;
                        }
                        continue;
                    }
                    Poll::Ready(other) => panic!("a call ended before its answer: {other:?}"),
                    Poll::Pending => {}
                }
                let id = free.pop().unwrap_or_else(|| {
                    calls.push(None);
                    calls.len() - 1
                });
                calls[id] = Some(Call {
                    slot,
                    future,
                    arrived: now,
                });
                if backend.down(now) {
                    push(&mut events, now + MS, Event::Answer { id, ok: false });
                } else if backend.busy < backend.slots(now) {
                    backend.busy += 1;
                    let done = now + backend.service_time(&mut rng, now);
                    push(&mut events, done, Event::Answer { id, ok: true });
                } else if backend.queue.len() < QUEUE {
                    backend.queue.push_back(id);
                    backend.backlog_since.get_or_insert(now);
                } else {
                    push(&mut events, now + MS, Event::Answer { id, ok: false });
                }
            }
            Event::Answer { id, ok } => {
                let Some(mut call) = calls[id].take() else {
                    unreachable!("answered twice")
                };
                free.push(id);
                *call.slot.borrow_mut() = Some(if ok { Ok(()) } else { Err(Fail) });
                let Poll::Ready(answer) = call.future.as_mut().poll(&mut cx) else {
                    panic!("the call did not end with its answer");
                };
                if ok {
                    backend.busy -= 1;
                }
                if let Some(s) = second_of(call.arrived, back_at_ns) {
                    let second = &mut result.trace[s];
                    match answer {
                        Ok(()) => {
                            second.successes += 1;
                            latency_sums[s] += now - call.arrived;
                        }
                        Err(_) => second.failures += 1,
                    }
                }
                if call.arrived >= back_at_ns && answer.is_err() {
                    result.failures += 1;
                }
            }
        }
        // Free slots (after an answer, or as the backend warms) take the waiting requests.
        while backend.busy < backend.slots(now) {
            let Some(id) = backend.queue.pop_front() else {
                break;
            };
            backend.busy += 1;
            let done = now + backend.service_time(&mut rng, now);
            push(&mut events, done, Event::Answer { id, ok: true });
        }
        if backend.queue.is_empty() {
            backend.backlog_since = None;
        }
    }

    let changes = changes.lock().unwrap().clone();
    result.reopens = changes
        .iter()
        .filter(|(at, from, to)| {
            *at >= back_at_ns && *to == State::Open && matches!(from, State::RampUp | State::Closed)
        })
        .count() as u32;
    if let Some((at, _, _)) = changes.iter().find(|(at, from, to)| {
        *at >= back_at_ns && *from == State::HalfOpen && matches!(to, State::RampUp | State::Closed)
    }) {
        let warmth = backend_warmth_at(&changes, *at, back_at_ns);
        result.load_at_probe = warmth * full_capacity() / RATE;
    }
    result.collapses = backend.collapses;
    result.successes = result.trace.iter().map(|s| u64::from(s.successes)).sum();
    for (second, sum) in result.trace.iter_mut().zip(latency_sums) {
        if second.successes > 0 {
            second.mean_latency_ms = sum as f64 / f64::from(second.successes) / MS as f64;
        }
    }
    let good =
        |s: &Second| s.requests > 0 && f64::from(s.successes) >= 0.99 * f64::from(s.requests);
    result.to_99 = if result.trace.last().is_some_and(good) {
        let from = result
            .trace
            .iter()
            .rposition(|s| !good(s))
            .map_or(0, |i| i + 1);
        Some(from as f64)
    } else {
        None
    };
    result
}

/// The backend's warmth at the first probe after its return (it has not collapsed before the
/// breaker let calls through, since only probes reached it).
fn backend_warmth_at(_changes: &[(Nanos, State, State)], at: Nanos, back_at: Nanos) -> f64 {
    let warming = at.saturating_sub(back_at) as f64 / SECOND as f64;
    (COLD + (1.0 - COLD) * warming / WARMING).min(1.0)
}
