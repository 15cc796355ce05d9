//! The closed path counts fast successes without the breaker's lock while no run of them could
//! change the state; these are the edges where they could, under paused time, and the counts
//! of threads calling one breaker at once.

use std::time::Duration;

use proxflow_breaker::{BreakerError, CircuitBreakerLayer, GenericCircuitBreakerLayer, State};
use proxflow_core::Clock;
use tokio::time::advance;
use tower::{service_fn, Layer, Service, ServiceExt};

const S: Duration = Duration::from_secs(1);

/// A generic breaker over a service that succeeds on `true` and fails on `false`.
fn service(
    layer: &GenericCircuitBreakerLayer,
) -> impl Service<bool, Response = (), Error = BreakerError<&'static str>> + Clone {
    layer.layer(service_fn(|ok: bool| async move {
        if ok {
            Ok(())
        } else {
            Err("down")
        }
    }))
}

async fn call<S>(service: &mut S, ok: bool) -> Result<(), BreakerError<&'static str>>
where
    S: Service<bool, Response = (), Error = BreakerError<&'static str>>,
{
    service.ready().await?.call(ok).await
}

#[tokio::test(start_paused = true)]
async fn successes_that_bring_the_calls_to_min_requests_trip_it() {
    let layer = CircuitBreakerLayer::new()
        .clock(Clock::tokio())
        .min_requests(4)
        .generic();
    let handle = layer.handle();
    let mut service = service(&layer);
    for _ in 0..2 {
        assert!(call(&mut service, false).await.is_err());
    }
    call(&mut service, true).await.unwrap();
    assert_eq!(handle.state(), State::Closed, "3 calls: below min_requests");
    call(&mut service, true).await.unwrap();
    assert_eq!(handle.state(), State::Open, "2 failures in 4 calls");
}

#[tokio::test(start_paused = true)]
async fn a_success_after_a_bucket_left_the_window_judges_what_is_left() {
    // 20 s window: 1 s buckets.
    let layer = CircuitBreakerLayer::new()
        .clock(Clock::tokio())
        .evaluation_window(20 * S)
        .generic();
    let handle = layer.handle();
    let mut service = service(&layer);
    for _ in 0..10 {
        call(&mut service, true).await.unwrap();
    }
    advance(10 * S).await;
    for _ in 0..9 {
        assert!(call(&mut service, false).await.is_err());
    }
    assert_eq!(handle.state(), State::Closed, "9 failures in 19 calls");
    // The first second's successes leave the window at 20 s.
    advance(10 * S + S / 2).await;
    call(&mut service, true).await.unwrap();
    assert_eq!(handle.state(), State::Open, "9 failures in 10 calls");
}

#[tokio::test(start_paused = true)]
async fn the_first_call_after_backoff_reset_resets_the_backoff() {
    let layer = CircuitBreakerLayer::new()
        .clock(Clock::tokio())
        .min_requests(2)
        .recovery_timeout(10 * S)
        .half_open_max_requests(1)
        .ramp_up_duration(Duration::ZERO)
        .backoff_reset(60 * S)
        .generic();
    let handle = layer.handle();
    let mut service = service(&layer);
    for _ in 0..2 {
        assert!(call(&mut service, false).await.is_err());
    }
    advance(10 * S).await;
    call(&mut service, true).await.unwrap();
    assert_eq!(handle.state(), State::Closed, "the probe succeeded");
    // Calls all along, so the closed path keeps counting without the lock.
    for _ in 0..59 {
        call(&mut service, true).await.unwrap();
        advance(S).await;
    }
    call(&mut service, true).await.unwrap();
    assert_eq!(handle.snapshot().trips_in_a_row, 1, "59 s closed");
    advance(S).await;
    call(&mut service, true).await.unwrap();
    assert_eq!(handle.snapshot().trips_in_a_row, 0, "60 s closed");
}

#[test]
fn threads_calling_one_breaker_lose_no_count() {
    const CALLS: u64 = 20_000;
    let layer = CircuitBreakerLayer::new().generic();
    let handle = layer.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let mut service = service(&layer);
            let runtime = &runtime;
            scope.spawn(move || {
                for i in 0..CALLS {
                    // One call in a hundred fails: below the threshold, and the lock is
                    // taken amid the others' lock-free counting.
                    let ok = (i + thread) % 100 != 0;
                    let result = runtime.block_on(call(&mut service, ok));
                    assert_eq!(result.is_ok(), ok);
                }
            });
        }
    });
    let snapshot = handle.snapshot();
    assert_eq!(snapshot.state, State::Closed);
    assert_eq!(
        snapshot.totals.successes + snapshot.totals.failures,
        4 * CALLS
    );
    assert_eq!(snapshot.totals.failures, 4 * CALLS / 100);
    assert_eq!(u64::from(snapshot.calls_in_window), 4 * CALLS);
}
