//! Static files as a Tower layer: what nginx does for a `location /static/`, with Kalgan-style
//! asset versioning, in any axum or hyper service.
//!
//! # From a configuration file
//!
//! [`StaticConfig`] reads the `static` section of a Kalgan settings file as it is
//! (`static.path`, `static.folders`, `static.version`); [`StaticLayer::from_config`] checks it
//! and returns a [`ConfigError`] naming the field it refuses:
//!
//! ```
//! use axum::{routing::get, Router};
//! use proxflow_static::{StaticConfig, StaticLayer};
//! use tower::ServiceExt;
//!
//! #[derive(serde::Deserialize)]
//! struct Settings {
//!     environment: Environment,
//!     #[serde(rename = "static")]
//!     statics: StaticConfig,
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct Environment {
//!     is_prod: bool,
//! }
//!
//! const SETTINGS: &str = "
//! environment:
//!   is_prod: true
//! static:
//!   path: /static
//!   folders: [public]
//!   version: v001
//! ";
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let site = tempfile::tempdir()?;
//! # std::env::set_current_dir(site.path())?;
//! # std::fs::create_dir_all("public/vendor")?;
//! # std::fs::write("public/vendor/jquery.min.js", "/*! jQuery */")?;
//! let mut settings: Settings = serde_yaml::from_str(SETTINGS)?;
//! settings.statics.is_prod = settings.environment.is_prod;
//! let statics = StaticLayer::from_config(&settings.statics)?;
//!
//! // In a template: {{ "/vendor/jquery.min.js" | asset }}
//! let url = statics.assets().url("/vendor/jquery.min.js");
//! assert_eq!(url, "/static/vendor/jquery.min.js?v001");
//!
//! let app = Router::new().route("/", get(|| async { "home" })).layer(statics);
//! let request = http::Request::get(url).body(axum::body::Body::empty())?;
//! let response = app.oneshot(request).await?;
//! assert_eq!(response.headers()["cache-control"], "public, max-age=31536000, immutable");
//! # Ok(())
//! # }
//! ```
//!
//! # With the builder
//!
//! The same layer in code. Builder methods take typed values and panic at the call on a value
//! the layer cannot run with (each says when under `# Panics`):
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use proxflow_static::{AssetVersion, StaticLayer};
//!
//! # async fn run() {
//! let statics = StaticLayer::new("/static", "public")
//!     .prod(true)
//!     .version(AssetVersion::Query("v001".into()));
//! let assets = statics.assets();
//! assert_eq!(assets.url("/vendor/jquery.min.js"), "/static/vendor/jquery.min.js?v001");
//!
//! let app = Router::new().route("/", get(|| async { "home" })).layer(statics);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```
//!
//! # In a router
//!
//! - As a layer (`Router::layer`, `ServiceBuilder::layer`): requests under the mount prefix
//!   are answered from the folders, the others go to the inner service.
//! - As a service ([`StaticLayer::into_service`], [`ServeStatic`]): in axum's
//!   `fallback_service`, or in `nest_service` under the layer's own mount prefix
//!   (`nest_service("/static", StaticLayer::new("/static", ..).into_service())`). axum removes
//!   the prefix before the service sees the path; with the `axum` feature (on by default) the
//!   layer reads where it was nested and matches the path the client sent, so the URLs that
//!   [`Assets`] renders are the ones it serves.
//!
//! # What the layer does
//!
//! - GET and HEAD under the mount prefix; other methods get 405 with `Allow` (or pass on, see
//!   [`StaticLayer::pass_other_methods`]); every other path goes to the inner service untouched.
//! - Strong `ETag` and `Last-Modified`, the RFC 9110 precondition order (`If-Match`,
//!   `If-Unmodified-Since`, `If-None-Match`, `If-Modified-Since`, `If-Range`), single and
//!   multiple byte ranges, 416 for unsatisfiable ones.
//! - `Content-Type` from the extension with `charset=utf-8` on text, `X-Content-Type-Options: nosniff`.
//! - `.br`, `.zst` and `.gz` siblings by `Accept-Encoding` q-values, with `Vary: Accept-Encoding`;
//!   in production, compressible files without a sibling are compressed once and kept, and in
//!   development with [`StaticLayer::compress_in_development`] on each request; each coding has
//!   its own `ETag`, and several ranges are always taken from the identity file.
//! - Directories: `index.html`, a redirect that adds the slash, an opt-in listing (HTML or JSON).
//! - SPA fallback and a custom 404 page.
//! - Development mode: `Cache-Control: no-cache` and the disk read on every request. Production
//!   mode: metadata and files up to [`StaticConfig::cache_max_file_size`] in a byte-bounded memory
//!   cache (64 MiB by default; larger files are streamed), checked against the disk at most
//!   [`StaticConfig::revalidate_interval`] apart (as the layer's [`clock`](StaticLayer::clock)
//!   tells), and `public, max-age=31536000, immutable` for versioned URLs. A check compares
//!   the size and modification time of the file and of each of its siblings on its own, so a
//!   changed, new or deleted sibling is noticed like a changed file; an edit that keeps both
//!   is noticed only with [`StaticConfig::revalidate_by_content`], which reads and hashes each
//!   file held in memory at every check. Streamed files are checked on every request.
//!
//! # Bad input
//!
//! A path with `..`, an encoded separator, a backslash, NUL, a drive letter or double
//! encoding gets `400 invalid path`. Browsers never send these, so the layer refuses them
//! outright rather than repairing them into something that might still leave the folder on
//! some platform. Dotfiles (but `/.well-known/`) and symlinks leaving the folder get 404; read
//! errors get 403 or 500 and a log line. Request bodies are never read.

mod assets;
mod body;
mod cache;
mod conditional;
mod config;
mod confine;
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
