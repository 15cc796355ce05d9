//! The client services enrichment and aggregation fetch through, their type erased so that
//! the layer stays one type whatever client the user gives.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use proxflow_core::BoxError;
use tower_service::Service;

/// The most bytes of a URL's answer read.
const MAX_ANSWER: usize = 1 << 20;

type FetchFuture = Pin<Box<dyn Future<Output = Result<Bytes, BoxError>> + Send>>;

/// A client, its type erased: fetches a URL's body.
pub(crate) trait Fetch: Send + Sync {
    fn fetch(&self, uri: Uri) -> FetchFuture;
}

struct ClientFetch<C> {
    client: C,
}

impl<C, B> Fetch for ClientFetch<C>
where
    C: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn fetch(&self, uri: Uri) -> FetchFuture {
        let mut client = self.client.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| client.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            let mut request = Request::new(Full::default());
            *request.uri_mut() = uri;
            let response = client.call(request).await.map_err(Into::into)?;
            if !response.status().is_success() {
                return Err(format!("status {}", response.status()).into());
            }
            let body = Limited::new(response.into_body(), MAX_ANSWER);
            Ok(body.collect().await?.to_bytes())
        })
    }
}

/// The client that enrichment and aggregation fetch through: any Tower service taking
/// `Request<Full<Bytes>>` (hyper-util's `Client`, a balancer over it, a test double), its type
/// erased. GET only; an answer is read up to 1 MiB.
#[derive(Clone)]
pub struct Client {
    fetch: Arc<dyn Fetch>,
}

impl Client {
    /// Wraps a client service.
    pub fn new<C, B>(client: C) -> Client
    where
        C: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
        C::Future: Send + 'static,
        C::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Client {
            fetch: Arc::new(ClientFetch { client }),
        }
    }

    /// The body `url` answers with a 2xx within `timeout`, or why not.
    pub(crate) async fn get(&self, url: &Uri, timeout: Duration) -> Result<Bytes, String> {
        tokio::time::timeout(timeout, self.fetch.fetch(url.clone()))
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
            .map_err(|error| error.to_string())
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}
