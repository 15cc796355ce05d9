//! The generic form and readiness mode through tower-test mocks, under paused time.

use std::time::Duration;

use proxflow_breaker::{BreakerError, CircuitBreakerLayer, Refusal, State};
use proxflow_core::Clock;
use tokio::time::advance;
use tower::{Layer, Service};
use tower_test::mock;

const S: Duration = Duration::from_secs(1);

type Error = Box<dyn std::error::Error + Send + Sync>;

fn layer() -> CircuitBreakerLayer {
    CircuitBreakerLayer::new()
        .clock(Clock::tokio())
        .min_requests(4)
        .recovery_timeout(10 * S)
        .half_open_max_requests(2)
        .ramp_up_duration(10 * S)
}

/// `poll_ready` (which must be ready), then `call`.
fn call<S>(service: &mut mock::Spawn<S>, request: &'static str) -> S::Future
where
    S: Service<&'static str>,
    S::Error: std::fmt::Debug,
{
    assert!(service.poll_ready().is_ready(), "not ready for {request}");
    service.call(request)
}

/// Four calls failing through the service: the breaker opens.
async fn trip<S>(
    service: &mut mock::Spawn<S>,
    handle: &mut mock::Handle<&'static str, &'static str>,
) where
    S: Service<&'static str, Response = &'static str, Error = BreakerError<Error>>,
{
    for _ in 0..4 {
        assert!(service.poll_ready().is_ready());
        let call = service.call("request");
        let (_, respond) = handle.next_request().await.unwrap();
        respond.send_error("backend down");
        assert!(matches!(call.await, Err(BreakerError::Inner(_))));
    }
}

#[tokio::test(start_paused = true)]
async fn the_generic_form_refuses_with_an_error_value() {
    let layer = layer().generic();
    let breaker = layer.handle();
    let (service, mut handle) = mock::pair::<&'static str, &'static str>();
    let mut service = mock::Spawn::new(layer.layer(service));
    trip(&mut service, &mut handle).await;
    assert_eq!(breaker.state(), State::Open);

    assert!(service.poll_ready().is_ready(), "refusing, not waiting");
    match service.call("request").await {
        Err(BreakerError::Open(refusal)) => {
            assert_eq!(refusal.retry_after, 10 * S);
            assert_eq!(refusal.state, State::Open);
        }
        other => panic!("{other:?}"),
    }
    let error = BreakerError::<Error>::Open(Refusal {
        retry_after: 10 * S,
        state: State::Open,
    });
    assert!(error.to_string().contains("retry after 10s"));
}

#[tokio::test(start_paused = true)]
async fn readiness_mode_waits_instead_of_refusing() {
    let layer = layer().readiness(true).generic();
    let breaker = layer.handle();
    let (service, mut handle) = mock::pair::<&'static str, &'static str>();
    let mut service = mock::Spawn::new(layer.layer(service));
    trip(&mut service, &mut handle).await;

    assert!(service.poll_ready().is_pending(), "open: not ready");
    advance(9 * S).await;
    assert!(service.poll_ready().is_pending());
    assert!(!service.is_woken());
    advance(S).await;
    assert!(service.is_woken(), "woken when the recovery timeout ends");
    assert!(service.poll_ready().is_ready(), "leave for a probe");
    assert_eq!(breaker.state(), State::HalfOpen);
    let call = service.call("probe");
    let (request, respond) = handle.next_request().await.unwrap();
    assert_eq!(request, "probe");
    respond.send_response("fine");
    assert_eq!(call.await.unwrap(), "fine");
}

#[tokio::test(start_paused = true)]
async fn readiness_leave_not_used_is_given_back() {
    let layer = layer().readiness(true).generic();
    let breaker = layer.handle();
    let (inner, mut handle) = mock::pair::<&'static str, &'static str>();
    let mut service = mock::Spawn::new(layer.layer(inner.clone()));
    trip(&mut service, &mut handle).await;
    advance(10 * S).await;

    // Two services take both probe places in poll_ready; one is dropped unused.
    let mut other = mock::Spawn::new(layer.layer(inner.clone()));
    assert!(service.poll_ready().is_ready());
    assert!(other.poll_ready().is_ready());
    let mut third = mock::Spawn::new(layer.layer(inner));
    assert!(third.poll_ready().is_pending(), "both probe places taken");
    drop(other);
    advance(S).await;
    assert!(
        third.poll_ready().is_ready(),
        "the dropped service's place is free"
    );
    assert_eq!(breaker.state(), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_its_place() {
    let layer = layer().generic();
    let breaker = layer.handle();
    let (service, mut handle) = mock::pair::<&'static str, &'static str>();
    let mut service = mock::Spawn::new(layer.layer(service));
    trip(&mut service, &mut handle).await;
    advance(10 * S).await;
    let first = call(&mut service, "probe 1");
    let second = call(&mut service, "probe 2");
    assert!(matches!(
        call(&mut service, "third").await,
        Err(BreakerError::Open(Refusal {
            state: State::HalfOpen,
            ..
        }))
    ));
    assert_eq!(breaker.snapshot().totals.refused, 1);
    drop(first);
    let third = call(&mut service, "probe 3");
    assert_eq!(
        breaker.snapshot().totals.refused,
        1,
        "the dropped probe's place went to the third"
    );
    assert_eq!(breaker.snapshot().totals.ignored, 1, "the dropped probe");
    drop((second, third));
}

#[tokio::test(start_paused = true)]
async fn a_timeout_is_an_error_value_and_a_failure() {
    let layer = layer().timeout(2 * S).generic();
    let breaker = layer.handle();
    let (service, mut handle) = mock::pair::<&'static str, &'static str>();
    let mut service = mock::Spawn::new(layer.layer(service));
    let call = call(&mut service, "slow");
    let (_request, _respond) = handle.next_request().await.unwrap();
    match call.await {
        Err(BreakerError::Timeout(after)) => assert_eq!(after, 2 * S),
        other => panic!("{other:?}"),
    }
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.totals.timeouts, 1);
    assert_eq!(snapshot.totals.failures, 1);
}

#[tokio::test(start_paused = true)]
async fn outcomes_of_calls_from_before_a_trip_are_not_counted() {
    let layer = layer().generic();
    let breaker = layer.handle();
    let (service, mut handle) = mock::pair::<&'static str, &'static str>();
    let mut service = mock::Spawn::new(layer.layer(service));
    let early = call(&mut service, "early");
    let (_, early_respond) = handle.next_request().await.unwrap();
    trip(&mut service, &mut handle).await;
    advance(10 * S).await;
    let probe = call(&mut service, "probe");
    let (_, probe_respond) = handle.next_request().await.unwrap();
    // The call admitted while closed fails now, while half-open: it is not a probe.
    early_respond.send_error("late failure");
    assert!(early.await.is_err());
    assert_eq!(breaker.state(), State::HalfOpen);
    probe_respond.send_response("ok");
    probe.await.unwrap();
    assert_eq!(breaker.state(), State::HalfOpen, "one probe of two");
}

/// Calls that a timeout outside the breaker drops count: past `latency_threshold` as timeouts
/// (failures) that open it, before it as ignored.
#[tokio::test(start_paused = true)]
async fn calls_dropped_by_an_outer_timeout_count_once_past_the_latency_threshold() {
    let layer = layer().latency_threshold(2 * S).generic();
    let breaker = layer.handle();
    let (service, mut handle) = mock::pair::<&'static str, &'static str>();
    let mut service = mock::Spawn::new(layer.layer(service));

    // Given up after 1 s: the caller's choice, ignored.
    let call_early = call(&mut service, "early");
    let _pending = handle.next_request().await.unwrap();
    assert!(tokio::time::timeout(S, call_early).await.is_err());
    let totals = breaker.snapshot().totals;
    assert_eq!(
        (totals.ignored, totals.failures, totals.timeouts),
        (1, 0, 0)
    );

    // A backend that stalls: four calls given up after 3 s each are timeouts, and it opens.
    for _ in 0..4 {
        let stalled = call(&mut service, "stalled");
        let _pending = handle.next_request().await.unwrap();
        assert!(tokio::time::timeout(3 * S, stalled).await.is_err());
    }
    let totals = breaker.snapshot().totals;
    assert_eq!((totals.failures, totals.timeouts), (4, 4));
    assert_eq!(breaker.state(), State::Open);
}
