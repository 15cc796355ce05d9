//! [`RateLimitLayer`] and its builder.

use std::collections::HashMap;
use std::hash::RandomState;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use proxflow_core::clock::nanos;
use proxflow_core::{Clock, ConfigError, ForwardedHeader, TrustedProxies};
use tower_layer::Layer;

use crate::algorithm::Rate;
use crate::config::{
    check_ipv6_prefix, check_policy_name, check_quota, Algorithm, LimitHeaders, MissingKey, Quota,
    RateLimitConfig, Reject,
};
#[cfg(feature = "redis")]
use crate::config::{DistributedConfig, OnUnavailable};
use crate::headers::HeaderCache;
use crate::key::{AddressHasher, Key, KeyExtractor, KeyRules, RequestView};
use crate::limiter::{capacity, Limiter, LimiterClock, Tables};
use crate::service::RateLimit;
use crate::shared::{QuotaResolver, Shared};
use crate::stats::{KeyUsage, LayerState, Stats};

/// Limits the rate of requests per key. Cheap to clone; clones share all state.
///
/// Builder methods state their defaults, which are those of [`RateLimitConfig`]. They never
/// fail in the middle of a chain: each takes a typed value, and the few values a type cannot
/// rule out panic at the call (each method's `# Panics` says which).
/// [`from_config`](Self::from_config) is where untrusted input is checked.
///
/// The counters behind [`stats`](Self::stats) are made with the layer: a handle taken before
/// later builder calls reads the traffic of the services the configured layer makes.
#[derive(Clone)]
pub struct RateLimitLayer {
    /// The settings a config can say, in its spelling (`key` and `trusted_proxies` are kept
    /// typed below as well, and those are what the layer uses).
    config: RateLimitConfig,
    key: Key,
    trusted: TrustedProxies,
    clock: Clock,
    resolver: Option<QuotaResolver>,
    /// What the handles read; never replaced.
    state: Arc<LayerState>,
    /// The limiter its services share, made by the first `layer` call of a configuration; a
    /// builder call starts a new configuration.
    built: Arc<OnceLock<Arc<Shared>>>,
    /// The Redis mode's settings (the config's `distributed`, typed).
    #[cfg(feature = "redis")]
    remote: RemoteSettings,
}

#[cfg(feature = "redis")]
#[derive(Clone)]
struct RemoteSettings {
    client: Option<redis::Client>,
    sync_interval: Option<Duration>,
    on_unavailable: OnUnavailable,
    timeout: Duration,
    key_prefix: String,
}

#[cfg(feature = "redis")]
impl RemoteSettings {
    fn new(config: Option<&DistributedConfig>) -> Self {
        let defaults = DistributedConfig::new("");
        let config = config.unwrap_or(&defaults);
        RemoteSettings {
            client: None,
            sync_interval: config.sync_interval,
            on_unavailable: config.on_unavailable,
            timeout: config.timeout,
            key_prefix: config.key_prefix.clone(),
        }
    }
}

impl RateLimitLayer {
    /// `rate` requests per `per` for each client address, token bucket, burst 5, 429.
    ///
    /// The `ip` key needs the server to record each client's address (see [`Key::Ip`]).
    ///
    /// # Panics
    ///
    /// If `rate` is 0 or `per` is zero, as tower's `RateLimitLayer` does: neither is a limit.
    /// Also if `per` is over 100 years, or shorter than `rate` nanoseconds: the algorithms count
    /// in nanoseconds. [`from_config`](Self::from_config) refuses these with an error instead.
    pub fn new(rate: u32, per: Duration) -> Self {
        if let Err(error) = check_quota(rate, per, 0) {
            panic!("RateLimitLayer::new: {error}");
        }
        let config = RateLimitConfig {
            rate,
            per,
            ..RateLimitConfig::default()
        };
        RateLimitLayer::with_config(config, Key::Ip, TrustedProxies::default())
    }

    /// A layer from a configuration, checked first ([`RateLimitConfig::validate`]).
    ///
    /// # Errors
    ///
    /// The first field the layer cannot run with, named.
    pub fn from_config(config: &RateLimitConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let key = config.key.parse()?;
        let trusted = config.trusted_proxies()?;
        #[allow(unused_mut)] // without the `redis` feature
        let mut layer = RateLimitLayer::with_config(config.clone(), key, trusted);
        #[cfg(feature = "redis")]
        if let Some(distributed) = &config.distributed {
            let info = distributed
                .redis
                .connection_info(crate::config::REDIS_FIELDS)?;
            let client = redis::Client::open(info).map_err(|error| {
                ConfigError::new("distributed.redis.address", error.to_string())
            })?;
            layer.remote.client = Some(client);
        }
        Ok(layer)
    }

    fn with_config(config: RateLimitConfig, key: Key, trusted: TrustedProxies) -> Self {
        RateLimitLayer {
            #[cfg(feature = "redis")]
            remote: RemoteSettings::new(config.distributed.as_ref()),
            config,
            key,
            trusted,
            clock: Clock::default(),
            resolver: None,
            state: Arc::default(),
            built: Arc::default(),
        }
    }

    /// A change of configuration: services made from now on share a new limiter (the handles
    /// keep reading the layer's counters).
    fn configure(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self.built = Arc::default();
        self
    }

    fn with(self, change: impl FnOnce(&mut RateLimitConfig)) -> Self {
        self.configure(|layer| change(&mut layer.config))
    }

    /// The clock the limiter reads. Default [`Clock::tsc`], the CPU's time-stamp counter.
    ///
    /// Tests that drive the limiter with tokio's paused time (`start_paused`,
    /// `tokio::time::advance`) give it [`Clock::tokio`], made inside the paused runtime:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use proxflow_ratelimit::{Clock, RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::new(1, Duration::from_secs(60)).clock(Clock::tokio());
    /// // ... requests, then `tokio::time::advance(Duration::from_secs(60)).await` refills.
    /// # let _ = layer;
    /// # }
    /// ```
    pub fn clock(self, clock: Clock) -> Self {
        self.configure(|layer| layer.clock = clock)
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
    ///
    /// # Panics
    ///
    /// If `burst × per / rate` is over 100 years, the longest span the algorithms time.
    pub fn burst(self, burst: u32) -> Self {
        if let Err(error) = check_quota(self.config.rate, self.config.per, burst) {
            panic!("RateLimitLayer::burst: {error}");
        }
        self.with(|c| c.burst = burst)
    }

    /// What requests are counted under. Default [`Key::Ip`], which needs the server to record
    /// each client's address (see there).
    ///
    /// A request may carry its key more than once (two `X-Tenant` lines, two `X-Api-Key` or
    /// user header lines, `?api_key=a&api_key=b`): the first value counts, in headers and in
    /// the query alike, as [`http::HeaderMap::get`] and most frameworks read headers. A backend
    /// that reads another one (the last query parameter, as some frameworks do, or every line)
    /// should be keyed with a [`key_extractor`](Self::key_extractor) that reads the same, or a
    /// client is counted under one key and served under another.
    ///
    /// A [`Key::Custom`] has no spelling in a config: [`config`](Self::config) keeps the key it
    /// had before.
    pub fn key(self, key: Key) -> Self {
        self.configure(|layer| {
            if !matches!(key, Key::Custom(_)) {
                layer.config.key = key.to_string();
            }
            layer.key = key;
        })
    }

    /// A key of your own (a closure over [`RequestView`] works): `key(Key::custom(extractor))`.
    pub fn key_extractor(self, extractor: impl KeyExtractor) -> Self {
        self.key(Key::custom(extractor))
    }

    /// A per-request quota (API-key tiers); `None` keeps the layer's. Each distinct quota keeps
    /// its own key table. Default: none.
    pub fn quota_resolver(
        self,
        resolve: impl Fn(&RequestView<'_>) -> Option<Quota> + Send + Sync + 'static,
    ) -> Self {
        self.configure(|layer| layer.resolver = Some(Arc::new(resolve)))
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

    /// Proxies whose forwarding header is believed, as networks (`"10.0.0.0/8".parse()`; a
    /// single address is a `/32` or `/128`). Default: none. Replaces any given before.
    ///
    /// Behind them, the `ip` key is the rightmost address of the one header they write
    /// ([`forwarded_header`](Self::forwarded_header), `X-Forwarded-For` by default) that no
    /// trusted proxy wrote. The other header is never read: the proxies pass it on as the client
    /// sent it. Host bits are cleared, as [`TrustedProxies::new`] does.
    pub fn trusted_proxies(self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        let nets: Vec<IpNet> = nets.into_iter().map(|net| net.trunc()).collect();
        self.configure(|layer| {
            layer.config.trusted_proxies = nets.iter().map(ToString::to_string).collect();
            layer.trusted = TrustedProxies::new(nets);
        })
    }

    /// The one header the trusted proxies write the client's address into. Default
    /// [`ForwardedHeader::XForwardedFor`] (what nginx's realip module, Caddy and Envoy read);
    /// [`ForwardedHeader::Forwarded`] for proxies that write only RFC 7239's `Forwarded`.
    pub fn forwarded_header(self, header: ForwardedHeader) -> Self {
        self.with(|c| c.forwarded_header = header)
    }

    /// Prefix length IPv6 clients are grouped by. Default 64.
    ///
    /// # Panics
    ///
    /// If `bits` is over 128.
    pub fn ipv6_prefix(self, bits: u8) -> Self {
        if let Err(error) = check_ipv6_prefix(bits) {
            panic!("RateLimitLayer::ipv6_prefix: {error}");
        }
        self.with(|c| c.ipv6_prefix = bits)
    }

    /// What requests without the key get. Default [`MissingKey::Shared`]. Such a request
    /// counts as `missing_key` in the [stats](Self::stats) and also as what happened to it
    /// (`allowed`, `limited`, ...). With [`Key::Ip`], those are the requests the server gave no
    /// client address, which are counted as `no_client_address` too.
    pub fn missing_key(self, missing: MissingKey) -> Self {
        self.with(|c| c.missing_key = missing)
    }

    /// Keys kept at most; idle keys are dropped first. Default 1,000,000.
    ///
    /// # Panics
    ///
    /// If `max_keys` is 0.
    pub fn max_keys(self, max_keys: usize) -> Self {
        assert!(
            max_keys > 0,
            "RateLimitLayer::max_keys: `max_keys`: must be at least 1"
        );
        self.with(|c| c.max_keys = max_keys)
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
    ///
    /// # Panics
    ///
    /// If `name` is not a token of letters, digits, `-`, `_` or `.` (it goes into header
    /// values as it is).
    pub fn policy_name(self, name: &str) -> Self {
        if let Err(error) = check_policy_name(name) {
            panic!("RateLimitLayer::policy_name: {error}");
        }
        self.with(|c| c.policy_name = name.to_string())
    }

    /// Shares the limit with every instance that uses the same Redis: each decision is one
    /// atomic round trip, a Lua script per algorithm run on Redis's clock (`TIME`), so the
    /// instances together admit the configured limit whatever their own clocks say. Default:
    /// none (each instance limits on its own). The config's `distributed` section.
    ///
    /// The `RateLimit` fields and `Retry-After` are Redis's figures. Keys expire with their
    /// state (when it equals a new key's), so Redis keeps the clients seen recently; the keys
    /// are the layer's [prefix](Self::redis_key_prefix) and 16 bytes of a SHA-256 of the key
    /// and the quota, never the address or API key itself.
    ///
    /// While Redis cannot answer within the [timeout](Self::redis_timeout) (down, hung,
    /// refusing the password), requests get the [`on_unavailable`](Self::on_unavailable)
    /// policy at once, without waiting for it again; a background task reconnects, after 100 ms
    /// and then at most every second. The loss and the return are logged (warn, info), once
    /// each. A Redis Cluster node is refused (logged as an error): give one standalone server
    /// or a proxy in front of the cluster.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use proxflow_ratelimit::{redis, OnUnavailable, RateLimitLayer};
    ///
    /// # fn main() -> Result<(), redis::RedisError> {
    /// let layer = RateLimitLayer::new(100, Duration::from_secs(1))
    ///     .redis(redis::Client::open("redis://:secret@localhost:6379/0")?)
    ///     .on_unavailable(OnUnavailable::FailClosed);
    /// # let _ = layer;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Requires a tokio runtime (the services are called inside one). A request whose client
    /// goes away while Redis decides may still be counted there, as a held request keeps its
    /// slot. The response futures of a Redis layer are `Send` but not `Sync`.
    #[cfg(feature = "redis")]
    pub fn redis(self, client: redis::Client) -> Self {
        self.configure_remote(|remote| remote.client = Some(client))
    }

    /// What a request gets while Redis cannot answer within the
    /// [timeout](Self::redis_timeout). Default [`OnUnavailable::FailOpen`]: the instance's own
    /// limiter decides, with the same quota. Applies with [`redis`](Self::redis), in exact
    /// mode.
    ///
    /// # Panics
    ///
    /// [`OnUnavailable::FailClosed`] with a [`sync_interval`](Self::sync_interval): in synced
    /// mode every decision is local.
    #[cfg(feature = "redis")]
    pub fn on_unavailable(self, policy: OnUnavailable) -> Self {
        assert!(
            policy == OnUnavailable::FailOpen || self.remote.sync_interval.is_none(),
            "RateLimitLayer::on_unavailable: `distributed.on_unavailable`: `fail_closed` applies \
             to exact mode only, and this layer has a `sync_interval`"
        );
        self.configure_remote(|remote| remote.on_unavailable = policy)
    }

    /// The synced mode: each instance decides on its own, at the local limiter's cost, and
    /// every `interval` shares what it admitted and learns what the others admitted, in one
    /// pipelined round trip (a script per key it had requests for lately, in pipelines of 512).
    /// Default: none, exact mode (a round trip per request). Applies with
    /// [`redis`](Self::redis); the config's `distributed.sync_interval`.
    ///
    /// **Overshoot.** An instance learns the others' admissions of a key at its syncs: it
    /// misses at most those made since their last sync before its own, a span of
    /// `S = 2 × (interval + the sync's round trip)` (for a key it had no request for lately,
    /// also those before its first sync of the key, within an interval of its first request).
    /// What it learns is added to its state as admissions made at the sync, which never admits
    /// more than counting them when they happened, and an excess is paid back: an instance whose
    /// state holds more than it could admit refuses until that has passed. So with `n`
    /// instances sharing a key, at most:
    ///
    /// - token bucket: in any span of length `L`, one limiter's `burst + rate × L / per`, plus
    ///   `(n - 1) × (burst + rate × S / per)`;
    /// - leaky bucket: the same with `burst + 1` (the line and the request leaving);
    /// - exact sliding window: `rate × ceil(L / per)`, plus `(n - 1) × rate` (the window's worth
    ///   each instance can admit at once);
    /// - sliding-window approximation: `rate × (ceil(L / per) + 1)` (each fixed window admits
    ///   at most `rate`, so a window of `per` twice that at worst, as without Redis), plus
    ///   `(n - 1) × rate`; it forgets an excess after the next fixed window instead of paying
    ///   it all back.
    ///
    /// The `burst` and `rate` terms are reached when a burst of a new key hits every instance at
    /// once. Under steady load each instance learns the others' share every interval, and the
    /// admissions stay close to the limit: three instances offered 7.5 times a limit of 200 a
    /// second with a 100 ms interval admitted within a few percent of it over 5 s
    /// (tests/redis.rs, which checks the bounds above).
    ///
    /// The `RateLimit` fields and `Retry-After` are the instance's own limiter's, over its
    /// state with the others' admissions folded in.
    ///
    /// While Redis is unavailable, decisions stay local (`on_unavailable` does not apply:
    /// [`OnUnavailable::FailClosed`] panics here), each instance limits on its own, and each
    /// key's admissions are kept for the first sync after Redis is back, at most
    /// `burst + rate × (ceil(interval / per) + 1)` a key (the rest are forgotten, so that a
    /// long outage does not make the other instances refuse for as long after it). The loss and
    /// the return are logged once each.
    ///
    /// Memory: the keys with requests lately are tracked, at most [`max_keys`](Self::max_keys)
    /// of them, each with its Redis key and counts (a hash map slot of 73 bytes: 84 to 167
    /// bytes a key with the map's room) beside its state in the key table. Redis keeps a record
    /// per key for as long as its state holds admissions and three intervals more.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use proxflow_ratelimit::{redis, RateLimitLayer};
    ///
    /// # fn main() -> Result<(), redis::RedisError> {
    /// let layer = RateLimitLayer::new(100, Duration::from_secs(1))
    ///     .redis(redis::Client::open("redis://localhost:6379/0")?)
    ///     .sync_interval(Duration::from_millis(100));
    /// # let _ = layer;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// If `interval` is under 1 ms or over 100 years, or [`on_unavailable`](Self::on_unavailable)
    /// is [`OnUnavailable::FailClosed`].
    #[cfg(feature = "redis")]
    pub fn sync_interval(self, interval: Duration) -> Self {
        if let Err(error) = crate::config::check_sync_interval(interval) {
            panic!("RateLimitLayer::sync_interval: {error}");
        }
        assert!(
            self.remote.on_unavailable == OnUnavailable::FailOpen,
            "RateLimitLayer::sync_interval: `distributed.on_unavailable`: `fail_closed` applies \
             to exact mode only"
        );
        self.configure_remote(|remote| remote.sync_interval = Some(interval))
    }

    /// The longest a request waits for Redis, connecting included. Default 50 ms. Applies with
    /// [`redis`](Self::redis).
    ///
    /// # Panics
    ///
    /// If `timeout` is zero.
    #[cfg(feature = "redis")]
    pub fn redis_timeout(self, timeout: Duration) -> Self {
        assert!(
            !timeout.is_zero(),
            "RateLimitLayer::redis_timeout: `distributed.timeout`: must be a positive duration"
        );
        self.configure_remote(|remote| remote.timeout = timeout)
    }

    /// Put before every key the layer keeps in Redis. Layers that share a Redis, a quota, a
    /// key kind and a [policy name](Self::policy_name) share their counts unless their
    /// prefixes differ. Default `rl:`. Applies with [`redis`](Self::redis).
    #[cfg(feature = "redis")]
    pub fn redis_key_prefix(self, prefix: &str) -> Self {
        self.configure_remote(|remote| remote.key_prefix = prefix.to_string())
    }

    /// A change of the Redis settings, mirrored into the config's `distributed`.
    #[cfg(feature = "redis")]
    fn configure_remote(self, change: impl FnOnce(&mut RemoteSettings)) -> Self {
        self.configure(|layer| {
            change(&mut layer.remote);
            let remote = &layer.remote;
            layer.config.distributed = remote.client.as_ref().map(|client| {
                let info = client.get_connection_info();
                let settings = info.redis_settings();
                let mut distributed = DistributedConfig::new(info.addr().to_string());
                distributed.redis.password = settings.password().map(str::to_string);
                distributed.redis.username = settings.username().map(str::to_string);
                distributed.redis.db = Some(settings.db());
                distributed.sync_interval = remote.sync_interval;
                distributed.on_unavailable = remote.on_unavailable;
                distributed.timeout = remote.timeout;
                distributed.key_prefix = remote.key_prefix.clone();
                distributed
            });
        })
    }

    /// The configuration as built so far.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Counters of this layer: the same before and after later builder calls, and shared
    /// with its clones.
    pub fn stats(&self) -> Stats {
        Stats {
            state: Arc::clone(&self.state),
        }
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        let shared = self.built.get_or_init(|| {
            let shared = Arc::new_cyclic(|me| self.build(me));
            let usage: Weak<dyn KeyUsage> = Arc::downgrade(&shared) as Weak<Shared>;
            self.state.register(usage);
            shared
        });
        Arc::clone(shared)
    }

    /// The layer's state; `me` is where it will be, for the synced mode's task.
    fn build(&self, #[allow(unused_variables)] me: &Weak<Shared>) -> Shared {
        let c = &self.config;
        let header = |name: &str| HeaderName::from_bytes(name.as_bytes()).ok();
        let seed = RandomState::new();
        let rules = KeyRules {
            kind: self.key.clone(),
            trusted: self.trusted.clone(),
            forwarded_header: c.forwarded_header,
            ipv6_prefix: c.ipv6_prefix,
            user_header: c.user_header.as_deref().and_then(header),
            api_key_header: header(&c.api_key_header)
                .unwrap_or(HeaderName::from_static("x-api-key")),
            api_key_query: c.api_key_query.clone(),
            address: AddressHasher::new(&seed),
            seed,
        };
        let rate = Rate::new(c.rate, nanos(c.per), capacity(c.algorithm, c.burst));
        let tables = Tables::new(c.algorithm, c.max_keys);
        let clock = LimiterClock::new(self.clock.clone());
        #[cfg(feature = "redis")]
        let max_wait = if c.reject == Reject::Delay {
            nanos(c.max_delay)
        } else {
            0
        };
        let limiter = Limiter::new(&tables, rate, &clock, 0);
        #[cfg(feature = "redis")]
        let remote = self.remote.client.as_ref().map(|client| {
            Arc::new(crate::remote::Remote::new(
                client.clone(),
                c.algorithm,
                &self.remote.key_prefix,
                self.remote.timeout,
                self.remote.on_unavailable,
                self.remote.sync_interval,
            ))
        });
        #[cfg(feature = "redis")]
        let limiter = limiter.with_remote(
            remote
                .as_ref()
                .map(|remote| remote.quota(&rate, max_wait, &c.policy_name)),
        );
        // The synced mode keeps the connection with its tracked keys; `remote` is exact mode's.
        #[cfg(feature = "redis")]
        let (remote, synced) = match (remote, self.remote.sync_interval) {
            (Some(remote), Some(interval)) => (
                None,
                Some(crate::remote::synced::Synced::new(
                    remote,
                    interval,
                    c.max_keys,
                    me.clone(),
                )),
            ),
            (remote, _) => (remote, None),
        };
        Shared {
            rules,
            limiter,
            tables,
            clock,
            resolver: self.resolver.clone(),
            tiers: RwLock::new(HashMap::new()),
            reject: c.reject,
            max_delay: nanos(c.max_delay),
            #[cfg(feature = "redis")]
            remote,
            #[cfg(feature = "redis")]
            synced,
            missing_key: c.missing_key,
            shadow: c.shadow,
            headers: c.headers,
            legacy_headers: c.legacy_headers,
            mark_refusals: c.mark_refusals,
            header_cache: HeaderCache::new(&c.policy_name, rate),
            state: Arc::clone(&self.state),
            warned_bad_quota: AtomicBool::new(false),
            warned_no_client_address: AtomicBool::new(false),
        }
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
            .field("key", &self.key)
            .field("clock", &self.clock)
            .finish()
    }
}
