//! Counters a running application can show.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::service::Shared;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) ok: AtomicU64,
    pub(crate) partial: AtomicU64,
    pub(crate) not_modified: AtomicU64,
    pub(crate) precondition_failed: AtomicU64,
    pub(crate) not_satisfiable: AtomicU64,
    pub(crate) not_found: AtomicU64,
    pub(crate) refused_paths: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    pub(crate) compressions: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A handle on the counters of one [`StaticLayer`](crate::StaticLayer) and every service it made.
#[derive(Clone)]
pub struct Stats {
    pub(crate) shared: Arc<Shared>,
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
    /// Files in the memory cache.
    pub cached_files: u64,
    /// Bytes the memory cache holds, by its own weighing.
    pub cached_bytes: u64,
}

impl Stats {
    /// Reads the counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &self.shared.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (cached_files, cached_bytes) = match &self.shared.cache {
            Some(cache) => {
                cache.run_pending_tasks();
                (cache.entry_count(), cache.weighted_size())
            }
            None => (0, 0),
        };
        StatsSnapshot {
            ok: read(&c.ok),
            partial: read(&c.partial),
            not_modified: read(&c.not_modified),
            precondition_failed: read(&c.precondition_failed),
            not_satisfiable: read(&c.not_satisfiable),
            not_found: read(&c.not_found),
            refused_paths: read(&c.refused_paths),
            cache_hits: read(&c.cache_hits),
            cache_misses: read(&c.cache_misses),
            compressions: read(&c.compressions),
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
