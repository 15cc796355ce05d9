//! Building the response for a file once it is known: negotiation, preconditions, ranges,
//! headers; and the layer's own short answers (redirects, 4xx, 5xx). Pure: no I/O happens here
//! (bodies of files on disk are opened when polled).

use std::sync::atomic::{AtomicU64, Ordering};

use std::io;

use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use http_body::Body;
use xxhash_rust::xxh3::xxh3_64;

use crate::body::{Chunk, FileBody};
use crate::conditional::{self, Precondition, RequestConditions, Validators};
use crate::encoding::{negotiate, Encoding};
use crate::entry::{Entry, Representation, Selected};
use crate::path::SafePath;
use crate::range::{self, RangeAnswer};
use crate::stats::{Counter, Counters};

pub(crate) const IMMUTABLE: HeaderValue =
    HeaderValue::from_static("public, max-age=31536000, immutable");
pub(crate) const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const BYTES: HeaderValue = HeaderValue::from_static("bytes");
const ACCEPT_ENCODING: HeaderValue = HeaderValue::from_static("accept-encoding");

/// What the request asks of a file, and how the answer may be cached.
pub(crate) struct FileRequest<'a> {
    pub(crate) method: &'a Method,
    pub(crate) conditions: RequestConditions<'a>,
    /// The URL named the file's current version.
    pub(crate) versioned: bool,
    /// `Cache-Control` for this request; the same for every request with the same `versioned`.
    pub(crate) cache_control: HeaderValue,
    pub(crate) max_ranges: usize,
}

/// The answer for `entry`, or the coding that has to be compressed first.
pub(crate) fn respond(
    entry: &Entry,
    request: &FileRequest<'_>,
    counters: &Counters,
) -> Result<Response<FileBody>, Encoding> {
    let conditions = &request.conditions;
    // Several ranges go out as a multipart body, which a `Content-Encoding` would describe as
    // a whole: they are taken from the identity representation, whose parts need no decoding.
    let several_ranges = request.method == Method::GET
        && conditions
            .range
            .and_then(|value| value.to_str().ok())
            .is_some_and(|text| text.contains(','));
    let encoding = if several_ranges {
        Encoding::Identity
    } else {
        negotiate(conditions.accept_encoding, |e| entry.offers(e))
    };
    let representation = match entry.select(encoding) {
        Selected::Ready(representation) => representation,
        Selected::NeedsCompression(encoding) => return Err(encoding),
    };
    let validators = Validators {
        etag: representation.etag.to_str().unwrap_or_default(),
        last_modified: entry.modified_secs,
    };
    let honor_range = match conditional::evaluate(request.method, conditions, validators) {
        Precondition::NotModified => {
            counters.add(Counter::NotModified);
            let mut headers = HeaderMap::with_capacity(8);
            validator_headers(entry, representation, request, &mut headers);
            return Ok(with_headers(
                StatusCode::NOT_MODIFIED,
                headers,
                FileBody::empty(),
            ));
        }
        Precondition::Failed => {
            counters.add(Counter::PreconditionFailed);
            return Ok(status_only(StatusCode::PRECONDITION_FAILED));
        }
        Precondition::Proceed { honor_range } => honor_range,
    };
    let range_header = conditions
        .range
        .filter(|_| honor_range && request.method == Method::GET);
    let answer = match range_header.and_then(|value| value.to_str().ok()) {
        Some(text) => range::parse(text, representation.len, request.max_ranges),
        None => RangeAnswer::Whole,
    };
    let mut headers = ok_headers(entry, representation, request);
    let (status, body) = match answer {
        RangeAnswer::Whole => {
            counters.add(Counter::Ok);
            (StatusCode::OK, representation.whole())
        }
        RangeAnswer::Partial(ranges) => {
            counters.add(Counter::Partial);
            let chunks = partial(entry, representation, &ranges, &mut headers);
            (StatusCode::PARTIAL_CONTENT, FileBody::chunks(chunks))
        }
        RangeAnswer::Unsatisfiable => {
            counters.add(Counter::NotSatisfiable);
            let mut response = status_only(StatusCode::RANGE_NOT_SATISFIABLE);
            let unsatisfied = format!("bytes */{}", representation.len);
            response
                .headers_mut()
                .insert(header::CONTENT_RANGE, header_value(&unsatisfied));
            return Ok(response);
        }
    };
    if request.method == Method::HEAD {
        let len = body.size_hint().exact().unwrap_or(0);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        return Ok(with_headers(status, headers, FileBody::empty()));
    }
    Ok(with_headers(status, headers, body))
}

fn with_headers(status: StatusCode, headers: HeaderMap, body: FileBody) -> Response<FileBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The headers of a 200, built once per representation and kind of URL and then cloned: one
/// copy instead of eight hashed inserts on the hot path.
fn ok_headers(
    entry: &Entry,
    representation: &Representation,
    request: &FileRequest<'_>,
) -> HeaderMap {
    let prepared = &representation.ok_headers[usize::from(request.versioned)];
    prepared
        .get_or_init(|| {
            let mut headers = HeaderMap::with_capacity(10);
            validator_headers(entry, representation, request, &mut headers);
            if representation.encoding != Encoding::Identity {
                headers.insert(
                    header::CONTENT_ENCODING,
                    HeaderValue::from_static(representation.encoding.token()),
                );
            }
            headers.insert(header::ACCEPT_RANGES, BYTES);
            headers.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
            headers.insert(header::CONTENT_TYPE, entry.content_type.clone());
            headers
        })
        .clone()
}

/// The headers a 304 repeats from the 200 (RFC 9110 §15.4.5): the validators, `Cache-Control`
/// and `Vary`, but no representation metadata such as `Content-Encoding`, which the 304 does
/// not describe (the client keeps the stored response's).
fn validator_headers(
    entry: &Entry,
    representation: &Representation,
    request: &FileRequest<'_>,
    headers: &mut HeaderMap,
) {
    headers.insert(header::ETAG, representation.etag.clone());
    if let Some(last_modified) = &entry.last_modified {
        headers.insert(header::LAST_MODIFIED, last_modified.clone());
    }
    headers.insert(header::CACHE_CONTROL, request.cache_control.clone());
    if entry.negotiable() {
        headers.insert(header::VARY, ACCEPT_ENCODING);
    }
}

/// One range as a plain 206, several as `multipart/byteranges` (RFC 9110 §14.6).
fn partial(
    entry: &Entry,
    representation: &Representation,
    ranges: &[std::ops::Range<u64>],
    headers: &mut HeaderMap,
) -> Vec<Chunk> {
    let len = representation.len;
    if let [range] = ranges {
        let content_range = format!("bytes {}-{}/{len}", range.start, range.end - 1);
        headers.insert(header::CONTENT_RANGE, header_value(&content_range));
        headers.insert(header::CONTENT_TYPE, entry.content_type.clone());
        return vec![representation.chunk(range.clone())];
    }
    let boundary = boundary(representation);
    let content_type = entry
        .content_type
        .to_str()
        .unwrap_or("application/octet-stream");
    let mut chunks = Vec::with_capacity(ranges.len() * 2 + 1);
    for range in ranges {
        let part_head = format!(
            "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {}-{}/{len}\r\n\r\n",
            range.start,
            range.end - 1
        );
        chunks.push(Chunk::Memory(part_head.into()));
        chunks.push(representation.chunk(range.clone()));
    }
    chunks.push(Chunk::Memory(format!("\r\n--{boundary}--\r\n").into()));
    let multipart = format!("multipart/byteranges; boundary={boundary}");
    headers.insert(header::CONTENT_TYPE, header_value(&multipart));
    chunks
}

/// A boundary that differs per response; the parts it separates are files whose bytes could
/// contain any fixed string.
fn boundary(representation: &Representation) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = xxh3_64(representation.etag.as_bytes()) ^ count.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("proxflow-{seed:016x}")
}

pub(crate) fn status_only(status: StatusCode) -> Response<FileBody> {
    let mut response = Response::new(FileBody::empty());
    *response.status_mut() = status;
    response
}

/// A short plain-text answer for an error, as the design asks for refusals.
pub(crate) fn text(status: StatusCode, message: &'static str) -> Response<FileBody> {
    let mut response = Response::new(FileBody::full(message));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    response
}

/// A directory without its slash: redirect with a relative reference (`docs/`), which is right
/// however many prefixes a router stripped before this service saw the path.
pub(crate) fn add_slash(path: &SafePath<'_>, uri: &Uri) -> Response<FileBody> {
    let segment = if path.is_mount_root {
        uri.path().rsplit('/').next().unwrap_or("")
    } else {
        path.last_segment()
    };
    let segment =
        percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let location = match uri.query() {
        Some(query) => format!("{segment}/?{query}"),
        None => format!("{segment}/"),
    };
    let mut response = status_only(StatusCode::MOVED_PERMANENTLY);
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

pub(crate) fn method_not_allowed() -> Response<FileBody> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

pub(crate) fn io_error(error: &io::Error, uri: &Uri) -> Response<FileBody> {
    if error.kind() == io::ErrorKind::PermissionDenied {
        tracing::warn!(path = %uri.path(), %error, "static file not readable");
        return text(StatusCode::FORBIDDEN, "forbidden\n");
    }
    tracing::error!(path = %uri.path(), %error, "static file could not be read");
    text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
}

/// Values built from numbers and header values already checked are always valid.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}
