//! RFC 9110 §14: the `Range` header for byte ranges.

use std::ops::Range;

/// How to answer a `Range` header for a representation of a given length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RangeAnswer {
    /// No usable Range header: send the whole representation with 200.
    Whole,
    /// 206 with these ranges, in the order the client asked for them (RFC 9110 §14.2),
    /// non-overlapping, each non-empty.
    Partial(Vec<Range<u64>>),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Parses a `Range` header. Malformed headers, other units, overlapping ranges and more than
/// `max_ranges` ranges are ignored (RFC 9110 §14.2 lets a server ignore them), which answers
/// the whole representation instead of amplifying a hostile request. Ranges are neither
/// coalesced nor reordered: a client that asks for overlapping ranges gets the whole
/// representation, any other gets its parts in the order it asked for them.
pub(crate) fn parse(header: &str, len: u64, max_ranges: usize) -> RangeAnswer {
    let Some(specs) = strip_prefix_ignore_case(header.trim(), "bytes=") else {
        return RangeAnswer::Whole;
    };
    let mut ranges = Vec::new();
    let mut count = 0;
    for spec in specs
        .split(',')
        .map(str::trim)
        .filter(|spec| !spec.is_empty())
    {
        count += 1;
        if count > max_ranges {
            return RangeAnswer::Whole;
        }
        match parse_spec(spec, len) {
            Spec::Invalid => return RangeAnswer::Whole,
            Spec::Unsatisfiable => {}
            Spec::Range(range) => ranges.push(range),
        }
    }
    if count == 0 {
        return RangeAnswer::Whole;
    }
    if ranges.is_empty() {
        return RangeAnswer::Unsatisfiable;
    }
    if overlap(&ranges) {
        return RangeAnswer::Whole;
    }
    RangeAnswer::Partial(ranges)
}

/// Whether two of `ranges` share a byte; sorts a copy so that the answer keeps the request's order.
fn overlap(ranges: &[Range<u64>]) -> bool {
    if ranges.len() < 2 {
        return false;
    }
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable_by_key(|range| range.start);
    sorted.windows(2).any(|pair| pair[0].end > pair[1].start)
}

enum Spec {
    Invalid,
    Unsatisfiable,
    Range(Range<u64>),
}

fn parse_spec(spec: &str, len: u64) -> Spec {
    let Some((first, last)) = spec.split_once('-') else {
        return Spec::Invalid;
    };
    let number = |text: &str| -> Option<u64> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    };
    if first.is_empty() {
        // Suffix range: the last N bytes.
        return match number(last) {
            None => Spec::Invalid,
            Some(0) => Spec::Unsatisfiable,
            Some(_) if len == 0 => Spec::Unsatisfiable,
            Some(suffix) => Spec::Range(len.saturating_sub(suffix)..len),
        };
    }
    let Some(start) = number(first) else {
        return Spec::Invalid;
    };
    let end = if last.is_empty() {
        len
    } else {
        match number(last) {
            Some(end) if end >= start => end.saturating_add(1).min(len),
            _ => return Spec::Invalid,
        }
    };
    if start >= len {
        Spec::Unsatisfiable
    } else {
        Spec::Range(start..end)
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(range: Range<u64>) -> RangeAnswer {
        RangeAnswer::Partial(vec![range])
    }

    fn partial(ranges: &[Range<u64>]) -> RangeAnswer {
        RangeAnswer::Partial(ranges.to_vec())
    }

    #[test]
    fn single_ranges() {
        assert_eq!(parse("bytes=0-99", 1000, 16), one(0..100));
        assert_eq!(parse("bytes=900-", 1000, 16), one(900..1000));
        assert_eq!(parse("bytes=-100", 1000, 16), one(900..1000));
        assert_eq!(parse("bytes=-5000", 1000, 16), one(0..1000));
        assert_eq!(parse("bytes=990-5000", 1000, 16), one(990..1000));
        assert_eq!(parse("BYTES= 0-0 ", 1000, 16), one(0..1));
    }

    #[test]
    fn several_ranges_keep_the_requested_order() {
        assert_eq!(
            parse("bytes=500-599, 0-9", 1000, 16),
            partial(&[500..600, 0..10])
        );
        assert_eq!(
            parse("bytes=20-29,0-9,10-19", 1000, 16),
            partial(&[20..30, 0..10, 10..20]),
            "adjacent ranges do not overlap"
        );
        assert_eq!(parse("bytes=0-9,2000-3000", 1000, 16), one(0..10));
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(parse("bytes=1000-", 1000, 16), RangeAnswer::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 1000, 16), RangeAnswer::Unsatisfiable);
        assert_eq!(parse("bytes=0-", 0, 16), RangeAnswer::Unsatisfiable);
        assert_eq!(
            parse("bytes=5000-6000,7000-", 1000, 16),
            RangeAnswer::Unsatisfiable
        );
    }

    #[test]
    fn ignored() {
        for header in [
            "items=0-1",
            "bytes=",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=1",
            "bytes=--1",
            "bytes=+1-2",
        ] {
            assert_eq!(parse(header, 1000, 16), RangeAnswer::Whole, "{header}");
        }
        assert_eq!(
            parse("bytes=0-10,5-20", 1000, 16),
            RangeAnswer::Whole,
            "overlap"
        );
        assert_eq!(
            parse("bytes=5-20,0-10", 1000, 16),
            RangeAnswer::Whole,
            "overlap out of order"
        );
        assert_eq!(
            parse("bytes=0-1,3-4,6-7", 1000, 2),
            RangeAnswer::Whole,
            "too many"
        );
        assert_eq!(
            parse("bytes=99999999999999999999999-", 1000, 16),
            RangeAnswer::Whole
        );
    }

    proptest! {
        #[test]
        fn partial_ranges_stay_inside_the_file(header in "bytes=[-0-9, ]{0,24}", len in 0u64..5000) {
            if let RangeAnswer::Partial(ranges) = parse(&header, len, 16) {
                prop_assert!(!ranges.is_empty());
                for range in &ranges {
                    prop_assert!(range.start < range.end && range.end <= len);
                }
                let mut sorted = ranges.clone();
                sorted.sort_by_key(|range| range.start);
                for pair in sorted.windows(2) {
                    prop_assert!(pair[0].end <= pair[1].start);
                }
            }
        }
    }
}
