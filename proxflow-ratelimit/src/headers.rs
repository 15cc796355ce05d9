//! The fields that tell a client its limit: `RateLimit-Policy` and `RateLimit` (IETF httpapi
//! draft "RateLimit header fields for HTTP", structured-field form), `Retry-After`, and the
//! legacy `X-RateLimit-*` trio.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::algorithm::{Nanos, Rate};

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Whole seconds, rounded up: a client told 0 would retry too early.
pub(crate) fn seconds_up(nanos: Nanos) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

/// What the fields report for one answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LimitState {
    pub(crate) rate: Rate,
    pub(crate) remaining: u32,
    pub(crate) reset_after: Nanos,
}

/// `RateLimit-Policy` and `RateLimit` values of one quota, built once: formatting and
/// allocating two header values per request would be most of the layer's cost. The cached
/// values are [interned](interned): an answer carries one pointer to them.
pub(crate) struct HeaderCache {
    rate: Rate,
    name: String,
    policy: Interned,
    /// The quota's `RateLimit-Policy` value beside a `RateLimit` value, by `remaining`, each
    /// with the reset it was made for. On the token bucket's allowed path the reset follows
    /// from `remaining`, so the first value made is the one every later answer with that
    /// `remaining` needs; any other reset is formatted.
    limits: Box<[OnceLock<(u64, InternedPair)>]>,
}

/// `RateLimit-Policy`, then `RateLimit`.
pub(crate) type CachedPair = [HeaderValue; 2];

/// An [`interned_pair`]; `None` once the set is full.
type InternedPair = Option<&'static CachedPair>;

/// A value made once for the life of the process (see [`interned`]); `None` once the set is
/// full.
type Interned = Option<&'static HeaderValue>;

/// Quotas with a larger burst cache the values of their lowest `remaining` counts only.
const MAX_CACHED: usize = 1024;

impl HeaderCache {
    pub(crate) fn new(policy: &str, rate: Rate) -> Self {
        let slots = (rate.burst as usize).saturating_add(1).min(MAX_CACHED);
        HeaderCache {
            rate,
            name: policy.to_string(),
            policy: interned(policy_value(policy, &rate)),
            limits: (0..slots).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The policy name the fields carry.
    #[cfg(feature = "redis")]
    pub(crate) fn policy_name(&self) -> &str {
        &self.name
    }

    /// The fields of one answer.
    pub(crate) fn fields(&self, state: &LimitState, legacy: bool) -> LimitFields {
        let reset = seconds_up(state.reset_after);
        let own_quota = state.rate == self.rate;
        let cached = self.cached_pair(state.remaining, reset);
        if let (Some(pair), true, false) = (cached, own_quota, legacy) {
            return LimitFields::Cached(pair);
        }
        let policy = self.policy.filter(|_| own_quota);
        let limit = cached.map(|[_, limit]| limit);
        let legacy = legacy.then(|| {
            [
                HeaderValue::from(state.rate.rate),
                HeaderValue::from(state.remaining),
                HeaderValue::from(reset),
            ]
        });
        LimitFields::Made(Box::new(MadeFields {
            policy: policy.map_or_else(|| policy_value(&self.name, &state.rate), Clone::clone),
            limit: limit.map_or_else(
                || limit_value(&self.name, state.remaining, reset),
                Clone::clone,
            ),
            legacy,
        }))
    }

    fn cached_pair(&self, remaining: u32, reset: u64) -> InternedPair {
        let slot = self.limits.get(remaining as usize)?;
        let (cached_reset, pair) = slot.get_or_init(|| {
            let limit = interned(limit_value(&self.name, remaining, reset));
            (reset, self.policy.zip(limit).and_then(interned_pair))
        });
        (*cached_reset == reset).then_some(*pair).flatten()
    }
}

/// `Retry-After` values up to this many seconds are interned; longer waits are formatted.
const MAX_CACHED_RETRY: u64 = 3600;

/// The `Retry-After` value of a wait, in whole seconds rounded up, at least 1: a client told 0
/// would retry at once.
pub(crate) fn retry_after(wait: Nanos) -> HeaderValue {
    static VALUES: [OnceLock<Interned>; MAX_CACHED_RETRY as usize + 1] =
        [const { OnceLock::new() }; MAX_CACHED_RETRY as usize + 1];
    let seconds = seconds_up(wait).max(1);
    VALUES
        .get(seconds as usize)
        .and_then(|slot| *slot.get_or_init(|| interned(HeaderValue::from(seconds))))
        .map_or_else(|| HeaderValue::from(seconds), HeaderValue::clone)
}

/// Most values the process keeps for good (about 2 MB).
const MAX_INTERNED: usize = 65_536;

/// The same value with `'static` bytes, kept for the life of the process and shared by every
/// layer that makes it; `None` once the set is full. Cloning a reference-counted value and
/// dropping it with the response are two atomic operations on a line both cores write; a
/// static one costs neither, and an answer carries a pointer to it instead of the value (a
/// smaller future to move). Values repeat across layers built from the same quota, and there
/// are at most 1025 per quota, so the set stays small; the cap bounds it anyway.
fn interned(value: HeaderValue) -> Interned {
    static VALUES: Mutex<BTreeMap<&'static [u8], &'static HeaderValue>> =
        Mutex::new(BTreeMap::new());
    let mut values = VALUES.lock().ok()?;
    if let Some(&known) = values.get(value.as_bytes()) {
        return Some(known);
    }
    if values.len() >= MAX_INTERNED {
        return None;
    }
    let bytes: &'static [u8] = Box::leak(value.as_bytes().into());
    let leaked: &'static HeaderValue = Box::leak(Box::new(
        HeaderValue::from_maybe_shared(Bytes::from_static(bytes)).ok()?,
    ));
    values.insert(bytes, leaked);
    Some(leaked)
}

/// The two values side by side, kept for the life of the process like [`interned`] values.
fn interned_pair((policy, limit): (&'static HeaderValue, &'static HeaderValue)) -> InternedPair {
    // Interned values are unique by content, so their addresses identify the pair.
    static PAIRS: Mutex<BTreeMap<(usize, usize), &'static CachedPair>> =
        Mutex::new(BTreeMap::new());
    let key = (
        policy as *const HeaderValue as usize,
        limit as *const HeaderValue as usize,
    );
    let mut pairs = PAIRS.lock().ok()?;
    if let Some(&known) = pairs.get(&key) {
        return Some(known);
    }
    if pairs.len() >= MAX_INTERNED {
        return None;
    }
    let pair: &'static CachedPair = Box::leak(Box::new([policy.clone(), limit.clone()]));
    pairs.insert(key, pair);
    Some(pair)
}

/// `"name";q=<quota>;w=<window seconds>`. The draft's window is whole seconds, so a period
/// that is not is advertised as the whole-second window `w = ceil(per)` with the quota scaled
/// to it, rounded down (at least 1) so that it never states more than the sustained rate
/// admits: 1 per 100 ms reads `q=10;w=1`, 3 per 1.5 s reads `q=4;w=2`.
fn policy_value(name: &str, rate: &Rate) -> HeaderValue {
    const SECOND: u128 = 1_000_000_000;
    // The largest integer a structured field may carry.
    const MAX_INTEGER: u128 = 999_999_999_999_999;
    let window = seconds_up(rate.per_ns).max(1);
    let quota =
        u128::from(rate.rate) * u128::from(window) * SECOND / u128::from(rate.per_ns.max(1));
    let quota = quota.clamp(1, MAX_INTEGER) as u64;
    structured(name, [(b"q", quota), (b"w", window)])
}

/// `"name";r=<remaining>;t=<reset seconds>`.
fn limit_value(name: &str, remaining: u32, reset: u64) -> HeaderValue {
    structured(name, [(b"r", u64::from(remaining)), (b"t", reset)])
}

/// A string item with two integer parameters, written without the formatting machinery: values
/// outside the cache are made per answer.
fn structured(name: &str, parameters: [(&[u8; 1], u64); 2]) -> HeaderValue {
    let mut text = Vec::with_capacity(name.len() + 48);
    text.push(b'"');
    text.extend_from_slice(name.as_bytes());
    text.push(b'"');
    for (key, value) in parameters {
        text.push(b';');
        text.extend_from_slice(key);
        text.push(b'=');
        text.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }
    HeaderValue::from_maybe_shared(Bytes::from(text)).unwrap_or(HeaderValue::from_static("\"\""))
}

/// The fields of one answer, made when the layer decides and inserted into the response.
pub(crate) enum LimitFields {
    /// The layer's own quota with a cached remaining count: a pointer, nothing to free.
    Cached(&'static CachedPair),
    /// Values formatted for this answer: other quotas, uncached counts, legacy fields.
    Made(Box<MadeFields>),
}

pub(crate) struct MadeFields {
    policy: HeaderValue,
    limit: HeaderValue,
    legacy: Option<[HeaderValue; 3]>,
}

impl LimitFields {
    /// `RateLimit-Policy` and `RateLimit` are appended: the draft defines both as lists, and
    /// an inner service's (another limiter's) items stay beside this layer's. The legacy
    /// `X-RateLimit-*` fields are single values and replace the inner service's.
    pub(crate) fn add_to(self, headers: &mut HeaderMap) {
        match self {
            LimitFields::Cached([policy, limit]) => {
                headers.append(RATELIMIT_POLICY, policy.clone());
                headers.append(RATELIMIT, limit.clone());
            }
            LimitFields::Made(made) => {
                let MadeFields {
                    policy,
                    limit,
                    legacy,
                } = *made;
                headers.append(RATELIMIT_POLICY, policy);
                headers.append(RATELIMIT, limit);
                if let Some([limit, remaining, reset]) = legacy {
                    headers.insert(X_LIMIT, limit);
                    headers.insert(X_REMAINING, remaining);
                    headers.insert(X_RESET, reset);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_fields_and_legacy_headers() {
        let mut headers = HeaderMap::new();
        let state = LimitState {
            rate: Rate::new(100, 60_000_000_000, 10),
            remaining: 42,
            reset_after: 1_500_000_000,
        };
        let cache = HeaderCache::new("default", state.rate);
        cache.fields(&state, true).add_to(&mut headers);
        assert_eq!(headers["ratelimit-policy"], "\"default\";q=100;w=60");
        assert_eq!(headers["ratelimit"], "\"default\";r=42;t=2");
        assert_eq!(headers["x-ratelimit-limit"], "100");
        assert_eq!(headers["x-ratelimit-remaining"], "42");
        assert_eq!(headers["x-ratelimit-reset"], "2");
        // A cached value and another quota's values.
        let mut again = HeaderMap::new();
        cache.fields(&state, false).add_to(&mut again);
        assert_eq!(again["ratelimit"], "\"default\";r=42;t=2");
        let other = LimitState {
            rate: Rate::new(5, 1_000_000_000, 1),
            remaining: 500,
            reset_after: 0,
        };
        let mut other_quota = HeaderMap::new();
        cache.fields(&other, false).add_to(&mut other_quota);
        assert_eq!(other_quota["ratelimit-policy"], "\"default\";q=5;w=1");
        assert_eq!(other_quota["ratelimit"], "\"default\";r=500;t=0");
        // Layers built from the same quota share one copy of each cached value (counts up to
        // the burst are cached).
        let twin = HeaderCache::new("default", state.rate);
        let within_burst = LimitState {
            remaining: 7,
            ..state
        };
        let (mut first, mut second) = (HeaderMap::new(), HeaderMap::new());
        cache.fields(&within_burst, false).add_to(&mut first);
        twin.fields(&within_burst, false).add_to(&mut second);
        for name in ["ratelimit", "ratelimit-policy"] {
            assert_eq!(
                first[name].as_bytes().as_ptr(),
                second[name].as_bytes().as_ptr(),
                "{name}"
            );
        }
        assert_eq!(seconds_up(1), 1);
        assert_eq!(seconds_up(0), 0);
    }

    #[test]
    fn policy_scales_the_quota_to_a_whole_second_window() {
        let policy = |rate, per_ns| policy_value("p", &Rate::new(rate, per_ns, 1));
        const SECOND: u64 = 1_000_000_000;
        assert_eq!(policy(10, SECOND), "\"p\";q=10;w=1");
        assert_eq!(policy(100, 60 * SECOND), "\"p\";q=100;w=60");
        assert_eq!(policy(1, SECOND / 10), "\"p\";q=10;w=1");
        assert_eq!(policy(3, 3 * SECOND / 2), "\"p\";q=4;w=2");
        // Rounded down: 7 per 1.1 s is 12.7 per 2 s.
        assert_eq!(policy(7, 11 * SECOND / 10), "\"p\";q=12;w=2");
        // 1.99 per 2 s.
        assert_eq!(policy(1, SECOND + 1), "\"p\";q=1;w=2");
        // The largest integer a structured field may carry.
        assert_eq!(policy(u32::MAX, 1), "\"p\";q=999999999999999;w=1");
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        const SECOND: Nanos = 1_000_000_000;
        assert_eq!(retry_after(0), "1", "never 0: a client would retry at once");
        assert_eq!(retry_after(SECOND + 1), "2");
        assert_eq!(retry_after(3600 * SECOND), "3600");
        assert_eq!(
            retry_after(3601 * SECOND),
            "3601",
            "formatted past the cache"
        );
        // Cached values are shared, not copied per answer.
        assert_eq!(
            retry_after(30 * SECOND).as_bytes().as_ptr(),
            retry_after(30 * SECOND).as_bytes().as_ptr()
        );
    }
}
