//! The keyed form: one breaker per key (by default the request's authority), bounded in
//! number, in one layer.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, HeaderMap, Request, Response, Uri};
use proxflow_core::{Clock, LayerBody};
use tower_service::Service;

use crate::breaker::{Breaker, Holder, OnStateChange};
use crate::classify::Classify;
use crate::future::{Call, Guard};
use crate::machine::{Settings, State};
use crate::service::ResponseFuture;

/// Picks the key of a request; `None` puts it under [`NO_KEY`].
pub(crate) type KeyFn = Arc<dyn Fn(&Uri, &HeaderMap) -> Option<String> + Send + Sync>;

/// The key of requests without one.
pub const NO_KEY: &str = "-";

/// The default key: the authority of the URI (a client's request), else the `Host` header
/// (a server's request).
pub(crate) fn authority(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    if let Some(authority) = uri.authority() {
        return Some(authority.as_str().to_ascii_lowercase());
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    Some(host.to_ascii_lowercase())
}

type Map<C> = HashMap<Arc<str>, Arc<Holder<C>>>;

/// The breakers of a keyed layer. Calls of known keys share a read lock, so that calls on
/// several cores do not queue for the map; a new key takes the write lock.
pub(crate) struct Breakers<C> {
    map: RwLock<Map<C>>,
    max_keys: usize,
    settings: Settings,
    on_change: Option<OnStateChange>,
    classify: C,
    /// What every breaker reads, made coarse once (if at all) so that the breakers share one
    /// hold on the ticker.
    clock: Clock,
}

/// What a [`KeyedBreakerHandle`](crate::KeyedBreakerHandle) asks of the breakers, whatever
/// their classifier.
pub(crate) trait Registry: Send + Sync {
    fn get(&self, key: &str) -> Option<Arc<Breaker>>;
    fn all(&self) -> Vec<Arc<Breaker>>;
}

impl<C: Clone> Breakers<C> {
    pub(crate) fn new(
        max_keys: u64,
        settings: Settings,
        on_change: Option<OnStateChange>,
        classify: C,
        clock: &Clock,
    ) -> Self {
        Breakers {
            map: RwLock::default(),
            max_keys: usize::try_from(max_keys).unwrap_or(usize::MAX),
            clock: Breaker::clock_for(&settings, clock),
            settings,
            on_change,
            classify,
        }
    }

    /// The breaker of `key`, made on first use.
    pub(crate) fn get_or_make(&self, key: &str) -> Arc<Holder<C>> {
        if let Some(breaker) = self.read().get(key) {
            return Arc::clone(breaker);
        }
        let mut map = self.write();
        // Another call may have made it between the two locks.
        if let Some(breaker) = map.get(key) {
            return Arc::clone(breaker);
        }
        if map.len() >= self.max_keys {
            evict(&mut map, self.max_keys);
        }
        let name: Arc<str> = Arc::from(key);
        let breaker = Breaker::new(
            Arc::clone(&name),
            self.settings.clone(),
            self.on_change.clone(),
            &self.clock,
        );
        let holder = Holder::new(Arc::new(breaker), self.classify.clone());
        map.insert(name, Arc::clone(&holder));
        holder
    }
}

impl<C> Breakers<C> {
    fn read(&self) -> RwLockReadGuard<'_, Map<C>> {
        self.map
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Map<C>> {
        self.map
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<C: Send + Sync> Registry for Breakers<C> {
    fn get(&self, key: &str) -> Option<Arc<Breaker>> {
        self.read()
            .get(key)
            .map(|holder| Arc::clone(holder.breaker()))
    }

    fn all(&self) -> Vec<Arc<Breaker>> {
        self.read()
            .values()
            .map(|holder| Arc::clone(holder.breaker()))
            .collect()
    }
}

/// Frees a sixteenth of the room at once: closed breakers no call holds first (they carry
/// nothing a new breaker would not), then closed ones, then any (an open breaker's key starts
/// over closed: documented as the price of the bound).
fn evict<C>(map: &mut Map<C>, max_keys: usize) {
    let wanted = (max_keys / 16).max(1);
    let mut freed = 0;
    // Pass 0: closed and idle; pass 1: closed; pass 2: any.
    for pass in 0..3 {
        map.retain(|_, breaker| {
            let closed = breaker.state() == State::Closed;
            let idle = Arc::strong_count(breaker) == 1;
            let candidate = match pass {
                0 => closed && idle,
                1 => closed,
                _ => true,
            };
            let drop = freed < wanted && candidate;
            freed += usize::from(drop);
            !drop
        });
        if freed >= wanted {
            break;
        }
    }
    tracing::debug!(freed, "circuit breakers evicted: the keyed layer is full");
}

/// The service of a [`KeyedCircuitBreakerLayer`](crate::KeyedCircuitBreakerLayer).
pub struct KeyedCircuitBreaker<S, C> {
    inner: S,
    breakers: Arc<Breakers<C>>,
    timeout: Option<Duration>,
    key: KeyFn,
}

impl<S: Clone, C> Clone for KeyedCircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        KeyedCircuitBreaker {
            inner: self.inner.clone(),
            breakers: Arc::clone(&self.breakers),
            timeout: self.timeout,
            key: Arc::clone(&self.key),
        }
    }
}

impl<S, C> KeyedCircuitBreaker<S, C> {
    pub(crate) fn new(
        inner: S,
        breakers: Arc<Breakers<C>>,
        timeout: Option<Duration>,
        key: KeyFn,
    ) -> Self {
        KeyedCircuitBreaker {
            inner,
            breakers,
            timeout,
            key,
        }
    }

    define_inner_service_accessors!(inner);
}

impl<S: std::fmt::Debug, C> std::fmt::Debug for KeyedCircuitBreaker<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, C, B, ResBody> Service<Request<B>> for KeyedCircuitBreaker<S, C>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    C: Classify<Response<ResBody>, S::Error> + Clone,
{
    type Response = Response<LayerBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let key = (self.key)(request.uri(), request.headers());
        let breaker = self.breakers.get_or_make(key.as_deref().unwrap_or(NO_KEY));
        let leave = Guard::acquire(&breaker);
        ResponseFuture::new(Call::start(leave, &mut self.inner, request, self.timeout))
    }
}
