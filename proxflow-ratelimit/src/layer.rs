//! [`RateLimitLayer`] and its builder.

use std::collections::HashMap;
use std::hash::RandomState;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use http::HeaderName;
use tower_layer::Layer;

use crate::algorithm::{nanos, Rate};
use crate::client_ip::{ForwardedHeader, TrustedProxies};
use crate::config::{Algorithm, LimitHeaders, MissingKey, RateLimitConfig, Reject};
use crate::error::ConfigError;
use crate::headers::HeaderCache;
use crate::key::{AddressHasher, KeyExtractor, KeyKind, KeyRules, RequestView};
use crate::limiter::{Limiter, LimiterClock, Tables};
use crate::service::{QuotaResolver, RateLimit, Shared};
use crate::stats::{Counters, Stats};

/// A quota: `rate` requests per `per`, with `burst`. Returned by a quota resolver for
/// per-key tiers. A quota with `rate` 0 or `per` zero is not a limit: the request gets the
/// layer's own quota instead, and a warning is logged (once per layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Requests per `per`; at least 1.
    pub rate: u32,
    /// The period; not zero.
    pub per: Duration,
    /// Capacity (token bucket) or line length (leaky bucket), as in
    /// [`RateLimitLayer::burst`].
    pub burst: u32,
}

impl Quota {
    pub(crate) fn per_ns(&self) -> u64 {
        nanos(self.per).max(1)
    }
}

/// Limits the rate of requests per key. Cheap to clone; clones share all state.
///
/// Builder methods state their defaults, which are those of [`RateLimitConfig`].
#[derive(Clone)]
pub struct RateLimitLayer {
    config: RateLimitConfig,
    custom_key: Option<Arc<dyn KeyExtractor>>,
    resolver: Option<QuotaResolver>,
    shared: Arc<OnceLock<Arc<Shared>>>,
}

impl RateLimitLayer {
    /// `rate` requests per `per` for each client address, token bucket, burst 5, 429.
    ///
    /// # Panics
    ///
    /// If `rate` is 0 or `per` is zero, as tower's `RateLimitLayer` does: neither is a limit.
    /// [`from_config`](Self::from_config) refuses them with an error instead.
    pub fn new(rate: u32, per: Duration) -> Self {
        assert!(rate > 0, "RateLimitLayer::new: rate must be at least 1");
        assert!(
            !per.is_zero(),
            "RateLimitLayer::new: per must be a positive duration"
        );
        let config = RateLimitConfig {
            rate,
            per,
            ..RateLimitConfig::default()
        };
        RateLimitLayer {
            config,
            custom_key: None,
            resolver: None,
            shared: Arc::default(),
        }
    }

    /// A layer from a checked configuration.
    pub fn from_config(config: &RateLimitConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(RateLimitLayer {
            config: config.clone(),
            custom_key: None,
            resolver: None,
            shared: Arc::default(),
        })
    }

    fn with(mut self, change: impl FnOnce(&mut RateLimitConfig)) -> Self {
        change(&mut self.config);
        self.shared = Arc::default();
        self
    }

    /// The algorithm. Default [`Algorithm::TokenBucket`].
    pub fn algorithm(self, algorithm: Algorithm) -> Self {
        self.with(|c| c.algorithm = algorithm)
    }

    /// Token bucket capacity, or how many may wait in a leaky bucket. Default 5.
    ///
    /// 0 means: for the token bucket, a capacity of 1 (one request per interval, no burst;
    /// [`from_config`](Self::from_config) refuses it); for the leaky bucket, no line (nginx
    /// `limit_req` without `burst`: a request that would wait is refused, unless
    /// [`Reject::Delay`] lets it wait up to `max_delay`); the sliding windows have no burst and
    /// ignore it.
    pub fn burst(self, burst: u32) -> Self {
        self.with(|c| c.burst = burst)
    }

    /// The key: `ip`, `user`, `api_key`, `header:<name>` or `global`. Default `ip`.
    ///
    /// A request may carry its key more than once (two `X-Tenant` lines, two `X-Api-Key` or
    /// user header lines, `?api_key=a&api_key=b`): the first value counts, in headers and in
    /// the query alike, as [`http::HeaderMap::get`] and most frameworks read headers. A backend
    /// that reads another one (the last query parameter, as some frameworks do, or every line)
    /// should be keyed with a [`key_extractor`](Self::key_extractor) that reads the same, or a
    /// client is counted under one key and served under another.
    pub fn key(self, key: &str) -> Result<Self, ConfigError> {
        KeyKind::parse(key)?;
        Ok(self.with(|c| c.key = key.to_string()))
    }

    /// A key of your own (a closure over [`RequestView`] works); replaces `key`.
    pub fn key_extractor(mut self, extractor: impl KeyExtractor) -> Self {
        self.custom_key = Some(Arc::new(extractor));
        self.shared = Arc::default();
        self
    }

    /// A per-request quota (API-key tiers); `None` keeps the layer's. Each distinct quota keeps
    /// its own key table. Default: none.
    pub fn quota_resolver(
        mut self,
        resolve: impl Fn(&RequestView<'_>) -> Option<Quota> + Send + Sync + 'static,
    ) -> Self {
        self.resolver = Some(Arc::new(resolve));
        self.shared = Arc::default();
        self
    }

    /// What a request over the limit gets. Default [`Reject::TooManyRequests`].
    pub fn reject(self, reject: Reject) -> Self {
        self.with(|c| c.reject = reject)
    }

    /// With [`Reject::Delay`], the longest a request is held; a leaky bucket holds up to its
    /// line, `burst × per / rate`, if that is longer. Default 1 s.
    ///
    /// A held request whose client goes away keeps its reserved slot, so the next request of
    /// the key waits one interval more. Held requests are released by tokio's timer (1 ms
    /// resolution): above 1000 requests per second per key they leave in 1 ms batches.
    pub fn max_delay(self, max_delay: Duration) -> Self {
        self.with(|c| c.max_delay = max_delay)
    }

    /// Proxies whose forwarding header is believed, as CIDRs. Default: none.
    ///
    /// Behind them, the `ip` key is the rightmost address of the one header they write
    /// ([`forwarded_header`](Self::forwarded_header), `X-Forwarded-For` by default) that no
    /// trusted proxy wrote. The other header is never read: the proxies pass it on as the client
    /// sent it.
    pub fn trusted_proxies<I: IntoIterator<Item = S>, S: Into<String>>(
        self,
        cidrs: I,
    ) -> Result<Self, ConfigError> {
        let cidrs: Vec<String> = cidrs.into_iter().map(Into::into).collect();
        let checked = RateLimitConfig {
            trusted_proxies: cidrs.clone(),
            ..RateLimitConfig::default()
        };
        checked.validate()?;
        Ok(self.with(|c| c.trusted_proxies = cidrs))
    }

    /// The one header the trusted proxies write the client's address into. Default
    /// [`ForwardedHeader::XForwardedFor`] (what nginx's realip module, Caddy and Envoy read);
    /// [`ForwardedHeader::Forwarded`] for proxies that write only RFC 7239's `Forwarded`.
    pub fn forwarded_header(self, header: ForwardedHeader) -> Self {
        self.with(|c| c.forwarded_header = header)
    }

    /// Prefix length IPv6 clients are grouped by. Default 64.
    pub fn ipv6_prefix(self, bits: u8) -> Self {
        self.with(|c| c.ipv6_prefix = bits.min(128))
    }

    /// What requests without the key get. Default [`MissingKey::Shared`]. Such a request
    /// counts as `missing_key` in the [stats](Self::stats) and also as what happened to it
    /// (`allowed`, `limited`, ...).
    pub fn missing_key(self, missing: MissingKey) -> Self {
        self.with(|c| c.missing_key = missing)
    }

    /// Keys kept at most. Default 1,000,000.
    pub fn max_keys(self, max_keys: usize) -> Self {
        self.with(|c| c.max_keys = max_keys.max(1))
    }

    /// Count what would be limited, limit nothing: a request that would be held, refused or
    /// dropped passes at once and counts as `shadow_limited`. One that would be held keeps the
    /// slot it reserved (as with nginx's `limit_req_dry_run`), so that later requests count as
    /// they would with the limit on. Default: off.
    pub fn shadow(self, shadow: bool) -> Self {
        self.with(|c| c.shadow = shadow)
    }

    /// Which answers carry `RateLimit-Policy` and `RateLimit`. Default
    /// [`LimitHeaders::Always`].
    ///
    /// Both fields are lists: this layer's item is added after those of the inner service (an
    /// upstream's or another limiter's), which stay.
    ///
    /// `RateLimit-Policy` states the quota over a window of whole seconds, `w = ceil(per)`, with
    /// `q = floor(rate × w / per)` (at least 1): 1 per 100 ms reads `q=10;w=1`, 3 per 1.5 s
    /// reads `q=4;w=2`.
    ///
    /// `RateLimit` gives `r`, the requests left now, and `t`, in whole seconds rounded up: on a
    /// 429 the time until a request is admitted again (the same as `Retry-After`); on an allowed
    /// answer the time until the quota is whole again (`r` back at the burst). The draft defines
    /// `t` as the window within which the client can use no more than `r`; a bucket refills
    /// continuously, so on allowed answers this `t` is the longer, cautious reading.
    pub fn headers(self, headers: LimitHeaders) -> Self {
        self.with(|c| c.headers = headers)
    }

    /// Also send `X-RateLimit-Limit`, `-Remaining`, `-Reset`. They hold one value each, so
    /// this layer's replace any the inner service set. Default: off.
    pub fn legacy_headers(self, on: bool) -> Self {
        self.with(|c| c.legacy_headers = on)
    }

    /// Put a [`RateLimited`](crate::RateLimited) into the extensions of every 429, for outer
    /// layers and logs. Default: off (three small allocations per refusal).
    pub fn mark_refusals(self, on: bool) -> Self {
        self.with(|c| c.mark_refusals = on)
    }

    /// `user` key: the header holding the user id when no [`UserId`](crate::UserId) extension
    /// is set. Default: none.
    pub fn user_header(self, name: HeaderName) -> Self {
        self.with(|c| c.user_header = Some(name.as_str().to_string()))
    }

    /// `api_key` key: the header holding it. Default `x-api-key`.
    pub fn api_key_header(self, name: HeaderName) -> Self {
        self.with(|c| c.api_key_header = name.as_str().to_string())
    }

    /// `api_key` key: the query parameter holding it when the header is absent or empty; `None`
    /// reads only the header. Default `api_key`.
    pub fn api_key_query(self, name: Option<&str>) -> Self {
        self.with(|c| c.api_key_query = name.map(str::to_string))
    }

    /// The policy name in `RateLimit-Policy` and `RateLimit`. Default `default`.
    pub fn policy_name(self, name: &str) -> Result<Self, ConfigError> {
        let checked = RateLimitConfig {
            policy_name: name.to_string(),
            ..RateLimitConfig::default()
        };
        checked.validate()?;
        Ok(self.with(|c| c.policy_name = name.to_string()))
    }

    /// The configuration as built so far.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Counters of this layer.
    pub fn stats(&self) -> Stats {
        Stats {
            shared: self.shared(),
        }
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(self.shared.get_or_init(|| Arc::new(self.build())))
    }

    fn build(&self) -> Shared {
        let c = &self.config;
        let header = |name: &str| HeaderName::from_bytes(name.as_bytes()).ok();
        let kind = match &self.custom_key {
            Some(extractor) => KeyKind::Custom(Arc::clone(extractor)),
            None => KeyKind::parse(&c.key).unwrap_or_else(|error| {
                tracing::error!(%error, "bad rate limit key; limiting by client address");
                KeyKind::Ip
            }),
        };
        let trusted =
            TrustedProxies::parse(&c.trusted_proxies).unwrap_or_else(|(entry, reason)| {
                tracing::error!(%entry, %reason, "bad trusted proxy; trusting none");
                TrustedProxies::default()
            });
        let seed = RandomState::new();
        let rules = KeyRules {
            kind,
            trusted,
            forwarded_header: c.forwarded_header,
            ipv6_prefix: c.ipv6_prefix,
            user_header: c.user_header.as_deref().and_then(header),
            api_key_header: header(&c.api_key_header)
                .unwrap_or(HeaderName::from_static("x-api-key")),
            api_key_query: c.api_key_query.clone(),
            address: AddressHasher::new(&seed),
            seed,
        };
        let per_ns = nanos(c.per);
        let rate = Rate::new(c.rate, per_ns, capacity(c.algorithm, c.burst));
        let tables = Tables::new(c.algorithm, c.max_keys);
        let clock = LimiterClock::default();
        Shared {
            rules,
            limiter: Limiter::new(&tables, rate, &clock, 0),
            tables,
            clock,
            resolver: self.resolver.clone(),
            tiers: RwLock::new(HashMap::new()),
            reject: c.reject,
            max_delay: nanos(c.max_delay),
            missing_key: c.missing_key,
            shadow: c.shadow,
            headers: c.headers,
            legacy_headers: c.legacy_headers,
            mark_refusals: c.mark_refusals,
            header_cache: HeaderCache::new(&c.policy_name, rate),
            counters: Counters::default(),
            warned_bad_quota: AtomicBool::new(false),
        }
    }
}

/// The burst as the algorithm uses it: a token bucket holds at least one token, and saying so
/// here keeps the `RateLimit` fields true to it.
pub(crate) fn capacity(algorithm: Algorithm, burst: u32) -> u32 {
    match algorithm {
        Algorithm::TokenBucket => burst.max(1),
        _ => burst,
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit::new(inner, self.shared())
    }
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("config", &self.config)
            .finish()
    }
}
