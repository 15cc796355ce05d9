//! Predictive warming: which stored entries to refresh before they expire, and which keys to
//! fetch before anyone asks, learned from the requests the cache sees.
//!
//! [`Warming`] is the arithmetic alone: no clock, no I/O, no tasks. The cache layer tells it
//! what happens (a request, a stored response, a failed fetch, a removal), with the time as a
//! [`Duration`] since an origin of the layer's choosing, and asks it what to fetch:
//! [`Warming::on_request`] answers with the keys to prefetch now, [`Warming::due_refreshes`]
//! with the stored keys to refresh now, and [`Warming::next_due`] says when to ask again.
//! Keys are `u64` hashes of the layer's cache keys; the layer keeps the real keys (method,
//! URI, the request to replay) and maps back.
//!
//! # The economics
//!
//! A refresh or a prefetch costs one origin request. It buys a hit when the key is requested
//! while the fetched entry is fresh; that request would otherwise have been a miss, an origin
//! request anyway. A used fetch therefore saves a miss at no extra cost, and an unused one is
//! an extra origin request.
//!
//! A refresh has a second cost: the new lifetime starts at the refresh rather than at the next
//! request. A key requested at rate λ (Poisson) whose entries live `T` costs one fetch per
//! `T + 1/λ` left alone and one per `T` refreshed at every expiry, so each refresh adds
//! `1/(1 + λT)` origin requests and saves `λT/(1 + λT)` misses: **λT hits per extra origin
//! request**. A prefetch of a key requested within its lifetime with probability `p` adds
//! `1 − p` origin requests and saves `p` misses: `p/(1 − p)` hits per extra origin request.
//!
//! Nothing that cannot see the future does better, key by key: a request is a hit only if a
//! fetch of its key less than `T` earlier covers it, so under Poisson arrivals each extra
//! fetch of a key covers at most `T` more of its time, worth at most λT hits. Warming the
//! keys with the highest λT first is the best use of any budget of extra origin requests.
//!
//! # The decision rule
//!
//! Warm when the expected hits per extra origin request reach `κ`
//! ([`WarmingConfig::min_hits_per_fetch`], default 1.5):
//!
//! - **Refresh** a stored entry ahead of its expiry when `λ̂T ≥ κ`, `λ̂` the key's estimated
//!   rate and `T` the lifetime of the entry being replaced (the next one's, presumably).
//! - **Prefetch** key B after a request for key A, B not stored and not being fetched, when
//!   `saved ≥ κ·extra`. With probability `P(B|A)` B comes within the follow window: the
//!   prefetch takes the place of its miss (saves 1, adds 0). Otherwise B is a key of its own
//!   rate `x = λ̂_B T` whose lifetime starts early, like a refresh (saves `x/(1 + x)`, adds
//!   `1/(1 + x)`). So `saved = P + (1 − P)·x/(1 + x)` and `extra = (1 − P)/(1 + x)`. For a key
//!   requested only after A this is `P/(1 − P) ≥ κ`, `P ≥ 0.6` at the default; for a key
//!   never following A, the refresh rule.
//!
//! `κ = 1` is break-even: every extra origin request buys one hit at the margin. The default
//! 1.5 spends less: on a stationary Zipf workload, about half the extra origin requests of
//! break-even for about three quarters of its hits, which keeps warming under Caffeine-style
//! refresh-on-access (a refresh for a request in the last 20% of an entry's life) in origin
//! requests while it gets more hits. For a prefetch it is the 60% precision the issue asks.
//!
//! # What is estimated
//!
//! - **Rate.** A count of the key's requests decayed with time constant `τ`
//!   ([`WarmingConfig::rate_window`], default 10 minutes: ten lifetimes of a 1-minute
//!   entry, so about 15 requests weigh in for a key at the default margin, λT = 1.5 with
//!   `T` = 60 s, and the estimate still follows a change of popularity within the quarter
//!   hour), over the time observed, decayed alike, and taken as at least one lifetime:
//!   `λ̂ = Σ e^{−age_i/τ} / τ(1 − e^{−max(observed, T)/τ})`. The request that makes a key
//!   known starts the observation and is not counted; at the first expiry of a new key `λ̂T`
//!   is about the number of hits its entry had.
//! - **Regularity.** The mean gap between requests and the mean absolute deviation of the
//!   gaps, both moving averages of weight 1/4. A key with at least four gaps whose
//!   deviation is at most a quarter of its mean is *periodic*: its next request is expected
//!   at `last + k·mean`, and its refresh is timed to complete `2·deviation + lead` before
//!   that request rather than at expiry, whether or not the entry has expired by then (a key
//!   polled every 90 s with entries of 60 s is then always a hit, at one fetch per poll as
//!   without warming). Poisson gaps deviate by `2/e ≈ 0.74` of their mean, far from periodic.
//! - **Silence.** Two refreshed lifetimes in a row without a request stop the refreshes until
//!   the next request, so that a key that is no longer requested stops costing before its
//!   rate decays (at λT = 1.5 a key stays unrequested for two lifetimes 5% of the time).
//! - **Followers.** Each client's latest four requests (a direct-mapped table of
//!   [`WarmingConfig::client_slots`] clients, default 16384; a collision loses one client's
//!   short history). A request for B by client `c` credits the link A → B for each A that
//!   `c` requested within [`WarmingConfig::follow_window`] (default 2 s, the issue's "short
//!   time"). Per key A, its occurrences and its links' counts decay by `1 − 1/m` at each
//!   occurrence of A, `m` = [`WarmingConfig::follow_memory`] (default 16: about the last 16
//!   occurrences count, so a link is learned from a key requested a few times a day as from
//!   one requested every second). A link is trusted from two observations (a count of 1.5):
//!   a client's next request after another is a link seen once, and most never repeat.
//! - **Link strength.** `P(B|A) = (count + 4μ)/(occurrences + 4)`: the posterior mean with a
//!   prior worth four occurrences of A, centred on `μ`, the mean strength of the trusted
//!   links (count over occurrences, a moving average over about the last thousand seen).
//!   A link seen twice in three occurrences of a rarely requested key is believed as strong
//!   as the links of its kind tend to be: strong where lists lead to a few details each,
//!   weak where they lead to one of many (a lucky pair among many is not mistaken for a
//!   strong link).
//!
//! # Budget and bounds
//!
//! - **Origin requests.** A token bucket on the *expected extra* origin requests: each
//!   stored response (an origin request the layer reports with [`Warming::on_stored`]) adds
//!   [`WarmingConfig::budget`] tokens (default 0.25), up to [`WarmingConfig::budget_burst`]
//!   (default 100); each refresh spends `1/(1 + λ̂T)`, each prefetch its `extra`, each
//!   periodic refresh 0.1. What cannot be paid for is not fetched (counted in
//!   [`WarmingStats::over_budget`]). The rule decides what is worth its cost; the budget is
//!   the ceiling for a workload that offers more worth doing than an origin should take: a
//!   quarter more requests than the origin would have served anyway.
//! - **Concurrency.** The layer's: [`Warming::due_refreshes`] returns at most the number of
//!   refreshes the layer can start now; those left stay due. A request returns at most
//!   [`WarmingConfig::max_followers`] prefetches.
//! - **Memory.** At most [`WarmingConfig::max_keys`] keys (default 262144) of about 180 bytes
//!   each at a full table: 88 of state, about 26 of index, 48 for four follower links (12
//!   each, in one arena, allocated at a key's first link), 16 or 32 in the refresh queue;
//!   about 45 MB at the default. The client table is fixed (72 bytes a slot, 1.2 MB at the
//!   default). When the key table is full, a new key replaces the least valuable of 8
//!   sampled keys: the lowest decayed request count, times one plus its trusted links (among
//!   rarely requested keys, a leader's links pay for its prefetches and take a few
//!   occurrences to learn again). [`WarmingConfig::max_followers`] (default 4: a list's
//!   first details and some noise) bounds the links; a new link replaces a key's weakest
//!   only when that one weighs less than one observation, so noise does not push out
//!   established links. The refresh queue is rebuilt without its stale entries when it
//!   holds more than twice as many as there are keys. [`Warming::memory`] gives the total.
//! - **Lead.** A refresh is due [`WarmingConfig::refresh_lead`] before expiry (default 1 s,
//!   above most origins' latency: an entry refreshed 1 s early loses 1/60 of a minute's
//!   lifetime, a refresh that lands after expiry lets the requests in between miss).
//!
//! # Driving it
//!
//! - [`Warming::on_request`] for each GET (or HEAD) the cache could answer, hit or miss,
//!   with a client id (a hash of the address, or of a session cookie). Followers are learned
//!   from these requests only, so prefetches are GETs of keys seen as GETs. Fetch what it
//!   returns in the background, after checking the store (warming's view of it comes from
//!   these calls and can lag).
//! - [`Warming::on_stored`] after every response stored, whatever fetched it, with its
//!   expiry; [`Warming::on_fetch_failed`] when a fetch it asked for fails, is not made, or
//!   gives a response that is not stored; [`Warming::on_removed`] when an entry is evicted,
//!   invalidated or purged.
//! - [`Warming::due_refreshes`] at [`Warming::next_due`] (or on a timer), with the number of
//!   refreshes the layer can start; refresh each key returned with the stored request
//!   (conditionally, when it has validators).
//! - Every call takes `&mut self`: one `Warming` behind a mutex, or one per shard of keys
//!   (followers are then learned within a shard only). A request touches a handful of table
//!   entries (the key's index entry and state, its client's slot, its links, its followers'
//!   states), so its cost is a few cache misses; the layer can make the call after the answer
//!   is on its way.

mod clients;
mod keys;
mod links;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use clients::Clients;
use keys::{secs, Fetch, KeyState, Keys, MIN_LINK, NO_DUE};

/// The expected extra origin requests charged to a periodic key's refresh: its request is
/// expected within the refreshed lifetime, so it is rarely wasted.
const PERIODIC_COST: f64 = 0.1;

/// A fetch warming asked for and never heard of again is forgotten after this long, so that a
/// lost [`Warming::on_fetch_failed`] does not stop a key's warming for good.
const PENDING_TIMEOUT: u64 = 30_000_000_000;

/// The weight of the prior of a link's strength, in occurrences of its leader.
const LINK_PRIOR: f64 = 4.0;

/// About how many of the latest trusted links' strengths make their mean.
const LINK_MEAN_SAMPLES: u32 = 1024;

/// Refreshed lifetimes in a row without a request after which refreshes stop.
const MAX_UNUSED: u8 = 2;

/// The parameters of [`Warming`]. The module documentation explains each default.
#[derive(Clone, Debug, PartialEq)]
pub struct WarmingConfig {
    /// `κ`: the hits a refresh or a prefetch must be expected to buy per extra origin request.
    /// Default 1.5.
    pub min_hits_per_fetch: f64,
    /// `τ`: the time constant of the request-rate estimate. Default 10 minutes.
    pub rate_window: Duration,
    /// How long before expiry a refresh is due. Default 1 s.
    pub refresh_lead: Duration,
    /// How soon after a request of the same client a request counts as following it.
    /// Default 2 s.
    pub follow_window: Duration,
    /// About how many of a key's latest occurrences its links are learned from. Default 16.
    pub follow_memory: u32,
    /// The most follower links kept per key. Default 4.
    pub max_followers: usize,
    /// The most keys tracked. Default 262144.
    pub max_keys: usize,
    /// Slots of the table of clients' latest requests (rounded up to a power of two).
    /// Default 16384.
    pub client_slots: usize,
    /// Expected extra origin requests allowed per origin request. Default 0.25.
    pub budget: f64,
    /// The most expected extra origin requests that can be spent at once. Default 100.
    pub budget_burst: f64,
    /// Seed of the sampling that chooses which key to forget when the table is full.
    pub seed: u64,
}

impl Default for WarmingConfig {
    fn default() -> Self {
        Self {
            min_hits_per_fetch: 1.5,
            rate_window: Duration::from_secs(600),
            refresh_lead: Duration::from_secs(1),
            follow_window: Duration::from_secs(2),
            follow_memory: 16,
            max_followers: 4,
            max_keys: 1 << 18,
            client_slots: 1 << 14,
            budget: 0.25,
            budget_burst: 100.0,
            seed: 0x5EED,
        }
    }
}

/// What warming asked for and what came of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WarmingStats {
    /// Refreshes returned by [`Warming::due_refreshes`].
    pub refreshes: u64,
    /// Refreshed entries requested while fresh or while being fetched.
    pub refreshes_used: u64,
    /// Prefetches returned by [`Warming::on_request`].
    pub prefetches: u64,
    /// Prefetched entries requested while fresh or while being fetched.
    pub prefetches_used: u64,
    /// Refreshes and prefetches the rule wanted and the origin budget did not allow.
    pub over_budget: u64,
}

/// What to do with an entry whose refresh is due.
enum Decision {
    /// Refresh now, at this expected extra cost in origin requests.
    Refresh(f64),
    /// A periodic key: refresh at this time, before its next expected request.
    Later(u64),
    /// Let it expire.
    No,
}

/// Predictive warming's state: per key, its request rate, regularity and followers; per
/// client, its latest requests; the refreshes due; the origin budget. See the module
/// documentation.
pub struct Warming {
    config: WarmingConfig,
    tau: f64,
    lead: u64,
    window: u64,
    decay: f32,
    link_mean: f64,
    link_samples: u32,
    keys: Keys,
    clients: Clients,
    due: BinaryHeap<Reverse<(u64, u64)>>,
    tokens: f64,
    stats: WarmingStats,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Warming {
    /// Warming with these parameters.
    ///
    /// # Panics
    ///
    /// If `min_hits_per_fetch` is not positive, `rate_window` is zero, `budget` or
    /// `budget_burst` is negative, or `follow_memory` is zero.
    pub fn new(config: WarmingConfig) -> Self {
        assert!(
            config.min_hits_per_fetch > 0.0,
            "min_hits_per_fetch must be positive"
        );
        assert!(
            !config.rate_window.is_zero(),
            "rate_window must not be zero"
        );
        assert!(
            config.budget >= 0.0 && config.budget_burst >= 0.0,
            "the budget must not be negative"
        );
        assert!(config.follow_memory > 0, "follow_memory must not be zero");
        Self {
            tau: config.rate_window.as_secs_f64(),
            lead: nanos(config.refresh_lead),
            window: nanos(config.follow_window),
            decay: 1.0 - 1.0 / config.follow_memory as f32,
            link_mean: 0.5,
            link_samples: 0,
            keys: Keys::new(config.max_keys, config.max_followers, config.seed),
            clients: Clients::new(config.client_slots),
            due: BinaryHeap::new(),
            tokens: config.budget_burst,
            stats: WarmingStats::default(),
            config,
        }
    }

    /// The parameters.
    pub fn config(&self) -> &WarmingConfig {
        &self.config
    }

    /// What warming asked for so far and what came of it.
    pub fn stats(&self) -> WarmingStats {
        self.stats
    }

    /// The number of keys tracked (at most [`WarmingConfig::max_keys`]).
    pub fn tracked_keys(&self) -> usize {
        self.keys.len()
    }

    /// A request for `key` by `client` at `now`, hit or miss: learns from it, and returns the
    /// keys to prefetch now (followers of `key` likely to be requested soon, not stored and
    /// not being fetched), at most [`WarmingConfig::max_followers`].
    pub fn on_request(&mut self, key: u64, client: u64, now: Duration) -> Vec<u64> {
        let now = nanos(now);
        let tau = self.tau;
        let (i, new) = self.keys.get_or_insert(key, now, tau);
        let state = self.keys.at_mut(i);
        state.request(now, tau, !new);
        if state.is_stored(now) {
            mark_used(state, &mut self.stats);
        } else if pending(state, now) {
            state.pending_used = true;
        }

        let keys = &mut self.keys;
        self.clients
            .record(client, key, now, self.window, |leader| {
                keys.credit(leader, key)
            });

        // Crediting links does not insert keys: `i` still holds.
        let candidates = self.prefetch_candidates(self.keys.at(i), now);
        // The trusted links' observed strengths feed the prior of every link.
        let (mean, samples) = (&mut self.link_mean, &mut self.link_samples);
        self.keys.occurrence(i, self.decay, |strength| {
            // The plain mean of the first strengths seen, then a moving average.
            *samples = (*samples + 1).min(LINK_MEAN_SAMPLES);
            *mean += (strength - *mean) / f64::from(*samples);
        });
        let mut prefetches = Vec::new();
        for (follower, cost) in candidates {
            if !self.spend(cost) {
                continue;
            }
            // A follower no longer tracked is fetched all the same; its store tracks it again.
            if let Some(state) = self.keys.get_mut(follower) {
                state.fetching(Fetch::Prefetch, now);
            }
            self.stats.prefetches += 1;
            prefetches.push(follower);
        }
        prefetches
    }

    /// The followers of `leader` worth prefetching at `now`, with their expected extra cost.
    fn prefetch_candidates(&self, leader: &KeyState, now: u64) -> Vec<(u64, f64)> {
        let mut candidates = Vec::new();
        let leader_ttl = lifetime(leader);
        let (followers, counts) = self.keys.followers(leader);
        for (&follower, &count) in followers.iter().zip(counts) {
            if count < MIN_LINK {
                continue;
            }
            let given = self.given(count, leader.occurrences);
            // The follower's own requests expected within the prefetched lifetime.
            let own = match self.keys.get(follower) {
                Some(f) if f.is_stored(now) || pending(f, now) => continue,
                Some(f) => {
                    let ttl = if f.stored_at > 0 {
                        lifetime(f)
                    } else {
                        leader_ttl
                    };
                    f.rate(now, self.tau, secs(ttl)) * secs(ttl)
                }
                None => 0.0,
            };
            let (saved, extra) = prefetch_value(given, own);
            if saved >= self.config.min_hits_per_fetch * extra {
                candidates.push((follower, extra));
            }
        }
        candidates
    }

    /// `P(follower | leader)` for a link of this count, its leader of these occurrences: the
    /// mean of the posterior with the trusted links' mean strength as the prior, weighing
    /// [`LINK_PRIOR`] occurrences.
    fn given(&self, count: f32, occurrences: f32) -> f64 {
        let p = (f64::from(count) + LINK_PRIOR * self.link_mean)
            / (f64::from(occurrences) + LINK_PRIOR);
        // A key requested twice after one occurrence of its leader counts twice: at most 1.
        p.min(1.0)
    }

    /// A response for `key` was stored at `now`, fresh until `expires_at`: a miss's, or a
    /// refresh's or prefetch's that warming asked for.
    pub fn on_stored(&mut self, key: u64, now: Duration, expires_at: Duration) {
        let now = nanos(now);
        let expires_at = nanos(expires_at);
        self.tokens = (self.tokens + self.config.budget).min(self.config.budget_burst);
        let (i, _) = self.keys.get_or_insert(key, now, self.tau);
        let state = self.keys.at_mut(i);
        if pending(state, now) {
            state.stored_by = state.pending;
            state.used = false;
            if state.pending_used {
                mark_used(state, &mut self.stats);
            }
        } else {
            state.stored_by = Fetch::Demand;
            state.used = false;
        }
        state.pending = Fetch::Demand;
        state.pending_used = false;
        state.stored_at = now;
        state.expires_at = expires_at;
        state.due_predicted = false;
        // An entry that lives less than two leads is not worth a refresh ahead of expiry.
        if expires_at > now.saturating_add(self.lead.saturating_mul(2)) {
            let due = expires_at - self.lead;
            state.due_at = due;
            self.due.push(Reverse((due, key)));
            self.compact_queue();
        } else {
            state.due_at = NO_DUE;
        }
    }

    /// A refresh or prefetch of `key` that warming asked for failed, was not made, or gave a
    /// response that is not stored.
    pub fn on_fetch_failed(&mut self, key: u64) {
        if let Some(state) = self.keys.get_mut(key) {
            state.pending = Fetch::Demand;
            state.pending_used = false;
        }
    }

    /// The stored entry for `key` is gone (evicted, invalidated, purged): nothing to refresh.
    /// What was learned of the key stays.
    pub fn on_removed(&mut self, key: u64) {
        if let Some(state) = self.keys.get_mut(key) {
            state.expires_at = 0;
            state.due_at = NO_DUE;
        }
    }

    /// When a refresh may be due next (perhaps one that no longer is), if any.
    pub fn next_due(&self) -> Option<Duration> {
        self.due
            .peek()
            .map(|Reverse((due, _))| Duration::from_nanos(*due))
    }

    /// The keys to refresh now, at most `max` (the refreshes the layer can start now; those
    /// left stay due). Fetch each and report it with [`Warming::on_stored`] or
    /// [`Warming::on_fetch_failed`].
    pub fn due_refreshes(&mut self, now: Duration, max: usize) -> Vec<u64> {
        let now = nanos(now);
        let mut refreshes = Vec::new();
        while refreshes.len() < max {
            let Some(&Reverse((due, key))) = self.due.peek() else {
                break;
            };
            if due > now {
                break;
            }
            self.due.pop();
            let Some(state) = self.keys.get_mut(key) else {
                continue;
            };
            if state.due_at != due {
                continue;
            }
            state.due_at = NO_DUE;
            if pending(state, now) {
                continue;
            }
            match decide(
                state,
                now,
                self.tau,
                self.lead,
                self.config.min_hits_per_fetch,
            ) {
                Decision::Refresh(cost) => {
                    if self.spend(cost) {
                        // Spending does not touch the key: look it up again.
                        if let Some(state) = self.keys.get_mut(key) {
                            state.fetching(Fetch::Refresh, now);
                        }
                        self.stats.refreshes += 1;
                        refreshes.push(key);
                    }
                }
                Decision::Later(at) => {
                    state.due_at = at;
                    state.due_predicted = true;
                    self.due.push(Reverse((at, key)));
                }
                Decision::No => {}
            }
        }
        refreshes
    }

    /// Takes `cost` from the origin budget if it holds that much.
    fn spend(&mut self, cost: f64) -> bool {
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            self.stats.over_budget += 1;
            false
        }
    }

    /// Drops the refresh queue's stale entries when they outnumber the keys.
    fn compact_queue(&mut self) {
        if self.due.len() > 2 * self.keys.len() + 1024 {
            let keys = &self.keys;
            self.due
                .retain(|Reverse((due, key))| keys.get(*key).is_some_and(|s| s.due_at == *due));
        }
    }

    /// The followers of `key` learned so far, with `P(follower | key)`, strongest first (for
    /// tests and diagnostics).
    pub fn followers(&self, key: u64) -> Vec<(u64, f64)> {
        let Some(state) = self.keys.get(key) else {
            return Vec::new();
        };
        let (followers, counts) = self.keys.followers(state);
        let mut links: Vec<(u64, f64)> = followers
            .iter()
            .zip(counts)
            .map(|(&k, &c)| (k, self.given(c, state.occurrences)))
            .collect();
        links.sort_by(|a, b| b.1.total_cmp(&a.1));
        links
    }

    /// The estimated request rate of `key` at `now`, per second (for tests and diagnostics).
    pub fn rate(&self, key: u64, now: Duration) -> f64 {
        self.keys
            .get(key)
            .map_or(0.0, |s| s.rate(nanos(now), self.tau, 0.0))
    }

    /// The number of follower links kept, over every key.
    pub fn links(&self) -> usize {
        self.keys.iter().map(|s| usize::from(s.link_len)).sum()
    }

    /// The bytes warming's tables hold: keys, links, clients, the refresh queue.
    pub fn memory(&self) -> usize {
        self.keys.bytes()
            + self.clients.bytes()
            + self.due.capacity() * std::mem::size_of::<Reverse<(u64, u64)>>()
    }
}

/// The lifetime of the key's latest stored entry, in nanoseconds (0 if none was stored).
fn lifetime(state: &KeyState) -> u64 {
    state.expires_at.saturating_sub(state.stored_at)
}

/// The misses a prefetch is expected to save and the origin requests it is expected to add,
/// for a follower that comes within the follow window with probability `given` and is
/// otherwise requested `own` times per lifetime (Poisson). If it comes, the prefetch takes the
/// place of its miss's fetch; if not, the prefetch is a refresh of a key of rate `own`: its
/// lifetime starts early, which saves `own/(1 + own)` misses for `1/(1 + own)` extra origin
/// requests (see the module documentation).
fn prefetch_value(given: f64, own: f64) -> (f64, f64) {
    let saved = given + (1.0 - given) * own / (1.0 + own);
    let extra = (1.0 - given) / (1.0 + own);
    (saved, extra)
}

/// Whether a fetch warming asked for is in flight for the key.
fn pending(state: &KeyState, now: u64) -> bool {
    state.pending != Fetch::Demand && now.saturating_sub(state.pending_since) < PENDING_TIMEOUT
}

/// Counts the first request of a warmed entry.
fn mark_used(state: &mut KeyState, stats: &mut WarmingStats) {
    if state.used {
        return;
    }
    state.used = true;
    match state.stored_by {
        Fetch::Refresh => stats.refreshes_used += 1,
        Fetch::Prefetch => stats.prefetches_used += 1,
        Fetch::Demand => {}
    }
}

/// Whether to refresh an entry whose refresh is due at `now`.
fn decide(state: &mut KeyState, now: u64, tau: f64, lead: u64, kappa: f64) -> Decision {
    if state.due_predicted {
        // A periodic key's refresh, timed before its next expected request.
        state.due_predicted = false;
        return Decision::Refresh(PERIODIC_COST);
    }
    if state.stored_by == Fetch::Refresh && !state.used {
        state.unused_streak = state.unused_streak.saturating_add(1);
    }
    if state.unused_streak >= MAX_UNUSED {
        return Decision::No;
    }
    let ttl = lifetime(state);
    if let Some(decision) = periodic(state, now, lead, ttl) {
        return decision;
    }
    let expected = state.rate(now, tau, secs(ttl)) * secs(ttl);
    if expected >= kappa {
        Decision::Refresh(1.0 / (1.0 + expected))
    } else {
        Decision::No
    }
}

/// For a periodic key, when to refresh so that the entry is fresh at its next expected
/// request; `None` if the key is not periodic (or no longer requested).
fn periodic(state: &KeyState, now: u64, lead: u64, ttl: u64) -> Option<Decision> {
    if state.gaps < 4 || state.gap_mean <= 0.0 || state.gap_dev > state.gap_mean / 4.0 {
        return None;
    }
    let period = (f64::from(state.gap_mean) * 1e9) as u64;
    let margin = (2.0 * f64::from(state.gap_dev) * 1e9) as u64 + lead;
    if period == 0 || now.saturating_sub(state.last_seen) > 2 * period + margin {
        return None;
    }
    // The refreshed entry must cover the whole window of the expected request.
    if ttl < 2 * margin + lead {
        return None;
    }
    // The first expected request the stored entry does not cover.
    let covered = state.expires_at.saturating_sub(margin);
    let k = covered.saturating_sub(state.last_seen) / period + 1;
    let next = state.last_seen + k * period;
    let start = next.saturating_sub(margin + lead);
    Some(if start <= now {
        Decision::Refresh(PERIODIC_COST)
    } else {
        Decision::Later(start)
    })
}

#[cfg(test)]
mod tests;
