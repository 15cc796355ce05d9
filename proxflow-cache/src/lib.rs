//! An RFC 9111 shared HTTP cache as a Tower layer.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use http::{Request, Response};
//! use proxflow_cache::CacheLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Infallible> {
//! let cache = CacheLayer::new();
//! let stats = cache.stats();
//! let origin = tower::service_fn(|_: Request<String>| async {
//!     Ok::<_, Infallible>(
//!         Response::builder()
//!             .header("cache-control", "max-age=60")
//!             .body(http_body_util::Full::new(bytes::Bytes::from("hello")))
//!             .unwrap(),
//!     )
//! });
//! let service = ServiceBuilder::new().layer(cache).service(origin);
//! for _ in 0..3 {
//!     let request = Request::get("http://example.com/").body(String::new()).unwrap();
//!     let response = service.clone().oneshot(request).await?;
//!     let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap();
//!     assert_eq!(body.to_bytes(), "hello");
//! }
//! assert_eq!((stats.snapshot().misses, stats.snapshot().hits), (1, 2));
//! # Ok(()) }
//! ```
//!
//! What holds today:
//!
//! - **Storage** (RFC 9111 §3): GET responses with a status this cache understands, unless
//!   `no-store` (on either side; `must-understand` overrides the response's), `private`,
//!   `Authorization` without `public`/`s-maxage`/`must-revalidate`, `Set-Cookie` without
//!   `public`/`s-maxage`, or `Vary: *`. `private="field"` stores without the field. The store
//!   is bounded in bytes ([`CacheConfig::max_size`]); a body larger than
//!   [`CacheConfig::max_object_size`] streams through unstored, and a body that fails midway
//!   is not stored.
//! - **Freshness** (§4.2): `s-maxage`, `max-age`, `Expires` − `Date`, else
//!   [`CacheConfig::ttl`] for a heuristically cacheable status; the age of §4.2.3 from `Date`,
//!   `Age` and the exchange's times; `Age` on every stored answer.
//! - **Reuse** (§4.2.4, §5.2.1): the request's `max-age`, `min-fresh`, `max-stale`,
//!   `no-cache` (and `Pragma: no-cache` alone), `only-if-cached` (504 when nothing usable);
//!   the response's `no-cache`, `must-revalidate`, `proxy-revalidate`, `s-maxage`. `Vary`:
//!   up to 16 variants per URI, selected by the request's header values.
//! - **Validation** (§4.3): a stale or `no-cache` response is revalidated with its
//!   `ETag`/`Last-Modified`; a 304 merges its headers in and restarts the age; a client's own
//!   conditional GET or HEAD is answered 304 from the store; HEAD is answered from a stored
//!   GET.
//! - **Stale content** (RFC 5861): `stale-while-revalidate` answers stale and revalidates in
//!   the background, one revalidation per key at a time; `stale-if-error` answers stale when
//!   the origin fails (a 5xx or an error).
//! - **Invalidation** (§4.4): a successful unsafe method invalidates its target and the
//!   same-origin `Location` and `Content-Location`.
//! - **Several instances** (feature `redis`, [`CacheLayer::distributed_sync`]): these
//!   invalidations and the webhook's reach every instance through Redis pub/sub, and an
//!   instance drops what it stored before a lost connection when it returns (module `sync`);
//!   optionally, a second level of stored responses shared in Redis (`shared_store`), where
//!   a miss on one instance can be a hit from another's store (`Cache-Status: hit;
//!   detail=shared`).
//! - **`Cache-Status`** (RFC 9211) on every answer: `hit` with the `ttl` left (negative when
//!   stale), or `fwd=uri-miss|vary-miss|stale|method` with `fwd-status`, `stored` or the
//!   reason it was not stored.
//! - **Coalescing**: concurrent GETs that need the origin for one key make one origin
//!   request; the others wait for its answer (at most [`CacheConfig::coalesce_wait`], 5 s),
//!   are answered from the store (`Cache-Status: hit; collapsed`), or make their own request
//!   when the answer was not stored for them.
//!
//! - **Webhook** ([`webhook`]): `POST <webhook_path>` invalidates by key, path pattern
//!   (an ordered index, not a scan) or `Surrogate-Key` tag, and edits stored JSON bodies in
//!   place (`partial_update`); authenticated by a bearer token or an HMAC-SHA256 signature
//!   unless turned off in writing; RFC 9457 problems for refused calls.
//!
//! - **Faults**: an origin whose answer does not come within
//!   [`CacheConfig::origin_timeout`] (60 s) gets the stale copy (`stale-if-error`) or a 504;
//!   a body that fails midway reaches the client as the failure and is not stored.
//!
//! - **Figures**: [`CacheStats::snapshot`] (hits, misses, stale answers, revalidations,
//!   stores, coalesced waits, evictions, invalidations, entries and bytes); with the
//!   `metrics` feature, `proxflow_cache_events_total{event}`.
//!
//! - **Predictive warming** ([`CacheConfig::predictive_warming`], off by default): each GET
//!   teaches [`warming`] how often its key is requested and what the same client asks for
//!   next; the layer refreshes, ahead of expiry, the entries worth it, and fetches (or
//!   revalidates) what tends to follow a request, in the background, at most 8 at a time and
//!   within warming's origin budget. The snapshot counts refreshes and prefetches, and how
//!   many were used.
//!
//! Not done: range requests (a stored 200 answers a `Range` request whole; 206 answers are
//! not stored), and one target of issue 19's warming evaluation (halving the expiry misses
//! of a Zipf workload at +10% origin requests), which no policy that cannot see the future
//! reaches (benches/RESULTS.md has the bound).
//!
//! The layer runs on tokio: the origin's timeout uses its timer and a background revalidation
//! is a task of its runtime. The request body type must implement `Default`: a background
//! revalidation sends an empty one.

mod body;
mod coalesce;
mod config;
mod directives;
mod index;
mod layer;
mod policy;
mod service;
#[cfg(feature = "redis")]
mod shared_store;
mod stats;
mod store;
#[cfg(feature = "redis")]
pub mod sync;
mod warm;
pub mod warming;
pub mod webhook;

pub use body::CacheBody;
pub use config::{CacheConfig, DistributedSyncConfig, SharedStoreConfig, WebhookAuth};
pub use layer::CacheLayer;
pub use proxflow_core::{Clock, ConfigError};
pub use service::Cache;
pub use stats::{CacheSnapshot, CacheStats};
