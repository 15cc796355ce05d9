//! Rate limiting as a Tower layer: token bucket (governor's GCRA), leaky bucket (nginx
//! `limit_req`) and sliding window (exact log or two-counter approximation); keys by client
//! address (behind trusted proxies), user, API key, header, or one global key; over the limit,
//! 429 with `Retry-After` and the IETF `RateLimit` fields, a delay, or a dropped connection.
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use proxflow_ratelimit::{Algorithm, RateLimitLayer};
//!
//! # async fn run() {
//! let limit = RateLimitLayer::new(10, Duration::from_secs(1))
//!     .burst(5)
//!     .algorithm(Algorithm::TokenBucket)
//!     .trusted_proxies(["10.0.0.0/8"])
//!     .unwrap();
//! let app = Router::new().route("/", get(|| async { "hello" })).layer(limit);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//! // ConnectInfo gives the layer each client's address.
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
//!     .await
//!     .unwrap();
//! # }
//! ```
//!
//! Outside axum, a hyper server that makes a service per connection gives it the client's
//! address with [`RateLimit::with_peer`]: `layer.layer(service).with_peer(peer)`. The `ip` key
//! is then hashed once per connection, and requests need no [`ClientAddr`] tag (which costs
//! three allocations per request).
//!
//! Every answer carries `RateLimit-Policy` and `RateLimit` by default (`headers: always`);
//! `headers: limited` puts them on 429s only, `never` on none. They are most of what the layer
//! costs on the allowed path: inserting the two fields into a response alone costs about as
//! much as governor's whole check (benches/RESULTS.md).
//!
//! Memory is bounded: at most `max_keys` keys (default 1,000,000) for the whole layer, each a
//! 64-bit seeded hash of the client's key, idle keys dropped first. The key table, per key of
//! `max_keys` at the default bound (with `max_keys(100_000)` in brackets), measured with 1.2
//! times as many distinct client addresses as keys, one request each, where nginx's
//! `limit_req` zone takes 128 bytes:
//!
//! - token and leaky bucket: 34 bytes (42); tests/memory.rs checks it with 2,000,000 clients;
//! - sliding-window approximation: 67 bytes (82);
//! - exact sliding window: 67 bytes of table, plus its log on the heap, 8 bytes per request in
//!   the window: with one request per key the process grew by 108-114 bytes per key (three
//!   runs), more with more requests in the window. Prefer the approximation for many keys.
//!
//! Time is the CPU's time-stamp counter (through quanta, governor's default clock), about half
//! the cost of `Instant::now` on the benchmark machine. Tests that drive the limiter with
//! tokio's paused time (`tokio::time::pause`, `advance`, `start_paused`) enable the
//! `test-util` feature, which makes it read tokio's clock:
//!
//! ```toml
//! [dev-dependencies]
//! proxflow-ratelimit = { version = "*", features = ["test-util"] }
//! ```
//!
//! Not here yet: the Redis-backed mode for limits shared by several instances (a later issue).

mod algorithm;
mod body;
mod client_ip;
mod clock;
mod config;
mod error;
mod headers;
mod key;
mod layer;
mod limiter;
mod service;
mod stats;
mod store;

pub use body::{BoxError, ConnectionDropped, RateLimitBody};
pub use client_ip::{ForwardedHeader, TrustedProxies};
pub use config::{Algorithm, LimitHeaders, MissingKey, RateLimitConfig, Reject};
pub use error::ConfigError;
pub use key::{ClientAddr, KeyExtractor, RequestView, UserId};
pub use layer::{Quota, RateLimitLayer};
pub use service::{RateLimit, RateLimited, ResponseFuture};
pub use stats::{Stats, StatsSnapshot};
