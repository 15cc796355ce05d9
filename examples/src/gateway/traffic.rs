//! The gateway's own figures of the traffic it serves: requests, errors (5xx) and requests in
//! flight, counted by a middleware around every route.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;

/// The counters, shared by the middleware and the dashboard.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicU64,
}

/// The figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TrafficSnapshot {
    /// Requests answered since the start.
    pub requests: u64,
    /// Of which with a 5xx status.
    pub errors: u64,
    /// Requests being answered now.
    pub in_flight: u64,
}

impl Traffic {
    /// The figures now.
    pub fn snapshot(&self) -> TrafficSnapshot {
        let counters = &self.counters;
        TrafficSnapshot {
            requests: counters.requests.load(Ordering::Relaxed),
            errors: counters.errors.load(Ordering::Relaxed),
            in_flight: counters.in_flight.load(Ordering::Relaxed),
        }
    }
}

/// The middleware (`axum::middleware::from_fn_with_state(traffic, record)`).
pub async fn record(State(traffic): State<Traffic>, request: Request, next: Next) -> Response {
    let counters = &traffic.counters;
    counters.in_flight.fetch_add(1, Ordering::Relaxed);
    let response = next.run(request).await;
    counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    counters.requests.fetch_add(1, Ordering::Relaxed);
    if response.status().is_server_error() {
        counters.errors.fetch_add(1, Ordering::Relaxed);
    }
    response
}
