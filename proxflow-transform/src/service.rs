//! [`Transform`]: the rules applied to a request on its way in and to its response on its way
//! out.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::ready;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use pin_project_lite::pin_project;
use proxflow_core::BoxError;
use serde_json::Value;
use tower_service::Service;

use crate::body::{read, Read, TransformBody};
use crate::coding::{Coding, DecodeError};
use crate::enrich::{EnrichError, Enrichment};
use crate::headers::RequestView;
use crate::layer::{essence, Rules, When};
use crate::query;
use crate::rules::{self, BodyRule};

/// The transforms over a service `S`; made by [`TransformLayer`](crate::TransformLayer).
#[derive(Clone, Debug)]
pub struct Transform<S> {
    inner: S,
    rules: Arc<Rules>,
}

impl<S> Transform<S> {
    pub(crate) fn new(inner: S, rules: Arc<Rules>) -> Self {
        Transform { inner, rules }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, without the transforms.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Transform<S>
where
    S: Service<Request<TransformBody<ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body<Data = Bytes> + Unpin + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Unpin + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<TransformBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let rules = Arc::clone(&self.rules);
        if rules.headers_only() {
            // Nothing to read or answer here: the request goes on at once, without a task of
            // the layer's own around it.
            let (mut parts, body) = request.into_parts();
            let seen = Seen::new(&parts, &rules);
            request_heads(&rules, &seen, &mut parts);
            let request = Request::from_parts(parts, TransformBody::original(body));
            let kind = Kind::Heads {
                inner: self.inner.call(request),
                seen: Some((seen, rules)),
            };
            return ResponseFuture { kind };
        }
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let kind = Kind::Bodies {
            inner: Box::pin(transform(rules, inner, request)),
        };
        ResponseFuture { kind }
    }
}

/// What the conditions and templates read of the request, kept for the response.
struct Seen {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    client_ip: Option<std::net::IpAddr>,
}

pin_project! {
    /// The response future of [`Transform`].
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = Projection]
    enum Kind<F, B, E> {
        /// Header and query rules only: the inner future, the response's headers rewritten
        /// when it is ready.
        Heads {
            #[pin]
            inner: F,
            seen: Option<(Seen, Arc<Rules>)>,
        },
        /// Bodies to read, enrich or aggregate.
        Bodies {
            inner: BoxFuture<Result<Response<TransformBody<B>>, E>>,
        },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TransformBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            Projection::Heads { inner, seen } => {
                let response = ready!(inner.poll(cx))?;
                let (mut parts, body) = response.into_parts();
                if let Some((seen, rules)) = seen.take() {
                    response_heads(&rules, &seen, &mut parts);
                }
                Poll::Ready(Ok(Response::from_parts(
                    parts,
                    TransformBody::original(body),
                )))
            }
            Projection::Bodies { inner } => inner.as_mut().poll(cx),
        }
    }
}

impl<F, B, E> std::fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Seen {
    fn new(parts: &http::request::Parts, rules: &Rules) -> Seen {
        Seen {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: if rules.reads_request_headers {
                parts.headers.clone()
            } else {
                HeaderMap::new()
            },
            client_ip: proxflow_core::client::peer_addr(&parts.extensions).map(|peer| peer.ip()),
        }
    }

    /// Whether `when` holds for this request and `message` (its own headers, or its
    /// response's, with the status).
    fn holds(&self, when: &When, message: &HeaderMap, status: Option<StatusCode>) -> bool {
        when.holds(&self.method, &self.uri, &self.headers, message, status)
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            uri: &self.uri,
            headers: &self.headers,
            client_ip: self.client_ip,
        }
    }
}

async fn transform<S, ReqBody, ResBody>(
    rules: Arc<Rules>,
    mut inner: S,
    request: Request<ReqBody>,
) -> Result<Response<TransformBody<ResBody>>, S::Error>
where
    S: Service<Request<TransformBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body<Data = Bytes> + Unpin,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Unpin,
    ResBody::Error: Into<BoxError>,
{
    let (mut parts, body) = request.into_parts();
    let seen = Seen::new(&parts, &rules);
    let holds = |when: &When, message: &HeaderMap, status| seen.holds(when, message, status);
    if let Some((_, aggregation)) = rules
        .aggregations
        .iter()
        .find(|(when, _)| holds(when, &parts.headers, None))
    {
        return Ok(aggregation.respond().await);
    }
    request_heads(&rules, &seen, &mut parts);
    let steps = Steps {
        rules: applicable(&rules.request_body, |when| {
            holds(when, &parts.headers, None)
        })
        .map(|step| step.render(&seen.view()))
        .collect(),
        enrichments: applicable(&rules.request_enrich, |when| {
            holds(when, &parts.headers, None)
        })
        .collect(),
    };
    let coding = json_coding(&parts.headers, rules.decode_content);
    let body = match coding.filter(|_| !steps.is_empty()) {
        None => TransformBody::original(body),
        Some(coding) => match read(body, rules.max_body_size).await {
            Read::Whole(bytes) => match coding.decode(bytes.clone(), rules.max_body_size) {
                Ok(plain) => match serde_json::from_slice::<Value>(&plain) {
                    Ok(json) => match steps
                        .rewrite(&mut parts.headers, bytes, json, plain, coding)
                        .await
                    {
                        Ok(body) => body,
                        Err(detail) => return Ok(problem(StatusCode::BAD_GATEWAY, &detail)),
                    },
                    Err(error) => {
                        let detail = format!("the request body is not valid JSON: {error}");
                        return Ok(problem(StatusCode::BAD_REQUEST, &detail));
                    }
                },
                Err(DecodeError::TooLarge) if rules.pass_large_requests => {
                    TransformBody::bytes(bytes)
                }
                Err(DecodeError::TooLarge) => return Ok(too_large(rules.max_body_size)),
                Err(DecodeError::Invalid(error)) => {
                    let detail = format!("the request body is not valid in its coding: {error}");
                    return Ok(problem(StatusCode::BAD_REQUEST, &detail));
                }
            },
            Read::TooLarge(head, rest) if rules.pass_large_requests => {
                TransformBody::resumed(head, rest)
            }
            Read::TooLarge(..) => return Ok(too_large(rules.max_body_size)),
            Read::Failed(error) => {
                let detail = format!("the request body could not be read: {error}");
                return Ok(problem(StatusCode::BAD_REQUEST, &detail));
            }
        },
    };
    let response = inner.call(Request::from_parts(parts, body)).await?;

    let (mut parts, body) = response.into_parts();
    let status = Some(parts.status);
    response_heads(&rules, &seen, &mut parts);
    let steps = Steps {
        rules: applicable(&rules.response_body, |when| {
            holds(when, &parts.headers, status)
        })
        .map(|step| step.render(&seen.view()))
        .collect(),
        enrichments: applicable(&rules.response_enrich, |when| {
            holds(when, &parts.headers, status)
        })
        .collect(),
    };
    let coding = json_coding(&parts.headers, rules.decode_content);
    let Some(coding) = coding.filter(|_| !steps.is_empty() && seen.method != Method::HEAD) else {
        return Ok(Response::from_parts(parts, TransformBody::original(body)));
    };
    let body = match read(body, rules.max_body_size).await {
        Read::Whole(bytes) => match coding.decode(bytes.clone(), rules.max_body_size) {
            Ok(plain) => match serde_json::from_slice::<Value>(&plain) {
                Ok(json) => match steps
                    .rewrite(&mut parts.headers, bytes, json, plain, coding)
                    .await
                {
                    Ok(body) => body,
                    Err(detail) => return Ok(problem(StatusCode::BAD_GATEWAY, &detail)),
                },
                Err(error) => {
                    tracing::warn!(%error, "response body is not valid JSON; passed unchanged");
                    TransformBody::bytes(bytes)
                }
            },
            Err(DecodeError::TooLarge) => {
                tracing::debug!("response body decodes over max_body_size; passed untouched");
                TransformBody::bytes(bytes)
            }
            Err(DecodeError::Invalid(error)) => {
                tracing::warn!(%error, "response body is not valid in its coding; passed unchanged");
                TransformBody::bytes(bytes)
            }
        },
        Read::TooLarge(head, rest) => {
            tracing::debug!("response body over max_body_size; passed untouched");
            TransformBody::resumed(head, rest)
        }
        Read::Failed(error) => {
            // The client sees the failure as the origin gave it: a body cut short.
            tracing::warn!(%error, "response body failed while read for a transform");
            return Ok(Response::from_parts(parts, TransformBody::failed(error)));
        }
    };
    Ok(Response::from_parts(parts, body))
}

/// The header and query rules of a request.
fn request_heads(rules: &Rules, seen: &Seen, parts: &mut http::request::Parts) {
    for (when, rule) in &rules.request_headers {
        if seen.holds(when, &parts.headers, None) {
            rule.apply(&mut parts.headers, &seen.view());
        }
    }
    if !rules.request_query.is_empty() {
        let query_rules = applicable(&rules.request_query, |when| {
            seen.holds(when, &parts.headers, None)
        });
        parts.uri = query::apply(&parts.uri, query_rules, &seen.view());
    }
}

/// The header rules of a response.
fn response_heads(rules: &Rules, seen: &Seen, parts: &mut http::response::Parts) {
    for (when, rule) in &rules.response_headers {
        if seen.holds(when, &parts.headers, Some(parts.status)) {
            rule.apply(&mut parts.headers, &seen.view());
        }
    }
}

/// The rules whose condition holds, in order.
fn applicable<'a: 'h, 'h, T>(
    rules: &'a [(When, T)],
    holds: impl Fn(&When) -> bool + 'h,
) -> impl Iterator<Item = &'a T> + 'h {
    rules
        .iter()
        .filter(move |(when, _)| holds(when))
        .map(|(_, rule)| rule)
}

/// The coding of a JSON body the layer can read; `None` for any other body, which passes
/// untouched.
fn json_coding(headers: &HeaderMap, decode_content: bool) -> Option<Coding> {
    let essence = essence(headers).to_ascii_lowercase();
    let json = essence == "application/json" || essence.ends_with("+json");
    json.then(|| Coding::readable(headers, decode_content))
        .flatten()
}

fn too_large<B>(limit: usize) -> Response<TransformBody<B>> {
    let detail = format!("the request body is over {limit} bytes");
    problem(StatusCode::PAYLOAD_TOO_LARGE, &detail)
}

/// What a JSON body goes through: the rules, then the enrichments.
struct Steps<'a> {
    rules: Vec<BodyRule>,
    enrichments: Vec<&'a Enrichment>,
}

impl Steps<'_> {
    fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.enrichments.is_empty()
    }

    /// The body after the steps, encoded in `coding`, with its `Content-Length` and a
    /// weakened `ETag`; the original bytes if a rule failed or nothing changed; `Err` with a
    /// problem's detail when an enrichment that answers 502 on failure failed.
    async fn rewrite<B>(
        &self,
        headers: &mut HeaderMap,
        original: Bytes,
        mut json: Value,
        plain: Bytes,
        coding: Coding,
    ) -> Result<TransformBody<B>, String> {
        // The original bytes go on if a rule fails: no copy of the document is needed.
        if let Err(error) = rules::apply_in_place(&mut json, &self.rules) {
            tracing::warn!(%error, "a body rule failed; the body passes unchanged");
            return Ok(TransformBody::bytes(original));
        }
        for enrichment in &self.enrichments {
            match enrichment.apply(&mut json).await {
                Ok(()) => {}
                Err(error @ EnrichError::Url { .. }) => {
                    tracing::warn!(%error, "enrichment failed; answered 502");
                    return Err(format!("enrichment failed: {error}"));
                }
                Err(error) => tracing::warn!(%error, "enrichment skipped"),
            }
        }
        let rewritten = serde_json::to_vec(&json).unwrap_or_default();
        if rewritten == plain {
            return Ok(TransformBody::bytes(original));
        }
        let bytes = coding.encode(rewritten);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        headers.remove(header::TRANSFER_ENCODING);
        weaken_etag(headers);
        Ok(TransformBody::bytes(bytes))
    }
}

/// A strong `ETag` names exact bytes: the changed body keeps it only as a weak one.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
        return;
    };
    if etag.starts_with("W/") {
        return;
    }
    if let Ok(weak) = HeaderValue::from_str(&format!("W/{etag}")) {
        headers.insert(header::ETAG, weak);
    }
}

/// An RFC 9457 problem answered by the layer.
fn problem<B>(status: StatusCode, detail: &str) -> Response<TransformBody<B>> {
    let document = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let bytes = Bytes::from(serde_json::to_vec(&document).unwrap_or_default());
    let mut response = Response::new(TransformBody::bytes(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}
