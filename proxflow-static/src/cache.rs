//! The production memory cache: loaded files by request key, weighed in bytes, and when each
//! one is due to be checked against the disk again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use proxflow_core::{Clock, Moment};

use crate::assets::split_hashed;
use crate::entry::Entry;
use crate::lookup::Hit;

/// Files in memory, shared by every service of a layer and by its [`Stats`](crate::Stats).
#[derive(Clone)]
pub(crate) struct MemoryCache {
    files: Cache<String, Arc<Entry>>,
    clock: Clock,
    /// Entries record times as milliseconds after this moment, so that they fit an atomic.
    base: Moment,
    interval_ms: u64,
    /// Keys that hold no file are tried as content-hashed names.
    content_hash: bool,
}

impl MemoryCache {
    /// A cache of at most `max_bytes`, by its own weighing, whose entries are checked against
    /// the disk at most `revalidate_interval` apart, as `clock` tells.
    pub(crate) fn new(
        max_bytes: u64,
        revalidate_interval: Duration,
        clock: Clock,
        content_hash: bool,
    ) -> Self {
        let files = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Arc<Entry>| {
                u32::try_from(key.len() as u64 + entry.memory_weight()).unwrap_or(u32::MAX)
            })
            .eviction_listener(
                |key, _, cause| tracing::debug!(%key, ?cause, "static file left the memory cache"),
            )
            .build();
        MemoryCache {
            files,
            base: clock.now(),
            clock,
            interval_ms: revalidate_interval
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
            content_hash,
        }
    }

    /// Milliseconds since the cache was made, as its clock tells.
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.nanos_since(self.base) / 1_000_000
    }

    /// The entry under `key`, or, for a content-hashed name, the entry of its file.
    pub(crate) fn get(&self, key: &str) -> Option<Hit> {
        if let Some(entry) = self.files.get(key) {
            return Some(Hit {
                entry,
                hashed: None,
            });
        }
        if !self.content_hash {
            return None;
        }
        let (logical, hash) = split_hashed(key)?;
        let entry = self.files.get(&logical)?;
        Some(Hit::hashed(entry, logical, hash))
    }

    pub(crate) fn insert(&self, key: String, entry: Arc<Entry>) {
        self.files.insert(key, entry);
    }

    pub(crate) fn invalidate(&self, key: &str) {
        self.files.invalidate(key);
    }

    /// Files held and their weight in bytes, after pending evictions.
    pub(crate) fn usage(&self) -> (u64, u64) {
        self.files.run_pending_tasks();
        (self.files.entry_count(), self.files.weighted_size())
    }

    /// Whether the entry's metadata was checked less than the interval ago.
    pub(crate) fn is_fresh(&self, entry: &Entry) -> bool {
        let verified = entry.verified_at_ms.load(Ordering::Relaxed);
        self.now_ms().saturating_sub(verified) < self.interval_ms
    }

    /// Records that the entry was found unchanged at `checked_ms`.
    pub(crate) fn mark_verified(&self, entry: &Entry, checked_ms: u64) {
        entry.verified_at_ms.store(checked_ms, Ordering::Relaxed);
    }

    /// For a stale entry: true for the one request that goes to check the disk, false for the
    /// others, which keep being answered from memory meanwhile (at most one `stat` late) instead
    /// of all queueing for the same check. A claim older than the interval has been abandoned
    /// (its request was dropped) and can be taken again.
    pub(crate) fn claim_revalidation(&self, entry: &Entry) -> bool {
        // Offset by one so that zero means "never claimed".
        let now = self.now_ms() + 1;
        let claimed = entry.revalidation_claimed_ms.load(Ordering::Relaxed);
        if claimed != 0 && now.saturating_sub(claimed) < self.interval_ms {
            return false;
        }
        entry
            .revalidation_claimed_ms
            .compare_exchange(claimed, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::tests_support::MEMORY;
    use proxflow_core::ManualClock;

    #[test]
    fn entries_go_stale_after_the_interval_and_one_request_claims_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.js");
        std::fs::write(&path, "x").unwrap();
        let manual = ManualClock::new();
        let cache = MemoryCache::new(1 << 20, Duration::from_secs(1), manual.clock(), false);
        let entry = Arc::new(Entry::load(&path, MEMORY, cache.now_ms()).unwrap());
        cache.insert("app.js".into(), Arc::clone(&entry));
        assert!(cache.get("app.js").is_some());
        assert!(cache.is_fresh(&entry));

        manual.advance(Duration::from_millis(1_500));
        assert!(!cache.is_fresh(&entry));
        assert!(cache.claim_revalidation(&entry), "the first request checks");
        assert!(!cache.claim_revalidation(&entry), "the others are served");
        cache.mark_verified(&entry, cache.now_ms());
        assert!(cache.is_fresh(&entry));

        manual.advance(Duration::from_secs(3));
        assert!(
            cache.claim_revalidation(&entry),
            "an abandoned claim can be taken again"
        );
        assert_eq!(cache.usage().0, 1);
        cache.invalidate("app.js");
        assert!(cache.get("app.js").is_none());
    }
}
