//! What the cache counts, and the handle that reads it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use crate::service::Shared;

/// The counters every service of a layer adds to.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) revalidations: AtomicU64,
    pub(crate) stored: AtomicU64,
    pub(crate) coalesced: AtomicU64,
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
    /// Stored responses (URIs; each may hold several variants).
    pub entries: u64,
    /// Bytes held: bodies, headers, keys and the per-entry overhead.
    pub bytes: u64,
}

impl CacheStats {
    /// The figures now.
    pub fn snapshot(&self) -> CacheSnapshot {
        let c = &self.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CacheSnapshot {
            hits: read(&c.hits),
            misses: read(&c.misses),
            stale: read(&c.stale),
            revalidations: read(&c.revalidations),
            stored: read(&c.stored),
            coalesced: read(&c.coalesced),
            bytes: self.shared.get().map_or(0, |shared| shared.store.bytes()),
            entries: self.shared.get().map_or(0, |shared| shared.store.entries()),
        }
    }
}

impl std::fmt::Debug for CacheStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}
