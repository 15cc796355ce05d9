//! The fields that tell a client its limit: `RateLimit-Policy` and `RateLimit` (IETF httpapi
//! draft "RateLimit header fields for HTTP", structured-field form), `Retry-After`, and the
//! legacy `X-RateLimit-*` trio.

use std::sync::OnceLock;

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
/// allocating two header values per request was most of the layer's cost (perf: `format`,
/// `malloc`, `free` on top of the profile of the criterion bench).
pub(crate) struct HeaderCache {
    rate: Rate,
    name: String,
    policy: HeaderValue,
    /// `RateLimit` values for `remaining` and `reset` seconds below `CACHED`.
    limits: Box<[OnceLock<HeaderValue>]>,
}

const CACHED: u64 = 64;

impl HeaderCache {
    pub(crate) fn new(policy: &str, rate: Rate) -> Self {
        let window = seconds_up(rate.per_ns).max(1);
        let policy_value = header_value(format!("\"{policy}\";q={};w={window}", rate.rate));
        let limits = (0..CACHED * CACHED).map(|_| OnceLock::new()).collect();
        HeaderCache {
            rate,
            name: policy.to_string(),
            policy: policy_value,
            limits,
        }
    }

    fn policy(&self, rate: &Rate) -> HeaderValue {
        if *rate == self.rate {
            return self.policy.clone();
        }
        let window = seconds_up(rate.per_ns).max(1);
        header_value(format!("\"{}\";q={};w={window}", self.name, rate.rate))
    }

    fn limit(&self, remaining: u32, reset: u64) -> HeaderValue {
        let format = || header_value(format!("\"{}\";r={remaining};t={reset}", self.name));
        let remaining_index = u64::from(remaining);
        if remaining_index < CACHED && reset < CACHED {
            return self.limits[(remaining_index * CACHED + reset) as usize]
                .get_or_init(format)
                .clone();
        }
        format()
    }
}

fn header_value(text: String) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or(HeaderValue::from_static("\"\""))
}

pub(crate) fn insert(
    headers: &mut HeaderMap,
    cache: &HeaderCache,
    state: &LimitState,
    legacy: bool,
) {
    let reset = seconds_up(state.reset_after);
    headers.insert(RATELIMIT_POLICY, cache.policy(&state.rate));
    headers.insert(RATELIMIT, cache.limit(state.remaining, reset));
    if legacy {
        headers.insert(X_LIMIT, HeaderValue::from(state.rate.rate));
        headers.insert(X_REMAINING, HeaderValue::from(state.remaining));
        headers.insert(X_RESET, HeaderValue::from(reset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_fields_and_legacy_headers() {
        let mut headers = HeaderMap::new();
        let state = LimitState {
            rate: Rate {
                rate: 100,
                per_ns: 60_000_000_000,
                burst: 10,
            },
            remaining: 42,
            reset_after: 1_500_000_000,
        };
        let cache = HeaderCache::new("default", state.rate);
        insert(&mut headers, &cache, &state, true);
        assert_eq!(headers["ratelimit-policy"], "\"default\";q=100;w=60");
        assert_eq!(headers["ratelimit"], "\"default\";r=42;t=2");
        assert_eq!(headers["x-ratelimit-limit"], "100");
        assert_eq!(headers["x-ratelimit-remaining"], "42");
        assert_eq!(headers["x-ratelimit-reset"], "2");
        // A cached value and another quota's values.
        let mut again = HeaderMap::new();
        insert(&mut again, &cache, &state, false);
        assert_eq!(again["ratelimit"], "\"default\";r=42;t=2");
        let other = LimitState {
            rate: Rate {
                rate: 5,
                per_ns: 1_000_000_000,
                burst: 1,
            },
            remaining: 500,
            reset_after: 0,
        };
        insert(&mut again, &cache, &other, false);
        assert_eq!(again["ratelimit-policy"], "\"default\";q=5;w=1");
        assert_eq!(again["ratelimit"], "\"default\";r=500;t=0");
        assert_eq!(seconds_up(1), 1);
        assert_eq!(seconds_up(0), 0);
    }
}
