//! The breaker through a real axum `Router`, under tokio's paused clock: every transition, the
//! 503 and 504 answers, classification, slow calls, keyed breakers, manual control, the
//! callback and the stats.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::{Request, Response, StatusCode};
use proxflow_breaker::{BreakerHandle, CircuitBreakerLayer, Outcome, Refusal, State, StateChange};
use proxflow_core::Clock;
use tokio::time::advance;
use tower::ServiceExt;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// A backend whose answer the test sets: a status and a delay; it counts the calls it gets.
#[derive(Clone, Default)]
struct Backend {
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    calls: Arc<AtomicU64>,
}

impl Backend {
    fn new() -> Backend {
        let backend = Backend::default();
        backend.answer(200);
        backend
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// `GET /` answered by the backend; the test adds the layer.
    fn router(&self) -> Router {
        let backend = self.clone();
        Router::new().route(
            "/",
            get(move || {
                let backend = backend.clone();
                async move {
                    backend.calls.fetch_add(1, Ordering::SeqCst);
                    let delay = backend.delay_ms.load(Ordering::SeqCst);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    let status = backend.status.load(Ordering::SeqCst);
                    (StatusCode::from_u16(status).unwrap(), "backend")
                }
            }),
        )
    }
}

async fn get_status(app: &Router) -> StatusCode {
    send(app).await.status()
}

async fn send_owned(app: Router) -> Response<Body> {
    send(&app).await
}

async fn send(app: &Router) -> Response<Body> {
    let request = Request::get("/").body(Body::empty()).unwrap();
    app.clone().oneshot(request).await.unwrap()
}

/// The test layer: 4 calls in a 10 s window, open 10 s, 2 probes, 10 s ramp-up, on tokio's
/// paused clock.
fn layer() -> CircuitBreakerLayer {
    CircuitBreakerLayer::new()
        .clock(Clock::tokio())
        .min_requests(4)
        .evaluation_window(10 * S)
        .recovery_timeout(10 * S)
        .half_open_max_requests(2)
        .ramp_up_duration(10 * S)
}

async fn trip(app: &Router, backend: &Backend, handle: &BreakerHandle) {
    backend.answer(503);
    for _ in 0..4 {
        assert_eq!(get_status(app).await, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(handle.state(), State::Open);
}

/// The transitions seen by the state-change callback.
type Seen = Arc<Mutex<Vec<(State, State)>>>;

fn recorder(layer: CircuitBreakerLayer) -> (CircuitBreakerLayer, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let layer = layer.on_state_change(move |change: &StateChange| {
        record.lock().unwrap().push((change.from, change.to));
    });
    (layer, seen)
}

#[tokio::test(start_paused = true)]
async fn every_transition_through_a_router() {
    let backend = Backend::new();
    let (layer, seen) = recorder(layer());
    let handle = layer.handle();
    let app = backend.router().layer(layer);

    // Closed: calls pass; three failures of four is over 50 %.
    assert_eq!(get_status(&app).await, StatusCode::OK);
    backend.answer(500);
    for _ in 0..3 {
        assert_eq!(get_status(&app).await, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(handle.state(), State::Open);

    // Open: refused at once with the time left, the backend untouched.
    let before = backend.calls();
    advance(3 * S).await;
    let refused = send(&app).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "7");
    let open = refused.extensions().get::<Refusal>().copied().unwrap();
    assert_eq!(open.state, State::Open);
    assert_eq!(open.retry_after, 7 * S);
    assert_eq!(backend.calls(), before);

    // Half-open after the recovery timeout: two probes succeed, then ramp-up.
    advance(7 * S).await;
    backend.answer(200);
    assert_eq!(get_status(&app).await, StatusCode::OK);
    assert_eq!(handle.state(), State::HalfOpen);
    assert_eq!(get_status(&app).await, StatusCode::OK);
    assert_eq!(handle.state(), State::RampUp);

    // Ramp-up: 10 % at first, then more; all after 10 s.
    let mut admitted = 0;
    for _ in 0..100 {
        if get_status(&app).await == StatusCode::OK {
            admitted += 1;
        }
        advance(10 * MS).await;
    }
    // The first second: the share goes from 10 % to 19 %.
    assert!(
        (10..=20).contains(&admitted),
        "{admitted} of 100 in the first second"
    );
    advance(9 * S).await;
    assert_eq!(get_status(&app).await, StatusCode::OK);
    assert_eq!(handle.state(), State::Closed);

    assert_eq!(
        *seen.lock().unwrap(),
        [
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::RampUp),
            (State::RampUp, State::Closed),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_only_the_probes_through_and_a_failure_reopens_for_longer() {
    let backend = Backend::new();
    let layer = layer();
    let handle = layer.handle();
    let app = backend.router().layer(layer);
    trip(&app, &backend, &handle).await;
    advance(10 * S).await;

    // Two slow probes in flight (1 s and 2 s): the third call is refused without reaching
    // the backend.
    backend.answer(200);
    backend.delay(S);
    let first = tokio::spawn(send_owned(app.clone()));
    tokio::task::yield_now().await;
    backend.delay(2 * S);
    let second = tokio::spawn(send_owned(app.clone()));
    tokio::task::yield_now().await;
    let calls = backend.calls();
    assert_eq!(calls, 4 + 2, "two probes reached the backend");
    let refused = send(&app).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.extensions().get::<Refusal>().unwrap().state,
        State::HalfOpen
    );
    assert_eq!(backend.calls(), calls);

    // The first probe succeeds; the second fails: open again.
    assert_eq!(first.await.unwrap().status(), StatusCode::OK);
    assert_eq!(handle.state(), State::HalfOpen);
    backend.answer(503);
    assert_eq!(
        second.await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(handle.state(), State::Open);
    // Second trip in a row: open for 20 s.
    assert_eq!(handle.snapshot().retry_after_ms, 20_000);
    assert_eq!(handle.snapshot().trips_in_a_row, 2);
}

#[tokio::test(start_paused = true)]
async fn timeouts_answer_504_and_count_as_failures() {
    let backend = Backend::new();
    let layer = layer().timeout(2 * S);
    let handle = layer.handle();
    let app = backend.router().layer(layer);
    backend.delay(10 * S);
    for _ in 0..4 {
        let response = send(&app).await;
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(response
            .extensions()
            .get::<proxflow_breaker::CallTimedOut>()
            .is_some());
    }
    assert_eq!(handle.state(), State::Open);
    let snapshot = handle.snapshot();
    assert_eq!(snapshot.totals.timeouts, 4);
    assert_eq!(snapshot.totals.failures, 4);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_it_at_their_own_threshold() {
    let backend = Backend::new();
    let layer = layer()
        .latency_threshold(S)
        .failure_threshold(0.9)
        .slow_call_threshold(0.75);
    let handle = layer.handle();
    let app = backend.router().layer(layer);
    backend.delay(2 * S);
    for _ in 0..3 {
        assert_eq!(get_status(&app).await, StatusCode::OK);
    }
    assert_eq!(handle.state(), State::Closed, "3 calls: below min_requests");
    backend.delay(Duration::ZERO);
    assert_eq!(get_status(&app).await, StatusCode::OK);
    assert_eq!(handle.state(), State::Open, "3 slow of 4 is 75 %");
    assert_eq!(handle.snapshot().totals.slow_calls, 3);
}

#[tokio::test(start_paused = true)]
async fn a_classifier_can_ignore_429_and_fail_other_statuses() {
    let backend = Backend::new();
    let layer = layer().classify(
        |result: Result<&Response<Body>, &std::convert::Infallible>| match result {
            Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS => Outcome::Ignored,
            Ok(r) if r.status() == StatusCode::NOT_FOUND => Outcome::Failure,
            _ => Outcome::Success,
        },
    );
    let handle = layer.handle();
    let app = backend.router().layer(layer);
    backend.answer(429);
    for _ in 0..20 {
        assert_eq!(get_status(&app).await, StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.snapshot().totals.ignored, 20);
    backend.answer(404);
    for _ in 0..4 {
        get_status(&app).await;
    }
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn failure_statuses_are_configurable() {
    let backend = Backend::new();
    let layer = layer().failure_statuses([502, 503]);
    let handle = layer.handle();
    let app = backend.router().layer(layer);
    backend.answer(500);
    for _ in 0..10 {
        get_status(&app).await;
    }
    assert_eq!(handle.state(), State::Closed, "500 is not in the set");
    backend.answer(502);
    for _ in 0..10 {
        get_status(&app).await;
    }
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn failures_during_ramp_up_reopen_it() {
    let backend = Backend::new();
    let (layer, seen) = recorder(layer());
    let handle = layer.handle();
    let app = backend.router().layer(layer);
    trip(&app, &backend, &handle).await;
    advance(10 * S).await;
    backend.answer(200);
    get_status(&app).await;
    get_status(&app).await;
    assert_eq!(handle.state(), State::RampUp);
    backend.answer(500);
    for _ in 0..1000 {
        get_status(&app).await;
        advance(10 * MS).await;
        if handle.state() != State::RampUp {
            break;
        }
    }
    assert_eq!(handle.state(), State::Open);
    assert_eq!(
        seen.lock().unwrap().last(),
        Some(&(State::RampUp, State::Open))
    );
}

#[tokio::test(start_paused = true)]
async fn manual_control() {
    let backend = Backend::new();
    let layer = layer();
    let handle = layer.handle();
    let app = backend.router().layer(layer);
    handle.force_open();
    assert_eq!(get_status(&app).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(backend.calls(), 0);
    handle.force_closed();
    backend.answer(500);
    for _ in 0..10 {
        assert_eq!(get_status(&app).await, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(handle.state(), State::ForcedClosed);
    handle.reset();
    assert_eq!(handle.state(), State::Closed);
    for _ in 0..4 {
        get_status(&app).await;
    }
    assert_eq!(handle.state(), State::Open);
    handle.reset();
    backend.answer(200);
    assert_eq!(get_status(&app).await, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn stats_serialize_to_json() {
    let backend = Backend::new();
    let layer = layer().name("orders");
    let handle = layer.handle();
    let app = backend.router().layer(layer);
    get_status(&app).await;
    backend.answer(500);
    get_status(&app).await;
    advance(S).await;
    let json = serde_json::to_value(handle.snapshot()).unwrap();
    assert_eq!(json["breaker"], "orders");
    assert_eq!(json["state"], "closed");
    assert_eq!(json["failure_rate"], 0.5);
    assert_eq!(json["calls_in_window"], 2);
    assert_eq!(json["time_in_state_ms"], 1000);
    assert_eq!(json["totals"]["successes"], 1);
    assert_eq!(json["totals"]["failures"], 1);
}

/// A handle taken before the rest of the configuration controls the breaker that serves: the
/// builder calls after it change the settings of that same breaker.
#[tokio::test(start_paused = true)]
async fn a_handle_taken_first_sees_the_traffic_and_controls_it() {
    let backend = Backend::new();
    let layer = CircuitBreakerLayer::new();
    let handle = layer.handle();
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    let layer = layer
        .clock(Clock::tokio())
        .name("orders")
        .min_requests(4)
        .recovery_timeout(10 * S)
        .on_state_change(move |change: &StateChange| {
            record.lock().unwrap().push((change.from, change.to));
        })
        .failure_statuses([502]);
    let app = backend.router().layer(layer);

    for _ in 0..3 {
        assert_eq!(get_status(&app).await, StatusCode::OK);
    }
    backend.answer(500);
    assert_eq!(get_status(&app).await, StatusCode::INTERNAL_SERVER_ERROR);
    let snapshot = handle.snapshot();
    assert_eq!(snapshot.breaker.as_ref(), "orders");
    assert_eq!(snapshot.totals.successes, 4, "500 is not a failure here");
    assert_eq!(snapshot.calls_in_window, 4);

    backend.answer(502);
    for _ in 0..4 {
        get_status(&app).await;
    }
    assert_eq!(handle.state(), State::Open, "4 failures of 8 calls");
    assert_eq!(handle.snapshot().retry_after_ms, 10_000);

    handle.reset();
    backend.answer(200);
    assert_eq!(get_status(&app).await, StatusCode::OK);
    handle.force_open();
    let calls = backend.calls();
    assert_eq!(get_status(&app).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(backend.calls(), calls, "refused before the backend");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (State::Closed, State::Open),
            (State::Open, State::Closed),
            (State::Closed, State::ForcedOpen),
        ],
        "the callback set after the handle was taken"
    );
}

#[tokio::test(start_paused = true)]
async fn a_keyed_handle_taken_first_sees_the_keys_of_a_later_key_function() {
    let keyed = layer().keyed();
    let handle = keyed.handle();
    let keyed = keyed.key(|uri, _| uri.path().split('/').nth(1).map(str::to_owned));
    let app = Router::new()
        .route("/{tenant}", get(|| async { "ok" }))
        .layer(keyed);
    for tenant in ["a", "b", "a"] {
        let request = Request::get(format!("/{tenant}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            app.clone().oneshot(request).await.unwrap().status(),
            StatusCode::OK
        );
    }
    assert_eq!(handle.get("a").unwrap().snapshot().totals.successes, 2);
    assert_eq!(handle.get("b").unwrap().snapshot().totals.successes, 1);
    handle.get("b").unwrap().force_open();
    let request = Request::get("/b").body(Body::empty()).unwrap();
    let refused = app.oneshot(request).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.extensions().get::<Refusal>().unwrap().state,
        State::ForcedOpen
    );
}

#[tokio::test(start_paused = true)]
async fn keyed_breakers_are_separate_and_bounded() {
    let backend = Backend::new();
    let keyed = layer().max_keys(32).keyed();
    let handle = keyed.handle();
    let service = tower::ServiceBuilder::new().layer(keyed).service_fn({
        let backend = backend.clone();
        move |request: Request<Body>| {
            let backend = backend.clone();
            async move {
                backend.calls.fetch_add(1, Ordering::SeqCst);
                let failing = request.uri().host() == Some("bad.example");
                let status = if failing { 503 } else { 200 };
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .status(status)
                        .body(Body::empty())
                        .unwrap(),
                )
            }
        }
    });
    let call = |uri: &str| {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let service = service.clone();
        async move { service.oneshot(request).await.unwrap().status() }
    };
    for _ in 0..4 {
        call("http://bad.example/x").await;
    }
    assert_eq!(
        call("http://bad.example/x").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(call("http://good.example/x").await, StatusCode::OK);
    assert_eq!(handle.get("bad.example").unwrap().state(), State::Open);
    assert_eq!(handle.get("good.example").unwrap().state(), State::Closed);

    // A flood of distinct authorities: the bound holds; closed breakers go first, so the open
    // one survives.
    for i in 0..500 {
        call(&format!("http://host-{i}.example/")).await;
    }
    let all = handle.snapshot();
    assert!(all.len() <= 32, "{} breakers", all.len());
    assert_eq!(handle.get("bad.example").unwrap().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn the_keyed_form_reads_the_host_header_by_default() {
    let keyed = layer().keyed();
    let handle = keyed.handle();
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(keyed);
    let request = Request::get("/")
        .header("host", "API.Example:8080")
        .body(Body::empty())
        .unwrap();
    app.oneshot(request).await.unwrap();
    assert!(handle.get("api.example:8080").is_some());
}

#[tokio::test(start_paused = true)]
async fn config_files_give_the_same_layer() {
    let json = r#"{"failure_threshold": 0.25, "recovery_timeout": "30s", "half_open_max_requests": 5,
        "latency_threshold": "2s", "min_requests": 20, "evaluation_window": "1m",
        "ramp_up_duration": "45s", "timeout": "3s", "failure_statuses": [502, 503]}"#;
    let yaml = "failure_threshold: 0.25\nrecovery_timeout: 30s\nhalf_open_max_requests: 5\n\
        latency_threshold: 2s\nmin_requests: 20\nevaluation_window: 1m\nramp_up_duration: 45s\n\
        timeout: 3s\nfailure_statuses: [502, 503]\n";
    let toml = "failure_threshold = 0.25\nrecovery_timeout = \"30s\"\nhalf_open_max_requests = 5\n\
        latency_threshold = \"2s\"\nmin_requests = 20\nevaluation_window = \"1m\"\n\
        ramp_up_duration = \"45s\"\ntimeout = \"3s\"\nfailure_statuses = [502, 503]\n";
    let from_json: proxflow_breaker::BreakerConfig = serde_json::from_str(json).unwrap();
    let from_yaml: proxflow_breaker::BreakerConfig = serde_yaml::from_str(yaml).unwrap();
    let from_toml: proxflow_breaker::BreakerConfig = toml::from_str(toml).unwrap();
    assert_eq!(from_json, from_yaml);
    assert_eq!(from_json, from_toml);
    assert_eq!(from_json.recovery_timeout, 30 * S);
    assert_eq!(from_json.timeout, Some(3 * S));
    assert_eq!(
        from_json.ramp_up_floor, 0.1,
        "unset fields keep their defaults"
    );
    CircuitBreakerLayer::from_config(&from_json).unwrap();

    let empty: proxflow_breaker::BreakerConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, proxflow_breaker::BreakerConfig::default());

    for (bad, field) in [
        (r#"{"failure_threshold": 1.5}"#, "failure_threshold"),
        (r#"{"min_requests": 0}"#, "min_requests"),
        (r#"{"failure_statuses": [42]}"#, "failure_statuses"),
        (r#"{"recovery_backoff": 0.5}"#, "recovery_backoff"),
        (r#"{"ramp_up_floor": 0}"#, "ramp_up_floor"),
    ] {
        let config: proxflow_breaker::BreakerConfig = serde_json::from_str(bad).unwrap();
        let error = CircuitBreakerLayer::from_config(&config).unwrap_err();
        assert!(error.to_string().contains(field), "{bad}: {error}");
    }
    let unknown = serde_json::from_str::<proxflow_breaker::BreakerConfig>(r#"{"treshold": 1}"#);
    assert!(unknown.unwrap_err().to_string().contains("treshold"));
}

#[test]
fn the_ramp_settings_read_from_config_files() {
    let yaml = "ramp_up_mode: time\nramp_up_step: 250ms\nramp_up_growth: 1.5\n\
        ramp_up_latency_tolerance: 0.3\n";
    let toml = "ramp_up_mode = \"time\"\nramp_up_step = \"250ms\"\nramp_up_growth = 1.5\n\
        ramp_up_latency_tolerance = 0.3\n";
    let from_yaml: proxflow_breaker::BreakerConfig = serde_yaml::from_str(yaml).unwrap();
    let from_toml: proxflow_breaker::BreakerConfig = toml::from_str(toml).unwrap();
    assert_eq!(from_yaml, from_toml);
    assert_eq!(from_yaml.ramp_up_mode, proxflow_breaker::RampUpMode::Time);
    assert_eq!(from_yaml.ramp_up_step, 250 * MS);
    assert_eq!(
        (
            from_yaml.ramp_up_growth,
            from_yaml.ramp_up_latency_tolerance
        ),
        (1.5, 0.3)
    );
    CircuitBreakerLayer::from_config(&from_yaml).unwrap();
    let defaults = proxflow_breaker::BreakerConfig::default();
    assert_eq!(
        defaults.ramp_up_mode,
        proxflow_breaker::RampUpMode::Adaptive
    );
    assert_eq!(
        (
            defaults.ramp_up_step,
            defaults.ramp_up_growth,
            defaults.ramp_up_latency_tolerance
        ),
        (100 * MS, 1.2, 0.2)
    );
    let unknown = serde_yaml::from_str::<proxflow_breaker::BreakerConfig>("ramp_up_mode: fast\n");
    let message = unknown.unwrap_err().to_string();
    assert!(
        message.contains("adaptive") && message.contains("time"),
        "{message}"
    );
    for (bad, field) in [
        (r#"{"ramp_up_growth": 0.5}"#, "ramp_up_growth"),
        (
            r#"{"ramp_up_latency_tolerance": -1}"#,
            "ramp_up_latency_tolerance",
        ),
    ] {
        let config: proxflow_breaker::BreakerConfig = serde_json::from_str(bad).unwrap();
        let error = CircuitBreakerLayer::from_config(&config).unwrap_err();
        assert!(error.to_string().contains(field), "{bad}: {error}");
    }
}
