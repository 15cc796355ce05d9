//! `Cache-Control` directives (RFC 9111 §5.2), parsed once per message.
//!
//! Directive names are case-insensitive; a value is a token or a quoted string. When a
//! directive appears twice, the first counts. A delta-seconds value that does not parse
//! makes the directive count as 0 (RFC 9111 §1.2.2: such a response is treated as stale),
//! and one too large for 31 bits counts as 2^31 seconds.

use std::time::Duration;

use http::header::{CACHE_CONTROL, PRAGMA};
use http::HeaderMap;

/// What RFC 9111 §1.2.2 says to use for a delta-seconds too large to hold.
const MAX_DELTA: u64 = 1 << 31;

/// The directives of a response's `Cache-Control`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    pub(crate) max_age: Option<Duration>,
    pub(crate) s_maxage: Option<Duration>,
    /// `no-cache`, with or without field names: reuse only after revalidation.
    pub(crate) no_cache: bool,
    pub(crate) no_store: bool,
    /// `private` without field names: a shared cache does not store it.
    pub(crate) private: bool,
    /// `private="a, b"`: stored without these fields.
    pub(crate) private_fields: Vec<String>,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) must_understand: bool,
    pub(crate) stale_while_revalidate: Option<Duration>,
    pub(crate) stale_if_error: Option<Duration>,
}

/// The directives of a request's `Cache-Control` (and `Pragma: no-cache` without it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequestDirectives {
    pub(crate) max_age: Option<Duration>,
    /// `max-stale` without a value accepts any staleness.
    pub(crate) max_stale: Option<Duration>,
    pub(crate) min_fresh: Option<Duration>,
    pub(crate) no_cache: bool,
    pub(crate) no_store: bool,
    pub(crate) only_if_cached: bool,
    pub(crate) stale_if_error: Option<Duration>,
}

impl ResponseDirectives {
    pub(crate) fn parse(headers: &HeaderMap) -> ResponseDirectives {
        let mut d = ResponseDirectives::default();
        let mut seen = Vec::new();
        for (name, value) in directives(headers) {
            if seen.contains(&name) {
                continue;
            }
            match name.as_str() {
                "max-age" => d.max_age = Some(seconds(value.as_deref())),
                "s-maxage" => d.s_maxage = Some(seconds(value.as_deref())),
                "no-cache" => d.no_cache = true,
                "no-store" => d.no_store = true,
                "private" => match value.as_deref() {
                    Some(fields) if !fields.trim().is_empty() => {
                        d.private_fields = field_names(fields)
                    }
                    _ => d.private = true,
                },
                "public" => d.public = true,
                "must-revalidate" => d.must_revalidate = true,
                "proxy-revalidate" => d.proxy_revalidate = true,
                "must-understand" => d.must_understand = true,
                "stale-while-revalidate" => {
                    d.stale_while_revalidate = Some(seconds(value.as_deref()));
                }
                "stale-if-error" => d.stale_if_error = Some(seconds(value.as_deref())),
                _ => {}
            }
            seen.push(name);
        }
        d
    }

    /// Whether a stale copy may be served without revalidation when a client allows it:
    /// not with `must-revalidate`, and, in a shared cache, not with `proxy-revalidate` or
    /// `s-maxage` (RFC 9111 §5.2.2.8, §5.2.2.10).
    pub(crate) fn may_serve_stale(&self) -> bool {
        !(self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some())
    }
}

impl RequestDirectives {
    pub(crate) fn parse(headers: &HeaderMap) -> RequestDirectives {
        let mut d = RequestDirectives::default();
        let mut seen = Vec::new();
        let mut any = false;
        for (name, value) in directives(headers) {
            any = true;
            if seen.contains(&name) {
                continue;
            }
            match name.as_str() {
                "max-age" => d.max_age = Some(seconds(value.as_deref())),
                "max-stale" => {
                    d.max_stale = Some(match value.as_deref() {
                        None => Duration::from_secs(MAX_DELTA),
                        Some(v) => seconds(Some(v)),
                    });
                }
                "min-fresh" => d.min_fresh = Some(seconds(value.as_deref())),
                "no-cache" => d.no_cache = true,
                "no-store" => d.no_store = true,
                "only-if-cached" => d.only_if_cached = true,
                "stale-if-error" => d.stale_if_error = Some(seconds(value.as_deref())),
                _ => {}
            }
            seen.push(name);
        }
        // RFC 9111 §5.4: `Pragma: no-cache` counts only without `Cache-Control`.
        if !any
            && headers.get_all(PRAGMA).iter().any(|v| {
                v.to_str().is_ok_and(|v| {
                    v.split(',')
                        .any(|p| p.trim().eq_ignore_ascii_case("no-cache"))
                })
            })
        {
            d.no_cache = true;
        }
        d
    }
}

/// Each directive of every `Cache-Control` line, its name lowercased, its value unquoted.
fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(split_directives)
}

/// Splits one field value at the commas outside quoted strings.
fn split_directives(value: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let (item, tail) = next_item(rest);
        rest = tail;
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (name, value) = match item.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquote(value.trim()))),
            None => (item, None),
        };
        out.push((name.to_ascii_lowercase(), value));
    }
    out
}

/// The text up to the first comma outside a quoted string, and what follows that comma.
fn next_item(value: &str) -> (&str, &str) {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => return (&value[..i], &value[i + 1..]),
            _ => {}
        }
    }
    (value, "")
}

fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut escaped = false;
            for c in inner.chars() {
                if escaped || c != '\\' {
                    out.push(c);
                    escaped = false;
                } else {
                    escaped = true;
                }
            }
            out
        }
        None => value.to_string(),
    }
}

/// A delta-seconds value: digits only; anything else counts as 0.
fn seconds(value: Option<&str>) -> Duration {
    let Some(value) = value else {
        return Duration::ZERO;
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Duration::ZERO;
    }
    let secs = value.parse::<u64>().unwrap_or(MAX_DELTA).min(MAX_DELTA);
    Duration::from_secs(secs)
}

/// `"a, B"` as `["a", "b"]`.
fn field_names(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn response_directives_over_several_lines_first_wins() {
        let d = ResponseDirectives::parse(&headers(&[
            ("cache-control", "Max-Age=60, s-maxage=\"30\""),
            (
                "cache-control",
                "max-age=5, private=\"Set-Cookie, X-A\", stale-if-error=9",
            ),
        ]));
        assert_eq!(d.max_age, Some(Duration::from_secs(60)));
        assert_eq!(d.s_maxage, Some(Duration::from_secs(30)));
        assert_eq!(d.private_fields, ["set-cookie", "x-a"]);
        assert!(!d.private);
        assert_eq!(d.stale_if_error, Some(Duration::from_secs(9)));
        assert!(!d.may_serve_stale(), "s-maxage: proxy-revalidate");
    }

    #[test]
    fn bad_numbers_are_zero_and_huge_ones_are_capped() {
        let d = ResponseDirectives::parse(&headers(&[("cache-control", "max-age=1.5")]));
        assert_eq!(d.max_age, Some(Duration::ZERO));
        let d = ResponseDirectives::parse(&headers(&[("cache-control", "max-age=-1")]));
        assert_eq!(d.max_age, Some(Duration::ZERO));
        let d = ResponseDirectives::parse(&headers(&[(
            "cache-control",
            "max-age=99999999999999999999999",
        )]));
        assert_eq!(d.max_age, Some(Duration::from_secs(1 << 31)));
    }

    #[test]
    fn a_comma_inside_quotes_does_not_split() {
        let d = ResponseDirectives::parse(&headers(&[(
            "cache-control",
            "no-cache=\"a, b\", max-age=3",
        )]));
        assert!(d.no_cache);
        assert_eq!(d.max_age, Some(Duration::from_secs(3)));
    }

    #[test]
    fn request_directives_and_pragma() {
        let d = RequestDirectives::parse(&headers(&[(
            "cache-control",
            "max-stale, min-fresh=10, only-if-cached",
        )]));
        assert_eq!(d.max_stale, Some(Duration::from_secs(1 << 31)));
        assert_eq!(d.min_fresh, Some(Duration::from_secs(10)));
        assert!(d.only_if_cached && !d.no_cache);
        let d = RequestDirectives::parse(&headers(&[("pragma", "no-cache")]));
        assert!(d.no_cache);
        let d = RequestDirectives::parse(&headers(&[
            ("pragma", "no-cache"),
            ("cache-control", "max-age=5"),
        ]));
        assert!(!d.no_cache, "Cache-Control wins over Pragma");
    }
}
