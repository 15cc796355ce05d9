//! The time-only ramp (`ramp_up_mode: time`) in the scenario of its issue, through the HTTP
//! layer on an axum `Router`, under paused tokio time: a backend fails every call (503) for
//! 30 s, then comes back able to serve only 20 % of the offered load, growing linearly to all
//! of it over 30 s (calls beyond its capacity in each 1 s slot get 503). Offered load: 100
//! calls per second, evenly spaced, for 120 s. The adaptive ramp has tests of its own
//! (`adaptive.rs`).
//!
//! Run with `-- --nocapture` to see the report (one line per second, then the figures).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State as Shared;
use axum::routing::get;
use axum::Router;
use http::{Request, StatusCode};
use proxflow_breaker::{BreakerConfig, CircuitBreakerLayer, RampUpMode, Refusal, State};
use proxflow_core::Clock;
use tower::ServiceExt;

use tokio::time::{sleep, sleep_until, Instant};

/// Offered load: calls per second, one every 10 ms.
const RATE: u32 = 100;
/// Length of the run, in seconds.
const SECONDS: u32 = 120;
/// The backend answers every call 503 before this second.
const FAILING_UNTIL: u32 = 30;
/// Then its capacity grows from 20 % to 100 % of the offered load over this many seconds.
const GROWTH: u32 = 30;
/// Every call takes this long in the backend, so that half-open probes overlap (two or three
/// calls are in flight at once at 100 calls per second) and no call ends at the instant another
/// one arrives (arrivals are on multiples of 10 ms, ends 5 ms off them).
const LATENCY: Duration = Duration::from_millis(25);
/// Allowed excess over the backend's capacity in a slot: 5 points of the offered load.
const SLACK: u32 = RATE * 5 / 100;

/// The calls the backend can serve in the second `second` (since the start).
fn capacity(second: u32) -> u32 {
    if second < FAILING_UNTIL {
        0
    } else {
        // 20 % + 80 % × (time since recovery) / 30 s, at the start of the slot, in whole calls.
        let grown = (second - FAILING_UNTIL).min(GROWTH);
        RATE * 20 / 100 + RATE * 80 / 100 * grown / GROWTH
    }
}

/// The breaker of the issue, with the time-only ramp it describes. Choices beyond the issue's
/// figures: `latency_threshold` stays at its default 5 s (the backend takes 25 ms, so no call
/// is slow); `recovery_backoff` stays at its
/// default 2 (open 5 s, then 10 s, then 20 s while the trips go on) and `max_recovery_timeout`
/// and `backoff_reset` at 10 min; the ramp is linear (`ramp_up_aggression` 1); no `timeout`.
fn issue_config() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 0.5,
        min_requests: 10,
        evaluation_window: Duration::from_secs(10),
        recovery_timeout: Duration::from_secs(5),
        half_open_max_requests: 3,
        ramp_up_duration: Duration::from_secs(30),
        ramp_up_floor: 0.1,
        ramp_up_mode: RampUpMode::Time,
        ..BreakerConfig::default()
    }
}

/// What reached the backend, per 1 s slot.
#[derive(Debug, Default)]
struct Backend {
    start: Option<Instant>,
    received: Vec<u32>,
    served: Vec<u32>,
    /// Arrival times (since the start) of every call that got a 503 from the backend.
    failed_at: Vec<Duration>,
}

impl Backend {
    fn arrive(&mut self) -> StatusCode {
        let since = Instant::now() - self.start.expect("started");
        let second = since.as_secs() as usize;
        self.received[second] += 1;
        if self.received[second] <= capacity(second as u32) {
            self.served[second] += 1;
            StatusCode::OK
        } else {
            self.failed_at.push(since);
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

async fn backend(Shared(backend): Shared<Arc<Mutex<Backend>>>) -> StatusCode {
    let status = backend.lock().unwrap().arrive();
    sleep(LATENCY).await;
    status
}

/// How one call ended, for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    /// A 503 from the backend.
    Failed,
    /// A 503 from the breaker, in this state.
    Refused(State),
}

/// The issue's breaker: with the default backoff the third open period (20 s) ends at 35.2 s,
/// so the ramp-up starts 5.2 s after the backend is back.
#[tokio::test(start_paused = true)]
async fn a_failed_backend_comes_back_through_probes_and_a_ramp_up() {
    scenario(issue_config()).await;
}

/// The same with a fixed open time of 5 s (`recovery_backoff` 1): the probes that succeed come
/// 0.3 s after the backend is back, so the ramp (10 % -> 100 % in 30 s) starts almost with the
/// backend's growth (20 % -> 100 % in 30 s): the tightest the two curves get. The two lines
/// meet at 60 s, so in the last slot (59 s, capacity 97 counted at the slot's start) the ramp
/// sends one call more than the capacity: within the 5 points allowed.
#[tokio::test(start_paused = true)]
async fn the_ramp_stays_within_the_capacity_when_it_starts_with_the_recovery() {
    scenario(BreakerConfig {
        recovery_backoff: 1.0,
        ..issue_config()
    })
    .await;
}

async fn scenario(config: BreakerConfig) {
    eprintln!(
        "recovery_timeout {:?}, recovery_backoff {}, ramp_up {:?} from {}",
        config.recovery_timeout,
        config.recovery_backoff,
        config.ramp_up_duration,
        config.ramp_up_floor
    );
    let start = Instant::now();
    let seconds = SECONDS as usize;
    let shared = Arc::new(Mutex::new(Backend {
        start: Some(start),
        received: vec![0; seconds + 1],
        served: vec![0; seconds + 1],
        failed_at: Vec::new(),
    }));
    let changes: Arc<Mutex<Vec<(Duration, State, State)>>> = Arc::default();
    let breaker = CircuitBreakerLayer::from_config(&config)
        .expect("valid config")
        .clock(Clock::tokio())
        .on_state_change({
            let changes = Arc::clone(&changes);
            move |change| {
                let at = Instant::now() - start;
                changes.lock().unwrap().push((at, change.from, change.to));
            }
        });
    let handle = breaker.handle();
    let app = Router::new()
        .route("/api", get(backend))
        .layer(breaker)
        .with_state(Arc::clone(&shared));

    // The offered load: one call every 10 ms, each in its own task (it reaches the breaker at
    // its time: paused time only moves when every task waits).
    let gap = Duration::from_secs(1) / RATE;
    let mut calls = Vec::new();
    for i in 0..SECONDS * RATE {
        sleep_until(start + gap * i).await;
        let app = app.clone();
        calls.push(tokio::spawn(async move {
            let request = Request::get("/api").body(Body::empty()).unwrap();
            let response = app.oneshot(request).await.unwrap();
            match (response.status(), response.extensions().get::<Refusal>()) {
                (StatusCode::OK, _) => Answer::Ok,
                (StatusCode::SERVICE_UNAVAILABLE, Some(open)) => Answer::Refused(open.state),
                (StatusCode::SERVICE_UNAVAILABLE, None) => Answer::Failed,
                (status, _) => panic!("unexpected status {status}"),
            }
        }));
    }
    let mut answers = Vec::with_capacity(calls.len());
    for call in calls {
        answers.push(call.await.unwrap());
    }
    let end = Instant::now() - start;
    let changes = changes.lock().unwrap().clone();
    let backend = std::mem::take(&mut *shared.lock().unwrap());
    let call_time = |i: usize| gap * i as u32;

    // The transitions, and the ramp-up that follows the last probes.
    eprintln!("transitions (s since the start):");
    for (at, from, to) in &changes {
        eprintln!("  {:>8.3}  {from:?} -> {to:?}", at.as_secs_f64());
    }
    let at = |from: State, to: State| {
        changes
            .iter()
            .filter(move |c| c.1 == from && c.2 == to)
            .map(|c| c.0)
    };
    let failing = Duration::from_secs(FAILING_UNTIL.into());
    let first_trip = at(State::Closed, State::Open).next().expect("it opened");
    let attempts = at(State::Open, State::HalfOpen)
        .filter(|t| *t < failing)
        .count() as u32;
    let ramp_start = at(State::HalfOpen, State::RampUp)
        .next()
        .expect("the probes succeeded");
    let closed_at = at(State::RampUp, State::Closed).next().expect("it closed");

    // Per second: offered, what the breaker let through, what the backend could serve, what it
    // received, served, failed; and the ramp-up's target share in the middle of the second.
    let ramp = config.ramp_up_duration.as_secs_f64();
    let floor = config.ramp_up_floor;
    let target = |t: Duration| {
        let progress = ((t.as_secs_f64() - ramp_start.as_secs_f64()) / ramp).clamp(0.0, 1.0);
        floor + (1.0 - floor) * progress
    };
    eprintln!(
        "\n  s  state-at-end  capacity  received  served  failed  refused  ramp-target-mid-second"
    );
    let mut worst_excess = i64::MIN;
    // During ramp-up: the fewest calls below the capacity in a slot, and where.
    let mut least_headroom = (i64::MAX, 0);
    // From the recovery on: calls the backend could have served but was not sent.
    let mut unused_capacity = 0;
    let mut worst_share_gap: f64 = 0.0;
    for second in 0..seconds {
        let calls = second * RATE as usize..(second + 1) * RATE as usize;
        let refused = answers[calls.clone()]
            .iter()
            .filter(|a| matches!(a, Answer::Refused(_)))
            .count();
        let received = backend.received[second];
        let cap = capacity(second as u32);
        let mid = Duration::from_millis(second as u64 * 1000 + 500);
        let state = changes
            .iter()
            .take_while(|c| c.0 < Duration::from_secs(second as u64 + 1))
            .last()
            .map_or(State::Closed, |c| c.2);
        let in_ramp = mid > ramp_start && mid < closed_at;
        eprintln!(
            "{second:>3}  {state:<12?}  {cap:>8}  {received:>8}  {:>6}  {:>6}  {refused:>7}  {}",
            backend.served[second],
            received - backend.served[second],
            if in_ramp {
                format!("{:.3}", target(mid))
            } else {
                String::new()
            }
        );
        if second >= FAILING_UNTIL as usize {
            // During recovery: never more than capacity + 5 points of the offered load.
            let excess = i64::from(received) - i64::from(cap);
            worst_excess = worst_excess.max(excess);
            if in_ramp {
                least_headroom = least_headroom.min((-excess, second));
            }
            unused_capacity += cap.saturating_sub(received);
            assert!(
                received <= cap + SLACK,
                "second {second}: the backend received {received} calls, its capacity is {cap} \
                 (+{SLACK} allowed)"
            );
        }
        // Ramp-up: the calls admitted in each whole second of it are within 5 points (or one
        // call) of the sum of the target shares at their times.
        let whole = Duration::from_secs(second as u64);
        if whole >= ramp_start && whole + Duration::from_secs(1) <= closed_at {
            let expected: f64 = calls.clone().map(|i| target(call_time(i))).sum();
            let admitted = (RATE as usize - refused) as f64;
            let allowed = (0.05 * f64::from(RATE)).max(1.0);
            worst_share_gap = worst_share_gap.max((admitted - expected).abs() / f64::from(RATE));
            assert!(
                (admitted - expected).abs() <= allowed,
                "second {second} of ramp-up: {admitted} admitted, target {expected:.1}"
            );
        }
    }

    // While the backend fails: after the first trip, only probes reach it, at most
    // `half_open_max_requests` per recovery attempt.
    let probes = config.half_open_max_requests;
    let reached_while_failing = backend.failed_at.iter().filter(|t| **t < failing).count() as u32;
    let reached_after_first_trip = backend
        .failed_at
        .iter()
        .filter(|t| **t >= first_trip && **t < failing)
        .count() as u32;
    let failed_in_recovery = backend.failed_at.len() as u32 - reached_while_failing;
    let closed_calls_after = answers
        .iter()
        .enumerate()
        .filter(|(i, _)| call_time(*i) >= closed_at)
        .map(|(_, a)| *a)
        .collect::<Vec<_>>();
    let lost_after_recovery = answers
        .iter()
        .enumerate()
        .filter(|(i, a)| call_time(*i) >= failing && **a != Answer::Ok)
        .count();
    let total_ok = answers.iter().filter(|a| **a == Answer::Ok).count();

    eprintln!("\nfigures:");
    eprintln!(
        "  first trip at {:.3} s, after {} calls reached the failing backend",
        first_trip.as_secs_f64(),
        reached_while_failing - reached_after_first_trip
    );
    eprintln!(
        "  while failing, after the first trip: {attempts} recovery attempts, \
         {reached_after_first_trip} calls reached the backend (at most {probes} per attempt: {})",
        attempts * probes
    );
    eprintln!(
        "  backend back at {FAILING_UNTIL} s; probes succeeded, ramp-up from {:.3} s \
         ({:.3} s later); closed at {:.3} s",
        ramp_start.as_secs_f64(),
        (ramp_start - failing).as_secs_f64(),
        closed_at.as_secs_f64()
    );
    eprintln!(
        "  recovery (>= {FAILING_UNTIL} s): worst slot {worst_excess:+} calls against capacity \
         (allowed +{SLACK}); {failed_in_recovery} calls got a 503 from the backend; \
         {lost_after_recovery} of {} calls did not succeed",
        (SECONDS - FAILING_UNTIL) * RATE
    );
    eprintln!(
        "  ramp-up: worst whole-second gap between admitted and target share {:.2} points; \
         least headroom under the capacity {} calls (second {}); capacity left unused from \
         {FAILING_UNTIL} s on: {unused_capacity} calls",
        worst_share_gap * 100.0,
        least_headroom.0,
        least_headroom.1
    );
    eprintln!(
        "  after closing: {} calls, {} succeeded; overall {total_ok} of {} succeeded; \
         run ended at {:.3} s",
        closed_calls_after.len(),
        closed_calls_after
            .iter()
            .filter(|a| **a == Answer::Ok)
            .count(),
        answers.len(),
        end.as_secs_f64()
    );

    // The first trip comes with the 10th failure (min_requests), well within the first second.
    assert!(
        first_trip < Duration::from_secs(1),
        "first trip {first_trip:?}"
    );
    assert!(attempts >= 1, "no recovery attempt while failing");
    assert!(
        reached_after_first_trip <= attempts * probes,
        "{reached_after_first_trip} calls reached the failing backend after the first trip, \
         {attempts} attempts of at most {probes}"
    );
    // The order while failing: trip, then attempts that each fail back to open.
    let mut expected = vec![(State::Closed, State::Open)];
    for _ in 0..attempts {
        expected.push((State::Open, State::HalfOpen));
        expected.push((State::HalfOpen, State::Open));
    }
    let before_recovery: Vec<(State, State)> = changes
        .iter()
        .filter(|c| c.0 < failing)
        .map(|c| (c.1, c.2))
        .collect();
    assert_eq!(before_recovery, expected);
    // After the backend is back: one attempt succeeds, the ramp-up runs its course, no reopening.
    let after: Vec<(State, State)> = changes
        .iter()
        .filter(|c| c.0 >= failing)
        .map(|c| (c.1, c.2))
        .collect();
    assert_eq!(
        after,
        vec![
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::RampUp),
            (State::RampUp, State::Closed)
        ]
    );
    assert!(
        closed_at >= ramp_start + config.ramp_up_duration,
        "closed {closed_at:?} before the ramp-up ended"
    );
    // Closed at the end, every call since closing succeeded, and closing left time to show it.
    assert_eq!(handle.state(), State::Closed);
    assert!(
        closed_at < Duration::from_secs(100),
        "closed at {closed_at:?}"
    );
    assert!(
        closed_calls_after.iter().all(|a| *a == Answer::Ok),
        "calls after closing that did not succeed: {}",
        closed_calls_after
            .iter()
            .filter(|a| **a != Answer::Ok)
            .count()
    );
}
