//! The adaptive ramp-up through the HTTP layer on an axum `Router`, under paused tokio time,
//! against a backend with slots, a bounded queue, a cold start and a collapse:
//!
//! - a warm backend: the ramp is over about as soon as instant close's recovery;
//! - a cold backend that collapses when slammed: instant close collapses it and reopens, the
//!   adaptive ramp neither;
//! - a backend that fails again during the ramp: the share steps back below the failure
//!   threshold, and the circuit reopens when the threshold is reached;
//! - the keyed form and readiness mode ramp the same way.
//!
//! The backend: `SLOTS` calls at once when warm, each 20 ms; a call that finds every slot busy
//! waits in a queue of at most `QUEUE`, and one that finds the queue full is answered 503 at
//! once. Back from its outage cold, it has a fifth of its slots, growing to all over 30 s; with
//! collapse, a backlog that lasts more than a second sends it back to a fifth. Offered load:
//! `RATE` calls a second, evenly spaced. Healthy for 5 s (the breaker learns its usual
//! latency), then down (every call 503) until a time set from the breaker's first trip.
//!
//! Run with `-- --nocapture` to see each run's figures.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::{Request, StatusCode};
use proxflow_breaker::{
    BreakerConfig, BreakerError, BreakerHandle, CircuitBreakerLayer, Outcome, RampUpMode, Refusal,
    State, StateChange,
};
use proxflow_core::Clock;
use tokio::sync::oneshot;
use tokio::time::{sleep, sleep_until, Instant};
use tower::{Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

/// Offered calls per second.
const RATE: u32 = 500;
/// The warm backend's slots: 25 × 20 ms, 1,250 calls a second.
const SLOTS: f64 = 25.0;
/// Each call's time in a slot.
const SERVICE: Duration = Duration::from_millis(20);
/// Calls that may wait for a slot.
const QUEUE: usize = 25;
/// The share of its slots a cold backend has.
const COLD: f64 = 0.2;
/// From cold to warm.
const WARMING: Duration = Duration::from_secs(30);
/// The backend goes down then.
const DOWN_AT: Duration = Duration::from_secs(5);

/// The breaker of these tests: trips at half of 10 calls or more in 2 s, open 5 s (then 10 s),
/// three probes; the ramp's settings are each test's.
fn config(ramp: RampUpMode, duration: Duration) -> BreakerConfig {
    BreakerConfig {
        evaluation_window: 2 * S,
        recovery_timeout: 5 * S,
        ramp_up_mode: ramp,
        ramp_up_duration: duration,
        ..BreakerConfig::default()
    }
}

fn adaptive() -> BreakerConfig {
    config(RampUpMode::Adaptive, 30 * S)
}

fn instant() -> BreakerConfig {
    config(RampUpMode::Time, Duration::ZERO)
}

/// What the backend does after its outage.
#[derive(Debug, Clone, Copy)]
struct Spec {
    /// Seconds before the breaker's second probe (15 s after its first trip) that it returns.
    back_before_probe: Duration,
    /// Its share of the slots when it returns (1: warm at once).
    cold: f64,
    /// A backlog longer than a second sends it back to cold.
    collapse: bool,
    /// From this long after its return, it fails this share of the calls (then every call
    /// from the second instant on), answering 503 at once.
    fails: Option<(Duration, f64, Duration)>,
}

#[derive(Default)]
struct Shared {
    start: Option<Instant>,
    /// When it returns, once the breaker tripped.
    back_at: Option<Instant>,
    warm_from: Option<Instant>,
    busy: usize,
    queue: VecDeque<oneshot::Sender<()>>,
    backlog_since: Option<Instant>,
    collapses: u32,
    calls: u64,
    failures_after_return: u64,
}

struct Backend {
    spec: Spec,
    shared: Mutex<Shared>,
}

impl Backend {
    fn new(spec: Spec) -> Arc<Backend> {
        Arc::new(Backend {
            spec,
            shared: Mutex::new(Shared {
                start: Some(Instant::now()),
                ..Shared::default()
            }),
        })
    }

    /// The breaker tripped at `at`: the return is set from it, once.
    fn tripped(&self, at: Instant) {
        let mut shared = self.shared.lock().unwrap();
        if shared.back_at.is_none() {
            let back = at + 15 * S - self.spec.back_before_probe;
            shared.back_at = Some(back);
            shared.warm_from = Some(back);
        }
    }

    fn slots(&self, shared: &Shared, now: Instant) -> usize {
        let warmth = match shared.warm_from {
            Some(from) if now >= from => {
                let cold = self.spec.cold;
                let warming = (now - from).as_secs_f64() / WARMING.as_secs_f64();
                (cold + (1.0 - cold) * warming).min(1.0)
            }
            _ => 1.0,
        };
        ((SLOTS * warmth).floor() as usize).max(1)
    }

    /// Starts waiting calls while slots are free; a backlog too long collapses it.
    fn dispatch(&self, shared: &mut Shared, now: Instant) {
        if let Some(since) = shared.backlog_since {
            if self.spec.collapse && now - since > S {
                shared.warm_from = Some(now);
                shared.collapses += 1;
                shared.backlog_since = Some(now);
            }
        }
        while shared.busy < self.slots(shared, now) {
            let Some(waiting) = shared.queue.pop_front() else {
                break;
            };
            if waiting.send(()).is_ok() {
                shared.busy += 1;
            }
        }
        if shared.queue.is_empty() {
            shared.backlog_since = None;
        }
    }

    async fn serve(self: Arc<Self>) -> StatusCode {
        let now = Instant::now();
        let wait = {
            let mut shared = self.shared.lock().unwrap();
            shared.calls += 1;
            let start = shared.start.expect("started");
            let back = shared.back_at;
            let down = now >= start + DOWN_AT && back.is_none_or(|back| now < back);
            let failing = match (back, self.spec.fails) {
                (Some(back), Some((from, share, all_from))) if now >= back + from => {
                    now >= back + all_from
                        || (shared.calls as f64 * share).floor()
                            != ((shared.calls - 1) as f64 * share).floor()
                }
                _ => false,
            };
            if down || failing {
                if back.is_some_and(|back| now >= back) {
                    shared.failures_after_return += 1;
                }
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            self.dispatch(&mut shared, now);
            if shared.busy < self.slots(&shared, now) {
                shared.busy += 1;
                None
            } else if shared.queue.len() < QUEUE {
                let (granted, wait) = oneshot::channel();
                shared.queue.push_back(granted);
                shared.backlog_since.get_or_insert(now);
                Some(wait)
            } else {
                if back.is_some_and(|back| now >= back) {
                    shared.failures_after_return += 1;
                }
                return StatusCode::SERVICE_UNAVAILABLE;
            }
        };
        if let Some(wait) = wait {
            wait.await.expect("the backend keeps its queue");
        }
        sleep(SERVICE).await;
        let mut shared = self.shared.lock().unwrap();
        shared.busy -= 1;
        self.dispatch(&mut shared, Instant::now());
        StatusCode::OK
    }
}

/// How one call ended, for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    /// A 503 from the backend.
    Failed,
    /// A 503 from the breaker.
    Refused,
}

/// What a run saw.
#[derive(Debug)]
struct Run {
    /// Changes of state, since the start.
    changes: Vec<(Duration, State, State)>,
    /// The return, since the start.
    back_at: Duration,
    /// Each call's time since the start and answer.
    answers: Vec<(Duration, Answer)>,
    collapses: u32,
    failures_after_return: u64,
    /// The breaker's admitted share every 100 ms.
    shares: Vec<(Duration, State, f64)>,
}

impl Run {
    fn at(&self, from: State, to: State) -> Vec<Duration> {
        self.changes
            .iter()
            .filter(|c| c.1 == from && c.2 == to)
            .map(|c| c.0)
            .collect()
    }

    /// The first ramp after the return: (start, end) since the start; the end is when it
    /// closed or reopened.
    fn ramp(&self) -> (Duration, Duration) {
        let start = self
            .changes
            .iter()
            .find(|c| c.0 >= self.back_at && c.1 == State::HalfOpen)
            .map(|c| c.0)
            .expect("the probes after the return succeeded");
        let end = self
            .changes
            .iter()
            .find(|c| c.0 > start && matches!(c.2, State::Closed | State::Open))
            .map_or(start, |c| c.0);
        (start, end)
    }

    fn successes_after_return(&self) -> usize {
        self.answers
            .iter()
            .filter(|(at, a)| *at >= self.back_at && *a == Answer::Ok)
            .count()
    }

    fn reopens(&self) -> usize {
        self.changes
            .iter()
            .filter(|c| c.0 > self.back_at && c.2 == State::Open && c.1 != State::HalfOpen)
            .count()
    }

    fn print(&self, name: &str) {
        let (start, end) = self.ramp();
        eprintln!(
            "{name}: back at {:.2} s; ramp {:.2} s -> {:.2} s; {} successes after the return; \
             {} backend failures after it; {} collapses; {} reopens; changes {:?}",
            self.back_at.as_secs_f64(),
            start.as_secs_f64(),
            end.as_secs_f64(),
            self.successes_after_return(),
            self.failures_after_return,
            self.collapses,
            self.reopens(),
            self.changes
                .iter()
                .map(|c| (c.0.as_millis(), c.1, c.2))
                .collect::<Vec<_>>()
        );
    }
}

/// `seconds` of load through the HTTP layer made from `config` over a backend as `spec` says.
async fn run(config: &BreakerConfig, spec: Spec, seconds: u32) -> Run {
    let start = Instant::now();
    let backend = Backend::new(spec);
    let changes: Arc<Mutex<Vec<(Duration, State, State)>>> = Arc::default();
    let layer = CircuitBreakerLayer::from_config(config)
        .expect("valid config")
        .clock(Clock::tokio())
        .on_state_change({
            let changes = Arc::clone(&changes);
            let backend = Arc::clone(&backend);
            move |change: &StateChange| {
                let now = Instant::now();
                if change.to == State::Open {
                    backend.tripped(now);
                }
                changes
                    .lock()
                    .unwrap()
                    .push((now - start, change.from, change.to));
            }
        });
    let handle = layer.handle();
    let app = Router::new()
        .route(
            "/",
            get({
                let backend = Arc::clone(&backend);
                move || Arc::clone(&backend).serve()
            }),
        )
        .layer(layer);
    let shares = watch(handle, start, seconds);
    let gap = S / RATE;
    let mut calls = Vec::new();
    for i in 0..seconds * RATE {
        sleep_until(start + gap * i).await;
        let app = app.clone();
        calls.push(tokio::spawn(async move {
            let request = Request::get("/").body(Body::empty()).unwrap();
            let response = app.oneshot(request).await.unwrap();
            match (response.status(), response.extensions().get::<Refusal>()) {
                (StatusCode::OK, _) => Answer::Ok,
                (StatusCode::SERVICE_UNAVAILABLE, Some(_)) => Answer::Refused,
                (StatusCode::SERVICE_UNAVAILABLE, None) => Answer::Failed,
                (status, _) => panic!("unexpected status {status}"),
            }
        }));
    }
    let mut answers = Vec::with_capacity(calls.len());
    for (i, call) in calls.into_iter().enumerate() {
        answers.push((gap * i as u32, call.await.unwrap()));
    }
    let shares = shares.await.unwrap();
    let shared = backend.shared.lock().unwrap();
    let changes = changes.lock().unwrap().clone();
    Run {
        changes,
        back_at: shared.back_at.expect("it tripped") - start,
        answers,
        collapses: shared.collapses,
        failures_after_return: shared.failures_after_return,
        shares,
    }
}

/// The breaker's state and admitted share every 100 ms for `seconds`.
fn watch(
    handle: BreakerHandle,
    start: Instant,
    seconds: u32,
) -> tokio::task::JoinHandle<Vec<(Duration, State, f64)>> {
    tokio::spawn(async move {
        let mut shares = Vec::new();
        for tick in 1..seconds * 10 {
            sleep_until(start + 100 * MS * tick).await;
            let snapshot = handle.snapshot();
            shares.push((100 * MS * tick, snapshot.state, snapshot.admitted_share));
        }
        shares
    })
}

#[tokio::test(start_paused = true)]
async fn a_warm_backend_recovers_about_as_fast_as_with_instant_close() {
    let warm = Spec {
        back_before_probe: 2 * S,
        cold: 1.0,
        collapse: true,
        fails: None,
    };
    let fast = run(&instant(), warm, 40).await;
    fast.print("instant close");
    let ramp = run(&adaptive(), warm, 40).await;
    ramp.print("adaptive ramp");
    let (start, end) = ramp.ramp();
    // From 10 % of 500 calls a second, the first steps wait for 10 calls each.
    assert!(
        end - start < 3 * S,
        "the ramp took {:?} (the time-only ramp: 30 s)",
        end - start
    );
    assert_eq!(ramp.failures_after_return, 0);
    assert_eq!(ramp.reopens(), 0);
    // What the ramp turned away: under a second and a half of the load.
    let (fast_ok, ramp_ok) = (fast.successes_after_return(), ramp.successes_after_return());
    assert!(
        fast_ok - ramp_ok < 3 * RATE as usize / 2,
        "{ramp_ok} successes against {fast_ok} with instant close"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cold_backend_that_collapses_when_slammed_does_not_collapse() {
    // Back half a second before the probe: a fifth of 25 slots and a little, about 270 calls a
    // second against 500 offered.
    let cold = Spec {
        back_before_probe: S / 2,
        cold: COLD,
        collapse: true,
        fails: None,
    };
    let slammed = run(&instant(), cold, 60).await;
    slammed.print("instant close");
    assert!(slammed.collapses > 0, "instant close slams it");
    assert!(slammed.reopens() > 0);

    let ramp = run(&adaptive(), cold, 60).await;
    ramp.print("adaptive ramp");
    assert_eq!(ramp.collapses, 0, "the ramp never collapsed it");
    assert_eq!(ramp.reopens(), 0);
    assert_eq!(ramp.failures_after_return, 0);
    let (start, end) = ramp.ramp();
    assert!(
        ramp.at(State::RampUp, State::Closed).contains(&end),
        "it closed"
    );
    assert!(
        end - start <= 30 * S,
        "within ramp_up_duration: {:?}",
        end - start
    );
    // It admitted more than the time-only ramp would have, as the backend allowed: a third of
    // the way in, the time-only ramp admits 40 %.
    let third = start + 10 * S;
    let share = ramp
        .shares
        .iter()
        .find(|(at, _, _)| *at >= third)
        .map(|s| s.2)
        .unwrap();
    assert!(share > 0.5, "share {share} 10 s into the ramp");
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_fails_again_during_the_ramp_steps_it_back_then_reopens_it() {
    // Warm at its return; 1.5 s into the ramp it fails 30 % of the calls (under the 50 %
    // threshold), and from 4 s every call.
    let relapse = Spec {
        back_before_probe: 2 * S,
        cold: 1.0,
        collapse: false,
        fails: Some((2 * S + 1500 * MS, 0.3, 2 * S + 4 * S)),
    };
    let ramp = run(&adaptive(), relapse, 40).await;
    ramp.print("adaptive ramp");
    let (start, end) = ramp.ramp();
    let share_at = |at: Duration| {
        ramp.shares
            .iter()
            .find(|(t, _, _)| *t >= at)
            .map(|s| (s.1, s.2))
            .unwrap()
    };
    let (state, before) = share_at(start + 1400 * MS);
    assert_eq!(state, State::RampUp);
    let (state, stepped_back) = share_at(start + 3900 * MS);
    assert_eq!(state, State::RampUp, "30 % failures do not reopen it");
    assert!(
        stepped_back < before / 2.0,
        "the share went from {before} to {stepped_back}"
    );
    assert!(
        ramp.at(State::RampUp, State::Open).contains(&end),
        "every call failing reopens it"
    );
    assert!(end >= start + 4 * S && end < start + 5 * S, "{end:?}");
}

/// The keyed form: each key's breaker ramps on its own calls.
#[tokio::test(start_paused = true)]
async fn a_keyed_breaker_ramps_on_its_own_key() {
    let keyed = CircuitBreakerLayer::from_config(&adaptive())
        .unwrap()
        .clock(Clock::tokio())
        .keyed();
    let handle = keyed.handle();
    // Host "a" fails from 1 s to 4 s; "b" never. 200 calls a second each.
    let start = Instant::now();
    let app = Router::new()
        .route(
            "/",
            get(move |headers: http::HeaderMap| async move {
                let a = headers[http::header::HOST] == "a";
                let since = Instant::now() - start;
                sleep(SERVICE).await;
                if a && since >= S && since < 4 * S {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }),
        )
        .layer(keyed);
    let mut shares = Vec::new();
    let mut calls = Vec::new();
    for i in 0..20 * 400 {
        sleep_until(start + 2500 * Duration::from_micros(1) * i).await;
        let host = if i % 2 == 0 { "a" } else { "b" };
        let request = Request::get("/")
            .header(http::header::HOST, host)
            .body(Body::empty())
            .unwrap();
        calls.push(tokio::spawn(app.clone().oneshot(request)));
        if i % 40 == 0 {
            if let Some(a) = handle.get("a") {
                let snapshot = a.snapshot();
                shares.push((
                    Instant::now() - start,
                    snapshot.state,
                    snapshot.admitted_share,
                ));
            }
        }
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let ramp: Vec<_> = shares.iter().filter(|s| s.1 == State::RampUp).collect();
    assert!(!ramp.is_empty(), "a ramped: {shares:?}");
    let (began, ended) = (ramp[0].0, ramp[ramp.len() - 1].0);
    // From 10 % of 200 calls a second, the first steps wait for 10 calls each.
    assert!(ended - began < 5 * S, "a's ramp lasted {:?}", ended - began);
    assert!(ramp.iter().any(|s| s.2 > 0.5), "{ramp:?}");
    assert_eq!(handle.get("a").unwrap().state(), State::Closed);
    let b = handle.get("b").unwrap().snapshot();
    assert_eq!((b.state, b.totals.transitions), (State::Closed, 0));
    let a = handle.get("a").unwrap().snapshot();
    let usual = a.usual_latency_ms.expect("learned while closed");
    assert!((usual - 20.0).abs() < 1.0, "usual latency {usual} ms");
}

/// Readiness mode: `poll_ready` waits while the ramp refuses, and the ramp grows with what the
/// admitted calls show.
#[tokio::test(start_paused = true)]
async fn readiness_mode_ramps_on_the_calls_it_admits() {
    let layer = CircuitBreakerLayer::from_config(&adaptive())
        .unwrap()
        .clock(Clock::tokio())
        .readiness(true)
        .generic()
        .classify(|result: Result<&(), &&str>| match result {
            Ok(()) => Outcome::Success,
            Err(_) => Outcome::Failure,
        });
    let handle = layer.handle();
    let start = Instant::now();
    let service = layer.layer(tower::service_fn(move |_: ()| async move {
        let since = Instant::now() - start;
        sleep(SERVICE).await;
        if since >= S && since < 4 * S {
            Err("down")
        } else {
            Ok(())
        }
    }));
    // 100 callers, each calling again 10 ms after an answer: 100 calls in flight at most.
    let mut callers = Vec::new();
    for _ in 0..100 {
        let mut service = service.clone();
        callers.push(tokio::spawn(async move {
            let mut refused = 0u32;
            while Instant::now() - start < 20 * S {
                let ready = service.ready().await.expect("the breaker waits instead");
                if let Err(BreakerError::Open(_)) = ready.call(()).await {
                    refused += 1;
                }
                sleep(10 * MS).await;
            }
            refused
        }));
    }
    let mut seen = Vec::new();
    while Instant::now() - start < 20 * S {
        sleep(50 * MS).await;
        let snapshot = handle.snapshot();
        seen.push((
            Instant::now() - start,
            snapshot.state,
            snapshot.admitted_share,
        ));
    }
    let mut refused = 0;
    for caller in callers {
        refused += caller.await.unwrap();
    }
    assert_eq!(refused, 0, "readiness mode waits instead of refusing");
    let ramp: Vec<_> = seen.iter().filter(|s| s.1 == State::RampUp).collect();
    assert!(!ramp.is_empty(), "{seen:?}");
    let (began, ended) = (ramp[0].0, ramp[ramp.len() - 1].0);
    assert!(
        ended - began < 5 * S,
        "the ramp lasted {:?}: {ramp:?}",
        ended - began
    );
    assert_eq!(handle.state(), State::Closed);
}

/// The snapshot the dashboard shows carries the state, the share and the usual latency.
#[tokio::test(start_paused = true)]
async fn the_snapshot_shows_the_ramp() {
    let layer = CircuitBreakerLayer::from_config(&adaptive())
        .unwrap()
        .clock(Clock::tokio());
    let handle = layer.handle();
    handle.force_open();
    let json = serde_json::to_value(handle.snapshot()).unwrap();
    assert_eq!(json["state"], "forced_open");
    assert_eq!(json["admitted_share"], 0.0);
    assert!(json["usual_latency_ms"].is_null());
}
