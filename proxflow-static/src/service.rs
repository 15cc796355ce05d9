//! The services: [`ServeStatic`] answers file requests; [`Static`] puts it in front of another
//! service. Finding files is [`lookup`](crate::lookup)'s, keeping them in memory
//! [`cache`](crate::cache)'s, and building the response [`respond`](crate::respond)'s; this
//! module ties them to requests.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::Either;
use pin_project_lite::pin_project;
use proxflow_core::Clock;
use tower_service::Service;

use crate::assets::{AssetVersion, Assets};
use crate::body::FileBody;
use crate::cache::MemoryCache;
use crate::conditional::RequestConditions;
use crate::config::StaticConfig;
use crate::entry::Entry;
use crate::listing;
use crate::lookup::{blocking, Hit, Located, Lookup};
use crate::mount::{full_path, nested_at, Mount};
use crate::path::{sanitize, PathRejection, SafePath};
use crate::respond::{
    add_slash, io_error, method_not_allowed, respond, status_only, text, FileRequest, IMMUTABLE,
    NO_CACHE,
};
use crate::stats::{Counter, Counters};

/// State shared by a layer and every service it makes.
pub(crate) struct Shared {
    config: StaticConfig,
    mount: Mount,
    lookup: Lookup,
    /// Production mode only.
    cache: Option<MemoryCache>,
    assets: Assets,
    counters: Arc<Counters>,
    unversioned: HeaderValue,
}

/// A request, as the slow path keeps it.
struct Asked {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    /// The prefix a router removed from the path (see [`nested_at`]).
    nested_at: Option<String>,
}

impl Asked {
    fn get_or_head(&self) -> bool {
        self.method == Method::GET || self.method == Method::HEAD
    }
}

/// A file found for a request, with its memory cache key.
struct Found {
    entry: Arc<Entry>,
    /// The URL named the file's current version.
    versioned: bool,
    cache_key: String,
}

impl Shared {
    /// The state for `config`; `assets` renders the URLs it serves and `counters` counts.
    pub(crate) fn new(
        config: StaticConfig,
        clock: Clock,
        assets: Assets,
        counters: Arc<Counters>,
    ) -> Self {
        let cache = config.is_prod.then(|| {
            MemoryCache::new(
                config.cache_max_bytes,
                config.revalidate_interval,
                clock,
                config.content_hash,
            )
        });
        let unversioned = match config.unversioned_max_age {
            Some(age) => HeaderValue::from_str(&format!("public, max-age={}", age.as_secs()))
                .unwrap_or(NO_CACHE),
            None => NO_CACHE,
        };
        Shared {
            mount: Mount::new(&config.path),
            lookup: Lookup::new(&config),
            config,
            cache,
            assets,
            counters,
            unversioned,
        }
    }

    pub(crate) fn cache(&self) -> Option<&MemoryCache> {
        self.cache.as_ref()
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
    /// `nested` is where a router nested this service ([`nested_at`]).
    pub(crate) fn start<B>(
        self: &Arc<Self>,
        request: &Request<B>,
        nested: Option<&str>,
    ) -> ResponseFuture {
        let (method, uri, headers) = (request.method(), request.uri(), request.headers());
        if let Some(response) = self.answer_from_memory(method, uri, headers, nested) {
            return ResponseFuture {
                state: FutureState::Ready(Some(response)),
            };
        }
        let shared = Arc::clone(self);
        let asked = Asked {
            method: method.clone(),
            uri: uri.clone(),
            headers: headers.clone(),
            nested_at: nested.map(str::to_string),
        };
        let answer = async move { shared.answer(&asked).await };
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
        nested: Option<&str>,
    ) -> Option<Response<FileBody>> {
        let cache = self.cache.as_ref()?;
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let path = sanitize(self.mount.below(uri.path(), nested)?, self.config.dotfiles).ok()?;
        if path.is_mount_root {
            // `/static` shares the key of `/static/` but answers with a redirect.
            return None;
        }
        let hit = cache.get(&path.key)?;
        let entry = &hit.entry;
        if !entry.is_in_memory() || (!cache.is_fresh(entry) && cache.claim_revalidation(entry)) {
            return None;
        }
        let versioned = self.versioned(&hit, uri.query());
        let response = respond(
            entry,
            &self.file_request(method, headers, versioned),
            &self.counters,
        )
        .ok()?;
        self.counters.add(Counter::CacheHits);
        Some(response)
    }

    /// Whether the URL named the file's current version: its content hash, or the configured
    /// query (Kalgan's `?v001`).
    fn versioned(&self, hit: &Hit, query: Option<&str>) -> bool {
        if hit.hashed.is_some() {
            return hit.names_current_hash();
        }
        matches!((self.assets.version(), query), (AssetVersion::Query(v), Some(q)) if v == q)
    }

    /// The full path: anything the memory path could not answer.
    async fn answer(self: Arc<Self>, asked: &Asked) -> Response<FileBody> {
        let uri = &asked.uri;
        let nested = asked.nested_at.as_deref();
        let Some(rest) = self.mount.below(uri.path(), nested) else {
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
            Err(PathRejection::Hidden) => return self.not_found(asked).await,
        };
        if path.is_mount_root {
            return add_slash(&path, uri);
        }
        let found = match self.find(&path, uri.query()).await {
            Ok(Ok(found)) => found,
            Ok(Err(Located::AddSlash)) => return add_slash(&path, uri),
            Ok(Err(Located::Directory(dir))) if asked.get_or_head() => {
                return self.listing(&dir, asked).await
            }
            Ok(Err(Located::NotFound)) => return self.not_found(asked).await,
            Ok(Err(Located::Directory(_) | Located::File(_))) => return method_not_allowed(),
            Err(error) => return io_error(&error, uri),
        };
        if !asked.get_or_head() {
            return method_not_allowed();
        }
        self.respond_or_look_again(found, &path, asked).await
    }

    /// Answers with `found`; a file replaced between its check and its opening is looked up
    /// once more and answered anew, or refused, before any head goes out.
    async fn respond_or_look_again(
        self: &Arc<Self>,
        found: Found,
        path: &SafePath<'_>,
        asked: &Asked,
    ) -> Response<FileBody> {
        let cache_key = found.cache_key.clone();
        let changed = match self
            .respond_with(found, &asked.method, &asked.headers)
            .await
        {
            Ok(response) => return response,
            Err(changed) => changed,
        };
        tracing::debug!(%changed, "static file changed after its check; looking again");
        if let Some(cache) = &self.cache {
            cache.invalidate(&cache_key);
        }
        let answered = match self.find(path, asked.uri.query()).await {
            Ok(Ok(found)) => {
                self.respond_with(found, &asked.method, &asked.headers)
                    .await
            }
            // Gone or turned into a folder meanwhile.
            Ok(Err(_)) => return self.not_found(asked).await,
            Err(error) => Err(error),
        };
        answered.unwrap_or_else(|error| io_error(&error, &asked.uri))
    }

    /// Answers with a found file, compressing it first if the client wants a coding not made
    /// yet. The files the body reads are opened before the head is built into a response, so
    /// a file that changed since its check is an error here rather than a cut body.
    async fn respond_with(
        &self,
        found: Found,
        method: &Method,
        headers: &HeaderMap,
    ) -> io::Result<Response<FileBody>> {
        loop {
            let request = self.file_request(method, headers, found.versioned);
            match respond(&found.entry, &request, &self.counters) {
                Ok(response) => {
                    let (head, body) = response.into_parts();
                    return Ok(Response::from_parts(head, body.open_files().await?));
                }
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
            if let Some(hit) = cache.get(&path.key) {
                let versioned = self.versioned(&hit, query);
                let logical = hit.hashed.as_ref().map(|hashed| SafePath {
                    key: hashed.logical.as_str().into(),
                    trailing_slash: false,
                    is_mount_root: false,
                });
                let current = self
                    .still_current(cache, &hit.entry, logical.as_ref().unwrap_or(path))
                    .await;
                let cache_key = match hit.hashed {
                    Some(hashed) => hashed.logical,
                    None => path.key.to_string(),
                };
                if current {
                    self.counters.add(Counter::CacheHits);
                    return Ok(Ok(Found {
                        entry: hit.entry,
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
        let now_ms = self.cache.as_ref().map_or(0, MemoryCache::now_ms);
        let hit =
            match blocking(move || shared.lookup.load(&relative, trailing_slash, now_ms)).await? {
                Ok(hit) => hit,
                Err(located) => return Ok(Err(located)),
            };
        let versioned = self.versioned(&hit, query);
        let cache_key = match hit.hashed {
            Some(hashed) => hashed.logical,
            None => path.key.to_string(),
        };
        if let Some(cache) = &self.cache {
            cache.insert(cache_key.clone(), Arc::clone(&hit.entry));
        }
        Ok(Ok(Found {
            entry: hit.entry,
            versioned,
            cache_key,
        }))
    }

    /// In production, whether a cached entry still matches its file. Files kept in memory are
    /// checked once per `revalidate_interval`; streamed files on every request, since their
    /// length goes out in the headers before the file is opened.
    async fn still_current(
        self: &Arc<Self>,
        cache: &MemoryCache,
        entry: &Arc<Entry>,
        path: &SafePath<'_>,
    ) -> bool {
        if entry.is_in_memory() && cache.is_fresh(entry) {
            return true;
        }
        self.counters.add(Counter::Revalidations);
        let (shared, check) = (Arc::clone(self), Arc::clone(entry));
        let (relative, trailing_slash) = (path.relative().to_string(), path.trailing_slash);
        let checked_ms = cache.now_ms();
        let same = blocking(move || {
            shared
                .lookup
                .still_leads_to(&check, &relative, trailing_slash)
        })
        .await
        .unwrap_or(false);
        if same {
            cache.mark_verified(entry, checked_ms);
        } else {
            tracing::debug!(file = %entry.path.display(), "static file changed on disk; reloading");
        }
        same
    }

    async fn listing(&self, dir: &Path, asked: &Asked) -> Response<FileBody> {
        let dir = dir.to_path_buf();
        let dotfiles = self.config.dotfiles;
        match blocking(move || listing::read(&dir, dotfiles)).await {
            Ok(entries) => {
                let url_path = full_path(asked.uri.path(), asked.nested_at.as_deref());
                listing::response(&url_path, &entries, &asked.headers)
            }
            Err(error) => io_error(&error, &asked.uri),
        }
    }

    /// A missing file: the SPA's index for extensionless paths, the custom 404 page, or text.
    async fn not_found(self: &Arc<Self>, asked: &Asked) -> Response<FileBody> {
        let url_path = full_path(asked.uri.path(), asked.nested_at.as_deref());
        if self.lookup.spa_fallback(asked.get_or_head(), &url_path) {
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
                return self
                    .respond_with(found, &asked.method, &asked.headers)
                    .await
                    .unwrap_or_else(|error| io_error(&error, &asked.uri));
            }
        }
        self.counters.add(Counter::NotFound);
        match self.not_found_page(&asked.method).await {
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
            .await
            .ok()?;
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

/// A service that answers every request from the folders: requests outside the mount prefix
/// get 404. Build one with [`ServeStatic::new`], or configure a
/// [`StaticLayer`](crate::StaticLayer) and call [`into_service`](crate::StaticLayer::into_service).
///
/// With axum it goes in `fallback_service`, or in `nest_service` under the layer's own mount
/// prefix, where axum removes the prefix before the service sees the path:
///
/// ```no_run
/// use axum::Router;
/// use proxflow_static::StaticLayer;
///
/// let statics = StaticLayer::new("/static", "public");
/// let assets = statics.assets(); // renders `/static/...`, as the router serves them
/// let app: Router = Router::new().nest_service("/static", statics.into_service());
/// # let _ = (app, assets);
/// ```
///
/// Under `nest_service` the mount prefix is matched against the path the client sent, which
/// the service reads from axum's `NestedPath` (the `axum` feature, on by default). A service
/// mounted at `/` ([`ServeStatic::new`]) serves the path below wherever it is nested.
#[derive(Clone)]
pub struct ServeStatic {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for ServeStatic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeStatic")
            .field("mount", &self.shared.mount.prefix())
            .field("roots", &self.shared.lookup.roots())
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
        self.shared.start(&request, nested_at(request.extensions()))
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
            .field("mount", &self.shared.mount.prefix())
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
        let nested = nested_at(request.extensions());
        let for_files = self
            .shared
            .mount
            .below(request.uri().path(), nested)
            .is_some()
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
        let future = self.shared.start(&request, nested);
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
