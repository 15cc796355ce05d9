//! The serde configuration, with the origin's names and defaults, and the rules every value
//! must meet (the builder's and `from_config`'s alike).

use std::time::Duration;

use proxflow_core::redis::{Fields, RedisConfig};
use proxflow_core::ConfigError;
use serde::{Deserialize, Serialize};

/// Everything a [`CacheLayer`](crate::CacheLayer) can be told, as read from JSON, YAML or
/// TOML. `{}` is valid and gives the defaults.
///
/// The names and the first four fields are the origin's, a Caddy directive:
///
/// ```text
/// cache { ttl 10m  max_size 100  predictive_warming  webhook_path /cache/invalidate }
/// ```
///
/// ```
/// use proxflow_cache::CacheConfig;
///
/// let config: CacheConfig = serde_yaml::from_str("{ttl: 10m, max_size: 100}")?;
/// assert_eq!(config.ttl, std::time::Duration::from_secs(600));
/// # Ok::<(), serde_yaml::Error>(())
/// ```
///
/// Unknown fields are refused, so that a misspelt one is not silently ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// The freshness lifetime of a storable response without explicit freshness (no
    /// `s-maxage`, `max-age` or `Expires`) whose status allows heuristic freshness (RFC 9111
    /// §4.2.2: 200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501) or that is `public`.
    /// `0s` turns heuristic freshness off. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Megabytes (10^6 bytes) of stored responses: bodies, headers, keys and a fixed
    /// per-entry overhead of 1200 bytes for the store's own structures, so that the figure
    /// bounds the memory the cache takes. Default 100.
    pub max_size: u64,
    /// The largest body stored, in bytes; a larger one streams through and is not stored,
    /// however it arrives. Default 8 MiB (8388608).
    pub max_object_size: u64,
    /// How long the origin has to answer (the response head; the body then streams at its
    /// own pace). Past it the answer is stale (`stale-if-error`) or a 504. Default 60 s, as
    /// nginx's `proxy_read_timeout`.
    #[serde(with = "humantime_serde")]
    pub origin_timeout: Duration,
    /// How long a request waits for another request's answer from the origin for the same
    /// key (request coalescing) before it goes to the origin itself; `0s` turns coalescing
    /// off. Default 5 s, as nginx's `proxy_cache_lock_timeout`.
    #[serde(with = "humantime_serde")]
    pub coalesce_wait: Duration,
    /// Refresh ahead of expiry the entries likely to be requested again, and prefetch what
    /// tends to follow a request, in the background (see [`crate::warming`] for the rule and
    /// its defaults). Default off.
    pub predictive_warming: bool,
    /// The path of the invalidation webhook (`POST` only; see [`crate::webhook`]). Default
    /// none: no webhook.
    pub webhook_path: Option<String>,
    /// How webhook calls prove who they are; required with `webhook_path`, so that turning
    /// authentication off is a choice written down (`none`).
    pub webhook_auth: Option<WebhookAuth>,
    /// Invalidations shared with the other instances through Redis (feature `redis`).
    /// Default: none, each instance on its own.
    pub distributed_sync: Option<DistributedSyncConfig>,
}

/// The names of the `redis` section's fields in this configuration.
pub(crate) const REDIS_FIELDS: Fields = Fields {
    address: "distributed_sync.redis.address",
    db: "distributed_sync.redis.db",
};

/// `distributed_sync`: the Redis server the instances share invalidations through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedSyncConfig {
    /// The server: `{address, password, db}`.
    pub redis: RedisConfig,
    /// How often the subscription is checked (a `PING`), and how long Redis has to answer:
    /// a lost subscription is noticed within twice this. Default 1s.
    #[serde(
        default = "DistributedSyncConfig::default_interval",
        with = "humantime_serde"
    )]
    pub sync_interval: Duration,
    /// The channel. Default `proxflow:cache:invalidations`; instances that share one Redis
    /// for separate caches each take their own.
    #[serde(default = "DistributedSyncConfig::default_channel")]
    pub channel: String,
    /// A second level of stored responses in the same Redis, shared by the instances: a miss
    /// on one can be a hit from another. Default: none.
    #[serde(default)]
    pub shared_store: Option<SharedStoreConfig>,
}

/// `distributed_sync.shared_store`: the second level in Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharedStoreConfig {
    /// The largest value written (all the variants of a URI, encoded). Default 1 MiB.
    pub max_object_size: u64,
    /// The longest a value lives, whatever its freshness. Default 1h.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// How long a read may wait for Redis before it counts as a miss. Default 50ms.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for SharedStoreConfig {
    fn default() -> Self {
        SharedStoreConfig {
            max_object_size: 1 << 20,
            max_ttl: Duration::from_secs(3600),
            timeout: Duration::from_millis(50),
        }
    }
}

impl DistributedSyncConfig {
    /// Through the server `redis`, checked every second, on the default channel.
    pub fn new(redis: RedisConfig) -> Self {
        DistributedSyncConfig {
            redis,
            sync_interval: Self::default_interval(),
            channel: Self::default_channel(),
            shared_store: None,
        }
    }

    fn default_interval() -> Duration {
        Duration::from_secs(1)
    }

    fn default_channel() -> String {
        "proxflow:cache:invalidations".into()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !cfg!(feature = "redis") {
            return Err(ConfigError::new(
                "distributed_sync",
                "needs proxflow-cache's `redis` feature",
            ));
        }
        self.redis.check(REDIS_FIELDS)?;
        #[cfg(feature = "redis")]
        redis::Client::open(self.redis.connection_info(REDIS_FIELDS)?)
            .map_err(|e| ConfigError::new(REDIS_FIELDS.address, e.to_string()))?;
        if self.sync_interval < Duration::from_millis(10) {
            return Err(ConfigError::new(
                "distributed_sync.sync_interval",
                "at least 10ms, e.g. 1s",
            ));
        }
        if self.channel.is_empty() {
            return Err(ConfigError::new("distributed_sync.channel", "not empty"));
        }
        if let Some(store) = &self.shared_store {
            let field = "distributed_sync.shared_store";
            if store.max_object_size == 0 || store.max_ttl.is_zero() || store.timeout.is_zero() {
                return Err(ConfigError::new(
                    field,
                    "max_object_size, max_ttl and timeout above 0",
                ));
            }
        }
        Ok(())
    }
}

/// How webhook calls authenticate: `{bearer: "<token>"}`, `{hmac_sha256: "<secret>"}` or
/// `none`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AuthFields", into = "AuthFields")]
pub enum WebhookAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `X-Proxflow-Signature: sha256=<hex>`: the HMAC-SHA256 of the body with this secret.
    HmacSha256(String),
    /// No authentication: anyone who reaches the path can invalidate.
    None,
}

/// [`WebhookAuth`] as files write it: the word `none`, or a map of one method.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum AuthFields {
    Name(String),
    Method {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bearer: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hmac_sha256: Option<String>,
    },
}

impl TryFrom<AuthFields> for WebhookAuth {
    type Error = String;

    fn try_from(fields: AuthFields) -> Result<Self, String> {
        match fields {
            AuthFields::Name(name) if name == "none" => Ok(WebhookAuth::None),
            AuthFields::Method {
                bearer: Some(token),
                hmac_sha256: None,
            } => Ok(WebhookAuth::Bearer(token)),
            AuthFields::Method {
                bearer: None,
                hmac_sha256: Some(secret),
            } => Ok(WebhookAuth::HmacSha256(secret)),
            _ => Err("expected {bearer: <token>}, {hmac_sha256: <secret>} or none".into()),
        }
    }
}

impl From<WebhookAuth> for AuthFields {
    fn from(auth: WebhookAuth) -> Self {
        match auth {
            WebhookAuth::Bearer(token) => AuthFields::Method {
                bearer: Some(token),
                hmac_sha256: None,
            },
            WebhookAuth::HmacSha256(secret) => AuthFields::Method {
                bearer: None,
                hmac_sha256: Some(secret),
            },
            WebhookAuth::None => AuthFields::Name("none".into()),
        }
    }
}

impl std::fmt::Debug for WebhookAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        f.write_str(match self {
            WebhookAuth::Bearer(_) => "Bearer(..)",
            WebhookAuth::HmacSha256(_) => "HmacSha256(..)",
            WebhookAuth::None => "None",
        })
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: Duration::from_secs(300),
            max_size: 100,
            max_object_size: 8 << 20,
            coalesce_wait: Duration::from_secs(5),
            origin_timeout: Duration::from_secs(60),
            predictive_warming: false,
            webhook_path: None,
            webhook_auth: None,
            distributed_sync: None,
        }
    }
}

impl CacheConfig {
    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_size == 0 {
            return Err(ConfigError::new("max_size", "at least 1 (megabytes)"));
        }
        if self.origin_timeout.is_zero() {
            return Err(ConfigError::new("origin_timeout", "more than 0, e.g. 60s"));
        }
        if self.max_object_size == 0 {
            return Err(ConfigError::new("max_object_size", "at least 1 (bytes)"));
        }
        if self.max_object_size > self.max_size.saturating_mul(1_000_000) {
            return Err(ConfigError::new(
                "max_object_size",
                format!(
                    "at most max_size ({} MB); got {} bytes",
                    self.max_size, self.max_object_size
                ),
            ));
        }
        if let Some(path) = &self.webhook_path {
            if !path.starts_with('/') {
                return Err(ConfigError::new(
                    "webhook_path",
                    format!("a path starting with '/'; got {path:?}"),
                ));
            }
            match &self.webhook_auth {
                None => {
                    return Err(ConfigError::new(
                        "webhook_auth",
                        "required with webhook_path: {bearer: <token>}, {hmac_sha256: <secret>}, \
                         or none to turn authentication off",
                    ))
                }
                Some(WebhookAuth::Bearer(secret) | WebhookAuth::HmacSha256(secret))
                    if secret.len() < 16 =>
                {
                    return Err(ConfigError::new(
                        "webhook_auth",
                        "a token or secret of at least 16 characters",
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some(sync) = &self.distributed_sync {
            sync.validate()?;
        }
        Ok(())
    }
}
