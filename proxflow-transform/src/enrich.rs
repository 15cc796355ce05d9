//! Enrichment: static `data` and the JSON object a URL answers, merged into a JSON body at a
//! target path, after the body rules.
//!
//! The URL is fetched for each enriched body through a client service of the user's (hyper's
//! `Client`, or any Tower service taking `Request<Full<Bytes>>`), within a timeout, its answer
//! read up to 1 MiB. The target must be an object (one is made if the path is missing); the
//! merge is shallow and the later wins: the body's own members, then `data`, then the URL's
//! answer. When the URL cannot give an object (an error, a timeout, a status other than 2xx,
//! an answer that is not a JSON object), [`OnFailure`] says what happens.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use proxflow_core::BoxError;
use serde_json::{Map, Value};
use tower_service::Service;

use crate::patch::get_mut;
use crate::pointer::Path;

/// The most bytes of a URL's answer read.
const MAX_ANSWER: usize = 1 << 20;

/// What an enrichment does when its URL gives nothing to merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Merges `data` alone and goes on. The default.
    #[default]
    Skip,
    /// Answers 502 (a request is not sent on; a response is replaced).
    BadGateway,
}

type FetchFuture = Pin<Box<dyn Future<Output = Result<Bytes, BoxError>> + Send>>;

/// A client, its type erased: fetches a URL's body.
trait Fetch: Send + Sync {
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

/// One enrichment.
#[derive(Clone)]
pub struct Enrichment {
    data: Map<String, Value>,
    from_url: Option<(Uri, Arc<dyn Fetch>)>,
    target: Path,
    timeout: Duration,
    on_failure: OnFailure,
}

/// Why an enrichment could not merge its URL's answer.
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    /// The target exists and is not an object.
    #[error("the target {0} is not an object")]
    TargetNotAnObject(String),
    /// The URL failed, timed out, or did not answer a JSON object.
    #[error("{url}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl Enrichment {
    /// Static `data` merged at the top of the body; no URL; a 2 s timeout and
    /// [`OnFailure::Skip`] for when one is set.
    pub fn new(data: Map<String, Value>) -> Self {
        Enrichment {
            data,
            from_url: None,
            target: Path::root(),
            timeout: Duration::from_secs(2),
            on_failure: OnFailure::Skip,
        }
    }

    /// Also merges the JSON object `url` answers, fetched through `client`.
    pub fn from_url<C, B>(mut self, url: Uri, client: C) -> Self
    where
        C: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
        C::Future: Send + 'static,
        C::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.from_url = Some((url, Arc::new(ClientFetch { client })));
        self
    }

    /// Where in the body the merge goes. Default: the top.
    pub fn target(mut self, target: Path) -> Self {
        self.target = target;
        self
    }

    /// How long the URL has to answer. Default 2 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to do when the URL gives nothing. Default [`OnFailure::Skip`].
    pub fn on_failure(mut self, on_failure: OnFailure) -> Self {
        self.on_failure = on_failure;
        self
    }

    /// Merges into `body`; the URL's failure is an error only with [`OnFailure::BadGateway`].
    pub(crate) async fn apply(&self, body: &mut Value) -> Result<(), EnrichError> {
        let fetched = match &self.from_url {
            None => None,
            Some((url, fetch)) => match self.fetch(url, fetch.as_ref()).await {
                Ok(object) => Some(object),
                Err(reason) if self.on_failure == OnFailure::BadGateway => {
                    return Err(EnrichError::Url {
                        url: url.to_string(),
                        reason,
                    });
                }
                Err(reason) => {
                    tracing::warn!(%url, %reason, "enrichment skipped its URL");
                    None
                }
            },
        };
        let target = target_object(body, &self.target)
            .ok_or_else(|| EnrichError::TargetNotAnObject(self.target.to_string()))?;
        for (key, value) in self.data.iter().chain(fetched.iter().flatten()) {
            target.insert(key.clone(), value.clone());
        }
        Ok(())
    }

    async fn fetch(&self, url: &Uri, fetch: &dyn Fetch) -> Result<Map<String, Value>, String> {
        let bytes = tokio::time::timeout(self.timeout, fetch.fetch(url.clone()))
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
            .map_err(|error| error.to_string())?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(object)) => Ok(object),
            Ok(_) => Err("the answer is not a JSON object".into()),
            Err(error) => Err(format!("the answer is not JSON: {error}")),
        }
    }
}

impl std::fmt::Debug for Enrichment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrichment")
            .field("data", &self.data)
            .field("from_url", &self.from_url.as_ref().map(|(url, _)| url))
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .field("on_failure", &self.on_failure)
            .finish()
    }
}

/// The object at `path`, made (with its parents) if missing; `None` if something else is
/// there.
fn target_object<'a>(body: &'a mut Value, path: &Path) -> Option<&'a mut Map<String, Value>> {
    if get_mut(body, path.tokens()).is_none() {
        let mut at: &mut Value = body;
        for token in path.tokens() {
            let Value::Object(map) = at else {
                return None;
            };
            at = map
                .entry(token.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    match get_mut(body, path.tokens())? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}
