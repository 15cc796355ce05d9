//! The services: HTTP (answers 503 and 504 itself) and generic (returns [`BreakerError`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use proxflow_core::{text_response, LayerBody};
use tokio::time::Sleep;
use tower_service::Service;

use crate::breaker::Holders;
use crate::classify::Classify;
use crate::error::BreakerError;
use crate::future::{Call, Guard, Stopped};

/// In the extensions of a 504 the breaker answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTimedOut {
    /// The timeout that ran out.
    pub after: Duration,
}

/// What both forms share: the inner service, its breaker, and in readiness mode the leave
/// taken in `poll_ready`.
pub(crate) struct Core<S, C> {
    inner: S,
    breaker: Holders<C>,
    timeout: Option<Duration>,
    readiness: Option<Readiness<C>>,
}

impl<S: Clone, C> Clone for Core<S, C> {
    fn clone(&self) -> Self {
        Core {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            timeout: self.timeout,
            // Leave taken by this instance is its own.
            readiness: self.readiness.as_ref().map(|_| Readiness::default()),
        }
    }
}

/// Readiness mode: `poll_ready` takes the breaker's leave, or waits until it may.
struct Readiness<C> {
    reserved: Option<Guard<C>>,
    wait: Option<Pin<Box<Sleep>>>,
}

impl<C> Default for Readiness<C> {
    fn default() -> Self {
        Readiness {
            reserved: None,
            wait: None,
        }
    }
}

/// Refusals in readiness mode wait at least this long before asking again.
const MIN_WAIT: Duration = Duration::from_millis(1);

impl<C> Readiness<C> {
    fn poll_leave(&mut self, breaker: &Holders<C>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.reserved.is_some() {
                return Poll::Ready(());
            }
            if let Some(wait) = &mut self.wait {
                ready!(wait.as_mut().poll(cx));
                self.wait = None;
            }
            match Guard::acquire(breaker.this_thread()) {
                Ok(guard) => self.reserved = Some(guard),
                Err(refusal) => {
                    let wait = refusal.retry_after.max(MIN_WAIT);
                    self.wait = Some(Box::pin(tokio::time::sleep(wait)));
                }
            }
        }
    }
}

impl<S, C> Core<S, C> {
    pub(crate) fn new(
        inner: S,
        breaker: Holders<C>,
        timeout: Option<Duration>,
        readiness: bool,
    ) -> Self {
        Core {
            inner,
            breaker,
            timeout,
            readiness: readiness.then(Readiness::default),
        }
    }

    fn poll_ready<R>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>>
    where
        S: Service<R>,
    {
        if let Some(readiness) = &mut self.readiness {
            ready!(readiness.poll_leave(&self.breaker, cx));
        }
        self.inner.poll_ready(cx)
    }

    fn call<R>(&mut self, request: R) -> Call<S::Future, C>
    where
        S: Service<R>,
    {
        let reserved = self.readiness.as_mut().and_then(|r| r.reserved.take());
        let leave = match reserved {
            Some(mut guard) => {
                guard.restart();
                Ok(guard)
            }
            None => Guard::acquire(self.breaker.this_thread()),
        };
        Call::start(leave, &mut self.inner, request, self.timeout)
    }
}

/// The HTTP service of a [`CircuitBreakerLayer`](crate::CircuitBreakerLayer): refusals are
/// `503 Service Unavailable` with `Retry-After` and the [`Refusal`](crate::Refusal) in the
/// response's extensions, timeouts `504 Gateway Timeout` with [`CallTimedOut`].
pub struct CircuitBreaker<S, C> {
    core: Core<S, C>,
}

impl<S: Clone, C> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        CircuitBreaker {
            core: self.core.clone(),
        }
    }
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn new(core: Core<S, C>) -> Self {
        CircuitBreaker { core }
    }

    define_inner_service_accessors!(core.inner);
}

impl<S: std::fmt::Debug, C> std::fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.core.inner)
            .field("breaker", self.core.breaker.breaker().name())
            .finish()
    }
}

impl<S, C, B, ResBody> Service<Request<B>> for CircuitBreaker<S, C>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    C: Classify<Response<ResBody>, S::Error>,
{
    type Response = Response<LayerBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.core.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ResponseFuture {
            call: self.core.call(request),
        }
    }
}

pin_project! {
    /// Future of [`CircuitBreaker`] and [`KeyedCircuitBreaker`](crate::KeyedCircuitBreaker).
    pub struct ResponseFuture<F, C> {
        #[pin]
        call: Call<F, C>,
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn new(call: Call<F, C>) -> Self {
        ResponseFuture { call }
    }
}

impl<F, C, ResBody, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    C: Classify<Response<ResBody>, E>,
{
    type Output = Result<Response<LayerBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().call.poll_into(
            cx,
            |result| result.map(|response| response.map(LayerBody::inner)),
            |stopped| Ok(answer(stopped)),
        )
    }
}

/// The breaker's own answer: 503 for a refusal, 504 for a timeout.
fn answer<B>(stopped: Stopped) -> Response<LayerBody<B>> {
    let (status, text) = match stopped {
        Stopped::Refused(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            &"service unavailable: circuit breaker open\n",
        ),
        Stopped::TimedOut(_) => (StatusCode::GATEWAY_TIMEOUT, &"upstream timed out\n"),
    };
    let mut response = text_response(status, text);
    match stopped {
        Stopped::Refused(refusal) => {
            let seconds = refusal
                .retry_after
                .as_nanos()
                .div_ceil(1_000_000_000)
                .max(1);
            let seconds = u64::try_from(seconds).unwrap_or(u64::MAX);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            response.extensions_mut().insert(refusal);
        }
        Stopped::TimedOut(after) => {
            response.extensions_mut().insert(CallTimedOut { after });
        }
    }
    response
}

/// The generic service of a [`GenericCircuitBreakerLayer`](crate::GenericCircuitBreakerLayer):
/// any request and response types; refusals and timeouts are [`BreakerError`] values.
pub struct GenericCircuitBreaker<S, C> {
    core: Core<S, C>,
}

impl<S: Clone, C> Clone for GenericCircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        GenericCircuitBreaker {
            core: self.core.clone(),
        }
    }
}

impl<S, C> GenericCircuitBreaker<S, C> {
    pub(crate) fn new(core: Core<S, C>) -> Self {
        GenericCircuitBreaker { core }
    }

    define_inner_service_accessors!(core.inner);
}

impl<S: std::fmt::Debug, C> std::fmt::Debug for GenericCircuitBreaker<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenericCircuitBreaker")
            .field("inner", &self.core.inner)
            .field("breaker", self.core.breaker.breaker().name())
            .finish()
    }
}

impl<S, C, R> Service<R> for GenericCircuitBreaker<S, C>
where
    S: Service<R>,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BreakerError<S::Error>;
    type Future = GenericFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.core.poll_ready(cx).map_err(BreakerError::Inner)
    }

    fn call(&mut self, request: R) -> Self::Future {
        GenericFuture {
            call: self.core.call(request),
        }
    }
}

pin_project! {
    /// Future of [`GenericCircuitBreaker`].
    pub struct GenericFuture<F, C> {
        #[pin]
        call: Call<F, C>,
    }
}

impl<F, C, R, E> Future for GenericFuture<F, C>
where
    F: Future<Output = Result<R, E>>,
    C: Classify<R, E>,
{
    type Output = Result<R, BreakerError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().call.poll_into(
            cx,
            |result| result.map_err(BreakerError::Inner),
            |stopped| match stopped {
                Stopped::Refused(refusal) => Err(BreakerError::Open(refusal)),
                Stopped::TimedOut(after) => Err(BreakerError::Timeout(after)),
            },
        )
    }
}
