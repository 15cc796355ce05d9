//! The generic form: a balancer over tower services that come and go through a `Discover`
//! stream, with the same policies, weights and passive health as the HTTP form.
//!
//! Two faults of tower's p2c `Balance` are avoided by construction: the endpoint chosen in
//! `poll_ready` is kept by name, so a removal cannot leave a stale index pointing at another
//! service; and every endpoint that is not ready is polled on each `poll_ready`, so its waker
//! belongs to the balancer and it rejoins as soon as it is ready, not when a request happens
//! to pick it. With every endpoint unavailable, `poll_ready` is pending; besides the stream
//! and the endpoints polled, a timer wakes it when the first ejection ends, since nothing else
//! would.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use proxflow_core::{BoxError, Clock};
use tower::discover::{Change, Discover};
use tower_service::Service;

use crate::backend::{Backend, InFlight};
use crate::handle::LbHandle;
use crate::pool::Pool;

struct Endpoint<S> {
    service: S,
    backend: Arc<Backend>,
}

/// Balances requests over the services of a [`Discover`] stream; made by
/// [`AdaptiveLb::balance`](crate::AdaptiveLb::balance). Endpoints are named by their key's
/// `Debug` form in snapshots.
pub struct Balance<D, Req>
where
    D: Discover,
{
    discover: D,
    pool: Arc<Pool>,
    endpoints: HashMap<Arc<str>, Endpoint<D::Service>>,
    names: HashMap<D::Key, Arc<str>>,
    /// The endpoint `poll_ready` chose, ready for `call`.
    chosen: Option<Arc<str>>,
    /// With nothing available: wakes `poll_ready` when the first ejection ends.
    returns: Option<Pin<Box<tokio::time::Sleep>>>,
    _request: PhantomData<fn(Req)>,
}

impl<D, Req> Balance<D, Req>
where
    D: Discover,
{
    pub(crate) fn new(discover: D, pool: Arc<Pool>) -> Self {
        Balance {
            discover,
            pool,
            endpoints: HashMap::new(),
            names: HashMap::new(),
            chosen: None,
            returns: None,
            _request: PhantomData,
        }
    }

    /// The clock its picks and answers read. Default: the clock of the
    /// [`AdaptiveLb`](crate::AdaptiveLb) it was made from ([`Clock::tsc`] unless set).
    ///
    /// # Panics
    ///
    /// If it serves already (it was polled, or its handle picked).
    pub fn clock(self, clock: Clock) -> Self {
        self.pool
            .settings
            .change("balance(..).clock", |draft| draft.clock = clock);
        self
    }

    /// A handle on the endpoints' figures (adding URLs through it has no effect here: the
    /// endpoints come from the `Discover` stream).
    pub fn handle(&self) -> LbHandle {
        LbHandle::new(Arc::clone(&self.pool))
    }
}

impl<D, Req> Balance<D, Req>
where
    D: Discover + Unpin,
    D::Key: Hash + Eq + Clone + Debug,
    D::Error: Into<BoxError>,
    D::Service: Service<Req>,
{
    /// Applies the changes the stream has ready.
    fn update(&mut self, cx: &mut Context<'_>) -> Result<(), BoxError> {
        while let Poll::Ready(change) = Pin::new(&mut self.discover).poll_discover(cx) {
            match change {
                None => break,
                Some(Err(error)) => return Err(error.into()),
                Some(Ok(Change::Insert(key, service))) => {
                    self.remove(&key);
                    let name: Arc<str> = Arc::from(format!("{key:?}"));
                    self.pool.add_endpoint(Arc::clone(&name));
                    let Some(backend) = self.pool.find(&name) else {
                        continue;
                    };
                    tracing::debug!(endpoint = %name, "endpoint added");
                    self.names.insert(key, Arc::clone(&name));
                    self.endpoints.insert(name, Endpoint { service, backend });
                }
                Some(Ok(Change::Remove(key))) => self.remove(&key),
            }
        }
        Ok(())
    }

    fn remove(&mut self, key: &D::Key) {
        if let Some(name) = self.names.remove(key) {
            self.forget(&name);
        }
    }

    fn forget(&mut self, name: &Arc<str>) {
        self.endpoints.remove(name);
        self.pool.remove(name);
        self.names.retain(|_, n| n != name);
        if self.chosen.as_ref() == Some(name) {
            self.chosen = None;
        }
        tracing::debug!(endpoint = %name, "endpoint removed");
    }

    /// Arms the timer for the end of the first ejection, if an endpoint is ejected. An
    /// ejection ends on the clock alone: no stream change or endpoint readiness would wake a
    /// caller waiting for it.
    fn wake_when_one_returns(&mut self, cx: &mut Context<'_>) {
        let Some(wait) = self.pool.until_one_returns() else {
            self.returns = None;
            return;
        };
        let deadline = tokio::time::Instant::now() + wait;
        let timer = self
            .returns
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().reset(deadline);
        if timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
    }

    /// Polls every endpoint that is not ready; the ready ones take traffic again.
    fn poll_not_ready(&mut self, cx: &mut Context<'_>) {
        let mut failed = Vec::new();
        for (name, endpoint) in &mut self.endpoints {
            if endpoint.backend.is_ready() {
                continue;
            }
            match endpoint.service.poll_ready(cx) {
                Poll::Ready(Ok(())) => endpoint.backend.set_ready(true),
                Poll::Ready(Err(_)) => failed.push(Arc::clone(name)),
                Poll::Pending => {}
            }
        }
        for name in failed {
            self.forget(&name);
        }
    }
}

impl<D, Req> Service<Req> for Balance<D, Req>
where
    D: Discover + Unpin,
    D::Key: Hash + Eq + Clone + Debug,
    D::Error: Into<BoxError>,
    D::Service: Service<Req>,
    <D::Service as Service<Req>>::Error: Into<BoxError>,
{
    type Response = <D::Service as Service<Req>>::Response;
    type Error = BoxError;
    type Future = BalanceFuture<<D::Service as Service<Req>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.update(cx)?;
        self.poll_not_ready(cx);
        let mut tried: Vec<Arc<str>> = Vec::new();
        loop {
            let name = match self.chosen.take() {
                Some(name) => name,
                None => match self.pool.pick(self.pool.now(), None, &tried) {
                    Some(backend) => Arc::clone(&backend.name),
                    // Nothing available: the endpoints polled above and the stream will wake
                    // us, and so will the end of an ejection.
                    None => {
                        self.wake_when_one_returns(cx);
                        return Poll::Pending;
                    }
                },
            };
            let Some(endpoint) = self.endpoints.get_mut(&name) else {
                tried.push(name);
                continue;
            };
            match endpoint.service.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    self.chosen = Some(name);
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => {
                    endpoint.backend.set_ready(false);
                    tried.push(name);
                }
                Poll::Ready(Err(error)) => {
                    let error: BoxError = error.into();
                    tracing::debug!(endpoint = %name, %error, "endpoint failed; removed");
                    self.forget(&name);
                    tried.push(name);
                }
            }
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let endpoint = self
            .chosen
            .take()
            .and_then(|name| self.endpoints.get_mut(&name));
        let Some(endpoint) = endpoint else {
            return BalanceFuture {
                state: State::NotReady,
            };
        };
        let state = State::Running {
            future: endpoint.service.call(request),
            in_flight: Some(InFlight::new(
                Arc::clone(&endpoint.backend),
                endpoint.backend.clock().now(),
            )),
        };
        BalanceFuture { state }
    }
}

pin_project! {
    /// Future of [`Balance`].
    pub struct BalanceFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // `call` without a ready `poll_ready` first.
        NotReady,
        Running {
            #[pin]
            future: F,
            // Dropped with the future before the answer, it counts as a failure.
            in_flight: Option<InFlight>,
        },
    }
}

impl<F, T, E> Future for BalanceFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::NotReady => {
                Poll::Ready(Err("Balance::call without a ready poll_ready".into()))
            }
            StateProj::Running { future, in_flight } => {
                let result = ready!(future.poll(cx));
                if let Some(in_flight) = in_flight.take() {
                    let ended = in_flight.backend().clock().now();
                    in_flight.answered(ended, result.is_err());
                }
                Poll::Ready(result.map_err(Into::into))
            }
        }
    }
}
