//! Rate limiting as a Tower layer: token bucket (governor's GCRA), leaky bucket (nginx
//! `limit_req`) and sliding window (exact log or two-counter approximation); keys by client
//! address (behind trusted proxies), user, API key, header, or one global key; over the limit,
//! 429 with `Retry-After` and the IETF `RateLimit` fields, a delay, or a dropped connection.
//!
//! **The default key, `ip`, needs the server to record each client's address**: serve axum
//! with `into_make_service_with_connect_info::<SocketAddr>()`, give a hyper service its peer
//! with [`RateLimit::with_peer`], or insert a [`ClientAddr`] into each request. Behind a plain
//! `axum::serve(listener, router)` no request has an address, and all of them share one bucket
//! (the [`missing_key`](RateLimitLayer::missing_key) default): the layer logs a warning the
//! first time and counts each such request as
//! [`no_client_address`](StatsSnapshot::no_client_address).
//!
//! From a configuration in the origin's names (its `rate_limit { algorithm token_bucket rate 10
//! per 1s burst 5 key ip reject 429 }`; JSON and TOML read the same, see [`RateLimitConfig`]):
//!
//! ```
//! use std::net::SocketAddr;
//! use axum::{body::Body, extract::ConnectInfo, routing::get, Router};
//! use http::{Request, StatusCode};
//! use proxflow_ratelimit::{RateLimitConfig, RateLimitLayer};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config: RateLimitConfig = serde_yaml::from_str(
//!     r#"
//! algorithm: token_bucket
//! rate: 10
//! per: 1s
//! burst: 5
//! key: ip
//! reject: 429
//! trusted_proxies: [10.0.0.0/8]
//! "#,
//! )?;
//! let limit = RateLimitLayer::from_config(&config)?; // a bad value names its field
//! let stats = limit.stats();
//! let app = Router::new().route("/", get(|| async { "hello" })).layer(limit);
//!
//! // What `into_make_service_with_connect_info` puts into each request:
//! let mut request = Request::new(Body::empty());
//! let client: SocketAddr = "192.0.2.1:40000".parse()?;
//! request.extensions_mut().insert(ConnectInfo(client));
//! let response = app.oneshot(request).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.headers()["ratelimit"], "\"default\";r=4;t=1");
//! assert_eq!(stats.snapshot().allowed, 1);
//! # Ok(())
//! # }
//! ```
//!
//! The same layer from the builder, served with each client's address:
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use proxflow_ratelimit::{Algorithm, Key, RateLimitLayer, Reject};
//!
//! # async fn run() -> std::io::Result<()> {
//! let limit = RateLimitLayer::new(10, Duration::from_secs(1))
//!     .burst(5)
//!     .algorithm(Algorithm::TokenBucket)
//!     .key(Key::Ip)
//!     .reject(Reject::TooManyRequests)
//!     .trusted_proxies(["10.0.0.0/8".parse().unwrap()]);
//! let app = Router::new().route("/", get(|| async { "hello" })).layer(limit);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
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
//! costs on the allowed path (benches/RESULTS.md).
//!
//! Memory is bounded: at most `max_keys` keys (default 1,000,000) for the whole layer, each a
//! 64-bit seeded hash of the client's key, idle keys dropped first. At the default bound the key
//! table takes about 34 bytes per key for the token and leaky buckets and 67 for the
//! sliding-window approximation, where nginx's `limit_req` zone takes 128; the exact sliding
//! window takes 67 plus its log on the heap, 8 bytes per request in the window, so prefer the
//! approximation for many keys. benches/RESULTS.md has the measurements.
//!
//! Time is read through the [`Clock`] the layer is given ([`RateLimitLayer::clock`]): by
//! default the CPU's time-stamp counter (through quanta, governor's default clock). Tests that
//! drive the limiter with tokio's paused time give it [`Clock::tokio`]; no cargo feature
//! changes the clock.
//!
//! ## Limits shared by several instances (feature `redis`)
//!
//! A `distributed` section (the origin's `distributed { redis { address localhost:6379
//! password secret  db 0 } }`) or `RateLimitLayer::redis` shares the limit through one Redis,
//! in one of two modes.
//!
//! **Exact** (the default): every decision is Redis's, one atomic round trip, a Lua script per
//! algorithm run on Redis's own clock (`TIME`), so the instances together admit the configured
//! limit whatever their clocks say, and the `RateLimit` fields and `Retry-After` are Redis's
//! figures. A request waits for that round trip (58 µs on this project's loopback, 0.2 µs for
//! a local decision), and one Redis core decides about 270,000 requests a second for all the
//! instances together (benches/RESULTS.md). Keys expire when their state equals a new key's; a
//! key costs Redis about 129 bytes for the buckets, 145 for the sliding-window approximation
//! and 257 for the exact log with one entry (measured over a million keys, Redis 7.0).
//!
//! While Redis cannot answer within the timeout (50 ms by default), requests get
//! [`OnUnavailable::FailOpen`] (the instance's own limiter decides; the default) or
//! [`OnUnavailable::FailClosed`] (503) at once, and a background task reconnects; the loss and
//! the return are logged once each.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use proxflow_ratelimit::{RateLimitConfig, RateLimitLayer};
//!
//! let config: RateLimitConfig = serde_yaml::from_str(
//!     r#"
//! rate: 100
//! per: 1s
//! burst: 20
//! key: api_key
//! distributed:
//!   redis: { address: "localhost:6379", password: secret, db: 0 }
//!   on_unavailable: fail_open
//!   timeout: 50ms
//! "#,
//! )?;
//! let limit = RateLimitLayer::from_config(&config)?;
//! # let _ = limit;
//! # Ok(())
//! # }
//! ```
//!
//! **Synced** (the origin's `sync_interval`; `RateLimitLayer::sync_interval`): every
//! decision is the instance's own, at the local limiter's cost, and every interval a
//! background task shares, in one pipelined round trip, what the instance admitted of each key
//! it had requests for lately, and adds what the others admitted to its own state. Between two
//! syncs the instances do not see each other's admissions, so together they may pass the
//! limit, by at most what the others can admit in two intervals (and two syncs' round trips)
//! each: with `n` instances and a token bucket,
//! `(n - 1) × (burst + rate × 2 × (sync_interval + round trip) / per)`, reached when a burst
//! of a new key hits every instance at once; an excess is paid back by refusals after it.
//! Under steady load the admissions stay within a few percent of the limit (three instances,
//! 200 a second, `sync_interval: 100ms`: tests/redis.rs). The `RateLimit` fields and
//! `Retry-After` are the instance's limiter's, over its state with the others' admissions in
//! it. While Redis is unavailable, decisions stay local and each key's admissions are kept
//! (bounded) and shared once it is back.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use proxflow_ratelimit::{RateLimitConfig, RateLimitLayer};
//!
//! let config: RateLimitConfig = serde_yaml::from_str(
//!     r#"
//! rate: 100
//! per: 1s
//! burst: 20
//! key: api_key
//! distributed:
//!   redis: { address: "localhost:6379" }
//!   sync_interval: 100ms
//! "#,
//! )?;
//! let limit = RateLimitLayer::from_config(&config)?;
//! # let _ = limit;
//! # Ok(())
//! # }
//! ```

mod algorithm;
mod config;
mod headers;
mod key;
mod layer;
mod limiter;
#[cfg(feature = "redis")]
mod remote;
mod service;
mod shared;
mod stats;
mod store;

pub use config::{
    Algorithm, DistributedConfig, LimitHeaders, MissingKey, OnUnavailable, Quota, RateLimitConfig,
    RedisConfig, Reject,
};
pub use key::{Key, KeyExtractor, RequestView, UserId};
pub use layer::RateLimitLayer;
pub use proxflow_core::{
    BoxError, ClientAddr, Clock, ConfigError, ConnectionDropped, ForwardedHeader, LayerBody,
    TrustedProxies,
};
/// The Redis client of [`RateLimitLayer::redis`], re-exported so that its version matches.
#[cfg(feature = "redis")]
pub use redis;
pub use service::{RateLimit, ResponseFuture};
pub use shared::RateLimited;
pub use stats::{Stats, StatsSnapshot};
