//! Static files as a Tower layer: what nginx does for a `location /static/`, with Kalgan-style
//! asset versioning, in any axum or hyper service.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use proxflow_static::{AssetVersion, StaticLayer};
//!
//! # async fn run() {
//! let statics = StaticLayer::new("/static", "public")
//!     .prod(true)
//!     .version(AssetVersion::Query("v001".into()));
//! // In a template: {{ "/vendor/jquery.min.js" | asset }} -> /static/vendor/jquery.min.js?v001
//! let assets = statics.assets();
//! assert_eq!(assets.url("/vendor/jquery.min.js"), "/static/vendor/jquery.min.js?v001");
//!
//! let app = Router::new().route("/", get(|| async { "home" })).layer(statics);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```
//!
//! What the layer does:
//! - GET and HEAD under the mount prefix; other methods get 405 with `Allow` (or pass on, see
//!   [`StaticLayer::pass_other_methods`]); every other path goes to the inner service untouched.
//! - Strong `ETag` and `Last-Modified`, the RFC 9110 precondition order (`If-Match`,
//!   `If-Unmodified-Since`, `If-None-Match`, `If-Modified-Since`, `If-Range`), single and
//!   multiple byte ranges, 416 for unsatisfiable ones.
//! - `Content-Type` from the extension with `charset=utf-8` on text, `X-Content-Type-Options: nosniff`.
//! - `.br`, `.zst` and `.gz` siblings by `Accept-Encoding` q-values, with `Vary: Accept-Encoding`;
//!   in production, compressible files without a sibling are compressed once and kept.
//! - Directories: `index.html`, a redirect that adds the slash, an opt-in listing (HTML or JSON).
//! - SPA fallback and a custom 404 page.
//! - Development mode: `Cache-Control: no-cache` and the disk read on every request. Production
//!   mode: metadata and files up to [`StaticConfig::cache_max_file_size`] in a byte-bounded memory
//!   cache (64 MiB by default; larger files are streamed), checked against the disk at most
//!   [`StaticConfig::revalidate_interval`] apart, and `public, max-age=31536000, immutable` for
//!   versioned URLs.
//!
//! Bad input: a path with `..`, an encoded separator, a backslash, NUL, a drive letter or double
//! encoding gets `400 invalid path`; dotfiles (but `/.well-known/`) and symlinks leaving the folder
//! get 404; read errors get 403 or 500 and a log line. Request bodies are never read.

mod assets;
mod body;
mod cache;
mod conditional;
mod config;
mod encoding;
mod entry;
mod fingerprint;
mod layer;
mod listing;
mod lookup;
mod mount;
mod path;
mod range;
mod respond;
mod service;
mod stats;

pub use assets::{AssetManifest, AssetVersion, Assets};
pub use body::FileBody;
pub use config::StaticConfig;
pub use encoding::Encoding;
pub use layer::StaticLayer;
pub use proxflow_core::ConfigError;
pub use service::{ResponseFuture, ServeStatic, Static, StaticFuture};
pub use stats::{Stats, StatsSnapshot};
