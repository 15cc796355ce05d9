//! Invalidations shared between instances through Redis pub/sub (feature `redis`).
//!
//! Every webhook action (a key, a pattern, a tag, a partial update) and every invalidation by
//! an unsafe method is applied here and published on a Redis channel; every other instance on
//! that channel applies it to its own store. Each instance keeps one task with two
//! connections: a subscription, checked by a `PING` every `sync_interval`, and one it
//! publishes on.
//!
//! An instance that is not subscribed cannot know which invalidations it missed: each time its
//! subscription starts (the first time, and after every loss) it drops everything it stored
//! before, so nothing stale outlives the gap. A connection that dies without a word is noticed
//! by the next `PING` that gets no answer within `sync_interval`, and the subscription is made
//! again with a backoff of at most two seconds: an entry whose invalidation was missed is
//! served at most `2 × sync_interval + 2 s` after Redis is reachable again (with the default
//! `sync_interval` of 1 s: 4 s). Until then, entries keep their own freshness.
//!
//! Invalidations made while Redis is unreachable wait (up to [`MAX_WAITING`] of them) and are
//! published when it is back. The task logs each change of state (lost, back), not each
//! message, and ends with the layer.
//!
//! With a shared second level (`shared_store`), an instance that misses asks Redis before the
//! origin, and one that stores a response writes it there too. The instance where an
//! invalidation is made deletes what it concerns from the second level *before* publishing
//! it, so that no instance that hears of it can read the old value back: by key (a `DEL`), by
//! tag (a set of keys per tag, kept beside the values), by pattern (a `SCAN` of the values'
//! keys under the path).

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::DistributedSyncConfig;
use crate::service::Shared;
use crate::shared_store;
use crate::store::{Stored, Variants};
use crate::webhook::{self, Action};

/// The most invalidations waiting to be published while Redis is unreachable; past it the
/// newest are dropped with an error line each.
pub const MAX_WAITING: usize = 10_000;

/// The longest wait between two attempts to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One invalidation as it travels between instances.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Message {
    /// The instance that made it (which ignores it when it comes back).
    from: u64,
    /// The host the action's paths are on.
    host: String,
    action: Action,
}

/// The connection the task keeps, lent to the second level's reads and writes; `None` while
/// Redis is lost.
type Lent = Arc<std::sync::Mutex<Option<MultiplexedConnection>>>;

/// An instance's end of the channel: what the service publishes through.
pub(crate) struct SyncLink {
    config: DistributedSyncConfig,
    client: redis::Client,
    instance: u64,
    outgoing: mpsc::Sender<Message>,
    /// Taken by the task when it starts.
    waiting: std::sync::Mutex<Option<mpsc::Receiver<Message>>>,
    started: std::sync::Once,
    connection: Lent,
}

impl SyncLink {
    /// A link for `config`, whose URL is valid (the configuration was validated).
    pub(crate) fn new(config: &DistributedSyncConfig) -> SyncLink {
        let info = config
            .redis
            .connection_info(crate::config::REDIS_FIELDS)
            .expect("a validated configuration");
        let client = redis::Client::open(info).expect("a validated configuration");
        let (outgoing, waiting) = mpsc::channel(MAX_WAITING);
        SyncLink {
            config: config.clone(),
            client,
            instance: instance_id(),
            outgoing,
            waiting: std::sync::Mutex::new(Some(waiting)),
            started: std::sync::Once::new(),
            connection: Lent::default(),
        }
    }

    /// Starts the task, once, on the current runtime.
    pub(crate) fn start(&self, shared: &Arc<Shared>) {
        self.started.call_once(|| {
            let waiting = self
                .waiting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(waiting) = waiting {
                let task = Task {
                    shared: Arc::downgrade(shared),
                    client: self.client.clone(),
                    config: self.config.clone(),
                    instance: self.instance,
                    waiting,
                    connection: Arc::clone(&self.connection),
                };
                tokio::spawn(task.run());
            }
        });
    }

    /// Whether a second level is shared through this link.
    pub(crate) fn shares_store(&self) -> bool {
        self.config.shared_store.is_some()
    }

    fn connection(&self) -> Option<MultiplexedConnection> {
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The variants another instance stored for `key`, from the second level; `None` when
    /// there is none, when Redis is lost, or after the read's timeout.
    pub(crate) async fn fetch(&self, key: &str) -> Option<Vec<Stored>> {
        let store = self.config.shared_store.as_ref()?;
        let mut connection = self.connection()?;
        let mut get = redis::cmd("GET");
        get.arg(value_key(&self.config.channel, key));
        let read = get.query_async::<Option<Vec<u8>>>(&mut connection);
        match tokio::time::timeout(store.timeout, read).await {
            Ok(Ok(Some(value))) => shared_store::decode(&value),
            Ok(Ok(None)) => None,
            Ok(Err(error)) => {
                tracing::debug!(%error, "cache sync: the second level could not be read");
                None
            }
            Err(_) => None,
        }
    }

    /// Writes `variants`, stored here for `key`, to the second level, in the background.
    pub(crate) fn keep(&self, key: &str, variants: &Variants, now: std::time::SystemTime) {
        let Some(store) = &self.config.shared_store else {
            return;
        };
        let Some(mut connection) = self.connection() else {
            return;
        };
        let ttl = shared_store::usable_for(variants.iter().map(|s| &**s), now).min(store.max_ttl);
        let value = shared_store::encode(variants.iter().map(|s| &**s));
        if ttl < Duration::from_millis(1) || value.len() as u64 > store.max_object_size {
            return;
        }
        let channel = &self.config.channel;
        let value_key = value_key(channel, key);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&value_key)
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .ignore();
        for tag in variants
            .iter()
            .flat_map(|stored| crate::store::surrogate_keys(&stored.headers))
        {
            let tag_key = tag_key(channel, &tag);
            pipe.cmd("SADD").arg(&tag_key).arg(&value_key).ignore();
            pipe.cmd("PEXPIRE")
                .arg(&tag_key)
                .arg(store.max_ttl.as_millis() as u64)
                .ignore();
        }
        let timeout = store.timeout;
        tokio::spawn(async move {
            let write = pipe.query_async::<()>(&mut connection);
            if let Ok(Err(error)) = tokio::time::timeout(timeout, write).await {
                tracing::debug!(%error, "cache sync: the second level could not be written");
            }
        });
    }

    /// Publishes `action` on `host` to the other instances.
    pub(crate) fn publish(&self, host: &str, action: &Action) {
        let message = Message {
            from: self.instance,
            host: host.to_string(),
            action: action.clone(),
        };
        if self.outgoing.try_send(message).is_err() {
            tracing::error!(
                waiting = MAX_WAITING,
                "cache invalidation not shared: too many wait for Redis"
            );
        }
    }
}

/// A number that tells this instance's messages from the others'.
fn instance_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

/// The key of a URI's value in the second level.
fn value_key(channel: &str, key: &str) -> String {
    format!("{channel}:value:{key}")
}

/// The key of the set of value keys that carry `tag`.
fn tag_key(channel: &str, tag: &str) -> String {
    format!("{channel}:tag:{tag}")
}

struct Task {
    shared: Weak<Shared>,
    client: redis::Client,
    config: DistributedSyncConfig,
    instance: u64,
    waiting: mpsc::Receiver<Message>,
    connection: Lent,
}

/// Why a subscription ended.
enum End {
    /// The layer is gone.
    Done,
    /// Redis was lost.
    Lost(String),
}

impl Task {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(50);
        let mut down = false;
        // A message taken from the queue whose publication failed: the first to go again.
        let mut unsent: Option<Message> = None;
        loop {
            if self.shared.strong_count() == 0 {
                return;
            }
            match self.connect().await {
                Ok((publisher, pubsub)) => {
                    backoff = Duration::from_millis(50);
                    let dropped = match self.shared.upgrade() {
                        Some(shared) => shared.store.clear(),
                        None => return,
                    };
                    if down {
                        tracing::info!(
                            dropped,
                            "cache sync: Redis is back; entries stored before it dropped"
                        );
                    } else {
                        tracing::debug!(dropped, "cache sync: subscribed");
                    }
                    self.lend(Some(publisher.clone()));
                    let end = self.serve(publisher, pubsub, &mut unsent).await;
                    self.lend(None);
                    match end {
                        End::Done => return,
                        End::Lost(reason) => {
                            tracing::warn!(%reason, "cache sync: Redis lost; invalidations wait");
                            down = true;
                        }
                    }
                }
                Err(reason) => {
                    if !down {
                        tracing::warn!(%reason, "cache sync: Redis unreachable; invalidations wait");
                        down = true;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn lend(&self, connection: Option<MultiplexedConnection>) {
        *self
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = connection;
    }

    async fn connect(&self) -> Result<(MultiplexedConnection, redis::aio::PubSub), String> {
        let attempt = async {
            let publisher = self.client.get_multiplexed_async_connection().await?;
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.config.channel).await?;
            Ok::<_, redis::RedisError>((publisher, pubsub))
        };
        let interval = self.config.sync_interval;
        match tokio::time::timeout(interval.max(Duration::from_millis(100)), attempt).await {
            Ok(Ok(connected)) => Ok(connected),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {interval:?}")),
        }
    }

    /// Applies what comes in, publishes what goes out, and checks the subscription, until
    /// one fails or the layer is gone.
    async fn serve(
        &mut self,
        mut publisher: MultiplexedConnection,
        pubsub: redis::aio::PubSub,
        unsent: &mut Option<Message>,
    ) -> End {
        let (mut sink, mut stream) = pubsub.split();
        let interval = self.config.sync_interval;
        let mut check = tokio::time::interval(interval);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(message) = unsent.take() {
                let sent = tokio::time::timeout(interval, self.send(&mut publisher, &message));
                match sent.await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        *unsent = Some(message);
                        return End::Lost(error.to_string());
                    }
                    Err(_) => {
                        *unsent = Some(message);
                        return End::Lost("PUBLISH got no answer".into());
                    }
                }
            }
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        return End::Lost("the subscription closed".into());
                    };
                    let Some(shared) = self.shared.upgrade() else {
                        return End::Done;
                    };
                    self.apply(&shared, message.get_payload_bytes());
                }
                message = self.waiting.recv() => match message {
                    Some(message) => *unsent = Some(message),
                    None => return End::Done,
                },
                _ = check.tick() => {
                    if self.shared.strong_count() == 0 {
                        return End::Done;
                    }
                    let ping = sink.ping::<redis::Value>();
                    match tokio::time::timeout(interval, ping).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return End::Lost(error.to_string()),
                        Err(_) => return End::Lost("PING got no answer".into()),
                    }
                }
            }
        }
    }

    /// Deletes what `message` concerns from the second level, then publishes it.
    async fn send(
        &self,
        publisher: &mut MultiplexedConnection,
        message: &Message,
    ) -> redis::RedisResult<()> {
        if self.config.shared_store.is_some() {
            forget(publisher, &self.config.channel, message).await?;
        }
        let text = serde_json::to_string(message).expect("a message serializes");
        redis::cmd("PUBLISH")
            .arg(&self.config.channel)
            .arg(text)
            .query_async::<i64>(publisher)
            .await?;
        Ok(())
    }

    fn apply(&self, shared: &Shared, payload: &[u8]) {
        let message: Message = match serde_json::from_slice(payload) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "cache sync: a message that is not an invalidation; ignored");
                return;
            }
        };
        if message.from == self.instance {
            return;
        }
        // An action that finds nothing here (a 404 for a key this instance never stored) is
        // not an error of this instance's.
        if let Err(problem) = webhook::apply(shared, &message.host, &message.action) {
            tracing::debug!(
                ?problem,
                "cache sync: an invalidation found nothing to change"
            );
        }
    }
}

/// Deletes from the second level the values an invalidation concerns (a partial update
/// deletes the key's value: the next miss reads the origin).
async fn forget(
    connection: &mut MultiplexedConnection,
    channel: &str,
    message: &Message,
) -> redis::RedisResult<()> {
    let host = &message.host;
    let full = |key: &str| {
        if key.starts_with('/') {
            format!("{host}{key}")
        } else {
            key.to_string()
        }
    };
    let mut doomed = Vec::new();
    let mut tags = Vec::new();
    match &message.action {
        Action::Invalidate { key: Some(key), .. } => {
            // As the webhook reads a key: a stored URI, or else a tag.
            doomed.push(value_key(channel, &full(key)));
            tags.push(tag_key(channel, key));
        }
        Action::Invalidate { tag: Some(tag), .. } => tags.push(tag_key(channel, tag)),
        Action::Invalidate {
            pattern: Some(pattern),
            ..
        } => {
            let path = pattern.trim_end_matches('/');
            let slash = if path.starts_with('/') { "" } else { "/" };
            let prefix = value_key(channel, &format!("{host}{slash}{path}"));
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{}*", glob_escape(&prefix)))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(connection)
                    .await?;
                // At a segment boundary, as the webhook matches: not `/api/usersettings`.
                doomed.extend(keys.into_iter().filter(|key| {
                    let rest = &key[prefix.len()..];
                    rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')
                }));
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Action::Invalidate { .. } => {}
        Action::PartialUpdate { partial } => {
            doomed.push(value_key(channel, &full(&partial.key)));
            tags.push(tag_key(channel, &partial.key));
        }
    }
    for tag in &tags {
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(tag)
            .query_async(connection)
            .await?;
        doomed.extend(members);
        doomed.push(tag.clone());
    }
    if !doomed.is_empty() {
        redis::cmd("DEL")
            .arg(&doomed)
            .query_async::<i64>(connection)
            .await?;
    }
    Ok(())
}

/// `text` with the characters `SCAN MATCH` reads as a pattern escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
