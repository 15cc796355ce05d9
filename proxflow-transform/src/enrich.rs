//! Enrichment: static `data` and the JSON object a URL answers, merged into a JSON body at a
//! target path, after the body rules.
//!
//! The URL is fetched for each enriched body through a client service of the user's (hyper's
//! `Client`, or any Tower service taking `Request<Full<Bytes>>`), within a timeout, its answer
//! read up to 1 MiB. The target must be an object (one is made if the path is missing); the
//! merge is shallow and the later wins: the body's own members, then `data`, then the URL's
//! answer. When the URL cannot give an object (an error, a timeout, a status other than 2xx,
//! an answer that is not a JSON object), [`OnFailure`] says what happens.

use std::time::Duration;

use http::Uri;
use serde_json::{Map, Value};

use crate::client::Client;
use crate::patch::get_mut;
use crate::pointer::Path;

/// What an enrichment does when its URL gives nothing to merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Merges `data` alone and goes on. The default.
    #[default]
    Skip,
    /// Answers 502 (a request is not sent on; a response is replaced).
    BadGateway,
}

/// One enrichment.
#[derive(Clone)]
pub struct Enrichment {
    data: Map<String, Value>,
    from_url: Option<(Uri, Client)>,
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
    pub fn from_url(mut self, url: Uri, client: Client) -> Self {
        self.from_url = Some((url, client));
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
            Some((url, client)) => match self.fetch(url, client).await {
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

    async fn fetch(&self, url: &Uri, client: &Client) -> Result<Map<String, Value>, String> {
        let bytes = client.get(url, self.timeout).await?;
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
