//! Counters a running application can show.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use crate::cache::MemoryCache;

/// What the layer counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Ok,
    Partial,
    NotModified,
    PreconditionFailed,
    NotSatisfiable,
    NotFound,
    RefusedPaths,
    CacheHits,
    CacheMisses,
    Compressions,
    Revalidations,
}

impl Counter {
    const ALL: [Counter; 11] = [
        Counter::Ok,
        Counter::Partial,
        Counter::NotModified,
        Counter::PreconditionFailed,
        Counter::NotSatisfiable,
        Counter::NotFound,
        Counter::RefusedPaths,
        Counter::CacheHits,
        Counter::CacheMisses,
        Counter::Compressions,
        Counter::Revalidations,
    ];

    /// The name in [`StatsSnapshot`] and the `kind` label of the metrics.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fn name(self) -> &'static str {
        match self {
            Counter::Ok => "ok",
            Counter::Partial => "partial",
            Counter::NotModified => "not_modified",
            Counter::PreconditionFailed => "precondition_failed",
            Counter::NotSatisfiable => "not_satisfiable",
            Counter::NotFound => "not_found",
            Counter::RefusedPaths => "refused_paths",
            Counter::CacheHits => "cache_hits",
            Counter::CacheMisses => "cache_misses",
            Counter::Compressions => "compressions",
            Counter::Revalidations => "revalidations",
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    values: [AtomicU64; Counter::ALL.len()],
}

impl Counters {
    pub(crate) fn add(&self, counter: Counter) {
        self.values[counter as usize].fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("proxflow_static_events_total", "kind" => counter.name()).increment(1);
    }

    fn get(&self, counter: Counter) -> u64 {
        self.values[counter as usize].load(Ordering::Relaxed)
    }
}

/// A handle on the counters of one [`StaticLayer`](crate::StaticLayer) and every service it
/// makes, taken before or after the builder calls that configure it.
#[derive(Clone)]
pub struct Stats {
    counters: Arc<Counters>,
    /// The memory cache, once a service in production mode has made it.
    cache: Arc<OnceLock<MemoryCache>>,
}

/// A point-in-time copy of the counters; serializes to JSON for a dashboard.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// 200 responses with a file.
    pub ok: u64,
    /// 206 responses.
    pub partial: u64,
    /// 304 responses.
    pub not_modified: u64,
    /// 412 responses.
    pub precondition_failed: u64,
    /// 416 responses.
    pub not_satisfiable: u64,
    /// 404 responses.
    pub not_found: u64,
    /// Requests refused for their path (traversal, encoded separators, NUL...): 400.
    pub refused_paths: u64,
    /// Production mode: answers from the memory cache.
    pub cache_hits: u64,
    /// Production mode: loads from disk.
    pub cache_misses: u64,
    /// Files compressed in memory (once per file and coding).
    pub compressions: u64,
    /// Production mode: checks of a cached file against the disk.
    pub revalidations: u64,
    /// Files in the memory cache.
    pub cached_files: u64,
    /// Bytes the memory cache holds, by its own weighing.
    pub cached_bytes: u64,
}

impl Stats {
    pub(crate) fn new(counters: Arc<Counters>, cache: Arc<OnceLock<MemoryCache>>) -> Self {
        Stats { counters, cache }
    }

    /// Reads the counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &self.counters;
        let (cached_files, cached_bytes) = self.cache.get().map_or((0, 0), MemoryCache::usage);
        StatsSnapshot {
            ok: c.get(Counter::Ok),
            partial: c.get(Counter::Partial),
            not_modified: c.get(Counter::NotModified),
            precondition_failed: c.get(Counter::PreconditionFailed),
            not_satisfiable: c.get(Counter::NotSatisfiable),
            not_found: c.get(Counter::NotFound),
            refused_paths: c.get(Counter::RefusedPaths),
            cache_hits: c.get(Counter::CacheHits),
            cache_misses: c.get(Counter::CacheMisses),
            compressions: c.get(Counter::Compressions),
            revalidations: c.get(Counter::Revalidations),
            cached_files,
            cached_bytes,
        }
    }
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}
