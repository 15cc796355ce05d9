//! Request coalescing: concurrent requests that need the origin for one key make one origin
//! request; the others wait for it (bounded), then look in the store again, and make their
//! own request if it holds nothing for them (the answer was not storable, or not for their
//! variant).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// The keys with an origin request on its way, and what their waiters watch.
#[derive(Default)]
pub(crate) struct Coalescing {
    leaders: Mutex<HashMap<Arc<str>, watch::Receiver<()>>>,
}

/// The request that goes to the origin for a key; its waiters wake when it is dropped, which
/// is once its answer is stored or known not to be.
pub(crate) struct Leader {
    coalescing: Arc<Coalescing>,
    key: Arc<str>,
    watched: watch::Receiver<()>,
    _done: watch::Sender<()>,
}

/// What a request needing the origin does.
pub(crate) enum Join {
    /// Goes to the origin; holds the [`Leader`] until its answer is settled.
    Lead(Leader),
    /// Another request is on its way: wait for it.
    Wait(watch::Receiver<()>),
}

impl Coalescing {
    pub(crate) fn join(self: &Arc<Self>, key: &Arc<str>) -> Join {
        let mut leaders = self.leaders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(watched) = leaders.get(key) {
            return Join::Wait(watched.clone());
        }
        let (done, watched) = watch::channel(());
        leaders.insert(Arc::clone(key), watched.clone());
        Join::Lead(Leader {
            coalescing: Arc::clone(self),
            key: Arc::clone(key),
            watched,
            _done: done,
        })
    }
}

/// Waits until the leader is settled, at most `limit`; true if it was.
pub(crate) async fn wait(mut watched: watch::Receiver<()>, limit: Duration) -> bool {
    // `changed` fails once the leader's sender is dropped: that is the signal.
    tokio::time::timeout(limit, async { while watched.changed().await.is_ok() {} })
        .await
        .is_ok()
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut leaders = self
            .coalescing
            .leaders
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if leaders
            .get(&self.key)
            .is_some_and(|watched| watched.same_channel(&self.watched))
        {
            leaders.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_leads_the_others_wait_until_it_is_dropped() {
        let coalescing = Arc::new(Coalescing::default());
        let key: Arc<str> = Arc::from("k");
        let Join::Lead(leader) = coalescing.join(&key) else {
            panic!("the first leads");
        };
        let Join::Wait(watched) = coalescing.join(&key) else {
            panic!("the second waits");
        };
        let waiter = tokio::spawn(wait(watched, Duration::from_secs(5)));
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(leader);
        assert!(
            waiter.await.unwrap(),
            "woken by the leader, before the limit"
        );
        assert!(
            matches!(coalescing.join(&key), Join::Lead(_)),
            "the next one leads"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_is_bounded() {
        let coalescing = Arc::new(Coalescing::default());
        let key: Arc<str> = Arc::from("k");
        let _leader = coalescing.join(&key);
        let Join::Wait(watched) = coalescing.join(&key) else {
            panic!("waits");
        };
        assert!(!wait(watched, Duration::from_secs(5)).await);
    }
}
