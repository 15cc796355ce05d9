//! The fields that tell a client its limit: `RateLimit-Policy` and `RateLimit` (IETF httpapi
//! draft "RateLimit header fields for HTTP", structured-field form), `Retry-After`, and the
//! legacy `X-RateLimit-*` trio.

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

pub(crate) fn insert(headers: &mut HeaderMap, policy: &str, state: &LimitState, legacy: bool) {
    let window = seconds_up(state.rate.per_ns).max(1);
    let reset = seconds_up(state.reset_after);
    let policy_value = format!("\"{policy}\";q={};w={window}", state.rate.rate);
    let limit_value = format!("\"{policy}\";r={};t={reset}", state.remaining);
    if let Ok(value) = HeaderValue::from_str(&policy_value) {
        headers.insert(RATELIMIT_POLICY, value);
    }
    if let Ok(value) = HeaderValue::from_str(&limit_value) {
        headers.insert(RATELIMIT, value);
    }
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
        insert(&mut headers, "default", &state, true);
        assert_eq!(headers["ratelimit-policy"], "\"default\";q=100;w=60");
        assert_eq!(headers["ratelimit"], "\"default\";r=42;t=2");
        assert_eq!(headers["x-ratelimit-limit"], "100");
        assert_eq!(headers["x-ratelimit-remaining"], "42");
        assert_eq!(headers["x-ratelimit-reset"], "2");
        assert_eq!(seconds_up(1), 1);
        assert_eq!(seconds_up(0), 0);
    }
}
