//! The second level the instances share in Redis (feature `redis`): the stored variants of a
//! URI as one value, written when an instance stores a response and read when another misses.
//!
//! A value lives as long as its freshest variant stays usable (its freshness left, plus its
//! `stale-while-revalidate` or `stale-if-error` window), at most `max_ttl`, and is written
//! only up to `max_object_size` bytes: Redis holds no more than what the instances could
//! still serve. Its memory as a whole is Redis's to bound (`maxmemory` with an eviction
//! policy such as `volatile-ttl`). An invalidation deletes the values it concerns before it
//! is published (see the module `sync`).
//!
//! The value is a small binary record (a version byte, then each variant: status, times,
//! selecting headers, header fields, body); a value that does not decode is a miss.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

use crate::directives::ResponseDirectives;
use crate::policy::Timing;
use crate::store::Stored;

/// The record's version: a value of another version is a miss.
const VERSION: u8 = 1;

/// `variants` as one value.
pub(crate) fn encode<'a>(variants: impl Iterator<Item = &'a Stored>) -> Vec<u8> {
    let mut out = vec![VERSION];
    for stored in variants {
        put_u16(&mut out, stored.status.as_u16());
        let timing = &stored.timing;
        for time in [timing.request_time, timing.response_time] {
            put_time(&mut out, Some(time));
        }
        put_time(&mut out, timing.date);
        put_u64(&mut out, timing.age_value.as_millis() as u64);
        put_u64(&mut out, timing.lifetime.as_millis() as u64);
        put_u32(&mut out, stored.vary.len() as u32);
        for (name, value) in &stored.vary {
            put_bytes(&mut out, name.as_bytes());
            match value {
                Some(value) => {
                    out.push(1);
                    put_bytes(&mut out, value.as_bytes());
                }
                None => out.push(0),
            }
        }
        put_u32(&mut out, stored.headers.len() as u32);
        for (name, value) in &stored.headers {
            put_bytes(&mut out, name.as_str().as_bytes());
            put_bytes(&mut out, value.as_bytes());
        }
        put_bytes(&mut out, &stored.body);
    }
    out
}

/// The variants of a value, or `None` if it does not decode.
pub(crate) fn decode(value: &[u8]) -> Option<Vec<Stored>> {
    let mut reader = Reader { rest: value };
    if reader.byte()? != VERSION {
        return None;
    }
    let mut variants = Vec::new();
    while !reader.rest.is_empty() {
        let status = StatusCode::from_u16(reader.u16()?).ok()?;
        let request_time = reader.time()??;
        let response_time = reader.time()??;
        let date = reader.time()?;
        let age_value = Duration::from_millis(reader.u64()?);
        let lifetime = Duration::from_millis(reader.u64()?);
        let mut vary = Vec::new();
        for _ in 0..reader.u32()? {
            let name = String::from_utf8(reader.bytes()?.to_vec()).ok()?;
            let value = match reader.byte()? {
                0 => None,
                _ => Some(String::from_utf8(reader.bytes()?.to_vec()).ok()?),
            };
            vary.push((name, value));
        }
        let mut headers = HeaderMap::new();
        for _ in 0..reader.u32()? {
            let name = HeaderName::from_bytes(reader.bytes()?).ok()?;
            let value = HeaderValue::from_bytes(reader.bytes()?).ok()?;
            headers.append(name, value);
        }
        let body = Bytes::copy_from_slice(reader.bytes()?);
        let directives = ResponseDirectives::parse(&headers);
        variants.push(Stored {
            status,
            headers,
            body,
            timing: Timing {
                request_time,
                response_time,
                date,
                age_value,
                lifetime,
            },
            directives,
            vary,
        });
    }
    Some(variants)
}

/// How long a value of `variants` is worth keeping at `now`: the longest any of them stays
/// usable (fresh, or stale within its `stale-while-revalidate` or `stale-if-error`).
pub(crate) fn usable_for<'a>(
    variants: impl Iterator<Item = &'a Stored>,
    now: SystemTime,
) -> Duration {
    variants
        .map(|stored| {
            let stale_window = stored
                .directives
                .stale_while_revalidate
                .max(stored.directives.stale_if_error)
                .unwrap_or_default();
            (stored.timing.lifetime + stale_window).saturating_sub(stored.timing.current_age(now))
        })
        .max()
        .unwrap_or_default()
}

fn put_u16(out: &mut Vec<u8>, n: u16) {
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

/// A time as milliseconds since the epoch, `u64::MAX` for none.
fn put_time(out: &mut Vec<u8>, time: Option<SystemTime>) {
    let millis = time
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(u64::MAX, |d| d.as_millis() as u64);
    put_u64(out, millis);
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(taken)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        self.take(len)
    }

    /// `Some(None)` for a time written as none.
    fn time(&mut self) -> Option<Option<SystemTime>> {
        match self.u64()? {
            u64::MAX => Some(None),
            millis => Some(UNIX_EPOCH.checked_add(Duration::from_millis(millis))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Stored {
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
        headers.append("x-many", HeaderValue::from_static("a"));
        headers.append("x-many", HeaderValue::from_static("b"));
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Stored {
            status: StatusCode::OK,
            directives: ResponseDirectives::parse(&headers),
            headers,
            body: Bytes::from_static(b"hello"),
            timing: Timing {
                request_time: at,
                response_time: at + Duration::from_millis(3),
                date: None,
                age_value: Duration::from_secs(2),
                lifetime: Duration::from_secs(60),
            },
            vary: vec![
                ("accept-language".into(), Some("fr".into())),
                ("x-none".into(), None),
            ],
        }
    }

    #[test]
    fn variants_round_trip() {
        let one = stored();
        let value = encode([&one, &one].into_iter());
        let back = decode(&value).unwrap();
        assert_eq!(back.len(), 2);
        let back = &back[1];
        assert_eq!(back.status, one.status);
        assert_eq!(back.headers, one.headers);
        assert_eq!(back.body, one.body);
        assert_eq!(back.vary, one.vary);
        assert_eq!(back.directives, one.directives);
        assert_eq!(back.timing.request_time, one.timing.request_time);
        assert_eq!(back.timing.response_time, one.timing.response_time);
        assert_eq!(back.timing.date, None);
        assert_eq!(back.timing.lifetime, one.timing.lifetime);
    }

    #[test]
    fn a_truncated_or_foreign_value_is_a_miss() {
        let value = encode(std::iter::once(&stored()));
        for len in 0..value.len() - 1 {
            let cut = decode(&value[..len]);
            assert!(cut.is_none() || cut.is_some_and(|v| v.is_empty()), "{len}");
        }
        let mut other = value.clone();
        other[0] = 9;
        assert!(decode(&other).is_none());
    }

    #[test]
    fn a_value_lives_while_a_variant_is_usable() {
        let one = stored();
        let now = one.timing.response_time + Duration::from_secs(10);
        // 60 s fresh, 2 s old when received (+3 ms on the way), 10 s resident.
        let left = usable_for(std::iter::once(&one), now);
        assert!(
            left > Duration::from_secs(47) && left < Duration::from_secs(48),
            "{left:?}"
        );
    }
}
