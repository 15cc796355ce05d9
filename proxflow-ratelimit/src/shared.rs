//! The state a layer's services share, and the decision for one request: pass it on, hold it,
//! or answer for the inner service.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{header, Response, StatusCode};
use proxflow_core::{text_response, LayerBody};

use crate::algorithm::{Nanos, Rate, Verdict};
use crate::config::{check_quota, LimitHeaders, MissingKey, Quota, Reject};
use crate::headers::{self, LimitFields, LimitState};
use crate::key::{Key, KeyHash, KeyRules, RequestView};
use crate::limiter::{capacity, Limiter, LimiterClock, Tables};
use crate::stats::{Counter, Counters, KeyUsage, LayerState};

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
    /// The counters and the handles' view, kept by the layer through its builder calls.
    pub(crate) state: Arc<LayerState>,
    /// Whether a quota resolver's quota that cannot be timed was reported already.
    pub(crate) warned_bad_quota: AtomicBool,
    /// Whether a request of an `ip` layer without a client address was reported already.
    pub(crate) warned_no_client_address: AtomicBool,
    /// The Redis mode's exact mode: every decision is Redis's.
    #[cfg(feature = "redis")]
    pub(crate) remote: Option<Arc<crate::remote::Remote>>,
    /// The Redis mode's synced mode: decisions are local, counts shared every interval.
    #[cfg(feature = "redis")]
    pub(crate) synced: Option<crate::remote::synced::Synced>,
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
pub(crate) enum Decision {
    Pass(Option<LimitFields>),
    Hold {
        wait: Nanos,
        fields: Option<LimitFields>,
    },
    Answer(Answer),
    /// Redis decides: the service awaits [`Shared::decide_remote`].
    #[cfg(feature = "redis")]
    Remote(RemoteCheck),
}

/// What a request needs to be decided by Redis, taken from it before it is held.
#[cfg(feature = "redis")]
pub(crate) struct RemoteCheck {
    key: Vec<u8>,
    /// The key of the instance's own limiter, for `fail_open`.
    local: crate::key::KeyHash,
    tier: Option<Arc<Limiter>>,
}

/// A response the layer gives itself, built when its future is polled: the decision and the
/// future carry these few words instead of a response.
pub(crate) enum Answer {
    MissingKey,
    Limited {
        retry_after: Nanos,
        fields: Option<LimitFields>,
        /// With `mark_refusals`: the limit that refused it.
        mark: Option<Rate>,
    },
    Drop,
    /// The Redis mode's `fail_closed` while Redis cannot answer.
    #[cfg(feature = "redis")]
    Unavailable,
}

impl Answer {
    pub(crate) fn into_response<B>(self) -> Response<LayerBody<B>> {
        match self {
            Answer::MissingKey => {
                text_response(StatusCode::BAD_REQUEST, &"missing rate limit key\n")
            }
            Answer::Drop => {
                let mut response = Response::new(LayerBody::abort());
                *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                response
            }
            #[cfg(feature = "redis")]
            Answer::Unavailable => {
                let mut response = text_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &"rate limit store unavailable\n",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, headers::retry_after(1_000_000_000));
                response
            }
            Answer::Limited {
                retry_after,
                fields,
                mark,
            } => {
                let mut response =
                    text_response(StatusCode::TOO_MANY_REQUESTS, &"too many requests\n");
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
    pub(crate) fn decide(&self, view: &RequestView<'_>, known: Option<KeyHash>) -> Decision {
        #[cfg(feature = "redis")]
        if let Some(remote) = &self.remote {
            return self.remote_check(remote, view);
        }
        #[cfg(feature = "redis")]
        if let Some(synced) = &self.synced {
            return self.decide_synced(synced, view, known);
        }
        // The global key uses governor's lock-free direct limiter: no key to hash.
        let global = matches!(self.rules.kind, Key::Global);
        let found = if global {
            None
        } else {
            known.or_else(|| self.rules.key(view))
        };
        let key = match found {
            _ if global => None,
            Some(key) => Some(key),
            None => match self.no_key() {
                Some(decision) => return decision,
                None => Some(self.rules.missing()),
            },
        };
        let tier = self.tier_of(view);
        let limiter = tier.as_deref().unwrap_or(&self.limiter);
        let verdict = limiter.check(key, self.max_wait(), self.report());
        self.judge(verdict, *limiter.rate())
    }

    /// A request without the key: counted, then `None` if it shares the missing key's bucket,
    /// or what it gets instead.
    fn no_key(&self) -> Option<Decision> {
        self.counters().add(Counter::MissingKey);
        if matches!(self.rules.kind, Key::Ip) {
            self.no_client_address();
        }
        match self.missing_key {
            MissingKey::Shared => None,
            MissingKey::Allow => Some(Decision::Pass(None)),
            MissingKey::Reject => Some(Decision::Answer(Answer::MissingKey)),
        }
    }

    /// The limiter of the request's quota tier, if a resolver gives it one.
    #[inline]
    fn tier_of(&self, view: &RequestView<'_>) -> Option<Arc<Limiter>> {
        self.resolver
            .as_ref()
            .and_then(|resolve| resolve(view))
            .and_then(|quota| self.tier(quota))
    }

    #[inline]
    fn max_wait(&self) -> Nanos {
        if self.reject == Reject::Delay {
            self.max_delay
        } else {
            0
        }
    }

    /// Whether an admission's figures are shown: only on allowed answers with their fields.
    #[inline]
    fn report(&self) -> bool {
        self.headers == LimitHeaders::Always
    }

    /// What a verdict of a limiter of `rate` makes of the request.
    fn judge(&self, verdict: Verdict, rate: Rate) -> Decision {
        match verdict {
            Verdict::Admit {
                wait: 0,
                remaining,
                reset_after,
            } => {
                self.counters().add(Counter::Allowed);
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
                    self.counters().add(Counter::ShadowLimited);
                    tracing::debug!(wait_ms = wait / 1_000_000, "shadow mode: would delay");
                    return Decision::Pass(self.allowed_fields(&state));
                }
                self.counters().add(Counter::Delayed);
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
                    self.counters().add(Counter::ShadowLimited);
                    tracing::debug!(
                        retry_after_ms = retry_after / 1_000_000,
                        "shadow mode: would limit"
                    );
                    return Decision::Pass(self.allowed_fields(&state));
                }
                if self.reject == Reject::Drop {
                    self.counters().add(Counter::Dropped);
                    tracing::debug!("rate limited: dropping the connection");
                    return Decision::Answer(Answer::Drop);
                }
                self.counters().add(Counter::Limited);
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

    /// The Redis mode's part of a decision that needs the request: its key under its quota.
    #[cfg(feature = "redis")]
    fn remote_check(&self, remote: &crate::remote::Remote, view: &RequestView<'_>) -> Decision {
        use crate::remote::{Remote, StableKeys};
        let key = match self.rules.key_with(view, &StableKeys) {
            Some(key) => key,
            None => match self.no_key() {
                Some(decision) => return decision,
                None => Remote::missing_key(),
            },
        };
        let tier = self.tier_of(view);
        let limiter = tier.as_deref().unwrap_or(&self.limiter);
        let quota = limiter
            .remote
            .as_ref()
            .expect("the limiters of a Redis layer have a Redis quota");
        let (key, local) = remote.key(key, quota);
        Decision::Remote(RemoteCheck { key, local, tier })
    }

    /// The synced mode's decision: the instance's own limiter's, noted for the next sync. The
    /// global key is keyed here (governor's direct limiter keeps its state where a sync cannot
    /// fold into it).
    #[cfg(feature = "redis")]
    fn decide_synced(
        &self,
        synced: &crate::remote::synced::Synced,
        view: &RequestView<'_>,
        known: Option<KeyHash>,
    ) -> Decision {
        use crate::remote::{Remote, StableKeys};
        let (key, missing) = match known.or_else(|| self.rules.key(view)) {
            Some(key) => (key, false),
            None => match self.no_key() {
                Some(decision) => return decision,
                None => (self.rules.missing(), true),
            },
        };
        let tier = self.tier_of(view);
        let limiter = tier.as_deref().unwrap_or(&self.limiter);
        let verdict = limiter.check(Some(key), self.max_wait(), self.report());
        let admitted = matches!(verdict, Verdict::Admit { .. });
        let now = self.clock.now_ns();
        synced.record(&self.limiter, tier.as_ref(), key, admitted, now, || {
            let stable = if missing {
                Remote::missing_key()
            } else {
                self.rules
                    .key_with(view, &StableKeys)
                    .unwrap_or_else(Remote::missing_key)
            };
            let quota = limiter
                .remote
                .as_ref()
                .expect("the limiters of a Redis layer have a Redis quota");
            Remote::digest(stable, quota).0
        });
        self.judge(verdict, *limiter.rate())
    }

    /// The Redis mode's decision: Redis's verdict, or the `on_unavailable` policy's when Redis
    /// cannot answer within the timeout.
    #[cfg(feature = "redis")]
    pub(crate) async fn decide_remote(self: Arc<Self>, check: RemoteCheck) -> Decision {
        use crate::config::OnUnavailable;
        let remote = self
            .remote
            .as_ref()
            .expect("a remote check comes from a Redis layer");
        let limiter = check.tier.as_deref().unwrap_or(&self.limiter);
        let quota = limiter
            .remote
            .as_ref()
            .expect("the limiters of a Redis layer have a Redis quota");
        let verdict = match remote.check(&check.key, quota).await {
            Ok(verdict) => verdict,
            Err(()) => match remote.on_unavailable {
                OnUnavailable::FailOpen => {
                    self.counters().add(Counter::FailOpen);
                    limiter.check(Some(check.local), self.max_wait(), self.report())
                }
                OnUnavailable::FailClosed => {
                    self.counters().add(Counter::FailClosed);
                    return Decision::Answer(Answer::Unavailable);
                }
            },
        };
        self.judge(verdict, *limiter.rate())
    }

    /// The limiter of a resolved quota, made on first use.
    fn tier(&self, quota: Quota) -> Option<Arc<Limiter>> {
        if let Some(limiter) = self.tiers.read().ok()?.get(&quota) {
            return Some(Arc::clone(limiter));
        }
        if let Err(error) = check_quota(quota.rate, quota.per, quota.burst) {
            // Not a limit the algorithms can time, and unlimited is the wrong way for a
            // resolver's bug to fail. Once per layer: every request of such a tier comes here.
            if first(&self.warned_bad_quota) {
                tracing::warn!(
                    ?quota,
                    %error,
                    "quota resolver returned a quota the layer cannot time; using the layer's quota"
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
        let limiter = tiers.entry(quota).or_insert_with(|| {
            let limiter = Limiter::new(&self.tables, rate, &self.clock, salt);
            #[cfg(feature = "redis")]
            let limiter = limiter.with_remote(self.any_remote().map(|remote| {
                remote.quota(&rate, self.max_wait(), self.header_cache.policy_name())
            }));
            Arc::new(limiter)
        });
        Some(Arc::clone(limiter))
    }

    /// The connection of either Redis mode.
    #[cfg(feature = "redis")]
    fn any_remote(&self) -> Option<&crate::remote::Remote> {
        self.remote
            .as_deref()
            .or(self.synced.as_ref().map(|synced| &*synced.remote))
    }

    fn allowed_fields(&self, state: &LimitState) -> Option<LimitFields> {
        (self.headers == LimitHeaders::Always)
            .then(|| self.header_cache.fields(state, self.legacy_headers))
    }

    #[inline]
    fn counters(&self) -> &Counters {
        &self.state.counters
    }

    /// An `ip` layer's request without a client address: the server recorded no peer, so the
    /// request has no key, and all such requests would share one bucket unnoticed.
    #[cold]
    fn no_client_address(&self) {
        self.counters().add(Counter::NoClientAddress);
        if first(&self.warned_no_client_address) {
            tracing::warn!(
                missing_key = ?self.missing_key,
                "rate limit key `ip`: a request has no client address, so such requests get \
                 `missing_key` (by default one bucket shared by every client). Serve axum with \
                 `into_make_service_with_connect_info::<SocketAddr>()`, give a hyper service \
                 its peer with `RateLimit::with_peer`, or insert a `ClientAddr` into each \
                 request. Warned once per layer; the stats count them as `no_client_address`"
            );
        }
    }
}

impl KeyUsage for Shared {
    fn key_usage(&self) -> (usize, usize) {
        (self.tables.len(), self.tables.bytes())
    }

    fn redis_connected(&self) -> Option<bool> {
        #[cfg(feature = "redis")]
        if let Some(remote) = self.any_remote() {
            return remote.connected();
        }
        None
    }

    fn synced(&self) -> (u64, u64, u64) {
        #[cfg(feature = "redis")]
        if let Some(synced) = &self.synced {
            return synced.figures();
        }
        (0, 0, 0)
    }
}

/// Whether this is the first time `flag` is raised. Reads before it writes, so that requests
/// that find it raised do not contend for its cache line.
fn first(flag: &AtomicBool) -> bool {
    !flag.load(Ordering::Relaxed) && !flag.swap(true, Ordering::Relaxed)
}
