//! The serde configuration, with the origin's names:
//!
//! ```text
//! rate_limit { algorithm token_bucket   # token_bucket | leaky_bucket | sliding_window | sliding_window_approx
//!              rate 10  per 1s  burst 5
//!              key ip                   # ip | user | api_key | header:<name> | global
//!              reject 429 }             # 429 | delay | drop
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::algorithm::MAX_SPAN;
use crate::client_ip::{ForwardedHeader, TrustedProxies};
use crate::error::ConfigError;

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
    /// `ip`, `user`, `api_key`, `header:<name>` or `global`. Default `ip`. A key given twice
    /// counts by its first value (see [`RateLimitLayer::key`](crate::RateLimitLayer::key)).
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
    /// layers and logs. Default `false`: three small allocations per refusal, about 8% of the
    /// user-space instructions of a refused request in the example `ratelimit_server`.
    pub mark_refusals: bool,
    /// The policy name in the `RateLimit-Policy` and `RateLimit` fields. Default `default`.
    pub policy_name: String,
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
        }
    }
}

impl RateLimitConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.into(),
            })
        };
        if self.rate == 0 {
            return invalid("rate", "must be at least 1");
        }
        if self.per.is_zero() || self.per.as_nanos() > u128::from(u64::MAX) {
            return invalid("per", "must be a positive duration such as \"1s\"");
        }
        if self.per.as_nanos() < u128::from(self.rate) {
            return invalid(
                "rate",
                "more than one request per nanosecond cannot be timed",
            );
        }
        if self.per.as_nanos() > u128::from(MAX_SPAN) {
            return invalid("per", "must be at most 100 years");
        }
        let interval = self.per.as_nanos() / u128::from(self.rate);
        if interval * u128::from(self.burst) > u128::from(MAX_SPAN) {
            return invalid("burst", "burst × per / rate must be at most 100 years");
        }
        if self.burst == 0 && self.algorithm == Algorithm::TokenBucket {
            return invalid("burst", "a token bucket needs a capacity of at least 1");
        }
        crate::key::KeyKind::parse(&self.key)?;
        if self.ipv6_prefix > 128 {
            return invalid("ipv6_prefix", "must be between 0 and 128");
        }
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
        if self.policy_name.is_empty()
            || !self
                .policy_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return invalid(
                "policy_name",
                "must be a non-empty token of letters, digits, `-`, `_` or `.`",
            );
        }
        TrustedProxies::parse(&self.trusted_proxies).map_err(|(entry, reason)| {
            ConfigError::Invalid {
                field: "trusted_proxies",
                reason: format!("{entry:?}: {reason}"),
            }
        })?;
        Ok(())
    }
}
