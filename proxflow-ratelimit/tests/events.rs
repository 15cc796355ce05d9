//! The layer's tracing events. Alone in this test binary: tracing caches per call site whether
//! any subscriber wants its events, and a test of another thread could fill that cache while
//! this one's subscriber is being installed.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use proxflow_ratelimit::{RateLimitLayer, Reject};

/// Messages of the debug and higher events of the thread it is the default of.
#[derive(Clone, Default)]
struct Messages(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Messages {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Message<'a>(&'a mut String);
        impl tracing::field::Visit for Message<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    *self.0 = format!("{value:?}");
                }
            }
        }
        if *event.metadata().level() > tracing::Level::DEBUG {
            return;
        }
        let mut message = String::new();
        event.record(&mut Message(&mut message));
        self.0.lock().unwrap().push(message);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(start_paused = true)]
async fn each_delayed_request_is_a_debug_event() {
    let messages = Messages::default();
    let _guard = tracing::subscriber::set_default(messages.clone());
    let layer = RateLimitLayer::new(10, Duration::from_secs(1))
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
    let messages = messages.0.lock().unwrap().clone();
    assert_eq!(
        messages,
        ["rate limited: delaying", "rate limited: delaying"],
        "one event per held request, none for the one allowed"
    );
}
