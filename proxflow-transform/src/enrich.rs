//! Enrichment: static `data` and the JSON object a URL answers, merged into a JSON body at a
//! target path, after the body rules.
//!
//! The URL is fetched for each enriched body through a client service of the user's (hyper's
//! `Client`, or any Tower service taking `Request<Full<Bytes>>`), within a timeout, its answer
//! read up to 1 MiB. The target must be an object (one is made if the path is missing); the
//! merge is shallow and the later wins: the body's own members, then `data`, then the URL's
//! answer. When the URL cannot give an object (an error, a timeout, a status other than 2xx,
//! an answer that is not a JSON object), [`OnFailure`] says what happens.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::Uri;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::client::Client;
use crate::patch::get_mut;
use crate::pointer::Path;

/// What an enrichment does when its URL gives nothing to merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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
    kept: Option<Arc<KeptAnswer>>,
}

/// An object a URL answered.
type Answer = Arc<Map<String, Value>>;

/// The URL's last answer, kept for a while so that each body does not cost a call.
struct KeptAnswer {
    ttl: Duration,
    answer: Mutex<Option<(Instant, Answer)>>,
}

impl KeptAnswer {
    fn get(&self) -> Option<Answer> {
        let answer = self.answer.lock().unwrap_or_else(PoisonError::into_inner);
        answer
            .as_ref()
            .filter(|(fetched, _)| fetched.elapsed() < self.ttl)
            .map(|(_, object)| Arc::clone(object))
    }

    fn keep(&self, object: Answer) {
        let mut answer = self.answer.lock().unwrap_or_else(PoisonError::into_inner);
        *answer = Some((Instant::now(), object));
    }
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
            kept: None,
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

    /// Keeps the URL's answer for `ttl` (a failure is not kept: the next body tries again).
    /// Default: each body fetches it.
    ///
    /// The URL is the same for every body, so one answer is all there is to keep. The time
    /// is tokio's, so a paused clock in tests moves it.
    pub fn keep_answer_for(mut self, ttl: Duration) -> Self {
        self.kept = Some(Arc::new(KeptAnswer {
            ttl,
            answer: Mutex::new(None),
        }));
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
        let fetched = fetched.iter().flat_map(|object| object.iter());
        for (key, value) in self.data.iter().chain(fetched) {
            target.insert(key.clone(), value.clone());
        }
        Ok(())
    }

    async fn fetch(&self, url: &Uri, client: &Client) -> Result<Answer, String> {
        if let Some(object) = self.kept.as_ref().and_then(|kept| kept.get()) {
            return Ok(object);
        }
        let bytes = client.get(url, self.timeout).await?;
        let object = match serde_json::from_slice(&bytes) {
            Ok(Value::Object(object)) => Arc::new(object),
            Ok(_) => return Err("the answer is not a JSON object".into()),
            Err(error) => return Err(format!("the answer is not JSON: {error}")),
        };
        if let Some(kept) = &self.kept {
            kept.keep(Arc::clone(&object));
        }
        Ok(object)
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
            .field("keep_answer_for", &self.kept.as_ref().map(|kept| kept.ttl))
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
