//! The Redis mode. Exact: each decision is one script run on Redis, atomic and on Redis's
//! clock, so that every instance sharing the Redis sees every other's requests at once.
//! Synced ([`synced`]): each instance decides on its own and shares its counts every
//! interval.
//!
//! The connection is watched as a small state machine, so that a dead Redis costs requests
//! nothing: while it is known to be down, requests are decided at once by the
//! [`OnUnavailable`] policy (exact mode) or the syncs are skipped (synced mode), and one
//! background task probes it with a growing delay. Only the changes of state are logged.

pub(crate) mod synced;

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ErrorKind, FromRedisValue, Pipeline, RedisError, Script, ServerErrorKind};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::algorithm::{Nanos, Rate, Verdict};
use crate::config::{Algorithm, OnUnavailable};
use crate::key::{KeyHasher, MISSING};

/// No connection tried yet, or the first one under way: requests wait for it, within their
/// timeout.
const CONNECTING: u8 = 0;
/// Requests go to Redis.
const UP: u8 = 1;
/// Redis failed; requests get the policy at once while the probe retries.
const DOWN: u8 = 2;
/// The server is one this mode cannot use (a Redis Cluster node): requests get the policy
/// for good.
const REFUSED: u8 = 3;

/// The first retry after Redis is lost, doubled after each failure up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between two probes: Redis is used again at most this long after it is
/// back.
const MAX_RETRY: Duration = Duration::from_secs(1);
/// The shortest time a probe (connecting included) is given.
const MIN_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Failures of single requests' scripts (not of the connection) are logged at most this often.
const SCRIPT_WARNING_EVERY: Duration = Duration::from_secs(60);

/// The shared state of one layer's Redis mode.
pub(crate) struct Remote {
    client: Client,
    /// Where, for the logs (no password).
    address: String,
    script: Script,
    algorithm: Algorithm,
    prefix: Box<[u8]>,
    timeout: Duration,
    pub(crate) on_unavailable: OnUnavailable,
    /// The synced mode's interval; `None` in exact mode.
    sync_interval: Option<Duration>,
    /// The connection, made on first use (it needs the runtime) and made again when a probe
    /// gets no answer: a hung connection is never dropped by the manager itself.
    link: Mutex<Option<ConnectionManager>>,
    state: AtomicU8,
    /// Whether a probe task is running.
    probing: AtomicBool,
    /// Wakes the requests waiting for the first connection.
    changed: Notify,
    /// When a script failure of a single request was last logged.
    script_warned: Mutex<Option<Instant>>,
}

/// A quota as the scripts take it, made once per quota.
#[derive(Debug, Clone)]
pub(crate) struct RemoteQuota {
    /// Hashed into every key of the quota, so that quotas (and layers with other policy names,
    /// or the other mode) never share state.
    tag: [u8; 16],
    /// The script's arguments after the synced mode's count, if any.
    pub(crate) args: Arc<[String]>,
    /// The synced mode: how the quota's keys are tracked.
    pub(crate) track: Option<synced::Track>,
}

impl Remote {
    pub(crate) fn new(
        client: Client,
        algorithm: Algorithm,
        prefix: &str,
        timeout: Duration,
        on_unavailable: OnUnavailable,
        sync_interval: Option<Duration>,
    ) -> Remote {
        Remote {
            address: client.get_connection_info().addr().to_string(),
            client,
            script: Script::new(script(algorithm, sync_interval.is_some())),
            algorithm,
            prefix: prefix.as_bytes().into(),
            timeout,
            on_unavailable,
            sync_interval,
            link: Mutex::new(None),
            state: AtomicU8::new(CONNECTING),
            probing: AtomicBool::new(false),
            changed: Notify::new(),
            script_warned: Mutex::new(None),
        }
    }

    /// Whether requests go to Redis now (`None` before the first connection).
    pub(crate) fn connected(&self) -> Option<bool> {
        match self.state.load(Ordering::Acquire) {
            CONNECTING => None,
            state => Some(state == UP),
        }
    }

    /// The script's arguments for `rate`, and the quota's tag.
    pub(crate) fn quota(&self, rate: &Rate, max_wait: Nanos, policy_name: &str) -> RemoteQuota {
        let us = |ns: u64| (ns as f64 / 1000.0).to_string();
        let args = match (self.algorithm, self.sync_interval) {
            // How long a synced record outlives its state: the instances that sync the key
            // every interval keep it, and a late sync still finds it.
            (Algorithm::TokenBucket | Algorithm::LeakyBucket, Some(interval)) => {
                vec![us(rate.interval()), us(synced::linger(interval))]
            }
            (Algorithm::SlidingWindow | Algorithm::SlidingWindowApprox, Some(interval)) => {
                vec![us(rate.per_ns), us(synced::linger(interval))]
            }
            (Algorithm::TokenBucket, None) => {
                let tau = rate
                    .interval()
                    .saturating_mul(u64::from(rate.burst.max(1) - 1));
                vec![us(rate.interval()), us(tau), us(max_wait)]
            }
            (Algorithm::LeakyBucket, None) => {
                vec![us(rate.interval()), rate.burst.to_string(), us(max_wait)]
            }
            (Algorithm::SlidingWindow | Algorithm::SlidingWindowApprox, None) => {
                vec![rate.rate.to_string(), us(rate.per_ns)]
            }
        };
        let mut tag = Sha256::new();
        tag.update(b"proxflow-ratelimit quota\0");
        if self.sync_interval.is_some() {
            // A synced record is no exact state: the modes never read each other's keys.
            tag.update(b"synced\0");
        }
        tag.update(format!("{:?}", self.algorithm).as_bytes());
        tag.update(rate.rate.to_le_bytes());
        tag.update(rate.per_ns.to_le_bytes());
        tag.update(rate.burst.to_le_bytes());
        tag.update(policy_name.as_bytes());
        let digest = tag.finalize();
        RemoteQuota {
            tag: digest[..16].try_into().expect("16 bytes"),
            args: args.into(),
            track: self
                .sync_interval
                .map(|interval| synced::Track::new(rate, interval)),
        }
    }

    /// The Redis key of `key` under `quota`, and the key the instance's own limiter uses for
    /// it when Redis is unavailable.
    pub(crate) fn key(&self, key: Sha256, quota: &RemoteQuota) -> (Vec<u8>, u64) {
        let (digest, local) = Self::digest(key, quota);
        let mut redis_key = Vec::with_capacity(self.prefix.len() + 16);
        redis_key.extend_from_slice(&self.prefix);
        redis_key.extend_from_slice(&digest);
        (redis_key, local)
    }

    /// The part of the Redis key of `key` under `quota` after the prefix, and the key the
    /// instance's own limiter uses for it when Redis is unavailable.
    pub(crate) fn digest(mut key: Sha256, quota: &RemoteQuota) -> ([u8; 16], u64) {
        key.update(quota.tag);
        let digest = key.finalize();
        let local = u64::from_le_bytes(digest[16..24].try_into().expect("8 bytes"));
        (digest[..16].try_into().expect("16 bytes"), local)
    }

    /// The shared key of requests without one.
    pub(crate) fn missing_key() -> Sha256 {
        StableKeys.bytes(MISSING, &[])
    }

    /// Runs the quota's script for `key`, within the timeout. `Err` when Redis cannot decide:
    /// it is down, connecting for longer than the timeout, or the script failed.
    pub(crate) async fn check(
        self: &Arc<Self>,
        key: &[u8],
        quota: &RemoteQuota,
    ) -> Result<Verdict, ()> {
        let deadline = Instant::now() + self.timeout;
        let mut link = self.link_when_up(deadline).await.ok_or(())?;
        let mut invocation = self.script.key(key);
        for arg in quota.args.iter() {
            invocation.arg(arg.as_str());
        }
        let answer = invocation.invoke_async::<(i64, i64, i64, i64)>(&mut link);
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(answer)) => Ok(verdict(answer)),
            Ok(Err(error)) if fails_alone(&error) => {
                self.script_failed(&error);
                Err(())
            }
            Ok(Err(error)) => {
                self.lost(&error.to_string());
                Err(())
            }
            Err(_) => {
                self.lost(&format!("no answer within {:?}", self.timeout));
                Err(())
            }
        }
    }

    /// The synced mode's script.
    pub(crate) fn script(&self) -> &Script {
        &self.script
    }

    /// Sends `pipe` (made with `ignore_errors`, so that a script failing on one key leaves the
    /// others' answers), within `timeout`. `Err` when Redis cannot answer: it is down, connecting
    /// for longer than the timeout, or the connection failed.
    pub(crate) async fn pipeline<T: FromRedisValue>(
        self: &Arc<Self>,
        pipe: &Pipeline,
        timeout: Duration,
    ) -> Result<T, ()> {
        let deadline = Instant::now() + timeout;
        let mut link = self.link_when_up(deadline).await.ok_or(())?;
        match tokio::time::timeout_at(deadline, pipe.query_async::<T>(&mut link)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => {
                self.lost(&error.to_string());
                Err(())
            }
            Err(_) => {
                self.lost(&format!("no answer within {timeout:?}"));
                Err(())
            }
        }
    }

    /// The connection if Redis is up: before the first connection, waits for it until
    /// `deadline`; while Redis is known to be down, `None` at once.
    async fn link_when_up(self: &Arc<Self>, deadline: Instant) -> Option<ConnectionManager> {
        if self.state.load(Ordering::Acquire) == CONNECTING {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            self.probe();
            if self.state.load(Ordering::Acquire) == CONNECTING {
                let _ = tokio::time::timeout_at(deadline, changed).await;
            }
        }
        if self.state.load(Ordering::Acquire) != UP {
            return None;
        }
        self.link()
    }

    fn link(&self) -> Option<ConnectionManager> {
        self.link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Redis failed a request: from `UP`, the layer turns to its policy and probes.
    fn lost(self: &Arc<Self>, reason: &str) {
        if self
            .state
            .compare_exchange(UP, DOWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::warn!(
                redis = %self.address,
                reason,
                "Redis unavailable: {} until it is back",
                self.policy_text()
            );
            self.changed.notify_waiters();
            self.probe();
        }
    }

    fn policy_text(&self) -> &'static str {
        if self.sync_interval.is_some() {
            return "decisions stay local, and each key's admissions are kept (a bounded count) \
                    to be shared";
        }
        match self.on_unavailable {
            OnUnavailable::FailOpen => "each instance limits on its own (fail_open)",
            OnUnavailable::FailClosed => "requests are answered 503 (fail_closed)",
        }
    }

    /// One request's script failed while the connection works (a key of another type where
    /// this layer's key is, a script refused by the server's ACL, out of memory): that request
    /// gets the policy. Logged at most once a minute, not per request.
    pub(crate) fn script_failed(&self, error: &RedisError) {
        let mut warned = self
            .script_warned
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if warned.is_none_or(|at| now.duration_since(at) >= SCRIPT_WARNING_EVERY) {
            *warned = Some(now);
            if self.sync_interval.is_some() {
                tracing::warn!(
                    redis = %self.address,
                    %error,
                    "Redis could not run the rate limit sync script for some keys: their \
                     admissions are kept for the next sync (logged at most once a minute)"
                );
                return;
            }
            tracing::warn!(
                redis = %self.address,
                %error,
                "Redis could not run the rate limit script: {} for such requests (logged at \
                 most once a minute)",
                self.policy_text()
            );
        }
    }

    /// Starts the probe task unless one runs.
    fn probe(self: &Arc<Self>) {
        if !self.probing.swap(true, Ordering::AcqRel) {
            tokio::spawn(probe(Arc::downgrade(self)));
        }
    }

    /// Moves from `from` to `to`; `true` if this call made the change.
    fn change(&self, from: u8, to: u8) -> bool {
        let changed = self
            .state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if changed {
            self.changed.notify_waiters();
        }
        changed
    }

    /// Connects if need be and asks the server what it is.
    async fn try_connect(&self) -> Result<(), Failure> {
        let link = self.link();
        let mut link = match link {
            Some(link) => link,
            None => {
                let config = ConnectionManagerConfig::new()
                    // The probe retries, with its own delays.
                    .set_number_of_retries(0)
                    .set_connection_timeout(Some(self.probe_timeout()))
                    // Each request has its own timeout.
                    .set_response_timeout(None);
                let link = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                    .map_err(|error| Failure::Down(error.to_string()))?;
                *self.link.lock().unwrap_or_else(PoisonError::into_inner) = Some(link.clone());
                link
            }
        };
        let deadline = Instant::now() + self.probe_timeout();
        let mut info = redis::cmd("INFO");
        info.arg("cluster");
        let mut retried = false;
        loop {
            let answer = info.query_async::<String>(&mut link);
            return match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(info)) if info.contains("cluster_enabled:1") => Err(Failure::Refused(
                    "it is a Redis Cluster node, and Redis Cluster is not supported: give one \
                     standalone server (or a proxy in front of the cluster)",
                )),
                Ok(Ok(_)) => Ok(()),
                // A user whose ACL allows the scripts but not INFO.
                Ok(Err(error)) if error.kind() == ErrorKind::Server(ServerErrorKind::NoPerm) => {
                    Ok(())
                }
                // The manager answers with the failure of its last connection, and starts a
                // new one: the second question waits for that one, so that a Redis back since
                // is seen now rather than at the next probe.
                Ok(Err(error))
                    if !retried && (error.is_io_error() || error.is_unrecoverable_error()) =>
                {
                    retried = true;
                    continue;
                }
                Ok(Err(error)) => Err(Failure::Down(error.to_string())),
                Err(_) => {
                    *self.link.lock().unwrap_or_else(PoisonError::into_inner) = None;
                    Err(Failure::Down(format!(
                        "no answer within {:?}",
                        self.probe_timeout()
                    )))
                }
            };
        }
    }

    fn probe_timeout(&self) -> Duration {
        (self.timeout * 4).max(MIN_PROBE_TIMEOUT)
    }
}

enum Failure {
    /// Try again later.
    Down(String),
    /// Never usable.
    Refused(&'static str),
}

/// Connects (or reconnects) until Redis answers, waiting longer after each failure. Holds the
/// layer weakly: a layer dropped while Redis is down stops its probe.
async fn probe(remote: Weak<Remote>) {
    let mut delay = Duration::ZERO;
    loop {
        tokio::time::sleep(delay).await;
        let Some(remote) = remote.upgrade() else {
            return;
        };
        match remote.try_connect().await {
            Ok(()) => {
                if remote.change(CONNECTING, UP) {
                    tracing::info!(redis = %remote.address, "Redis connected: rate limits are shared");
                } else if remote.change(DOWN, UP) {
                    tracing::info!(redis = %remote.address, "Redis is back: rate limits are shared again");
                }
                remote.probing.store(false, Ordering::Release);
                // A request may have lost Redis again while this probe was finishing, and
                // found it running.
                if remote.state.load(Ordering::Acquire) == DOWN {
                    remote.probe();
                }
                return;
            }
            Err(Failure::Refused(reason)) => {
                let before = remote.state.swap(REFUSED, Ordering::AcqRel);
                remote.changed.notify_waiters();
                if before != REFUSED {
                    tracing::error!(
                        redis = %remote.address,
                        "Redis not used: {reason}; {} for good",
                        remote.policy_text()
                    );
                }
                return;
            }
            Err(Failure::Down(reason)) => {
                if remote.change(CONNECTING, DOWN) {
                    tracing::warn!(
                        redis = %remote.address,
                        reason,
                        "Redis unavailable: {} until it is reached",
                        remote.policy_text()
                    );
                } else {
                    tracing::debug!(redis = %remote.address, reason, "Redis still unavailable");
                }
            }
        }
        delay = (delay * 2).clamp(FIRST_RETRY, MAX_RETRY);
    }
}

/// Whether the error is the request's own (the script failed on its key) rather than the
/// connection's or the server's.
fn fails_alone(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Server(
            ServerErrorKind::ResponseError
                | ServerErrorKind::ExecAbort
                | ServerErrorKind::NoScript
                | ServerErrorKind::NoPerm
        ) | ErrorKind::Extension
            | ErrorKind::UnexpectedReturnType
    )
}

/// A script's answer `{admit, wait, remaining, after}` (see prelude.lua).
fn verdict((admit, wait, remaining, after): (i64, i64, i64, i64)) -> Verdict {
    let nanos = |value: i64| value.max(0) as u64;
    if admit == 1 {
        Verdict::Admit {
            wait: nanos(wait),
            remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
            reset_after: nanos(after),
        }
    } else {
        Verdict::Refuse {
            retry_after: nanos(after),
        }
    }
}

fn script(algorithm: Algorithm, synced: bool) -> &'static str {
    if synced {
        return match algorithm {
            Algorithm::TokenBucket | Algorithm::LeakyBucket => {
                concat!(include_str!("prelude.lua"), include_str!("sync_bucket.lua"))
            }
            Algorithm::SlidingWindow | Algorithm::SlidingWindowApprox => {
                concat!(include_str!("prelude.lua"), include_str!("sync_window.lua"))
            }
        };
    }
    match algorithm {
        Algorithm::TokenBucket => {
            concat!(
                include_str!("prelude.lua"),
                include_str!("token_bucket.lua")
            )
        }
        Algorithm::LeakyBucket => {
            concat!(
                include_str!("prelude.lua"),
                include_str!("leaky_bucket.lua")
            )
        }
        Algorithm::SlidingWindow => {
            concat!(
                include_str!("prelude.lua"),
                include_str!("sliding_window.lua")
            )
        }
        Algorithm::SlidingWindowApprox => concat!(
            include_str!("prelude.lua"),
            include_str!("sliding_window_approx.lua")
        ),
    }
}

/// Keys as every instance hashes them: SHA-256 of the key's kind and bytes, so that instances
/// agree whatever their seeds and Rust versions, and no client can aim its key at another's.
/// Redis keeps 16 bytes of it after the layer's prefix (the key itself, an address or an API
/// key, never reaches Redis).
pub(crate) struct StableKeys;

impl KeyHasher for StableKeys {
    type Hash = Sha256;

    fn bytes(&self, kind: u8, value: &[u8]) -> Sha256 {
        let mut hash = Sha256::new();
        hash.update(b"proxflow-ratelimit key\0");
        hash.update([kind]);
        hash.update((value.len() as u64).to_le_bytes());
        hash.update(value);
        hash
    }

    fn address(&self, bits: u128) -> Sha256 {
        self.bytes(1, &bits.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_and_keys_hash_apart() {
        let client = Client::open("redis://127.0.0.1:1").unwrap();
        let remote = Remote::new(
            client,
            Algorithm::TokenBucket,
            "rl:",
            Duration::from_millis(50),
            OnUnavailable::FailOpen,
            None,
        );
        let ten = remote.quota(&Rate::new(10, 1_000_000_000, 5), 0, "default");
        let twenty = remote.quota(&Rate::new(20, 1_000_000_000, 5), 0, "default");
        let named = remote.quota(&Rate::new(10, 1_000_000_000, 5), 0, "login");
        assert_eq!(*ten.args, ["100000", "400000", "0"]);
        let key = |kind, value: &[u8], quota| remote.key(StableKeys.bytes(kind, value), quota).0;
        assert_eq!(key(3, b"abc", &ten), key(3, b"abc", &ten), "stable");
        assert_eq!(key(3, b"abc", &ten).len(), 3 + 16);
        assert!(key(3, b"abc", &ten).starts_with(b"rl:"));
        assert_ne!(key(3, b"abc", &ten), key(4, b"abc", &ten), "kinds");
        assert_ne!(key(3, b"abc", &ten), key(3, b"abd", &ten), "values");
        assert_ne!(key(3, b"abc", &ten), key(3, b"abc", &twenty), "quotas");
        assert_ne!(key(3, b"abc", &ten), key(3, b"abc", &named), "policy names");
    }

    #[test]
    fn fractional_intervals_reach_the_script_exactly() {
        let client = Client::open("redis://127.0.0.1:1").unwrap();
        let remote = Remote::new(
            client,
            Algorithm::LeakyBucket,
            "rl:",
            Duration::from_millis(50),
            OnUnavailable::FailOpen,
            None,
        );
        let quota = remote.quota(&Rate::new(3, 1_000_000_000, 2), 250_000_000, "default");
        assert_eq!(*quota.args, ["333333.333", "2", "250000"]);
    }
}
