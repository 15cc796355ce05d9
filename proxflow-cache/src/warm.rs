//! Predictive warming wired to the layer: [`Warming`] decides, this module tells it what
//! happens and makes the requests it asks for, in the background, at most
//! [`MAX_FETCHES`] at a time.
//!
//! Each GET the cache could answer is reported with its client (a hash of the peer address);
//! each response stored from the origin with its expiry; each removal. The prefetches a
//! request makes worth it, and the refreshes that come due, replay the request last seen for
//! their key, without its credentials (`Authorization`, `Cookie`) and conditionals: a response
//! that needs them is not one a shared cache keeps for everyone anyway.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap};
use http::{Request, Uri, Version};
use moka::sync::Cache;
use tokio::sync::Semaphore;

use crate::store::WallClock;
use crate::warming::{Warming, WarmingConfig, WarmingStats};

/// The most background fetches (refreshes and prefetches) in flight at once.
pub(crate) const MAX_FETCHES: usize = 8;

/// How long the refresher sleeps at most between two looks at what is due.
pub(crate) const MAX_IDLE: Duration = Duration::from_secs(1);

/// A request as warming replays it.
#[derive(Debug)]
pub(crate) struct Replay {
    pub(crate) key: Arc<str>,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    /// A request for the same resource as `request`, without its credentials, conditionals
    /// and range.
    fn of<B>(key: Arc<str>, request: &Request<B>) -> Replay {
        let mut headers = request.headers().clone();
        for name in [
            header::AUTHORIZATION,
            header::PROXY_AUTHORIZATION,
            header::COOKIE,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_MATCH,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
            header::RANGE,
            header::CACHE_CONTROL,
            header::PRAGMA,
        ] {
            headers.remove(name);
        }
        Replay {
            key,
            uri: request.uri().clone(),
            version: request.version(),
            headers,
        }
    }

    /// The request to send, with a body of its type.
    pub(crate) fn request<B: Default>(&self) -> Request<B> {
        let mut request = Request::new(B::default());
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Warming's state in the layer.
pub(crate) struct Warmer {
    warming: Mutex<Warming>,
    /// The latest request of each tracked key, by its hash.
    replays: Cache<u64, Arc<Replay>>,
    start: SystemTime,
    pub(crate) fetches: Arc<Semaphore>,
    /// Set once a service has started the refresher.
    pub(crate) refresher_started: std::sync::atomic::AtomicBool,
}

impl Warmer {
    pub(crate) fn new(config: WarmingConfig, wall: &WallClock) -> Warmer {
        let keys = config.max_keys as u64;
        Warmer {
            warming: Mutex::new(Warming::new(config)),
            replays: Cache::new(keys),
            start: wall.now(),
            fetches: Arc::new(Semaphore::new(MAX_FETCHES)),
            refresher_started: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Warming> {
        self.warming.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Warming's time: since the layer's warming started.
    pub(crate) fn since_start(&self, now: SystemTime) -> Duration {
        now.duration_since(self.start).unwrap_or(Duration::ZERO)
    }

    /// A GET for `key`: remembered for replays; the keys worth prefetching now.
    pub(crate) fn requested<B>(
        &self,
        key: &Arc<str>,
        request: &Request<B>,
        now: SystemTime,
    ) -> Vec<Arc<Replay>> {
        let key_hash = hash(key);
        self.replays
            .insert(key_hash, Arc::new(Replay::of(Arc::clone(key), request)));
        let client = proxflow_core::client::peer_addr(request.extensions())
            .map_or(0, |peer| hash(&peer.ip()));
        let prefetch = self
            .lock()
            .on_request(key_hash, client, self.since_start(now));
        self.replays_of(prefetch)
    }

    /// The requests to replay for `keys`; warming forgets the fetch of a key whose request
    /// is no longer known.
    fn replays_of(&self, keys: Vec<u64>) -> Vec<Arc<Replay>> {
        keys.into_iter()
            .filter_map(|key| {
                let replay = self.replays.get(&key);
                if replay.is_none() {
                    self.lock().on_fetch_failed(key);
                }
                replay
            })
            .collect()
    }

    /// A response stored for `key` from the origin, fresh until `expires`.
    pub(crate) fn stored(&self, key: &str, now: SystemTime, expires: SystemTime) {
        let (now, expires) = (self.since_start(now), self.since_start(expires));
        self.lock().on_stored(hash(&key), now, expires);
    }

    /// A fetch warming asked for gave nothing stored.
    pub(crate) fn failed(&self, key: &str) {
        self.lock().on_fetch_failed(hash(&key));
    }

    /// `key`'s entry left the store.
    pub(crate) fn removed(&self, key: &str) {
        self.lock().on_removed(hash(&key));
    }

    /// When to look again for due refreshes.
    pub(crate) fn next_due(&self) -> Option<Duration> {
        self.lock().next_due()
    }

    /// The refreshes due at `now`, at most `max`, as the requests to replay.
    pub(crate) fn due(&self, now: SystemTime, max: usize) -> Vec<Arc<Replay>> {
        let due = self.lock().due_refreshes(self.since_start(now), max);
        self.replays_of(due)
    }

    pub(crate) fn stats(&self) -> WarmingStats {
        self.lock().stats()
    }
}

/// The hash warming knows a key or a client by.
fn hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}
