//! The cache in front of a service: look up, answer from the store, revalidate, or forward
//! and store; `Age` and `Cache-Status` on the way out.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use proxflow_core::{BoxError, Clock};
use tower_service::Service;

use crate::body::{CacheBody, Copy};
use crate::coalesce::{self, Coalescing, Join, Leader};
use crate::config::{CacheConfig, WebhookAuth};
use crate::directives::{RequestDirectives, ResponseDirectives};
use crate::policy::{self, NotStored, Reuse, Timing};
use crate::stats::{Counters, Event};
use crate::store::{Store, Stored, WallClock};
use crate::warm::{self, Replay, Warmer};
use crate::warming::WarmingConfig;
use crate::webhook;

/// The `Cache-Status` header (RFC 9211).
const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// This cache's name in `Cache-Status`.
const NAME: &str = "proxflow";

/// What every service of one layer shares: the store, the settings, the counters.
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) ttl: Duration,
    pub(crate) max_object_size: usize,
    pub(crate) wall: WallClock,
    pub(crate) counters: Arc<Counters>,
    /// Keys being refreshed in the background (`stale-while-revalidate`): one at a time each.
    refreshing: Mutex<HashSet<Arc<str>>>,
    pub(crate) coalescing: Arc<Coalescing>,
    /// How long a request waits for another's origin request for its key.
    pub(crate) coalesce_wait: Duration,
    /// The webhook's path and authentication.
    pub(crate) webhook: Option<(String, WebhookAuth)>,
    /// How long the origin has to answer (its response head).
    pub(crate) origin_timeout: Duration,
    /// Predictive warming, when on.
    pub(crate) warmer: Option<Arc<Warmer>>,
    /// The channel to the other instances, when invalidations are shared.
    #[cfg(feature = "redis")]
    pub(crate) sync: Option<crate::sync::SyncLink>,
}

impl Shared {
    /// The cache of a validated `config`, on `clock`, counting into `counters`.
    pub(crate) fn new(config: &CacheConfig, clock: Clock, counters: Arc<Counters>) -> Shared {
        let wall = WallClock::new(clock);
        let warmer = config
            .predictive_warming
            .then(|| Arc::new(Warmer::new(WarmingConfig::default(), &wall)));
        Shared {
            store: Store::new(
                config.max_size.saturating_mul(1_000_000),
                Arc::clone(&counters),
                warmer.clone(),
            ),
            ttl: config.ttl,
            max_object_size: usize::try_from(config.max_object_size).unwrap_or(usize::MAX),
            wall,
            warmer,
            counters,
            refreshing: Mutex::default(),
            coalescing: Arc::default(),
            coalesce_wait: config.coalesce_wait,
            webhook: config.webhook_path.clone().zip(config.webhook_auth.clone()),
            origin_timeout: config.origin_timeout,
            #[cfg(feature = "redis")]
            sync: config
                .distributed_sync
                .as_ref()
                .map(crate::sync::SyncLink::new),
        }
    }

    /// Tells the other instances of an invalidation made here (when they share them).
    pub(crate) fn publish(&self, host: &str, action: &webhook::Action) {
        #[cfg(feature = "redis")]
        if let Some(sync) = &self.sync {
            sync.publish(host, action);
        }
        let _ = (host, action);
    }

    /// Stores a response the origin gave (or refreshed with a 304).
    pub(crate) fn store_response(&self, key: Arc<str>, stored: Arc<Stored>) {
        self.counters.add(Event::Stored);
        if let Some(warmer) = &self.warmer {
            let now = self.wall.now();
            let fresh_for = stored
                .timing
                .lifetime
                .saturating_sub(stored.timing.current_age(now));
            warmer.stored(&key, now, now + fresh_for);
        }
        #[cfg(feature = "redis")]
        let kept_key = Arc::clone(&key);
        self.store.insert(key, stored);
        #[cfg(feature = "redis")]
        if let (Some(sync), Some(variants)) = (&self.sync, self.store.get(&kept_key)) {
            sync.keep(&kept_key, &variants, self.wall.now());
        }
    }

    /// Whether instances share a second level of stored responses.
    fn shares_store(&self) -> bool {
        #[cfg(feature = "redis")]
        if let Some(sync) = &self.sync {
            return sync.shares_store();
        }
        false
    }

    /// The variants another instance stored for `key`, put in this store (from the shared
    /// second level); whether there were any.
    async fn load_shared(&self, key: &Arc<str>) -> bool {
        #[cfg(feature = "redis")]
        if let Some(variants) = match &self.sync {
            Some(sync) => sync.fetch(key).await,
            None => None,
        } {
            let found = !variants.is_empty();
            // Oldest first: the store keeps the newest first.
            for stored in variants.into_iter().rev() {
                self.store.insert(Arc::clone(key), Arc::new(stored));
            }
            return found;
        }
        let _ = key;
        false
    }
}

/// The cache over a service `S`; made by [`CacheLayer`](crate::CacheLayer).
pub struct Cache<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for Cache<S> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> Cache<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Cache { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, without the cache.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> std::fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Cache<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body<Data = Bytes> + Default + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The ready service goes with this request; the clone waits for the next one.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(handle(Arc::clone(&self.shared), inner, request))
    }
}

/// The store's key of a request: its host and its path and query. GET and HEAD share it.
fn key_of(uri: &Uri, headers: &HeaderMap) -> Arc<str> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Arc::from(format!("{}{path}", host_of(uri, headers)))
}

/// A request's host, lowercased: the URI's authority, else `Host`.
pub(crate) fn host_of(uri: &Uri, headers: &HeaderMap) -> String {
    uri.authority()
        .map(|a| a.as_str().to_ascii_lowercase())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_ascii_lowercase)
        })
        .unwrap_or_default()
}

async fn handle<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    mut inner: S,
    request: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body<Data = Bytes> + Default + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    #[cfg(feature = "redis")]
    if let Some(sync) = &shared.sync {
        sync.start(&shared);
    }
    if let Some((path, auth)) = &shared.webhook {
        if request.method() == Method::POST && request.uri().path() == path {
            return Ok(webhook::handle(&shared, auth, request).await);
        }
    }
    let key = key_of(request.uri(), request.headers());
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        return pass_unsafe(&shared, &mut inner, request, key).await;
    }
    if method == Method::GET {
        if let Some(warmer) = &shared.warmer {
            start_refresher(&shared, warmer, &inner);
            let now = shared.wall.now();
            for replay in warmer.requested(&key, &request, now) {
                // Fetched if absent, revalidated if stale; nothing to do if fresh.
                let stored = shared
                    .store
                    .get(&replay.key)
                    .and_then(|variants| variants.iter().next().cloned());
                match stored {
                    Some(stored) if stored.timing.staleness(now).is_none() => {
                        warmer.failed(&replay.key);
                    }
                    stored => warm_in_background(&shared, warmer, inner.clone(), &replay, stored),
                }
            }
        }
    }
    let directives = RequestDirectives::parse(request.headers());
    // Set once this request waited for another's origin request: it makes its own then.
    let mut waited = false;
    // Set once the shared second level was asked (it is asked once, on a miss).
    let mut asked_shared = false;
    let mut from_shared = "";
    loop {
        let now = shared.wall.now();
        let variants = shared.store.get(&key);
        let stored = variants
            .as_ref()
            .and_then(|variants| variants.find(request.headers()).cloned());
        let reuse = stored
            .as_ref()
            .map(|stored| policy::reuse(&stored.timing, &stored.directives, &directives, now));
        let collapsed = if waited { "; collapsed" } else { from_shared };
        match (stored, reuse) {
            (Some(stored), Some(Reuse::Fresh | Reuse::StaleAccepted)) => {
                shared.counters.add(Event::Hit);
                let status = format!("hit{collapsed}");
                return Ok(answer(&stored, request.headers(), &method, now, status));
            }
            (Some(stored), Some(Reuse::StaleWhileRevalidate)) => {
                shared.counters.add(Event::Hit);
                shared.counters.add(Event::Stale);
                refresh_in_background(&shared, inner, &request, Arc::clone(&key), &stored);
                let status = format!("hit{collapsed}");
                return Ok(answer(&stored, request.headers(), &method, now, status));
            }
            (None, _) if variants.is_none() && !asked_shared && shared.shares_store() => {
                asked_shared = true;
                if shared.load_shared(&key).await {
                    from_shared = "; detail=shared";
                }
                continue;
            }
            (stored, _) => {
                if directives.only_if_cached {
                    return Ok(only_if_cached());
                }
                // A GET that may store its answer leads or waits; the others go on their own.
                let may_lead = method == Method::GET
                    && !directives.no_store
                    && !waited
                    && !shared.coalesce_wait.is_zero();
                let leader = match may_lead.then(|| shared.coalescing.join(&key)) {
                    Some(Join::Wait(watched)) => {
                        shared.counters.add(Event::Coalesced);
                        coalesce::wait(watched, shared.coalesce_wait).await;
                        waited = true;
                        continue;
                    }
                    Some(Join::Lead(leader)) => Some(leader),
                    None => None,
                };
                let Some(stored) = stored else {
                    shared.counters.add(Event::Miss);
                    let fwd = if variants.is_some() {
                        "vary-miss"
                    } else {
                        "uri-miss"
                    };
                    let fwd = format!("fwd={fwd}{collapsed}");
                    return forward(&shared, &mut inner, request, key, &directives, fwd, leader)
                        .await;
                };
                return revalidate(
                    &shared,
                    &mut inner,
                    request,
                    key,
                    &stored,
                    &directives,
                    leader,
                )
                .await;
            }
        }
    }
}

/// A method that is not GET or HEAD goes to the origin; an unsafe one that succeeds
/// invalidates its target URI and the same-origin `Location` and `Content-Location` (RFC 9111
/// §4.4).
async fn pass_unsafe<S, ReqBody, ResBody>(
    shared: &Shared,
    inner: &mut S,
    request: Request<ReqBody>,
    key: Arc<str>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    let safe = matches!(*request.method(), Method::OPTIONS | Method::TRACE);
    let host = key[..key.find('/').unwrap_or(key.len())].to_string();
    let response = inner.call(request).await?;
    let status = response.status();
    if !safe && (status.is_success() || status.is_redirection()) {
        let targets = [header::LOCATION, header::CONTENT_LOCATION]
            .into_iter()
            .filter_map(|name| same_origin_key(&host, response.headers().get(name)));
        for target in std::iter::once(key.to_string()).chain(targets) {
            shared.store.remove(&target);
            shared.publish(&host, &webhook::Action::invalidate_key(target));
        }
    }
    let mut response = response.map(|body| CacheBody::origin(body, None));
    set_status(&mut response, "fwd=method".into());
    Ok(response)
}

/// The key of a `Location` or `Content-Location` on `host`: a path, or an absolute URI on
/// the same host.
fn same_origin_key(host: &str, value: Option<&HeaderValue>) -> Option<String> {
    let uri: Uri = value?.to_str().ok()?.parse().ok()?;
    match uri.authority() {
        Some(authority) if !authority.as_str().eq_ignore_ascii_case(host) => None,
        _ => Some(format!("{host}{}", uri.path_and_query()?.as_str())),
    }
}

/// Sends the request to the origin and passes the answer on, storing it on the way when it
/// is storable.
async fn forward<S, ReqBody, ResBody>(
    shared: &Arc<Shared>,
    inner: &mut S,
    request: Request<ReqBody>,
    key: Arc<str>,
    directives: &RequestDirectives,
    status: String,
    leader: Option<Leader>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    let method = request.method().clone();
    let request_headers = request.headers().clone();
    let request_time = shared.wall.now();
    let Some(result) = ask(shared, inner, request).await else {
        return Ok(origin_timeout(&status));
    };
    let response = result?;
    let response_time = shared.wall.now();
    Ok(store_on_the_way(
        shared,
        key,
        &method,
        &request_headers,
        directives,
        response,
        (request_time, response_time),
        status,
        leader,
    ))
}

/// Passes an origin's response on, copying its body into the store if it is storable.
#[allow(clippy::too_many_arguments)]
fn store_on_the_way<ResBody>(
    shared: &Arc<Shared>,
    key: Arc<str>,
    method: &Method,
    request_headers: &HeaderMap,
    directives: &RequestDirectives,
    response: Response<ResBody>,
    (request_time, response_time): (SystemTime, SystemTime),
    status: String,
    leader: Option<Leader>,
) -> Response<CacheBody<ResBody>>
where
    ResBody: Body<Data = Bytes>,
{
    let (parts, body) = response.into_parts();
    let response_directives = ResponseDirectives::parse(&parts.headers);
    let view = policy::Response {
        status: parts.status,
        headers: &parts.headers,
        directives: &response_directives,
    };
    let mut verdict = policy::storable(method, request_headers, directives, &view, shared.ttl);
    let too_big = body
        .size_hint()
        .exact()
        .or_else(|| content_length(&parts.headers))
        .is_some_and(|len| len > shared.max_object_size as u64);
    if too_big && verdict.is_ok() {
        verdict = Err(NotStored::TooBig);
    }
    let lifetime = policy::freshness_lifetime(&view, response_time, shared.ttl);
    let mut copy = match verdict {
        Ok(()) => {
            let mut headers = parts.headers.clone();
            policy::remove_unstored_fields(&mut headers, &response_directives);
            let vary = policy::vary_names(&parts.headers)
                .map(|name| {
                    let value = policy::selecting_value(request_headers, &name);
                    (name, value)
                })
                .collect();
            let timing = Timing {
                request_time,
                response_time,
                date: policy::date(&parts.headers),
                age_value: policy::age_value(&parts.headers),
                lifetime,
            };
            Some(Copy {
                shared: Arc::clone(shared),
                key,
                stored: Stored {
                    status: parts.status,
                    headers,
                    body: Bytes::new(),
                    timing,
                    directives: response_directives,
                    vary,
                },
                bytes: BytesMut::new(),
                _leader: leader,
            })
        }
        Err(_) => None,
    };
    // A body that has ended already (a 204, an empty 200) may never be polled: stored now.
    if body.is_end_stream() {
        if let Some(copy) = copy.take() {
            copy.finish();
        }
    }
    let detail = match verdict {
        Ok(()) => "; stored".to_string(),
        Err(reason) => format!("; detail={}", reason.detail()),
    };
    let mut response = Response::from_parts(parts, CacheBody::origin(body, copy));
    let fwd_status = response.status().as_u16();
    set_status(
        &mut response,
        format!("{status}; fwd-status={fwd_status}{detail}"),
    );
    response
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Asks the origin whether the stored response is still good (RFC 9111 §4.3), with its
/// validators; a 304 refreshes it, an error may be answered stale (`stale-if-error`).
async fn revalidate<S, ReqBody, ResBody>(
    shared: &Arc<Shared>,
    inner: &mut S,
    mut request: Request<ReqBody>,
    key: Arc<str>,
    stored: &Arc<Stored>,
    directives: &RequestDirectives,
    leader: Option<Leader>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    shared.counters.add(Event::Revalidation);
    let method = request.method().clone();
    let client_headers = request.headers().clone();
    conditional(request.headers_mut(), stored);
    let request_time = shared.wall.now();
    let result = ask(shared, inner, request).await;
    let now = shared.wall.now();
    let stale_ok = policy::stale_if_error(&stored.timing, &stored.directives, directives, now);
    let response = match result {
        None if stale_ok => {
            shared.counters.add(Event::Stale);
            let status = "hit; fwd=stale; detail=stale-if-error".to_string();
            return Ok(answer(stored, &client_headers, &method, now, status));
        }
        None => return Ok(origin_timeout("fwd=stale")),
        Some(result) => result,
    };
    let response = match response {
        Ok(response) if response.status().is_server_error() && stale_ok => {
            shared.counters.add(Event::Stale);
            let status = format!(
                "hit; fwd=stale; fwd-status={}; detail=stale-if-error",
                response.status().as_u16()
            );
            return Ok(answer(stored, &client_headers, &method, now, status));
        }
        Err(_) if stale_ok => {
            shared.counters.add(Event::Stale);
            return Ok(answer(
                stored,
                &client_headers,
                &method,
                now,
                "hit; fwd=stale; detail=stale-if-error".into(),
            ));
        }
        Err(error) => return Err(error),
        Ok(response) => response,
    };
    if response.status() == StatusCode::NOT_MODIFIED {
        let updated = refreshed(shared, stored, response.headers(), request_time, now);
        let updated = Arc::new(updated);
        let answer = answer(
            &updated,
            &client_headers,
            &method,
            now,
            "fwd=stale; fwd-status=304".into(),
        );
        shared.store_response(key, updated);
        return Ok(answer);
    }
    Ok(store_on_the_way(
        shared,
        key,
        &method,
        &client_headers,
        directives,
        response,
        (request_time, now),
        "fwd=stale".into(),
        leader,
    ))
}

/// The stored response after a 304: its headers merged in, its age starting again.
fn refreshed(
    shared: &Shared,
    stored: &Stored,
    not_modified: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Stored {
    let mut merged = stored.updated(not_modified, stored.timing.clone());
    let view = policy::Response {
        status: merged.status,
        headers: &merged.headers,
        directives: &merged.directives,
    };
    let lifetime = policy::freshness_lifetime(&view, response_time, shared.ttl);
    merged.timing = Timing {
        request_time,
        response_time,
        date: policy::date(not_modified).or(policy::date(&merged.headers)),
        age_value: policy::age_value(not_modified),
        lifetime,
    };
    merged
}

/// Replaces the client's conditional fields with the stored response's validators.
fn conditional(headers: &mut HeaderMap, stored: &Stored) {
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ] {
        headers.remove(name);
    }
    if let Some(etag) = stored.headers.get(header::ETAG) {
        headers.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = stored.headers.get(header::LAST_MODIFIED) {
        headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
    }
}

/// `stale-while-revalidate`: one background revalidation per key at a time, with the
/// stored response's validators and the request's selecting headers.
fn refresh_in_background<S, ReqBody, ResBody>(
    shared: &Arc<Shared>,
    inner: S,
    request: &Request<ReqBody>,
    key: Arc<str>,
    stored: &Arc<Stored>,
) where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    {
        let mut refreshing = shared.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        if !refreshing.insert(Arc::clone(&key)) {
            return;
        }
    }
    let mut refresh = Request::new(ReqBody::default());
    *refresh.uri_mut() = request.uri().clone();
    *refresh.version_mut() = request.version();
    *refresh.headers_mut() = request.headers().clone();
    let shared = Arc::clone(shared);
    let stored = Arc::clone(stored);
    spawn(async move {
        fetch_for_store(&shared, inner, refresh, Arc::clone(&key), Some(&stored)).await;
        shared
            .refreshing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    });
}

/// A refresh or a prefetch that warming asked for, in the background, if one of the
/// [`warm::MAX_FETCHES`] slots is free; warming hears of it if nothing is stored.
fn warm_in_background<S, ReqBody, ResBody>(
    shared: &Arc<Shared>,
    warmer: &Arc<Warmer>,
    inner: S,
    replay: &Arc<Replay>,
    stored: Option<Arc<Stored>>,
) where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let Ok(permit) = Arc::clone(&warmer.fetches).try_acquire_owned() else {
        warmer.failed(&replay.key);
        return;
    };
    let shared = Arc::clone(shared);
    let warmer = Arc::clone(warmer);
    let replay = Arc::clone(replay);
    spawn(async move {
        let key = Arc::clone(&replay.key);
        let request = replay.request();
        if !fetch_for_store(&shared, inner, request, key, stored.as_ref()).await {
            warmer.failed(&replay.key);
        }
        drop(permit);
    });
}

/// Starts, once per layer, the task that makes warming's refreshes when they come due. It
/// holds the layer's state weakly and ends with it.
fn start_refresher<S, ReqBody, ResBody>(shared: &Arc<Shared>, warmer: &Arc<Warmer>, inner: &S)
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Default + Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    if warmer
        .refresher_started
        .swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        return;
    }
    let weak = Arc::downgrade(shared);
    let inner = inner.clone();
    spawn(async move {
        loop {
            let Some(shared) = weak.upgrade() else {
                return;
            };
            let Some(warmer) = shared.warmer.clone() else {
                return;
            };
            let now = shared.wall.now();
            let wait = warmer
                .next_due()
                .map_or(warm::MAX_IDLE, |due| {
                    due.saturating_sub(warmer.since_start(now))
                })
                .min(warm::MAX_IDLE);
            if wait.is_zero() {
                let free = warmer.fetches.available_permits();
                for replay in warmer.due(now, free) {
                    let stored = shared
                        .store
                        .get(&replay.key)
                        .and_then(|variants| variants.iter().next().cloned());
                    warm_in_background(&shared, &warmer, inner.clone(), &replay, stored);
                }
            }
            drop(shared);
            // At least a millisecond, so that a refresh that cannot start yet is not polled
            // in a loop.
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    });
}

/// Spawns `task` on the current tokio runtime, if there is one.
fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(task);
    }
}

/// A request the cache makes on its own: a revalidation of `stored`, or a fetch when there is
/// none, read to its end so that a storable answer reaches the store. Whether it was stored
/// (or refreshed by a 304).
async fn fetch_for_store<S, ReqBody, ResBody>(
    shared: &Arc<Shared>,
    mut inner: S,
    request: Request<ReqBody>,
    key: Arc<str>,
    stored: Option<&Arc<Stored>>,
) -> bool
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    if std::future::poll_fn(|cx| inner.poll_ready(cx))
        .await
        .is_err()
    {
        return false;
    }
    let directives = RequestDirectives::default();
    let result = match stored {
        Some(stored) => {
            revalidate(shared, &mut inner, request, key, stored, &directives, None).await
        }
        None => {
            let status = "fwd=uri-miss".to_string();
            forward(shared, &mut inner, request, key, &directives, status, None).await
        }
    };
    let Ok(response) = result else {
        return false;
    };
    let stored = response
        .headers()
        .get_all(CACHE_STATUS)
        .iter()
        .any(|status| {
            let status = status.to_str().unwrap_or("");
            status.contains("; stored") || status.contains("fwd-status=304")
        });
    // Read to its end, so that a new body reaches the store.
    let mut body = std::pin::pin!(response.into_body());
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        if frame.is_err() {
            return false;
        }
    }
    stored
}

/// The answer from a stored response: 304 when the client's own conditionals match it,
/// otherwise the stored status, headers and body (none for HEAD), with `Age`.
fn answer<B>(
    stored: &Stored,
    request: &HeaderMap,
    method: &Method,
    now: SystemTime,
    status: String,
) -> Response<CacheBody<B>> {
    let age = stored.timing.current_age(now).as_secs();
    let ttl = stored.timing.lifetime.as_secs() as i64 - age as i64;
    let status = format!("{status}; ttl={ttl}");
    if policy::not_modified(request, &stored.headers) {
        let mut response = Response::new(CacheBody::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        for name in [
            header::CACHE_CONTROL,
            header::CONTENT_LOCATION,
            header::DATE,
            header::ETAG,
            header::EXPIRES,
            header::VARY,
            header::LAST_MODIFIED,
        ] {
            for value in stored.headers.get_all(&name) {
                response.headers_mut().append(name.clone(), value.clone());
            }
        }
        response
            .headers_mut()
            .insert(header::AGE, HeaderValue::from(age));
        set_status(&mut response, status);
        return response;
    }
    let body = if method == Method::HEAD {
        CacheBody::empty()
    } else {
        CacheBody::stored(stored.body.clone())
    };
    let mut response = Response::new(body);
    *response.status_mut() = stored.status;
    *response.headers_mut() = stored.headers.clone();
    response
        .headers_mut()
        .insert(header::AGE, HeaderValue::from(age));
    set_status(&mut response, status);
    response
}

/// The origin's answer, or `None` when its head did not come within `origin_timeout`.
async fn ask<S, ReqBody, ResBody>(
    shared: &Shared,
    inner: &mut S,
    request: Request<ReqBody>,
) -> Option<Result<Response<ResBody>, S::Error>>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    tokio::time::timeout(shared.origin_timeout, inner.call(request))
        .await
        .ok()
}

/// The origin did not answer within `origin_timeout`, and nothing stale may stand in: 504.
fn origin_timeout<B>(status: &str) -> Response<CacheBody<B>> {
    tracing::warn!("the origin did not answer within origin_timeout; answered 504");
    let mut response = text(
        StatusCode::GATEWAY_TIMEOUT,
        "gateway timeout: the origin did not answer in time\n",
    );
    set_status(&mut response, format!("{status}; detail=origin-timeout"));
    response
}

/// `only-if-cached` without a usable stored response: 504 (RFC 9111 §5.2.1.7).
fn only_if_cached<B>() -> Response<CacheBody<B>> {
    let mut response = text(
        StatusCode::GATEWAY_TIMEOUT,
        "gateway timeout: not in the cache (only-if-cached)\n",
    );
    set_status(&mut response, "detail=only-if-cached".into());
    response
}

/// The cache's own answer: a status and a short plain-text body.
fn text<B>(status: StatusCode, text: &'static str) -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::stored(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Adds this cache's `Cache-Status` entry, after those of caches nearer the origin.
fn set_status<B>(response: &mut Response<B>, params: String) {
    if let Ok(value) = HeaderValue::from_str(&format!("{NAME}; {params}")) {
        response.headers_mut().append(CACHE_STATUS, value);
    }
}
