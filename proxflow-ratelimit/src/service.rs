//! The service: decides per request, then passes it on, holds it, or answers for the inner
//! service.

use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::algorithm::{Nanos, Rate, Verdict};
use crate::body::{RateLimitBody, Text};
use crate::config::{LimitHeaders, MissingKey, Reject};
use crate::headers::{self, LimitFields, LimitState};
use crate::key::{self, KeyHash, KeyKind, KeyRules, RequestView};
use crate::layer::{capacity, Quota};
use crate::limiter::{Limiter, LimiterClock, Tables};
use crate::stats::{Counter, Counters};

/// Picks the quota of a request (API-key tiers); `None` uses the layer's own.
pub(crate) type QuotaResolver = Arc<dyn Fn(&RequestView<'_>) -> Option<Quota> + Send + Sync>;

/// More distinct quotas than this and the resolver's answer is ignored (with a warning):
/// tiers are few, and each keeps a governor limiter.
const MAX_QUOTAS: usize = 64;

/// Fixed settings and state shared by a layer and its services.
pub(crate) struct Shared {
    pub(crate) rules: KeyRules,
    /// The key table every quota shares, so that `max_keys` bounds the whole layer.
    pub(crate) tables: Tables,
    pub(crate) clock: LimiterClock,
    pub(crate) limiter: Limiter,
    pub(crate) resolver: Option<QuotaResolver>,
    pub(crate) tiers: RwLock<HashMap<Quota, Arc<Limiter>>>,
    pub(crate) reject: Reject,
    pub(crate) max_delay: Nanos,
    pub(crate) missing_key: MissingKey,
    pub(crate) shadow: bool,
    pub(crate) headers: LimitHeaders,
    pub(crate) legacy_headers: bool,
    pub(crate) mark_refusals: bool,
    /// The default quota's header values (other quotas' are formatted per answer).
    pub(crate) header_cache: headers::HeaderCache,
    pub(crate) counters: Counters,
    /// Whether a quota resolver's `rate` 0 or `per` zero was reported already.
    pub(crate) warned_bad_quota: AtomicBool,
}

/// Put into the extensions of every 429 this layer answers when
/// [`mark_refusals`](crate::RateLimitLayer::mark_refusals) is on, for outer layers and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// When the same request would be admitted.
    pub retry_after: Duration,
    /// The limit that refused it: `rate` requests per `per`.
    pub rate: u32,
    /// The period of `rate`.
    pub per: Duration,
}

/// What happens to one request.
enum Decision {
    Pass(Option<LimitFields>),
    Hold {
        wait: Nanos,
        fields: Option<LimitFields>,
    },
    Answer(Answer),
}

/// A response the layer gives itself, built when its future is polled: the decision and the
/// future carry these few words instead of a response.
enum Answer {
    MissingKey,
    Limited {
        retry_after: Nanos,
        fields: Option<LimitFields>,
        /// With `mark_refusals`: the limit that refused it.
        mark: Option<Rate>,
    },
    Drop,
}

impl Answer {
    fn into_response<B>(self) -> Response<RateLimitBody<B>> {
        match self {
            Answer::MissingKey => plain(
                StatusCode::BAD_REQUEST,
                RateLimitBody::text(Text::MissingKey),
            ),
            Answer::Drop => plain(StatusCode::TOO_MANY_REQUESTS, RateLimitBody::abort()),
            Answer::Limited {
                retry_after,
                fields,
                mark,
            } => {
                let mut response = plain(
                    StatusCode::TOO_MANY_REQUESTS,
                    RateLimitBody::text(Text::TooManyRequests),
                );
                let headers = response.headers_mut();
                headers.insert(header::RETRY_AFTER, headers::retry_after(retry_after));
                if let Some(fields) = fields {
                    fields.add_to(headers);
                }
                if let Some(rate) = mark {
                    response.extensions_mut().insert(RateLimited {
                        retry_after: Duration::from_nanos(retry_after),
                        rate: rate.rate,
                        per: Duration::from_nanos(rate.per_ns),
                    });
                }
                response
            }
        }
    }
}

impl Shared {
    /// `known`: the request's key if the caller knows it already (a connection's `ip` key).
    fn decide(&self, view: &RequestView<'_>, known: Option<KeyHash>) -> Decision {
        // The global key uses governor's lock-free direct limiter: no key to hash.
        let global = matches!(self.rules.kind, KeyKind::Global);
        let found = if global {
            None
        } else {
            known.or_else(|| self.rules.key(view))
        };
        let key = match found {
            _ if global => None,
            Some(key) => Some(key),
            None => {
                self.counters.add(Counter::MissingKey);
                match self.missing_key {
                    MissingKey::Shared => Some(self.rules.missing()),
                    MissingKey::Allow => return Decision::Pass(None),
                    MissingKey::Reject => return Decision::Answer(Answer::MissingKey),
                }
            }
        };
        let tier = self
            .resolver
            .as_ref()
            .and_then(|resolve| resolve(view))
            .and_then(|quota| self.tier(quota));
        let limiter = tier.as_deref().unwrap_or(&self.limiter);
        let max_wait = if self.reject == Reject::Delay {
            self.max_delay
        } else {
            0
        };
        let rate = *limiter.rate();
        // What an admission reports is shown only on allowed answers with their fields.
        let report = self.headers == LimitHeaders::Always;
        match limiter.check(key, max_wait, report) {
            Verdict::Admit {
                wait: 0,
                remaining,
                reset_after,
            } => {
                self.counters.add(Counter::Allowed);
                Decision::Pass(self.allowed_fields(&LimitState {
                    rate,
                    remaining,
                    reset_after,
                }))
            }
            Verdict::Admit {
                wait,
                remaining,
                reset_after,
            } => {
                let state = LimitState {
                    rate,
                    remaining,
                    reset_after,
                };
                if self.shadow {
                    // The request keeps the slot it reserved, as with nginx's
                    // `limit_req_dry_run`: later requests are judged as they would be with the
                    // limit on, so the shadow count is what delay and 429 would have been.
                    self.counters.add(Counter::ShadowLimited);
                    tracing::debug!(wait_ms = wait / 1_000_000, "shadow mode: would delay");
                    return Decision::Pass(self.allowed_fields(&state));
                }
                self.counters.add(Counter::Delayed);
                tracing::debug!(wait_ms = wait / 1_000_000, "rate limited: delaying");
                Decision::Hold {
                    wait,
                    fields: self.allowed_fields(&state),
                }
            }
            Verdict::Refuse { retry_after } => {
                // Nothing is left until the retry time: that is the draft's effective window
                // for `r=0`, and a `Retry-After` earlier than the window's end would contradict
                // it (draft-ietf-httpapi-ratelimit-headers, "Server Behavior").
                let state = LimitState {
                    rate,
                    remaining: 0,
                    reset_after: retry_after,
                };
                if self.shadow {
                    self.counters.add(Counter::ShadowLimited);
                    tracing::debug!(
                        retry_after_ms = retry_after / 1_000_000,
                        "shadow mode: would limit"
                    );
                    return Decision::Pass(self.allowed_fields(&state));
                }
                if self.reject == Reject::Drop {
                    self.counters.add(Counter::Dropped);
                    tracing::debug!("rate limited: dropping the connection");
                    return Decision::Answer(Answer::Drop);
                }
                self.counters.add(Counter::Limited);
                tracing::debug!(retry_after_ms = retry_after / 1_000_000, "rate limited");
                let fields = (self.headers != LimitHeaders::Never)
                    .then(|| self.header_cache.fields(&state, self.legacy_headers));
                Decision::Answer(Answer::Limited {
                    retry_after,
                    fields,
                    mark: self.mark_refusals.then_some(rate),
                })
            }
        }
    }

    /// The limiter of a resolved quota, made on first use.
    fn tier(&self, quota: Quota) -> Option<Arc<Limiter>> {
        if let Some(limiter) = self.tiers.read().ok()?.get(&quota) {
            return Some(Arc::clone(limiter));
        }
        if quota.rate == 0 || quota.per.is_zero() {
            // Not a limit, and unlimited is the wrong way for a resolver's bug to fail. Once per
            // layer: every request of such a tier comes here.
            if !self.warned_bad_quota.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    ?quota,
                    "quota resolver returned rate 0 or per 0; using the layer's quota"
                );
            }
            return None;
        }
        let mut tiers = self.tiers.write().ok()?;
        if tiers.len() >= MAX_QUOTAS && !tiers.contains_key(&quota) {
            tracing::warn!(
                ?quota,
                "more than {MAX_QUOTAS} distinct quotas; using the default"
            );
            return None;
        }
        let rate = Rate::new(
            quota.rate,
            quota.per_ns(),
            capacity(self.tables.algorithm(), quota.burst),
        );
        let salt = self.rules.seed.hash_one(quota);
        let limiter = tiers
            .entry(quota)
            .or_insert_with(|| Arc::new(Limiter::new(&self.tables, rate, &self.clock, salt)));
        Some(Arc::clone(limiter))
    }

    fn allowed_fields(&self, state: &LimitState) -> Option<LimitFields> {
        (self.headers == LimitHeaders::Always)
            .then(|| self.header_cache.fields(state, self.legacy_headers))
    }

    pub(crate) fn key_usage(&self) -> (usize, usize) {
        (self.tables.len(), self.tables.bytes())
    }
}

fn plain<B>(status: StatusCode, body: RateLimitBody<B>) -> Response<RateLimitBody<B>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The service of a [`RateLimitLayer`](crate::RateLimitLayer).
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    /// The `ip` key of `peer`, hashed once for the connection.
    peer_key: Option<KeyHash>,
}

impl<S> RateLimit<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        RateLimit {
            inner,
            shared,
            peer: None,
            peer_key: None,
        }
    }

    /// The service of one connection, told its client's address: the `ip` key counts requests
    /// that carry no address of their own ([`ClientAddr`](crate::ClientAddr) or axum's
    /// `ConnectInfo` in the extensions) under `peer`. For hyper servers, which make a service
    /// per connection: tagging each request instead costs three allocations per request.
    /// Default: no peer.
    pub fn with_peer(mut self, peer: SocketAddr) -> Self {
        self.peer = Some(peer);
        self.peer_key = self.shared.rules.connection_key(peer);
        self
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

impl<S: std::fmt::Debug> std::fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("key", &self.shared.rules.kind)
            .field("peer", &self.peer)
            .finish()
    }
}

impl<S, B, ResBody> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<RateLimitBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let view = RequestView {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
            peer: self.peer,
        };
        let known = self
            .peer_key
            .filter(|_| key::tagged_addr(request.extensions()).is_none());
        let state = match self.shared.decide(&view, known) {
            Decision::Pass(fields) => State::Inner {
                future: self.inner.call(request),
                fields,
            },
            Decision::Hold { wait, fields } => State::Waiting {
                held: Box::pin(Held {
                    sleep: tokio::time::sleep(Duration::from_nanos(wait)),
                    service: self.inner.clone(),
                    request: Some(request),
                    fields,
                }),
            },
            Decision::Answer(answer) => State::Answered {
                answer: Some(answer),
            },
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// Future of [`RateLimit`].
    pub struct ResponseFuture<S, B>
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
        Answered { answer: Option<Answer> },
        // Boxed so that the future of an admitted request stays small (a `Sleep` and a
        // `Request` are most of 400 bytes, moved on the way to the server). The refusal is
        // small and not boxed: a flood of them is the path a limiter exists for.
        Waiting { held: Pin<Box<Held<S, B>>> },
        // The fields are made when the request is decided, so that the future holds no
        // reference to the layer. They sit beside the inner future (one pointer's worth): the
        // future of an admitted request is moved by a call to `memcpy` once it passes 128 bytes.
        Inner { #[pin] future: S::Future, fields: Option<LimitFields> },
    }
}

pin_project! {
    /// A request held until its turn.
    struct Held<S, B> {
        #[pin]
        sleep: Sleep,
        service: S,
        request: Option<Request<B>>,
        fields: Option<LimitFields>,
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<RateLimitBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Answered { answer } => {
                    let answer = answer.take().expect("polled after completion");
                    return Poll::Ready(Ok(answer.into_response()));
                }
                StateProj::Waiting { held } => {
                    let held = held.as_mut().project();
                    std::task::ready!(held.sleep.poll(cx));
                    std::task::ready!(held.service.poll_ready(cx))?;
                    let Some(request) = held.request.take() else {
                        unreachable!("called once")
                    };
                    let future = held.service.call(request);
                    let fields = held.fields.take();
                    state.set(State::Inner { future, fields });
                }
                StateProj::Inner { future, fields } => {
                    let mut response = std::task::ready!(future.poll(cx))?;
                    if let Some(fields) = fields.take() {
                        fields.add_to(response.headers_mut());
                    }
                    return Poll::Ready(Ok(response.map(RateLimitBody::inner)));
                }
            }
        }
    }
}
