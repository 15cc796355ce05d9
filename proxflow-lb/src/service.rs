//! The HTTP service: picks an upstream, rewrites the request for it, sends it through the
//! client, retries a failed connection elsewhere, and answers 502/503 itself.

use std::convert::Infallible;
use std::error::Error;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use tower_service::Service;

use crate::body::LbBody;
use crate::clock::Moment;
use crate::config::{HostHeader, Policy};
use crate::error::{NoUpstream, UpstreamFailed};
use crate::pool::Pool;
use crate::upstream::{InFlight, Upstream};

/// Errors a client can return, boxed.
pub type BoxError = Box<dyn Error + Send + Sync>;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The service of an [`AdaptiveLb`](crate::AdaptiveLb) over a client service `S` (for
/// example hyper-util's `Client`).
pub struct Lb<S> {
    inner: S,
    pool: Arc<Pool>,
}

impl<S: Clone> Clone for Lb<S> {
    fn clone(&self) -> Self {
        Lb {
            inner: self.inner.clone(),
            pool: Arc::clone(&self.pool),
        }
    }
}

impl<S> Lb<S> {
    pub(crate) fn new(inner: S, pool: Arc<Pool>) -> Self {
        Lb { inner, pool }
    }

    /// The client service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The client service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Takes the client service out.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Lb<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lb").field("inner", &self.inner).finish()
    }
}

/// The future of [`Lb`].
pub type ResponseFuture<ResBody> =
    Pin<Box<dyn Future<Output = Result<Response<LbBody<ResBody>>, Infallible>> + Send>>;

impl<S, B, ResBody> Service<Request<B>> for Lb<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Default + Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<LbBody<ResBody>>;
    /// Never an error: the balancer answers 502 and 503 itself, so it can sit behind axum's
    /// `Router::nest_service` as is.
    type Error = Infallible;
    type Future = ResponseFuture<ResBody>;

    /// Always ready: the client's readiness is awaited per attempt, in the response future
    /// (a client that fails to get ready is answered 502).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        crate::health::start(&self.pool, &self.inner);
        Box::pin(forward(Arc::clone(&self.pool), self.inner.clone(), request))
    }
}

async fn forward<S, B, ResBody>(
    pool: Arc<Pool>,
    mut client: S,
    request: Request<B>,
) -> Result<Response<LbBody<ResBody>>, Infallible>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    B: Body + Default,
{
    let client_ip = client_ip(&request);
    let key: Option<Vec<u8>> = match &pool.config.lb_policy {
        Policy::IpHash => client_ip.map(|ip| ip.to_string().into_bytes()),
        Policy::HeaderHash { header } => request
            .headers()
            .get(header.as_str())
            .map(|value| value.as_bytes().to_vec()),
        _ => None,
    };
    let (mut parts, body) = request.into_parts();
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        let authority = parts.uri.authority()?;
        HeaderValue::from_str(authority.as_str()).ok()
    });
    remove_hop_by_hop(&mut parts.headers);
    if pool.config.forwarded_headers {
        forwarded_headers(&mut parts, client_ip, original_host.as_ref());
    }
    let retryable = is_idempotent(&parts.method) && body.size_hint().exact() == Some(0);
    let mut body = Some(body);
    let mut tried: Vec<Arc<str>> = Vec::new();
    loop {
        let started = Moment::now();
        let Some(upstream) = pool.pick(started, key.as_deref(), &tried) else {
            return Ok(no_upstream(&tried));
        };
        let mut request = Request::new(body.take().unwrap_or_default());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = upstream_uri(&upstream, &parts.uri);
        *request.version_mut() = parts.version;
        // Copies only while a retry may still need the originals.
        if !retryable || tried.len() as u32 >= pool.config.retries {
            *request.headers_mut() = std::mem::take(&mut parts.headers);
            *request.extensions_mut() = std::mem::take(&mut parts.extensions);
        } else {
            *request.headers_mut() = parts.headers.clone();
            *request.extensions_mut() = parts.extensions.clone();
        }
        match (pool.config.host, &original_host) {
            (HostHeader::Upstream, _) | (HostHeader::Keep, None) => {
                if let Some(host) = upstream.base.as_ref().and_then(|base| base.host.clone()) {
                    request.headers_mut().insert(header::HOST, host);
                }
            }
            (HostHeader::Keep, Some(host)) => {
                request.headers_mut().insert(header::HOST, host.clone());
            }
        }
        if let Err(error) = std::future::poll_fn(|cx| client.poll_ready(cx)).await {
            return Ok(bad_gateway(&upstream, tried, error.into()));
        }
        let in_flight = InFlight::new(Arc::clone(&upstream));
        let result = client.call(request).await;
        drop(in_flight);
        let ended = Moment::now();
        match result {
            Ok(response) => {
                let failed = pool
                    .config
                    .passive_health
                    .failure_statuses
                    .contains(&response.status().as_u16());
                upstream.answered(started, ended, failed);
                let mut response = response.map(LbBody::inner);
                remove_hop_by_hop(response.headers_mut());
                return Ok(response);
            }
            Err(error) => {
                let error: BoxError = error.into();
                upstream.answered(started, ended, true);
                tried.push(Arc::clone(&upstream.name));
                let attempts = tried.len() as u32;
                if retryable && attempts <= pool.config.retries && is_connect_error(&*error) {
                    tracing::debug!(upstream = %upstream.name, %error, "connection failed; retrying on another upstream");
                    continue;
                }
                tracing::debug!(upstream = %upstream.name, %error, "upstream failed");
                return Ok(bad_gateway(&upstream, tried, error));
            }
        }
    }
}

/// The upstream's scheme and authority with the request's path and query.
fn upstream_uri(upstream: &Upstream, original: &Uri) -> Uri {
    let Some(base) = &upstream.base else {
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

/// Fields that describe one connection, not the message (RFC 9110 §7.6.1): a proxy does not
/// pass them on, nor the fields `Connection` names. (`Upgrade` goes too: this balancer does not
/// tunnel upgraded connections.)
fn remove_hop_by_hop(headers: &mut http::HeaderMap) {
    if headers.is_empty() {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Made at compile time: `from_static` checks its name at run time otherwise.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

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

/// The client's address: axum's `ConnectInfo<SocketAddr>`, or a `SocketAddr` extension.
fn client_ip<B>(request: &Request<B>) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(info.0.ip());
    }
    request.extensions().get::<SocketAddr>().map(SocketAddr::ip)
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
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

fn plain<B>(status: StatusCode, text: &'static str) -> Response<LbBody<B>> {
    let mut response = Response::new(LbBody::text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn no_upstream<B>(tried: &[Arc<str>]) -> Response<LbBody<B>> {
    tracing::warn!(tried = tried.len(), "no upstream available");
    let mut response = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "service unavailable: no healthy upstream\n",
    );
    response.extensions_mut().insert(NoUpstream);
    response
}

fn bad_gateway<B>(
    upstream: &Upstream,
    tried: Vec<Arc<str>>,
    error: BoxError,
) -> Response<LbBody<B>> {
    let mut response = plain(StatusCode::BAD_GATEWAY, "bad gateway: upstream failed\n");
    response.extensions_mut().insert(UpstreamFailed {
        upstream: Arc::clone(&upstream.name),
        tried,
        error: Arc::from(error),
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields_are_not_passed_on() {
        let mut headers = http::HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-session-hint"),
            ("keep-alive", "timeout=5"),
            ("x-session-hint", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("accept", "text/html"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        remove_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }

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
}
