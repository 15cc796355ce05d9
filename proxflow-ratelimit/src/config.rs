//! The serde configuration, in the origin's names, its checks, and [`Quota`].

use std::time::Duration;

use proxflow_core::clock::nanos;
use proxflow_core::redis::Fields;
pub use proxflow_core::redis::RedisConfig;
use proxflow_core::{ConfigError, ForwardedHeader, TrustedProxies};
use serde::{Deserialize, Serialize};

use crate::algorithm::MAX_SPAN;
use crate::key::Key;

/// Which algorithm decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// `rate` tokens per `per`, capacity `burst` (governor's GCRA).
    #[default]
    TokenBucket,
    /// nginx `limit_req` without `nodelay`: requests leave at one per `per / rate`, up to `burst`
    /// wait in line, the rest are rejected. A request waits at most `burst × per / rate`; with
    /// [`Reject::Delay`], at most that or `max_delay`, whichever is longer.
    ///
    /// A waiting request is released by tokio's timer, whose resolution is 1 ms: above 1000
    /// requests per second per key, requests leave in batches once a millisecond, at the
    /// rate on average. A waiting request whose client goes away keeps its place in line.
    LeakyBucket,
    /// At most `rate` requests in any window of length `per`, exactly (a log of timestamps:
    /// 67 bytes per key of table at the default `max_keys`, plus 8 bytes per admitted request
    /// in the window, so prefer the approximation for large rates with many keys).
    SlidingWindow,
    /// The two-counter approximation of the sliding window: 67 bytes per key of table at the
    /// default `max_keys` (the buckets' 34, twice), at most twice `rate` in any window in the
    /// worst case, `rate` for evenly spread traffic.
    SlidingWindowApprox,
}

/// What a request over the limit gets. Reads `429` (a number or a string), `delay` or `drop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum Reject {
    /// `429 Too Many Requests` with `Retry-After` and the `RateLimit` fields.
    #[default]
    #[serde(rename = "429")]
    TooManyRequests,
    /// Hold the request until it is admitted, at most `max_delay`, then 429; with the leaky
    /// bucket, at most its line (`burst × per / rate`) or `max_delay`, whichever is longer, so
    /// that `delay` never refuses what the line alone would hold. Requests of one
    /// key are admitted in arrival order (each reserves its slot when it arrives). Applies to
    /// the token and leaky buckets; the sliding windows cannot reserve a slot and answer 429.
    /// A held request whose client goes away keeps its reserved slot: it is not given back,
    /// so the next request of the key waits one interval more.
    #[serde(rename = "delay")]
    Delay,
    /// No HTTP response. Over HTTP/1.1 the connection is closed before any byte of the answer
    /// is sent (the body fails at once, so hyper never flushes the head). Over HTTP/2 only the
    /// request's stream is reset: a layer cannot close a connection other streams share. Inside
    /// axum, an outer layer sees a 429 whose body fails with
    /// [`ConnectionDropped`](crate::ConnectionDropped).
    #[serde(rename = "drop")]
    Drop,
}

impl<'de> Deserialize<'de> for Reject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The origin writes `reject 429`; JSON and TOML read that as a number.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text<'a> {
            Number(u64),
            Word(std::borrow::Cow<'a, str>),
        }
        let allowed = "expected `429`, `delay` or `drop`";
        match Text::deserialize(deserializer) {
            Ok(Text::Number(429)) => Ok(Reject::TooManyRequests),
            Ok(Text::Word(word)) => match word.as_ref() {
                "429" => Ok(Reject::TooManyRequests),
                "delay" => Ok(Reject::Delay),
                "drop" => Ok(Reject::Drop),
                other => Err(serde::de::Error::custom(format!(
                    "`reject`: {other:?}: {allowed}"
                ))),
            },
            Ok(Text::Number(other)) => Err(serde::de::Error::custom(format!(
                "`reject`: {other}: {allowed}"
            ))),
            Err(_) => Err(serde::de::Error::custom(format!("`reject`: {allowed}"))),
        }
    }
}

/// What a request without the key gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MissingKey {
    /// All such requests share one bucket.
    #[default]
    Shared,
    /// `400 Bad Request`.
    Reject,
    /// Not limited.
    Allow,
}

/// Which answers carry `RateLimit-Policy` and `RateLimit` (and the legacy fields when on).
/// A 429 always carries `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LimitHeaders {
    /// Allowed and limited answers, as the IETF draft intends: clients can pace themselves
    /// before they are refused.
    #[default]
    Always,
    /// Limited answers only; allowed answers leave as the inner service made them.
    Limited,
    /// No answer discloses the limit.
    Never,
}

/// Everything a [`RateLimitLayer`](crate::RateLimitLayer) can be told, as read from JSON, YAML
/// or TOML. `{}` is valid: 10 per second, burst 5, by client address, 429.
///
/// The names are the origin's. Its block
///
/// ```text
/// rate_limit { algorithm token_bucket   # token_bucket | leaky_bucket | sliding_window | sliding_window_approx
///              rate 10  per 1s  burst 5
///              key ip                   # ip | user | api_key | header:<name> | global
///              reject 429 }             # 429 | delay | drop
/// ```
///
/// reads, in YAML (JSON and TOML take the same names; `reject` is a number or a string):
///
/// ```
/// use proxflow_ratelimit::{Algorithm, RateLimitConfig, Reject};
///
/// let config: RateLimitConfig = serde_yaml::from_str(
///     "algorithm: token_bucket\nrate: 10\nper: 1s\nburst: 5\nkey: ip\nreject: 429\n",
/// )
/// .unwrap();
/// assert_eq!(config.algorithm, Algorithm::TokenBucket);
/// assert_eq!(config.reject, Reject::TooManyRequests);
/// assert_eq!(config, RateLimitConfig::default());
/// ```
///
/// Durations read as text (`"500ms"`, `"1s"`, `"1m"`, `"1h"`). Unknown fields are refused, so
/// that a misspelt name is an error instead of a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Default `token_bucket`.
    pub algorithm: Algorithm,
    /// Requests per `per`. Default 10.
    pub rate: u32,
    /// The period of `rate`, e.g. `"1s"`, `"1m"`. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    /// Token bucket: capacity; leaky bucket: requests that may wait in line. Default 5.
    pub burst: u32,
    /// `ip`, `user`, `api_key`, `header:<name>` or `global` (a [`Key`](crate::Key)). Default
    /// `ip`, which needs the server to record each client's address (see [`Key::Ip`]). A key
    /// given twice counts by its first value (see
    /// [`RateLimitLayer::key`](crate::RateLimitLayer::key)).
    pub key: String,
    /// `429`, `delay` or `drop`. Default `429`.
    pub reject: Reject,
    /// With `reject: delay`, the longest a request is held; a leaky bucket holds up to its line,
    /// `burst × per / rate`, if that is longer. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Proxies whose `forwarded_header` entries are believed, as CIDRs. Default: none (the peer
    /// address is the client).
    pub trusted_proxies: Vec<String>,
    /// The one header the trusted proxies write: `x_forwarded_for` or `forwarded`; the other is
    /// never read. Default `x_forwarded_for`.
    pub forwarded_header: ForwardedHeader,
    /// IPv6 clients are grouped by this prefix length. Default 64.
    pub ipv6_prefix: u8,
    /// `user` key: the header holding the user id, when not a request extension. Default none.
    pub user_header: Option<String>,
    /// `api_key` key: the header holding it. Default `x-api-key`.
    pub api_key_header: String,
    /// `api_key` key: the query parameter holding it, when the header is absent or empty.
    /// Default `api_key`.
    pub api_key_query: Option<String>,
    /// Requests without the key. Default `shared`. Such a request counts as `missing_key` in
    /// the stats and also as what happened to it (`allowed`, `limited`, ...).
    pub missing_key: MissingKey,
    /// Keys kept at most; idle keys are dropped first. Default 1,000,000.
    pub max_keys: usize,
    /// Count what would be limited and let everything pass. Default `false`.
    pub shadow: bool,
    /// Which answers carry the limit fields: `always`, `limited` or `never`. Default `always`.
    pub headers: LimitHeaders,
    /// Also send `X-RateLimit-Limit`, `-Remaining` and `-Reset`. Default `false`.
    pub legacy_headers: bool,
    /// Put a [`RateLimited`](crate::RateLimited) into the extensions of every 429, for outer
    /// layers and logs. Default `false`: it costs three small allocations per refusal, on the
    /// path a flood of refused requests takes.
    pub mark_refusals: bool,
    /// The policy name in the `RateLimit-Policy` and `RateLimit` fields. Default `default`.
    pub policy_name: String,
    /// Limits shared by every instance through Redis (needs the `redis` feature). Default:
    /// none, each instance limits on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distributed: Option<DistributedConfig>,
}

/// Limits shared by several instances through one Redis: the origin's
/// `distributed { redis { address localhost:6379  password secret  db 0 } }`.
///
/// Two modes (needs the crate's `redis` feature):
///
/// - **exact** (no `sync_interval`, the default): each decision is one atomic round trip (a Lua
///   script per algorithm, on Redis's clock), so every instance sees every other's requests at
///   once and the instances together admit the configured limit. A request waits for Redis
///   (58 µs on loopback, benches/RESULTS.md), and one Redis core decides about 270,000
///   requests a second for all instances together.
/// - **synced** (`sync_interval` set): each instance decides on its own, at the local limiter's
///   cost, and every `sync_interval` shares what it admitted since the last sync and learns what
///   the others admitted, in one pipelined round trip for all its active keys. The instances
///   together may then pass the limit by what the others admit between two syncs: with `n`
///   instances, at most `(n - 1) × (burst + rate × 2 × (sync_interval + the sync's round trip)
///   / per)` over the limit for the token and leaky buckets (see
///   `RateLimitLayer::sync_interval`, feature `redis`, for the bound and the windows').
///
/// ```
/// use proxflow_ratelimit::{OnUnavailable, RateLimitConfig};
///
/// let config: RateLimitConfig = serde_yaml::from_str(
///     "rate: 100\nper: 1s\nburst: 20\nkey: api_key\ndistributed:\n  redis:\n    address: localhost:6379\n    password: secret\n    db: 0\n",
/// )
/// .unwrap();
/// let distributed = config.distributed.as_ref().unwrap();
/// assert_eq!(distributed.redis.address, "localhost:6379");
/// assert_eq!(distributed.on_unavailable, OnUnavailable::FailOpen);
/// assert_eq!(distributed.sync_interval, None); // exact mode
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedConfig {
    /// Where the shared state lives.
    pub redis: RedisConfig,
    /// The origin's synced mode: each instance decides on its own and shares its counts every
    /// `sync_interval` (e.g. `"100ms"`, at least 1 ms). Default: none, exact mode. While Redis
    /// is unavailable, decisions stay local and each key's admissions are kept (at most
    /// `burst + rate × (sync_interval / per + 1)` a key) and shared when it is back, so
    /// `on_unavailable` does not apply and `fail_closed` is refused with it.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub sync_interval: Option<Duration>,
    /// Exact mode: what a request gets while Redis cannot answer within `timeout`: `fail_open`
    /// (the instance's own limiter decides) or `fail_closed` (503). Default `fail_open`.
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
    /// The longest a request waits for Redis, connecting included (exact mode); in synced mode,
    /// the least a sync is given (it is given `sync_interval` if that is longer). Default
    /// 50 ms.
    #[serde(default = "default_redis_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Put before every key this layer keeps in Redis. Layers that must not share counts and
    /// have the same quota, key kind and `policy_name` need distinct prefixes. Default `rl:`.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
}

/// The names of the `redis` section's fields in this configuration.
pub(crate) const REDIS_FIELDS: Fields = Fields {
    address: "distributed.redis.address",
    db: "distributed.redis.db",
};

fn default_redis_timeout() -> Duration {
    Duration::from_millis(50)
}

fn default_key_prefix() -> String {
    "rl:".into()
}

/// What a request gets while Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum OnUnavailable {
    /// The instance's own limiter decides, with the same quota; with `n` instances up to `n`
    /// times the limit passes until Redis is back.
    #[default]
    #[serde(rename = "fail_open")]
    FailOpen,
    /// `503 Service Unavailable` with `Retry-After: 1`: nothing passes unlimited.
    #[serde(rename = "fail_closed")]
    FailClosed,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            algorithm: Algorithm::TokenBucket,
            rate: 10,
            per: Duration::from_secs(1),
            burst: 5,
            key: "ip".into(),
            reject: Reject::TooManyRequests,
            max_delay: Duration::from_secs(1),
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            ipv6_prefix: 64,
            user_header: None,
            api_key_header: "x-api-key".into(),
            api_key_query: Some("api_key".into()),
            missing_key: MissingKey::Shared,
            max_keys: 1_000_000,
            shadow: false,
            headers: LimitHeaders::Always,
            legacy_headers: false,
            mark_refusals: false,
            policy_name: "default".into(),
            distributed: None,
        }
    }
}

impl RateLimitConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| Err(ConfigError::new(field, reason));
        check_quota(self.rate, self.per, self.burst)?;
        if self.burst == 0 && self.algorithm == Algorithm::TokenBucket {
            return invalid("burst", "a token bucket needs a capacity of at least 1");
        }
        self.key.parse::<Key>()?;
        check_ipv6_prefix(self.ipv6_prefix)?;
        if self.max_keys == 0 {
            return invalid("max_keys", "must be at least 1");
        }
        if http::HeaderName::from_bytes(self.api_key_header.as_bytes()).is_err() {
            return invalid("api_key_header", "must be a valid header name");
        }
        if let Some(name) = &self.user_header {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return invalid("user_header", "must be a valid header name");
            }
        }
        check_policy_name(&self.policy_name)?;
        self.trusted_proxies()?;
        if let Some(distributed) = &self.distributed {
            distributed.validate()?;
        }
        Ok(())
    }

    /// `trusted_proxies`, parsed.
    pub(crate) fn trusted_proxies(&self) -> Result<TrustedProxies, ConfigError> {
        TrustedProxies::parse(&self.trusted_proxies).map_err(|(entry, reason)| {
            ConfigError::new("trusted_proxies", format!("{entry:?}: {reason}"))
        })
    }
}

impl DistributedConfig {
    /// A config for the Redis at `address`, with the defaults for the rest.
    pub fn new(address: impl Into<String>) -> Self {
        DistributedConfig {
            redis: RedisConfig {
                address: address.into(),
                password: None,
                username: None,
                db: None,
            },
            sync_interval: None,
            on_unavailable: OnUnavailable::FailOpen,
            timeout: default_redis_timeout(),
            key_prefix: default_key_prefix(),
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(interval) = self.sync_interval {
            check_sync_interval(interval)?;
            if self.on_unavailable == OnUnavailable::FailClosed {
                return Err(ConfigError::new(
                    "distributed.on_unavailable",
                    "`fail_closed` applies to exact mode only: with `sync_interval` every \
                     decision is local, and Redis only shares the counts; leave \
                     `on_unavailable` out or remove `sync_interval`",
                ));
            }
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new(
                "distributed.timeout",
                "must be a positive duration such as \"50ms\"",
            ));
        }
        self.redis.check(REDIS_FIELDS)?;
        #[cfg(not(feature = "redis"))]
        return Err(ConfigError::new(
            "distributed",
            "needs the `redis` feature of proxflow-ratelimit",
        ));
        #[cfg(feature = "redis")]
        {
            self.redis.connection_info(REDIS_FIELDS)?;
            Ok(())
        }
    }
}

/// The shortest `sync_interval`: a sync is a round trip for every active key.
pub(crate) const MIN_SYNC_INTERVAL: Duration = Duration::from_millis(1);

pub(crate) fn check_sync_interval(interval: Duration) -> Result<(), ConfigError> {
    if interval < MIN_SYNC_INTERVAL {
        return Err(ConfigError::new(
            "distributed.sync_interval",
            "must be at least 1ms, such as \"100ms\"",
        ));
    }
    if interval.as_nanos() > u128::from(MAX_SPAN) {
        return Err(ConfigError::new(
            "distributed.sync_interval",
            "must be at most 100 years",
        ));
    }
    Ok(())
}

/// Whether `rate` per `per` with `burst` can be timed: the algorithms count in nanoseconds and
/// reason about spans of at most [`MAX_SPAN`].
pub(crate) fn check_quota(rate: u32, per: Duration, burst: u32) -> Result<(), ConfigError> {
    if rate == 0 {
        return Err(ConfigError::new("rate", "must be at least 1"));
    }
    if per.is_zero() {
        return Err(ConfigError::new(
            "per",
            "must be a positive duration such as \"1s\"",
        ));
    }
    if per.as_nanos() > u128::from(MAX_SPAN) {
        return Err(ConfigError::new("per", "must be at most 100 years"));
    }
    if per.as_nanos() < u128::from(rate) {
        return Err(ConfigError::new(
            "rate",
            "more than one request per nanosecond cannot be timed",
        ));
    }
    let interval = per.as_nanos() / u128::from(rate);
    if interval * u128::from(burst) > u128::from(MAX_SPAN) {
        return Err(ConfigError::new(
            "burst",
            "burst × per / rate must be at most 100 years",
        ));
    }
    Ok(())
}

pub(crate) fn check_ipv6_prefix(bits: u8) -> Result<(), ConfigError> {
    if bits > 128 {
        return Err(ConfigError::new("ipv6_prefix", "must be between 0 and 128"));
    }
    Ok(())
}

/// The name goes into header values as a structured-field token.
pub(crate) fn check_policy_name(name: &str) -> Result<(), ConfigError> {
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !token {
        return Err(ConfigError::new(
            "policy_name",
            "must be a non-empty token of letters, digits, `-`, `_` or `.`",
        ));
    }
    Ok(())
}

/// A quota: `rate` requests per `per`, with `burst`. Returned by a quota resolver for
/// per-key tiers. A quota that [`RateLimitConfig::validate`] would refuse (`rate` 0, `per` zero
/// or over 100 years, more than one request per nanosecond, `burst × per / rate` over 100 years)
/// is not used: the request gets the layer's own quota instead, and a warning is logged (once
/// per layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Requests per `per`; at least 1, at most one per nanosecond.
    pub rate: u32,
    /// The period; not zero, at most 100 years.
    pub per: Duration,
    /// Capacity (token bucket) or line length (leaky bucket), as in
    /// [`RateLimitLayer::burst`](crate::RateLimitLayer::burst).
    pub burst: u32,
}

impl Quota {
    pub(crate) fn per_ns(&self) -> u64 {
        nanos(self.per).max(1)
    }
}
