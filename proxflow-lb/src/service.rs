//! [`Lb`], the HTTP service: each request goes through the reverse proxy's plumbing
//! ([`crate::proxy`]) to an upstream the pool picks.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use proxflow_core::{BoxError, LayerBody};
use tower_service::Service;

use crate::pool::Pool;

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
    Pin<Box<dyn Future<Output = Result<Response<LayerBody<ResBody>>, Infallible>> + Send>>;

impl<S, B, ResBody> Service<Request<B>> for Lb<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<LayerBody<ResBody>>;
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
        crate::active::start(&self.pool, &self.inner);
        let forward = crate::proxy::forward(Arc::clone(&self.pool), self.inner.clone(), request);
        Box::pin(async move { Ok(forward.await) })
    }
}
