//! What the webhook finds entries by without scanning the store: the keys in order, for
//! path patterns, and the `Surrogate-Key` tags of each entry.
//!
//! Each key is indexed with the generation of the entry stored under it, so that the removal
//! of an older entry of the same key, which the store reports after the fact, does not take
//! out the newer one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

/// The keys of a store and their tags; kept in step by the store's inserts and removals.
#[derive(Default)]
pub(crate) struct Index {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Each key and the generation of the entry stored under it.
    keys: BTreeMap<Arc<str>, u64>,
    tags: HashMap<Arc<str>, HashSet<Arc<str>>>,
    tags_of: HashMap<Arc<str>, Vec<Arc<str>>>,
}

impl Index {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `key` is stored as `generation`, with these tags (replacing those it had).
    pub(crate) fn insert(&self, key: &Arc<str>, generation: u64, tags: Vec<Arc<str>>) {
        let mut inner = self.lock();
        inner.keys.insert(Arc::clone(key), generation);
        inner.untag(key);
        for tag in &tags {
            inner
                .tags
                .entry(Arc::clone(tag))
                .or_default()
                .insert(Arc::clone(key));
        }
        if !tags.is_empty() {
            inner.tags_of.insert(Arc::clone(key), tags);
        }
    }

    /// `key` is no longer stored (`None`), or its entry of `generation` is gone (a newer one
    /// stays).
    pub(crate) fn remove(&self, key: &str, generation: Option<u64>) {
        let mut inner = self.lock();
        if generation.is_some_and(|g| inner.keys.get(key) != Some(&g)) {
            return;
        }
        inner.keys.remove(key);
        inner.untag(key);
    }

    /// `path` and the keys under it at a segment boundary (`path/...`, `path?...`), in
    /// order: ranges that hold only matches, so the cost follows the matches, not the store.
    pub(crate) fn under(&self, path: &str) -> Vec<Arc<str>> {
        let inner = self.lock();
        let mut found: Vec<Arc<str>> = inner
            .keys
            .get_key_value(path)
            .map(|(key, _)| Arc::clone(key))
            .into_iter()
            .collect();
        for separator in ['/', '?'] {
            let prefix = format!("{path}{separator}");
            let range = inner
                .keys
                .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded));
            found.extend(
                range
                    .take_while(|(key, _)| key.starts_with(&prefix))
                    .map(|(key, _)| Arc::clone(key)),
            );
        }
        found
    }

    /// The keys tagged `tag`.
    pub(crate) fn tagged(&self, tag: &str) -> Vec<Arc<str>> {
        let inner = self.lock();
        inner
            .tags
            .get(tag)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Inner {
    fn untag(&mut self, key: &str) {
        let Some(tags) = self.tags_of.remove(key) else {
            return;
        };
        for tag in tags {
            if let Some(keys) = self.tags.get_mut(&tag) {
                keys.remove(key);
                if keys.is_empty() {
                    self.tags.remove(&tag);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn paths_and_tags_follow_inserts_and_removals() {
        let index = Index::default();
        index.insert(&key("h/api/users/1"), 1, vec![key("user_1"), key("users")]);
        index.insert(&key("h/api/users/2"), 2, vec![key("users")]);
        index.insert(&key("h/api/users?page=2"), 3, vec![]);
        index.insert(&key("h/api/users"), 4, vec![]);
        index.insert(&key("h/api/usersettings"), 5, vec![]);
        index.insert(&key("h/other"), 6, vec![]);
        let under: Vec<Arc<str>> = [
            "h/api/users",
            "h/api/users/1",
            "h/api/users/2",
            "h/api/users?page=2",
        ]
        .into_iter()
        .map(key)
        .collect();
        assert_eq!(index.under("h/api/users"), under);
        assert_eq!(index.under("h/api/users/1"), [key("h/api/users/1")]);
        assert_eq!(index.tagged("users").len(), 2);
        index.insert(&key("h/api/users/1"), 7, vec![key("user_1")]);
        assert_eq!(
            index.tagged("users"),
            vec![key("h/api/users/2")],
            "retagged"
        );
        index.remove("h/api/users/1", Some(1));
        assert_eq!(
            index.tagged("user_1").len(),
            1,
            "an older entry's removal keeps the newer"
        );
        index.remove("h/api/users/2", None);
        assert!(index.tagged("users").is_empty());
        assert!(index.under("h/api/users/2").is_empty());
    }
}
