//! The reverse proxy's plumbing: one request forwarded to a picked upstream, with its URI
//! rewritten, hop-by-hop fields dropped, `X-Forwarded-*` and `Host` set, a refused connection
//! retried elsewhere, and the balancer's own 502 and 503 answers.
//!
//! The answers are nginx's: no upstream available is a 503, with `Retry-After` here; an
//! upstream that failed (a refused connection once retries are spent, garbage, a reset, a
//! closed connection) is a 502.

use std::any::Any;
use std::error::Error;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Extensions, Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{Empty, Full};
use proxflow_core::headers::remove_hop_by_hop;
use proxflow_core::{text_response, BoxError, LayerBody};
use tower_service::Service;

use crate::backend::{Backend, Base, InFlight};
use crate::config::{HostHeader, Policy};
use crate::error::{NoUpstream, UpstreamFailed};
use crate::pool::Pool;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Sends `request` through `client` to an upstream of `pool`, and again to another one while
/// its connection is refused and retries are left; answers 503 when no upstream is
/// available and 502 when the client fails.
pub(crate) async fn forward<S, B, ResBody>(
    pool: Arc<Pool>,
    mut client: S,
    request: Request<B>,
) -> Response<LayerBody<ResBody>>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    B: Body + 'static,
{
    let running = pool.running();
    let settings = &running.draft;
    let client_ip = client_ip(request.extensions());
    let key: Option<Vec<u8>> = match &settings.policy {
        Policy::IpHash => client_ip.map(|ip| ip.to_string().into_bytes()),
        Policy::HeaderHash { .. } => running
            .hash_header
            .as_ref()
            .and_then(|header| request.headers().get(header))
            .map(|value| value.as_bytes().to_vec()),
        _ => None,
    };
    let (mut parts, body) = request.into_parts();
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        let authority = parts.uri.authority()?;
        HeaderValue::from_str(authority.as_str()).ok()
    });
    remove_hop_by_hop(&mut parts.headers);
    if settings.forwarded_headers {
        forwarded_headers(&mut parts, client_ip, original_host.as_ref());
    }
    let empty = empty_body::<B>();
    let retryable =
        settings.retries > 0 && is_idempotent(&parts.method) && is_empty(&body) && empty.is_some();
    let mut body = Some(body);
    let mut tried: Vec<Arc<str>> = Vec::new();
    // The last refused connection, while the request is retried.
    let mut refused: Option<(Arc<str>, BoxError)> = None;
    loop {
        let started = settings.clock.now();
        let Some(backend) = pool.pick(started, key.as_deref(), &tried) else {
            return match refused {
                Some((upstream, error)) => bad_gateway(upstream, tried, error),
                None => unavailable(&pool, tried.len()),
            };
        };
        // The request's own body first, then empty ones of its type (`retryable` says there
        // are).
        let Some(body) = body.take().or_else(|| empty.map(|make| make())) else {
            unreachable!("a retry without a body to send");
        };
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = upstream_uri(backend.base.as_ref(), &parts.uri);
        *request.version_mut() = parts.version;
        // Copies only while a retry may still need the originals.
        if !retryable || tried.len() as u32 >= settings.retries {
            *request.headers_mut() = std::mem::take(&mut parts.headers);
            *request.extensions_mut() = std::mem::take(&mut parts.extensions);
        } else {
            *request.headers_mut() = parts.headers.clone();
            *request.extensions_mut() = parts.extensions.clone();
        }
        set_host(
            request.headers_mut(),
            settings.host,
            original_host.as_ref(),
            &backend,
        );
        if let Err(error) = std::future::poll_fn(|cx| client.poll_ready(cx)).await {
            let error: BoxError = error.into();
            return bad_gateway(Arc::clone(&backend.name), tried, error);
        }
        let in_flight = InFlight::new(Arc::clone(&backend), started);
        let result = client.call(request).await;
        let ended = settings.clock.now();
        match result {
            Ok(response) => {
                let status = response.status().as_u16();
                let failed = settings.passive.failure_statuses.contains(&status);
                in_flight.answered(ended, failed);
                let mut response = response.map(LayerBody::inner);
                remove_hop_by_hop(response.headers_mut());
                return response;
            }
            Err(error) => {
                let error: BoxError = error.into();
                in_flight.answered(ended, true);
                tried.push(Arc::clone(&backend.name));
                let retry = retryable && tried.len() as u32 <= settings.retries;
                if retry && is_connect_error(&*error) {
                    tracing::debug!(upstream = %backend.name, error = %Chain(&*error), "connection failed; retrying on another upstream");
                    refused = Some((Arc::clone(&backend.name), error));
                    continue;
                }
                return bad_gateway(Arc::clone(&backend.name), tried, error);
            }
        }
    }
}

/// The upstream's scheme and authority with the request's path and query.
fn upstream_uri(base: Option<&Base>, original: &Uri) -> Uri {
    let Some(base) = base else {
        return original.clone();
    };
    let path = original
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    Uri::builder()
        .scheme(base.scheme.clone())
        .authority(base.authority.clone())
        .path_and_query(path)
        .build()
        .unwrap_or_else(|_| original.clone())
}

/// `Host`: the client's (or its URI's authority) with [`HostHeader::Keep`], the upstream's
/// with [`HostHeader::Upstream`] or when the client sent none.
fn set_host(
    headers: &mut http::HeaderMap,
    host: HostHeader,
    original: Option<&HeaderValue>,
    backend: &Backend,
) {
    match (host, original) {
        (HostHeader::Keep, Some(host)) => {
            headers.insert(header::HOST, host.clone());
        }
        (HostHeader::Upstream, _) | (HostHeader::Keep, None) => {
            if let Some(host) = backend.base.as_ref().and_then(|base| base.host.clone()) {
                headers.insert(header::HOST, host);
            }
        }
    }
}

/// Appends the client to `X-Forwarded-For`; sets `X-Forwarded-Proto` and `X-Forwarded-Host`.
fn forwarded_headers(
    parts: &mut http::request::Parts,
    client: Option<IpAddr>,
    host: Option<&HeaderValue>,
) {
    let headers = &mut parts.headers;
    if let Some(ip) = client {
        // Appended to what earlier proxies wrote, comma-separated in one field.
        let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    let proto = if parts.uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
        "https"
    } else {
        "http"
    };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

/// The client's address, as every proxflow layer reads it: a `ClientAddr` extension, axum's
/// `ConnectInfo<SocketAddr>`, or a bare `SocketAddr`.
fn client_ip(extensions: &Extensions) -> Option<IpAddr> {
    proxflow_core::client::peer_addr(extensions).map(|addr: SocketAddr| addr.ip())
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether a body surely has no data to send.
fn is_empty<B: Body>(body: &B) -> bool {
    body.is_end_stream() || body.size_hint().exact() == Some(0)
}

/// How to make an empty body of type `B`, for the body types that have one a library can
/// make: axum's `Body` (with the `axum` feature), `String`, and http-body-util's `Empty<Bytes>`
/// and `Full<Bytes>`. A retry and a health probe need one. Requiring `B: Default` instead
/// would refuse hyper's `Incoming`, which has none, and a bound cannot ask for `Default` only
/// where it exists.
pub(crate) fn empty_body<B: 'static>() -> Option<fn() -> B> {
    let mut make: Option<fn() -> B> = None;
    let slot: &mut dyn Any = &mut make;
    if let Some(slot) = slot.downcast_mut::<Option<fn() -> String>>() {
        *slot = Some(String::new);
    } else if let Some(slot) = slot.downcast_mut::<Option<fn() -> Empty<Bytes>>>() {
        *slot = Some(Empty::new);
    } else if let Some(slot) = slot.downcast_mut::<Option<fn() -> Full<Bytes>>>() {
        *slot = Some(Full::default);
    } else {
        #[cfg(feature = "axum")]
        if let Some(slot) = slot.downcast_mut::<Option<fn() -> axum::body::Body>>() {
            *slot = Some(axum::body::Body::empty);
        }
    }
    make
}

/// Whether the request surely never reached the upstream: an I/O error of connecting
/// anywhere in the error's chain (hyper-util's client wraps it).
fn is_connect_error(error: &(dyn Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable
            ) {
                return true;
            }
        }
        current = error.source();
    }
    false
}

/// The 503 of a request when no upstream is available, after `tried` refused connections;
/// `Retry-After` is [`retry_after`]'s.
fn unavailable<B>(pool: &Pool, tried: usize) -> Response<LayerBody<B>> {
    tracing::warn!(tried, "no upstream available; answered 503");
    let mut response = text_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &"service unavailable: no healthy upstream\n",
    );
    let retry_after = retry_after(pool.until_one_returns());
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, retry_after);
    response.extensions_mut().insert(NoUpstream);
    response
}

/// `Retry-After` of a 503: the whole seconds until the first ejected upstream returns, rounded
/// up; 1 when none is ejected (nothing says when one comes back: drained, failing checks,
/// refusing connections, or no upstream at all), so that clients neither hammer the balancer
/// nor wait longer than it takes an upstream to return.
fn retry_after(until_one_returns: Option<Duration>) -> HeaderValue {
    let seconds = until_one_returns.map_or(1, |wait| wait.as_nanos().div_ceil(1_000_000_000));
    HeaderValue::from(seconds.max(1) as u64)
}

/// An error and its sources, `: `-separated, as a log line shows them: hyper-util's client
/// error alone says only "client error (SendRequest)".
struct Chain<'a>(&'a (dyn Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

fn bad_gateway<B>(
    upstream: Arc<str>,
    tried: Vec<Arc<str>>,
    error: BoxError,
) -> Response<LayerBody<B>> {
    tracing::warn!(%upstream, error = %Chain(&*error), "upstream failed; answered 502");
    let mut response = text_response(StatusCode::BAD_GATEWAY, &"bad gateway: upstream failed\n");
    response.extensions_mut().insert(UpstreamFailed {
        upstream,
        tried,
        error: Arc::from(error),
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_are_found_in_the_chain() {
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl Error for Wrapper {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let refused = Wrapper(std::io::ErrorKind::ConnectionRefused.into());
        assert!(is_connect_error(&refused));
        let reset = Wrapper(std::io::ErrorKind::ConnectionReset.into());
        assert!(!is_connect_error(&reset), "the request may have been sent");
    }

    #[test]
    fn empty_bodies_of_the_known_types_only() {
        fn make<B: Body + 'static>() -> Option<B> {
            empty_body::<B>().map(|make| make())
        }
        assert_eq!(make::<String>(), Some(String::new()));
        assert!(make::<Empty<Bytes>>().is_some_and(|b| b.is_end_stream()));
        assert!(make::<Full<Bytes>>().is_some_and(|b| b.is_end_stream()));
        #[cfg(feature = "axum")]
        assert!(make::<axum::body::Body>().is_some_and(|b| b.is_end_stream()));
        assert!(empty_body::<hyper::body::Incoming>().is_none());
        assert!(empty_body::<Vec<u8>>().is_none());
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        let ms = Duration::from_millis;
        assert_eq!(retry_after(None), "1");
        assert_eq!(retry_after(Some(Duration::ZERO)), "1", "never 0");
        assert_eq!(retry_after(Some(ms(1))), "1");
        assert_eq!(retry_after(Some(ms(29_001))), "30");
        assert_eq!(retry_after(Some(ms(30_000))), "30");
    }

    #[test]
    fn the_uri_takes_the_upstreams_scheme_and_authority() {
        let base = Base {
            scheme: http::uri::Scheme::HTTPS,
            authority: "10.0.0.1:8443".parse().unwrap(),
            host: None,
        };
        let original: Uri = "http://front.example/orders/7?full=1".parse().unwrap();
        assert_eq!(
            upstream_uri(Some(&base), &original),
            "https://10.0.0.1:8443/orders/7?full=1"
        );
        let origin_form: Uri = "/".parse().unwrap();
        assert_eq!(
            upstream_uri(Some(&base), &origin_form),
            "https://10.0.0.1:8443/"
        );
        assert_eq!(upstream_uri(None, &original), original);
    }
}
