//! The services: [`ServeStatic`] answers file requests; [`Static`] puts it in front of another
//! service.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::Either;
use moka::sync::Cache;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use crate::assets::{short_hash, split_hashed, AssetManifest, AssetVersion, Assets};
use crate::body::FileBody;
use crate::conditional::RequestConditions;
use crate::config::StaticConfig;
use crate::entry::{Entry, Fingerprint, LoadOptions};
use crate::listing;
use crate::path::{sanitize, PathRejection, SafePath};
use crate::respond::{respond, status_only, text, FileRequest, IMMUTABLE, NO_CACHE};
use crate::stats::{Counter, Counters};

/// State shared by a layer and every service it makes.
pub(crate) struct Shared {
    config: StaticConfig,
    /// The mount prefix without a trailing slash (empty for `/`).
    mount: String,
    roots: Vec<PathBuf>,
    /// Production mode only: request key -> loaded file.
    pub(crate) cache: Option<Cache<String, Arc<Entry>>>,
    pub(crate) assets: Assets,
    pub(crate) counters: Counters,
    load_options: LoadOptions,
    unversioned: HeaderValue,
    clock_base: Instant,
}

/// Where a request path leads on disk.
enum Located {
    File(PathBuf),
    Directory(PathBuf),
    AddSlash,
    NotFound,
}

/// A file for a request, from the memory cache or the disk.
struct Hit {
    entry: Arc<Entry>,
    /// The URL named the file's current version.
    versioned: bool,
    /// Set when the request named a content-hashed version: the file's own path.
    logical_key: Option<String>,
}

/// A file found for a request, with its memory cache key.
struct Found {
    entry: Arc<Entry>,
    versioned: bool,
    cache_key: String,
}

impl Shared {
    pub(crate) fn new(config: StaticConfig, manifest: Option<AssetManifest>) -> Self {
        let roots: Vec<PathBuf> = config
            .folders
            .iter()
            .map(|folder| {
                folder.canonicalize().unwrap_or_else(|error| {
                    tracing::warn!(folder = %folder.display(), %error, "static folder cannot be opened; its files answer 404");
                    folder.clone()
                })
            })
            .collect();
        let cache = config.is_prod.then(|| {
            Cache::builder()
                .max_capacity(config.cache_max_bytes)
                .weigher(|key: &String, entry: &Arc<Entry>| {
                    u32::try_from(key.len() as u64 + entry.memory_weight()).unwrap_or(u32::MAX)
                })
                .eviction_listener(|key, _, cause| tracing::debug!(%key, ?cause, "static file left the memory cache"))
                .build()
        });
        let version = match (&config.version, config.content_hash) {
            (Some(version), _) => AssetVersion::Query(version.clone()),
            (None, true) => AssetVersion::ContentHash,
            (None, false) => AssetVersion::None,
        };
        let assets = Assets::with_manifest(
            &config.path,
            roots.clone(),
            version,
            config.is_prod,
            manifest,
        );
        let unversioned = match config.unversioned_max_age {
            Some(age) => HeaderValue::from_str(&format!("public, max-age={}", age.as_secs()))
                .unwrap_or(NO_CACHE),
            None => NO_CACHE,
        };
        let load_options = LoadOptions {
            memory_limit: config.is_prod.then_some(config.cache_max_file_size),
            precompressed: config.precompressed,
            compress: config.is_prod && config.compress,
            hash_streamed: config.content_hash,
        };
        Shared {
            mount: config.path.trim_end_matches('/').to_string(),
            config,
            roots,
            cache,
            assets,
            counters: Counters::default(),
            load_options,
            unversioned,
            clock_base: Instant::now(),
        }
    }

    /// The part of `path` below the mount point, if the request is for this mount.
    fn below_mount<'a>(&self, path: &'a str) -> Option<&'a str> {
        let rest = path.strip_prefix(&self.mount)?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }

    fn now_ms(&self) -> u64 {
        self.clock_base.elapsed().as_millis() as u64
    }

    fn cache_control(&self, versioned: bool) -> HeaderValue {
        match (self.config.is_prod, versioned) {
            (false, _) => NO_CACHE,
            (true, true) => IMMUTABLE,
            (true, false) => self.unversioned.clone(),
        }
    }

    fn file_request<'a>(
        &self,
        method: &'a Method,
        headers: &'a HeaderMap,
        versioned: bool,
    ) -> FileRequest<'a> {
        FileRequest {
            method,
            conditions: RequestConditions::read(headers),
            versioned,
            cache_control: self.cache_control(versioned),
            max_ranges: self.config.max_ranges,
        }
    }

    /// Starts answering; requests for files already in memory are answered without a task.
    pub(crate) fn start(
        self: &Arc<Self>,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> ResponseFuture {
        if let Some(response) = self.answer_from_memory(method, uri, headers) {
            return ResponseFuture {
                state: FutureState::Ready(Some(response)),
            };
        }
        let shared = Arc::clone(self);
        let (method, uri, headers) = (method.clone(), uri.clone(), headers.clone());
        let answer = async move { shared.answer(&method, &uri, &headers).await };
        ResponseFuture {
            state: FutureState::Pending(Box::pin(answer)),
        }
    }

    /// The hot path of production mode: a cached, fresh, in-memory file. `None` sends the
    /// request to [`Shared::answer`].
    fn answer_from_memory(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Option<Response<FileBody>> {
        let cache = self.cache.as_ref()?;
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let path = sanitize(self.below_mount(uri.path())?, self.config.dotfiles).ok()?;
        if path.is_mount_root {
            // `/static` shares the key of `/static/` but answers with a redirect.
            return None;
        }
        let found = self.cached(cache, &path.key, uri.query())?;
        let entry = &found.entry;
        if !entry.is_in_memory() || (!self.is_fresh(entry) && self.claim_revalidation(entry)) {
            return None;
        }
        let response = respond(
            entry,
            &self.file_request(method, headers, found.versioned),
            &self.counters,
        )
        .ok()?;
        self.counters.add(Counter::CacheHits);
        Some(response)
    }

    /// Whether the entry's metadata was checked less than `revalidate_interval` ago.
    fn is_fresh(&self, entry: &Entry) -> bool {
        let verified = entry.verified_at_ms.load(Ordering::Relaxed);
        self.now_ms().saturating_sub(verified) < self.interval_ms()
    }

    fn interval_ms(&self) -> u64 {
        self.config.revalidate_interval.as_millis() as u64
    }

    /// For a stale entry: true for the one request that goes to check the disk, false for the
    /// others, which keep being answered from memory meanwhile (at most one `stat` late) instead
    /// of all queueing for the same check. A claim older than the interval has been abandoned
    /// (its request was dropped) and can be taken again.
    fn claim_revalidation(&self, entry: &Entry) -> bool {
        // Offset by one so that zero means "never claimed".
        let now = self.now_ms() + 1;
        let claimed = entry.revalidation_claimed_ms.load(Ordering::Relaxed);
        if claimed != 0 && now.saturating_sub(claimed) < self.interval_ms() {
            return false;
        }
        entry
            .revalidation_claimed_ms
            .compare_exchange(claimed, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Whether the query is the configured version (Kalgan's `?v001`).
    fn query_names_version(&self, query: Option<&str>) -> bool {
        matches!((self.assets.version(), query), (AssetVersion::Query(v), Some(q)) if v == q)
    }

    /// Looks `key` up in the memory cache, also as a content-hashed name.
    fn cached(
        &self,
        cache: &Cache<String, Arc<Entry>>,
        key: &str,
        query: Option<&str>,
    ) -> Option<Hit> {
        if let Some(entry) = cache.get(key) {
            return Some(Hit {
                entry,
                versioned: self.query_names_version(query),
                logical_key: None,
            });
        }
        if *self.assets.version() != AssetVersion::ContentHash {
            return None;
        }
        let (logical, hash) = split_hashed(key)?;
        let entry = cache.get(&logical)?;
        let versioned = entry.hash.map(short_hash).as_deref() == Some(hash);
        Some(Hit {
            entry,
            versioned,
            logical_key: Some(logical),
        })
    }

    /// The full path: anything the memory path could not answer.
    async fn answer(
        self: Arc<Self>,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Response<FileBody> {
        let Some(rest) = self.below_mount(uri.path()) else {
            self.counters.add(Counter::NotFound);
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        let path = match sanitize(rest, self.config.dotfiles) {
            Ok(path) => path,
            Err(PathRejection::Invalid) => {
                tracing::debug!(path = %uri.path(), "refused a path that could leave the static folder");
                self.counters.add(Counter::RefusedPaths);
                return text(StatusCode::BAD_REQUEST, "invalid path\n");
            }
            Err(PathRejection::Hidden) => return self.not_found(method, uri, headers).await,
        };
        if path.is_mount_root {
            return add_slash(&path, uri);
        }
        let get_or_head = method == Method::GET || method == Method::HEAD;
        let found = match self.find(&path, uri.query()).await {
            Ok(Ok(found)) => found,
            Ok(Err(Located::AddSlash)) => return add_slash(&path, uri),
            Ok(Err(Located::Directory(dir))) if get_or_head => {
                return self.listing(&dir, uri, headers).await
            }
            Ok(Err(Located::NotFound)) => return self.not_found(method, uri, headers).await,
            Ok(Err(Located::Directory(_) | Located::File(_))) => return method_not_allowed(),
            Err(error) => return io_error(&error, uri),
        };
        if !get_or_head {
            return method_not_allowed();
        }
        self.respond_with(found, method, headers).await
    }

    /// Answers with a found file, compressing it first if the client wants a coding not made yet.
    async fn respond_with(
        &self,
        found: Found,
        method: &Method,
        headers: &HeaderMap,
    ) -> Response<FileBody> {
        loop {
            let request = self.file_request(method, headers, found.versioned);
            match respond(&found.entry, &request, &self.counters) {
                Ok(response) => return response,
                Err(encoding) => {
                    let entry = Arc::clone(&found.entry);
                    let compressed_now = blocking(move || Ok(entry.generate(encoding)))
                        .await
                        .unwrap_or(false);
                    if compressed_now {
                        self.counters.add(Counter::Compressions);
                        tracing::debug!(file = %found.entry.path.display(), coding = encoding.token(), "compressed in memory");
                        // Insert again so the cache weighs the new copy.
                        if let Some(cache) = &self.cache {
                            cache.insert(found.cache_key.clone(), Arc::clone(&found.entry));
                        }
                    }
                }
            }
        }
    }

    /// Finds the file for `path`: from the memory cache (checking the disk when due) or the disk.
    async fn find(
        self: &Arc<Self>,
        path: &SafePath<'_>,
        query: Option<&str>,
    ) -> io::Result<Result<Found, Located>> {
        if let Some(cache) = &self.cache {
            if let Some(hit) = self.cached(cache, &path.key, query) {
                let logical = hit.logical_key.as_deref().map(|key| SafePath {
                    key: key.into(),
                    trailing_slash: false,
                    is_mount_root: false,
                });
                let current = self
                    .still_current(&hit.entry, logical.as_ref().unwrap_or(path))
                    .await;
                let cache_key = hit.logical_key.unwrap_or_else(|| path.key.to_string());
                if current {
                    self.counters.add(Counter::CacheHits);
                    let (entry, versioned) = (hit.entry, hit.versioned);
                    return Ok(Ok(Found {
                        entry,
                        versioned,
                        cache_key,
                    }));
                }
                cache.invalidate(&cache_key);
            }
            self.counters.add(Counter::CacheMisses);
        }
        let shared = Arc::clone(self);
        let relative = path.relative().to_string();
        let trailing_slash = path.trailing_slash;
        let hit = match blocking(move || shared.locate_and_load(&relative, trailing_slash)).await? {
            Ok(hit) => hit,
            Err(located) => return Ok(Err(located)),
        };
        let cache_key = hit.logical_key.unwrap_or_else(|| path.key.to_string());
        if let Some(cache) = &self.cache {
            cache.insert(cache_key.clone(), Arc::clone(&hit.entry));
        }
        let versioned = hit.versioned || self.query_names_version(query);
        Ok(Ok(Found {
            entry: hit.entry,
            versioned,
            cache_key,
        }))
    }

    /// Finds and reads the file for `relative`; a content-hashed name that names no file is
    /// tried as its logical path. Blocking.
    fn locate_and_load(
        &self,
        relative: &str,
        trailing_slash: bool,
    ) -> io::Result<Result<Hit, Located>> {
        let (file, hashed) = match self.locate(relative, trailing_slash)? {
            Located::File(file) => (file, None),
            Located::NotFound if *self.assets.version() == AssetVersion::ContentHash => {
                let Some((logical, hash)) = split_hashed(relative) else {
                    return Ok(Err(Located::NotFound));
                };
                match self.locate(&logical, false)? {
                    Located::File(file) => (file, Some((logical, hash.to_string()))),
                    other => return Ok(Err(other)),
                }
            }
            other => return Ok(Err(other)),
        };
        let entry = Arc::new(Entry::load(&file, self.load_options, self.now_ms())?);
        let versioned = hashed
            .as_ref()
            .is_some_and(|(_, hash)| entry.hash.map(short_hash).as_ref() == Some(hash));
        Ok(Ok(Hit {
            entry,
            versioned,
            logical_key: hashed.map(|(logical, _)| logical),
        }))
    }

    /// In production, whether a cached entry still matches its file. Files kept in memory are
    /// checked once per `revalidate_interval`; streamed files on every request, since their
    /// length goes out in the headers before the file is opened.
    async fn still_current(self: &Arc<Self>, entry: &Arc<Entry>, path: &SafePath<'_>) -> bool {
        if entry.is_in_memory() && self.is_fresh(entry) {
            return true;
        }
        self.counters.add(Counter::Revalidations);
        let (shared, check) = (Arc::clone(self), Arc::clone(entry));
        let (relative, trailing_slash) = (path.relative().to_string(), path.trailing_slash);
        let now = self.now_ms();
        let same = blocking(move || {
            // The path must still lead to the same file: a file added to an earlier folder, or
            // an index added to a listed directory, takes over.
            let same_file = matches!(shared.locate(&relative, trailing_slash)?, Located::File(file) if file == check.path);
            let metadata = std::fs::metadata(&check.path)?;
            Ok(same_file && Fingerprint::of(&metadata) == check.fingerprint)
        })
        .await
        .unwrap_or(false);
        if same {
            entry.verified_at_ms.store(now, Ordering::Relaxed);
        } else {
            tracing::debug!(file = %entry.path.display(), "static file changed on disk; reloading");
        }
        same
    }

    /// Where `relative` leads in the folders, first folder first. Blocking.
    fn locate(&self, relative: &str, trailing_slash: bool) -> io::Result<Located> {
        for root in &self.roots {
            let candidate = root.join(relative);
            let metadata = match std::fs::metadata(&candidate) {
                Ok(metadata) => metadata,
                Err(error) if is_missing(&error) => continue,
                Err(error) => return Err(error),
            };
            if metadata.is_dir() {
                if !trailing_slash {
                    return Ok(Located::AddSlash);
                }
                let index = candidate.join(&self.config.index);
                if std::fs::metadata(&index).is_ok_and(|m| m.is_file())
                    && self.inside_root(root, &index)
                {
                    return Ok(Located::File(index));
                }
                if self.config.listing && self.inside_root(root, &candidate) {
                    return Ok(Located::Directory(candidate));
                }
            } else if metadata.is_file() && !trailing_slash && self.inside_root(root, &candidate) {
                return Ok(Located::File(candidate));
            }
        }
        Ok(Located::NotFound)
    }

    /// Refuses a path that a symlink takes outside its folder, unless that is allowed.
    fn inside_root(&self, root: &Path, path: &Path) -> bool {
        if self.config.follow_symlinks_outside {
            return true;
        }
        let inside = path.canonicalize().is_ok_and(|real| real.starts_with(root));
        if !inside {
            tracing::warn!(path = %path.display(), "refused a symlink that leaves the static folder");
        }
        inside
    }

    async fn listing(&self, dir: &Path, uri: &Uri, headers: &HeaderMap) -> Response<FileBody> {
        let dir = dir.to_path_buf();
        let dotfiles = self.config.dotfiles;
        let entries = match blocking(move || listing::read(&dir, dotfiles)).await {
            Ok(entries) => entries,
            Err(error) => return io_error(&error, uri),
        };
        let wants_json = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("application/json"));
        let (body, content_type) = if wants_json {
            (listing::to_json(uri.path(), &entries), "application/json")
        } else {
            (
                listing::to_html(uri.path(), &entries),
                "text/html; charset=utf-8",
            )
        };
        let mut response = Response::new(FileBody::full(body));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, NO_CACHE);
        headers.insert(header::VARY, HeaderValue::from_static("accept"));
        response
    }

    /// A missing file: the SPA's index for extensionless paths, the custom 404 page, or text.
    async fn not_found(
        self: &Arc<Self>,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Response<FileBody> {
        let get_or_head = method == Method::GET || method == Method::HEAD;
        let last_segment = uri.path().rsplit('/').next().unwrap_or("");
        let excluded = self
            .config
            .spa_exclude
            .iter()
            .any(|prefix| under_prefix(uri.path(), prefix));
        if self.config.spa && get_or_head && !last_segment.contains('.') && !excluded {
            let index = SafePath {
                key: "".into(),
                trailing_slash: true,
                is_mount_root: false,
            };
            if let Ok(Ok(found)) = self.find(&index, None).await {
                let found = Found {
                    versioned: false,
                    ..found
                };
                return self.respond_with(found, method, headers).await;
            }
        }
        self.counters.add(Counter::NotFound);
        match self.not_found_page(method).await {
            Some(page) => page,
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// The configured 404 page, whatever the request's conditions: it is never cached.
    async fn not_found_page(self: &Arc<Self>, method: &Method) -> Option<Response<FileBody>> {
        let page = self.config.not_found_page.as_ref()?.to_str()?;
        let rooted = format!("/{}", page.trim_start_matches('/'));
        let path = sanitize(&rooted, true).ok()?;
        let found = self.find(&path, None).await.ok()?.ok()?;
        let found = Found {
            versioned: false,
            ..found
        };
        let mut response = self
            .respond_with(found, &Method::GET, &HeaderMap::new())
            .await;
        *response.status_mut() = StatusCode::NOT_FOUND;
        let headers = response.headers_mut();
        headers.remove(header::ETAG);
        headers.insert(header::CACHE_CONTROL, NO_CACHE);
        if method == Method::HEAD {
            let len = http_body::Body::size_hint(response.body())
                .exact()
                .unwrap_or(0);
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, len.into());
            *response.body_mut() = FileBody::empty();
        }
        Some(response)
    }
}

fn under_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Errors that mean "no such file" for the client: missing, a path below a file
/// (`file.txt/x`), a name too long for the file system, a symlink loop.
fn is_missing(error: &io::Error) -> bool {
    /// ELOOP has no stable `ErrorKind` yet.
    #[cfg(target_os = "linux")]
    const SYMLINK_LOOP: Option<i32> = Some(40);
    #[cfg(target_os = "macos")]
    const SYMLINK_LOOP: Option<i32> = Some(62);
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    const SYMLINK_LOOP: Option<i32> = None;
    let missing = matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidFilename
    );
    if !missing && SYMLINK_LOOP.is_some() && error.raw_os_error() == SYMLINK_LOOP {
        tracing::warn!(%error, "symlink loop in the static folder");
        return true;
    }
    missing
}

/// A directory without its slash: redirect with a relative reference (`docs/`), which is right
/// however many prefixes a router stripped before this service saw the path.
fn add_slash(path: &SafePath<'_>, uri: &Uri) -> Response<FileBody> {
    let segment = if path.is_mount_root {
        uri.path().rsplit('/').next().unwrap_or("")
    } else {
        path.last_segment()
    };
    let segment =
        percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let location = match uri.query() {
        Some(query) => format!("{segment}/?{query}"),
        None => format!("{segment}/"),
    };
    let mut response = status_only(StatusCode::MOVED_PERMANENTLY);
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn method_not_allowed() -> Response<FileBody> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

fn io_error(error: &io::Error, uri: &Uri) -> Response<FileBody> {
    if error.kind() == io::ErrorKind::PermissionDenied {
        tracing::warn!(path = %uri.path(), %error, "static file not readable");
        return text(StatusCode::FORBIDDEN, "forbidden\n");
    }
    tracing::error!(path = %uri.path(), %error, "static file could not be read");
    text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
}

/// Runs file-system work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| Err(io::Error::other(join)))
}

/// Future of [`ServeStatic`]: ready at once for files answered from memory.
pub struct ResponseFuture {
    state: FutureState,
}

enum FutureState {
    Ready(Option<Response<FileBody>>),
    Pending(Pin<Box<dyn Future<Output = Response<FileBody>> + Send>>),
}

impl Future for ResponseFuture {
    type Output = Result<Response<FileBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            FutureState::Ready(response) => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| status_only(StatusCode::INTERNAL_SERVER_ERROR)))),
            FutureState::Pending(future) => future.as_mut().poll(cx).map(Ok),
        }
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// A service that answers every request from the folders, usable as an axum
/// `fallback_service`. Build one with [`ServeStatic::new`], or configure a
/// [`StaticLayer`](crate::StaticLayer) and call [`into_service`](crate::StaticLayer::into_service).
#[derive(Clone)]
pub struct ServeStatic {
    pub(crate) shared: Arc<Shared>,
}

impl ServeStatic {
    /// Serves `folder` at `/` in development mode with the defaults of
    /// [`StaticConfig`](crate::StaticConfig).
    pub fn new(folder: impl Into<PathBuf>) -> Self {
        crate::StaticLayer::new("/", folder).into_service()
    }
}

impl std::fmt::Debug for ServeStatic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeStatic")
            .field("mount", &self.shared.mount)
            .field("roots", &self.shared.roots)
            .finish()
    }
}

impl<B> Service<Request<B>> for ServeStatic {
    type Response = Response<FileBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> ResponseFuture {
        self.shared
            .start(request.method(), request.uri(), request.headers())
    }
}

/// The service of a [`StaticLayer`](crate::StaticLayer): files under the mount prefix, every
/// other request to the inner service, which never sees a request for an asset.
#[derive(Clone)]
pub struct Static<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Static<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Static { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Takes the inner service out.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Static<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Static")
            .field("inner", &self.inner)
            .field("mount", &self.shared.mount)
            .finish()
    }
}

impl<S, B, ResBody> Service<Request<B>> for Static<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<Either<FileBody, ResBody>>;
    type Error = S::Error;
    type Future = StaticFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let config = &self.shared.config;
        let for_files = self.shared.below_mount(request.uri().path()).is_some()
            && (!config.pass_other_methods
                || request.method() == Method::GET
                || request.method() == Method::HEAD);
        if !for_files {
            return StaticFuture {
                state: State::Inner {
                    future: self.inner.call(request),
                },
            };
        }
        // The future may call the inner service later (a file that is not there): it takes the
        // one driven to readiness and leaves a clone in its place.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let future = self
            .shared
            .start(request.method(), request.uri(), request.headers());
        let fallback = config.fallthrough.then_some((ready, request));
        StaticFuture {
            state: State::Files { future, fallback },
        }
    }
}

pin_project! {
    /// Future of [`Static`].
    pub struct StaticFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Files { future: ResponseFuture, fallback: Option<(S, Request<B>)> },
        Fallback { service: S, request: Option<Request<B>> },
        Inner { #[pin] future: S::Future },
    }
}

impl<S, B, ResBody> Future for StaticFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<Either<FileBody, ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Files { future, fallback } => {
                    let Ok(response) = std::task::ready!(Pin::new(future).poll(cx));
                    if response.status() == StatusCode::NOT_FOUND {
                        if let Some((service, request)) = fallback.take() {
                            state.set(State::Fallback {
                                service,
                                request: Some(request),
                            });
                            continue;
                        }
                    }
                    return Poll::Ready(Ok(response.map(Either::Left)));
                }
                StateProj::Fallback { service, request } => {
                    std::task::ready!(service.poll_ready(cx))?;
                    let Some(request) = request.take() else {
                        unreachable!("polled after the call")
                    };
                    let future = service.call(request);
                    state.set(State::Inner { future });
                }
                StateProj::Inner { future } => {
                    return future
                        .poll(cx)
                        .map(|result| result.map(|response| response.map(Either::Right)));
                }
            }
        }
    }
}
