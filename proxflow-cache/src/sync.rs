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

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::DistributedSyncConfig;
use crate::service::Shared;
use crate::webhook::{self, Action};

/// The most invalidations waiting to be published while Redis is unreachable; past it the
/// newest are dropped with an error line each.
pub const MAX_WAITING: usize = 10_000;

/// The longest wait between two attempts to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One invalidation as it travels between instances.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    /// The instance that made it (which ignores it when it comes back).
    from: u64,
    /// The host the action's paths are on.
    host: String,
    action: Action,
}

/// An instance's end of the channel: what the service publishes through.
pub(crate) struct SyncLink {
    config: DistributedSyncConfig,
    client: redis::Client,
    instance: u64,
    outgoing: mpsc::Sender<String>,
    /// Taken by the task when it starts.
    waiting: std::sync::Mutex<Option<mpsc::Receiver<String>>>,
}

impl SyncLink {
    /// A link for `config`, whose URL is valid (the configuration was validated).
    pub(crate) fn new(config: &DistributedSyncConfig) -> SyncLink {
        let url = config
            .redis
            .url("distributed_sync.redis")
            .expect("a validated configuration");
        let client = redis::Client::open(url).expect("a validated configuration");
        let (outgoing, waiting) = mpsc::channel(MAX_WAITING);
        SyncLink {
            config: config.clone(),
            client,
            instance: instance_id(),
            outgoing,
            waiting: std::sync::Mutex::new(Some(waiting)),
        }
    }

    /// Starts the task, once, on the current runtime.
    pub(crate) fn start(&self, shared: &Arc<Shared>) {
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(waiting) = waiting {
            let task = Task {
                shared: Arc::downgrade(shared),
                client: self.client.clone(),
                channel: self.config.channel.clone(),
                interval: self.config.sync_interval,
                instance: self.instance,
                waiting,
            };
            tokio::spawn(task.run());
        }
    }

    /// Publishes `action` on `host` to the other instances.
    pub(crate) fn publish(&self, host: &str, action: &Action) {
        let message = Message {
            from: self.instance,
            host: host.to_string(),
            action: action.clone(),
        };
        let text = serde_json::to_string(&message).expect("an action serializes");
        if self.outgoing.try_send(text).is_err() {
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

struct Task {
    shared: Weak<Shared>,
    client: redis::Client,
    channel: String,
    interval: Duration,
    instance: u64,
    waiting: mpsc::Receiver<String>,
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
        let mut unsent: Option<String> = None;
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
                    match self.serve(publisher, pubsub, &mut unsent).await {
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

    async fn connect(&self) -> Result<(MultiplexedConnection, redis::aio::PubSub), String> {
        let attempt = async {
            let publisher = self.client.get_multiplexed_async_connection().await?;
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>((publisher, pubsub))
        };
        match tokio::time::timeout(self.interval.max(Duration::from_millis(100)), attempt).await {
            Ok(Ok(connected)) => Ok(connected),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.interval)),
        }
    }

    /// Applies what comes in, publishes what goes out, and checks the subscription, until
    /// one fails or the layer is gone.
    async fn serve(
        &mut self,
        mut publisher: MultiplexedConnection,
        pubsub: redis::aio::PubSub,
        unsent: &mut Option<String>,
    ) -> End {
        let (mut sink, mut stream) = pubsub.split();
        let mut check = tokio::time::interval(self.interval);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(text) = unsent.take() {
                let mut command = redis::cmd("PUBLISH");
                command.arg(&self.channel).arg(&text);
                let publish = command.query_async::<i64>(&mut publisher);
                match tokio::time::timeout(self.interval, publish).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        *unsent = Some(text);
                        return End::Lost(error.to_string());
                    }
                    Err(_) => {
                        *unsent = Some(text);
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
                text = self.waiting.recv() => match text {
                    Some(text) => *unsent = Some(text),
                    None => return End::Done,
                },
                _ = check.tick() => {
                    if self.shared.strong_count() == 0 {
                        return End::Done;
                    }
                    let ping = sink.ping::<redis::Value>();
                    match tokio::time::timeout(self.interval, ping).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return End::Lost(error.to_string()),
                        Err(_) => return End::Lost("PING got no answer".into()),
                    }
                }
            }
        }
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
