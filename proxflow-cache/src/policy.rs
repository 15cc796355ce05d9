//! RFC 9111's rules for a shared cache, with no clock, no store and no I/O: whether a
//! response may be stored, how long it stays fresh, its age, whether a stored response may
//! answer a request, and RFC 9110's conditionals evaluated against it. Times are wall-clock
//! times passed in, as HTTP dates are.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderName};
use http::{HeaderMap, Method, StatusCode};

use crate::directives::{RequestDirectives, ResponseDirectives};

/// Why a response is not stored; `Cache-Status` names it as `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    Method,
    Status,
    NoStore,
    Private,
    Authorization,
    VaryStar,
    /// A body larger than `max_object_size`.
    TooBig,
    /// Neither explicit freshness, a heuristically cacheable status, nor a validator.
    NoFreshness,
}

impl NotStored {
    pub(crate) fn detail(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::VaryStar => "vary-star",
            NotStored::TooBig => "too-big",
            NotStored::NoFreshness => "no-freshness",
        }
    }
}

/// Status codes a cache may give heuristic freshness (RFC 9110 §15.1).
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The status codes this cache understands well enough to store (`must-understand` allows
/// no others); 206 and 304 are not stored (no range or partial-content assembly).
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 302 | 303 | 307 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// What a response's headers say for storage and freshness.
#[derive(Debug, Clone)]
pub(crate) struct Response<'a> {
    pub(crate) status: StatusCode,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) directives: &'a ResponseDirectives,
}

/// Whether a shared cache may store the response to a request (RFC 9111 §3, §3.5). `ttl` is
/// the heuristic freshness lifetime (0: none).
pub(crate) fn storable(
    method: &Method,
    request_headers: &HeaderMap,
    request: &RequestDirectives,
    response: &Response<'_>,
    ttl: Duration,
) -> Result<(), NotStored> {
    let d = response.directives;
    if method != Method::GET {
        return Err(NotStored::Method);
    }
    if d.must_understand {
        // `must-understand` overrides `no-store` for the status codes a cache understands.
        if !understood(response.status) {
            return Err(NotStored::Status);
        }
    } else if d.no_store {
        return Err(NotStored::NoStore);
    }
    // Any final status may be stored; partial content and 304 are not (no range assembly).
    let status = response.status;
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Err(NotStored::Status);
    }
    if request.no_store {
        return Err(NotStored::NoStore);
    }
    if d.private {
        return Err(NotStored::Private);
    }
    let explicitly_shared = d.public || d.s_maxage.is_some() || d.must_revalidate;
    if request_headers.contains_key(header::AUTHORIZATION) && !explicitly_shared {
        return Err(NotStored::Authorization);
    }
    if vary_names(response.headers).any(|name| name == "*") {
        return Err(NotStored::VaryStar);
    }
    let explicit = d.max_age.is_some()
        || d.s_maxage.is_some()
        || response.headers.contains_key(header::EXPIRES);
    let heuristic = heuristic_allowed(response, ttl);
    let validator = response.headers.contains_key(header::ETAG)
        || response.headers.contains_key(header::LAST_MODIFIED);
    if explicit || heuristic || (validator && d.no_cache) {
        Ok(())
    } else {
        Err(NotStored::NoFreshness)
    }
}

/// The freshness lifetime (RFC 9111 §4.2.1): `s-maxage`, else `max-age`, else `Expires` minus
/// `Date` (an `Expires` that does not parse is in the past), else `ttl` for a response with
/// `Last-Modified` whose status allows heuristic freshness or that is `public`.
pub(crate) fn freshness_lifetime(
    response: &Response<'_>,
    response_time: SystemTime,
    ttl: Duration,
) -> Duration {
    let d = response.directives;
    if let Some(lifetime) = d.s_maxage.or(d.max_age) {
        return lifetime;
    }
    if let Some(expires) = response.headers.get(header::EXPIRES) {
        let Some(expires) = http_date(Some(expires)) else {
            return Duration::ZERO;
        };
        let date = date(response.headers).unwrap_or(response_time);
        return expires.duration_since(date).unwrap_or(Duration::ZERO);
    }
    if heuristic_allowed(response, ttl) {
        ttl
    } else {
        Duration::ZERO
    }
}

/// Whether `ttl` serves as the heuristic freshness lifetime of a response without explicit
/// freshness (RFC 9111 §4.2.2): a status that allows it, or `public`, and a `Last-Modified`
/// to base it on (a response that says nothing of its age is not reused without asking).
fn heuristic_allowed(response: &Response<'_>, ttl: Duration) -> bool {
    !ttl.is_zero()
        && (response.directives.public || heuristically_cacheable(response.status))
        && response.headers.contains_key(header::LAST_MODIFIED)
}

/// The `Date` of a message, if it parses.
pub(crate) fn date(headers: &HeaderMap) -> Option<SystemTime> {
    http_date(headers.get(header::DATE))
}

fn http_date(value: Option<&http::HeaderValue>) -> Option<SystemTime> {
    httpdate::parse_http_date(value?.to_str().ok()?).ok()
}

/// The `Age` a response arrived with: 0 without one; its value when it is one non-negative
/// integer; otherwise (a list, a second line, a sign, a fraction, a parameter) an age past
/// any freshness, so that a response whose age cannot be known is not reused unchecked (what
/// the HTTP cache test suite requires).
pub(crate) fn age_value(headers: &HeaderMap) -> Duration {
    const UNKNOWN: Duration = Duration::from_secs(1 << 31);
    let mut lines = headers.get_all(header::AGE).iter();
    let Some(first) = lines.next() else {
        return Duration::ZERO;
    };
    if lines.next().is_some() {
        return UNKNOWN;
    }
    let value = first.to_str().unwrap_or("").trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return UNKNOWN;
    }
    value
        .parse::<u64>()
        .map_or(UNKNOWN, |secs| Duration::from_secs(secs.min(1 << 31)))
}

/// What a stored response's age and freshness are computed from.
#[derive(Debug, Clone)]
pub(crate) struct Timing {
    pub(crate) request_time: SystemTime,
    pub(crate) response_time: SystemTime,
    pub(crate) date: Option<SystemTime>,
    pub(crate) age_value: Duration,
    pub(crate) lifetime: Duration,
}

impl Timing {
    /// RFC 9111 §4.2.3's current age at `now`.
    pub(crate) fn current_age(&self, now: SystemTime) -> Duration {
        let apparent_age = self
            .date
            .and_then(|date| self.response_time.duration_since(date).ok())
            .unwrap_or(Duration::ZERO);
        let response_delay = self
            .response_time
            .duration_since(self.request_time)
            .unwrap_or(Duration::ZERO);
        let corrected_age_value = self.age_value + response_delay;
        let corrected_initial_age = apparent_age.max(corrected_age_value);
        let resident_time = now
            .duration_since(self.response_time)
            .unwrap_or(Duration::ZERO);
        corrected_initial_age + resident_time
    }

    /// How long past its freshness it is at `now`; `None` while fresh.
    pub(crate) fn staleness(&self, now: SystemTime) -> Option<Duration> {
        let age = self.current_age(now);
        (age >= self.lifetime).then(|| age - self.lifetime)
    }
}

/// How a stored response may answer a request (RFC 9111 §4.2.4, §5.2.1, RFC 5861).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// Fresh enough for the request.
    Fresh,
    /// Stale, but the request accepts it (`max-stale`).
    StaleAccepted,
    /// Stale within `stale-while-revalidate`: served, and revalidated in the background.
    StaleWhileRevalidate,
    /// Only after a successful revalidation.
    Revalidate,
}

pub(crate) fn reuse(
    timing: &Timing,
    stored: &ResponseDirectives,
    request: &RequestDirectives,
    now: SystemTime,
) -> Reuse {
    if stored.no_cache || request.no_cache {
        return Reuse::Revalidate;
    }
    let age = timing.current_age(now);
    if request.max_age.is_some_and(|max_age| age > max_age) {
        return Reuse::Revalidate;
    }
    if let Some(min_fresh) = request.min_fresh {
        if timing.lifetime.saturating_sub(age) < min_fresh || age >= timing.lifetime {
            return Reuse::Revalidate;
        }
    }
    let Some(staleness) = timing.staleness(now) else {
        return Reuse::Fresh;
    };
    if stored.may_serve_stale() && request.max_stale.is_some_and(|max| staleness <= max) {
        return Reuse::StaleAccepted;
    }
    let revalidation_required = stored.must_revalidate || stored.proxy_revalidate;
    if !revalidation_required
        && stored
            .stale_while_revalidate
            .is_some_and(|window| staleness < window)
    {
        return Reuse::StaleWhileRevalidate;
    }
    Reuse::Revalidate
}

/// Whether a stale response may stand in for an origin that failed (RFC 5861
/// `stale-if-error`, from the response or the request).
pub(crate) fn stale_if_error(
    timing: &Timing,
    stored: &ResponseDirectives,
    request: &RequestDirectives,
    now: SystemTime,
) -> bool {
    if stored.must_revalidate || stored.proxy_revalidate || stored.no_cache {
        return false;
    }
    let staleness = timing.staleness(now).unwrap_or(Duration::ZERO);
    [stored.stale_if_error, request.stale_if_error]
        .into_iter()
        .flatten()
        .any(|window| staleness <= window)
}

/// The field names of `Vary`, lowercased.
pub(crate) fn vary_names(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
}

/// A request's value of a selecting header as `Vary` compares it: its lines joined by `, `,
/// whitespace around each value dropped; `None` when absent.
pub(crate) fn selecting_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut out = String::new();
    for value in values {
        for part in String::from_utf8_lossy(value.as_bytes()).split(',') {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(part.trim());
        }
    }
    Some(out)
}

/// RFC 9110 §13.2.2's evaluation of a client's conditional GET or HEAD against a stored
/// response: `true` when the answer is 304 Not Modified.
pub(crate) fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(if_none_match) = request.get(header::IF_NONE_MATCH) {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Ok(list) = if_none_match.to_str() else {
            return false;
        };
        return list.trim() == "*" || list.split(',').any(|tag| weak_eq(tag.trim(), etag));
    }
    if let Some(since) = http_date(request.get(header::IF_MODIFIED_SINCE)) {
        let modified = http_date(stored.get(header::LAST_MODIFIED)).or_else(|| date(stored));
        return modified.is_some_and(|modified| modified <= since);
    }
    false
}

/// Weak comparison of two entity tags: equal opaque tags, `W/` ignored.
fn weak_eq(a: &str, b: &str) -> bool {
    let opaque = |tag: &str| tag.strip_prefix("W/").unwrap_or(tag).to_string();
    !a.is_empty() && opaque(a) == opaque(b.trim())
}

/// Removes from a response being stored what RFC 9111 §3.1 keeps out of the store: the
/// connection's own fields (and those `Connection` names) and the fields of `private="..."`.
pub(crate) fn remove_unstored_fields(headers: &mut HeaderMap, directives: &ResponseDirectives) {
    proxflow_core::headers::remove_hop_by_hop(headers);
    for name in &directives.private_fields {
        headers.remove(name.as_str());
    }
}

/// The headers of a 304 that must not replace the stored ones (RFC 9111 §3.2): those that
/// describe the stored body itself (its framing, coding and range, its digest and its entity
/// tag, which the 304 matched).
pub(crate) fn keeps_stored(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::CONTENT_ENCODING
        || name == header::CONTENT_RANGE
        || name == header::ETAG
        || name.as_str() == "content-md5"
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn date_header(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    fn check(
        status: u16,
        lines: &[(&str, &str)],
        request: &[(&str, &str)],
    ) -> Result<(), NotStored> {
        let response_headers = headers(lines);
        let directives = ResponseDirectives::parse(&response_headers);
        let request_headers = headers(request);
        let response = Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers: &response_headers,
            directives: &directives,
        };
        storable(
            &Method::GET,
            &request_headers,
            &RequestDirectives::parse(&request_headers),
            &response,
            300 * S,
        )
    }

    #[test]
    fn what_a_shared_cache_stores() {
        let modified = [("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")];
        assert_eq!(check(200, &modified, &[]), Ok(()), "heuristic");
        assert_eq!(
            check(200, &[], &[]),
            Err(NotStored::NoFreshness),
            "nothing to base it on"
        );
        assert_eq!(check(302, &modified, &[]), Err(NotStored::NoFreshness));
        assert_eq!(check(500, &[("cache-control", "max-age=5")], &[]), Ok(()));
        assert_eq!(check(302, &[("cache-control", "max-age=5")], &[]), Ok(()));
        assert_eq!(
            check(206, &[("cache-control", "max-age=5")], &[]),
            Err(NotStored::Status)
        );
        assert_eq!(
            check(200, &[("cache-control", "no-store")], &[]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            check(
                200,
                &[("cache-control", "max-age=5, no-store, must-understand")],
                &[]
            ),
            Ok(()),
            "must-understand overrides no-store for a known status"
        );
        assert_eq!(
            check(200, &[("cache-control", "private")], &[]),
            Err(NotStored::Private)
        );
        assert_eq!(
            check(200, &[], &[("cache-control", "no-store")]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            check(
                200,
                &[("cache-control", "max-age=5")],
                &[("authorization", "Basic x")]
            ),
            Err(NotStored::Authorization)
        );
        assert_eq!(
            check(
                200,
                &[("cache-control", "s-maxage=5")],
                &[("authorization", "Basic x")]
            ),
            Ok(())
        );
        assert_eq!(
            check(200, &[("vary", "Accept, *")], &[]),
            Err(NotStored::VaryStar)
        );
        assert_eq!(
            check(
                200,
                &[("set-cookie", "a=1"), ("cache-control", "max-age=5")],
                &[]
            ),
            Ok(()),
            "RFC 9111 lets a shared cache store it; per-user answers say private"
        );
    }

    fn lifetime(lines: &[(&str, &str)]) -> Duration {
        let h = headers(lines);
        let d = ResponseDirectives::parse(&h);
        let response = Response {
            status: StatusCode::OK,
            headers: &h,
            directives: &d,
        };
        freshness_lifetime(&response, at(0), 300 * S)
    }

    #[test]
    fn freshness_prefers_s_maxage_then_max_age_then_expires_then_the_ttl() {
        let date = date_header(0);
        let expires = date_header(100);
        assert_eq!(
            lifetime(&[
                ("cache-control", "max-age=10, s-maxage=20"),
                ("expires", &expires)
            ]),
            20 * S
        );
        assert_eq!(
            lifetime(&[("cache-control", "max-age=10"), ("expires", &expires)]),
            10 * S
        );
        assert_eq!(lifetime(&[("date", &date), ("expires", &expires)]), 100 * S);
        assert_eq!(
            lifetime(&[("expires", "0")]),
            Duration::ZERO,
            "an invalid Expires"
        );
        assert_eq!(lifetime(&[("last-modified", &date)]), 300 * S);
        assert_eq!(lifetime(&[]), Duration::ZERO);
    }

    #[test]
    fn an_age_that_is_not_one_integer_is_past_any_freshness() {
        let unknown = Duration::from_secs(1 << 31);
        assert_eq!(age_value(&headers(&[])), Duration::ZERO);
        assert_eq!(age_value(&headers(&[("age", " 30 ")])), 30 * S);
        for bad in ["abc", "-1", "1.0", "7200,0", "0, 0", "5;a=b", ""] {
            assert_eq!(age_value(&headers(&[("age", bad)])), unknown, "{bad:?}");
        }
        assert_eq!(age_value(&headers(&[("age", "0"), ("age", "0")])), unknown);
    }

    #[test]
    fn age_follows_rfc_9111_section_4_2_3() {
        let timing = Timing {
            request_time: at(10),
            response_time: at(12),
            date: Some(at(5)),
            age_value: 3 * S,
            lifetime: 20 * S,
        };
        // apparent 7, corrected age value 3 + 2 = 5: initial age 7; 10 s resident.
        assert_eq!(timing.current_age(at(22)), 17 * S);
        assert_eq!(timing.staleness(at(22)), None);
        assert_eq!(timing.staleness(at(26)), Some(S));
    }

    fn reuse_at(now: u64, stored: &str, request: &str) -> Reuse {
        let timing = Timing {
            request_time: at(0),
            response_time: at(0),
            date: Some(at(0)),
            age_value: Duration::ZERO,
            lifetime: 10 * S,
        };
        let stored = ResponseDirectives::parse(&headers(&[("cache-control", stored)]));
        let request = RequestDirectives::parse(&headers(&[("cache-control", request)]));
        reuse(&timing, &stored, &request, at(now))
    }

    #[test]
    fn reuse_follows_the_directives_of_both_sides() {
        assert_eq!(reuse_at(5, "max-age=10", ""), Reuse::Fresh);
        assert_eq!(
            reuse_at(10, "max-age=10", ""),
            Reuse::Revalidate,
            "stale at its lifetime"
        );
        assert_eq!(reuse_at(5, "max-age=10, no-cache", ""), Reuse::Revalidate);
        assert_eq!(reuse_at(5, "max-age=10", "no-cache"), Reuse::Revalidate);
        assert_eq!(reuse_at(5, "max-age=10", "max-age=4"), Reuse::Revalidate);
        assert_eq!(reuse_at(5, "max-age=10", "max-age=5"), Reuse::Fresh);
        assert_eq!(reuse_at(5, "max-age=10", "min-fresh=6"), Reuse::Revalidate);
        assert_eq!(reuse_at(5, "max-age=10", "min-fresh=5"), Reuse::Fresh);
        assert_eq!(
            reuse_at(15, "max-age=10", "max-stale=5"),
            Reuse::StaleAccepted
        );
        assert_eq!(
            reuse_at(15, "max-age=10", "max-stale"),
            Reuse::StaleAccepted
        );
        assert_eq!(reuse_at(15, "max-age=10", "max-stale=4"), Reuse::Revalidate);
        assert_eq!(
            reuse_at(15, "max-age=10, must-revalidate", "max-stale"),
            Reuse::Revalidate
        );
        assert_eq!(
            reuse_at(15, "max-age=10, s-maxage=10", "max-stale"),
            Reuse::Revalidate
        );
        assert_eq!(
            reuse_at(15, "max-age=10, stale-while-revalidate=6", ""),
            Reuse::StaleWhileRevalidate
        );
        assert_eq!(
            reuse_at(16, "max-age=10, stale-while-revalidate=6", ""),
            Reuse::Revalidate
        );
    }

    #[test]
    fn conditionals_against_the_stored_response() {
        let stored = headers(&[("etag", "W/\"v1\""), ("last-modified", &date_header(0))]);
        assert!(not_modified(
            &headers(&[("if-none-match", "\"v0\", \"v1\"")]),
            &stored
        ));
        assert!(!not_modified(
            &headers(&[("if-none-match", "\"v2\"")]),
            &stored
        ));
        assert!(not_modified(&headers(&[("if-none-match", "*")]), &stored));
        assert!(not_modified(
            &headers(&[("if-modified-since", &date_header(5))]),
            &stored
        ));
        let later = headers(&[("last-modified", &date_header(9))]);
        assert!(!not_modified(
            &headers(&[("if-modified-since", &date_header(0))]),
            &later
        ));
        assert!(
            !not_modified(
                &headers(&[
                    ("if-none-match", "\"v2\""),
                    ("if-modified-since", &date_header(5))
                ]),
                &stored
            ),
            "If-None-Match decides when present"
        );
    }

    #[test]
    fn the_connection_s_fields_and_private_ones_are_not_stored() {
        let mut stored = headers(&[
            ("connection", "close, X-Hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "s"),
            ("cache-control", "max-age=5, private=\"X-Secret\""),
            ("content-type", "text/plain"),
        ]);
        let directives = ResponseDirectives::parse(&stored);
        remove_unstored_fields(&mut stored, &directives);
        let mut names: Vec<&str> = stored.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["cache-control", "content-type"]);
    }

    #[test]
    fn vary_values_are_normalised() {
        let request = headers(&[
            ("accept-encoding", "gzip ,  br"),
            ("accept-encoding", "zstd"),
        ]);
        assert_eq!(
            selecting_value(&request, "accept-encoding").as_deref(),
            Some("gzip, br, zstd")
        );
        assert_eq!(selecting_value(&request, "accept-language"), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig { rng_seed: proptest::test_runner::RngSeed::Fixed(9111), failure_persistence: None, ..ProptestConfig::default() })]

        /// Age only grows with time, and a response is stale exactly when its age reaches its
        /// lifetime.
        #[test]
        fn age_grows_and_staleness_starts_at_the_lifetime(
            delay in 0u64..100, date_skew in 0u64..100, age in 0u64..1000, lifetime in 0u64..1000,
            t1 in 0u64..10_000, dt in 0u64..10_000,
        ) {
            let timing = Timing {
                request_time: at(1000),
                response_time: at(1000 + delay),
                date: Some(at(1000 - date_skew.min(1000))),
                age_value: Duration::from_secs(age),
                lifetime: Duration::from_secs(lifetime),
            };
            let (a, b) = (at(1000 + delay + t1), at(1000 + delay + t1 + dt));
            prop_assert!(timing.current_age(b) >= timing.current_age(a));
            prop_assert_eq!(timing.current_age(b) - timing.current_age(a), Duration::from_secs(dt));
            prop_assert_eq!(timing.staleness(a).is_some(), timing.current_age(a) >= timing.lifetime);
        }
    }
}
