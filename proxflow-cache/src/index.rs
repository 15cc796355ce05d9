//! What the webhook finds entries by without scanning the store: the keys in order, for
//! prefix patterns, and the `Surrogate-Key` tags of each entry.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

/// The keys of a store and their tags; kept in step by the store's inserts and removals.
#[derive(Default)]
pub(crate) struct Index {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    keys: BTreeSet<Arc<str>>,
    tags: HashMap<Arc<str>, HashSet<Arc<str>>>,
    tags_of: HashMap<Arc<str>, Vec<Arc<str>>>,
}

impl Index {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `key` is stored, with these tags (replacing those it had).
    pub(crate) fn insert(&self, key: &Arc<str>, tags: Vec<Arc<str>>) {
        let mut inner = self.lock();
        inner.keys.insert(Arc::clone(key));
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

    /// `key` is no longer stored.
    pub(crate) fn remove(&self, key: &str) {
        let mut inner = self.lock();
        inner.keys.remove(key);
        inner.untag(key);
    }

    /// The keys that start with `prefix`, in order: a range of the ordered keys, not a scan.
    pub(crate) fn with_prefix(&self, prefix: &str) -> Vec<Arc<str>> {
        let inner = self.lock();
        inner
            .keys
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|key| key.starts_with(prefix))
            .cloned()
            .collect()
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
    fn prefixes_and_tags_follow_inserts_and_removals() {
        let index = Index::default();
        index.insert(&key("h/api/users/1"), vec![key("user_1"), key("users")]);
        index.insert(&key("h/api/users/2"), vec![key("users")]);
        index.insert(&key("h/api/usersettings"), vec![]);
        index.insert(&key("h/other"), vec![]);
        assert_eq!(index.with_prefix("h/api/users/").len(), 2);
        assert_eq!(index.with_prefix("h/api/users").len(), 3);
        assert_eq!(index.tagged("users").len(), 2);
        index.insert(&key("h/api/users/1"), vec![key("user_1")]);
        assert_eq!(
            index.tagged("users"),
            vec![key("h/api/users/2")],
            "retagged"
        );
        index.remove("h/api/users/2");
        assert!(index.tagged("users").is_empty());
        assert_eq!(
            index.with_prefix("h/api/users/"),
            vec![key("h/api/users/1")]
        );
    }
}
