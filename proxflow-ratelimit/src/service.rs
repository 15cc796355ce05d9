//! The service: asks the shared state for a decision per request, then passes the request on,
//! holds it, or answers for the inner service.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use proxflow_core::client::peer_addr;
use proxflow_core::LayerBody;
use tokio::time::Sleep;
use tower_service::Service;

use crate::headers::LimitFields;
use crate::key::{KeyHash, RequestView};
use crate::shared::{Answer, Decision, Shared};

/// The service of a [`RateLimitLayer`](crate::RateLimitLayer).
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    /// The `ip` key of `peer`, hashed once for the connection.
    peer_key: Option<KeyHash>,
}

impl<S> RateLimit<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        RateLimit {
            inner,
            shared,
            peer: None,
            peer_key: None,
        }
    }

    /// The service of one connection, told its client's address: the `ip` key counts requests
    /// that carry no address of their own ([`ClientAddr`](crate::ClientAddr) or axum's
    /// `ConnectInfo` in the extensions) under `peer`. For hyper servers, which make a service
    /// per connection: tagging each request instead costs three allocations per request.
    /// Default: no peer (then an `ip` layer needs each request to carry its address; see
    /// [`Key::Ip`](crate::Key::Ip)).
    pub fn with_peer(mut self, peer: SocketAddr) -> Self {
        self.peer = Some(peer);
        self.peer_key = self.shared.rules.connection_key(peer);
        self
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Takes the inner service out.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("key", &self.shared.rules.kind)
            .field("peer", &self.peer)
            .finish()
    }
}

impl<S, B, ResBody> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<LayerBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let view = RequestView {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
            peer: self.peer,
        };
        let known = self
            .peer_key
            .filter(|_| peer_addr(request.extensions()).is_none());
        let state = match self.shared.decide(&view, known) {
            Decision::Pass(fields) => State::Inner {
                future: self.inner.call(request),
                fields,
            },
            Decision::Hold { wait, fields } => State::Waiting {
                held: Box::pin(Held {
                    sleep: tokio::time::sleep(Duration::from_nanos(wait)),
                    service: self.inner.clone(),
                    request: Some(request),
                    fields,
                }),
            },
            Decision::Answer(answer) => State::Answered {
                answer: Some(answer),
            },
            #[cfg(feature = "redis")]
            Decision::Remote(check) => State::Deciding {
                pending: Box::new(Pending {
                    decision: Box::pin(Shared::decide_remote(Arc::clone(&self.shared), check)),
                    service: Some(self.inner.clone()),
                    request: Some(request),
                    passed: None,
                }),
            },
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// Future of [`RateLimit`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Answered { answer: Option<Answer> },
        // Redis's decision, awaited (the Redis mode only). Boxed, as `Waiting` is.
        Deciding { pending: Box<Pending<S, B>> },
        // Boxed so that the future of an admitted request stays small (a `Sleep` and a
        // `Request` are hundreds of bytes, moved on the way to the server). The refusal is
        // small and not boxed: a flood of them is the path a limiter exists for.
        Waiting { held: Pin<Box<Held<S, B>>> },
        // The fields are made when the request is decided, so that the future holds no
        // reference to the layer. They sit beside the inner future (one pointer's worth): the
        // future of an admitted request is moved by a call to `memcpy` once it passes 128 bytes.
        Inner { #[pin] future: S::Future, fields: Option<LimitFields> },
    }
}

pin_project! {
    /// A request held until its turn.
    struct Held<S, B> {
        #[pin]
        sleep: Sleep,
        service: S,
        request: Option<Request<B>>,
        fields: Option<LimitFields>,
    }
}

/// A request waiting for Redis's decision.
#[cfg(feature = "redis")]
struct Pending<S, B> {
    decision: Pin<Box<dyn Future<Output = Decision> + Send>>,
    service: Option<S>,
    request: Option<Request<B>>,
    /// Admitted, waiting for the service to be ready: the fields to add.
    passed: Option<Option<LimitFields>>,
}

/// Without the Redis mode no request waits for a decision.
#[cfg(not(feature = "redis"))]
struct Pending<S, B> {
    never: std::convert::Infallible,
    _types: std::marker::PhantomData<fn() -> (S, B)>,
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<LayerBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Answered { answer } => {
                    let answer = answer.take().expect("polled after completion");
                    return Poll::Ready(Ok(answer.into_response()));
                }
                #[cfg(not(feature = "redis"))]
                StateProj::Deciding { pending } => match pending.never {},
                #[cfg(feature = "redis")]
                StateProj::Deciding { pending } => {
                    let fields = match pending.passed.take() {
                        Some(fields) => fields,
                        None => match std::task::ready!(pending.decision.as_mut().poll(cx)) {
                            Decision::Pass(fields) => fields,
                            Decision::Hold { wait, fields } => {
                                let held = Held {
                                    sleep: tokio::time::sleep(Duration::from_nanos(wait)),
                                    service: pending.service.take().expect("taken once"),
                                    request: pending.request.take(),
                                    fields,
                                };
                                state.set(State::Waiting {
                                    held: Box::pin(held),
                                });
                                continue;
                            }
                            Decision::Answer(answer) => {
                                state.set(State::Answered {
                                    answer: Some(answer),
                                });
                                continue;
                            }
                            Decision::Remote(_) => unreachable!("Redis's decision is final"),
                        },
                    };
                    let service = pending.service.as_mut().expect("taken once");
                    match service.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                        Poll::Pending => {
                            pending.passed = Some(fields);
                            return Poll::Pending;
                        }
                    }
                    let request = pending.request.take().expect("called once");
                    let future = service.call(request);
                    state.set(State::Inner { future, fields });
                }
                StateProj::Waiting { held } => {
                    let held = held.as_mut().project();
                    std::task::ready!(held.sleep.poll(cx));
                    std::task::ready!(held.service.poll_ready(cx))?;
                    let Some(request) = held.request.take() else {
                        unreachable!("called once")
                    };
                    let future = held.service.call(request);
                    let fields = held.fields.take();
                    state.set(State::Inner { future, fields });
                }
                StateProj::Inner { future, fields } => {
                    let mut response = std::task::ready!(future.poll(cx))?;
                    if let Some(fields) = fields.take() {
                        fields.add_to(response.headers_mut());
                    }
                    return Poll::Ready(Ok(response.map(LayerBody::inner)));
                }
            }
        }
    }
}
