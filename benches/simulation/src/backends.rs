//! The simulated backends and the client that reaches them: a concurrency limit with a FIFO
//! queue, a latency drawn per request, failures, outages, and the client's timeout when it has
//! one.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::Service;

use crate::scenarios::{OutageKind, Spec};

/// The client's error, and tower's balancers'.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Results of the simulation.
pub type Result<T> = std::result::Result<T, BoxError>;

/// The 1 s timeout: from the send inside the client, or from the scheduled time outside the
/// balancer.
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// Where the 1 s timeout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Placement {
    /// Around the whole balancer call, as `TimeoutLayer` or a caller's deadline: the balancer's
    /// future is dropped after 1 s; the client has no timeout of its own.
    Outside,
    /// In the client: the balancer sees a client error 1 s after its send.
    Inside,
}

impl Placement {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Outside => "outside",
            Placement::Inside => "inside",
        }
    }
}

/// Why the client has no answer.
#[derive(Debug)]
enum ClientError {
    /// None within [`TIMEOUT`].
    TimedOut,
    /// The URI names no backend.
    UnknownBackend,
}

/// A backend that is down refuses the connection: an I/O error of that kind, which
/// proxflow's layer answers 502 (or retries elsewhere when it may).
fn refused() -> BoxError {
    Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientError::TimedOut => "client timeout",
            ClientError::UnknownBackend => "no such backend",
        })
    }
}

impl std::error::Error for ClientError {}

struct Backend {
    pub spec: Spec,
    pub slots: Arc<Semaphore>,
    pub rng: Mutex<fastrand::Rng>,
}

/// The backends of one run, reached through [`SimClient`] or [`SimEndpoint`].
pub struct World {
    start: Instant,
    backends: Vec<Backend>,
    /// The client's own timeout: [`TIMEOUT`] with the timeout inside.
    client_timeout: Option<Duration>,
    /// Requests that reached each backend, per second of the run.
    pub sends: Mutex<Vec<Vec<u32>>>,
}

/// A request in service keeps its backend's slot until its service time is over, even if
/// the client gave up.
struct Hold {
    pub permit: Option<OwnedSemaphorePermit>,
    pub until: Instant,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        if Instant::now() >= self.until {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let until = self.until;
            runtime.spawn(async move {
                tokio::time::sleep_until(until).await;
                drop(permit);
            });
        }
    }
}

impl World {
    /// The scenario's backends, each with its own generator seeded from `seed`, a count of
    /// sends for each of `seconds` seconds from `start`, and a client whose timeout is where
    /// `placement` says.
    pub fn new(
        start: Instant,
        specs: &[Spec],
        seed: u64,
        seconds: usize,
        placement: Placement,
    ) -> World {
        World {
            start,
            client_timeout: (placement == Placement::Inside).then_some(TIMEOUT),
            backends: specs
                .iter()
                .enumerate()
                .map(|(i, spec)| Backend {
                    spec: spec.clone(),
                    slots: Arc::new(Semaphore::new(spec.limit)),
                    rng: Mutex::new(fastrand::Rng::with_seed(
                        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i as u64 + 1),
                    )),
                })
                .collect(),
            sends: Mutex::new(vec![vec![0; seconds]; specs.len()]),
        }
    }

    fn secs(&self) -> f64 {
        Instant::now().duration_since(self.start).as_secs_f64()
    }

    /// When backend `index`, not ready now, is ready again.
    fn ready_at(&self, index: usize) -> Option<Instant> {
        let spec = &self.backends.get(index)?.spec;
        let end = spec.outage_end(self.secs(), OutageKind::NotReady)?;
        Some(self.start + Duration::from_secs_f64(end))
    }

    /// One exchange with backend `index` through the client: its answer, or the client's
    /// error (a refused connection, or its own timeout when it has one).
    async fn exchange(self: Arc<Self>, index: usize) -> Result<Response<String>> {
        if index >= self.backends.len() {
            return Err(Box::new(ClientError::UnknownBackend));
        }
        let Some(timeout) = self.client_timeout else {
            return self.serve(index).await;
        };
        match tokio::time::timeout(timeout, self.serve(index)).await {
            Ok(result) => result,
            Err(_) => Err(Box::new(ClientError::TimedOut)),
        }
    }

    async fn serve(&self, index: usize) -> Result<Response<String>> {
        let backend = &self.backends[index];
        {
            let mut sends = self.sends.lock().unwrap_or_else(|p| p.into_inner());
            let row = &mut sends[index];
            let second = (self.secs() as usize).min(row.len() - 1);
            row[second] += 1;
        }
        if backend.spec.outage_at(self.secs()) == Some(OutageKind::Refused) {
            return Err(refused());
        }
        let fails = backend.spec.fail > 0.0
            && backend.rng.lock().unwrap_or_else(|p| p.into_inner()).f64() < backend.spec.fail;
        if fails {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let mut response = Response::new(String::new());
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return Ok(response);
        }
        let Ok(permit) = Arc::clone(&backend.slots).acquire_owned().await else {
            unreachable!("the semaphore is never closed");
        };
        let began = Instant::now();
        let (lo, hi) = backend.spec.bounds(self.secs());
        let draw = backend.rng.lock().unwrap_or_else(|p| p.into_inner()).f64();
        let until = began + Duration::from_secs_f64((lo + (hi - lo) * draw) / 1000.0);
        let _hold = Hold {
            permit: Some(permit),
            until,
        };
        tokio::time::sleep_until(until).await;
        Ok(Response::new(String::new()))
    }
}

/// The HTTP client of proxflow's balancer: sends to the backend named by the URI
/// (`http://b3:80` is backend 3).
#[derive(Clone)]
pub struct SimClient {
    pub world: Arc<World>,
}

type ExchangeFuture = Pin<Box<dyn Future<Output = Result<Response<String>>> + Send + 'static>>;

impl Service<Request<String>> for SimClient {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = ExchangeFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<String>) -> Self::Future {
        let index = request
            .uri()
            .host()
            .and_then(|host| host.strip_prefix('b'))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        Box::pin(Arc::clone(&self.world).exchange(index))
    }
}

/// One endpoint of a balancer over tower services (tower's, and proxflow's generic form):
/// the same client, bound to one backend. It is not ready while its backend says so.
pub struct SimEndpoint {
    world: Arc<World>,
    index: usize,
    /// Until the backend is ready again: its timer wakes whoever polled.
    not_ready: Option<Pin<Box<Sleep>>>,
}

impl SimEndpoint {
    /// The endpoint of backend `index`.
    pub fn new(world: &Arc<World>, index: usize) -> SimEndpoint {
        SimEndpoint {
            world: Arc::clone(world),
            index,
            not_ready: None,
        }
    }
}

impl Service<Request<String>> for SimEndpoint {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = ExchangeFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.not_ready.is_none() {
            let Some(at) = self.world.ready_at(self.index) else {
                return Poll::Ready(Ok(()));
            };
            self.not_ready = Some(Box::pin(tokio::time::sleep_until(at)));
        }
        if let Some(sleep) = &mut self.not_ready {
            std::task::ready!(sleep.as_mut().poll(cx));
        }
        self.not_ready = None;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<String>) -> Self::Future {
        Box::pin(Arc::clone(&self.world).exchange(self.index))
    }
}
