//! RFC 9110 §13.2.2: evaluating preconditions in the order the RFC gives.

use std::time::{SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap, HeaderValue, Method};

/// What the preconditions say about a GET or HEAD of the selected representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Precondition {
    /// Serve the representation; `honor_range` is false when `If-Range` did not match.
    Proceed { honor_range: bool },
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// The request headers that decide how a file is answered, gathered in one pass over the
/// request's headers (cheaper than a hash lookup for each of seven names).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RequestConditions<'a> {
    pub(crate) accept_encoding: FieldLines<'a>,
    pub(crate) if_match: FieldLines<'a>,
    pub(crate) if_none_match: FieldLines<'a>,
    pub(crate) if_modified_since: Option<&'a HeaderValue>,
    pub(crate) if_unmodified_since: Option<&'a HeaderValue>,
    pub(crate) if_range: Option<&'a HeaderValue>,
    pub(crate) range: Option<&'a HeaderValue>,
}

impl<'a> RequestConditions<'a> {
    /// Reads the headers. The list fields keep every line (RFC 9110 §5.3: the lines of a field
    /// are one list); of the others, which hold a single value, the first line counts, as with
    /// `HeaderMap::get`.
    pub(crate) fn read(headers: &'a HeaderMap) -> Self {
        let mut conditions = RequestConditions::default();
        for (name, value) in headers {
            let slot = if name == header::ACCEPT_ENCODING {
                conditions
                    .accept_encoding
                    .add(headers, ListField::AcceptEncoding, value);
                continue;
            } else if name == header::IF_MATCH {
                conditions.if_match.add(headers, ListField::IfMatch, value);
                continue;
            } else if name == header::IF_NONE_MATCH {
                conditions
                    .if_none_match
                    .add(headers, ListField::IfNoneMatch, value);
                continue;
            } else if name == header::IF_MODIFIED_SINCE {
                &mut conditions.if_modified_since
            } else if name == header::IF_UNMODIFIED_SINCE {
                &mut conditions.if_unmodified_since
            } else if name == header::IF_RANGE {
                &mut conditions.if_range
            } else if name == header::RANGE {
                &mut conditions.range
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        conditions
    }
}

/// The lines of a list-valued header field, read as one list. The common single line is kept
/// by reference; the map is read again only for a field sent on several lines.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FieldLines<'a> {
    first: Option<&'a HeaderValue>,
    /// Set when the field came on more than one line.
    repeated: Option<(&'a HeaderMap, ListField)>,
}

/// The list fields [`FieldLines`] reads.
#[derive(Debug, Clone, Copy)]
enum ListField {
    AcceptEncoding,
    IfMatch,
    IfNoneMatch,
}

impl<'a> FieldLines<'a> {
    /// A field that came on one line.
    #[cfg(test)]
    pub(crate) fn one(value: &'a HeaderValue) -> Self {
        FieldLines {
            first: Some(value),
            repeated: None,
        }
    }

    fn add(&mut self, headers: &'a HeaderMap, field: ListField, value: &'a HeaderValue) {
        if self.first.is_none() {
            self.first = Some(value);
        } else {
            self.repeated = Some((headers, field));
        }
    }

    /// Whether the request sent the field at all.
    pub(crate) fn is_present(&self) -> bool {
        self.first.is_some()
    }

    /// Every line, in the order sent.
    pub(crate) fn lines(&self) -> impl Iterator<Item = &'a HeaderValue> {
        let (single, all) = match self.repeated {
            None => (self.first, None),
            Some((headers, field)) => {
                let name = match field {
                    ListField::AcceptEncoding => header::ACCEPT_ENCODING,
                    ListField::IfMatch => header::IF_MATCH,
                    ListField::IfNoneMatch => header::IF_NONE_MATCH,
                };
                (None, Some(headers.get_all(name).iter()))
            }
        };
        single.into_iter().chain(all.into_iter().flatten())
    }
}

/// The validators of the selected representation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Validators<'a> {
    /// The strong entity tag with its quotes, as sent in `ETag`.
    pub(crate) etag: &'a str,
    /// The modification time, whole seconds since the epoch.
    pub(crate) last_modified: Option<u64>,
}

pub(crate) fn evaluate(
    method: &Method,
    request: &RequestConditions<'_>,
    validators: Validators<'_>,
) -> Precondition {
    let get_or_head = method == Method::GET || method == Method::HEAD;
    // Step 1 and 2: If-Match, else If-Unmodified-Since.
    if request.if_match.is_present() {
        if !etag_list_matches(request.if_match, validators.etag, Comparison::Strong) {
            return Precondition::Failed;
        }
    } else if let Some(since) = request.if_unmodified_since.and_then(header_date) {
        if validators
            .last_modified
            .is_some_and(|modified| modified > since)
        {
            return Precondition::Failed;
        }
    }
    // Step 3 and 4: If-None-Match, else If-Modified-Since (GET and HEAD only).
    if request.if_none_match.is_present() {
        if etag_list_matches(request.if_none_match, validators.etag, Comparison::Weak) {
            return if get_or_head {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if get_or_head {
        if let (Some(since), Some(modified)) = (
            request.if_modified_since.and_then(header_date),
            validators.last_modified,
        ) {
            if modified <= since {
                return Precondition::NotModified;
            }
        }
    }
    // Step 5: If-Range decides whether a Range header is honoured.
    let honor_range = match request.if_range {
        None => true,
        Some(value) => if_range_matches(value, validators),
    };
    Precondition::Proceed { honor_range }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Strong,
    Weak,
}

/// `*` or a comma-separated list of entity tags, over every line of the field; a malformed
/// line matches nothing.
fn etag_list_matches(lines: FieldLines<'_>, current: &str, comparison: Comparison) -> bool {
    lines
        .lines()
        .filter_map(|value| value.to_str().ok())
        .any(|list| {
            if list.trim() == "*" {
                return true;
            }
            list.split(',').map(str::trim).any(|tag| {
                let (weak, opaque) = match tag.strip_prefix("W/") {
                    Some(opaque) => (true, opaque),
                    None => (false, tag),
                };
                opaque == current && !(weak && comparison == Comparison::Strong)
            })
        })
}

fn if_range_matches(value: &HeaderValue, validators: Validators<'_>) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let text = text.trim();
    if text.starts_with('"') {
        return text == validators.etag;
    }
    if text.starts_with("W/") {
        // A weak tag never matches in If-Range (RFC 9110 §13.1.5).
        return false;
    }
    match (parse_date(text), validators.last_modified) {
        (Some(date), Some(modified)) => date == modified,
        _ => false,
    }
}

fn header_date(value: &HeaderValue) -> Option<u64> {
    value.to_str().ok().and_then(parse_date)
}

fn parse_date(text: &str) -> Option<u64> {
    let time = httpdate::parse_http_date(text).ok()?;
    Some(unix_seconds(time))
}

/// Whole seconds since the epoch: HTTP dates have no finer resolution.
pub(crate) fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETAG: &str = "\"abc\"";
    const MODIFIED: u64 = 1_700_000_000;

    fn run(method: Method, pairs: &[(header::HeaderName, &str)]) -> Precondition {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(name, HeaderValue::from_str(value).unwrap());
        }
        evaluate(
            &method,
            &RequestConditions::read(&headers),
            Validators {
                etag: ETAG,
                last_modified: Some(MODIFIED),
            },
        )
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs))
    }

    const PROCEED: Precondition = Precondition::Proceed { honor_range: true };

    #[test]
    fn no_conditions_proceed() {
        assert_eq!(run(Method::GET, &[]), PROCEED);
    }

    #[test]
    fn if_match_uses_strong_comparison() {
        assert_eq!(run(Method::GET, &[(header::IF_MATCH, "\"abc\"")]), PROCEED);
        assert_eq!(
            run(Method::GET, &[(header::IF_MATCH, "\"x\", \"abc\"")]),
            PROCEED
        );
        assert_eq!(run(Method::GET, &[(header::IF_MATCH, "*")]), PROCEED);
        assert_eq!(
            run(Method::GET, &[(header::IF_MATCH, "W/\"abc\"")]),
            Precondition::Failed
        );
        assert_eq!(
            run(Method::GET, &[(header::IF_MATCH, "\"nope\"")]),
            Precondition::Failed
        );
    }

    #[test]
    fn list_fields_read_every_line() {
        let lines = [(header::IF_MATCH, "\"zzz\""), (header::IF_MATCH, "\"abc\"")];
        assert_eq!(run(Method::GET, &lines), PROCEED);
        let lines = [
            (header::IF_NONE_MATCH, "\"zzz\""),
            (header::IF_NONE_MATCH, "\"y\", W/\"abc\""),
        ];
        assert_eq!(run(Method::GET, &lines), Precondition::NotModified);
        let lines = [(header::IF_MATCH, "\"zzz\""), (header::IF_MATCH, "\"y\"")];
        assert_eq!(run(Method::GET, &lines), Precondition::Failed);
    }

    #[test]
    fn if_unmodified_since_only_without_if_match() {
        let earlier = date(MODIFIED - 10);
        assert_eq!(
            run(Method::GET, &[(header::IF_UNMODIFIED_SINCE, &earlier)]),
            Precondition::Failed
        );
        assert_eq!(
            run(
                Method::GET,
                &[(header::IF_UNMODIFIED_SINCE, &date(MODIFIED))]
            ),
            PROCEED
        );
        let both = [
            (header::IF_MATCH, "\"abc\""),
            (header::IF_UNMODIFIED_SINCE, earlier.as_str()),
        ];
        assert_eq!(run(Method::GET, &both), PROCEED);
        assert_eq!(
            run(Method::GET, &[(header::IF_UNMODIFIED_SINCE, "garbage")]),
            PROCEED
        );
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        assert_eq!(
            run(Method::GET, &[(header::IF_NONE_MATCH, "W/\"abc\"")]),
            Precondition::NotModified
        );
        assert_eq!(
            run(Method::HEAD, &[(header::IF_NONE_MATCH, "*")]),
            Precondition::NotModified
        );
        assert_eq!(
            run(Method::GET, &[(header::IF_NONE_MATCH, "\"other\"")]),
            PROCEED
        );
        assert_eq!(
            run(Method::POST, &[(header::IF_NONE_MATCH, "\"abc\"")]),
            Precondition::Failed
        );
    }

    #[test]
    fn if_modified_since_is_ignored_when_if_none_match_is_present() {
        let later = date(MODIFIED + 10);
        assert_eq!(
            run(Method::GET, &[(header::IF_MODIFIED_SINCE, &later)]),
            Precondition::NotModified
        );
        assert_eq!(
            run(Method::GET, &[(header::IF_MODIFIED_SINCE, &date(MODIFIED))]),
            Precondition::NotModified
        );
        assert_eq!(
            run(
                Method::GET,
                &[(header::IF_MODIFIED_SINCE, &date(MODIFIED - 1))]
            ),
            PROCEED
        );
        let both = [
            (header::IF_NONE_MATCH, "\"other\""),
            (header::IF_MODIFIED_SINCE, later.as_str()),
        ];
        assert_eq!(run(Method::GET, &both), PROCEED);
    }

    #[test]
    fn if_match_failure_wins_over_if_none_match() {
        let pairs = [
            (header::IF_MATCH, "\"nope\""),
            (header::IF_NONE_MATCH, "\"abc\""),
        ];
        assert_eq!(run(Method::GET, &pairs), Precondition::Failed);
    }

    #[test]
    fn if_range_needs_an_exact_strong_validator() {
        let keep = Precondition::Proceed { honor_range: true };
        let drop = Precondition::Proceed { honor_range: false };
        assert_eq!(run(Method::GET, &[(header::IF_RANGE, "\"abc\"")]), keep);
        assert_eq!(run(Method::GET, &[(header::IF_RANGE, "\"old\"")]), drop);
        assert_eq!(run(Method::GET, &[(header::IF_RANGE, "W/\"abc\"")]), drop);
        assert_eq!(
            run(Method::GET, &[(header::IF_RANGE, &date(MODIFIED))]),
            keep
        );
        assert_eq!(
            run(Method::GET, &[(header::IF_RANGE, &date(MODIFIED + 1))]),
            drop
        );
    }
}
