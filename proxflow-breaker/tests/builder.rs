//! The builder's convention: a value out of range panics at the call, naming the field, where
//! `from_config` returns a `ConfigError` naming the same field; builder calls configure the one
//! breaker the handles see until it is in use; the clock is the one given.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use proxflow_breaker::{
    BreakerConfig, BreakerError, CircuitBreakerLayer, RampUpMode, Refusal, State,
};
use proxflow_core::ManualClock;
use tower::{service_fn, Layer, Service};

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

type Builder = fn(CircuitBreakerLayer) -> CircuitBreakerLayer;
type Edit = fn(&mut BreakerConfig);

/// A bad value twice: `method(value)` on a builder, `field = value` in a config; the error
/// names `error_field`.
macro_rules! bad {
    ($error_field:literal, $method:ident($value:expr), $field:ident = $config:expr) => {
        (
            $error_field,
            |layer: CircuitBreakerLayer| layer.$method($value),
            |config: &mut BreakerConfig| config.$field = $config,
        )
    };
}

#[rustfmt::skip]
const BAD: &[(&str, Builder, Edit)] = &[
    bad!("failure_threshold", failure_threshold(1.5), failure_threshold = 1.5),
    bad!("failure_threshold", failure_threshold(0.0), failure_threshold = 0.0),
    bad!("failure_threshold", failure_threshold(f64::NAN), failure_threshold = f64::NAN),
    bad!("slow_call_threshold", slow_call_threshold(-0.1), slow_call_threshold = Some(-0.1)),
    bad!("latency_threshold", latency_threshold(Duration::ZERO), latency_threshold = Duration::ZERO),
    bad!("min_requests", min_requests(0), min_requests = 0),
    bad!("evaluation_window", evaluation_window(10 * MS), evaluation_window = 10 * MS),
    bad!("evaluation_window", evaluation_window(Duration::MAX), evaluation_window = Duration::MAX),
    bad!("recovery_timeout", recovery_timeout(Duration::ZERO), recovery_timeout = Duration::ZERO),
    // Over the default `max_recovery_timeout` of 10 min: that field is the one refused.
    bad!("max_recovery_timeout", recovery_timeout(3600 * S), recovery_timeout = 3600 * S),
    bad!("max_recovery_timeout", max_recovery_timeout(S), max_recovery_timeout = S),
    bad!("recovery_backoff", recovery_backoff(0.5), recovery_backoff = 0.5),
    bad!("recovery_backoff", recovery_backoff(101.0), recovery_backoff = 101.0),
    bad!("backoff_reset", backoff_reset(Duration::MAX), backoff_reset = Duration::MAX),
    bad!("half_open_max_requests", half_open_max_requests(0), half_open_max_requests = 0),
    bad!("ramp_up_duration", ramp_up_duration(Duration::MAX), ramp_up_duration = Duration::MAX),
    bad!("ramp_up_floor", ramp_up_floor(0.0), ramp_up_floor = 0.0),
    bad!("ramp_up_floor", ramp_up_floor(1.1), ramp_up_floor = 1.1),
    bad!("ramp_up_aggression", ramp_up_aggression(0.0), ramp_up_aggression = 0.0),
    bad!("ramp_up_step", ramp_up_step(Duration::MAX), ramp_up_step = Duration::MAX),
    bad!("ramp_up_growth", ramp_up_growth(0.9), ramp_up_growth = 0.9),
    bad!("ramp_up_growth", ramp_up_growth(f64::NAN), ramp_up_growth = f64::NAN),
    bad!("ramp_up_latency_tolerance", ramp_up_latency_tolerance(-0.1), ramp_up_latency_tolerance = -0.1),
    bad!("ramp_up_latency_tolerance", ramp_up_latency_tolerance(f64::INFINITY), ramp_up_latency_tolerance = f64::INFINITY),
    bad!("failure_statuses", failure_statuses([503, 42]), failure_statuses = vec![503, 42]),
    bad!("timeout", timeout(Duration::ZERO), timeout = Some(Duration::ZERO)),
    bad!("max_keys", max_keys(0), max_keys = 0),
];

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload
            .downcast::<&'static str>()
            .map(|message| message.to_string())
            .unwrap_or_default(),
    }
}

#[test]
fn the_builder_panics_where_from_config_refuses_naming_the_same_field() {
    for (field, builder, edit) in BAD {
        let mut config = BreakerConfig::default();
        edit(&mut config);
        let error = CircuitBreakerLayer::from_config(&config).unwrap_err();
        assert_eq!(error.field, *field, "{config:?}: {error}");

        let panicked = catch_unwind(|| builder(CircuitBreakerLayer::new()))
            .expect_err(&format!("the builder took the bad {field}"));
        let message = panic_message(panicked);
        assert!(
            message.starts_with("CircuitBreakerLayer::") && message.contains(&error.to_string()),
            "{message:?} does not carry {error}"
        );
    }
}

#[test]
fn values_at_the_edges_of_their_range_are_taken_both_ways() {
    let layer = CircuitBreakerLayer::new()
        .failure_threshold(1.0)
        .slow_call_threshold(1.0)
        .latency_threshold(Duration::from_nanos(1))
        .min_requests(1)
        .evaluation_window(20 * MS)
        .max_recovery_timeout(3600 * S)
        .recovery_timeout(3600 * S)
        .recovery_backoff(1.0)
        .backoff_reset(Duration::ZERO)
        .half_open_max_requests(1)
        .ramp_up_duration(Duration::ZERO)
        .ramp_up_floor(1.0)
        .ramp_up_aggression(100.0)
        .ramp_up_mode(RampUpMode::Time)
        .ramp_up_step(Duration::ZERO)
        .ramp_up_growth(100.0)
        .ramp_up_latency_tolerance(0.0)
        .failure_statuses([100, 999])
        .timeout(Duration::from_nanos(1))
        .max_keys(1);
    let config = layer.config();
    assert_eq!(config.recovery_timeout, 3600 * S);
    assert_eq!(config.max_recovery_timeout, 3600 * S);
    CircuitBreakerLayer::from_config(&config).expect("the builder's values are valid");
}

#[test]
fn builder_calls_panic_once_the_breaker_is_in_use() {
    let layer = CircuitBreakerLayer::new().generic();
    let handle = layer.handle();
    // Printing a handle leaves the breaker unmade.
    assert!(format!("{handle:?}").contains("in_use: false"));
    let layer = CircuitBreakerLayer::new().min_requests(4);
    let handle = layer.handle();
    assert_eq!(handle.state(), State::Closed, "the handle's use makes it");
    let panicked = catch_unwind(AssertUnwindSafe(|| layer.clone().min_requests(5)))
        .expect_err("configured a breaker in use");
    let message = panic_message(panicked);
    assert!(
        message.contains("CircuitBreakerLayer::min_requests called once the breaker is in use"),
        "{message}"
    );
    assert_eq!(layer.config().min_requests, 4, "unchanged");
    // A new classifier is no setting of the breaker: the generic form shares it.
    let generic = layer.generic();
    assert_eq!(generic.handle().snapshot().breaker.as_ref(), "default");
}

/// Without a runtime, on a clock moved by hand: the open time is the clock's, not the wall's.
#[test]
fn a_manual_clock_drives_the_breaker() {
    let manual = ManualClock::new();
    let layer = CircuitBreakerLayer::new()
        .clock(manual.clock())
        .min_requests(2)
        .recovery_timeout(10 * S)
        .half_open_max_requests(1)
        .ramp_up_duration(Duration::ZERO)
        .generic();
    let handle = layer.handle();
    let mut service = layer.layer(service_fn(|ok: bool| {
        std::future::ready(if ok { Ok(()) } else { Err("down") })
    }));
    let mut call = |ok: bool| {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(service.poll_ready(&mut cx).is_ready());
        match std::pin::pin!(service.call(ok)).poll(&mut cx) {
            std::task::Poll::Ready(result) => result,
            std::task::Poll::Pending => panic!("a ready service"),
        }
    };
    for _ in 0..2 {
        assert!(matches!(call(false), Err(BreakerError::Inner("down"))));
    }
    assert_eq!(handle.state(), State::Open);
    manual.advance(4 * S);
    match call(true) {
        Err(BreakerError::Open(Refusal { retry_after, state })) => {
            assert_eq!((retry_after, state), (6 * S, State::Open));
        }
        other => panic!("{other:?}"),
    }
    manual.advance(6 * S);
    assert!(call(true).is_ok(), "the probe");
    assert_eq!(handle.state(), State::Closed);
    manual.advance(S);
    assert_eq!(handle.snapshot().time_in_state_ms, 1_000);
}
