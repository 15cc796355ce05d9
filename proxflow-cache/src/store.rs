//! Where responses are kept: byte-bounded, one entry per URI holding its variants (`Vary`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use moka::notification::RemovalCause;
use moka::sync::Cache;

use crate::directives::ResponseDirectives;
use crate::index::Index;
use crate::policy::{self, Timing};
use crate::stats::{Counters, Event};
use crate::warm::Warmer;

/// What an entry costs besides its key, headers and body, so that `max_size` bounds the
/// process's memory and not only the bytes of the responses: moka's node, the header map's
/// allocations, the stored response and its variant list, and the index's copy of the key.
pub(crate) const ENTRY_OVERHEAD: usize = 1200;

/// A stored response.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) timing: Timing,
    pub(crate) directives: ResponseDirectives,
    /// The selecting headers of `Vary` and the values the request had for them.
    pub(crate) vary: Vec<(String, Option<String>)>,
}

impl Stored {
    /// Whether it was stored for a request with these selecting header values.
    pub(crate) fn matches(&self, request: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| policy::selecting_value(request, name) == *value)
    }

    fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        self.body.len() + headers + ENTRY_OVERHEAD
    }

    /// The same response with the headers of a 304 merged in and new timing (RFC 9111
    /// §4.3.4).
    pub(crate) fn updated(&self, not_modified: &HeaderMap, timing: Timing) -> Stored {
        let mut headers = self.headers.clone();
        for name in not_modified.keys() {
            if policy::keeps_stored(name) {
                continue;
            }
            headers.remove(name);
            for value in not_modified.get_all(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let directives = ResponseDirectives::parse(&headers);
        Stored {
            status: self.status,
            headers,
            body: self.body.clone(),
            timing,
            directives,
            vary: self.vary.clone(),
        }
    }
}

/// The variants of one URI, newest first.
#[derive(Debug, Default)]
pub(crate) struct Variants {
    list: Vec<Arc<Stored>>,
    /// Tells this entry apart from earlier and later ones of the same key in the index.
    generation: u64,
}

impl Variants {
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Stored>> {
        self.list.iter()
    }

    pub(crate) fn find(&self, request: &HeaderMap) -> Option<&Arc<Stored>> {
        self.list.iter().find(|stored| stored.matches(request))
    }

    fn weight(&self, key: &str) -> u32 {
        let bytes: usize = self.list.iter().map(|stored| stored.weight()).sum();
        u32::try_from(bytes + key.len()).unwrap_or(u32::MAX)
    }
}

/// Most variants kept per URI: a `Vary` over a header with many values (`User-Agent`) must
/// not grow one entry without bound.
const MAX_VARIANTS: usize = 16;

/// The responses of one cache.
pub(crate) struct Store {
    entries: Cache<Arc<str>, Arc<Variants>>,
    pub(crate) index: Arc<Index>,
    generations: AtomicU64,
}

impl Store {
    /// A store of at most `max_bytes` (keys, headers, bodies and [`ENTRY_OVERHEAD`]),
    /// counting its evictions and invalidations into `counters`.
    pub(crate) fn new(
        max_bytes: u64,
        counters: Arc<Counters>,
        warmer: Option<Arc<Warmer>>,
    ) -> Store {
        let index = Arc::new(Index::default());
        let listener = Arc::clone(&index);
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &Arc<str>, variants: &Arc<Variants>| variants.weight(key))
            .eviction_listener(move |key: Arc<Arc<str>>, variants: Arc<Variants>, cause| {
                // A replaced entry's key stays; its insert updated the index.
                if cause != RemovalCause::Replaced {
                    listener.remove(&key, Some(variants.generation));
                    if let Some(warmer) = &warmer {
                        warmer.removed(&key);
                    }
                }
                match cause {
                    RemovalCause::Size => counters.add(Event::Evicted),
                    RemovalCause::Explicit => counters.add(Event::Invalidated),
                    RemovalCause::Replaced | RemovalCause::Expired => {}
                }
            })
            .build();
        Store {
            entries,
            index,
            generations: AtomicU64::new(0),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<Variants>> {
        self.entries.get(key)
    }

    /// Stores `stored` for `key`, replacing the variant it matches.
    pub(crate) fn insert(&self, key: Arc<str>, stored: Arc<Stored>) {
        let mut list = vec![Arc::clone(&stored)];
        if let Some(old) = self.entries.get(&key) {
            let same = |other: &Arc<Stored>| other.vary == stored.vary;
            list.extend(old.list.iter().filter(|other| !same(other)).cloned());
            list.truncate(MAX_VARIANTS);
        }
        let tags = list
            .iter()
            .flat_map(|stored| surrogate_keys(&stored.headers))
            .collect();
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        self.index.insert(&key, generation, tags);
        self.entries
            .insert(key, Arc::new(Variants { list, generation }));
    }

    pub(crate) fn remove(&self, key: &str) {
        self.entries.invalidate(key);
        self.index.remove(key, None);
    }

    /// Drops every entry stored until now; how many there were.
    #[cfg(feature = "redis")]
    pub(crate) fn clear(&self) -> u64 {
        let count = self.entries.entry_count();
        self.entries.invalidate_all();
        count
    }

    /// Bytes held now (moka's count, which trails the latest changes a little).
    pub(crate) fn bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    pub(crate) fn entries(&self) -> u64 {
        self.entries.entry_count()
    }
}

/// The tags of a response: the space-separated `Surrogate-Key` values.
pub(crate) fn surrogate_keys(headers: &HeaderMap) -> Vec<Arc<str>> {
    headers
        .get_all("surrogate-key")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(str::split_ascii_whitespace)
        .map(Arc::from)
        .collect()
}

/// The wall-clock time of the cache: the injected clock's reading from a wall-clock start, so
/// that paused-time tests move HTTP dates and ages too.
#[derive(Debug, Clone)]
pub(crate) struct WallClock {
    clock: proxflow_core::Clock,
    origin: proxflow_core::Moment,
    start: SystemTime,
}

impl WallClock {
    pub(crate) fn new(clock: proxflow_core::Clock) -> WallClock {
        WallClock {
            origin: clock.now(),
            clock,
            start: SystemTime::now(),
        }
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.start + self.clock.elapsed(self.origin)
    }
}
