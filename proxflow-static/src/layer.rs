//! [`StaticLayer`] and its builder.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proxflow_core::{Clock, ConfigError};
use tower_layer::Layer;

use crate::assets::{AssetManifest, AssetSettings, AssetVersion, Assets};
use crate::cache::MemoryCache;
use crate::config::{check, StaticConfig};
use crate::service::{ServeStatic, Shared, Static};
use crate::stats::{Counters, Stats};

/// Serves files under a mount prefix and passes every other request to the inner service.
///
/// Cheap to clone; clones share one memory cache and one set of counters. Builder methods
/// state their defaults, which are those of [`StaticConfig`]; a value the layer cannot run
/// with panics at the call, as each method's `# Panics` says. Untrusted values go through
/// [`StaticLayer::from_config`], which returns a [`ConfigError`] instead.
///
/// # Handles
///
/// [`stats`](StaticLayer::stats) and [`assets`](StaticLayer::assets) return handles on the
/// layer's state, which builder calls keep: a handle taken first sees what the layer serves
/// once configured.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use proxflow_static::{AssetVersion, StaticLayer};
/// # let dir = tempfile::tempdir().unwrap();
/// # std::fs::write(dir.path().join("app.js"), "let a;").unwrap();
/// # let folder = dir.path();
///
/// let layer = StaticLayer::new("/static", folder);
/// let (stats, assets) = (layer.stats(), layer.assets());
/// let layer = layer.prod(true).version(AssetVersion::Query("v001".into()));
/// assert_eq!(assets.url("/app.js"), "/static/app.js?v001");
/// # use tower::ServiceExt;
/// # let request = http::Request::get("/static/app.js").body(()).unwrap();
/// # layer.into_service().oneshot(request).await.unwrap();
/// assert_eq!(stats.snapshot().ok, 1);
/// # }
/// ```
///
/// The state is fixed once the layer has made a service, or the assets handle has rendered a
/// URL: a builder call after that, or on a layer that has clones, starts a new state for the
/// new configuration, so that services already made keep theirs.
#[derive(Clone)]
pub struct StaticLayer {
    config: StaticConfig,
    manifest: Option<AssetManifest>,
    clock: Clock,
    state: Arc<State>,
    /// Held by this layer and its clones, not by the handles: tells whether a builder call
    /// would change the state under a clone.
    owners: Arc<()>,
}

/// What a layer's handles and services share.
struct State {
    counters: Arc<Counters>,
    /// The memory cache, once a service in production mode has made it.
    cache: Arc<OnceLock<MemoryCache>>,
    assets: Assets,
    /// Made by the first service.
    built: OnceLock<Arc<Shared>>,
}

impl State {
    fn new(assets: AssetSettings) -> Self {
        State {
            counters: Arc::default(),
            cache: Arc::default(),
            assets: Assets::open(assets),
            built: OnceLock::new(),
        }
    }
}

/// Checks a builder value with the rule [`StaticConfig::validate`] applies to its field.
#[track_caller]
fn require(method: &str, check: Result<(), String>) {
    if let Err(reason) = check {
        panic!("StaticLayer::{method}: {reason}");
    }
}

impl StaticLayer {
    /// Serves `folder` under the URL prefix `mount` (`"/static"`), in development mode.
    ///
    /// A folder that cannot be opened is logged once, when the first service is made, and its
    /// files answer 404 (the folder may appear later); [`StaticLayer::from_config`] refuses it.
    ///
    /// # Panics
    ///
    /// If `mount` does not start with `/` or holds `?`, `#` or `\`.
    #[track_caller]
    pub fn new(mount: impl Into<String>, folder: impl Into<PathBuf>) -> Self {
        let mount = mount.into();
        require("new", check::mount(&mount));
        let config = StaticConfig {
            path: mount,
            folders: vec![folder.into()],
            ..StaticConfig::default()
        };
        StaticLayer::with_config(config, None)
    }

    /// A layer from a configuration read from a file: checks every field
    /// ([`StaticConfig::validate`]) and loads the manifest it names.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field the layer cannot run with: `folders` for a
    /// folder that cannot be opened, `manifest` for a manifest that cannot be read or parsed.
    pub fn from_config(config: &StaticConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let manifest = config
            .manifest
            .as_ref()
            .map(AssetManifest::load)
            .transpose()?;
        Ok(StaticLayer::with_config(config.clone(), manifest))
    }

    fn with_config(config: StaticConfig, manifest: Option<AssetManifest>) -> Self {
        let assets = asset_settings(&config, manifest.as_ref());
        StaticLayer {
            config,
            manifest,
            clock: Clock::default(),
            state: Arc::new(State::new(assets)),
            owners: Arc::new(()),
        }
    }

    /// Applies a builder change, keeping the state when no service or clone depends on it.
    fn with(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        let alone = Arc::strong_count(&self.owners) == 1;
        let settings = asset_settings(&self.config, self.manifest.as_ref());
        let kept =
            alone && self.state.built.get().is_none() && self.state.assets.reconfigure(settings);
        if !kept {
            let settings = asset_settings(&self.config, self.manifest.as_ref());
            self.state = Arc::new(State::new(settings));
            self.owners = Arc::new(());
        }
        self
    }

    /// Production mode (Kalgan `is_prod`): memory cache, versioned URLs cached for a year,
    /// in-memory compression. Default: off (development: `no-cache`, every request reads the disk).
    pub fn prod(self, prod: bool) -> Self {
        self.with(|layer| layer.config.is_prod = prod)
    }

    /// How asset URLs carry a version in production. Default [`AssetVersion::None`].
    ///
    /// # Panics
    ///
    /// If an [`AssetVersion::Query`] is empty or holds anything but ASCII letters, digits and
    /// `-._~=` (it goes into URLs unescaped).
    #[track_caller]
    pub fn version(self, version: AssetVersion) -> Self {
        if let AssetVersion::Query(query) = &version {
            require("version", check::version(query));
        }
        self.with(|layer| {
            let c = &mut layer.config;
            match version {
                AssetVersion::None => (c.version, c.content_hash) = (None, false),
                AssetVersion::Query(query) => (c.version, c.content_hash) = (Some(query), false),
                AssetVersion::ContentHash => (c.version, c.content_hash) = (None, true),
            }
        })
    }

    /// A manifest of content-hashed names, built with [`AssetManifest::build`]. Default: none
    /// (hashes are computed when a URL is first rendered).
    pub fn manifest(self, manifest: AssetManifest) -> Self {
        self.with(|layer| layer.manifest = Some(manifest))
    }

    /// Another folder, searched after the ones before it. Default: only the folder of `new`.
    pub fn folder(self, folder: impl Into<PathBuf>) -> Self {
        self.with(|layer| layer.config.folders.push(folder.into()))
    }

    /// Serve `index.html` for missing paths that look like client-side routes (Caflax `--spa`):
    /// the last segment has no extension (`/small.txt/` counts as `small.txt`) and no segment
    /// starts with a dot (`/.well-known/...`), except under
    /// [`spa_exclude`](StaticLayer::spa_exclude). Other missing paths are 404. Default: off.
    pub fn spa(self, spa: bool) -> Self {
        self.with(|layer| layer.config.spa = spa)
    }

    /// Path prefixes that never get the SPA fallback, compared with the full request path.
    /// Default `["/api"]`.
    ///
    /// # Panics
    ///
    /// If a prefix does not start with `/`.
    #[track_caller]
    pub fn spa_exclude<I: IntoIterator<Item = S>, S: Into<String>>(self, prefixes: I) -> Self {
        let prefixes: Vec<String> = prefixes.into_iter().map(Into::into).collect();
        for prefix in &prefixes {
            require("spa_exclude", check::spa_exclude(prefix));
        }
        self.with(|layer| layer.config.spa_exclude = prefixes)
    }

    /// The file served for a directory. Default `index.html`.
    ///
    /// # Panics
    ///
    /// If `name` is empty or holds `/` or `\`.
    #[track_caller]
    pub fn index(self, name: impl Into<String>) -> Self {
        let name = name.into();
        require("index", check::index(&name));
        self.with(|layer| layer.config.index = name)
    }

    /// List directories that have no index, as Caflax does: HTML, or JSON for
    /// `Accept: application/json` (`{"path", "entries": [{"name", "is_dir", "size",
    /// "modified"}]}`, folders first). Default: off.
    pub fn listing(self, listing: bool) -> Self {
        self.with(|layer| layer.config.listing = listing)
    }

    /// A page, relative to the folders, sent with status 404. Default: `not found` as text.
    ///
    /// # Panics
    ///
    /// If `page` could leave the folders (`..`, `\`, `:`) or names a directory (`errors/`).
    #[track_caller]
    pub fn not_found_page(self, page: impl Into<PathBuf>) -> Self {
        let page = page.into();
        require("not_found_page", check::not_found_page(&page));
        self.with(|layer| layer.config.not_found_page = Some(page))
    }

    /// Serve `.br`, `.zst` and `.gz` siblings. Default: on.
    pub fn precompressed(self, on: bool) -> Self {
        self.with(|layer| layer.config.precompressed = on)
    }

    /// In production, compress compressible files once in memory. Default: on.
    pub fn compress(self, on: bool) -> Self {
        self.with(|layer| layer.config.compress = on)
    }

    /// In development mode too, compress compressible files, on each request (nothing is
    /// cached): each coding gets its own ETag, and a 304, a 206 or a HEAD answers for the
    /// same coding, with the same `Vary` and `Content-Encoding`, as the 200 would; a range
    /// is a range of the chosen coding. Files larger than
    /// [`cache_max_file_size`](StaticLayer::cache_max_file_size) are sent as they are. Needs
    /// [`compress`](StaticLayer::compress) (on by default) and the `compress` feature.
    /// Default: off (development sends files as they are on disk, or their siblings).
    ///
    /// Compressing a response as a whole over the layer (tower-http's `CompressionLayer`)
    /// keeps the identity ETag for every coding and compresses 206 bodies, which RFC 9110
    /// does not allow; this option is what to use instead.
    pub fn compress_in_development(self, on: bool) -> Self {
        self.with(|layer| layer.config.compress_in_development = on)
    }

    /// Bytes the production memory cache may hold. Default 64 MiB.
    ///
    /// # Panics
    ///
    /// If `bytes` is below [`cache_max_file_size`](StaticLayer::cache_max_file_size) (1 MiB
    /// unless set): lower that first.
    #[track_caller]
    pub fn cache_max_bytes(self, bytes: u64) -> Self {
        let file_size = self.config.cache_max_file_size;
        require(
            "cache_max_bytes",
            check::cache_sizes(bytes, file_size).map_err(|_| {
                format!("{bytes} is below `cache_max_file_size` ({file_size}); lower that first")
            }),
        );
        self.with(|layer| layer.config.cache_max_bytes = bytes)
    }

    /// Larger files are streamed from disk instead of cached. Default 1 MiB.
    ///
    /// # Panics
    ///
    /// If `bytes` exceeds [`cache_max_bytes`](StaticLayer::cache_max_bytes) (64 MiB unless
    /// set): raise that first.
    #[track_caller]
    pub fn cache_max_file_size(self, bytes: u64) -> Self {
        require(
            "cache_max_file_size",
            check::cache_sizes(self.config.cache_max_bytes, bytes),
        );
        self.with(|layer| layer.config.cache_max_file_size = bytes)
    }

    /// How stale cached metadata may get before the file is checked again. Default 1 s.
    ///
    /// # Panics
    ///
    /// If `interval` is zero.
    #[track_caller]
    pub fn revalidate_interval(self, interval: Duration) -> Self {
        require("revalidate_interval", check::revalidate_interval(interval));
        self.with(|layer| layer.config.revalidate_interval = interval)
    }

    /// Whether revalidation also compares the contents of the files held in memory. Default
    /// `false`.
    ///
    /// Revalidation compares, for the file and for each of its `.br`, `.zst` and `.gz`
    /// siblings on its own, the size and modification time (and the inode on Unix); a sibling
    /// that appears, changes or disappears reloads the file's entry. An edit that keeps the size
    /// and puts the modification time back (`touch -r`, some deployment tools, coarse file
    /// system clocks) goes unnoticed. With `true`, each file held in memory is also read and
    /// hashed at every revalidation (once per
    /// [`revalidate_interval`](StaticLayer::revalidate_interval) per file that is requested),
    /// which costs a read of the whole file each time. Streamed files are read from disk on
    /// every request, so their bytes are current either way.
    pub fn revalidate_by_content(self, by_content: bool) -> Self {
        self.with(|layer| layer.config.revalidate_by_content = by_content)
    }

    /// `Cache-Control: public, max-age` for unversioned URLs in production. Default: `no-cache`.
    pub fn unversioned_max_age(self, age: Duration) -> Self {
        self.with(|layer| layer.config.unversioned_max_age = Some(age))
    }

    /// Serve symlinks that resolve outside the folder. Default: off.
    pub fn follow_symlinks_outside(self, on: bool) -> Self {
        self.with(|layer| layer.config.follow_symlinks_outside = on)
    }

    /// Serve dotfiles (`/.well-known/` is served either way). Default: off.
    pub fn dotfiles(self, on: bool) -> Self {
        self.with(|layer| layer.config.dotfiles = on)
    }

    /// Pass methods other than GET and HEAD to the inner service instead of 405. Default: off.
    pub fn pass_other_methods(self, on: bool) -> Self {
        self.with(|layer| layer.config.pass_other_methods = on)
    }

    /// Pass requests for missing files to the inner service instead of 404. Default: off.
    pub fn fallthrough(self, on: bool) -> Self {
        self.with(|layer| layer.config.fallthrough = on)
    }

    /// Ranges allowed in one request before the whole file is sent instead. Default 16.
    ///
    /// Several ranges come back as `multipart/byteranges` parts in the order the client asked
    /// for them; ranges that overlap are not coalesced: the whole file is sent instead.
    ///
    /// # Panics
    ///
    /// If `max` is zero.
    #[track_caller]
    pub fn max_ranges(self, max: usize) -> Self {
        require("max_ranges", check::max_ranges(max));
        self.with(|layer| layer.config.max_ranges = max)
    }

    /// The clock that times the memory cache's checks of the disk
    /// ([`revalidate_interval`](StaticLayer::revalidate_interval)). Default [`Clock::tsc`];
    /// tests on tokio's paused time pass [`Clock::tokio`].
    pub fn clock(self, clock: Clock) -> Self {
        self.with(|layer| layer.clock = clock)
    }

    /// The configuration as built so far.
    pub fn config(&self) -> &StaticConfig {
        &self.config
    }

    fn shared(&self) -> Arc<Shared> {
        let state = &self.state;
        let shared = state.built.get_or_init(|| {
            let shared = Shared::new(
                self.config.clone(),
                self.clock.clone(),
                state.assets.clone(),
                Arc::clone(&state.counters),
            );
            if let Some(cache) = shared.cache() {
                // Only this initialisation sets it.
                let _ = state.cache.set(cache.clone());
            }
            Arc::new(shared)
        });
        Arc::clone(shared)
    }

    /// Renders asset URLs the way this layer serves them (for templates).
    pub fn assets(&self) -> Assets {
        self.state.assets.clone()
    }

    /// Counters of this layer and every service it makes.
    pub fn stats(&self) -> Stats {
        Stats::new(
            Arc::clone(&self.state.counters),
            Arc::clone(&self.state.cache),
        )
    }

    /// The file service alone, answering 404 outside the mount prefix; for axum's
    /// `fallback_service`, or `nest_service` under the mount prefix (see [`ServeStatic`]).
    pub fn into_service(self) -> ServeStatic {
        ServeStatic {
            shared: self.shared(),
        }
    }
}

impl ServeStatic {
    /// Serves `folder` at `/` in development mode with the defaults of [`StaticConfig`].
    pub fn new(folder: impl Into<PathBuf>) -> Self {
        StaticLayer::new("/", folder).into_service()
    }
}

/// How the asset URLs of `config` are rendered.
fn asset_settings(config: &StaticConfig, manifest: Option<&AssetManifest>) -> AssetSettings {
    let version = match (&config.version, config.content_hash) {
        (Some(version), _) => AssetVersion::Query(version.clone()),
        (None, true) => AssetVersion::ContentHash,
        (None, false) => AssetVersion::None,
    };
    AssetSettings {
        mount: config.path.trim_end_matches('/').to_string(),
        folders: config.folders.clone(),
        version,
        prod: config.is_prod,
        manifest: manifest.cloned(),
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
            .field("clock", &self.clock)
            .finish()
    }
}
