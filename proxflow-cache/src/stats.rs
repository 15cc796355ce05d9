//! What the cache counts, and the handle that reads it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use crate::service::Shared;

/// What the cache counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    Hit,
    Miss,
    Stale,
    Revalidation,
    Stored,
    Coalesced,
    /// An entry dropped to keep the store within `max_size`.
    Evicted,
    /// An entry removed by an unsafe method or the webhook.
    Invalidated,
}

impl Event {
    #[cfg(feature = "metrics")]
    fn name(self) -> &'static str {
        match self {
            Event::Hit => "hit",
            Event::Miss => "miss",
            Event::Stale => "stale",
            Event::Revalidation => "revalidation",
            Event::Stored => "stored",
            Event::Coalesced => "coalesced",
            Event::Evicted => "evicted",
            Event::Invalidated => "invalidated",
        }
    }
}

/// The counters every service of a layer adds to.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    revalidations: AtomicU64,
    stored: AtomicU64,
    coalesced: AtomicU64,
    evicted: AtomicU64,
    invalidated: AtomicU64,
}

impl Counters {
    /// Counts one event, and with the `metrics` feature adds it to
    /// `proxflow_cache_events_total{event}`.
    pub(crate) fn add(&self, event: Event) {
        let counter = match event {
            Event::Hit => &self.hits,
            Event::Miss => &self.misses,
            Event::Stale => &self.stale,
            Event::Revalidation => &self.revalidations,
            Event::Stored => &self.stored,
            Event::Coalesced => &self.coalesced,
            Event::Evicted => &self.evicted,
            Event::Invalidated => &self.invalidated,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("proxflow_cache_events_total", "event" => event.name()).increment(1);
    }
}

/// A cache's figures; cheap to clone, every clone reads the same cache.
#[derive(Clone)]
pub struct CacheStats {
    pub(crate) counters: Arc<Counters>,
    /// The store, once a service was made.
    pub(crate) shared: Arc<OnceLock<Arc<Shared>>>,
}

/// The figures of a cache at one moment; serializes to JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheSnapshot {
    /// Requests answered from the store (fresh, accepted stale, or stale while revalidating).
    pub hits: u64,
    /// GET and HEAD requests with nothing stored for them.
    pub misses: u64,
    /// Stale answers: while revalidating in the background, or standing in for a failed
    /// origin (`stale-if-error`).
    pub stale: u64,
    /// Conditional requests sent to the origin for a stored response.
    pub revalidations: u64,
    /// Responses stored or refreshed.
    pub stored: u64,
    /// Requests that waited for another's origin request for their key.
    pub coalesced: u64,
    /// Entries dropped to keep the store within `max_size`.
    pub evicted: u64,
    /// Entries removed by unsafe methods and the webhook.
    pub invalidated: u64,
    /// Predictive warming: refreshes ahead of expiry made, and of those the entries
    /// requested while fresh (the others were wasted origin requests).
    pub refreshes: u64,
    /// See `refreshes`.
    pub refreshes_used: u64,
    /// Predictive warming: prefetches of what tends to follow a request, and of those the
    /// entries requested while fresh.
    pub prefetches: u64,
    /// See `prefetches`.
    pub prefetches_used: u64,
    /// Stored responses (URIs; each may hold several variants).
    pub entries: u64,
    /// Bytes held: bodies, headers, keys and the per-entry overhead.
    pub bytes: u64,
}

impl CacheStats {
    /// The figures now.
    pub fn snapshot(&self) -> CacheSnapshot {
        // The store's pending removals first, so that the counts include them.
        let bytes = self.shared.get().map_or(0, |shared| shared.store.bytes());
        let entries = self.shared.get().map_or(0, |shared| shared.store.entries());
        let warming = self
            .shared
            .get()
            .and_then(|shared| shared.warmer.as_ref())
            .map(|warmer| warmer.stats())
            .unwrap_or_default();
        let c = &*self.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CacheSnapshot {
            hits: read(&c.hits),
            misses: read(&c.misses),
            stale: read(&c.stale),
            revalidations: read(&c.revalidations),
            stored: read(&c.stored),
            coalesced: read(&c.coalesced),
            evicted: read(&c.evicted),
            invalidated: read(&c.invalidated),
            refreshes: warming.refreshes,
            refreshes_used: warming.refreshes_used,
            prefetches: warming.prefetches,
            prefetches_used: warming.prefetches_used,
            bytes,
            entries,
        }
    }
}

impl std::fmt::Debug for CacheStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}
