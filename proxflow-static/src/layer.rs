//! [`StaticLayer`] and its builder.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tower_layer::Layer;

use crate::assets::{AssetManifest, AssetVersion, Assets};
use crate::config::StaticConfig;
use crate::error::ConfigError;
use crate::service::{ServeStatic, Shared, Static};
use crate::stats::Stats;

/// Serves files under a mount prefix and passes every other request to the inner service.
///
/// Cheap to clone; clones share one memory cache and one set of counters. Builder methods
/// state their defaults, which are those of [`StaticConfig`].
#[derive(Clone)]
pub struct StaticLayer {
    config: StaticConfig,
    manifest: Option<AssetManifest>,
    /// Built on first use, so that builder calls stay cheap and all services share it.
    shared: Arc<OnceLock<Arc<Shared>>>,
}

impl StaticLayer {
    /// Serves `folder` under the URL prefix `mount` (`"/static"`), in development mode.
    pub fn new(mount: impl Into<String>, folder: impl Into<PathBuf>) -> Self {
        let config = StaticConfig {
            path: mount.into(),
            folders: vec![folder.into()],
            ..StaticConfig::default()
        };
        StaticLayer {
            config,
            manifest: None,
            shared: Arc::default(),
        }
    }

    /// A layer from a checked configuration; loads the manifest it names.
    pub fn from_config(config: &StaticConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let manifest = config
            .manifest
            .as_ref()
            .map(AssetManifest::load)
            .transpose()?;
        Ok(StaticLayer {
            config: config.clone(),
            manifest,
            shared: Arc::default(),
        })
    }

    fn with(mut self, change: impl FnOnce(&mut StaticConfig)) -> Self {
        change(&mut self.config);
        self.shared = Arc::default();
        self
    }

    /// Production mode (Kalgan `is_prod`): memory cache, versioned URLs cached for a year,
    /// in-memory compression. Default: off (development: `no-cache`, every request reads the disk).
    pub fn prod(self, prod: bool) -> Self {
        self.with(|c| c.is_prod = prod)
    }

    /// How asset URLs carry a version in production. Default [`AssetVersion::None`].
    pub fn version(self, version: AssetVersion) -> Self {
        self.with(|c| match version {
            AssetVersion::None => (c.version, c.content_hash) = (None, false),
            AssetVersion::Query(query) => (c.version, c.content_hash) = (Some(query), false),
            AssetVersion::ContentHash => (c.version, c.content_hash) = (None, true),
        })
    }

    /// A manifest of content-hashed names, built with [`AssetManifest::build`]. Default: none
    /// (hashes are computed when a URL is first rendered).
    pub fn manifest(mut self, manifest: AssetManifest) -> Self {
        self.manifest = Some(manifest);
        self.shared = Arc::default();
        self
    }

    /// Another folder, searched after the ones before it. Default: only the folder of `new`.
    pub fn folder(self, folder: impl Into<PathBuf>) -> Self {
        self.with(|c| c.folders.push(folder.into()))
    }

    /// Serve `index.html` for missing paths without an extension. Default: off.
    pub fn spa(self, spa: bool) -> Self {
        self.with(|c| c.spa = spa)
    }

    /// Path prefixes that never get the SPA fallback, compared with the full request path.
    /// Default `["/api"]`.
    pub fn spa_exclude<I: IntoIterator<Item = S>, S: Into<String>>(self, prefixes: I) -> Self {
        self.with(|c| c.spa_exclude = prefixes.into_iter().map(Into::into).collect())
    }

    /// The file served for a directory. Default `index.html`.
    pub fn index(self, name: impl Into<String>) -> Self {
        self.with(|c| c.index = name.into())
    }

    /// List directories that have no index, as HTML or as JSON for `Accept: application/json`.
    /// Default: off.
    pub fn listing(self, listing: bool) -> Self {
        self.with(|c| c.listing = listing)
    }

    /// A page, relative to the folders, sent with status 404. Default: `not found` as text.
    pub fn not_found_page(self, page: impl Into<PathBuf>) -> Self {
        self.with(|c| c.not_found_page = Some(page.into()))
    }

    /// Serve `.br`, `.zst` and `.gz` siblings. Default: on.
    pub fn precompressed(self, on: bool) -> Self {
        self.with(|c| c.precompressed = on)
    }

    /// In production, compress compressible files once in memory. Default: on.
    pub fn compress(self, on: bool) -> Self {
        self.with(|c| c.compress = on)
    }

    /// Bytes the production memory cache may hold. Default 64 MiB.
    pub fn cache_max_bytes(self, bytes: u64) -> Self {
        self.with(|c| c.cache_max_bytes = bytes)
    }

    /// Larger files are streamed from disk instead of cached. Default 1 MiB.
    pub fn cache_max_file_size(self, bytes: u64) -> Self {
        self.with(|c| c.cache_max_file_size = bytes)
    }

    /// How stale cached metadata may get before the file is checked again. Default 1 s.
    pub fn revalidate_interval(self, interval: Duration) -> Self {
        self.with(|c| c.revalidate_interval = interval)
    }

    /// `Cache-Control: public, max-age` for unversioned URLs in production. Default: `no-cache`.
    pub fn unversioned_max_age(self, age: Duration) -> Self {
        self.with(|c| c.unversioned_max_age = Some(age))
    }

    /// Serve symlinks that resolve outside the folder. Default: off.
    pub fn follow_symlinks_outside(self, on: bool) -> Self {
        self.with(|c| c.follow_symlinks_outside = on)
    }

    /// Serve dotfiles (`/.well-known/` is served either way). Default: off.
    pub fn dotfiles(self, on: bool) -> Self {
        self.with(|c| c.dotfiles = on)
    }

    /// Pass methods other than GET and HEAD to the inner service instead of 405. Default: off.
    pub fn pass_other_methods(self, on: bool) -> Self {
        self.with(|c| c.pass_other_methods = on)
    }

    /// Pass requests for missing files to the inner service instead of 404. Default: off.
    pub fn fallthrough(self, on: bool) -> Self {
        self.with(|c| c.fallthrough = on)
    }

    /// Ranges allowed in one request before the whole file is sent instead. Default 16.
    pub fn max_ranges(self, max: usize) -> Self {
        self.with(|c| c.max_ranges = max)
    }

    /// The configuration as built so far.
    pub fn config(&self) -> &StaticConfig {
        &self.config
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(
            self.shared
                .get_or_init(|| Arc::new(Shared::new(self.config.clone(), self.manifest.clone()))),
        )
    }

    /// Renders asset URLs the way this layer serves them (for templates).
    pub fn assets(&self) -> Assets {
        self.shared().assets.clone()
    }

    /// Counters of this layer and every service it made.
    pub fn stats(&self) -> Stats {
        Stats {
            shared: self.shared(),
        }
    }

    /// The file service alone, answering 404 outside the mount prefix; for an axum
    /// `fallback_service`.
    pub fn into_service(self) -> ServeStatic {
        ServeStatic {
            shared: self.shared(),
        }
    }
}

impl<S> Layer<S> for StaticLayer {
    type Service = Static<S>;

    fn layer(&self, inner: S) -> Static<S> {
        Static::new(inner, self.shared())
    }
}

impl std::fmt::Debug for StaticLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticLayer")
            .field("config", &self.config)
            .finish()
    }
}
