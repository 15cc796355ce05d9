//! [`CacheLayer`]: the builder, and what every service it makes shares.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proxflow_core::{Clock, ConfigError};
use tower_layer::Layer;

use crate::config::{CacheConfig, WebhookAuth};
use crate::service::{Cache, Shared};
use crate::stats::{CacheStats, Counters};

/// A shared HTTP cache (RFC 9111) in front of a service.
///
/// Every service the layer makes shares one store: the layer is cheap to clone, and its
/// clones share it too. Builder methods state their defaults, which are those of
/// [`CacheConfig`]. The store is made by the first [`layer`](Layer::layer) call, with the
/// settings then: a builder call after it panics (as the balancer's and the breaker's do),
/// and a [`stats`](Self::stats) handle taken before the builder calls watches the cache they
/// configure.
#[derive(Clone)]
pub struct CacheLayer {
    config: CacheConfig,
    clock: Clock,
    counters: Arc<Counters>,
    shared: Arc<OnceLock<Arc<Shared>>>,
}

impl CacheLayer {
    /// A cache with the defaults: heuristic freshness 5 min, 100 MB, bodies up to 8 MiB.
    pub fn new() -> Self {
        CacheLayer {
            config: CacheConfig::default(),
            clock: Clock::default(),
            counters: Arc::default(),
            shared: Arc::default(),
        }
    }

    /// A cache from a validated configuration; the error names the field.
    pub fn from_config(config: &CacheConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(CacheLayer {
            config: config.clone(),
            ..CacheLayer::new()
        })
    }

    /// The heuristic freshness lifetime (see [`CacheConfig::ttl`]); zero turns it off.
    /// Default 5 min.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.unfixed("ttl");
        self.config.ttl = ttl;
        self
    }

    /// Megabytes of stored responses. Default 100.
    ///
    /// # Panics
    ///
    /// If `megabytes` is 0.
    pub fn max_size(mut self, megabytes: u64) -> Self {
        assert!(megabytes > 0, "CacheLayer::max_size: at least 1 megabyte");
        self.unfixed("max_size");
        self.config.max_size = megabytes;
        self
    }

    /// The largest body stored, in bytes; larger ones stream through. Default 8 MiB.
    ///
    /// # Panics
    ///
    /// If `bytes` is 0.
    pub fn max_object_size(mut self, bytes: u64) -> Self {
        assert!(bytes > 0, "CacheLayer::max_object_size: at least 1 byte");
        self.unfixed("max_object_size");
        self.config.max_object_size = bytes;
        self
    }

    /// Turns predictive warming on or off (see [`CacheConfig::predictive_warming`]). Default
    /// off.
    pub fn predictive_warming(mut self, on: bool) -> Self {
        self.unfixed("predictive_warming");
        self.config.predictive_warming = on;
        self
    }

    /// How long the origin has to answer (see [`CacheConfig::origin_timeout`]). Default 60 s.
    ///
    /// # Panics
    ///
    /// If `timeout` is zero.
    pub fn origin_timeout(mut self, timeout: Duration) -> Self {
        assert!(
            !timeout.is_zero(),
            "CacheLayer::origin_timeout: more than 0"
        );
        self.unfixed("origin_timeout");
        self.config.origin_timeout = timeout;
        self
    }

    /// How long a request waits for another's origin request for its key (see
    /// [`CacheConfig::coalesce_wait`]); zero turns coalescing off. Default 5 s.
    pub fn coalesce_wait(mut self, wait: Duration) -> Self {
        self.unfixed("coalesce_wait");
        self.config.coalesce_wait = wait;
        self
    }

    /// Answers `POST <path>` as the invalidation webhook (see [`crate::webhook`]),
    /// authenticated by `auth`. Default: no webhook.
    ///
    /// # Panics
    ///
    /// If `path` does not start with `/`, or a token or secret is shorter than 16 characters.
    pub fn webhook(mut self, path: impl Into<String>, auth: WebhookAuth) -> Self {
        self.unfixed("webhook");
        self.config.webhook_path = Some(path.into());
        self.config.webhook_auth = Some(auth);
        if let Err(error) = self.config.validate() {
            panic!("CacheLayer::webhook: {error}");
        }
        self
    }

    /// Shares invalidations with the other instances through Redis (see the module `sync`;
    /// feature `redis`). Default: none. The subscription starts with the first request.
    ///
    /// # Panics
    ///
    /// If the configuration is invalid (an address that is a cluster, a Sentinel, or not an
    /// address), or the crate is built without the `redis` feature.
    pub fn distributed_sync(mut self, sync: crate::DistributedSyncConfig) -> Self {
        self.unfixed("distributed_sync");
        self.config.distributed_sync = Some(sync);
        if let Err(error) = self.config.validate() {
            panic!("CacheLayer::distributed_sync: {error}");
        }
        self
    }

    /// The clock ages and freshness are counted on: the TSC by default; tests on tokio's
    /// paused time pass [`Clock::tokio`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.unfixed("clock");
        self.clock = clock;
        self
    }

    /// The cache's figures; taken before the first service is made, it watches the cache
    /// that service uses.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            counters: Arc::clone(&self.counters),
            shared: Arc::clone(&self.shared),
        }
    }

    /// # Panics
    ///
    /// If a service was made already: the store exists with the settings of then.
    fn unfixed(&self, method: &str) {
        assert!(
            self.shared.get().is_none(),
            "CacheLayer::{method}: a service was made already; configure the layer before"
        );
    }

    fn shared(&self) -> &Arc<Shared> {
        self.shared.get_or_init(|| {
            let counters = Arc::clone(&self.counters);
            Arc::new(Shared::new(&self.config, self.clock.clone(), counters))
        })
    }
}

impl Default for CacheLayer {
    fn default() -> Self {
        CacheLayer::new()
    }
}

impl std::fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Cache<S> {
        Cache::new(inner, Arc::clone(self.shared()))
    }
}
