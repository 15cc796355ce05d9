//! One run: a cache with entries of 60 s in front of an origin of 50 ms, under one policy.

use std::collections::VecDeque;
use std::time::Duration;

use proxflow_cache::warming::{Warming, WarmingConfig};

use crate::workload::{Requests, Workload, SECOND};

/// Lifetime of every stored response.
pub const TTL: u64 = 60 * SECOND;
/// Time from a fetch's start to its response being stored.
pub const LATENCY: u64 = 50_000_000;
/// Refreshes in flight at once, at most (the layer's bound; never reached here).
const MAX_REFRESHES: usize = 64;

/// A policy under test.
#[derive(Clone, Debug)]
pub enum Policy {
    /// (a) No warming.
    None,
    /// (b) A hit after 80% of the entry's life starts a background refresh.
    OnAccess,
    /// proxflow-cache's predictive warming.
    Predictive(WarmingConfig),
    /// A ceiling for prefetching, no refreshes: after each list, the details that follow it
    /// with probability at least 0.6 (W2's three; none of W2u's), known rather than learned.
    Oracle,
}

impl Policy {
    pub fn name(&self) -> &'static str {
        match self {
            Policy::None => "(a) none",
            Policy::OnAccess => "(b) refresh-on-access 80%",
            Policy::Predictive(_) => "predictive",
            Policy::Oracle => "prefetch oracle",
        }
    }
}

/// What one run counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub requests: u64,
    pub hits: u64,
    /// Requests not answered from a fresh entry (coalesced ones included).
    pub misses: u64,
    /// Misses on a key stored before, whose entry expired.
    pub expiry_misses: u64,
    /// Misses that waited for a fetch in flight rather than making one.
    pub coalesced: u64,
    /// Origin requests for misses.
    pub demand: u64,
    pub refreshes: u64,
    pub refreshes_used: u64,
    pub prefetches: u64,
    pub prefetches_used: u64,
    /// Warm fetches the rule wanted and the origin budget refused.
    pub over_budget: u64,
    /// Keys warming tracked at the end.
    pub tracked: u64,
    /// Bytes of warming's tables at the end.
    pub memory: u64,
    /// Wall time of the run, in nanoseconds.
    pub elapsed: u64,
}

impl Counts {
    pub fn origin(&self) -> u64 {
        self.demand + self.refreshes + self.prefetches
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Kind {
    #[default]
    Demand,
    Refresh,
    Prefetch,
}

/// A key's slot in the cache.
#[derive(Clone, Copy, Default)]
struct Entry {
    expires: u64,
    stored_at: u64,
    kind: Kind,
    used: bool,
    ever_stored: bool,
    in_flight: Option<Kind>,
    in_flight_used: bool,
}

struct Cache {
    entries: Vec<Entry>,
    completions: VecDeque<(u64, u32)>,
    refreshing: usize,
    counts: Counts,
}

impl Cache {
    /// Starts a fetch of `key` at `now`.
    fn fetch(&mut self, key: u32, now: u64, kind: Kind) {
        let entry = &mut self.entries[key as usize];
        debug_assert!(entry.in_flight.is_none());
        entry.in_flight = Some(kind);
        entry.in_flight_used = false;
        self.completions.push_back((now + LATENCY, key));
        match kind {
            Kind::Demand => self.counts.demand += 1,
            Kind::Refresh => {
                self.counts.refreshes += 1;
                self.refreshing += 1;
            }
            Kind::Prefetch => self.counts.prefetches += 1,
        }
    }

    /// Counts the first use of a warm fetch.
    fn used(&mut self, kind: Kind) {
        match kind {
            Kind::Refresh => self.counts.refreshes_used += 1,
            Kind::Prefetch => self.counts.prefetches_used += 1,
            Kind::Demand => {}
        }
    }

    /// A request at `now`; whether it may start a refresh-on-access.
    fn request(&mut self, key: u32, now: u64, on_access: bool) {
        self.counts.requests += 1;
        let entry = self.entries[key as usize];
        if entry.expires > now {
            self.counts.hits += 1;
            if !entry.used {
                self.entries[key as usize].used = true;
                self.used(entry.kind);
            }
            let life = entry.expires - entry.stored_at;
            if on_access && entry.in_flight.is_none() && now >= entry.stored_at + life / 5 * 4 {
                self.fetch(key, now, Kind::Refresh);
            }
            return;
        }
        self.counts.misses += 1;
        if entry.ever_stored {
            self.counts.expiry_misses += 1;
        }
        match entry.in_flight {
            Some(kind) => {
                // Coalesced: it waits for the fetch in flight, which counts as used.
                self.counts.coalesced += 1;
                if !entry.in_flight_used {
                    self.entries[key as usize].in_flight_used = true;
                    self.used(kind);
                }
            }
            None => self.fetch(key, now, Kind::Demand),
        }
    }

    /// The oldest fetch completes at `now`: its response is stored.
    fn complete(&mut self, now: u64) -> u32 {
        let (_, key) = self.completions.pop_front().expect("a fetch in flight");
        let entry = &mut self.entries[key as usize];
        let kind = entry.in_flight.take().expect("a fetch in flight");
        if kind == Kind::Refresh {
            self.refreshing -= 1;
        }
        *entry = Entry {
            expires: now + TTL,
            stored_at: now,
            kind,
            used: entry.in_flight_used,
            ever_stored: true,
            in_flight: None,
            in_flight_used: false,
        };
        key
    }
}

fn duration(nanos: u64) -> Duration {
    Duration::from_nanos(nanos)
}

/// Runs `policy` on `workload` for `seconds` with `seed`.
pub fn run(workload: Workload, policy: &Policy, seed: u64, seconds: u64) -> Counts {
    let started = std::time::Instant::now();
    let end = seconds * SECOND;
    let mut requests = Requests::new(workload, seed, end);
    let mut cache = Cache {
        entries: vec![Entry::default(); workload.key_space()],
        completions: VecDeque::new(),
        refreshing: 0,
        counts: Counts::default(),
    };
    let mut warming = match policy {
        Policy::Predictive(config) => Some(Warming::new(config.clone())),
        _ => None,
    };
    let on_access = matches!(policy, Policy::OnAccess);
    loop {
        let next_request = requests.peek_time();
        let next_completion = cache.completions.front().map_or(u64::MAX, |c| c.0);
        let next_due = match &warming {
            Some(w) if cache.refreshing < MAX_REFRESHES => {
                w.next_due().map_or(u64::MAX, |d| d.as_nanos() as u64)
            }
            _ => u64::MAX,
        };
        let now = next_request.min(next_completion).min(next_due);
        if now >= end {
            break;
        }
        if now == next_completion {
            let key = cache.complete(now);
            if let Some(w) = &mut warming {
                w.on_stored(u64::from(key), duration(now), duration(now + TTL));
            }
        } else if now == next_due {
            let Some(w) = &mut warming else {
                unreachable!("a refresh due without warming")
            };
            for key in w.due_refreshes(duration(now), MAX_REFRESHES - cache.refreshing) {
                let entry = cache.entries[key as usize];
                if entry.in_flight.is_some() {
                    w.on_fetch_failed(key);
                } else {
                    cache.fetch(key as u32, now, Kind::Refresh);
                }
            }
        } else {
            let request = requests.next().expect("a request is next");
            debug_assert_eq!(request.at, now);
            cache.request(request.key, now, on_access);
            if matches!(policy, Policy::Oracle) {
                for follower in workload.likely_followers(request.key) {
                    let entry = cache.entries[follower as usize];
                    if entry.expires <= now && entry.in_flight.is_none() {
                        cache.fetch(follower, now, Kind::Prefetch);
                    }
                }
            }
            if let Some(w) = &mut warming {
                let key = u64::from(request.key);
                for follower in w.on_request(key, u64::from(request.client), duration(now)) {
                    let entry = cache.entries[follower as usize];
                    if entry.expires > now || entry.in_flight.is_some() {
                        w.on_fetch_failed(follower);
                    } else {
                        cache.fetch(follower as u32, now, Kind::Prefetch);
                    }
                }
            }
        }
    }
    if let Some(w) = &warming {
        cache.counts.over_budget = w.stats().over_budget;
        cache.counts.tracked = w.tracked_keys() as u64;
        cache.counts.memory = w.memory() as u64;
    }
    cache.counts.elapsed = started.elapsed().as_nanos() as u64;
    cache.counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warming_gets_more_hits_than_no_warming_on_a_short_run() {
        let none = run(Workload::W2, &Policy::None, 1, 120);
        let warm = run(
            Workload::W2,
            &Policy::Predictive(WarmingConfig::default()),
            1,
            120,
        );
        assert_eq!(none.requests, warm.requests);
        assert_eq!(none.refreshes + none.prefetches, 0);
        assert!(warm.hits > none.hits);
        assert!(warm.prefetches > 0);
        assert_eq!(none.hits + none.misses, none.requests);
    }
}
