//! The synced mode: each instance decides on its own, with its own limiter, and every
//! `sync_interval` a background task shares what it admitted and learns what the others did.
//!
//! The instance tracks the keys it had requests for lately, and counts each one's admissions
//! since its last sync. A sync runs one script per tracked key, in pipelines of [`BATCH`]
//! (sync_bucket.lua, sync_window.lua): it adds the count to the key's record in Redis (the
//! total of every instance's admissions, and the algorithm's state over them) and answers the
//! record. The others' admissions since this instance's last sync are the total's growth less
//! its own; a key the instance has not synced before (or a record made again after it expired
//! or Redis lost it) gives instead the admissions the record's state still holds. Either is
//! folded into the instance's own state of the key as admissions made at the sync that cannot
//! be refused (`algorithm::bucket_fold` and the others), which is never more lenient than
//! counting them when they happened.
//!
//! So an instance misses only the others' admissions since their last sync before its own: at
//! most two intervals and two syncs' round trips of them. That is the overshoot bound the
//! layer documents ([`RateLimitLayer::sync_interval`](crate::RateLimitLayer::sync_interval)).
//!
//! While Redis is unavailable the syncs send nothing, decisions stay local, and each key's
//! admissions are kept, at most [`Track::kept`] a key, for the first sync after it is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use proxflow_core::clock::nanos;
use redis::RedisResult;
use tokio::time::{Instant, MissedTickBehavior};

use super::{fails_alone, Remote};
use crate::algorithm::{Nanos, Rate};
use crate::key::KeyHash;
use crate::limiter::Limiter;
use crate::shared::Shared;

/// Keys per pipeline: a sync of more keys sends several, one after another, so that neither
/// side builds one huge reply.
const BATCH: usize = 512;

/// Shards of the table of tracked keys: requests on both cores record their admissions into it.
const SHARDS: usize = 16;

/// How long a key's record in Redis outlives its state: instances that sync the key every
/// interval keep it, and a sync that comes late still finds it.
pub(crate) fn linger(interval: Duration) -> Nanos {
    nanos(interval).saturating_mul(3)
}

/// The synced mode's state in a layer: the keys this instance tracks, and the connection.
pub(crate) struct Synced {
    pub(crate) remote: Arc<Remote>,
    interval: Duration,
    shards: Box<[Mutex<HashMap<u64, Entry>>]>,
    /// The layer's `max_keys`: the tracked keys are bounded as the key table is.
    max_keys: usize,
    len: AtomicUsize,
    /// Whether the sync task runs.
    started: AtomicBool,
    /// Syncs done with Redis.
    syncs: AtomicU64,
    /// Whether a key left untracked for lack of room was reported already.
    warned_full: AtomicBool,
    /// The layer's state, for the sync task.
    me: Weak<Shared>,
}

/// A tracked key.
struct Entry {
    /// Its record's key in Redis, after the layer's prefix.
    digest: [u8; 16],
    /// The key as its limiter takes it.
    key: KeyHash,
    /// Its quota tier's limiter, or `None` for the layer's own.
    tier: Option<Arc<Limiter>>,
    /// Admissions not shared yet: those since the last sync, and those a sync under way has
    /// sent, until Redis has answered it. A sync that fails, or never ends (its task dropped
    /// with the runtime), leaves them for the next.
    pending: u32,
    /// The record as the last sync left it.
    seen: Seen,
    /// When the key last had a request.
    last_request: Nanos,
}

/// How a key of a quota is tracked (kept with the quota, not with each key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Track {
    /// Admissions kept for a sync at most: what one instance may admit in a period and an
    /// interval, `burst + rate × (ceil(interval / per) + 1)`, more than a sync ever carries
    /// while Redis answers. While it does not, the rest are forgotten, so that a long outage
    /// does not turn into as long a refusal on the other instances once it is over.
    pub(crate) kept: u32,
    /// A key without requests this long is no longer synced: its own admissions have left
    /// its state (`max(per, burst × per / rate)`), and two more intervals have passed.
    pub(crate) forget_after: Nanos,
}

impl Track {
    pub(crate) fn new(rate: &Rate, interval: Duration) -> Track {
        let interval = nanos(interval);
        let periods = interval.div_ceil(rate.per_ns).saturating_add(1);
        let kept =
            u64::from(rate.burst).saturating_add(u64::from(rate.rate).saturating_mul(periods));
        let state = rate
            .per_ns
            .max(rate.interval().saturating_mul(u64::from(rate.burst)));
        Track {
            kept: u32::try_from(kept).unwrap_or(u32::MAX),
            forget_after: state.saturating_add(interval.saturating_mul(2)),
        }
    }
}

/// A record as a sync leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    /// When the record was made (Redis's microseconds since 2023, never 0): another epoch is
    /// another record.
    epoch: u64,
    /// Every admission it has counted.
    total: u64,
}

impl Seen {
    /// No record seen yet.
    const NONE: Seen = Seen { epoch: 0, total: 0 };

    fn known(self) -> Option<Seen> {
        (self.epoch != 0).then_some(self)
    }
}

/// A record's answer to one sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    epoch: u64,
    total: u64,
    /// The admissions the record's state still holds (the instance's own included).
    held: u64,
}

impl Record {
    fn from_reply((epoch, total, held): (i64, i64, i64)) -> Record {
        let whole = |value: i64| u64::try_from(value).unwrap_or(0);
        Record {
            epoch: whole(epoch),
            total: whole(total),
            held: whole(held),
        }
    }
}

/// The others' admissions a sync tells of, to fold into this instance's state: those since the
/// last sync if this instance synced the same record before (its total grew by them and by the
/// `pushed` admissions just sent), else those the record's state still holds, less the
/// `pushed` ones, which are in this instance's state already.
pub(crate) fn others(seen: Option<Seen>, pushed: u64, record: Record) -> u64 {
    match seen {
        Some(seen) if seen.epoch == record.epoch && record.total >= seen.total + pushed => {
            record.total - seen.total - pushed
        }
        _ => record.held.min(record.total).saturating_sub(pushed),
    }
}

/// One key's part of a sync.
struct Pushed {
    shard: usize,
    salted: u64,
    digest: [u8; 16],
    count: u32,
    args: Arc<[String]>,
}

impl Synced {
    pub(crate) fn new(
        remote: Arc<Remote>,
        interval: Duration,
        max_keys: usize,
        me: Weak<Shared>,
    ) -> Synced {
        Synced {
            remote,
            interval,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max_keys: max_keys.max(1),
            len: AtomicUsize::new(0),
            started: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
            warned_full: AtomicBool::new(false),
            me,
        }
    }

    /// Notes one request of `key` under `limiter` (the layer's, or `tier`'s), admitted or not,
    /// at `now`. A key not tracked yet is tracked from now on, under its Redis key (after the
    /// prefix) `digest()`, made only then (it costs a SHA-256 of the key).
    #[inline]
    pub(crate) fn record(
        &self,
        default: &Limiter,
        tier: Option<&Arc<Limiter>>,
        key: KeyHash,
        admitted: bool,
        now: Nanos,
        digest: impl FnOnce() -> [u8; 16],
    ) {
        self.start();
        let limiter = tier.map_or(default, |tier| &**tier);
        let salted = limiter.salted(key);
        let mut shard = self.shard(shard_of(salted));
        if let Some(entry) = shard.get_mut(&salted) {
            entry.last_request = now;
            if admitted {
                entry.pending = entry.pending.saturating_add(1).min(track(limiter).kept);
            }
            return;
        }
        if !self.take_place(&mut shard, default, now) {
            drop(shard);
            if !self.warned_full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max_keys = self.max_keys,
                    "synced rate limits: `max_keys` keys are synced already; the admissions of \
                     further keys stay this instance's own until some go idle (warned once per \
                     layer)"
                );
            }
            return;
        }
        shard.insert(
            salted,
            Entry {
                digest: digest(),
                key,
                tier: tier.cloned(),
                pending: u32::from(admitted),
                seen: Seen::NONE,
                last_request: now,
            },
        );
    }

    /// Room for one more tracked key: from the bound, or from this shard's idle keys.
    fn take_place(&self, shard: &mut HashMap<u64, Entry>, default: &Limiter, now: Nanos) -> bool {
        let free = |len: usize| (len < self.max_keys).then_some(len + 1);
        if self
            .len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, free)
            .is_ok()
        {
            return true;
        }
        let before = shard.len();
        shard.retain(|_, entry| !entry.idle(default, now));
        self.len.fetch_sub(before - shard.len(), Ordering::Relaxed);
        self.len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, free)
            .is_ok()
    }

    /// Starts the sync task on the first request inside a tokio runtime.
    #[inline]
    fn start(&self) {
        if self.started.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            if !self.started.swap(true, Ordering::AcqRel) {
                runtime.spawn(run(self.me.clone(), self.interval));
            }
        }
    }

    fn shard(&self, index: usize) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// One sync: every tracked key's admissions sent, the others' folded in.
    async fn sync(&self, shared: &Shared) {
        let now = shared.clock.now_ns();
        let mut pushed = Vec::new();
        for index in 0..self.shards.len() {
            let mut shard = self.shard(index);
            let before = shard.len();
            shard.retain(|_, entry| !entry.idle(&shared.limiter, now));
            self.len.fetch_sub(before - shard.len(), Ordering::Relaxed);
            for (&salted, entry) in shard.iter() {
                let limiter = entry.limiter(&shared.limiter);
                let Some(quota) = &limiter.remote else {
                    continue;
                };
                pushed.push(Pushed {
                    shard: index,
                    salted,
                    digest: entry.digest,
                    count: entry.pending,
                    args: Arc::clone(&quota.args),
                });
            }
        }
        if pushed.is_empty() || self.remote.connected() == Some(false) {
            // Known to be down: the probe reconnects, the counts wait for it.
            return;
        }
        let timeout = self.interval.max(self.remote.timeout);
        let script = self.remote.script();
        for batch in pushed.chunks(BATCH) {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            pipe.load_script(script).ignore();
            let mut redis_key = self.remote.prefix.to_vec();
            let prefix = redis_key.len();
            for key in batch {
                redis_key.truncate(prefix);
                redis_key.extend_from_slice(&key.digest);
                let mut invocation = script.key(&redis_key);
                invocation.arg(key.count);
                for arg in key.args.iter() {
                    invocation.arg(arg.as_str());
                }
                pipe.invoke_script(&invocation);
            }
            type Replies = Vec<RedisResult<(i64, i64, i64)>>;
            // Without an answer the counts stay pending, to be sent again: if Redis counted them
            // before the answer was lost, they are counted twice, which errs on the side of
            // refusing.
            match self.remote.pipeline::<Replies>(&pipe, timeout).await {
                Ok(replies) if replies.len() == batch.len() => self.settle(shared, batch, replies),
                _ => return,
            }
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }

    /// The answers of one pipeline: the others' admissions folded in, and the keys whose
    /// script failed kept for the next sync.
    fn settle(
        &self,
        shared: &Shared,
        batch: &[Pushed],
        replies: Vec<RedisResult<(i64, i64, i64)>>,
    ) {
        let mut folds = Vec::new();
        for (key, reply) in batch.iter().zip(replies) {
            let record = match reply {
                Ok(reply) => Record::from_reply(reply),
                Err(error) => {
                    if fails_alone(&error) {
                        self.remote.script_failed(&error);
                    }
                    continue;
                }
            };
            let mut shard = self.shard(key.shard);
            let Some(entry) = shard.get_mut(&key.salted) else {
                continue;
            };
            let count = others(entry.seen.known(), u64::from(key.count), record);
            entry.seen = Seen {
                epoch: record.epoch,
                total: record.total,
            };
            // Those admitted since the sync began stay for the next.
            entry.pending = entry.pending.saturating_sub(key.count);
            if count > 0 {
                folds.push((entry.tier.clone(), entry.key, count));
            }
        }
        // Outside the table's locks: a fold takes the key table's.
        for (tier, key, count) in folds {
            tier.as_deref().unwrap_or(&shared.limiter).fold(key, count);
        }
    }

    /// Tracked keys, admissions not shared yet, and syncs done.
    pub(crate) fn figures(&self) -> (u64, u64, u64) {
        let unshared = (0..self.shards.len())
            .map(|index| {
                self.shard(index)
                    .values()
                    .map(|entry| u64::from(entry.pending))
                    .sum::<u64>()
            })
            .sum();
        (
            self.len.load(Ordering::Relaxed) as u64,
            unshared,
            self.syncs.load(Ordering::Relaxed),
        )
    }
}

impl Entry {
    fn limiter<'a>(&'a self, default: &'a Limiter) -> &'a Limiter {
        self.tier.as_deref().unwrap_or(default)
    }

    /// Nothing to send and no request for long enough: no longer synced.
    fn idle(&self, default: &Limiter, now: Nanos) -> bool {
        self.pending == 0
            && now.saturating_sub(self.last_request) >= track(self.limiter(default)).forget_after
    }
}

/// How the keys of `limiter`'s quota are tracked.
fn track(limiter: &Limiter) -> Track {
    limiter
        .remote
        .as_ref()
        .and_then(|quota| quota.track)
        .expect("the limiters of a synced layer have a synced quota")
}

fn shard_of(salted: u64) -> usize {
    // The high bits: the low ones pick the hash map's buckets.
    ((u128::from(salted) * SHARDS as u128) >> 64) as usize
}

/// Syncs every `interval` while the layer lives. Holds it weakly between syncs: a layer no
/// service uses any more ends its task.
async fn run(shared: Weak<Shared>, interval: Duration) {
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Some(synced) = shared.synced.as_ref() else {
            return;
        };
        synced.sync(&shared).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Nanos = 1_000_000_000;

    fn record(epoch: u64, total: u64, held: u64) -> Record {
        Record { epoch, total, held }
    }

    #[test]
    fn the_others_are_the_totals_growth_less_this_instances_own() {
        let seen = Some(Seen {
            epoch: 7,
            total: 100,
        });
        // 5 sent now; the total grew by 12: 7 were the others'.
        assert_eq!(others(seen, 5, record(7, 112, 40)), 7);
        assert_eq!(others(seen, 0, record(7, 100, 0)), 0);
    }

    #[test]
    fn a_new_record_or_a_first_sync_takes_what_the_state_holds() {
        // First sync of the key here: the state holds 9, 3 of them this instance's.
        assert_eq!(others(None, 3, record(7, 50, 9)), 6);
        // Never more than the record has counted.
        assert_eq!(others(None, 3, record(7, 5, 9)), 2);
        assert_eq!(others(None, 3, record(7, 3, 3)), 0);
        // The record expired or Redis lost it: another epoch, a total that restarted.
        let seen = Some(Seen {
            epoch: 7,
            total: 100,
        });
        assert_eq!(others(seen, 4, record(9, 10, 10)), 6);
        assert_eq!(others(seen, 4, record(7, 10, 10)), 6, "a total that shrank");
    }

    #[test]
    fn a_tracked_key_is_small() {
        // With the hash map's control byte, at its load of 7/16 to 7/8: 84 to 167 bytes.
        let size = std::mem::size_of::<(u64, Entry)>();
        assert!(size <= 72, "{size} bytes");
    }

    #[test]
    fn tracking_keeps_a_periods_and_an_intervals_worth() {
        let rate = Rate::new(100, SECOND, 20);
        let track = Track::new(&rate, Duration::from_millis(100));
        assert_eq!(track.kept, 20 + 100 * 2);
        assert_eq!(track.forget_after, SECOND + 2 * SECOND / 10);
        // A long interval keeps as many periods; a burst longer than the period waits it out.
        let rate = Rate::new(10, SECOND, 50);
        let track = Track::new(&rate, Duration::from_secs(3));
        assert_eq!(track.kept, 50 + 10 * 4);
        assert_eq!(track.forget_after, 5 * SECOND + 6 * SECOND);
    }
}
