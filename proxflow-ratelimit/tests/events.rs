//! The layer's tracing events. Alone in this test binary: tracing caches per call site whether
//! any subscriber wants its events, and a test of another thread could fill that cache while
//! this one's subscriber is being installed.

mod common;

use std::time::Duration;

use common::*;
use proxflow_core::Clock;
use proxflow_ratelimit::{RateLimitLayer, Reject};

#[tokio::test(start_paused = true)]
async fn each_delayed_request_is_a_debug_event() {
    let messages = Messages::default();
    let _guard = tracing::subscriber::set_default(messages.clone());
    let layer = RateLimitLayer::new(10, Duration::from_secs(1))
        .clock(Clock::tokio())
        .burst(1)
        .reject(Reject::Delay);
    let app = app(layer);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut request = Box::pin(send(&app, from("192.0.2.1")));
        if poll_once(&mut request).await.is_none() {
            held.push(request);
        }
    }
    assert_eq!(held.len(), 2);
    let messages: Vec<String> = messages.take().into_iter().map(|(_, m)| m).collect();
    assert_eq!(
        messages,
        ["rate limited: delaying", "rate limited: delaying"],
        "one event per held request, none for the one allowed"
    );
}
